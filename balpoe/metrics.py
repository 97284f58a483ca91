"""Evaluation metrics over ensemble (and per-expert) logits. Plain functions returning flat dicts."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .losses import log_prior

CALIBRATION_BINS = 15
MANY_SHOT, FEW_SHOT = 100, 20  # training count > 100: many; < 20: few; else medium


def shot_groups(class_counts) -> dict[str, np.ndarray]:
    counts = np.asarray(class_counts)
    return {"many": counts > MANY_SHOT, "medium": (counts >= FEW_SHOT) & (counts <= MANY_SHOT),
            "few": counts < FEW_SHOT}


def confidence_bins(confidence: torch.Tensor, correct: torch.Tensor, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Per equal-width bin (lo, hi] of top-1 confidence: its edges, count, mean confidence and accuracy
    (NaN means for an empty bin). ECE, MCE and the reliability diagram all read these bins."""
    edges = torch.linspace(0, 1, bins + 1, device=confidence.device)
    which = torch.bucketize(confidence, edges[1:-1], right=False)  # (lo, hi] → bin index
    rows = []
    for b in range(bins):
        in_bin = which == b
        count = int(in_bin.sum())
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                     "confidence": float(confidence[in_bin].mean()) if count else math.nan,
                     "accuracy": float(correct[in_bin].float().mean()) if count else math.nan})
    return rows


def calibration_errors(confidence: torch.Tensor, correct: torch.Tensor, bins: int = CALIBRATION_BINS):
    """ECE and MCE over `bins` equal-width bins of top-1 confidence (bins are (lo, hi])."""
    gaps = [(b["count"], abs(b["accuracy"] - b["confidence"])) for b in confidence_bins(confidence, correct, bins)
            if b["count"]]
    n = len(confidence)
    return sum(count * gap / n for count, gap in gaps), max((gap for _, gap in gaps), default=0.0)


def scores(logits: torch.Tensor, labels: torch.Tensor, class_counts) -> dict[str, float]:
    """Accuracy, balanced and many/medium/few accuracy, NLL, Brier score, ECE and MCE of one set of
    logits (N, classes)."""
    logits = logits.float()
    probs = F.softmax(logits, dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = predicted == labels
    per_class = per_class_accuracy(predicted, labels, logits.shape[-1])
    present = ~np.isnan(per_class)
    ece, mce = calibration_errors(confidence, correct)
    brier = float(((probs - F.one_hot(labels, logits.shape[-1]).float()) ** 2).sum(dim=1).mean())
    out = {"acc": float(correct.float().mean()), "balanced_acc": float(per_class[present].mean()),
           "nll": float(F.cross_entropy(logits, labels)), "brier": brier, "ece": ece, "mce": mce}
    for group, mask in shot_groups(class_counts).items():
        chosen = per_class[mask & present]
        out[f"{group}_acc"] = float(chosen.mean()) if len(chosen) else math.nan
    return out


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_counts,
                           log_test_prior: torch.Tensor | None = None) -> dict[str, float]:
    """Metrics of the ensemble: `logits` are per-expert (N, experts, classes); the ensemble is their mean.
    `log_test_prior` (post-hoc prior correction) is added to the ensemble logits when given."""
    ensemble = logits.float().mean(dim=1)
    if log_test_prior is not None:
        ensemble = ensemble + log_test_prior
    out = scores(ensemble, labels, class_counts)
    for e in range(logits.shape[1]):
        out[f"expert{e}_acc"] = float((logits[:, e].argmax(dim=1) == labels).float().mean())
    return out


def expert_metrics(logits: torch.Tensor, labels: torch.Tensor, class_counts, tau_list) -> dict[str, float]:
    """Whether the experts are the differently biased experts BalPoE claims. Per expert e: its raw
    logits' balanced and many/medium/few accuracy and ECE (`expert{e}_*`), and the same for its logits
    corrected to the uniform prior, logits_e + (τ_e − 1)·log π (`expert{e}_uniform_*`); the ensemble's
    balanced-accuracy gain over the best corrected expert; the experts' disagreement (share of samples
    on which two experts' top-1 differ, mean over pairs and per pair)."""
    prior = log_prior(class_counts)
    kept = ("balanced_acc", "many_acc", "medium_acc", "few_acc", "ece")
    out, best = {}, -math.inf
    for e, tau in enumerate(tau_list):
        raw = scores(logits[:, e], labels, class_counts)
        uniform = scores(logits[:, e].float() + (float(tau) - 1.0) * prior, labels, class_counts)
        out.update({f"expert{e}_{k}": raw[k] for k in kept})
        out.update({f"expert{e}_uniform_{k}": uniform[k] for k in kept})
        best = max(best, uniform["balanced_acc"])
    ensemble = scores(logits.float().mean(dim=1), labels, class_counts)["balanced_acc"]
    out["ensemble_gain"] = ensemble - best
    top1 = logits.argmax(dim=2)
    pairs = [(i, j) for i in range(len(tau_list)) for j in range(i + 1, len(tau_list))]
    for i, j in pairs:
        out[f"expert{i}{j}_disagreement"] = float((top1[:, i] != top1[:, j]).float().mean())
    out["expert_disagreement"] = float(np.mean([out[f"expert{i}{j}_disagreement"] for i, j in pairs])) \
        if pairs else 0.0
    return out


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Reliability-diagram data of the ensemble (per-expert logits (N, experts, classes)): the
    confidence bins of its top-1 predictions."""
    confidence, predicted = F.softmax(logits.float().mean(dim=1), dim=1).max(dim=1)
    return confidence_bins(confidence, predicted == labels, bins)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T that minimises the NLL of the ensemble's logits / T (temperature scaling,
    fitted on validation; used only as a comparison, never to change the model's reported metrics)."""
    ensemble = logits.float().mean(dim=1)
    log_t = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(ensemble / log_t.exp(), labels)
        loss.backward()
        return loss
    optimiser.step(closure)
    return float(log_t.detach().exp())


def per_class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """Recall per class; NaN for classes absent from `labels`."""
    total = torch.bincount(labels, minlength=num_classes).double()
    hits = torch.bincount(labels[predicted == labels], minlength=num_classes).double()
    acc = (hits / total).cpu().numpy()
    acc[total.cpu().numpy() == 0] = np.nan
    return acc
