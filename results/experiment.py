"""`load_experiment(path)`: one experiment folder as tables, read from files only.

    exp = load_experiment("runs/search-alpha_tau")   # while the study runs, after a crash, without Ray
    exp.trials            # one row per trial (status, config, final/best validation, test, provenance)
    exp.epochs            # one row per trial and epoch (the trunk's curve)
    exp.rungs             # one row per trial and ASHA rung: the scores ASHA decided by (cooled or trunk)
    exp.compute()         # epochs trained (trunk + cool-downs), and as a fraction of the study without ASHA
    exp.summary()         # configs aggregated over seeds: mean, std, n
    exp.asha_fidelity()   # per rung: rank correlation of the rung metric with the final metric
    exp.progress()        # trials by status and whether the study is complete

Each call of `load_experiment` reads the folder anew (unchanged result files come from a cache keyed
by modification time), so a fresh `Experiment` is a fresh view of a running study.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from balpoe.cooldown import cooldown_epochs_after

from . import stats
from .in_epoch import epoch_pace, is_current, silence_limit, trial_eta
from .optuna_db import StorageError, driver_message, open_storage
from .reader import (OPTUNA_FILE, DamagedFile, ExperimentError, TrialFiles,
                     check_experiment_folder, anything_at, read_asha_stopped, read_progress, read_settings,
                     read_trial, trial_folders)
from .settings import DEFAULT_OBJECTIVES, RankedByObjectives, StudySettings
from .storage import Location, StorePath, location
from .storage_urls import folder_storage_url, journal_path, shown_url, sqlite_path
from .tables import STATUSES, epochs_table, rungs_table, trials_table

RUNNING_COLUMNS = ["trial_id", "state", "epoch", "epochs", "position", "phase", "batches_done", "batches_total",
                   "images_per_s", "seconds_per_epoch", "eta_s", "silent_s", "last_report_s_ago"]


@dataclass
class Experiment(RankedByObjectives):
    path: Location
    settings: StudySettings | None     # study.json (None for a plain Tune experiment)
    trials: pd.DataFrame
    epochs: pd.DataFrame
    rungs: pd.DataFrame
    skipped_lines: int = 0             # half-written report lines that were left out
    damaged: list[str] = field(default_factory=list)  # "<file>: <why>" for the experiment's own records
    _optuna: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        return self.settings.kind if self.settings else "tune"

    @property
    def objectives(self) -> tuple[tuple[str, str], ...]:
        return self.settings.objectives if self.settings else DEFAULT_OBJECTIVES

    @property
    def stop_epoch(self) -> int | None:
        """The epoch trials end at: the study's, else (a plain Tune folder) the latest its trials name."""
        if self.settings:
            return self.settings.stop_epoch
        epochs = self.trials["stop_epoch"].dropna().max() if len(self.trials) else math.nan
        return None if pd.isna(epochs) else int(epochs)

    @property
    def expected_trials(self) -> int:
        return self.settings.expected_trials if self.settings else len(self.trials)

    def warnings(self) -> list[str]:
        """What the reader could not take as written, one line each: damaged experiment records, and
        each trial's `notes` (damaged files, an unresolvable config, infinite values read as missing)."""
        lines = [f"damaged: {problem}" for problem in self.damaged]
        if "notes" in self.trials:
            lines += [f"trial {trial_id}: {notes}" for trial_id, notes in zip(self.trials["trial_id"], self.trials["notes"])
                      if isinstance(notes, str) and notes]
        return lines

    # --- views ------------------------------------------------------------------------------------
    def progress(self) -> dict:
        """Trials by status, not yet started, and whether nothing is left to run."""
        counts = {s: int((self.trials["status"] == s).sum()) for s in STATUSES}
        not_started = max(0, self.expected_trials - len(self.trials))
        return {**counts, "not_started": not_started,
                "complete": counts["unfinished"] == 0 and counts["errored"] == 0 and not_started == 0}

    def sorted_trials(self) -> pd.DataFrame:
        """Trials best first by the (first) objective; trials without a value last."""
        if self.metric not in self.trials.columns:
            return self.trials
        return self.trials.sort_values(self.metric, ascending=self.mode == "min", na_position="last",
                                       kind="stable").reset_index(drop=True)

    def summary(self, metrics: list[str] | None = None, statuses=("finished",)) -> pd.DataFrame:
        return stats.aggregate_seeds(self.trials, metrics or stats.summary_metrics(self.trials, self.objectives),
                                     statuses=statuses)

    def compare(self, baseline: "Experiment", metrics: list[str] | None = None) -> pd.DataFrame:
        """Each config of this experiment against the baseline's seed spread."""
        stats.check_comparable(self.trials, baseline.trials, self.stop_epoch, baseline.stop_epoch, baseline.kind)
        metrics = metrics or [m for m in (self.metric, "test_balanced_acc", "test_full_acc")
                              if m in self.trials.columns]
        return stats.compare_with_baseline(self.trials, baseline.trials, metrics,
                                           modes=dict(map(tuple, self.objectives)))

    def paper_comparison(self) -> pd.DataFrame:
        return stats.paper_comparison(self.trials)

    def asha_fidelity(self, rungs: list[int] | None = None) -> pd.DataFrame:
        if rungs is None:
            rungs = stats.default_rungs(self.settings, self.stop_epoch)
        return stats.asha_fidelity(self.trials, self.epochs, self.metric, rungs, self.rungs)

    @property
    def cooldowns(self) -> dict[int, int]:
        """Cool-down epochs at each cool-down rung of the study ({} with trunk rungs or without ASHA)."""
        return self.settings.cooldowns if self.settings else {}

    def compute(self) -> dict:
        return stats.compute_spent(self.trials, self.rungs, self.stop_epoch)

    def pareto(self) -> pd.Series:
        """Finished trials no other finished trial beats on every objective (multi-objective searches)."""
        from .tables import pareto_front
        finished = self.trials["status"] == "finished"
        reported = [m for m, _ in self.objectives if m in self.trials.columns]
        if len(reported) < len(self.objectives) or not finished.any():
            return pd.Series(False, index=self.trials.index)
        return pareto_front(self.trials[finished], self.objectives).reindex(self.trials.index, fill_value=False)

    def running(self, now: float | None = None) -> pd.DataFrame:
        """Unfinished trials as a live page shows them, as of `now`: epochs reported, where the trial is
        inside its epoch (`progress.json`, read anew at each call: the position moves between reports),
        seconds per epoch (median of the last 5; before the first report, estimated from the in-epoch
        rate), an ETA that counts down between reports, seconds since the last sign of life (a batch or a
        report) and since the last report.

        `state`: `running`; `stalled` when its position has not moved for much longer than its pace
        (`in_epoch.silence_limit`: stuck, or its study was interrupted); without a position, `idle` when
        silent for more than 3 epochs' time (and a minute): interrupted, or waiting for resources."""
        now = time.time() if now is None else now
        rows = []
        for _, trial in self.trials[self.trials["status"] == "unfinished"].iterrows():
            history = self.epochs[self.epochs["trial_id"] == trial["trial_id"]] if len(self.epochs) else self.epochs
            measured = history["time_this_iter_s"].tail(5).median() \
                if "time_this_iter_s" in history and len(history) else math.nan
            planned = trial.get("stop_epoch")
            planned = planned if planned is not None and not pd.isna(planned) else math.nan
            epochs_run = int(trial["epochs_run"])
            updated = trial.get("last_update")
            ago = now - updated.timestamp() if isinstance(updated, pd.Timestamp) else math.nan
            position = read_progress(self.path / trial["folder"]) if isinstance(trial.get("folder"), str) else None
            current = is_current(position, epochs_run)
            per_epoch = epoch_pace(position if current else None, measured)
            if position is not None:
                silent = min(now - position.time, ago) if not math.isnan(ago) else now - position.time
                state = "stalled" if silent > silence_limit(position) else "running"
            else:
                silent = ago
                idle = not math.isnan(ago) and ago > max(60.0, 3 * (measured if not math.isnan(measured) else 0))
                state = "idle" if idle else "running"
            rows.append({"trial_id": trial["trial_id"], "state": state, "epoch": epochs_run, "epochs": planned,
                         "position": position.describe() if current else "",
                         "phase": position.phase if current else None,
                         "batches_done": position.done if current else None,
                         "batches_total": position.total if current else None,
                         "images_per_s": position.images_per_s if current and position.images_per_s is not None
                         else math.nan,
                         "seconds_per_epoch": per_epoch,
                         "eta_s": trial_eta(position, epochs_run, planned, measured, now,
                                            cooldown_epochs_after(self.cooldowns, epochs_run)),
                         "silent_s": max(0.0, silent) if not math.isnan(silent) else math.nan,
                         "last_report_s_ago": ago})
        return pd.DataFrame(rows, columns=RUNNING_COLUMNS)

    @property
    def version(self) -> tuple:
        """Changes whenever a trial reports, fails or appears: a cache key for what is drawn from it."""
        updated = self.trials["last_update"].max() if len(self.trials) else None
        return len(self.trials), len(self.epochs), str(updated), self.skipped_lines

    @property
    def optuna_storage(self) -> str | None:
        """Where a search keeps Optuna's record: its `--optuna-storage` URL, or the folder's `optuna.db` as a
        SQLite URL; None when there is none (not a search, or nothing recorded yet)."""
        if self.kind != "search":
            return None
        if self.settings.optuna_storage:
            return self.settings.optuna_storage
        record = self.path / OPTUNA_FILE
        if not record.exists():
            return None
        return str(record) if isinstance(record, StorePath) else folder_storage_url(self.path, OPTUNA_FILE)

    @property
    def optuna_trials(self) -> pd.DataFrame:
        """The search's Optuna study (number, state, values, params), from `optuna.db` or the database its
        `--optuna-storage` names; empty when there is none."""
        if self._optuna is None:
            storage = self.settings.optuna_storage if self.settings else None
            self._optuna = read_optuna(storage or self.path / OPTUNA_FILE,
                                       self.settings.name if self.settings else self.name,
                                       [m for m, _ in self.objectives])
        return self._optuna


