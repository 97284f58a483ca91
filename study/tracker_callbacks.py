"""Ray Tune's MLflow and W&B logger callbacks, sending what `study.trackers` says a run holds.

Tune's callbacks bring the lifecycle (a run opened when a trial starts, a result per report, the run
closed when the trial ends) and the tracker set-up; these subclasses choose the run's name, parameters,
metrics (one step per epoch), tags and status, and find a resumed trial's run again instead of opening
another. A tracker that fails costs one warning and is left alone for the rest of the study: the
experiment folder is the record, and `export-tracker` sends it again.
"""
from __future__ import annotations

import os
import sys

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

from results.settings import StudySettings
from results.storage import is_uri
from results.trial_params import TrialParams

from .tracker_export import find_run, log_epoch
from .trackers import (Tracker, ended_status, epoch_metrics, not_sent_warning, run_name, run_params, run_tags,
                       wandb_tags)

# a server gone costs seconds, not MLflow's minutes of retries; the run's link is in the end lines, not
# printed by MLflow between the progress lines at each trial's end
MLFLOW_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                      "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


class TrackerCallback:
    """What both trackers share: the study, the last epoch each trial reported, and failing once."""
    tracker: Tracker
    study: StudySettings
    failure: BaseException | None          # the first error: the tracker is left alone after it
    last_epochs: dict[str, int]

    def guarded(self, step, *args) -> None:
        if self.failure is not None:
            return
        try:
            step(*args)
        except Exception as err:  # whatever the tracker's client raises: the study must go on
            self.failure = err
            print(not_sent_warning(self.tracker, self.study, err), file=sys.stderr, flush=True)

    def status(self, trial, failed: bool) -> str:
        params = TrialParams.of(trial.config)
        return ended_status(self.last_epochs.get(trial.trial_id, 0), params.last_epoch(params.recipe()), failed)

    def remember_epoch(self, trial, result: dict) -> None:
        self.last_epochs[trial.trial_id] = int(result.get("epoch", result.get("training_iteration", 0)))


class MLflowTrials(TrackerCallback, MLflowLoggerCallback):
    def __init__(self, tracker: Tracker, study: StudySettings):
        super().__init__(tracker.target, experiment_name=study.name)
        self.tracker, self.study, self.failure, self.last_epochs = tracker, study, None, {}

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        for name, value in MLFLOW_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        self.failure, self.runs = None, {}
        self.guarded(self.connect)

    def connect(self) -> None:
        """Tune's set-up (the tracking URI, the experiment found or created), and a client for the rest."""
        from mlflow import MlflowClient
        super().setup()
        self.client = MlflowClient(tracking_uri=self.tracking_uri)

    def log_trial_start(self, trial):
        self.guarded(self.open_run, trial)

    def open_run(self, trial) -> None:
        if trial in self.runs:
            return
        trial_id = trial.trial_id
        run_id = find_run(self.client, self.mlflow_util.experiment_id, trial_id)
        if run_id is None:
            run = self.mlflow_util.start_run(run_name=run_name(trial_id), tags=run_tags(self.study, trial_id, "running"))
            run_id = run.info.run_id
            self.mlflow_util.log_params(run_id=run_id, params_to_log=run_params(TrialParams.of(trial.config)))
        else:  # a resumed study's trial: its run goes on
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "status", "running")
        self.runs[trial] = run_id

    def log_trial_result(self, iteration, trial, result):
        self.remember_epoch(trial, result)
        if trial in self.runs:
            self.guarded(log_epoch, self.client, self.runs[trial], result)

    def log_trial_end(self, trial, failed: bool = False):
        if trial in self.runs:
            self.guarded(self.close_run, trial, failed)

    def close_run(self, trial, failed: bool) -> None:
        run_id = self.runs.pop(trial)
        self.client.set_tag(run_id, "status", self.status(trial, failed))
        self.mlflow_util.end_run(run_id=run_id, status="FAILED" if failed else "FINISHED")

    def on_experiment_end(self, trials, **info):
        """A study interrupted (Ctrl-C, SIGTERM, a full disk): the runs of the trials it cut off say so
        (`unfinished`, state KILLED) until `resume` takes them up again."""
        for run_id in self.runs.values():
            self.guarded(self.mark_unfinished, run_id)
        self.runs = {}

    def mark_unfinished(self, run_id: str) -> None:
        self.client.set_tag(run_id, "status", "unfinished")
        self.client.set_terminated(run_id, status="KILLED")


class WandbTrials(TrackerCallback, WandbLoggerCallback):
    """W&B logs each trial from its own Ray actor (Tune's design); the run's id is the trial's, so a resumed
    trial continues its run (`resume="allow"`), offline as online (WANDB_MODE is passed on)."""

    def __init__(self, tracker: Tracker, study: StudySettings):
        mode = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}
        super().__init__(project=tracker.target, group=study.name, resume="allow", **mode)
        self.tracker, self.study, self.failure, self.last_epochs = tracker, study, None, {}
        self.logging: set[str] = set()   # trials whose logging actor was started

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.failure, self.logging = None, set()
        self.guarded(super().setup)

    def log_trial_start(self, trial):
        self.guarded(super().log_trial_start, trial)

    def _start_logging_actor(self, trial, exclude_results, **init_kwargs):  # ray_internals.WANDB_RUN_HOOK
        """Tune's step between its run arguments and the actor: the run's name, parameters and tags are ours."""
        tags = run_tags(self.study, trial.trial_id, "running")
        init_kwargs.update(name=run_name(trial.trial_id), config=run_params(TrialParams.of(trial.config)),
                           tags=wandb_tags(tags))
        if not is_uri(self.study.storage_path):  # offline files straight into the trial's folder, not Tune's
            init_kwargs["dir"] = trial.path      # staging copy of it (synced later, maybe before W&B is done)
        super()._start_logging_actor(trial, exclude_results, **init_kwargs)
        self.logging.add(trial.trial_id)

    def log_trial_result(self, iteration, trial, result):
        self.remember_epoch(trial, result)
        step = self.last_epochs[trial.trial_id]
        self.guarded(super().log_trial_result, iteration, trial, {**epoch_metrics(result), "training_iteration": step})

    def log_trial_end(self, trial, failed: bool = False, status: str | None = None):
        if trial.trial_id in self.last_epochs and trial.trial_id in self.logging:  # at its last epoch's step
            ended = {"config": {"status": status or self.status(trial, failed)},
                     "training_iteration": self.last_epochs[trial.trial_id]}
            self.guarded(super().log_trial_result, 0, trial, ended)
        self.guarded(super().log_trial_end, trial, failed)
        self.logging.discard(trial.trial_id)

    def on_experiment_end(self, trials, **info):
        """A study interrupted: the runs of the trials it cut off end as `unfinished` (resume continues them).
        Tune's own end waits for every trial's actor to finish its upload, up to 30 minutes, and the actor of
        a trial that was cut off is never told to finish."""
        for trial in trials:
            if trial.trial_id in self.logging:
                self.log_trial_end(trial, status="unfinished")
        super().on_experiment_end(trials, **info)


def tracker_callbacks(trackers, study: StudySettings) -> list:
    return [MLflowTrials(t, study) if t.kind == "mlflow" else WandbTrials(t, study) for t in trackers]
