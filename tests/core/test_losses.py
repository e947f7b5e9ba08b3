import math

import pytest
import torch

from zscl_core import feature_distillation, l2_weight_constraint, scaled_cosine_logits, soft_cross_entropy


def test_distillation_is_zero_cross_entropy_gap_when_student_equals_teacher():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    parts = feature_distillation(logits, logits.clone(), temperature=2.0)
    # with identical logits the loss is the teacher's entropy; its gradient w.r.t. the student is 0
    student = logits.clone().requires_grad_(True)
    loss = soft_cross_entropy(student, logits, 2.0)
    loss.backward()
    assert torch.allclose(student.grad, torch.zeros_like(student.grad), atol=1e-7)
    p = torch.softmax(logits / 2, dim=-1)
    entropy = -(p * p.log()).sum(-1).mean() * 4
    assert parts["kd_image"].item() == pytest.approx(entropy.item(), rel=1e-6)


def test_distillation_matches_hand_computation_on_2x3():
    student = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    t = 2.0
    # teacher targets are uniform (1/3 each); row 0: -log(1/3); row 1: student probs at T=2 are
    # softmax([1, 0, 0]) -> log-sum-exp = log(e + 2)
    row0 = math.log(3)
    lse = math.log(math.e + 2)
    row1 = -((1 - lse) + (0 - lse) + (0 - lse)) / 3
    expected = (row0 + row1) / 2 * t * t
    parts = feature_distillation(student, teacher, t)
    assert parts["kd_image"].item() == pytest.approx(expected, rel=1e-6)
    # text side: the transposed problem, over the 2 images for each of the 3 texts
    # column 0: student [0, 2]/2 = [0, 1], teacher uniform over 2 -> -(0.5*(0-l) + 0.5*(1-l))
    l0 = math.log(1 + math.e)
    col0 = -(0.5 * (0 - l0) + 0.5 * (1 - l0))
    col12 = math.log(2)
    expected_text = (col0 + 2 * col12) / 3 * t * t
    assert parts["kd_text"].item() == pytest.approx(expected_text, rel=1e-6)
    assert parts["kd_text"].item() == pytest.approx(
        soft_cross_entropy(student.t(), teacher.t(), t).item())


def test_distillation_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(3, 2))


def test_scaled_cosine_logits():
    img = torch.tensor([[3.0, 0.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    logits = scaled_cosine_logits(img, txt, 100.0)
    assert torch.allclose(logits, torch.tensor([[100.0, 0.0, 100 / math.sqrt(2)]]))


def test_l2_weight_constraint_hand_value():
    params = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.5]])}
    anchor = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([[1.0]])}
    assert l2_weight_constraint(params, anchor).item() == pytest.approx(1 + 4 + 0.25)
    with pytest.raises(KeyError):
        l2_weight_constraint(params, {"a": anchor["a"]})
