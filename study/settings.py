"""Resolved study settings: validated before Ray starts, saved as `study.json` in the experiment folder.

Everything `resume` needs to rebuild the trainable and to judge completeness lives here, so a study
folder is self-describing (space, scheduler, resources, versions).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from balpoe.config import UINT32_MAX, Config, ConfigError, from_dict
from balpoe.provenance import provenance
from results.reader import SETTINGS_FILE
from search_spaces import SpaceError, get_space, resolve_ranges

# metrics reported every epoch that may be optimised; test metrics never are (that would leak)
OBJECTIVE_METRICS = ("val_balanced_acc", "val_acc", "val_many_acc", "val_medium_acc", "val_few_acc",
                     "val_nll", "val_ece", "val_mce", "train_loss", "train_acc")


class StudyError(ValueError):
    """Bad study input; the message names the option. Raised before Ray starts."""


def is_uri(path: str) -> bool:
    return "://" in path


@dataclass
class StudySettings:
    kind: str                                   # "baseline" or "search"
    name: str
    storage_path: str                           # absolute filesystem path (URIs are refused)
    base: dict                                  # the balpoe config every trial starts from
    seeds: list[int] = field(default_factory=lambda: [1])
    space: str | None = None
    ranges: dict = field(default_factory=dict)
    objectives: list[list[str]] = field(default_factory=lambda: [["val_balanced_acc", "max"]])
    num_samples: int = 1
    max_concurrent: int | None = None
    sampler_seed: int = 0
    asha: bool = True
    grace_period: int | None = None
    reduction_factor: int = 2
    max_t: int | None = None                    # the epoch every trial stops at (None: the recipe's last)
    startup_trials: int | None = None           # TPE's random start-up trials (None: scaled to num_samples)
    cpus_per_trial: float | None = None         # None: decided once the cluster's size is known
    gpus_per_trial: float | None = None
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    max_failures: int = 2
    versions: dict = field(default_factory=dict)

    @property
    def experiment_dir(self) -> str:
        return self.storage_path.rstrip("/") + "/" + self.name

    @property
    def epochs(self) -> int:
        return int(self.base["epochs"])

    @property
    def stop_epoch(self) -> int:
        """Where trials end, with their end-of-training evaluation: `--max-t`, else the last epoch."""
        return int(self.max_t or self.epochs)

    @property
    def expected_trials(self) -> int:
        return len(self.seeds) if self.kind == "baseline" else self.num_samples

    @property
    def metric(self) -> str:
        return self.objectives[0][0]

    @property
    def mode(self) -> str:
        return self.objectives[0][1]

    def validate(self) -> None:
        config = from_dict(self.base)
        if is_uri(self.storage_path):
            raise StudyError(f"--storage-path: {self.storage_path} is a URI; studies write their settings and "
                             f"Optuna database beside the trials, so use a filesystem path (shared on clusters)")
        if self.kind not in ("baseline", "search"):
            raise StudyError(f"unknown study kind {self.kind!r}")
        if (not self.name or "/" in self.name or self.name in (".", "..") or not self.name.isprintable()
                or len(self.name.encode()) > 200):
            raise StudyError(f"--name: must be a folder name: not empty, no '/', not '.' or '..', no control "
                             f"characters, at most 200 bytes (got {self.name!r:.80})")
        if self.kind == "baseline" and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise StudyError(f"--seeds: need one or more distinct seeds (got {self.seeds})")
        for seed in self.seeds:
            if not 0 <= seed <= UINT32_MAX:
                raise StudyError(f"--seeds: every seed must be in [0, {UINT32_MAX}] (got {seed})")
        if not 0 <= self.sampler_seed <= UINT32_MAX:
            raise StudyError(f"--sampler-seed: must be in [0, {UINT32_MAX}] (got {self.sampler_seed})")
        if self.kind == "search":
            space = get_space(self.space or "")
            self.ranges = {k: list(v) for k, v in resolve_ranges(space, {k: tuple(v) for k, v in
                                                                         self.ranges.items()}).items()}
            if self.num_samples < 1:
                raise StudyError(f"--num-samples: must be >= 1 (got {self.num_samples})")
            if self.startup_trials is None:
                self.startup_trials = default_startup_trials(self.num_samples)
            if self.startup_trials < 1:
                raise StudyError(f"--startup-trials: must be >= 1 (got {self.startup_trials})")
        if not self.objectives or not all(isinstance(o, (list, tuple)) and len(o) == 2
                                          and all(isinstance(x, str) for x in o) for o in self.objectives):
            raise StudyError(f"--objectives: one or more METRIC:MODE pairs (got {self.objectives!r})")
        metrics = [metric for metric, _ in self.objectives]
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
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise StudyError(f"--max-concurrent: must be >= 1 (got {self.max_concurrent})")
        max_t = self.max_t if self.max_t is not None else config.epochs
        if not 1 <= max_t <= config.epochs:
            raise StudyError(f"--max-t: must be in [1, epochs={config.epochs}] (got {self.max_t})")
        grace = self.grace_period if self.grace_period is not None else default_grace_period(config, max_t)
        if grace < 1:
            raise StudyError(f"--grace-period: must be >= 1 epoch (got {grace})")
        if self.asha and not 1 <= grace <= max_t:
            raise StudyError(f"--grace-period: {grace} is beyond the {max_t} epochs a trial runs; "
                             f"choose 1…{max_t} or --no-asha")
        if self.reduction_factor < 2:
            raise StudyError(f"--reduction-factor: must be >= 2 (got {self.reduction_factor})")
        gpus = self.gpus_per_trial
        if gpus is not None and not (math.isfinite(gpus) and 0 <= gpus <= 1):
            raise StudyError(f"--gpus-per-trial: a trial trains on one device, so 1, a fraction (0.25 packs 4 "
                             f"trials on a GPU) or 0 for CPU-only trials (got {gpus:g})")
        if self.cpus_per_trial is not None and not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise StudyError(f"--cpus-per-trial: must be a number > 0 (got {self.cpus_per_trial})")
        if self.checkpoint_every < 1:
            raise StudyError(f"--checkpoint-every: must be >= 1 (got {self.checkpoint_every})")
        if self.keep_checkpoints < 1:
            raise StudyError(f"--keep-checkpoints: must be >= 1 (got {self.keep_checkpoints})")
        if self.max_failures < 0:
            raise StudyError(f"--max-failures: must be >= 0 (got {self.max_failures})")
        self.max_t, self.grace_period = max_t, grace

    def config(self) -> Config:
        return from_dict(self.base)

    def save(self, folder: str | Path) -> None:
        Path(folder, SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "StudySettings":
        """Read and check a study's `study.json`, so that a damaged one stops `resume` before Ray starts."""
        path = Path(folder, SETTINGS_FILE)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StudyError(f"{SETTINGS_FILE}: {path} cannot be read ({err}); restore it from a copy, or start "
                             f"the study again under a new --name") from None
        if not isinstance(values, dict):
            raise StudyError(f"{SETTINGS_FILE}: {path} must hold a mapping (got {type(values).__name__})")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(values) - set(fields)))
        if unknown:
            raise StudyError(f"{SETTINGS_FILE}: unknown key(s) {', '.join(unknown)} in {path}; was it written by "
                             f"a newer version of the toolkit?")
        missing = sorted(n for n, f in fields.items() if n not in values
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise StudyError(f"{SETTINGS_FILE}: {path} lacks {', '.join(missing)}; restore it from a copy")
        for name, value in values.items():
            if not _has_type(value, str(fields[name].type)):
                raise StudyError(f"{SETTINGS_FILE}: {name} must be {fields[name].type} (got {value!r}) in {path}")
        settings = cls(**values)
        try:
            settings.validate()
        except (StudyError, ConfigError, SpaceError) as err:
            raise StudyError(f"{SETTINGS_FILE}: {path} holds an impossible setting: {err}") from None
        return settings


def _has_type(value, annotation: str) -> bool:
    """JSON values against the simple annotations of StudySettings (`int`, `float | None`, `list[int]`…)."""
    options = [a.strip() for a in annotation.split("|")]
    if value is None:
        return "None" in options
    for option in options:
        base, _, inner = option.partition("[")
        if base == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue
        if base == "int" and isinstance(value, int) or base == "float" and isinstance(value, (int, float)):
            return True
        if base == "str" and isinstance(value, str) or base == "dict" and isinstance(value, dict):
            return True
        if base == "list" and isinstance(value, list):
            return not inner or all(_has_type(item, inner[:-1]) for item in value)
    return False


def default_startup_trials(num_samples: int) -> int:
    """TPE samples at random until this many trials exist. Optuna's 10 would leave a 16-trial search
    almost nothing to model; a fifth of the budget (2…10) keeps some exploration at any size."""
    return max(2, min(10, num_samples // 5))


def default_grace_period(config: Config, stop_epoch: int | None = None) -> int:
    """First ASHA rung just after the first LR step has settled (165 of 200 for the recipe): before the
    step, scores rank trials poorly and favour small mixup α (the README's "ASHA on a step schedule").
    When trials stop before that (`--max-t`), halfway to their stop."""
    after_step = min(config.epochs, config.step1 + max(1, config.epochs // 40))
    stop = stop_epoch or config.epochs
    return after_step if after_step < stop else max(1, stop // 2)


def versions() -> dict:
    """Provenance of the study (toolkit version and commit, libraries, host, command), for its results."""
    import optuna
    import ray
    return {**provenance(), "ray": ray.__version__, "optuna": optuna.__version__,
            "command": " ".join([os.path.basename(sys.executable), *sys.argv])}
