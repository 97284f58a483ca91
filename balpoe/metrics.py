"""Evaluation metrics over ensemble (and per-expert) logits. Plain functions returning flat dicts."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

CALIBRATION_BINS = 15
MANY_SHOT, FEW_SHOT = 100, 20  # training count > 100: many; < 20: few; else medium


def shot_groups(class_counts) -> dict[str, np.ndarray]:
    counts = np.asarray(class_counts)
    return {"many": counts > MANY_SHOT, "medium": (counts >= FEW_SHOT) & (counts <= MANY_SHOT),
            "few": counts < FEW_SHOT}


def calibration_errors(confidence: torch.Tensor, correct: torch.Tensor, bins: int = CALIBRATION_BINS):
    """ECE and MCE over `bins` equal-width bins of top-1 confidence (bins are (lo, hi])."""
    edges = torch.linspace(0, 1, bins + 1, device=confidence.device)
    which = torch.bucketize(confidence, edges[1:-1], right=False)  # (lo, hi] → bin index
    ece, mce, n = 0.0, 0.0, len(confidence)
    for b in range(bins):
        in_bin = which == b
        count = int(in_bin.sum())
        if count == 0:
            continue
        gap = abs(float(correct[in_bin].float().mean()) - float(confidence[in_bin].mean()))
        ece += gap * count / n
        mce = max(mce, gap)
    return ece, mce


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_counts,
                           log_test_prior: torch.Tensor | None = None) -> dict[str, float]:
    """Metrics of the ensemble: `logits` are per-expert (N, experts, classes); the ensemble is their mean.
    `log_test_prior` (post-hoc prior correction) is added to the ensemble logits when given."""
    num_classes = logits.shape[-1]
    ensemble = logits.float().mean(dim=1)
    if log_test_prior is not None:
        ensemble = ensemble + log_test_prior
    probs = F.softmax(ensemble, dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = predicted == labels
    per_class = per_class_accuracy(predicted, labels, num_classes)
    present = ~np.isnan(per_class)
    ece, mce = calibration_errors(confidence, correct)
    out = {"acc": float(correct.float().mean()), "balanced_acc": float(per_class[present].mean()),
           "nll": float(F.cross_entropy(ensemble, labels)), "ece": ece, "mce": mce}
    for group, mask in shot_groups(class_counts).items():
        chosen = per_class[mask & present]
        out[f"{group}_acc"] = float(chosen.mean()) if len(chosen) else math.nan
    for e in range(logits.shape[1]):
        out[f"expert{e}_acc"] = float((logits[:, e].argmax(dim=1) == labels).float().mean())
    return out


def per_class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """Recall per class; NaN for classes absent from `labels`."""
    total = torch.bincount(labels, minlength=num_classes).double()
    hits = torch.bincount(labels[predicted == labels], minlength=num_classes).double()
    acc = (hits / total).cpu().numpy()
    acc[total.cpu().numpy() == 0] = np.nan
    return acc
