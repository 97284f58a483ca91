"""Running a study: data once, Ray up, resources resolved, Tune's fit, the end table.

Called with settings that are already checked; everything here may start Ray. SIGTERM is made as
graceful as Ctrl-C (Tune saves its state), and the end always names the results and, when the study
is not complete, the command that continues it.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import ray

from results import load_experiment
from results.console import compute_text, progress_text, trials_text
from results.storage_urls import hide_password
from results.storage import location

from . import dashboard
from .disk import DiskGuard
from .local_ray import start_ray
from .progress import CompactProgress
from .resources import check_schedulable
from .searcher import stopped_by_storage
from .settings import StudyError, StudySettings, resume_command, study_command
from .ray_internals import restored_callbacks
from .shared_storage import check_shared_storage
from .tracker_callbacks import TrackerCallback, tracker_callbacks
from .trackers import tracker_option
from .tuner import build_tuner, restore_tuner


def prepare_data(settings: StudySettings) -> None:
    """Download/check the data once, here, before Ray starts, so trials never race to fetch it (a trial
    never downloads: `study.trainable`). A resumed study checks it again: the machine may have changed."""
    from balpoe.data import load_raw
    load_raw(settings.base)


def resolve_resources(settings: StudySettings) -> StudySettings:
    """Per-trial CPUs and GPUs, now that the cluster's size is known; checked against it."""
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 1), resources.get("GPU", 0)
    gpus_per_trial = settings.gpus_per_trial
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if gpus >= 1 else 0.0
    if gpus_per_trial > gpus:
        raise StudyError(f"--gpus-per-trial: {gpus_per_trial} per trial but the cluster has {gpus:g} GPUs")
    cpus_per_trial = settings.cpus_per_trial
    if cpus_per_trial is None:
        parallel = min(settings.expected_trials, settings.max_concurrent or settings.expected_trials)
        cpus_per_trial = 1.0 if gpus_per_trial else float(max(1, int(cpus // max(1, parallel))))
    if cpus_per_trial > cpus:
        raise StudyError(f"--cpus-per-trial: {cpus_per_trial:g} per trial but the cluster has {cpus:g} CPUs")
    check_schedulable(cpus_per_trial, gpus_per_trial)
    device = settings.base.device
    if device.startswith("cuda") and not gpus_per_trial:
        raise StudyError(f"--device: {device} needs a GPU in every trial; drop --device (auto) or give "
                         f"--gpus-per-trial (got --gpus-per-trial {gpus_per_trial:g})")
    check_shared_storage(settings.storage_path)
    return settings.with_changes(cpus_per_trial=float(cpus_per_trial), gpus_per_trial=float(gpus_per_trial))


def completed_experiment(settings: StudySettings):
    """The experiment if it has nothing left to run, judged from the files (Tune shows interrupted
    trials as terminated); else None."""
    if not any(location(settings.experiment_dir).glob("experiment_state-*.json")):
        return None
    exp = load_experiment(settings.experiment_dir)
    return exp if exp.progress()["complete"] else None


def summarise(settings: StudySettings, exp=None) -> int:
    """The end table, read back from the experiment folder like any later `show`."""
    exp = exp or load_experiment(settings.experiment_dir)
    progress = exp.progress()
    if len(exp.trials):
        print()
        print(trials_text(exp))
    print(f"\n{progress_text(progress)}")
    if compute_text(exp):
        print(compute_text(exp))
    optuna_record = hide_password(settings.optuna_storage) if settings.optuna_storage else "optuna.db"
    print(f"results: {settings.experiment_dir}  (study.json, trial folders"
          f"{', Optuna: ' + optuna_record if settings.kind == 'search' else ''}); "
          f"`{study_command('report', settings)}` writes tables and figures")
    for tracker in map(tracker_option, settings.trackers):
        print(f"{tracker.label}: {tracker.target} ({'experiment' if tracker.kind == 'mlflow' else 'group'} "
              f"'{settings.name}', one run per trial)")
    if not progress["complete"]:
        print(f"the study is not complete; {resume_command(settings)}")
        return 130 if not progress["errored"] else 1
    return 0


def quiet_ray() -> None:
    """Our progress view replaces Tune's: its banner table, INFO lines and its own "Tuner.restore"
    advice (we print the `resume` command) would bury it."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    for name in ("ray", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    # "Failed to fetch metrics for N trial(s)" when an interrupted study's ResultGrid is built: trials that
    # never reported have no result file. The toolkit reads the results itself and never uses that grid.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def run_study(settings: StudySettings, args: argparse.Namespace, resume: bool = False) -> int:
    """`settings` are checked and the experiment folder is locked; returns the exit code."""
    prepare_data(settings)
    quiet_ray()
    served = False
    try:  # from before Ray starts: a Ctrl-C while it starts is raised once it has, and Ray is shut down
        context = start_ray(args)
        if dashboard.ray_dashboard(context):
            print(f"Ray dashboard: {dashboard.ray_dashboard(context)}")
        # SIGTERM would kill Tune without saving state; Tune treats SIGUSR1 like Ctrl-C, so forward it
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGUSR1))
        if not resume:
            settings = resolve_resources(settings)
            location(settings.experiment_dir).mkdir(parents=True, exist_ok=True)
            settings.save(settings.experiment_dir)
        if args.serve_results:
            url = dashboard.deploy(settings.storage_path, args.results_host, args.results_port, args.refresh,
                                   dashboard.ray_dashboard(context))
            served = True
            print(f"results page: {url}experiments/{settings.name}")
        print(f"{settings.kind} '{settings.name}': {settings.expected_trials} trial(s) × {settings.stop_epoch} epochs, "
              f"{settings.cpus_per_trial:g} CPU / {settings.gpus_per_trial:g} GPU per trial -> {settings.experiment_dir}")
        trackers = tracker_callbacks(map(tracker_option, settings.trackers), settings)
        if resume:  # the progress view comes back with the pickled run config; the trackers are this run's
            tuner = restore_tuner(settings)
            callbacks = restored_callbacks(tuner)
            callbacks[:] = [c for c in callbacks if not isinstance(c, TrackerCallback)] + trackers
        else:
            tuner = build_tuner(settings, callbacks=[CompactProgress(settings, interval=args.progress_interval),
                                                     DiskGuard(settings.min_free_mb), *trackers])
        tuner.fit()
        code = summarise(settings)
        return 1 if stopped_by_storage(settings.experiment_dir) else code  # the machine's fault, said already
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C now would only cut the clean-up short
        if served and args.address:  # our own Ray's shutdown ends Serve with it, and without Serve's own
            dashboard.undeploy()      # stop, whose retried task Ray reports in its words
        ray.shutdown()
        sys.stdout.flush()
