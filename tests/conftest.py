import shutil

import pytest
import torch

from tests.helpers.colour import live_server, make_settings, write_colour_versions
from tests.helpers.synthetic import colour_task, write_tiny_config
from zscl_core import LabelledImages, UpdateConfig, load_model, load_version, run_update
from zscl_core.starter import ensure_starter


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
