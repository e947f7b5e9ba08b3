"""A short ZSCL job on the REAL starter model, through the product path (service ingestion, job
record, the worker's JobRunner, default gate) on real images: Fashion-MNIST to learn, CIFAR-10
test images as a zero-shot suite. This is the path whose BatchNorm statistics once destroyed
CIFAR-10 (51.7% -> 16.7%) while every tiny-model test passed.

It is the benchmark's own code (``zscl_bench.updates.run_updates``) at a smaller size: 60 steps
instead of the tour's 200, 40 train / 30 test images per class, 30 CIFAR-10 images per class.
Bounds for this shorter run (the benchmark's full-size figures are in docs and the README):
the new task gains at least 8 points, the CIFAR-10 suite stays within 3 points of the starter's,
and the default gate promotes the candidate.

Runs in CI: .ci/run installs Debian's dataset-fashion-mnist (its absence there is an error, not
a skip) and CI has ../shared/data next to the clone; elsewhere it skips when the data is missing.
"""


import pytest

from tests.helpers.fashion import FASHION
from zscl_bench.tasks import LoadOptions, default_shared_data
from zscl_bench.updates import DEFAULT_REFERENCE_IMAGES, UpdatesBenchConfig, run_updates

CIFAR_TAR = default_shared_data() / "cifar10-subset.tar"

# In CI (``CI`` set) Fashion-MNIST must be there: .ci/run installs it, so its absence fails the
# test (tests/helpers/fashion.py). ../shared/data is the CI machine's (next to the clone); a clone elsewhere without it
# skips, as every test using that folder does (../shared/data/README.md).
MISSING = [str(p) for p in (FASHION, CIFAR_TAR) if not p.exists()]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(MISSING),
                                 reason=f"missing {MISSING} (apt-get install dataset-fashion-mnist; "
                                        f"../shared/data/cifar10-subset.tar next to the clone)")]


def test_short_zscl_job_on_the_starter_learns_fashion_and_keeps_cifar10(starter_dir, tmp_path):
    config = UpdatesBenchConfig(tasks=("fashion_mnist",), methods=("zscl",), train_per_class=40,
                                test_per_class=30, suite_per_class=30,
                                hparams={"steps": 60, "batch_size": 16})
    record = run_updates(config, starter_dir, tmp_path / "out",
                         LoadOptions(cache_dir=tmp_path / "cache", shared_data=CIFAR_TAR.parent))
    (job,) = record["arms"][f"zscl/{DEFAULT_REFERENCE_IMAGES}"]  # the worker's default
    rows = {r["kind"]: r for r in job["report"]["rows"]}
    print({k: (round(r["before"], 1), round(r["after"], 1), round(r["margin"], 1))
           for k, r in rows.items()}, job["metrics"].get("s_per_step"))
    assert job["state"] == "succeeded", job["report"].get("reasons") or job["error"]
    assert rows["new_task"]["n"] == 300 and rows["suite"]["n"] == 300
    assert rows["new_task"]["delta"] >= 8.0
    assert rows["suite"]["delta"] >= -3.0
