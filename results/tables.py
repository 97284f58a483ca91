"""Trial files → the tidy tables: `trials` (one row per trial), `epochs` (per trial and epoch: the trunk's
curve) and `rungs` (per trial and ASHA rung: the score ASHA decided on, cooled or the trunk's).

Column names are plain (`mixup_alpha`, `val_balanced_acc`, `test_full_ece`), never Ray's
`config/...`: the tables are what users, reports and the dashboard read.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from balpoe.config import FIELD_NAMES, ConfigError, format_tau_list
from balpoe.cooldown import COOLED_PREFIX

from .context import CONTEXT_KEYS
from .reader import PARAMS_FILE, TrialFiles, is_count
from .settings import DEFAULT_OBJECTIVES, RUNG_PREFIX, StudySettings
from .trial_params import TrialParams

STATUSES = ("finished", "asha_stopped", "unfinished", "errored")
# config values every trials table shows, varying or not: they say what was trained
KEY_CONFIG = ("dataset", "imb_factor", "epochs", "num_experts", "tau_list", "tau_spread", "mixup_alpha", "seed",
              "precision")
# config fields that say where or how fast, not what: never columns, even when they differ
NOT_RECIPE = {"data_dir", "save_dir", "save_period", "download", "device", "channels_last", "compile",
              "eval_shift_every"}
RECIPE_FIELDS = set(FIELD_NAMES) - NOT_RECIPE
# Tune's bookkeeping and the trial's context: kept out of the per-epoch history
NOT_EPOCH_METRICS = {"config", "date", "pid", "hostname", "node_ip", "checkpoint_dir_name", "should_checkpoint",
                     "done", "trial_id", "experiment_tag", "training_iteration", "time_since_restore",
                     "iterations_since_restore", "best_epoch", *CONTEXT_KEYS}
END_OF_TRAINING_PREFIXES = ("test_", "shift_")
COOLDOWN_KEYS = ("cooldown_epochs", "cooldown_seconds")
RUNG_COLUMNS = ["trial_id", "epoch", "fidelity", "cooldown_epochs", "cooldown_seconds"]
PROVENANCE = ("toolkit", "commit", "python", "torch", "ray", "optuna")
# what the tables' columns hold, whatever a damaged report row says: metrics are numbers (anything else is
# NaN, so statistics, sorting and Parquet work), words are text
NUMERIC_PREFIXES = ("val_", "test_", "shift_", "train_", "best_", "time_")
NUMERIC_COLUMNS = {"epoch", "epochs_run", "cooldown_epochs", "cooldown_seconds", "trained_epochs", "stop_epoch", "epochs", "imb_factor", "num_experts", "mixup_alpha", "seed",
                   "tau_spread", "wall_time_s", "peak_memory_mb", "failures", "timestamp", "lr"}
TEXT_COLUMNS = {"trial_id", "fidelity", "dataset", "tau_list", "device", "gpu_ids", "host", "node_ip", "node_id", "error",
                "notes", "folder", *PROVENANCE}
# key config values taken from the last report when the trial's config is unreadable, by the type they must have
WHOLE_KEYS = {"epochs": 1, "num_experts": 1, "seed": 0}  # the smallest value each may take


def trial_config(files: TrialFiles) -> tuple[dict, TrialParams | None, str]:
    """The trial's resolved recipe (what it trained) and its `params.json`, and why they could not be
    read ({}, None and the reason when the file is damaged: a NaN, a wrong type)."""
    if not files.params or "base" not in files.params:
        return {}, None, ""
    try:
        params = TrialParams.of(files.params)
        config = params.recipe().to_dict()
    except (ConfigError, ValueError, KeyError, TypeError, OverflowError) as err:
        reason = err.args[0] if isinstance(err, ConfigError) and err.args else f"{type(err).__name__}: {err}"
        return {}, None, f"{PARAMS_FILE}: {reason}; the recipe values shown come from the last report"
    config["tau_spread"] = (max(config["tau_list"]) - min(config["tau_list"])) / 2
    config["tau_list"] = format_tau_list(config["tau_list"])
    return config, params, ""


def trial_notes(files: TrialFiles, config_problem: str) -> str:
    """What is wrong with a trial's records, in words ("" when nothing): unreadable files, a config
    that does not resolve, infinite values read as missing (so never ranked best)."""
    notes = [f"damaged: {problem}" for problem in files.damaged]
    notes += [config_problem] if config_problem else []
    notes += [f"{metric} was infinite at {_epochs_text(epochs)}: read as missing, never ranked"
              for metric, epochs in files.infinite.items()]
    return "; ".join(notes)


def _epochs_text(epochs: list[int]) -> str:
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    if len(epochs) <= 3:
        return f"epochs {', '.join(map(str, epochs))}"
    return f"epochs {epochs[0]}…{epochs[-1]} ({len(epochs)} reports)"


def trial_status(files: TrialFiles, stop_epoch: int | None, asha_stopped: set[str]) -> str:
    """finished: reached its stop epoch (the last, or `--max-t`); asha_stopped: stopped on purpose
    before it; errored: failed after its last report; unfinished: anything else."""
    epochs_run = files.rows[-1]["epoch"] if files.rows else 0  # the reader keeps rows with a whole epoch only
    if stop_epoch and epochs_run >= stop_epoch:
        return "finished"
    if files.trial_id in asha_stopped:
        return "asha_stopped"
    if files.failed_after_last_report:
        return "errored"
    return "unfinished"


def trial_row(files: TrialFiles, settings: StudySettings | None, asha_stopped: set[str]) -> dict:
    config, params, config_problem = trial_config(files)
    last = files.rows[-1] if files.rows else {}
    # epoch counts that are not whole numbers >= 1 (1e400, "2", 1.5) count as missing
    planned = _first_count(last.get("planned_epochs"), config.get("epochs"), settings and settings.epochs)
    stop = _first_count(last.get("stop_epoch"), params and params.stop_epoch, settings and settings.max_t, planned)
    row = {"trial_id": files.trial_id,
           "status": trial_status(files, stop, asha_stopped),
           "epochs_run": last.get("epoch", 0),
           "stop_epoch": stop}
    row.update({k: config[k] if k in config else _key_value(k, last.get(k)) for k in KEY_CONFIG})
    row["epochs"] = planned
    row.update({f"config_{k}": v for k, v in config.items() if k not in KEY_CONFIG and k not in NOT_RECIPE})
    row.update({k: v for k, v in last.items() if k.startswith("val_")})
    for metric, mode in settings.objectives if settings else DEFAULT_OBJECTIVES:
        values = [(r[metric], r["epoch"]) for r in files.rows if _is_number(r.get(metric))]
        if values:
            best = (max if mode == "max" else min)(values, key=lambda pair: pair[0])
            row[f"best_{metric}"], row[f"best_{metric}_epoch"] = best
    row.update({k: v for k, v in last.items() if k.startswith(END_OF_TRAINING_PREFIXES)})
    row["wall_time_s"] = last.get("time_total_s")
    row["device"] = last.get("device")
    row["gpu_ids"] = last.get("gpu_ids")
    peaks = [r["peak_memory_mb"] for r in files.rows if _is_number(r.get("peak_memory_mb"))]
    row["peak_memory_mb"] = max(peaks) if peaks else None
    row["host"] = last.get("hostname")
    row["node_ip"] = last.get("node_ip")
    row["node_id"] = last.get("node_id")
    row["failures"] = files.failures
    row["error"] = files.error
    row["notes"] = trial_notes(files, config_problem)
    row["last_update"] = pd.to_datetime(files.last_update, unit="s", utc=True) if not math.isnan(files.last_update) \
        else None
    versions = settings.versions if settings else {}
    row.update({k: versions.get(k) for k in PROVENANCE})
    row["folder"] = files.folder.name
    return row


def trials_table(all_files: list[TrialFiles], settings: StudySettings | None, asha_stopped: set[str]) -> pd.DataFrame:
    rows = [trial_row(files, settings, asha_stopped) for files in all_files]
    objectives = settings.objectives if settings else DEFAULT_OBJECTIVES
    if not rows:
        return pd.DataFrame(columns=["trial_id", "status", "epochs_run", "stop_epoch", *KEY_CONFIG])
    table = pd.DataFrame(rows)
    varying = [c for c in table.columns if c.startswith("config_") and table[c].astype(str).nunique() > 1]
    fixed = [c for c in table.columns if c.startswith("config_") and c not in varying]
    table = table.drop(columns=fixed).rename(columns={c: c.removeprefix("config_") for c in varying})
    table["status"] = pd.Categorical(table["status"], categories=STATUSES)
    table = tidy_columns(table)
    for metric, _ in objectives:  # an epoch stays a whole number where a trial has none (nullable Int64)
        column = f"best_{metric}_epoch"
        if column in table and (table[column].dropna() % 1 == 0).all():
            table[column] = table[column].astype("Int64")
    return table.reset_index(drop=True)


def epochs_table(all_files: list[TrialFiles]) -> pd.DataFrame:
    rows = []
    for files in all_files:
        for report in files.rows:
            row = {"trial_id": files.trial_id}
            row.update({k: v for k, v in report.items()
                        if k not in NOT_EPOCH_METRICS and not k.startswith("test_") and not is_rung_key(k)})
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["trial_id", "epoch"])
    table = tidy_columns(pd.DataFrame(rows))
    if "timestamp" in table:  # Tune's Unix seconds, as the moment it is
        table["timestamp"] = pd.to_datetime(table["timestamp"], unit="s", utc=True)
    first = ["trial_id", "epoch"]
    return table[first + [c for c in table.columns if c not in first]]


def is_rung_key(key: str) -> bool:
    """A cool-down rung's report key: its own table's, never the trunk curve's."""
    return key.startswith((COOLED_PREFIX, RUNG_PREFIX)) or key in COOLDOWN_KEYS


