"""Optuna's TPE behind a Tune `Searcher`, through public APIs only: Optuna's ask-and-tell, Tune's `Searcher`.

Why not Ray's `OptunaSearch`: it tells Optuna COMPLETE, with the early value, for a trial ASHA stopped, so
TPE would rank epoch-2 scores with epoch-200 ones; here such a trial is PRUNED, and TPE ranks it by the
epoch it reached from its per-epoch intermediate values. And it pickles its Optuna storage with the
absolute path of `optuna.db`, so a resumed copy of an experiment folder wrote into the original; here the
pickled state holds no path, and the study is opened in the folder the experiment is in now (`open_in`).
A search given `--optuna-storage URL` keeps its study in that database instead (one Optuna study per
experiment name; the URL is pickled, as it is written in study.json, so a resumed search reopens it).
When Optuna's record stops answering mid-study, the searcher stops the study as Ctrl-C does (`recorded`).

    searcher = OptunaSearcher(folder, "search-alpha_tau", [("val_balanced_acc", "max")], stop_epoch=200,
                              seed_point={"mixup_alpha": 0.4, "tau_spread": 1.0})
    searcher.set_search_properties(None, None, {"mixup_alpha": tune.uniform(0, 1), ...})  # Tune does this
    searcher.suggest("a")                                   # the paper's point first, then TPE's
    searcher.on_trial_result("a", {"epoch": 1, "val_balanced_acc": 0.3})
    searcher.on_trial_complete("a", {"epoch": 1, "val_balanced_acc": 0.3})   # before epoch 200: PRUNED
"""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import sqlite3
import sys
import tempfile
import warnings
from pathlib import Path

import optuna
import pyarrow.fs as pafs
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.sample import Categorical, Domain, Float, Integer, LogUniform, Quantized, Uniform
from sqlalchemy.exc import SQLAlchemyError

from results.optuna_db import (StorageError, close_storage, driver_message, open_storage, optuna_db_problem,
                               storage_at, storage_fault_text)
from results.reader import EXPERIMENT_STATE_GLOB, OPTUNA_FILE, read_settings
from results.settings import RUNG_PREFIX
from results.storage import Location, StorePath, location
from results.storage_urls import folder_storage_url, shown_url

from .settings import StudyError

# an open database and where it is; a running trial is found again by its number (`running_trial`)
NOT_PICKLED = ("study", "storage", "running_trials", "folder", "mirror", "url", "fault")
# Optuna's record failing: a database's error (Optuna wraps it in StorageInternalError), a journal's file
STORAGE_FAULTS = (StorageInternalError, SQLAlchemyError, StorageError, OSError)
STOPPED_BY_STORAGE: dict[str, str] = {}  # experiment folder -> why its searcher stopped the study (this process)


def stopped_by_storage(folder: str | Location) -> str | None:
    """Why Optuna's record stopped the study in `folder` in this driver process, or None; the driver exits 1
    then (a fault of the machine, not an interrupt). Asked once, after the study."""
    return STOPPED_BY_STORAGE.pop(str(location(folder).resolve()), None)


class StoreMirror:
    """Optuna's record of a search whose experiment is in an object store, where SQLite cannot write.

    The study is kept in a SQLite file on the driver's disk, and after every change the searcher makes
    (a trial asked, an epoch reported, a trial told) a consistent copy of it (SQLite's backup API) replaces
    `optuna.db` in the experiment's folder in the store. A driver that resumes the search, on this machine
    or another, starts from that copy: it holds every trial up to the last change."""

    def __init__(self, remote: StorePath):
        self.remote = remote
        self.local = Path(tempfile.mkdtemp(prefix="balpoe-optuna-")) / OPTUNA_FILE
        try:
            self.local.write_bytes(remote.read_bytes())
        except FileNotFoundError:  # a new search
            pass

    @property
    def url(self) -> str:
        return f"sqlite:///{self.local}"

    def push(self) -> None:
        copy = self.local.with_suffix(".copy")
        with sqlite3.connect(self.local) as source, sqlite3.connect(copy) as target:
            source.backup(target)
        source.close()
        target.close()
        self.remote.write_bytes(copy.read_bytes())
        copy.unlink()