def load_experiment(path: str | Location) -> Experiment:
    """Read an experiment folder (a study's `runs/NAME`, or any Tune experiment folder), local or in an
    object store (`s3://bucket/runs/NAME`)."""
    try:
        folder = location(path)
    except ValueError as err:
        raise ExperimentError(str(err)) from None
    check_experiment_folder(folder)
    settings = read_settings(folder)
    files = [trial for trial in map(read_trial, trial_folders(folder)) if not _vanished(trial)]
    damaged = []
    try:
        asha_stopped = read_asha_stopped(folder)
    except DamagedFile as err:
        asha_stopped = set()
        damaged.append(f"{err}; trials ASHA stopped show as unfinished")
    trials = trials_table(files, settings, asha_stopped)
    experiment = Experiment(path=folder.resolve(), settings=settings, trials=trials, epochs=epochs_table(files),
                            rungs=rungs_table(files, settings.asha_rungs if settings else ()),
                            skipped_lines=sum(f.skipped_lines for f in files), damaged=damaged)
    return experiment


def _vanished(trial: TrialFiles) -> bool:
    """A trial folder removed between listing and reading: nothing was read and it is gone."""
    return not (trial.rows or trial.params or trial.failures or trial.damaged) and not anything_at(trial.folder)


def no_optuna_trials(objectives: list[str]) -> pd.DataFrame:
    """The Optuna table with nothing recorded (a baseline, a search before its first trial): its columns."""
    return pd.DataFrame({"number": pd.Series(dtype="int64"), "state": pd.Series(dtype="object"),
                         **{metric: pd.Series(dtype="float64") for metric in objectives}})