def rungs_table(all_files: list[TrialFiles], rung_epochs: list[int]) -> pd.DataFrame:
    """Per trial and ASHA rung it reached: the validation metrics the rung was scored by — a cool-down's
    (fidelity `cooldown`, its epochs and seconds) where the report holds one, else the trunk's."""
    rows = []
    for files in all_files:
        for report in files.rows:
            if report.get("epoch") not in rung_epochs:
                continue
            cooled = _is_number(report.get("cooldown_epochs"))
            row = {"trial_id": files.trial_id, "epoch": report["epoch"], "fidelity": "cooldown" if cooled else "trunk",
                   "cooldown_epochs": report["cooldown_epochs"] if cooled else 0,
                   "cooldown_seconds": report.get("cooldown_seconds") if cooled else 0.0}
            prefix = COOLED_PREFIX if cooled else ""
            row.update({k.removeprefix(prefix): v for k, v in report.items()
                        if k.startswith(prefix + "val_")})
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=RUNG_COLUMNS)
    table = tidy_columns(pd.DataFrame(rows).drop_duplicates(["trial_id", "epoch"], keep="last"))
    return table[RUNG_COLUMNS + [c for c in table.columns if c not in RUNG_COLUMNS]].reset_index(drop=True)


def tidy_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Columns of one kind each, whatever damaged report rows hold: metric columns (and any other column
    holding numbers) numeric, with a value that is not a number (a string, a bool, a list) as NaN; text
    columns text. So sorting, statistics and Parquet never meet a mixed column."""
    table = table.copy()
    for column in table.columns:
        values = table[column]
        if values.dtype != object:
            continue
        numeric = column in NUMERIC_COLUMNS or str(column).startswith(NUMERIC_PREFIXES)
        if numeric or (column not in TEXT_COLUMNS and any(_is_number(v) for v in values)):
            table[column] = pd.to_numeric(values.map(lambda v: v if _is_number(v) else np.nan))
            continue
        kinds = {type(v) for v in values if not is_text_or_missing(v) or isinstance(v, str)}
        if (kinds - {str} and column in TEXT_COLUMNS) or len(kinds) > 1 or kinds & {list, dict}:
            table[column] = values.map(lambda v: v if is_text_or_missing(v) else str(v))
    return table


def pareto_front(frame: pd.DataFrame, objectives: list[list[str]]) -> pd.Series:
    """True for rows that no other row beats on every objective; rows missing a value (or holding an
    infinite one) are never on it."""
    signs = pd.Series({metric: 1.0 if mode == "max" else -1.0 for metric, mode in objectives})
    values = frame[list(signs.index)].astype(float).mul(signs).to_numpy()
    complete = np.isfinite(values).all(axis=1)
    others = values[complete]
    on_front = [bool(ok) and not ((others >= row).all(axis=1) & (others > row).any(axis=1)).any()
                for row, ok in zip(values, complete)]
    return pd.Series(on_front, index=frame.index, dtype=bool)


def _is_number(value) -> bool:
    """A number a float64 or int64 column can hold, not NaN (bools are not numbers here)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -2**63 <= value < 2**63
    return isinstance(value, float) and not math.isnan(value)


def is_text_or_missing(value) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, float) and math.isnan(value))


def _first_count(*values) -> int | None:
    """The first whole number >= 1 (integral floats such as 2.0 included); None when there is none."""
    for value in values:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if is_count(value):
            return value
    return None


def _key_value(key: str, value):
    """A key config value from a report row, or None when it is not of the key's type."""
    if key in WHOLE_KEYS:
        return value if _is_number(value) and isinstance(value, int) and value >= WHOLE_KEYS[key] else None
    if key in ("dataset", "tau_list", "precision"):
        return value if isinstance(value, str) else None
    return value if _is_number(value) else None