def check_optuna_storage(folder: str | Location, storage_url: str | None = None, new: bool = False) -> None:
    """Before Ray starts: Optuna's record can be written. Without `storage_url`, the folder's `optuna.db`
    (when there is one) is an SQLite database this driver can write: Optuna would answer each fault with
    the same unrelated error. With one (`--optuna-storage`), the database answers within a bounded time and,
    since it may hold other experiments' studies, a `new` search's name is not taken there, and a resumed
    search's study is there."""
    folder = location(folder)
    if storage_url is None:
        problem = optuna_db_problem(folder / OPTUNA_FILE, writing=True) if isinstance(folder, Path) else \
            store_record_problem(folder / OPTUNA_FILE)
        if problem:
            raise StudyError(f"{OPTUNA_FILE}: {problem}; a search resumes only with its own Optuna record: stop "
                             f"what holds it, or put back the file from a copy of the experiment folder")
        return
    shown = shown_url(storage_url)
    recorded = None if new else read_settings(folder)
    name = recorded.name if recorded else folder.name  # a moved folder keeps its study's name
    started = not new and any(folder.glob(EXPERIMENT_STATE_GLOB))  # then its record must be there already
    lost = "where this search recorded its trials; resume needs that database back as it was (or start a new search)"
    try:
        with open_storage(storage_url, create=not started) as storage:
            names = optuna.get_all_study_names(storage)
    except StorageError as err:
        raise StudyError(f"--optuna-storage: {shown} is gone ({err.gone}), and with it the Optuna study {name!r}, "
                         f"{lost}" if started and err.gone else f"--optuna-storage: {err}") from None
    if new and name in names:
        raise StudyError(f"--optuna-storage: {shown} already holds an Optuna study named {name!r} (one per experiment "
                         f"name, from another storage path?); pick another --name")
    if started and name not in names:
        raise StudyError(f"--optuna-storage: {shown} holds no Optuna study named {name!r}, {lost}")


def store_record_problem(record: StorePath) -> str | None:
    """`optuna_db_problem` for an experiment in an object store: the copy the searcher would start from."""
    kind = record.info().type
    if kind == pafs.FileType.NotFound:
        return None
    if kind == pafs.FileType.Directory:
        return f"{record} is a folder, not Optuna's SQLite database"
    mirror = StoreMirror(record)
    try:
        problem = optuna_db_problem(mirror.local)
    finally:
        shutil.rmtree(mirror.local.parent, ignore_errors=True)
    return problem.replace(str(mirror.local), str(record)) if problem else None


def to_distribution(name: str, domain: Domain) -> BaseDistribution:
    """Optuna's distribution for a Tune domain (uniform or log-uniform, optionally quantized; categorical).

    Our spaces could declare Optuna distributions directly (they hold only uniform floats and integer ranges),
    but Tune's `param_space` is the one declaration Tune and this searcher share, so any Tune domain is mapped."""
    if isinstance(domain, Categorical):
        return CategoricalDistribution(domain.categories)
    sampler, step = domain.get_sampler(), None
    if isinstance(sampler, Quantized):
        step, sampler = sampler.q, sampler.sampler
    log = isinstance(sampler, LogUniform)
    if not isinstance(sampler, (Uniform, LogUniform)):
        raise ValueError(f"{name}: Optuna has no distribution for Tune's {type(sampler).__name__.lstrip('_')} sampler")
    if isinstance(domain, Float):
        if log and step:
            raise ValueError(f"{name}: Optuna cannot sample a quantized log-uniform float")
        return FloatDistribution(domain.lower, domain.upper, log=log, step=step)
    if isinstance(domain, Integer):  # Tune's randint excludes its upper bound, its qrandint includes it
        return IntDistribution(domain.lower, domain.upper - (0 if step else 1), log=log, step=int(step or 1))
    raise ValueError(f"{name}: Optuna has no distribution for Tune's {type(domain).__name__} domain")


