"""Mixup α alone, experts fixed at the paper's τ.

Mixup is BalPoE's calibration lever: the paper shows ECE falling from 17.6 to 4.9 as α goes 0 → 0.4.
Searching α alone asks whether 0.4 is also the accuracy/calibration sweet spot on your data.
"""
PARAMS = {"mixup_alpha": (0.0, 1.0, "float")}
LOWER_LIMITS = {"mixup_alpha": 0.0}
PAPER_POINT = {"mixup_alpha": 0.4}


def to_overrides(point: dict, num_experts: int) -> dict:
    return {"mixup_alpha": float(point["mixup_alpha"])}
