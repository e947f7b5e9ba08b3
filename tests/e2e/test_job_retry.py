"""A job whose worker is killed mid-training runs again from its start on another worker and
succeeds; its events show the retry. Real processes: redis-server, `zscl serve`, two `zscl
worker`s in turn."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from tests.helpers.archives import stripes_zip
from tests.helpers.processes import REQUEST_TIMEOUT_S
from tests.helpers.synthetic import FAST_HPARAMS

pytestmark = pytest.mark.slow

LENIENT = {"min_new_task_gain": -100, "max_mean_drop": 100, "max_dataset_drop": 100}


def test_a_job_whose_worker_is_killed_is_retried_from_its_start_and_succeeds(stack_factory,
                                                                            redis_url):
    stack = stack_factory(redis=redis_url)  # ZSCL_JOB_MAX_RETRIES unset: the default, one retry
    stack.api()
    first = stack.worker("w1")
    stripes = stack.upload(stripes_zip(), "stripes")
    job = stack.submit(stripes["id"], hparams={**FAST_HPARAMS, "steps": 200}, gate=LENIENT)
    stack.wait_job(job["id"], lambda j: j["step"] > 0, step_s=0.2)  # training started
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its training process, no clean-up
    stack.worker("w2")

    done = stack.wait_job(job["id"])
    assert done["state"] == "succeeded", (done, stack.log_tail())
    assert done["step"] == done["total_steps"] == 200
    events = httpx.get(f"{stack.url}/v1/jobs/{job['id']}/events", timeout=REQUEST_TIMEOUT_S).json()["events"]
    states = [e["data"] for e in events if e["kind"] == "state"]
    assert [s["state"] for s in states] == ["queued", "running", "queued", "running", "evaluating",
                                            "succeeded"]
    assert {k: v for k, v in states[2].items() if k != "reason"} == \
        {"state": "queued", "retry": 1, "max_retries": 1}
    assert "no heartbeat from the worker" in states[2]["reason"]
