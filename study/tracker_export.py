"""`export-tracker`: an experiment's trials sent to MLflow or W&B from its files alone (no Ray), so a study
that ran without `--log-to`, or whose tracker went away mid-study, joins the tracker afterwards.

Each trial becomes the run a live study would have made (`study.trackers` says what a run holds). A
trial's run already in the tracker (found by its `trial_id` tag) is replaced, so exporting twice leaves
one run per trial; in W&B the run's id is the trial's, and the export continues it (offline, W&B writes
its files where it always does, `./wandb/`, not in the experiment folder, which may be a bucket).
"""
from __future__ import annotations

from collections.abc import Iterator

from results.experiment import Experiment
from results.reader import TrialFiles, read_trial, trial_folders
from results.trial_params import TrialParams

from .trackers import Tracker, epoch_metrics, run_name, run_params, run_tags, wandb_tags

RUN_STATUS = {"finished": "FINISHED", "asha_stopped": "FINISHED", "errored": "FAILED", "unfinished": "KILLED"}


def find_run(client, experiment_id: str, trial_id: str) -> str | None:
    """The id of the trial's live run in the MLflow experiment, if it has one."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.trial_id = '{trial_id}'", max_results=1)
    return runs[0].info.run_id if runs else None


def log_epoch(client, run_id: str, report: dict) -> None:
    """One report's metrics, at its epoch as the step, in one request."""
    from mlflow.entities import Metric
    from mlflow.utils.time import get_current_time_millis
    epoch, now = int(report["epoch"]), get_current_time_millis()
    client.log_batch(run_id, metrics=[Metric(key, value, now, epoch) for key, value in epoch_metrics(report).items()])


def exported_trials(exp: Experiment) -> Iterator[tuple[TrialFiles, TrialParams, str]]:
    """Each trial with its parameters and status, in the folder's order; trials without `params.json` (not
    started) are left out."""
    statuses = dict(zip(exp.trials["trial_id"], exp.trials["status"].astype(str)))
    for folder in trial_folders(exp.path):
        files = read_trial(folder)
        if files.params and "base" in files.params:
            yield files, TrialParams.of(files.params), statuses.get(files.trial_id, "unfinished")


def export_to_mlflow(exp: Experiment, tracker: Tracker, on_trial) -> int:
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag
    client = MlflowClient(tracking_uri=tracker.target)
    found = client.get_experiment_by_name(exp.settings.name)
    experiment_id = found.experiment_id if found else client.create_experiment(exp.settings.name)
    sent = 0
    for files, params, status in exported_trials(exp):
        earlier = find_run(client, experiment_id, files.trial_id)
        if earlier is not None:
            client.delete_run(earlier)
        tags = run_tags(exp.settings, files.trial_id, status)
        run = client.create_run(experiment_id, run_name=run_name(files.trial_id), tags=tags)
        values = [Param(key, str(value)) for key, value in run_params(params).items()]
        for start in range(0, len(values), 100):  # MLflow takes at most 100 parameters per request
            client.log_batch(run.info.run_id, params=values[start:start + 100])
        for report in files.rows:
            log_epoch(client, run.info.run_id, report)
        client.set_terminated(run.info.run_id, status=RUN_STATUS[status])
        sent += 1
        on_trial(files.trial_id, status, len(files.rows))
    return sent


def export_to_wandb(exp: Experiment, tracker: Tracker, on_trial) -> int:
    import os

    import wandb
    sent = 0
    for files, params, status in exported_trials(exp):
        tags = run_tags(exp.settings, files.trial_id, status)
        run = wandb.init(project=tracker.target, group=exp.settings.name, id=files.trial_id, resume="allow",
                         name=run_name(files.trial_id), config={**run_params(params), "status": status},
                         tags=wandb_tags(tags), mode=os.environ.get("WANDB_MODE") or None)
        for report in files.rows:
            run.log(epoch_metrics(report), step=int(report["epoch"]))
        run.finish(exit_code=1 if status == "errored" else 0)
        sent += 1
        on_trial(files.trial_id, status, len(files.rows))
    return sent


def export_experiment(exp: Experiment, tracker: Tracker, on_trial=lambda *_: None) -> int:
    """Send every started trial of `exp` to `tracker` (resolved and checked); the number sent."""
    return (export_to_mlflow if tracker.kind == "mlflow" else export_to_wandb)(exp, tracker, on_trial)


def send(exp: Experiment, trackers: tuple[Tracker, ...]) -> int:
    """`export-tracker` (and `resume --log-to` of a complete study): each tracker in turn, a line per trial,
    and where the runs are; exit 1 when a tracker fails on the way (what was sent stays sent)."""
    import sys
    from results.storage_urls import hide_password
    total = sum(1 for _ in exported_trials(exp))
    for tracker in trackers:
        def on_trial(trial_id: str, status: str, epochs: int, sent=[0]) -> None:
            sent[0] += 1
            print(f"[{sent[0]}/{total}] {run_name(trial_id)} ({status}, {epochs} epochs) -> {tracker.label}", flush=True)
        try:
            sent = export_experiment(exp, tracker, on_trial)
        except Exception as err:  # the tracker's client: a server gone, a refusal
            reason = hide_password(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
            print(f"error: --to {tracker}: {reason[:300]}; the trials above were sent, run the command again for "
                  f"the rest", file=sys.stderr)
            return 1
        where = f"experiment {exp.settings.name!r}" if tracker.kind == "mlflow" else f"group {exp.settings.name!r}"
        print(f"{tracker.label} {tracker.target}: {sent} run(s) in {where}")
    return 0
