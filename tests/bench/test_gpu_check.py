"""benchmarks.gpu_check on the CPU with the tiny model: the GPU check's smoke run, so that the
script a GPU run depends on cannot rot (issue 19). Every part must run and give its figures."""

import json

import pytest

from benchmarks import gpu_check

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_the_check_runs_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    figures = gpu_check.run(["--device", "cpu", "--model", "tiny", "--serve-seconds", "0.6",
                             "--job-steps", "6", "--json", str(out)])
    assert not figures.get("errors"), figures.get("errors")
    levels = figures["serve"]["levels"]
    assert {(level["images_per_request"], level["concurrency"]) for level in levels} == {(1, 8), (4, 8)}
    for level in levels:
        assert level["service"]["img_s"] > 0 and level["service"]["errors"] == 0
        assert level["raw"]["img_s"] > 0 and level["service_over_raw"] > 0
    variants = figures["step"]["variants"]
    assert set(variants) == {"continual_ft", "zscl ref_batch=8"}
    assert all(v["s_per_step"] > 0 and 0 <= v["data_wait_share"] < 1 for v in variants.values())
    job = figures["job"]
    assert job["state"] in ("succeeded", "rejected"), job
    assert job["steps"] == 6 and job["train_s"] > 0 and job["data_wait_s"] >= 0
    assert job["compute_s"] > 0 and 0 <= job["data_wait_share"] < 1
    assert json.loads(out.read_text())["job"]["state"] == job["state"]
    rows = [what for what, _, _ in gpu_check._rows(figures)]
    assert any(r.startswith("serve 1 img/request") for r in rows) and rows[-1].startswith("job: ZSCL 6 steps")
