"""The feedback loop end to end on a real `zscl serve` with the REAL starter model and its
embedded worker: serving's mistakes become the next update, and the gate decides.

300 Fashion-MNIST test images (30 per class) are classified with a label set that keeps its
images and has an auto-update policy (20 new answers in each of the 10 classes). Users send the
true label of 200 of them (20 per class); the 200th answer completes the policy, which builds a
dataset from the feedback and starts a ZSCL job by itself. The job is promoted by the default
gate, the service hot-swaps to it, and the remaining 100 images, classified by the new version
and answered, give it a live accuracy beside the starter's. (The starter reads Fashion-MNIST
badly, about 20% here, so its answers are mostly corrections.)

Runs in CI: .ci/run installs Debian's dataset-fashion-mnist (its absence there is an error).
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import ADMIN
from tests.helpers.fashion import FASHION, needs_fashion
from tests.helpers.processes import REQUEST_TIMEOUT_S, START_DEADLINE_S, wait_until
from zscl_bench.tasks import FASHION_CLASSES, FASHION_TEMPLATES, read_idx

pytestmark = [pytest.mark.slow, needs_fashion]

PER_CLASS, ANSWERED_PER_CLASS = 30, 20


def _fashion_images() -> list[tuple[str, bytes, str]]:
    """(name, PNG bytes, true label): the first 30 test images of each class, class by class."""
    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    out = []
    for label in range(10):
        for rank, index in enumerate(np.flatnonzero(labels == label)[:PER_CLASS]):
            buffer = io.BytesIO()
            Image.fromarray(images[index]).save(buffer, format="PNG")
            out.append((f"{label}-{rank}.png", buffer.getvalue(), FASHION_CLASSES[label]))
    return out


def _classify(client: httpx.Client, batch) -> list[dict]:
    response = client.post("/v1/classify", data={"label_set": "fashion", "top_k": "1"},
                           files=[("images", (name, data, "image/png")) for name, data, _ in batch])
    assert response.status_code == 200, response.text
    return response.json()["results"]


def _answer(client: httpx.Client, prediction_id: str, label: str) -> dict:
    response = client.post("/v1/feedback", json={"prediction_id": prediction_id, "label": label})
    assert response.status_code == 201, response.text
    return response.json()


def test_corrections_become_a_promoted_update(stack_factory, starter_dir):
    stack = stack_factory(ZSCL_MODEL=str(starter_dir), ZSCL_START_WORKER="true")
    stack.env.pop("ZSCL_REFERENCE_DIR")  # the default reference: the photos scikit-image ships
    stack.api()
    images = _fashion_images()
    with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT_S, headers=ADMIN) as client:
        policy = {"min_per_class": ANSWERED_PER_CLASS, "min_classes": 10,
                  "hparams": {"steps": 60, "batch_size": 16}, "test_fraction": 0.25}
        put = client.put("/v1/label-sets/fashion", json={
            "classnames": FASHION_CLASSES, "templates": list(FASHION_TEMPLATES),
            "keep_images": True, "auto_update": policy})
        assert put.status_code == 200, put.text
        starter = stack.served()

        results = [r for start in range(0, len(images), 30)
                   for r in _classify(client, images[start:start + 30])]
        assert all(r["prediction_id"] for r in results)
        answered = [(r, truth) for r, (_, _, truth) in zip(results, images)
                    if int(r["image"].split("-")[1].split(".")[0]) < ANSWERED_PER_CLASS]
        assert len(answered) == 200
        jobs = [j for r, truth in answered
                if (j := _answer(client, r["prediction_id"], truth)["auto_update_job"])]
        assert len(jobs) == 1, jobs  # the 200th answer completed the policy, once
        job = jobs[0]
        assert job["trigger"]["kind"] == "auto-update" and job["trigger"]["items"] == 200

        done = stack.wait_job(job["id"])
        assert done["state"] == "succeeded", (done["report"].get("reasons"), done["error"],
                                              stack.log_tail())
        new_task = next(r for r in done["report"]["rows"] if r["kind"] == "new_task")
        print("new task before/after:", new_task["before"], new_task["after"])
        dataset = client.get(f"/v1/datasets/{done['dataset_id']}").json()
        assert dataset["origin"]["kind"] == "feedback" and dataset["n_test"] == 50

        # the same feedback again makes the same dataset, and no second job
        again = client.post("/v1/datasets/from-feedback",
                            json={"label_set": "fashion", "min_per_class": ANSWERED_PER_CLASS,
                                  "test_fraction": 0.25})
        assert again.status_code == 200 and again.json()["id"] == done["dataset_id"]

        promoted = done["candidate_version"]
        wait_until(lambda: stack.served() == promoted, START_DEADLINE_S, 0.5, "the API serving the update")
        rest = [item for item in images if int(item[0].split("-")[1].split(".")[0])
                >= ANSWERED_PER_CLASS]
        for start in range(0, len(rest), 50):
            batch = rest[start:start + 50]
            for r, (_, _, truth) in zip(_classify(client, batch), batch):
                assert r["prediction_id"]
                _answer(client, r["prediction_id"], truth)

        versions = client.get("/v1/feedback", params={"label_set": "fashion"}).json()["summary"]["versions"]
        assert versions[starter]["items"] == 200 and versions[promoted]["items"] == 100
        print("live accuracy:", {v: round(s["accuracy"], 3) for v, s in versions.items()})
        assert versions[promoted]["accuracy"] > versions[starter]["accuracy"] + 0.1
        metrics = client.get("/metrics").text
        assert f'zscl_feedback_live_accuracy{{model_version="{promoted}"}}' in metrics
