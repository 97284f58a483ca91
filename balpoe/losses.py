"""BalPoE's expert loss: cross-entropy of logit-adjusted expert logits.

Expert e is trained on logits_e + τ_e · log π (π = training class prior), i.e. as if for a test prior
∝ π^(1−τ_e): τ = 0 is the plain (head-biased) expert, τ = 1 the balanced one, τ = 2 the tail expert.
Averaging the raw logits of experts whose τ average to 1 gives an unbiased predictor for a uniform prior.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PRIOR_EPS = 1e-9


def log_prior(class_counts, device=None) -> torch.Tensor:
    counts = torch.as_tensor(class_counts, dtype=torch.float32, device=device)
    return torch.log(counts / counts.sum() + PRIOR_EPS)


class ExpertLoss:
    def __init__(self, tau_list, class_counts, device=None):
        self.adjustment = torch.tensor(tau_list, dtype=torch.float32, device=device).view(-1, 1) \
            * log_prior(class_counts, device).view(1, -1)          # (experts, classes)

    def per_expert(self, logits: torch.Tensor, targets: torch.Tensor, mix_targets: torch.Tensor,
                   lam: float) -> torch.Tensor:
        """Loss of each expert, shape (experts,); with mixup, λ·L(y) + (1−λ)·L(y[perm])."""
        adjusted = (logits + self.adjustment).float()               # (batch, experts, classes)
        log_probs = F.log_softmax(adjusted, dim=2)
        nll_a = -log_probs.gather(2, targets.view(-1, 1, 1).expand(-1, logits.shape[1], 1)).squeeze(2)
        if lam == 1.0:
            return nll_a.mean(dim=0)
        nll_b = -log_probs.gather(2, mix_targets.view(-1, 1, 1).expand(-1, logits.shape[1], 1)).squeeze(2)
        return lam * nll_a.mean(dim=0) + (1.0 - lam) * nll_b.mean(dim=0)

    def __call__(self, logits, targets, mix_targets, lam) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss = mean over experts, per-expert losses)."""
        per_expert = self.per_expert(logits, targets, mix_targets, lam)
        return per_expert.mean(), per_expert
