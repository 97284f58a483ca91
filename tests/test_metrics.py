"""Calibration detail and per-expert diagnostics, against hand computations on known logits."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from balpoe.metrics import (calibration_errors, classification_metrics, expert_metrics, fit_temperature,
                            reliability_bins, scores)

COUNTS = [150] * 3 + [40] * 3 + [10] * 4  # many (> 100) / medium / few (< 20)


def known_logits(n_per_class: int = 30, experts: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    logits = torch.randn(len(labels), experts, 10, generator=generator) + 1.5 * F.one_hot(labels, 10)[:, None]
    return logits, labels


def test_brier_and_the_reliability_bins_by_hand():
    logits, labels = known_logits()
    metrics = classification_metrics(logits, labels, COUNTS)
    probs = F.softmax(logits.mean(dim=1), dim=1)
    assert metrics["brier"] == pytest.approx(float(((probs - F.one_hot(labels, 10)) ** 2).sum(dim=1).mean()))
    bins = reliability_bins(logits, labels)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == len(labels)
    ece = sum(b["count"] / len(labels) * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    assert ece == pytest.approx(metrics["ece"])


def test_temperature_one_changes_nothing_and_scaling_is_recovered():
    logits, labels = known_logits()
    ensemble = logits.mean(dim=1)
    assert scores(ensemble / 1.0, labels, COUNTS)["ece"] == classification_metrics(logits, labels, COUNTS)["ece"]
    # labels drawn from softmax(z) are calibrated for z; logits 3·z are over-confident by T = 3
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(20000, 1, 10, generator=generator) * 2
    drawn = torch.multinomial(F.softmax(z[:, 0], dim=1), 1, generator=generator)[:, 0]
    assert fit_temperature(3 * z, drawn) == pytest.approx(3.0, rel=0.05)
    confidence, predicted = F.softmax(3 * z[:, 0] / 3.0, dim=1).max(dim=1)
    assert calibration_errors(confidence, predicted == drawn)[0] < 0.02


def test_expert_diagnostics():
    logits, labels = known_logits()
    log_prior = torch.log(torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS) + 1e-9)
    metrics = expert_metrics(logits, labels, COUNTS, [0.0, 1.0, 2.0])
    # τ = 1: the correction to the uniform prior adds (1 − 1)·log π, nothing
    for key in ("balanced_acc", "many_acc", "medium_acc", "few_acc", "ece"):
        assert metrics[f"expert1_uniform_{key}"] == metrics[f"expert1_{key}"]
    # τ = 0: corrected logits are logits − log π, by hand
    corrected = logits[:, 0] - log_prior
    per_class = [float((corrected[labels == c].argmax(dim=1) == c).float().mean()) for c in range(10)]
    assert metrics["expert0_uniform_balanced_acc"] == pytest.approx(sum(per_class) / 10)
    top1 = logits.argmax(dim=2)
    assert metrics["expert02_disagreement"] == pytest.approx(float((top1[:, 0] != top1[:, 2]).float().mean()))
    assert metrics["expert_disagreement"] == pytest.approx(
        (metrics["expert01_disagreement"] + metrics["expert02_disagreement"] + metrics["expert12_disagreement"]) / 3)
    ensemble = scores(logits.mean(dim=1), labels, COUNTS)["balanced_acc"]
    best = max(metrics[f"expert{e}_uniform_balanced_acc"] for e in range(3))
    assert metrics["ensemble_gain"] == pytest.approx(ensemble - best)
    assert not math.isnan(metrics["expert2_few_acc"])
