"""The test-agnostic protocol: accuracy under shifted test priors, with and without prior correction.

The shifted test sets come from the full test set with the training set's exp profile at imbalance
1/50 … 1/2, head-heavy ("forward") or tail-heavy ("backward"), plus the uniform set itself. With
correction, log(test prior) is added to the ensemble logits — the post-hoc adjustment the paper uses
when the test prior is known.
"""
from __future__ import annotations

import numpy as np
import torch

from .data import SHIFT_FACTORS, shifted_test_indices
from .losses import log_prior
from .metrics import classification_metrics


def test_distributions(labels: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(name, indices) for forward-50 … forward-2, uniform, backward-2 … backward-50."""
    names = [(f"forward-{r}", shifted_test_indices(labels, r, "forward")) for r in SHIFT_FACTORS]
    names.append(("uniform", np.arange(len(labels))))
    names += [(f"backward-{r}", shifted_test_indices(labels, r, "backward")) for r in reversed(SHIFT_FACTORS)]
    return names


def test_agnostic(logits: torch.Tensor, labels: torch.Tensor, class_counts) -> list[dict]:
    """One row per test distribution: accuracy and ECE without and with post-hoc prior correction."""
    rows = []
    num_classes = logits.shape[-1]
    for name, idx in test_distributions(labels.numpy()):
        sub_logits, sub_labels = logits[idx], labels[idx]
        test_prior = log_prior(torch.bincount(sub_labels, minlength=num_classes))
        plain = classification_metrics(sub_logits, sub_labels, class_counts)
        corrected = classification_metrics(sub_logits, sub_labels, class_counts, test_prior)
        rows.append({"distribution": name, "images": len(idx), "acc": plain["acc"], "ece": plain["ece"],
                     "acc_prior": corrected["acc"], "ece_prior": corrected["ece"]})
    return rows


def shift_metrics(logits: torch.Tensor, labels: torch.Tensor, class_counts) -> dict[str, float]:
    """The protocol as flat, stable keys for reports and tables: `shift_<distribution>_acc` and
    `..._acc_prior` (forward50 … uniform … backward50), plus their mean and worst over the 11
    distributions. One pass of logits over the full test set; the distributions are index selections."""
    rows = test_agnostic(logits, labels, class_counts)
    out = {}
    for row in rows:
        name = row["distribution"].replace("-", "")
        out[f"shift_{name}_acc"], out[f"shift_{name}_acc_prior"] = row["acc"], row["acc_prior"]
    for suffix in ("acc", "acc_prior"):
        values = [row[suffix] for row in rows]
        out[f"shift_mean_{suffix}"], out[f"shift_worst_{suffix}"] = float(np.mean(values)), float(min(values))
    return out
