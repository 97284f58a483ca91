"""Mixup α and the spread δ of the experts' τ, searched jointly.

τ_k = linspace(1 − δ, 1 + δ, K): the mean τ stays 1, so the ensemble stays unbiased for a uniform
test prior whatever δ is (the paper's balanced-ensemble condition), and δ alone sets how far the
head and tail experts specialise. δ = 1 with K = 3 is the paper's [0, 1, 2]; α = 0.4 its mixup.
Above δ = 1 the head expert's τ is below 0 (tilted past plain cross-entropy toward the head): allowed on
purpose, since the ensemble stays balanced for any δ.
α and δ interact (mixup's calibration vs the experts' diversity), hence a joint search.
"""
import numpy as np

PARAMS = {"mixup_alpha": (0.0, 1.0, "float"), "tau_spread": (0.0, 1.5, "float")}
LOWER_LIMITS = {"mixup_alpha": 0.0, "tau_spread": 0.0}
PAPER_POINT = {"mixup_alpha": 0.4, "tau_spread": 1.0}


def spread_to_taus(spread: float, num_experts: int) -> list[float]:
    if num_experts == 1:
        return [1.0]
    return [float(t) for t in np.linspace(1.0 - spread, 1.0 + spread, num_experts)]


def to_overrides(point: dict, num_experts: int) -> dict:
    return {"mixup_alpha": float(point["mixup_alpha"]),
            "tau_list": spread_to_taus(float(point["tau_spread"]), num_experts)}
