"""Reading an experiment folder as Tune and the trainer left it: no Ray, no study driver.

An experiment folder holds `study.json` (the resolved study settings), `asha_stopped.json` (trials
ASHA stopped on purpose), `optuna.db` for searches, and one folder per trial with `params.json` (the
trial's Tune config), `result.json` (one JSON row per report) and `error.txt` when the trial failed.
Everything here tolerates a study that is still running or crashed: a truncated last line, a trial
folder without results yet, a missing record file.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

SETTINGS_FILE = "study.json"
ASHA_STOPPED_FILE = "asha_stopped.json"
OPTUNA_FILE = "optuna.db"
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
ERROR_FILE = "error.txt"
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"


class ExperimentError(ValueError):
    """The folder is not an experiment (or cannot be read); the message names the path."""


@dataclass
class TrialFiles:
    """What one trial folder holds, parsed."""
    folder: Path
    params: dict | None                  # the Tune config; None while Tune has not written it
    rows: list[dict]                     # the last report of each epoch, in epoch order
    failures: int = 0                    # "Failure # N" entries in error.txt
    error: str = ""                      # the last failure's first line
    failed_after_last_report: bool = False
    skipped_lines: int = 0               # unparsable lines (a report cut off mid-write), rows without an epoch
    last_update: float = field(default=math.nan)

    @property
    def trial_id(self) -> str:
        for row in reversed(self.rows):
            if "trial_id" in row:
                return str(row["trial_id"])
        return self.folder.name.removeprefix("trial_")


_row_cache: dict[Path, tuple[tuple[int, int], list[dict], int]] = {}


def read_result_rows(path: Path) -> tuple[list[dict], int]:
    """Rows of a `result.json`, keeping the last row per epoch: a trial restored from a checkpoint
    repeats the epoch it resumed from. Lines that are not JSON objects, and rows whose `epoch` (else
    Tune's `training_iteration`) is not a positive integer, are skipped and counted. Cached by
    modification time and size, so re-reading a large, unchanged experiment (a live page polling it)
    costs a `stat` per trial."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return [], 0
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _row_cache.get(path)
    if cached and cached[0] == key:
        return cached[1], cached[2]
    by_epoch: dict = {}
    skipped = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            epoch = row.get("epoch", row.get("training_iteration")) if isinstance(row, dict) else None
            if not is_count(epoch):  # a damaged row: no epoch to file it under
                skipped += 1
                continue
            by_epoch[epoch] = row if "epoch" in row else {**row, "epoch": epoch}
    rows = [by_epoch[e] for e in sorted(by_epoch)]
    _row_cache[path] = (key, rows, skipped)
    return rows, skipped


def is_count(value) -> bool:
    """A positive whole number that fits the tables' 64-bit integers (an epoch, an epoch count)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**63


def read_json(path: Path, default=None):
    """A JSON file, or `default` when it is absent or half-written."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return default


def read_errors(folder: Path) -> tuple[int, str, float]:
    """(failures, last failure's first line, error file's modification time) from Tune's error.txt."""
    path = folder / ERROR_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return 0, "", math.nan
    blocks = [b for b in text.split("Failure # ") if b.strip()]
    last = blocks[-1].split("\n", 1)[1].strip() if blocks and "\n" in blocks[-1] else ""
    message = next((line for line in reversed(last.splitlines()) if line.strip()), "")
    return len(blocks), message[:300], mtime


def read_trial(folder: Path) -> TrialFiles:
    rows, skipped = read_result_rows(folder / RESULT_FILE)
    params = read_json(folder / PARAMS_FILE)
    if params is None and rows:
        params = rows[-1].get("config")
    failures, error, error_mtime = read_errors(folder)
    result_mtime = _mtime(folder / RESULT_FILE)
    updated = max((t for t in (result_mtime, error_mtime, _mtime(folder / PARAMS_FILE)) if not math.isnan(t)),
                  default=math.nan)
    # Tune appends to error.txt at each failure; a trial retried from its checkpoint reports again
    # afterwards, so only a failure newer than the last report leaves it errored.
    failed_last = failures > 0 and (math.isnan(result_mtime) or error_mtime >= result_mtime)
    return TrialFiles(folder=folder, params=params if isinstance(params, dict) else None, rows=rows,
                      failures=failures, error=error, failed_after_last_report=failed_last,
                      skipped_lines=skipped, last_update=updated)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return math.nan


def trial_folders(folder: Path) -> list[Path]:
    """Tune's trial folders: any sub-folder holding a params.json or result.json."""
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and ((p / PARAMS_FILE).exists() or (p / RESULT_FILE).exists()))


def check_experiment_folder(folder: Path) -> None:
    if not folder.exists():
        raise ExperimentError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ExperimentError(f"{folder}: not a folder")
    if (folder / SETTINGS_FILE).exists() or any(folder.glob(EXPERIMENT_STATE_GLOB)) or trial_folders(folder):
        return
    raise ExperimentError(f"{folder}: not an experiment folder (no {SETTINGS_FILE}, no Tune experiment state, "
                          f"no trial folders)")


def read_settings(folder: Path) -> dict:
    """`study.json` as a plain dict ({} for a plain Tune experiment without one)."""
    path = folder / SETTINGS_FILE
    if not path.exists():
        return {}
    settings = read_json(path)
    if not isinstance(settings, dict):
        raise ExperimentError(f"{path}: not readable as JSON; the study's settings are damaged")
    check_settings(settings, path)
    return settings


def _is_objective(pair) -> bool:
    return (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and bool(pair[0])
            and pair[1] in ("max", "min"))


# the study.json fields results reads: what each must be, and the check (absent fields take defaults)
SETTINGS_CHECKS = {
    "kind": ('"baseline" or "search"', lambda v: v in ("baseline", "search")),
    "name": ("a string", lambda v: isinstance(v, str)),
    "objectives": ('a non-empty list of [metric, "max" or "min"] pairs',
                   lambda v: isinstance(v, list) and len(v) > 0 and all(map(_is_objective, v))),
    "seeds": ("a list of integers",
              lambda v: isinstance(v, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in v)),
    "num_samples": ("an integer >= 1", is_count),
    "max_t": ("an integer >= 1 or null", lambda v: v is None or is_count(v)),
    "grace_period": ("an integer >= 1 or null", lambda v: v is None or is_count(v)),
    "reduction_factor": ("an integer >= 2", lambda v: is_count(v) and v >= 2),
    "asha": ("true or false", lambda v: isinstance(v, bool)),
    "base": ("a mapping of recipe settings", lambda v: isinstance(v, dict)),
    "versions": ("a mapping", lambda v: isinstance(v, dict)),
}


def check_settings(settings: dict, path: Path) -> None:
    """The types of the fields results uses, so that a damaged `study.json` is named, not a traceback.
    (The study driver checks all of it before `resume`; results never imports the driver.)"""
    for name, (expected, check) in SETTINGS_CHECKS.items():
        if name in settings and not check(settings[name]):
            raise ExperimentError(f"{path}: {name} must be {expected} (got {_shown(settings[name])})")
    base = settings.get("base", {})
    if "epochs" in base and not is_count(base["epochs"]):
        raise ExperimentError(f"{path}: base.epochs must be an integer >= 1 (got {_shown(base['epochs'])})")


def _shown(value, limit: int = 80) -> str:
    """A value as study.json spells it, cut short."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def read_asha_stopped(folder: Path) -> set[str]:
    stopped = read_json(folder / ASHA_STOPPED_FILE, default=[])
    return {str(t) for t in stopped} if isinstance(stopped, list) else set()
