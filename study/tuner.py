"""Tuner construction: resources, scheduler, searcher, run config — and knowing when a study is done."""
from __future__ import annotations

import json
from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from results.reader import ASHA_STOPPED_FILE
from search_spaces import get_space, paper_point, tune_domains

from .progress import CompactProgress
from .settings import StudySettings
from .trainable import train_balpoe



class RecordingASHA(ASHAScheduler):
    """ASHA that writes down which trials it stopped: after an interrupt Tune shows every trial as
    terminated, so this record is how a study tells "stopped early by ASHA" from "cut off"."""

    def __init__(self, record_path: str, **kwargs):
        super().__init__(**kwargs)
        self.record_path = record_path
        self.stopped: list[str] = []
        if not Path(record_path).exists():  # present from the start: "no stops yet" is a record too
            Path(record_path).write_text("[]")

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == self.STOP and result.get(self._time_attr, 0) < self._max_t and trial.trial_id not in self.stopped:
            self.stopped.append(trial.trial_id)
            Path(self.record_path).write_text(json.dumps(self.stopped))
        return decision


class PruningOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED, not COMPLETE, for a trial that ended before its stop
    epoch without an error — one ASHA stopped. Ray's own class tells COMPLETE with the early value,
    so TPE would rank epoch-50 scores with epoch-200 ones; as PRUNED, TPE ranks it by the step it
    reached, from the per-epoch intermediate values (Tune passes on every result but the one that
    stopped the trial; that one is reported here). It uses OptunaSearch's internal trial map; Ray is
    pinned."""

    def __init__(self, stop_epoch: int, **kwargs):
        super().__init__(**kwargs)
        self.stop_epoch = stop_epoch

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        stopped_early = bool(result) and not error and result.get("epoch", self.stop_epoch) < self.stop_epoch
        if not stopped_early or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        from optuna.trial import TrialState
        trial = self._ot_trials[trial_id]
        if not isinstance(self.metric, list) and self.metric in result:  # Tune withholds the stopping result
            trial.report(result[self.metric], result.get("training_iteration", result["epoch"]))
        self._ot_study.tell(trial, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def trainable_with_resources(settings: StudySettings):
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial or 0}
    return tune.with_resources(train_balpoe, resources)


def param_space(settings: StudySettings) -> dict:
    space = {"base": settings.base, "checkpoint_every": settings.checkpoint_every,
             "threads": max(1, int(settings.cpus_per_trial)), "stop_epoch": settings.stop_epoch}
    if settings.kind == "baseline":
        space["seed"] = tune.grid_search(settings.seeds)
    else:
        module = get_space(settings.space)
        space["space"] = settings.space
        space.update(tune_domains(module, settings.ranges))
    return space


def searcher(settings: StudySettings):
    import optuna
    module = get_space(settings.space)
    seed_point = paper_point(module, settings.ranges)
    multi = len(settings.objectives) > 1
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(settings.experiment_dir) / 'optuna.db'}")
    several_at_once = settings.max_concurrent != 1  # then TPE must not sample next to a running trial
    return PruningOptunaSearch(
        stop_epoch=settings.stop_epoch,
        metric=[m for m, _ in settings.objectives] if multi else None,
        mode=[m for _, m in settings.objectives] if multi else None,
        points_to_evaluate=[seed_point] if seed_point else None,
        sampler=optuna.samplers.TPESampler(seed=settings.sampler_seed, n_startup_trials=settings.startup_trials,
                                           constant_liar=several_at_once),
        study_name=settings.name, storage=storage)


def build_tuner(settings: StudySettings, callbacks=None, trainable=None) -> tune.Tuner:
    multi = len(settings.objectives) > 1
    scheduler = None
    if settings.asha:
        scheduler = RecordingASHA(
            str(Path(settings.experiment_dir) / ASHA_STOPPED_FILE), time_attr="epoch",
            metric=settings.metric if multi else None, mode=settings.mode if multi else None,
            max_t=settings.max_t, grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)
    tune_config = tune.TuneConfig(
        metric=None if multi else settings.metric, mode=None if multi else settings.mode,
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
