"""`study.json`: the one model of a study's resolved settings, read by the study driver and by `results`.

A `StudySettings` is a frozen pydantic model, checked as a whole when it is built (types, ranges, how
fields fit together) and never changed afterwards: resolution (defaults, resources, data) happens
before it is built, or returns a new one (`with_changes`). The driver writes it into the experiment
folder before any trial starts, so a study folder describes itself (recipe, space, scheduler,
resources, versions), and `resume`, `show`, `report` and the live page all read it back through here.
The defaults the driver resolves (first rung, TPE's start-up trials) live with the driver
(`study/settings.py`); `StudyError` lives here because the model raises it.
"""
from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from balpoe.config import UINT32_MAX, Config, ConfigError, as_tuples, bounds_text, config_error
from balpoe.cooldown import cooldown_epochs, in_trunk
from search_spaces import SpaceError, get_space, resolve_ranges

from .storage_urls import hide_password, storage_url_problem
from .storage import Location, join, location

SETTINGS_FILE = "study.json"
STARTED_FILE = ".study-started.json"  # study.json as the study started: a started study cannot change
DEFAULT_OBJECTIVES = (("val_balanced_acc", "max"),)
# metrics reported every epoch that may be optimised; test metrics never are (that would leak)
OBJECTIVE_METRICS = ("val_balanced_acc", "val_acc", "val_many_acc", "val_medium_acc", "val_few_acc",
                     "val_nll", "val_ece", "val_mce", "train_loss", "train_acc")
# the direction in which each kind of metric improves, by its last word (val_balanced_acc: acc)
MODES = {"acc": "max", "loss": "min", "nll": "min", "brier": "min", "ece": "min", "mce": "min"}
RUNG_PREFIX = "rung_"  # with cool-down rungs, what ASHA decides on: rung_val_balanced_acc


def known_mode(metric: str) -> str | None:
    """`max` or `min` for a metric whose direction is known, else None: an objective given without a mode
    takes this, and the tables rank metrics outside a study's objectives by it."""
    return MODES.get(metric.rpartition("_")[2])


