"""Declarative search spaces, one module per study, found by name.

A space module defines:
    PARAMS       {name: (low, high, "float" | "int")}   the searched parameters and default ranges
    PAPER_POINT  {name: value}                          the paper's recipe in this parameterisation
    LOWER_LIMITS {name: value}                          smallest value a range may start at
    to_overrides(point, num_experts) -> dict            balpoe config overrides for a sampled point
and a docstring that explains the parameterisation and why.
"""
from __future__ import annotations

import importlib
import math
from types import ModuleType

SPACE_NAMES = ("alpha_tau", "alpha", "tau_spread", "experts")


class SpaceError(ValueError):
    """Unknown space or impossible range; the message names the option."""


def get_space(name: str) -> ModuleType:
    if name not in SPACE_NAMES:
        raise SpaceError(f"--space: unknown space {name!r}; choose one of {', '.join(SPACE_NAMES)}")
    return importlib.import_module(f"search_spaces.{name}")


def resolve_ranges(space: ModuleType, overrides: dict[str, tuple[float, float]] | None = None) -> dict:
    """The space's ranges with user overrides (`--range NAME=LOW:HIGH`), checked."""
    ranges = {name: (low, high) for name, (low, high, _) in space.PARAMS.items()}
    for name, bounds in (overrides or {}).items():
        numbers = [b for b in bounds if isinstance(b, (int, float)) and not isinstance(b, bool)]
        if len(bounds) != 2 or len(numbers) != 2:
            raise SpaceError(f"--range: {name} needs two numbers LOW:HIGH (got {bounds!r})")
        low, high = numbers
        if not (math.isfinite(low) and math.isfinite(high)):
            raise SpaceError(f"--range: {name} needs finite bounds (got {low}:{high})")
        if name not in ranges:
            raise SpaceError(f"--range: {name!r} is not a parameter of this space ({', '.join(ranges)})")
        if space.PARAMS[name][2] == "int" and not (float(low).is_integer() and float(high).is_integer()):
            raise SpaceError(f"--range: {name} takes whole numbers (got {low}:{high})")
        limit = space.LOWER_LIMITS[name]
        if low < limit:
            raise SpaceError(f"--range: {name} must stay in [{limit}, ∞); got {low}:{high}")
        if not low < high:
            raise SpaceError(f"--range: {name} needs LOW < HIGH; got {low}:{high}")
        ranges[name] = (low, high)
    return ranges


def tune_domains(space: ModuleType, ranges: dict) -> dict:
    from ray import tune
    domains = {}
    for name, (low, high) in ranges.items():
        kind = space.PARAMS[name][2]
        domains[name] = tune.randint(int(low), int(high) + 1) if kind == "int" else tune.uniform(low, high)
    return domains


def paper_point(space: ModuleType, ranges: dict) -> dict | None:
    """The paper's point, when it lies inside the ranges (else there is nothing to seed)."""
    point = dict(space.PAPER_POINT)
    inside = all(ranges[name][0] <= value <= ranges[name][1] for name, value in point.items())
    return point if inside else None


def resolve_trial_config(base: dict, space: str | None = None, point: dict | None = None, seed: int | None = None):
    """A trial's balpoe Config: the base recipe with a search space's sampled `point` applied (or a
    baseline's `seed`). Built once, straight from the merged values (`TrialParams.recipe`)."""
    from balpoe.config import field_default, from_dict
    overrides = {}
    if space:
        module = get_space(space)
        missing = [name for name in module.PARAMS if name not in (point or {})]
        if missing:
            raise KeyError(f"the space {space} samples {', '.join(missing)}, which the trial was not given")
        overrides.update(module.to_overrides(point, base.get("num_experts", field_default("num_experts"))))
    if seed is not None:
        overrides["seed"] = int(seed)
    return from_dict({**base, **overrides})
