import os
import shutil
import signal
import time
import uuid
from pathlib import Path

import pytest
import torch

from tests.helpers.colour import live_server, make_settings, write_colour_versions
from tests.helpers.processes import STOP_DEADLINE_S, marked_processes
from tests.helpers.synthetic import colour_task, write_tiny_config
from zscl_core import LabelledImages, UpdateConfig, load_model, load_version, run_update
from zscl_core.starter import ensure_starter

# every process the tests start inherits these (the run's id, and the test that started it),
# even through a stripped environment (the Stack keeps all but ZSCL_ variables)
RUN_VARIABLE, TEST_VARIABLE = "PYTEST_ZSCL_RUN", "PYTEST_ZSCL_TEST"


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_tests():
    """Fail the run if a process a test started is still alive at the end (after the time a
    stack takes to stop), naming the test; and kill it, so that it does not outlive the run."""
    run = os.environ[RUN_VARIABLE] = uuid.uuid4().hex
    yield
    if not Path("/proc/self/environ").exists():
        return
    deadline = time.monotonic() + STOP_DEADLINE_S
    while (left := _outliving(run)) and time.monotonic() < deadline:
        time.sleep(0.5)
    described = [f"pid {pid} ({_cmdline(pid)}) from {env.get(TEST_VARIABLE)}"
                 for pid, env in left.items()]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, "processes started by tests outlived them (killed now): " + "; ".join(described)


def _outliving(run: str) -> dict[int, dict]:
    """The processes of this run still alive, but multiprocessing's resource tracker of this
    process: started once by the first process pool here, it ends when this process ends."""
    return {pid: env for pid, env in marked_processes(RUN_VARIABLE, run).items()
            if not ("multiprocessing.resource_tracker" in _cmdline(pid) and _parent(pid) == os.getpid())}


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


@pytest.fixture(autouse=True)
def _name_the_test_in_started_processes(request):
    os.environ[TEST_VARIABLE] = request.node.nodeid


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_config_path(tmp_path_factory):
    return write_tiny_config(tmp_path_factory.mktemp("tiny"))


@pytest.fixture()
def tiny(tiny_config_path):
    """A fresh tiny CLIP with random weights (LoadedModel)."""
    torch.manual_seed(0)
    return load_model(tiny_config_path)


@pytest.fixture(scope="session")
def pretrained_tiny(tiny_config_path):
    """A tiny CLIP 'pre-trained' on the colour task, so it has zero-shot skill to lose.

    Returns (LoadedModel, colour test split).
    """
    torch.manual_seed(0)
    loaded = load_model(tiny_config_path)
    items, labels, names = colour_task(60, seed=1)
    train = LabelledImages(items, labels, names, loaded.preprocess_val)
    config = UpdateConfig(method="continual_ft", steps=150, batch_size=32, lr=2e-3,
                          warmup_steps=10, label_smoothing=0.0)
    result = run_update(loaded.model, loaded.tokenizer, train, names, config=config)
    loaded.model.load_state_dict(result.state_dict)
    loaded.model.eval()
    test_items, test_labels, _ = colour_task(40, seed=2)
    return loaded, LabelledImages(test_items, test_labels, names, loaded.preprocess_val)


@pytest.fixture(scope="session")
def starter_dir(tmp_path_factory):
    """The real offline starter model, built once per test session (about a minute)."""
    return ensure_starter(tmp_path_factory.mktemp("versions"))


@pytest.fixture(scope="session")
def starter(starter_dir):
    return load_version(starter_dir)


@pytest.fixture(scope="session")
def colour_versions(tmp_path_factory):
    """A version store with the two colour models (tests/helpers/colour.py): 'v-colour' (a red
    image is "red") and 'v-swapped' (a red image is "green"); tests copy it with ``data_dir``."""
    return write_colour_versions(tmp_path_factory.mktemp("store"))


@pytest.fixture()
def data_dir(tmp_path, colour_versions):
    """A fresh data dir whose version store holds the two colour versions."""
    shutil.copytree(colour_versions / "versions", tmp_path / "versions")
    return tmp_path


@pytest.fixture()
def live_url(data_dir):
    """A real uvicorn server of the colour app on a free port, in a thread, ready."""
    with live_server(make_settings(data_dir)) as url:
        yield url
