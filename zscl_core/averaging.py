"""Weight-space operations on state dicts, pure functions.

- ZSCL's weight ensemble (Sec. 3.3): a running uniform mean of the start weights and periodic
  snapshots, theta_bar <- (n * theta_bar + theta) / (n + 1).
- WiSE-FT (Wortsman et al., 2022): (1 - alpha) * theta_0 + alpha * theta_1.

Only floating-point tensors are averaged. Integer buffers (BatchNorm's ``num_batches_tracked``,
token ids) are taken from the newer state, the counter of the weights that were trained last.
Tensors that are equal in both states are taken as they are, so that a buffer no update touched
(the running statistics of a frozen BatchNorm, see ``UpdateConfig.norm_stats``) stays bit-exact
instead of picking up rounding from ``(n * x + x) / (n + 1)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["running_mean", "uniform_mean", "interpolate"]

StateDict = Mapping[str, torch.Tensor]


def _check_keys(a: StateDict, b: StateDict) -> None:
    if a.keys() != b.keys():
        only_a = sorted(set(a) - set(b))[:5]
        only_b = sorted(set(b) - set(a))[:5]
        raise KeyError(f"state dicts have different keys: only in first {only_a}, "
                       f"only in second {only_b}; average weights of the same architecture")
    for key in a:
        if a[key].shape != b[key].shape:
            raise ValueError(f"shape mismatch for {key}: {tuple(a[key].shape)} vs "
                             f"{tuple(b[key].shape)}")


def running_mean(average: StateDict, new: StateDict, count: int) -> dict[str, torch.Tensor]:
    """Fold one more snapshot into a uniform mean of ``count`` state dicts.

    Args:
        average: the mean of ``count`` snapshots so far.
        new: the next snapshot.
        count: how many snapshots ``average`` already holds (>= 1).

    Returns:
        A new state dict, the mean of ``count + 1`` snapshots.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    _check_keys(average, new)
    out = {}
    for key, avg in average.items():
        other = new[key].to(avg.device, avg.dtype)
        if not avg.is_floating_point() or torch.equal(avg, other):
            out[key] = other.clone()
        else:
            out[key] = (avg * count + other) / (count + 1)
    return out


def uniform_mean(states: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """The uniform mean of several state dicts (what ``running_mean`` computes step by step)."""
    if not states:
        raise ValueError("uniform_mean needs at least one state dict")
    result = {k: v.clone() for k, v in states[0].items()}
    for n, state in enumerate(states[1:], start=1):
        result = running_mean(result, state, n)
    return result


def interpolate(start: StateDict, end: StateDict, alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT: (1 - alpha) * start + alpha * end, alpha in [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    _check_keys(start, end)
    out = {}
    for key, a in start.items():
        b = end[key].to(a.device, a.dtype)
        if not a.is_floating_point() or torch.equal(a, b):
            out[key] = b.clone()
        else:
            out[key] = (1.0 - alpha) * a + alpha * b
    return out
