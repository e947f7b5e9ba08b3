import math

import pytest
import torch

from zscl_core import ConfigError
from zscl_core.gate import GatePolicy, PairedScore, evaluate_gate


def _score(dataset_id, kind, n, correct_before, lost, gained, name=None):
    return PairedScore(dataset_id, name or dataset_id, kind, n, correct_before, lost, gained)


def test_paired_score_from_correctness_and_its_standard_error():
    before = torch.tensor([1, 1, 1, 0, 0, 1, 0, 1, 1, 0], dtype=torch.bool)
    after = torch.tensor([1, 0, 1, 1, 1, 1, 0, 1, 0, 0], dtype=torch.bool)
    s = PairedScore.from_correct("d1", "pets", "suite", before, after)
    assert (s.n, s.correct_before, s.lost, s.gained) == (10, 6, 2, 2)
    assert (s.before, s.after, s.delta) == (60.0, 60.0, 0.0)
    # d_i in {-1, 0, +1}: 2 of each sign, mean 0, variance 4/10 -> se = 100 * sqrt(0.4 / 10)
    assert s.se == pytest.approx(100 * math.sqrt(0.04))
    with pytest.raises(ValueError, match="same images"):
        PairedScore.from_correct("d1", "pets", "suite", before, after[:5])
    with pytest.raises(ValueError, match="inconsistent"):
        _score("d", "suite", 10, 3, 4, 0)


def test_candidate_that_gains_and_keeps_everything_passes():
    new = _score("p", "new_task", 200, 80, 2, 92, name="pets")
    report = evaluate_gate(new, [_score("c", "learned", 200, 140, 3, 2, name="cars"),
                                 _score("f", "suite", 200, 120, 4, 5, name="cifar")],
                           GatePolicy(), drift=0.1)
    assert report.passed and report.reasons == []
    assert [r["delta"] for r in report.rows] == [45.0, -0.5, 0.5]
    assert report.mean_drop == pytest.approx(0.0)
    assert [r["dataset_id"] for r in report.rows] == ["p", "c", "f"]


def test_a_drop_within_its_noise_margin_passes_and_a_real_one_fails():
    new = _score("p", "new_task", 300, 90, 0, 60)
    # 4 points lost on 300 images, 12 lost and 0 gained: se = 100*sqrt((12/300 - 0.04^2)/300)
    small = _score("s", "suite", 300, 150, 12, 0)
    se = 100 * math.sqrt((12 / 300 - 0.04 ** 2) / 300)
    report = evaluate_gate(new, [small], GatePolicy(max_dataset_drop=3.0, max_mean_drop=4.0))
    assert report.rows[1]["margin"] == pytest.approx(1.6448536 * se, rel=1e-6)
    assert report.passed, report.reasons  # 4.0 - 1.86 < 3
    # the same drop without a margin (confidence 0.5) fails
    strict = evaluate_gate(new, [small], GatePolicy(max_dataset_drop=3.0, max_mean_drop=4.0,
                                                    confidence=0.5))
    assert not strict.passed and "dropped 4.00" in strict.reasons[0]
    # a 10-point drop on the same images is beyond any margin
    big = _score("s", "suite", 300, 150, 30, 0)
    assert not evaluate_gate(new, [big], GatePolicy()).passed


def test_each_rule_rejects_with_a_reason():
    policy = GatePolicy(max_mean_drop=1.0, max_dataset_drop=3.0, max_drift=0.5, confidence=0.5)
    report = evaluate_gate(_score("p", "new_task", 100, 40, 0, 0, name="pets"),
                           [_score("c", "learned", 100, 70, 4, 0, name="cars"),
                            _score("f", "suite", 100, 60, 0, 0, name="cifar")],
                           policy, drift=0.9)
    assert not report.passed
    text = " | ".join(report.reasons)
    assert "gained +0.00" in text
    assert "learned 'cars' dropped 4.00 ± 0.00 points (max 3.00; dataset c)" in text
    assert "mean drop over retained datasets is 2.00" in text
    assert "drift 0.9000 exceeds 0.5000" in text


def test_a_gain_inside_its_margin_is_not_a_gain():
    # +2 points on 100 images with 4 gained and 2 lost: se ~ 2.45, margin ~ 4.0
    report = evaluate_gate(_score("p", "new_task", 100, 50, 2, 4), [], GatePolicy())
    assert not report.passed and "past the margin" in report.reasons[0]


def test_two_datasets_with_one_name_are_both_in_the_report():
    new = _score("n", "new_task", 100, 10, 0, 50)
    report = evaluate_gate(new, [_score("a", "learned", 100, 50, 0, 0, name="pets"),
                                 _score("b", "suite", 100, 60, 0, 0, name="pets")], GatePolicy())
    assert [(r["dataset_id"], r["dataset"]) for r in report.rows[1:]] == [("a", "pets"),
                                                                          ("b", "pets")]
    with pytest.raises(ValueError, match="scored twice"):
        evaluate_gate(new, [new], GatePolicy())


def test_policy_bounds():
    with pytest.raises(ConfigError):
        GatePolicy(max_mean_drop=-1)
    with pytest.raises(ConfigError):
        GatePolicy(max_drift=-0.1)
    with pytest.raises(ConfigError, match="confidence"):
        GatePolicy(confidence=1.0)
