import pytest
import torch

from zscl_core.calibration import expected_calibration_error, fit_logit_scale

# Top probabilities 0.9 (right), 0.82 (wrong), 0.45 (right), 0.38 (wrong).
PROBS = torch.tensor([[0.9, 0.05, 0.05], [0.82, 0.1, 0.08], [0.3, 0.45, 0.25], [0.38, 0.35, 0.27]])
LABELS = torch.tensor([0, 1, 1, 2])


def test_ece_matches_hand_computed_values():
    # 15 bins: each image alone in its bin, so ECE = mean |correct - confidence|
    # = (0.1 + 0.82 + 0.55 + 0.38) / 4.
    assert expected_calibration_error(PROBS, LABELS) == pytest.approx(0.4625)
    # 2 bins: (0, 0.5] holds 0.45 and 0.38 (accuracy 0.5, confidence 0.415); (0.5, 1] holds 0.9
    # and 0.82 (accuracy 0.5, confidence 0.86): 2/4 * 0.085 + 2/4 * 0.36.
    assert expected_calibration_error(PROBS, LABELS, bins=2) == pytest.approx(0.2225)


def test_ece_is_zero_when_confidence_equals_accuracy():
    probs = torch.tensor([[0.7, 0.3]] * 10, dtype=torch.float64)
    labels = torch.tensor([0] * 7 + [1] * 3)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="as many labels"):
        expected_calibration_error(PROBS, LABELS[:3])


def test_fit_logit_scale_recovers_the_teachers_scale():
    cosines = torch.rand(50, 200, generator=torch.Generator().manual_seed(0)) * 0.4
    teacher = (37.0 * cosines).softmax(-1)
    assert fit_logit_scale(cosines, teacher) == pytest.approx(37.0, rel=1e-6)


def test_fit_logit_scale_stays_within_its_bounds():
    cosines = torch.rand(20, 10, generator=torch.Generator().manual_seed(1))
    one_hot = torch.nn.functional.one_hot(cosines.argmax(-1), 10).double()
    assert fit_logit_scale(cosines, one_hot) == 100.0  # a sharper teacher than any scale allows
    assert fit_logit_scale(cosines, torch.full((20, 10), 0.1)) == 1.0  # a uniform teacher
    with pytest.raises(ValueError, match="same non-empty"):
        fit_logit_scale(cosines, one_hot[:, :5])
