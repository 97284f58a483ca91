"""`params.json`: the one model of what a trial is given, written by the tuner (as Tune's param space,
where Tune samples a search's parameters into it), read by the trainable and by the results tables.

A search's sampled parameters (`mixup_alpha`, `tau_spread`, …) sit at the top level beside the fixed
fields, because that is where Tune puts them; `point` gathers them by the space's own names.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from balpoe.config import Config, as_tuples, config_error


class CooldownPlan(BaseModel):
    """The rungs a trial scores after a cool-down, the cool-down's length per rung epoch, and the
    objective whose cooled value ASHA decides on."""
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    rungs: tuple[int, ...]
    fraction: float = Field(gt=0, le=1)
    metric: str

    @field_validator("rungs", mode="before")
    @classmethod
    def _rungs_as_tuple(cls, value: Any) -> Any:
        """params.json (and Tune's copy of the config) gives a list."""
        return as_tuples(value)


class TrialParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")  # allowed: the space's sampled parameters

    base: dict[str, Any]                       # the study's recipe (`Config.to_dict()`)
    checkpoint_every: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)              # torch threads: the trial's CPU share
    stop_epoch: int | None = Field(None, ge=1)  # --max-t; None: the recipe's last epoch
    cooldown: CooldownPlan | None = None
    seed: int | None = None                    # a baseline's seed (grid-searched by Tune)
    space: str | None = None                   # a search's space

    @classmethod
    def of(cls, values: dict) -> "TrialParams":
        """From a Tune config or `params.json`; a value of the wrong shape is a ConfigError naming it."""
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            raise config_error(err.errors()[0]) from None

    @property
    def point(self) -> dict[str, Any]:
        """The search's sampled parameters, by the space's names ({} for a baseline)."""
        if not self.space:
            return {}
        from search_spaces import get_space
        extra = self.model_extra or {}
        return {name: extra[name] for name in get_space(self.space).PARAMS if name in extra}

    def recipe(self) -> Config:
        """What the trial trains: the base recipe with the space's point (or the seed) applied."""
        from search_spaces import resolve_trial_config
        return resolve_trial_config(self.base, self.space, self.point, self.seed)

    def last_epoch(self, recipe: Config) -> int:
        """Where the trial ends, with its end-of-training evaluation."""
        return min(self.stop_epoch or recipe.epochs, recipe.epochs)
