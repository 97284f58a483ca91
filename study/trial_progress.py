"""The trial's side of the in-epoch progress channel: a trainer callback that keeps `progress.json`
(the record `results.in_epoch` describes) in the trial's folder on the storage path, where the driver's
progress view and the live page read it — on a cluster too, since every node sees the storage path (a
shared folder, or an object store, where each write replaces one small object).

A Tune report per batch would change what ASHA decides on and fill the result files; this writes a
file instead. Per batch it costs a monotonic clock read and a few comparisons. The record is written
every `interval` seconds, and at each phase change (the start of an epoch, a phase's first and last
batch) once a quarter interval has passed since the last write, to a temporary file then moved into
place, so a reader never sees half a record. Writes never take more than MAX_WRITE_SHARE of the
trial's time, whatever the filesystem: after a write that took `w` seconds the next waits at least
`w / MAX_WRITE_SHARE`. The trial's last batch is always written (`end`), however slow the store, so
a finished trial's record says where it ended. A failed write (a full disk, a folder gone) never stops training: it is said
once on stderr and tried again at the next one due.
"""
from __future__ import annotations

import sys
import time

from balpoe import trainer as trainer_module
from results.in_epoch import InEpochProgress
from results.reader import PROGRESS_FILE
from results.storage import Location, location, write_record

WRITE_INTERVAL_S = 2.0
MAX_WRITE_SHARE = 0.005     # of the trial's time spent writing, at most (a slow network filesystem)


class ProgressFile:
    """`on_batch_end(trainer, phase, done, total)` for `Trainer.run_epoch` / `final_metrics`; the loop
    around them calls `begin_epoch` before each epoch, `begin_cooldown` before a cool-down rung and
    `begin_final` before the final evaluation."""

    def __init__(self, folder: str | Location, epochs: int, interval: float = WRITE_INTERVAL_S,
                 clock=time.monotonic, wall=time.time, max_write_share: float = MAX_WRITE_SHARE):
        self.path = location(folder) / PROGRESS_FILE
        self.epochs, self.interval, self.clock, self.wall = epochs, interval, clock, wall
        self.max_write_share = max_write_share
        self.due = 0.0                      # clock time of the next write when nothing else calls for one
        self.soon = 0.0                     # ... and the earliest one at a phase change
        self.epoch, self.stage, self.epoch_started = 1, "epoch", wall()
        self.phase_start: tuple[str, float, int] | None = None  # phase, clock time and batches when it began
        self.train_batches: int | None = None
        self.train_rate: float | None = None
        self.writes = 0
        self.failed = False
        self.unwritten: tuple | None = None   # the last batch's position when it was not written

    def begin_epoch(self, epoch: int, train_batches: int) -> None:
        """Epoch `epoch` (from 1) starts: written at once, so the reader's clock for it starts now."""
        self.epoch, self.stage, self.epoch_started = epoch, "epoch", self.wall()
        self.train_batches, self.train_rate = train_batches, None
        now = self.clock()
        self.phase_start = ("train", now, 0)
        if now >= self.soon:
            self._write(None, "train", 0, train_batches, now)

    def begin_cooldown(self) -> None:
        """A cool-down rung of the epoch just trained starts: its batches are the cool-down's."""
        self.stage = "cooldown"

    def begin_final(self) -> None:
        """The end-of-training evaluation of the last epoch starts (its first batch writes)."""
        self.stage = "final"

    def on_batch_end(self, trainer, phase: str, done: int, total: int) -> None:
        now = self.clock()
        if done == 1:  # a phase's rate counts from its first batch's end (warm-up and compiling left out)
            self.phase_start = (phase, now, 1)
        if phase == "train" and self.stage == "epoch" and done == total:  # the epoch's training rate, known
            self._keep_train_rate(total, now)                              # even when no write fell in it
        if now < self.due and (now < self.soon or 1 < done < total):
            self.unwritten = (trainer, phase, done, total, now)
            return
        self._write(trainer, phase, done, total, now)

    def end(self) -> None:
        """The trial's work is over: its last position is written if the spacing held it back."""
        if self.unwritten is not None:
            self._write(*self.unwritten)

    def _write(self, trainer, phase: str, done: int, total: int, now: float) -> None:
        started_writing = time.perf_counter()
        self.unwritten = None
        if self.phase_start is None or self.phase_start[0] != phase:
            self.phase_start = (phase, now, done)
        _, started, started_done = self.phase_start
        elapsed = now - started
        rate = (done - started_done) / elapsed if done > started_done and elapsed > 0 else None
        images = _images_per_s(trainer, phase, started_done, done, elapsed) if rate else None
        if phase == "train" and self.stage == "epoch" and rate:
            self.train_batches, self.train_rate = total, rate
        try:
            record = InEpochProgress(
                epoch=self.epoch, epochs=self.epochs, stage=self.stage, phase=phase, done=done, total=total,
                images_per_s=images, batches_per_s=rate, train_batches=self.train_batches,
                train_batches_per_s=self.train_rate, epoch_started=self.epoch_started, time=self.wall(),
                interval_s=self.interval)
            if not self.writes:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            write_record(self.path, record.model_dump_json())
            self.writes += 1
        except (OSError, ValueError) as err:  # the record is a live hint: training goes on without it
            if not self.failed:
                print(f"warning: progress.json: cannot write {self.path} ({err}); training goes on, "
                      f"its in-epoch progress is not shown", file=sys.stderr, flush=True)
            self.failed = True
        spacing = (time.perf_counter() - started_writing) / self.max_write_share
        self.due, self.soon = now + max(self.interval, spacing), now + max(self.interval / 4, spacing)

    def _keep_train_rate(self, total: int, now: float) -> None:
        phase, started, started_done = self.phase_start or ("", now, total)
        if phase == "train" and total > started_done and now > started:
            self.train_batches, self.train_rate = total, (total - started_done) / (now - started)


def _images_per_s(trainer, phase: str, from_batches: int, to_batches: int, elapsed: float) -> float | None:
    """Images per second over batches `from_batches`…`to_batches` of the phase: all batches are full but
    a phase's last. None without a trainer (an epoch's start)."""
    if trainer is None:
        return None
    if phase == "train" and trainer.model.training:
        size, batch = len(trainer.loader.split), trainer.loader.batch_size
    else:
        size, batch = len(getattr(trainer.data, phase)), trainer_module.EVAL_BATCH_SIZE
    return (min(to_batches * batch, size) - min(from_batches * batch, size)) / elapsed
