"""Trainer callbacks for the console: one aligned summary row per epoch, with an ETA (timm-style), on
stdout (`EpochPrinter`), and per-batch progress with rate and ETA within a phase on stderr
(`BatchProgress`)."""
from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class EpochPrinter:
    COLUMNS = (("epoch", 9), ("lr", 8), ("loss", 7), ("train_acc", 9), ("val_acc", 7), ("val_bal", 7),
               ("val_ece", 7), ("img/s", 7), ("sec", 6), ("eta", 8))

    def __init__(self, total_epochs: int, stream=None):
        self.total, self.stream = total_epochs, stream
        self.started = time.perf_counter()
        self.first_epoch: int | None = None
        self.header_done = False

    def on_epoch_end(self, trainer, m: dict) -> None:
        if self.first_epoch is None:
            self.first_epoch = m["epoch"] - 1
        if not self.header_done:
            print("  ".join(f"{name:>{width}}" for name, width in self.COLUMNS), file=self.stream or sys.stdout)
            self.header_done = True
        done = m["epoch"] - self.first_epoch
        eta = (time.perf_counter() - self.started) / done * (self.total - m["epoch"])
        cells = (f"{m['epoch']}/{self.total}", f"{m['lr']:.4g}", f"{m['train_loss']:.4f}",
                 f"{100 * m['train_acc']:.2f}", f"{100 * m['val_acc']:.2f}", f"{100 * m['val_balanced_acc']:.2f}",
                 f"{100 * m['val_ece']:.2f}", f"{m['train_images_per_s']:.0f}", f"{m['epoch_seconds']:.1f}",
                 format_duration(eta))
        print("  ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, self.COLUMNS)), file=self.stream or sys.stdout, flush=True)


class BatchProgress:
    """Per-batch progress within a phase (a training epoch, or one split being predicted), as a trainer
    callback (`on_batch_end(trainer, phase, done, total)`, counts in batches).

    On a terminal (`stream.isatty()`): one line, rewritten with `\\r` at most every `tty_interval`
    seconds, e.g. `epoch 3/200  train 45/85 batches  412 img/s  eta 01:23`, and cleared when the
    phase completes, so `EpochPrinter`'s rows (printed after the phase) stay clean. Elsewhere (a log
    file, a pipe): a plain line at most every `interval` seconds, and only once a phase has run that
    long (plus a last line when such a phase completes), so short runs and logs stay unchanged.

    Rate and ETA come from the time measured since the phase's first batch ended (this leaves out
    warm-up and compilation). `total_epochs` adds the `epoch e/E` prefix (for `train`; leave it out
    for evaluation or export). Writes to stderr by default, so stdout stays the epoch table."""

    def __init__(self, total_epochs: int | None = None, stream=None, interval: float = 30.0,
                 tty_interval: float = 0.25, clock=time.perf_counter):
        self.total_epochs, self.stream = total_epochs, stream
        self.interval, self.tty_interval, self.clock = interval, tty_interval, clock
        self.width = 0          # characters of the progress line now on the terminal (0: none)
        self.phase_key = None   # (phase, total, training) of the phase under way
        self.first = None       # (time, images) when the phase's first batch ended
        self.last_write = 0.0
        self.wrote = False      # a plain line was written for this phase
        self.tty = False

    def _out(self):
        return self.stream or sys.stderr

    @staticmethod
    def _images(trainer, phase: str, done: int, total: int) -> tuple[int, int] | None:
        """Images seen after `done` of `total` batches, and in all: every batch but the last is full."""
        try:
            from .trainer import EVAL_BATCH_SIZE
            if trainer.model.training:  # a training epoch (predicting, even the train split, is in eval mode)
                size, batch = len(trainer.loader.split), trainer.loader.batch_size
            else:
                size, batch = len(getattr(trainer.data, phase)), EVAL_BATCH_SIZE
        except (AttributeError, TypeError):
            return None
        return min(done * batch, size), size

    def _line(self, trainer, phase: str, done: int, total: int, now: float) -> str:
        parts = []
        if self.total_epochs:
            training = getattr(getattr(trainer, "model", None), "training", False)
            epoch = getattr(trainer, "epoch", 0) + (1 if training else 0)  # `epoch` counts completed ones
            parts.append(f"epoch {epoch}/{self.total_epochs}")
        parts.append(f"{phase} {done}/{total} batches")
        first_time, first_images = self.first
        elapsed = now - first_time
        if done > 1 and elapsed > 0:
            images = self._images(trainer, phase, done, total)
            if images is not None and first_images is not None:
                parts.append(f"{(images[0] - first_images) / elapsed:.0f} img/s")
            if done < total:
                parts.append(f"eta {format_duration(elapsed / (done - 1) * (total - done))}")
            else:
                parts.append(f"took {format_duration(elapsed)}")
        return "  ".join(parts)

    def clear(self) -> None:
        """Blank the terminal line, if one is showing."""
        if self.width:
            out = self._out()
            out.write("\r" + " " * self.width + "\r")
            out.flush()
            self.width = 0

    def on_batch_end(self, trainer, phase: str, done: int, total: int) -> None:
        now = self.clock()
        training = getattr(getattr(trainer, "model", None), "training", None)
        key = (phase, total, training)
        if key != self.phase_key or self.first is None or done == 1:  # a new phase
            self.clear()
            self.phase_key, self.wrote = key, False
            images = self._images(trainer, phase, done, total)
            self.first = (now, images[0] if images else None)
            self.last_write = now
            isatty = getattr(self._out(), "isatty", None)
            self.tty = bool(isatty and isatty())
        if self.tty:
            if done >= total:
                self.clear()
            elif now - self.last_write >= self.tty_interval or done == 1:
                line = self._line(trainer, phase, done, total, now)
                out = self._out()
                out.write("\r" + line + " " * max(0, self.width - len(line)))
                out.flush()
                self.width, self.last_write = max(self.width, len(line)), now
        else:
            due = now - self.last_write >= self.interval and now - self.first[0] >= self.interval
            if due or (done >= total and self.wrote):
                print(self._line(trainer, phase, done, total, now), file=self._out(), flush=True)
                self.wrote, self.last_write = True, now
        if done >= total:
            self.phase_key, self.first = None, None

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        self.clear()

    def on_fit_end(self, trainer, metrics: dict) -> None:
        self.clear()
