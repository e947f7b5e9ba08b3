import pytest

from zscl_core import ConfigError
from zscl_core.gate import GatePolicy, evaluate_gate


def test_candidate_that_gains_and_keeps_everything_passes():
    report = evaluate_gate(("pets", 40.0, 85.0),
                           {"cars": ("learned", 70.0, 69.5), "cifar": ("suite", 60.0, 60.5)},
                           GatePolicy(), drift=0.1)
    assert report.passed and report.reasons == []
    assert report.mean_drop == pytest.approx((0.5 - 0.5) / 2)
    assert [r["delta"] for r in report.rows] == [45.0, -0.5, 0.5]


def test_each_rule_rejects_with_a_reason():
    policy = GatePolicy(max_mean_drop=1.0, max_dataset_drop=3.0, max_drift=0.5)
    report = evaluate_gate(("pets", 40.0, 40.0),
                           {"cars": ("learned", 70.0, 66.0), "cifar": ("suite", 60.0, 60.0)},
                           policy, drift=0.9)
    assert not report.passed
    text = " | ".join(report.reasons)
    assert "gained +0.00" in text
    assert "learned 'cars' dropped 4.00" in text
    assert "mean drop over retained datasets is 2.00" in text
    assert "drift 0.9000 exceeds 0.5000" in text


def test_policy_bounds():
    with pytest.raises(ConfigError):
        GatePolicy(max_mean_drop=-1)
    with pytest.raises(ConfigError):
        GatePolicy(max_drift=-0.1)