def read_optuna(where: Location | str, study_name: str, objectives: list[str]) -> pd.DataFrame:
    """Optuna's own record of a search, read through its API from `where`: the folder's `optuna.db`, or a
    storage URL (`--optuna-storage`); empty when nothing is recorded yet. A file Optuna cannot use is named
    for what it is (a directory, not SQLite, damaged, locked), not by Optuna's unrelated error; a database
    that does not answer is named within a bounded time. Readers never create anything. An `optuna.db` in
    an object store is read from a copy in a temporary folder (SQLite reads only local files)."""
    if isinstance(where, StorePath):
        with tempfile.TemporaryDirectory(prefix="balpoe-optuna-") as folder:
            try:
                Path(folder, OPTUNA_FILE).write_bytes(where.read_bytes())
            except FileNotFoundError:
                return no_optuna_trials(objectives)
            except OSError as err:
                raise ExperimentError(f"{OPTUNA_FILE}: {where} cannot be read ({err})") from None
            try:
                return read_optuna(Path(folder, OPTUNA_FILE), study_name, objectives)
            except ExperimentError as err:
                raise ExperimentError(str(err).replace(str(Path(folder, OPTUNA_FILE)), str(where))) from None
    if isinstance(where, Path):
        url, label, file = f"sqlite:///{where}", f"{OPTUNA_FILE}: {where}", where
    else:
        url, label, file = where, f"optuna_storage: {shown_url(where)}", journal_path(where) or sqlite_path(where)
    if file is not None and not (file.exists() or file.is_symlink()):
        return no_optuna_trials(objectives)
    import optuna
    try:
        with open_storage(url, create=False) as storage:
            if study_name not in optuna.get_all_study_names(storage):
                raise ExperimentError(f"{label} holds no Optuna study named {study_name!r}")
            frame = optuna.load_study(study_name=study_name, storage=storage).trials_dataframe(
                attrs=("number", "state", "values", "params"))
    except ExperimentError:
        raise
    except StorageError as err:
        raise ExperimentError(f"{label.split(':')[0]}: {err}") from None
    except Exception as err:  # a foreign database, or one changed while read, must not break the tables
        raise ExperimentError(f"{label}: cannot read the Optuna study {study_name!r} "
                              f"({driver_message(err, url)})") from None
    # by position (`value`, `values_0`…) in a record without metric names, `values_<metric>` in one with them
    names = {f"values_{i}": metric for i, metric in enumerate(objectives)} | {"value": objectives[0]} | \
        {f"values_{metric}": metric for metric in objectives}
    return frame.rename(columns=lambda c: names.get(c, c.removeprefix("params_")))
