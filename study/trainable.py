"""The Tune function trainable: a thin adapter around `balpoe.Trainer`.

Trial config keys: `base` (a balpoe config dict, already validated by the driver), optional `space`
(a search-space name) with that space's sampled parameters, optional `seed`, `checkpoint_every`,
`threads`, `stop_epoch` (`--max-t`: end there, on the recipe's schedule, with the end-of-training
evaluation), optional `cooldown` (`{"rungs": [...], "fraction": f, "metric": m}`: the epochs whose report
carries a cool-down's `cooled_*` metrics, and `rung_m`, the value ASHA decides on, in every report). Reporting and checkpoints use only the `ray.tune` API: inside Tune function
trainables `ray.train.report`/`get_checkpoint` raise. Each report says where the trial ran (device, GPU
ids, Ray node id; Tune adds the host name). Between reports (one per epoch: ASHA decides on epochs) the
trial keeps its position inside the epoch in `progress.json` in its folder (`trial_progress.py`).
"""
from __future__ import annotations

import os
import resource
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray
import torch
from ray import tune

from balpoe.checkpoint import load_checkpoint, restore, save_checkpoint
from balpoe.cooldown import COOLED_PREFIX, cooldown_epochs, cooled_metrics
from balpoe.trainer import Trainer
from results.context import TrialContext
from results.reader import TRAINER_STATE_FILE
from results.settings import RUNG_PREFIX
from results.trial_params import TrialParams
from results.storage import on_filesystem

from .trial_progress import ProgressFile


def trial_threads(cpu_share: float) -> int:
    """Torch threads for a trial: its CPU share, but never more than the cores this process may run on
    here (a `--num-cpus` above the machine's cores would give every trial more threads than cores, and
    training slows to a crawl). Decided inside the trial, on the node it runs on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity outside Linux
        cores = os.cpu_count() or 1
    return max(1, min(int(cpu_share), cores))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@dataclass(frozen=True)
class CooldownRungs:
    """The epochs at which a trial's report is scored by a cool-down (`balpoe.cooldown`), and the
    objective whose value ASHA decides on (`rung_METRIC`: cooled at these epochs, the trunk's elsewhere)."""
    epochs: frozenset[int]
    fraction: float
    metric: str

    @classmethod
    def of(cls, params: TrialParams) -> "CooldownRungs | None":
        plan = params.cooldown
        return cls(frozenset(plan.rungs), plan.fraction, plan.metric) if plan else None

    def score(self, trainer: Trainer, metrics: dict, progress: ProgressFile | None, callbacks: list) -> dict:
        """What the epoch's report adds: the cooled metrics at a rung, and the value ASHA decides on."""
        if trainer.epoch not in self.epochs:
            return {RUNG_PREFIX + self.metric: metrics[self.metric]}
        if progress:
            progress.begin_cooldown()
        cooled = cooled_metrics(trainer, cooldown_epochs(trainer.epoch, self.fraction), callbacks)
        return {**cooled, RUNG_PREFIX + self.metric: cooled[COOLED_PREFIX + self.metric]}


def trial_epochs(trainer: Trainer, stop: int, progress: ProgressFile | None = None, on_epoch_end=None,
                 cooldown: CooldownRungs | None = None):
    """The trainable's loop without Tune: yields `(metrics, last)` for each epoch up to `stop`, the last
    one with the end-of-training metrics, and at a cool-down rung with the cooled ones. `progress` (when
    given) sees every batch of every phase; `on_epoch_end(metrics)` runs after each epoch (and its
    cool-down), before the final metrics."""
    callbacks = [progress] if progress else []
    while trainer.epoch < stop:
        if progress:
            progress.begin_epoch(trainer.epoch + 1, len(trainer.loader))
        metrics = trainer.run_epoch(callbacks)
        if cooldown:
            metrics.update(cooldown.score(trainer, metrics, progress, callbacks))
        if on_epoch_end:
            on_epoch_end(metrics)
        last = trainer.epoch >= stop
        if last:
            if progress:
                progress.begin_final()
            metrics.update(trainer.final_metrics(callbacks))
            if progress:
                progress.end()
        yield metrics, last


def train_balpoe(trial_config: dict, on_epoch_end=None) -> None:
    """`on_epoch_end(metrics)` runs after each epoch, before its report (tests inject faults with it).
    The trial's folder comes from Tune's storage context (`trial_fs_path` on its filesystem: the storage
    path, which every node of a cluster shares, or an object store)."""
    params = TrialParams.of(trial_config)
    torch.set_num_threads(trial_threads(params.threads))
    config = params.recipe().replace(download=False)  # the driver fetched the data once, before Ray started
    trainer = Trainer(config)
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            restore(trainer, load_checkpoint(Path(folder) / TRAINER_STATE_FILE), TRAINER_STATE_FILE)
    every, stop = params.checkpoint_every, params.last_epoch(config)
    context = TrialContext.of(config, stop, device=str(trainer.device),
                              gpu_ids=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                              node_id=ray.get_runtime_context().get_node_id()).row()
    storage = tune.get_context().get_storage()
    progress = ProgressFile(on_filesystem(storage.storage_filesystem, storage.trial_fs_path), stop)
    for metrics, last in trial_epochs(trainer, stop, progress, on_epoch_end, CooldownRungs.of(params)):
        metrics.update(context, peak_memory_mb=peak_memory_mb(trainer.device))
        if metrics["epoch"] % every == 0 or last:
            with tempfile.TemporaryDirectory() as folder:
                save_checkpoint(trainer.state_dict(), Path(folder) / TRAINER_STATE_FILE)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)
