"""The number of experts K in 1…7, τ by the official `limits` rule over [0, 2].

τ_k is equidistant in [τ_min, τ_max] = [0, 2] (K = 1 gives the midpoint 1), so the mean τ is 1 for
every K and only the number of experts between the head and tail extremes changes. Cost grows about
linearly with K (each expert owns stages 2–3), so this space prices accuracy against compute.
"""
from balpoe.config import resolve_tau_list

PARAMS = {"num_experts": (1, 7, "int")}
LOWER_LIMITS = {"num_experts": 1}
PAPER_POINT = {"num_experts": 3}
TAU_MIN, TAU_MAX = 0.0, 2.0


def to_overrides(point: dict, num_experts: int) -> dict:
    k = int(point["num_experts"])
    return {"num_experts": k, "tau_list": resolve_tau_list("limits", k, TAU_MIN, TAU_MAX)}