class OptunaSearcher(Searcher):
    """TPE over the top-level Tune domains of the param space; one Optuna trial per Tune trial.

    A trial that ended before `stop_epoch` without an error is one ASHA stopped: PRUNED. An errored trial
    is FAIL; any other is COMPLETE with its last values (FAIL when a value is missing or NaN). With
    several objectives Optuna takes no intermediate values, so none are reported."""

    def __init__(self, folder: str | Path, study_name: str, objectives: list, stop_epoch: int,
                 seed_point: dict | None = None, sampler_seed: int = 0, startup_trials: int = 10,
                 constant_liar: bool = False, storage_url: str | None = None):
        metrics, modes = [metric for metric, _ in objectives], [mode for _, mode in objectives]
        self.multi_objective = len(objectives) > 1
        super().__init__(metric=metrics if self.multi_objective else metrics[0],
                         mode=modes if self.multi_objective else modes[0])
        self.metrics, self.modes = metrics, modes
        self.study_name, self.stop_epoch, self.seed_point = study_name, stop_epoch, seed_point
        self.sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=startup_trials,
                                                  constant_liar=constant_liar)  # pickled: its random state too
        self.distributions: dict[str, BaseDistribution] = {}
        self.trial_numbers: dict[str, int] = {}  # Tune trial id -> Optuna trial number; survives a resume
        self.untold: dict[str, tuple[dict | None, bool]] = {}  # trials ended while the record failed: told later
        self.storage_url = storage_url  # None: optuna.db in the experiment's folder, wherever that is now
        self.fault = None
        self.open_study(folder)  # before Tune runs: a fault is raised, as the check before it would have

    # --- where the Optuna study lives ------------------------------------------------------------
    def open_in(self, folder: str | Path) -> None:
        """`open_study` in `folder` while Tune runs (a restored searcher, once the experiment's folder is known)."""
        self.recorded(self.open_study, folder)

    def open_study(self, folder: str | Path) -> None:
        """Open the study in `folder`'s `optuna.db`, or in the search's `--optuna-storage` (created, with the
        paper's point queued, on first use). A restored searcher is opened where the experiment is now; Optuna
        trials still RUNNING that no Tune trial knows (asked after Tune's last saved state) are told FAIL, so
        none stays running forever, and trials that ended while the record failed are told now."""
        if getattr(self, "storage", None) is not None:
            close_storage(self.storage)
        folder = location(folder)
        self.folder, self.running_trials = folder.resolve(), {}
        self.mirror = StoreMirror(folder / OPTUNA_FILE) if isinstance(folder, StorePath) and not self.storage_url \
            else None
        self.url = self.storage_url or (self.mirror.url if self.mirror else folder_storage_url(folder, OPTUNA_FILE))
        self.storage = storage_at(self.url)
        self.study = optuna.create_study(
            storage=self.storage, sampler=self.sampler, pruner=optuna.pruners.NopPruner(),
            study_name=self.study_name, load_if_exists=True,
            directions=["maximize" if mode == "max" else "minimize" for mode in self.modes])
        if self.study.metric_names is None:  # optuna-dashboard then shows val_balanced_acc, not "Objective 0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(self.metrics)
        if not self.study.trials and self.seed_point:
            self.study.enqueue_trial(self.seed_point)
        known = set(self.trial_numbers.values())
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number not in known:
                self.study.tell(trial.number, state=TrialState.FAIL)
        self.tell_untold()
        self.update_store_copy()

    def recorded(self, step, *args):
        """`step(*args)`, which uses Optuna's record, unless the record has failed. When it fails (a database
        server stopped or dropped, a journal's disk gone) the study is stopped as Ctrl-C stops it: Tune saves
        its state, every result written so far stays, and `resume` goes on once the record answers. Let
        through, the error would fail the trial at hand in Tune and end the run with a traceback and Optuna's
        misleading "invalid data in the commit, e.g. exceeding max length"."""
        if self.fault is None:
            try:
                return step(*args)
            except STORAGE_FAULTS as err:
                self.stop_study(err)
        return None

    def stop_study(self, err: BaseException) -> None:
        """One `error:` line, without the password, and Tune's graceful stop; the driver exits 1 after it."""
        if self.storage_url:
            option, self.fault = "--optuna-storage", storage_fault_text(err, self.storage_url)
        else:
            option, self.fault = OPTUNA_FILE, (f"{self.folder / OPTUNA_FILE} cannot be written any more "
                                               f"({driver_message(err, self.url)})")
        STOPPED_BY_STORAGE[str(self.folder)] = self.fault
        print(f"error: {option}: {self.fault}; the study stops cleanly and keeps every result written so far: "
              f"resume it once Optuna's record answers again", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune's graceful stop, as for Ctrl-C

    def update_store_copy(self) -> None:
        """After each change to the study: its copy in the object store, when the experiment is in one."""
        if self.mirror is not None:
            self.mirror.push()

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in NOT_PICKLED}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.study = self.storage = self.folder = self.mirror = self.url = self.fault = None
        self.running_trials: dict[str, optuna.Trial] = {}  # Tune trial id -> its Optuna trial, until told
        self.__dict__.setdefault("untold", {})  # a searcher saved before trials could be left untold

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__getstate__(), handle)

    def restore(self, checkpoint_path: str) -> None:
        """Tune's saved state; the study itself is opened by `open_in` once the experiment's folder is known."""
        with open(checkpoint_path, "rb") as handle:
            self.__setstate__(pickle.load(handle))

    # --- Tune's Searcher interface -----------------------------------------------------------------
    def set_search_properties(self, metric, mode, config: dict, **spec) -> bool:
        self.distributions = {name: to_distribution(name, value) for name, value in config.items()
                              if isinstance(value, Domain)}
        return bool(self.distributions)

    def suggest(self, trial_id: str) -> dict | None:
        return self.recorded(self.ask, trial_id)  # None (no trial now) once the record has failed

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not self.multi_objective:
            self.recorded(self.report, trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.trial_numbers:
            return
        self.untold[trial_id] = (result, error)  # until Optuna has it (pickled with the searcher's state)
        self.recorded(self.tell_untold)

    # --- steps on Optuna's record (through `recorded` while Tune runs) -------------------------------
    def ask(self, trial_id: str) -> dict:
        trial = self.opened().ask(self.distributions)
        self.running_trials[trial_id], self.trial_numbers[trial_id] = trial, trial.number
        self.update_store_copy()
        return dict(trial.params)

    def tell_untold(self) -> None:
        for trial_id, (result, error) in list(self.untold.items()):
            self.tell(trial_id, result, error)
            del self.untold[trial_id]

    def tell(self, trial_id: str, result: dict | None, error: bool) -> None:
        number = self.trial_numbers[trial_id]
        study = self.opened()
        if error or not result:
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        elif result.get("epoch", self.stop_epoch) < self.stop_epoch:  # stopped early, and not by an error
            if not self.multi_objective:
                self.report(trial_id, result)  # Tune passes the result that stopped a trial only to here
            study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            values = [result.get(metric) for metric in self.metrics]
            if any(value is None for value in values):
                study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            else:  # Optuna tells FAIL for a NaN, with a warning
                study.tell(number, values if self.multi_objective else values[0], skip_if_finished=True)
        self.running_trials.pop(trial_id, None)
        self.update_store_copy()

    # --- helpers -----------------------------------------------------------------------------------
    def opened(self) -> optuna.Study:
        if self.study is None:
            raise RuntimeError("the Optuna searcher was restored but not opened in its experiment folder "
                               "(open_in); it will not guess where optuna.db is")
        return self.study

    def report(self, trial_id: str, result: dict) -> None:
        """The epoch's value as the Optuna trial's intermediate value at step `epoch` — the one ASHA decides
        on, cooled at a cool-down rung — once per step (a resumed trial repeats the epoch it was restored at)."""
        trial = self.running_trial(trial_id)
        value = result.get(RUNG_PREFIX + self.metric, result.get(self.metric))  # cooled at a cool-down rung
        if trial is None or value is None:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The reported value is ignored because")
            trial.report(float(value), int(result.get("epoch", result.get("training_iteration"))))
        self.update_store_copy()

    def running_trial(self, trial_id: str) -> optuna.Trial | None:
        """The Optuna trial of a Tune trial that is still RUNNING in Optuna; after a resume it is found again
        by its number (one already told, after Tune's last saved state, stays as told)."""
        if trial_id in self.running_trials:
            return self.running_trials[trial_id]
        number = self.trial_numbers.get(trial_id)
        if number is None:
            return None
        study = self.opened()
        internal_id = self.storage.get_trial_id_from_study_id_trial_number(
            self.storage.get_study_id_from_name(self.study_name), number)
        if self.storage.get_trial(internal_id).state != TrialState.RUNNING:
            return None
        self.running_trials[trial_id] = optuna.Trial(study, internal_id)
        return self.running_trials[trial_id]
