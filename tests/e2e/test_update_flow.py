"""End to end with real processes: upload -> job -> progress -> gate -> promotion or not."""

from __future__ import annotations

import os
import signal
import threading

import httpx
import pytest

from tests.helpers.archives import colours_zip, stripes_zip
from tests.helpers.colour import png_bytes
from tests.helpers.processes import REQUEST_TIMEOUT_S, START_DEADLINE_S, wait_until
from tests.helpers.synthetic import FAST_HPARAMS

pytestmark = pytest.mark.slow

STRONG_CFT = {**FAST_HPARAMS, "trainable": "all", "lr": 5e-3}


def _classify_ok(stack) -> str:
    response = httpx.post(f"{stack.url}/v1/classify", timeout=REQUEST_TIMEOUT_S,
                          files=[("images", ("red.png", png_bytes("red"), "image/png"))],
                          data={"labels": "red,green,blue,yellow"})
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"]


def _flow(stack):
    stripes = stack.upload(stripes_zip(), "stripes")
    stack.upload(colours_zip(), "colours", suite=True)
    # the toy's 16-image test split is too small for a significant gain: point estimates decide
    # (the gate's noise margin has its own tests in tests/core/test_gate.py)
    job = stack.submit(stripes["id"], hparams={**FAST_HPARAMS, "steps": 60},
                       gate={"confidence": 0.5})
    seen_running = stack.wait_job(job["id"], lambda j: j["state"] == "running" and j["step"] > 0,
                                  step_s=0.2)
    assert 0 < seen_running["progress"] < 1 and "ce" in seen_running["losses"]
    done = stack.wait_job(job["id"])
    assert done["state"] == "succeeded", (done, stack.log_tail())
    assert done["metrics"]["data_wait_s"] >= 0 and done["metrics"]["compute_s"] > 0
    new = done["candidate_version"]
    wait_until(lambda: stack.served() == new, START_DEADLINE_S, 0.1, "API serving the promoted version")
    assert _classify_ok(stack) == new
    events = httpx.get(f"{stack.url}/v1/jobs/{job['id']}/events", timeout=REQUEST_TIMEOUT_S).json()["events"]
    assert [e["data"].get("state") for e in events if e["kind"] == "state"] == \
        ["queued", "running", "evaluating", "succeeded"]
    return stripes, new


def test_redis_and_real_worker_promote_then_reject(stack_factory, redis_url):
    stack = stack_factory(redis=redis_url)
    stack.api()
    stack.worker()
    stripes, promoted = _flow(stack)
    # a candidate that wrecks the colour suite is rejected; the served version stays
    job = stack.submit(stripes["id"], method="continual_ft", hparams=STRONG_CFT)
    done = stack.wait_job(job["id"])
    assert done["state"] == "rejected", done
    assert any("suite 'colours' dropped" in r for r in done["report"]["reasons"])
    assert stack.served() == promoted and done["candidate_version"] is None


def test_embedded_broker_flow(stack_factory, tmp_path):
    # with DataLoader processes, as on a GPU: the prefork pool's job process may start them
    stack = stack_factory(broker_url=f"sqla+sqlite:///{tmp_path / 'var' / 'broker.sqlite'}",
                          ZSCL_START_WORKER="true", ZSCL_DATA_WORKERS="2")
    stack.api()  # embedded mode: `zscl serve` starts its own worker process
    _flow(stack)


def test_worker_killed_mid_update_fails_the_job_and_serving_continues(stack_factory, redis_url):
    # no retries: the job fails at once (tests/e2e/test_job_retry.py: the default, one retry)
    stack = stack_factory(redis=redis_url, ZSCL_JOB_MAX_RETRIES="0")
    stack.api()
    worker = stack.worker()
    stripes = stack.upload(stripes_zip(), "stripes")
    served = stack.served()
    versions_before = sorted(p.name for p in (stack.data_dir / "versions").iterdir())
    job = stack.submit(stripes["id"], hparams={**FAST_HPARAMS, "steps": 5000})
    stack.wait_job(job["id"], lambda j: j["step"] > 0, step_s=0.2)  # training started
    errors, stop = [], threading.Event()

    def keep_classifying():
        while not stop.is_set():
            try:
                _classify_ok(stack)
            except (AssertionError, httpx.HTTPError) as exc:
                errors.append(exc)

    load = threading.Thread(target=keep_classifying)
    load.start()
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its training child, no cleanup
        done = stack.wait_job(job["id"])  # failed once the reaper misses the worker's heartbeats
    finally:
        stop.set()
        load.join()
    assert done["state"] == "failed" and done["error"]["type"] == "WorkerLost", done
    assert errors == []
    assert stack.served() == served
    assert sorted(p.name for p in (stack.data_dir / "versions").iterdir()) == versions_before


def test_two_concurrent_jobs_from_one_version_promote_at_most_one_over_it(stack_factory, redis_url):
    stack = stack_factory(redis=redis_url)
    stack.api()
    stack.worker("w1")
    stack.worker("w2")
    stripes = stack.upload(stripes_zip(), "stripes")
    served = stack.served()
    lenient = {"min_new_task_gain": -100, "max_mean_drop": 100, "max_dataset_drop": 100}
    jobs = [stack.submit(stripes["id"], hparams={**FAST_HPARAMS, "steps": 20, "seed": s}, gate=lenient)
            for s in (1, 2)]
    done = [stack.wait_job(j["id"]) for j in jobs]
    over_original = [j for j in done if j["state"] == "succeeded" and j["base_version"] == served]
    assert len(over_original) <= 1, done
    assert any(j["state"] == "succeeded" for j in done)
    for j in done:
        if j["base_version"] == served and j["state"] == "rejected":
            assert "changed from" in j["report"]["superseded"]
