"""Real processes: redis-server, `zscl serve` API processes and `zscl worker` Celery workers
(tests/helpers/processes.py)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.helpers import ADMIN_KEY
from tests.helpers.archives import write_reference_dir
from tests.helpers.processes import HEARTBEAT_TIMEOUT_S, Stack, redis_server
from zscl_core import save_version


@pytest.fixture()
def redis_url():
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed; .ci/run installs it (apt-get install redis-server)")
    with redis_server() as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture()
def stack_factory(tmp_path, pretrained_tiny):
    """Builds a Stack over a data dir whose served model is the colour-pretrained tiny CLIP."""
    loaded, _ = pretrained_tiny
    stacks = []

    def make(broker_url: str | None = None, redis: str | None = None, **env) -> Stack:
        data_dir = tmp_path / "var"
        save_version(data_dir / "versions", loaded.model, loaded.spec, version_id="v-tiny",
                     metadata={"source": "tiny colours"})
        base = {k: v for k, v in os.environ.items() if not k.startswith("ZSCL_")}
        base.update({"ZSCL_DATA_DIR": str(data_dir), "ZSCL_MODEL": str(data_dir / "versions" / "v-tiny"),
                     "ZSCL_ADMIN_KEY": ADMIN_KEY, "ZSCL_TORCH_THREADS": "1",
                     "ZSCL_RECONCILE_INTERVAL_S": "0.5",
                     "ZSCL_JOB_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
                     "ZSCL_REFERENCE_DIR": str(write_reference_dir(tmp_path / "reference")),
                     "ZSCL_START_WORKER": "false"})
        if redis:
            base.update({"ZSCL_REDIS_URL": redis, "ZSCL_BROKER_URL": redis})
        if broker_url:
            base["ZSCL_BROKER_URL"] = broker_url
        base.update(env)
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        stack = Stack(data_dir, base, logs)
        stacks.append(stack)
        return stack

    yield make
    failed: list[Exception] = []
    for stack in stacks:
        try:
            stack.close()
        except Exception as exc:  # noqa: BLE001 - the other stacks are closed too, then it is raised
            failed.append(exc)
        for stall in stack.stalls():  # shown with a failed test's output
            print(f"API event loop: {stall}")
        for slow in stack.slow_answers:
            print(f"slow answer: {slow}")
    if failed:
        raise failed[0]
