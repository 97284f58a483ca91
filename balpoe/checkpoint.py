"""Checkpoint files and the run-folder layout the downstream stage reads.

    <save_dir>/config.json               resolved config (official layout + our exact config under "balpoe")
    <save_dir>/checkpoint-epoch{N}.pth   every save_period epochs and at the last epoch
    <save_dir>/model_best.pth            best val_balanced_acc so far (never a test metric)
    <save_dir>/summary.csv               one row per epoch
    <save_dir>/metrics.json              end-of-training metrics (test_*, test_full_*, shift_*)

Files are written to a temporary name and renamed, so a crash never leaves a half-written checkpoint
in place of a good one. A `config.json` already in the folder is replaced only when a run wrote it
(`check_run_config`).
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import torch

from . import config as config_module
from .files import atomic_write, read_small_json
from .trainer import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, Trainer

REQUIRED_KEYS = ("epoch", "state_dict", "optimizer", "monitor_best", "best_epoch", "config", "num_classes",
                 "class_counts", "rng")


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged or not one of ours; the message says which."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (full disk, I/O error); earlier ones are intact."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write atomically; a full disk or an I/O error becomes a CheckpointError naming the file (torch
    reports it as an internal RuntimeError), and the partial file is gone."""
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except (OSError, RuntimeError) as err:
        raise CheckpointWriteError(f"{path}: could not be written ({err}); free disk space or fix the folder, "
                              f"then resume") from None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; name a .pth file in it (checkpoint-epoch{{N}}.pth, model_best.pth)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: an empty file (0 bytes), not a checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for damaged files; say it plainly
        raise CheckpointError(f"{path}: cannot be read as a checkpoint (truncated, damaged or "
                              f"holding more than tensors and plain data): {err}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a BalPoE checkpoint written by this toolkit "
                              f"(no 'format': '{CHECKPOINT_FORMAT}' entry)")
    version = state.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: its format version must be an integer (got {version!r})")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: written by a newer version (format {version})")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, it lacks {', '.join(missing)}")
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{path}: its config is not a mapping")
    counts = state["class_counts"]
    if not (isinstance(state["num_classes"], int) and isinstance(counts, list)
            and all(isinstance(c, int) and c >= 0 for c in counts) and len(counts) == state["num_classes"]):
        raise CheckpointError(f"{path}: num_classes and class_counts must be an integer and one count per class "
                              f"(got {state['num_classes']!r} and {counts!r:.80})")
    try:
        config_module.from_dict(state["config"])
    except config_module.ConfigError as err:
        raise CheckpointError(f"{path}: its saved config is invalid ({err})") from None
    return state


def restore(trainer: Trainer, state: dict, path: str | Path) -> None:
    """Load `state` into `trainer`, after checking it was trained on the same classes and subset:
    a checkpoint of other data would load without complaint and then mean nothing."""
    if state["num_classes"] != trainer.data.num_classes or list(state["class_counts"]) != list(trainer.data.class_counts):
        raise CheckpointError(
            f"{path}: trained on {state['num_classes']} classes, {sum(state['class_counts'])} long-tailed training "
            f"images, but the data here gives {trainer.data.num_classes} classes, {sum(trainer.data.class_counts)} "
            f"images; point --data-dir at the data set it was trained on")
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: does not fit this model ({str(err).splitlines()[0]})") from None


def write_json(path: Path, payload: dict) -> None:
    def clean(value):
        return None if isinstance(value, float) and not math.isfinite(value) else value
    text = json.dumps({k: clean(v) for k, v in payload.items()}, indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def check_run_config(save_dir: str | Path) -> None:
    """A run folder's `config.json` is replaced only when a run wrote it (it holds our exact config under
    "balpoe"): a config of the user's kept there, official or ours by hand, is never overwritten."""
    path = Path(save_dir) / "config.json"
    if os.path.lexists(path):
        record = read_small_json(path)
        if not (isinstance(record, dict) and isinstance(record.get("balpoe"), dict)):
            raise config_module.ConfigError(
                f"save_dir: {path} exists and was not written by a run (it has no \"balpoe\" section); it is left "
                f"as it is: move it elsewhere, or choose another --save_dir")


class RunFolder:
    """Trainer callback that keeps the run folder: summary rows, periodic and best checkpoints."""

    def __init__(self, save_dir: str | Path, config: config_module.Config, resumed_epoch: int = 0):
        self.dir = Path(save_dir)
        check_run_config(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        config_module.save(config, self.dir / "config.json")
        self.summary = self.dir / "summary.csv"
        self._trim_summary(resumed_epoch)

    def _trim_summary(self, resumed_epoch: int) -> None:
        """A resumed run repeats the epochs after its checkpoint: drop their old rows."""
        if not self.summary.exists():
            return
        if resumed_epoch == 0:
            self.summary.unlink()
            return
        with self.summary.open() as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= resumed_epoch]
        self._write_rows(rows)

    def _write_rows(self, rows: list[dict]) -> None:
        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as handle:
                if rows:
                    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(rows)
        atomic_write(self.summary, write)

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        new_file = not self.summary.exists()
        with self.summary.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(metrics))
            if new_file:
                writer.writeheader()
            writer.writerow(metrics)
        epoch = metrics["epoch"]
        state = None
        if epoch % self.config.save_period == 0 or epoch == self.config.epochs:
            state = trainer.state_dict()
            save_checkpoint(state, self.dir / f"checkpoint-epoch{epoch}.pth")
        if trainer.best_epoch == epoch:
            save_checkpoint(state or trainer.state_dict(), self.dir / "model_best.pth")

    def on_fit_end(self, trainer, metrics: dict) -> None:
        write_json(self.dir / "metrics.json", metrics)


def trainer_from_checkpoint(path: str, data_dir: str | None = None, device: str | None = None):
    """A Trainer rebuilt from a checkpoint's own config, with its state loaded."""
    state = load_checkpoint(path)
    overrides = {k: v for k, v in {"data_dir": data_dir, "device": device}.items() if v is not None}
    config = config_module.from_dict(state["config"]).replace(**overrides)
    trainer = Trainer(config)
    restore(trainer, state, path)
    return trainer