def asha_rungs(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """ASHA's milestones for one bracket: grace · rf^k up to max_t (Ray's formula)."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1 + 1e-9)
    return [int(grace_period * reduction_factor ** k) for k in range(count)]


class FrozenMapping(dict):
    """A dict that refuses changes, for the mappings of a frozen model (pydantic freezes the fields, not
    what they hold). A dict subclass, so pydantic validates and dumps it, and pickling keeps it whole."""

    def _refuse(self, *args: Any, **kwargs: Any):
        raise TypeError("study settings cannot change: build new ones with with_changes()")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        return FrozenMapping, (dict(self),)


class StudyError(ValueError):
    """Bad study input; the message names the option. Raised before Ray starts."""


class RankedByObjectives:
    """`metric` and `mode`: the first of the `objectives`, which ranks trials and drives ASHA (for a study's
    settings and for an experiment read back, which may have none)."""

    @property
    def metric(self) -> str:
        return self.objectives[0][0]

    @property
    def mode(self) -> str:
        return self.objectives[0][1]


Seed = Annotated[int, Field(ge=0, le=UINT32_MAX)]
GPUS_PER_TRIAL = "a trial trains on one device, so 1, a fraction (0.25 packs 4 trials on a GPU) or 0 for CPU-only trials"


class StudySettings(RankedByObjectives, BaseModel):
    """Each single-field bound is declared on its field (the option it belongs to is named in the
    error: `--num-samples: must be >= 1 (got 0)`); `_check` holds what fields say together."""
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["baseline", "search"]
    name: str
    storage_path: str                                  # absolute folder, or an object store's URI (s3://…)
    base: Config                                       # the recipe every trial starts from
    seeds: tuple[Seed, ...] = (1,)
    space: str | None = None
    ranges: dict[str, tuple[float, float]] = {}
    objectives: tuple[tuple[str, str], ...] = DEFAULT_OBJECTIVES
    num_samples: int = Field(1, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    sampler_seed: Seed = 0
    asha: bool = True
    grace_period: int | None = Field(None, ge=1)      # first ASHA rung (resolved: default_grace_period)
    reduction_factor: int = Field(2, ge=2)
    fidelity: Literal["trunk", "cooldown"] = "trunk"  # what ASHA ranks at a rung in the LR trunk
    cooldown_fraction: float | None = Field(None, gt=0, le=1, description="cool-down epochs per rung epoch")
    max_t: int                                         # the epoch every trial stops at (resolved)
    startup_trials: int | None = Field(None, ge=1)    # TPE's random start-up trials (searches; resolved)
    cpus_per_trial: float | None = Field(None, gt=0)  # None until the cluster's size is known
    gpus_per_trial: float | None = Field(None, ge=0, le=1, description=GPUS_PER_TRIAL)
    checkpoint_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0)
    min_free_mb: float = Field(200.0, ge=0)            # stop cleanly (resumable) below this much free disk
    optuna_storage: str | None = None                  # Optuna's record elsewhere (searches); None: optuna.db here
    trackers: tuple[str, ...] = ()                     # --log-to, resolved: "mlflow=URI", "wandb=PROJECT"
    versions: dict[str, Any] = {}

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise settings_error(err) from None

    @model_validator(mode="before")
    @classmethod
    def _resolve_ranges(cls, values: Any) -> Any:
        """A search's ranges, resolved here once: the space's own with the `--range` overrides applied."""
        if not isinstance(values, dict) or values.get("kind") != "search":
            return values
        try:
            space = get_space(values.get("space") or "")
            return {**values, "ranges": resolve_ranges(space, values.get("ranges") or {})}
        except SpaceError as err:
            raise StudyError(str(err)) from None

    @field_validator("ranges", "versions")
    @classmethod
    def _frozen_mapping(cls, value: dict) -> FrozenMapping:
        return FrozenMapping(value)

    @field_validator("seeds", "objectives", "ranges", "trackers", mode="before")
    @classmethod
    def _lists_as_tuples(cls, value: Any) -> Any:
        """JSON and the command line give lists; the settings hold tuples, which cannot be changed."""
        return {k: as_tuples(v) for k, v in value.items()} if isinstance(value, dict) else as_tuples(value)

    # --- derived views ----------------------------------------------------------------------------
    @property
    def experiment_dir(self) -> str:
        return join(self.storage_path, self.name)

    @property
    def epochs(self) -> int:
        return self.base.epochs

    @property
    def stop_epoch(self) -> int:
        """Where trials end, with their end-of-training evaluation: `--max-t`, else the last epoch."""
        return self.max_t

    @property
    def expected_trials(self) -> int:
        return len(self.seeds) if self.kind == "baseline" else self.num_samples

    @property
    def asha_metric(self) -> str:
        """The key ASHA decides on: with cool-down rungs, the cooled score at a cool-down rung and the
        trunk's elsewhere (`rung_METRIC`, reported by every epoch); else the objective itself."""
        return RUNG_PREFIX + self.metric if self.fidelity == "cooldown" else self.metric

    @property
    def asha_rungs(self) -> tuple[int, ...]:
        """Where ASHA decides: its rungs before the stop epoch (() without ASHA)."""
        if not self.asha:
            return ()
        return tuple(r for r in asha_rungs(self.grace_period, self.reduction_factor, self.max_t) if r < self.max_t)

    @property
    def cooldown_rungs(self) -> tuple[int, ...]:
        """The ASHA rungs that are scored by a cool-down: those in the LR trunk, with cool-down fidelity."""
        if not self.asha or self.fidelity != "cooldown":
            return ()
        return tuple(r for r in asha_rungs(self.grace_period, self.reduction_factor, self.max_t)
                     if in_trunk(r, self.base))

    @property
    def cooldowns(self) -> dict[int, int]:
        """Cool-down epochs at each cool-down rung ({} with trunk rungs or without ASHA)."""
        return {r: cooldown_epochs(r, self.cooldown_fraction) for r in self.cooldown_rungs}

    def with_changes(self, **changes: Any) -> "StudySettings":
        """A new, checked settings object with `changes` (the recipe object is reused, not rebuilt)."""
        return StudySettings(**{**dict(self), **changes})

    # --- checks: only check, never rewrite ------------------------------------------------------
    @model_validator(mode="after")
    def _check(self) -> "StudySettings":
        if (not self.name or "/" in self.name or self.name in (".", "..") or not self.name.isprintable()
                or len(self.name.encode()) > 200):
            raise StudyError(f"--name: must be a folder name: not empty, no '/', not '.' or '..', no control "
                             f"characters, at most 200 bytes (got {self.name!r:.80})")
        if self.kind == "baseline" and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise StudyError(f"--seeds: need one or more distinct seeds (got {list(self.seeds)})")
        if self.kind == "search":
            if self.startup_trials is None:
                raise StudyError("--startup-trials: a search needs its random start-up trials (got none)")
        if self.optuna_storage is not None:
            problem = storage_url_problem(self.optuna_storage) if self.kind == "search" else \
                "only searches keep an Optuna record"
            if problem:
                raise StudyError(f"--optuna-storage: {problem}")
        self._check_objectives()
        if not 1 <= self.max_t <= self.base.epochs:
            raise StudyError(f"--max-t: must be in [1, epochs={self.base.epochs}] (got {self.max_t})")
        if self.asha and self.grace_period is None:
            raise StudyError("--grace-period: ASHA needs its first rung (got none)")
        if self.asha and not self.grace_period <= self.max_t:
            raise StudyError(f"--grace-period: {self.grace_period} is beyond the {self.max_t} epochs a trial runs; "
                             f"choose 1…{self.max_t} or --no-asha")
        self._check_fidelity()
        return self

    def _check_fidelity(self) -> None:
        if self.fidelity == "cooldown" and self.cooldown_fraction is None:
            raise StudyError("--cooldown-fraction: cool-down rungs need their length (got none)")
        if self.fidelity == "cooldown" and self.asha and not self.cooldown_rungs:
            raise StudyError(f"--fidelity: cooldown scores the ASHA rungs before the first LR step (epoch "
                             f"{self.base.step1}), and none lies there (first rung {self.grace_period}); lower "
                             f"--grace-period or use --fidelity trunk")

    def _check_objectives(self) -> None:
        metrics = [metric for metric, _ in self.objectives]
        if not metrics:
            raise StudyError("--objectives: one or more METRIC:MODE pairs (got none)")
        if len(set(metrics)) != len(metrics):
            raise StudyError(f"--objectives: each metric once (got {' '.join(metrics)})")
        for metric, mode in self.objectives:
            if metric.startswith("test_"):
                raise StudyError(f"--objectives: {metric} is a test metric; searches optimise validation "
                                 f"metrics only (tuning on the test split leaks)")
            if metric not in OBJECTIVE_METRICS:
                raise StudyError(f"--objectives: unknown metric {metric!r}; choose from {', '.join(OBJECTIVE_METRICS)}")
            if mode not in ("max", "min"):
                raise StudyError(f"--objectives: mode for {metric} must be max or min (got {mode!r})")

    # --- the file ---------------------------------------------------------------------------------
    def save(self, folder: str | Location) -> None:
        """`study.json`, and the hidden copy that `changes_since_start` compares it with."""
        text = self.model_dump_json(indent=2) + "\n"
        (location(folder) / STARTED_FILE).write_text(text)
        (location(folder) / SETTINGS_FILE).write_text(text)

    def changes_since_start(self, folder: str | Location) -> list[str]:
        """Fields whose value differs from the study's start (`field: old → new`). Tune resumes with
        what the study started with, so an edited study.json would be half applied. A folder moved or
        copied keeps its study: its place and name may differ. Empty for folders without the copy."""
        try:
            started = json.loads((location(folder) / STARTED_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        def flat(values: dict) -> dict:
            return {f"{name}.{key}" if isinstance(value, dict) else name: inner
                    for name, value in values.items() if name not in ("storage_path", "name")
                    for key, inner in (value.items() if isinstance(value, dict) else [(None, value)])}
        before, now = flat(started if isinstance(started, dict) else {}), flat(self.model_dump(mode="json"))
        return [f"{name}: {_shown(before.get(name))} → {_shown(now.get(name))}"
                for name in sorted(set(before) | set(now)) if before.get(name) != now.get(name)]

    @classmethod
    def load(cls, folder: str | Location) -> "StudySettings":
        """Read and check a study's `study.json`, so that a damaged one is named before anything runs."""
        path = location(folder) / SETTINGS_FILE
        try:
            if not path.is_file():
                raise OSError("not a regular file" if path.exists() else "no such file")
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StudyError(f"{SETTINGS_FILE}: {path} cannot be read ({err}); restore it from a copy, or start "
                             f"the study again under a new --name") from None
        if not isinstance(values, dict):
            raise StudyError(f"{SETTINGS_FILE}: {path} must hold a mapping (got {type(values).__name__})")
        try:
            return cls(**values)
        except (StudyError, ConfigError) as err:
            raise StudyError(f"{SETTINGS_FILE}: {path} holds an impossible setting: {err}") from None


BOUND_TYPES = ("greater_than_equal", "greater_than", "less_than_equal", "less_than", "finite_number")


def _constraints(spec, of_item: bool) -> list:
    """A field's bounds, or (`of_item`) those of the items of a `tuple[Annotated[…], ...]` field."""
    if not of_item:
        return spec.metadata
    item = get_args(spec.annotation)[0]
    return [bound for info in getattr(item, "__metadata__", ()) for bound in getattr(info, "metadata", ())]


def settings_error(err: ValidationError) -> ValueError:
    """Pydantic's first complaint in our words, naming the field (and the recipe field inside `base`)."""
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a renamed key: the new name
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, (StudyError, ConfigError)):
        return original
    loc = [str(part) for part in first["loc"]]
    if loc and loc[0] == "base" and len(loc) > 1:
        return config_error({**first, "loc": first["loc"][1:]})
    field = ".".join(loc)
    if first["type"] in BOUND_TYPES and loc[0] in StudySettings.model_fields:  # out of its field's range
        spec = StudySettings.model_fields[loc[0]]
        must = "a finite number" if first["type"] == "finite_number" else bounds_text(_constraints(spec, len(loc) > 1))
        why = f"; {spec.description}" if spec.description else ""
        value = first["input"]
        shown = f"{value:g}" if isinstance(value, float) else _shown(value)
        return StudyError(f"--{loc[0].replace('_', '-')}: must be {must}{why} (got {shown})")
    if first["type"] == "missing":
        return StudyError(f"{field}: missing; restore {SETTINGS_FILE} from a copy")
    if first["type"] == "extra_forbidden":
        return StudyError(f"{field}: unknown setting; was it written by a newer version of the toolkit?")
    expected = first["msg"].removeprefix("Input should be ")
    return StudyError(f"{field}: must be {expected} (got {_shown(first['input'])})")


def _shown(value: Any, limit: int = 80) -> str:
    text = hide_password(repr(value))  # an --optuna-storage URL may hold one
    return text if len(text) <= limit else text[:limit - 1] + "…"
