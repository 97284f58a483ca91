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

from .trackers import Tracker, epoch_metrics, failure_reason, run_name, run_params, run_tags, wandb_tags

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


def exported_trials(exp: Experiment) -> list[tuple[TrialFiles, TrialParams, str]]:
    """Each trial with its parameters and status, in the folder's order, read once; trials without
    `params.json` (not started) are left out."""
    statuses = dict(zip(exp.trials["trial_id"], exp.trials["status"].astype(str)))
    trials = []
    for folder in trial_folders(exp.path):
        files = read_trial(folder)
        if files.params and "base" in files.params:
            trials.append((files, TrialParams.of(files.params), statuses.get(files.trial_id, "unfinished")))
    return trials


def export_to_mlflow(exp: Experiment, trials, tracker: Tracker) -> Iterator[tuple[TrialFiles, str]]:
    """Each trial's run, made anew; yields the trial once its run is complete."""
    from mlflow import MlflowClient
    from mlflow.entities import Param
    client = MlflowClient(tracking_uri=tracker.target)
    found = client.get_experiment_by_name(exp.settings.name)
    experiment_id = found.experiment_id if found else client.create_experiment(exp.settings.name)
    for files, params, status in trials:
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
        yield files, status


def export_to_wandb(exp: Experiment, trials, tracker: Tracker) -> Iterator[tuple[TrialFiles, str]]:
    """Each trial's run, continued by its id; yields the trial once its run is finished."""
    import os

    import wandb
    for files, params, status in trials:
        tags = run_tags(exp.settings, files.trial_id, status)
        run = wandb.init(project=tracker.target, group=exp.settings.name, id=files.trial_id, resume="allow",
                         name=run_name(files.trial_id), config={**run_params(params), "status": status},
                         tags=wandb_tags(tags), mode=os.environ.get("WANDB_MODE") or None)
        for report in files.rows:
            run.log(epoch_metrics(report), step=int(report["epoch"]))
        run.finish(exit_code=1 if status == "errored" else 0)
        yield files, status


def send(exp: Experiment, trackers: tuple[Tracker, ...]) -> int:
    """`export-tracker` (and `resume --log-to` of a complete study): each tracker (resolved and checked) in
    turn, a line per trial, and where the runs are; exit 1 when a tracker fails on the way (what was sent
    stays sent)."""
    import sys
    trials = exported_trials(exp)
    for tracker in trackers:
        exporter = export_to_mlflow if tracker.kind == "mlflow" else export_to_wandb
        sent = 0
        try:
            for sent, (files, status) in enumerate(exporter(exp, trials, tracker), 1):
                print(f"[{sent}/{len(trials)}] {run_name(files.trial_id)} ({status}, "
                      f"{len(files.rows)} epochs) -> {tracker.label}", flush=True)
        except Exception as err:  # the tracker's client: a server gone, a refusal
            print(f"error: --to {tracker}: {failure_reason(err)}; the trials above were sent, run the command "
                  f"again for the rest", file=sys.stderr)
            return 1
        where = f"experiment {exp.settings.name!r}" if tracker.kind == "mlflow" else f"group {exp.settings.name!r}"
        print(f"{tracker.label} {tracker.target}: {sent} run(s) in {where}")
    return 0
