"""The spread δ of the experts' τ alone, mixup fixed at the paper's α.

τ_k = linspace(1 − δ, 1 + δ, K) keeps the mean τ at 1 (an unbiased ensemble for a uniform prior);
δ = 0 makes every expert the balanced one (no diversity), δ = 1 is the paper's [0, 1, 2] for K = 3,
and larger δ pushes the tail expert further (τ > 2) and the head expert's τ below 0 (allowed on purpose).
"""
from .alpha_tau import spread_to_taus

PARAMS = {"tau_spread": (0.0, 1.5, "float")}
LOWER_LIMITS = {"tau_spread": 0.0}
PAPER_POINT = {"tau_spread": 1.0}


def to_overrides(point: dict, num_experts: int) -> dict:
    return {"tau_list": spread_to_taus(float(point["tau_spread"]), num_experts)}
