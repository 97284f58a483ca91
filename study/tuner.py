"""Tuner construction: resources, scheduler, searcher, run config — and knowing when a study is done."""
from __future__ import annotations

import json
from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from results.reader import ASHA_STOPPED_FILE, DamagedFile, read_asha_stopped, read_trial, trial_folders
from results.storage import join, location, write_record
from results.trial_params import CooldownPlan, TrialParams
from search_spaces import get_space, paper_point, tune_domains

from .in_folder import InFolderFIFO, KeepsStudyInFolder
from .progress import CompactProgress
from .ray_internals import asha_metric, asha_rung_records
from .searcher import OptunaSearcher
from .settings import StudySettings
from .trainable import train_balpoe


class RecordingASHA(KeepsStudyInFolder, ASHAScheduler):
    """ASHA that writes down which trials it stopped: after an interrupt Tune shows every trial as
    terminated, so this record is how a study tells "stopped early by ASHA" from "cut off". It is kept in
    the study's folder wherever that is now (`KeepsStudyInFolder`), and a resumed study adds to the stops recorded
    before it (Tune does not save a scheduler's state). It is also written to Tune's staging folder for the
    experiment, which Tune copies over the experiment folder at each save: a resumed study's staging folder
    starts with the files of the folder it resumed, and would put back the record from before the resume."""

    def __init__(self, record_path: str, *, time_attr: str, max_t: int, **kwargs):
        super().__init__(time_attr=time_attr, max_t=max_t, **kwargs)
        record = location(record_path)
        self.time_attr, self.max_t, self.record_name = time_attr, max_t, record.name
        self.stopped: list[str] = []
        if not record.exists():  # present from the start: "no stops yet" is a record too
            record.write_text("[]")

    def on_folder_known(self, tune_controller) -> None:
        super().on_folder_known(tune_controller)
        try:
            self.stopped = sorted(read_asha_stopped(self.folder))
        except DamagedFile:  # rewritten whole with the next stop
            self.stopped = []
        self.refill_rungs()

    def refill_rungs(self) -> None:
        """ASHA's rung records, rebuilt from what the trials in the folder reported: a resumed search then
        stops the trials an uninterrupted one would. A trial's rung score is its first report at or past
        the rung, as ASHA records it; the order of trials does not change what is recorded."""
        rungs, (metric, sign) = asha_rung_records(self), asha_metric(self)
        for folder in trial_folders(self.folder):
            trial_id = folder.name.removeprefix("trial_")
            for row in read_trial(folder).rows:
                epoch, score = row.get(self.time_attr), row.get(metric)
                if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (epoch, score)):
                    continue
                for milestone, recorded in rungs:  # highest first, walked as ASHA walks them
                    if epoch < milestone or trial_id in recorded:
                        continue
                    recorded[trial_id] = sign * score
                    break

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == self.STOP and result.get(self.time_attr, 0) < self.max_t and trial.trial_id not in self.stopped:
            self.stopped.append(trial.trial_id)
            for folder in (self.folder, Path(trial.local_experiment_path)):  # Tune copies the second over the first
                write_record(folder / self.record_name, json.dumps(self.stopped))
        return decision


def trainable_with_resources(settings: StudySettings):
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial or 0}
    return tune.with_resources(train_balpoe, resources)


def param_space(settings: StudySettings) -> dict:
    """Tune's param space: the fixed fields of every trial's `TrialParams`, and what Tune fills in (a
    baseline's seed from a grid, a search's point from its domains)."""
    cooldown = CooldownPlan(rungs=settings.cooldown_rungs, fraction=settings.cooldown_fraction,
                            metric=settings.metric) if settings.cooldown_rungs else None
    fixed = TrialParams(base=settings.base.to_dict(), checkpoint_every=settings.checkpoint_every,
                        threads=max(1, int(settings.cpus_per_trial)), stop_epoch=settings.stop_epoch,
                        cooldown=cooldown, space=settings.space if settings.kind == "search" else None)
    space = fixed.model_dump(mode="json", exclude_none=True)
    if settings.kind == "baseline":
        space["seed"] = tune.grid_search(list(settings.seeds))
    else:
        space.update(tune_domains(get_space(settings.space), settings.ranges))
    return space


def searcher(settings: StudySettings) -> OptunaSearcher:
    """TPE from the settings, seeded with the paper's point when it lies in the ranges."""
    several_at_once = settings.max_concurrent != 1  # then TPE must not sample next to a running trial
    return OptunaSearcher(settings.experiment_dir, settings.name, settings.objectives, settings.stop_epoch,
                          seed_point=paper_point(get_space(settings.space), settings.ranges),
                          sampler_seed=settings.sampler_seed, startup_trials=settings.startup_trials,
                          constant_liar=several_at_once, storage_url=settings.optuna_storage)


def build_tuner(settings: StudySettings, callbacks=None, trainable=None) -> tune.Tuner:
    own_metric = len(settings.objectives) > 1 or settings.asha_metric != settings.metric  # ASHA's, not Tune's
    scheduler = InFolderFIFO()
    if settings.asha:
        scheduler = RecordingASHA(
            join(settings.experiment_dir, ASHA_STOPPED_FILE), time_attr="epoch",
            metric=settings.asha_metric if own_metric else None, mode=settings.mode if own_metric else None,
            max_t=settings.max_t, grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)
    tune_config = tune.TuneConfig(
        metric=None if own_metric else settings.metric, mode=None if own_metric else settings.mode,
        search_alg=searcher(settings) if settings.kind == "search" else None,
        scheduler=scheduler,
        num_samples=settings.num_samples if settings.kind == "search" else 1,
        max_concurrent_trials=settings.max_concurrent,
        trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}")
    run_config = tune.RunConfig(
        name=settings.name, storage_path=settings.storage_path, verbose=0,
        callbacks=callbacks if callbacks is not None else [CompactProgress(settings)],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=settings.keep_checkpoints),
        failure_config=tune.FailureConfig(max_failures=settings.max_failures))
    return tune.Tuner(trainable or trainable_with_resources(settings), param_space=param_space(settings),
                      tune_config=tune_config, run_config=run_config)


def restore_tuner(settings: StudySettings, trainable=None) -> tune.Tuner:
    return tune.Tuner.restore(settings.experiment_dir, trainable=trainable or trainable_with_resources(settings),
                              resume_errored=True, resume_unfinished=True)
