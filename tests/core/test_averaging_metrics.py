import pytest
import torch

from zscl_core import average_accuracy, interpolate, last_accuracy, running_mean, summarize, transfer, uniform_mean


def _state(value, steps=3):
    return {"w": torch.full((2, 2), float(value)), "count": torch.tensor(steps)}


def test_running_mean_after_n_snapshots_is_uniform_mean():
    values = [1.0, 4.0, -2.0, 10.0]
    avg, n = _state(values[0]), 1
    for v in values[1:]:
        avg = running_mean(avg, _state(v), n)
        n += 1
    assert torch.allclose(avg["w"], torch.full((2, 2), sum(values) / 4))  # 13/4
    assert avg["w"][0, 0].item() == pytest.approx(3.25)
    assert avg["count"].item() == 3  # integer buffers are kept, not averaged
    assert torch.equal(uniform_mean([_state(v) for v in values])["w"], avg["w"])


def test_running_mean_refuses_mismatched_keys_and_shapes():
    with pytest.raises(KeyError, match="different keys"):
        running_mean({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 1)
    with pytest.raises(ValueError, match="shape mismatch"):
        running_mean({"a": torch.zeros(1)}, {"a": torch.zeros(2)}, 1)
    with pytest.raises(ValueError):
        running_mean({"a": torch.zeros(1)}, {"a": torch.zeros(1)}, 0)


def test_wise_ft_endpoints_and_midpoint():
    a, b = _state(2.0), _state(6.0)
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    assert interpolate(a, b, 0.8)["w"][0, 0].item() == pytest.approx(0.2 * 2 + 0.8 * 6)
    with pytest.raises(ValueError):
        interpolate(a, b, 1.5)


MATRIX = [
    [50.0, 40.0, 30.0],   # zero-shot
    [80.0, 35.0, 28.0],   # after task 1
    [70.0, 90.0, 20.0],   # after task 2
    [60.0, 85.0, 95.0],   # after task 3
]


def test_transfer_avg_last_by_hand():
    # Transfer: dataset 2 -> A[1][1] = 35; dataset 3 -> mean(A[1][2], A[2][2]) = 24; mean = 29.5
    assert transfer(MATRIX) == pytest.approx(29.5)
    # Avg.: rows 1..3 sum = 143 + 180 + 240 = 563 over 9 entries
    assert average_accuracy(MATRIX) == pytest.approx(563 / 9)
    assert last_accuracy(MATRIX) == pytest.approx(80.0)
    assert summarize(MATRIX) == {"transfer": pytest.approx(29.5), "avg": pytest.approx(563 / 9),
                                 "last": pytest.approx(80.0)}


def test_metrics_refuse_malformed_matrix():
    with pytest.raises(ValueError, match="row 1"):
        transfer([[1, 2], [3], [4, 5]])
    with pytest.raises(ValueError):
        average_accuracy([[1.0]])
