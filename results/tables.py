"""Trial files → the two tidy tables: `trials` (one row per trial) and `epochs` (per trial and epoch).

Column names are plain (`mixup_alpha`, `val_balanced_acc`, `test_full_ece`), never Ray's
`config/...`: the tables are what users, reports and the dashboard read.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from balpoe.config import Config, ConfigError, format_tau_list

from .reader import TrialFiles

STATUSES = ("finished", "asha_stopped", "unfinished", "errored")
# config values every trials table shows, varying or not: they say what was trained
KEY_CONFIG = ("dataset", "imb_factor", "epochs", "num_experts", "tau_list", "tau_spread", "mixup_alpha", "seed")
# config fields that say where or how fast, not what: never columns, even when they differ
NOT_RECIPE = {"data_dir", "save_dir", "save_period", "download", "device", "channels_last", "compile",
              "eval_shift_every"}
RECIPE_FIELDS = {f.name for f in dataclasses.fields(Config)} - NOT_RECIPE
# Tune's bookkeeping and the trial's context: kept out of the per-epoch history
NOT_EPOCH_METRICS = {"config", "date", "pid", "hostname", "node_ip", "checkpoint_dir_name", "should_checkpoint",
                     "done", "trial_id", "experiment_tag", "training_iteration", "time_since_restore",
                     "iterations_since_restore", "device", "gpu_ids", "tau_list", "mixup_alpha", "num_experts",
                     "seed", "planned_epochs", "stop_epoch", "best_epoch", "node_id"}
END_OF_TRAINING_PREFIXES = ("test_", "shift_")
PROVENANCE = ("toolkit", "commit", "python", "torch", "ray", "optuna")


def trial_config(files: TrialFiles) -> dict:
    """The trial's resolved recipe (what it trained), from its Tune config; {} when unreadable."""
    from search_spaces import resolve_trial_config
    if not files.params or "base" not in files.params:
        return {}
    try:
        config = resolve_trial_config(files.params).to_dict()
    except (ConfigError, ValueError, KeyError, TypeError):
        return {}
    config["tau_spread"] = (max(config["tau_list"]) - min(config["tau_list"])) / 2
    config["tau_list"] = format_tau_list(config["tau_list"])
    return config


def trial_status(files: TrialFiles, stop_epoch: int | None, asha_stopped: set[str]) -> str:
    """finished: reached its stop epoch (the last, or `--max-t`); asha_stopped: stopped on purpose
    before it; errored: failed after its last report; unfinished: anything else."""
    epochs_run = int(files.rows[-1].get("epoch", 0)) if files.rows else 0
    if stop_epoch and epochs_run >= stop_epoch:
        return "finished"
    if files.trial_id in asha_stopped:
        return "asha_stopped"
    if files.failed_after_last_report:
        return "errored"
    return "unfinished"


def trial_row(files: TrialFiles, settings: dict, asha_stopped: set[str], objectives: list[list[str]]) -> dict:
    config = trial_config(files)
    last = files.rows[-1] if files.rows else {}
    planned = _first_number(last.get("planned_epochs"), config.get("epochs"), settings.get("base", {}).get("epochs"))
    stop = _first_number(last.get("stop_epoch"), (files.params or {}).get("stop_epoch"), settings.get("max_t"), planned)
    row = {"trial_id": files.trial_id,
           "status": trial_status(files, int(stop) if stop else None, asha_stopped),
           "epochs_run": int(last.get("epoch", 0)) if last else 0,
           "stop_epoch": int(stop) if stop else None}
    row.update({k: config.get(k, last.get(k)) for k in KEY_CONFIG})
    row["epochs"] = planned
    row.update({f"config_{k}": v for k, v in config.items() if k not in KEY_CONFIG and k not in NOT_RECIPE})
    row.update({k: v for k, v in last.items() if k.startswith("val_")})
    for metric, mode in objectives:
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
    row["last_update"] = pd.to_datetime(files.last_update, unit="s") if not math.isnan(files.last_update) else None
    versions = settings.get("versions", {})
    row.update({k: versions.get(k) for k in PROVENANCE})
    row["folder"] = files.folder.name
    return row


def trials_table(all_files: list[TrialFiles], settings: dict, asha_stopped: set[str]) -> pd.DataFrame:
    objectives = settings.get("objectives") or [["val_balanced_acc", "max"]]
    rows = [trial_row(files, settings, asha_stopped, objectives) for files in all_files]
    if not rows:
        return pd.DataFrame(columns=["trial_id", "status", "epochs_run", "stop_epoch", *KEY_CONFIG])
    table = pd.DataFrame(rows)
    varying = [c for c in table.columns if c.startswith("config_") and table[c].astype(str).nunique() > 1]
    fixed = [c for c in table.columns if c.startswith("config_") and c not in varying]
    table = table.drop(columns=fixed).rename(columns={c: c.removeprefix("config_") for c in varying})
    table["status"] = pd.Categorical(table["status"], categories=STATUSES)
    return table.reset_index(drop=True)


def epochs_table(all_files: list[TrialFiles]) -> pd.DataFrame:
    rows = []
    for files in all_files:
        for report in files.rows:
            row = {"trial_id": files.trial_id}
            row.update({k: v for k, v in report.items()
                        if k not in NOT_EPOCH_METRICS and not k.startswith("test_")})
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["trial_id", "epoch"])
    table = pd.DataFrame(rows)
    first = ["trial_id", "epoch"]
    return table[first + [c for c in table.columns if c not in first]]


def pareto_front(frame: pd.DataFrame, objectives: list[list[str]]) -> pd.Series:
    """True for rows that no other row beats on every objective; rows missing a value are never on it."""
    signs = pd.Series({metric: 1.0 if mode == "max" else -1.0 for metric, mode in objectives})
    values = frame[list(signs.index)].astype(float).mul(signs).to_numpy()
    complete = ~np.isnan(values).any(axis=1)
    others = values[complete]
    on_front = [bool(ok) and not ((others >= row).all(axis=1) & (others > row).any(axis=1)).any()
                for row, ok in zip(values, complete)]
    return pd.Series(on_front, index=frame.index, dtype=bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _first_number(*values):
    return next((v for v in values if _is_number(v)), None)
