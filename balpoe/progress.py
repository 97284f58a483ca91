"""One aligned summary row per epoch, with an ETA (timm-style), as a trainer callback."""
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
