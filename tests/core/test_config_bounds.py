"""Integer hyper-parameters that reach torch, numpy or Python's random are bounded, so a job
is refused at submission (422 naming the field) instead of failing later with an overflow."""

import pytest
import torch

from zscl_core import ConfigError, UpdateConfig


@pytest.mark.parametrize("values, message", [
    ({"seed": 10**30}, "seed must be in [0, 4294967295], got 1000000000000000000000000000000"),
    ({"seed": 2**32}, "seed must be in [0, 4294967295]"),
    ({"seed": -1}, "seed must be in [0, 4294967295]"),
    ({"ensemble_every": 10**30}, "ensemble_every must be in [1, 1000000]"),
    ({"ensemble_every": 0}, "ensemble_every must be in [1, 1000000]"),
])
def test_out_of_range_integers_are_refused_naming_the_field(values, message):
    with pytest.raises(ConfigError) as caught:
        UpdateConfig(**values)
    assert str(caught.value).startswith(message)


def test_the_largest_seed_seeds_everything_the_update_seeds():
    config = UpdateConfig(seed=2**32 - 1)
    torch.manual_seed(config.seed)
    torch.Generator().manual_seed(config.seed + 1)  # the reference batches' generator
    import numpy as np
    np.random.default_rng(config.seed)
    np.random.seed(config.seed)  # the legacy global seed takes at most 2**32 - 1
