import math

import pytest
import torch

from balpoe.config import Config
from balpoe.losses import ExpertLoss, log_prior
from balpoe.metrics import calibration_errors, classification_metrics
from balpoe.model import ResNet32Model, build_model, count_parameters
from balpoe.trainer import lr_factor


def test_parameter_count_and_output_shape():
    model = build_model(Config(), 100)
    assert count_parameters(model) == 1_362_064
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3, 100)
    for experts in (1, 7):
        assert ResNet32Model(10, experts)(torch.zeros(1, 3, 32, 32)).shape == (1, experts, 10)
    names = set(model.state_dict())  # the reference's names, so weights load either way
    assert {"backbone.conv1.weight", "backbone.layer2s.2.4.bn2.running_mean", "backbone.linears.0.weight"} <= names


def test_cosine_classifier_is_scaled_cosine():
    model = ResNet32Model(10, 1)
    with torch.no_grad():
        logits = model(torch.randn(4, 3, 32, 32))
    assert logits.abs().max() <= 30.0 + 1e-4
    weight = model.backbone.linears[0].weight
    assert weight.shape == (64, 10)


@pytest.mark.parametrize("epoch, factor", [(0, 0.2), (4, 1.0), (5, 1.0), (159, 1.0), (160, 0.1), (179, 0.1),
                                           (180, 0.01)])
def test_schedule_factors(epoch, factor):
    assert lr_factor(epoch, Config()) == pytest.approx(factor)


def test_expert_loss_matches_hand_computation():
    counts = [8, 2]
    logits = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])   # one image, two experts, two classes
    loss = ExpertLoss([0.0, 2.0], counts)
    total, per_expert = loss(logits, torch.tensor([1]), torch.tensor([1]), 1.0)
    # expert 0: plain CE; expert 1: logits + 2·log π with π = (0.8, 0.2)
    ce0 = -math.log(math.exp(0.0) / (math.exp(1.0) + math.exp(0.0)))
    a0, a1 = 0.5 + 2 * math.log(0.8 + 1e-9), 0.5 + 2 * math.log(0.2 + 1e-9)
    ce1 = -(a1 - math.log(math.exp(a0) + math.exp(a1)))
    assert per_expert.tolist() == pytest.approx([ce0, ce1], rel=1e-6)
    assert float(total) == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    mixed, _ = loss(logits, torch.tensor([1]), torch.tensor([0]), 0.3)
    _, per_expert_0 = loss(logits, torch.tensor([0]), torch.tensor([0]), 1.0)
    assert float(mixed) == pytest.approx(0.3 * (ce0 + ce1) / 2 + 0.7 * float(per_expert_0.mean()), rel=1e-6)
    assert log_prior([1, 3]).tolist() == pytest.approx([math.log(0.25), math.log(0.75)], rel=1e-6)


def test_calibration_errors_by_hand():
    confidence = torch.tensor([0.95, 0.95, 0.55, 0.55])
    correct = torch.tensor([True, False, True, True])
    ece, mce = calibration_errors(confidence, correct)
    # bin (0.933, 1]: acc 0.5 vs conf 0.95 → gap 0.45; bin (0.533, 0.6]: acc 1 vs 0.55 → gap 0.45
    assert ece == pytest.approx(0.45) and mce == pytest.approx(0.45)


def test_classification_metrics_groups_and_prior_correction():
    counts = [500, 50, 5]                      # many, medium, few
    labels = torch.tensor([0, 0, 1, 2])
    logits = torch.zeros(4, 2, 3)
    logits[:, :, 0] = 1.0                      # both experts always say class 0
    m = classification_metrics(logits, labels, counts)
    assert (m["acc"], m["balanced_acc"]) == (0.5, pytest.approx(1 / 3))
    assert (m["many_acc"], m["medium_acc"], m["few_acc"]) == (1.0, 0.0, 0.0)
    assert m["expert0_acc"] == m["expert1_acc"] == 0.5
    prior = torch.log(torch.tensor([0.01, 0.01, 0.98]))
    corrected = classification_metrics(logits, labels, counts, prior)
    assert corrected["acc"] == 0.25 and corrected["few_acc"] == 1.0
