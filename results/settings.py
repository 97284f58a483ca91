"""`study.json`: the one model of a study's resolved settings, read by the study driver and by `results`.

A `StudySettings` is a frozen pydantic model, checked as a whole when it is built (types, ranges, how
fields fit together) and never changed afterwards: resolution (defaults, resources, data) happens
before it is built, or returns a new one (`with_changes`). The driver writes it into the experiment
folder before any trial starts, so a study folder describes itself (recipe, space, scheduler,
resources, versions), and `resume`, `show`, `report` and the live page all read it back through here.
"""
from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from balpoe.config import UINT32_MAX, Config, ConfigError, config_error
from balpoe.cooldown import in_trunk
from search_spaces import SpaceError, get_space, resolve_ranges

from .optuna_db import hide_password, storage_url_problem
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


class StudyError(ValueError):
    """Bad study input; the message names the option. Raised before Ray starts."""


class StudySettings(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    kind: Literal["baseline", "search"]
    name: str
    storage_path: str                                  # absolute folder, or an object store's URI (s3://…)
    base: Config                                       # the recipe every trial starts from
    seeds: tuple[int, ...] = (1,)
    space: str | None = None
    ranges: dict[str, tuple[float, float]] = {}
    objectives: tuple[tuple[str, str], ...] = DEFAULT_OBJECTIVES
    num_samples: int = 1
    max_concurrent: int | None = None
    sampler_seed: int = 0
    asha: bool = True
    grace_period: int | None = None                    # first ASHA rung (resolved: default_grace_period)
    reduction_factor: int = 2
    fidelity: Literal["trunk", "cooldown"] = "trunk"  # what ASHA ranks at a rung in the LR trunk
    cooldown_fraction: float | None = None             # cool-down epochs per rung epoch (resolved)
    max_t: int                                         # the epoch every trial stops at (resolved)
    startup_trials: int | None = None                  # TPE's random start-up trials (searches; resolved)
    cpus_per_trial: float | None = None                # None until the cluster's size is known
    gpus_per_trial: float | None = None
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    max_failures: int = 2
    min_free_mb: float = 200.0                         # stop cleanly (resumable) below this much free disk
    optuna_storage: str | None = None                  # Optuna's record elsewhere (searches); None: optuna.db here
    versions: dict[str, Any] = {}

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise settings_error(err) from None

    @field_validator("seeds", "objectives", "ranges", mode="before")
    @classmethod
    def _lists_as_tuples(cls, value: Any) -> Any:
        """JSON and the command line give lists; the settings hold tuples, which cannot be changed."""
        def frozen(item: Any) -> Any:
            return tuple(map(frozen, item)) if isinstance(item, list) else item
        return {k: frozen(v) for k, v in value.items()} if isinstance(value, dict) else frozen(value)

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
    def metric(self) -> str:
        return self.objectives[0][0]

    @property
    def mode(self) -> str:
        return self.objectives[0][1]

    @property
    def asha_metric(self) -> str:
        """The key ASHA decides on: with cool-down rungs, the cooled score at a cool-down rung and the
        trunk's elsewhere (`rung_METRIC`, reported by every epoch); else the objective itself."""
        return RUNG_PREFIX + self.metric if self.fidelity == "cooldown" else self.metric

    @property
    def cooldown_rungs(self) -> tuple[int, ...]:
        """The ASHA rungs that are scored by a cool-down: those in the LR trunk, with cool-down fidelity."""
        if not self.asha or self.fidelity != "cooldown":
            return ()
        from .stats import asha_rungs
        return tuple(r for r in asha_rungs(self.grace_period, self.reduction_factor, self.max_t)
                     if in_trunk(r, self.base))

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
        for seed in self.seeds:
            if not 0 <= seed <= UINT32_MAX:
                raise StudyError(f"--seeds: every seed must be in [0, {UINT32_MAX}] (got {seed})")
        if not 0 <= self.sampler_seed <= UINT32_MAX:
            raise StudyError(f"--sampler-seed: must be in [0, {UINT32_MAX}] (got {self.sampler_seed})")
        if self.kind == "search":
            try:
                space = get_space(self.space or "")
                resolve_ranges(space, self.ranges)
            except SpaceError as err:
                raise StudyError(str(err)) from None
            if set(self.ranges) != set(space.PARAMS):
                raise StudyError(f"--range: the space {self.space} searches {', '.join(space.PARAMS)} "
                                 f"(got ranges for {', '.join(self.ranges) or 'none'})")
            if self.startup_trials is None or self.startup_trials < 1:
                raise StudyError(f"--startup-trials: must be >= 1 (got {self.startup_trials})")
        if self.num_samples < 1:
            raise StudyError(f"--num-samples: must be >= 1 (got {self.num_samples})")
        if self.optuna_storage is not None:
            problem = storage_url_problem(self.optuna_storage) if self.kind == "search" else \
                "only searches keep an Optuna record"
            if problem:
                raise StudyError(f"--optuna-storage: {problem}")
        self._check_objectives()
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise StudyError(f"--max-concurrent: must be >= 1 (got {self.max_concurrent})")
        if not 1 <= self.max_t <= self.base.epochs:
            raise StudyError(f"--max-t: must be in [1, epochs={self.base.epochs}] (got {self.max_t})")
        if self.asha and self.grace_period is None:
            raise StudyError("--grace-period: ASHA needs its first rung (got none)")
        if self.grace_period is not None and self.grace_period < 1:
            raise StudyError(f"--grace-period: must be >= 1 epoch (got {self.grace_period})")
        if self.asha and not self.grace_period <= self.max_t:
            raise StudyError(f"--grace-period: {self.grace_period} is beyond the {self.max_t} epochs a trial runs; "
                             f"choose 1…{self.max_t} or --no-asha")
        if self.reduction_factor < 2:
            raise StudyError(f"--reduction-factor: must be >= 2 (got {self.reduction_factor})")
        self._check_fidelity()
        gpus = self.gpus_per_trial
        if gpus is not None and not (math.isfinite(gpus) and 0 <= gpus <= 1):
            raise StudyError(f"--gpus-per-trial: a trial trains on one device, so 1, a fraction (0.25 packs 4 "
                             f"trials on a GPU) or 0 for CPU-only trials (got {gpus:g})")
        if self.cpus_per_trial is not None and not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise StudyError(f"--cpus-per-trial: must be a number > 0 (got {self.cpus_per_trial})")
        for option, value, least in (("--checkpoint-every", self.checkpoint_every, 1),
                                     ("--keep-checkpoints", self.keep_checkpoints, 1),
                                     ("--max-failures", self.max_failures, 0),
                                     ("--min-free-mb", self.min_free_mb, 0)):
            if not (math.isfinite(value) and value >= least):
                raise StudyError(f"{option}: must be >= {least} (got {value})")
        return self

    def _check_fidelity(self) -> None:
        fraction = self.cooldown_fraction
        if fraction is not None and not (math.isfinite(fraction) and 0 < fraction <= 1):
            raise StudyError(f"--cooldown-fraction: cool-down epochs per rung epoch, in (0, 1] (got {fraction})")
        if self.fidelity == "cooldown" and fraction is None:
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
        unknown = sorted(map(str, set(values) - set(cls.model_fields)))
        if unknown:
            raise StudyError(f"{SETTINGS_FILE}: unknown key(s) {', '.join(unknown)} in {path}; was it written by "
                             f"a newer version of the toolkit?")
        missing = [name for name, spec in cls.model_fields.items() if spec.is_required() and name not in values]
        if missing:
            raise StudyError(f"{SETTINGS_FILE}: {path} lacks {', '.join(missing)}; restore it from a copy")
        try:
            return cls(**values)
        except (StudyError, ConfigError) as err:
            raise StudyError(f"{SETTINGS_FILE}: {path} holds an impossible setting: {err}") from None


def settings_error(err: ValidationError) -> ValueError:
    """Pydantic's first complaint in our words, naming the field (and the recipe field inside `base`)."""
    first = err.errors()[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, (StudyError, ConfigError)):
        return original
    loc = [str(part) for part in first["loc"]]
    if loc and loc[0] == "base" and len(loc) > 1:
        return config_error({**first, "loc": first["loc"][1:]})
    field = ".".join(loc)
    if first["type"] == "missing":
        return StudyError(f"{field}: missing")
    if first["type"] == "extra_forbidden":
        return StudyError(f"unknown setting {field}")
    expected = first["msg"].removeprefix("Input should be ")
    return StudyError(f"{field}: must be {expected} (got {_shown(first['input'])})")


def _shown(value: Any, limit: int = 80) -> str:
    text = hide_password(repr(value))  # an --optuna-storage URL may hold one
    return text if len(text) <= limit else text[:limit - 1] + "…"


def default_startup_trials(num_samples: int) -> int:
    """TPE samples at random until this many trials exist. Optuna's 10 would leave a 16-trial search
    almost nothing to model; a fifth of the budget (2…10) keeps some exploration at any size."""
    return max(2, min(10, num_samples // 5))


def default_cooldown_grace_period(config: Config, stop_epoch: int) -> int:
    """With cool-down rungs, the first rung at a tenth of the schedule (20 of 200), the earliest rung
    that `benchmarks/fidelity.py` scores (docs/studies.md, "Cool-down rungs")."""
    return max(1, min(config.epochs, stop_epoch) // 10)


def default_grace_period(config: Config, stop_epoch: int) -> int:
    """First ASHA rung just after the first LR step has settled (165 of 200 for the recipe): before the
    step, scores rank trials poorly and favour small mixup α (see docs/studies.md, "ASHA on a step
    schedule"). When trials stop before that (`--max-t`), halfway to their stop."""
    after_step = min(config.epochs, config.step1 + max(1, config.epochs // 40))
    return after_step if after_step < stop_epoch else max(1, stop_epoch // 2)
