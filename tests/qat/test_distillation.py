"""Distillation losses: zero where the student matches the teacher, the usual KD formula otherwise, gradients
only into the student, and a short distillation run moves a fake-quantized student towards its teacher."""

import pytest
import torch
import torch.nn.functional as F

import fxq
from fxq.qat import distillation_loss, feature_distillation_loss
from tests.models import calibration_batches, example_inputs, make_model


def test_matching_outputs_cost_nothing_and_the_loss_is_the_kd_formula():
    torch.manual_seed(0)
    teacher, student, target = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert float(distillation_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    t = 3.0
    p, q = F.softmax(teacher / t, -1), F.log_softmax(student / t, -1)
    expected = 0.3 * (p * (p.log() - q)).sum(-1).mean() * t * t + 0.7 * F.cross_entropy(student, target)
    assert float(distillation_loss(student, teacher, target, t, 0.3)) == pytest.approx(float(expected), rel=1e-5)
    assert float(feature_distillation_loss(teacher * 3, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_gradients_reach_the_student_only():
    student, teacher = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    (distillation_loss(student, teacher) + feature_distillation_loss(student, teacher)).backward()
    assert student.grad is not None and teacher.grad is None


def test_bad_settings_are_refused():
    with pytest.raises(fxq.ConfigError, match="temperature > 0"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)
    with pytest.raises(fxq.ConfigError, match="shape"):
        feature_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_a_short_distillation_run_brings_the_student_closer_to_the_teacher():
    teacher = make_model("mlp")
    student = fxq.prepare_qat(teacher, None, example_inputs("mlp"))
    batches = calibration_batches("mlp", n=8)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-4)

    def gap():
        student.eval()
        with torch.no_grad():
            value = sum(float(distillation_loss(student(*b), teacher(*b))) for b in batches)
        student.train()
        return value

    student(*batches[0])  # ranges first
    before = gap()
    for _ in range(3):
        for batch in batches:
            optimizer.zero_grad()
            with torch.no_grad():
                target = teacher(*batch)
            distillation_loss(student(*batch), target).backward()
            optimizer.step()
    assert gap() < before
