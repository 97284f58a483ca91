"""What the in-epoch progress channel costs a trial: epochs of the real pipeline (`Trainer.run_epoch`:
the recipe's 3-expert ResNet-32, augmentation and mixup, then validation) on generated long-tailed data,
alternately without and with `study.trial_progress.ProgressFile` keeping `progress.json` in a temporary
folder at its default interval, as a study's trials do.

It prints the median epoch time of each (on a shared machine their difference is mostly noise), and the
channel's own time inside the epochs, measured directly around each of its calls (a clock read and a
comparison per batch, a file write every interval and at each phase change), as a share of an epoch:
the last line is `overhead X.XXX % of an epoch`.

    python benchmarks/progress_cost.py                                               # about a minute or two on a CPU
    python benchmarks/progress_cost.py --per-class 20 --batch-size 16 --epochs 1     # a quick try
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from arguments import at_least  # noqa: E402
from balpoe.config import Config  # noqa: E402
from balpoe.data import build_data  # noqa: E402
from balpoe.datasets import make_synthetic  # noqa: E402
from balpoe.trainer import Trainer  # noqa: E402
from study.trial_progress import WRITE_INTERVAL_S, ProgressFile  # noqa: E402


class TimedProgressFile(ProgressFile):
    """The channel, with the time spent in each of its calls added up (the timer's own reads included)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds, self.calls = 0.0, 0

    def begin_epoch(self, epoch: int, train_batches: int) -> None:
        start = time.perf_counter()
        super().begin_epoch(epoch, train_batches)
        self.seconds += time.perf_counter() - start

    def on_batch_end(self, trainer, phase: str, done: int, total: int) -> None:
        start = time.perf_counter()
        super().on_batch_end(trainer, phase, done, total)
        self.seconds += time.perf_counter() - start
        self.calls += 1


def timed_epoch(trainer: Trainer, channel: TimedProgressFile | None) -> float:
    start = time.perf_counter()
    if channel:
        channel.begin_epoch(trainer.epoch + 1, len(trainer.loader))
    trainer.run_epoch([channel] if channel else [])
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=300, help="training images in the largest of 10 classes "
                        "(long-tailed at imbalance 0.1: about 4× this in all)")
    parser.add_argument("--test-per-class", type=int, default=40, help="test images per class (a fifth validate)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs each, without and with the channel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args(argv)
    at_least(10, per_class=args.per_class, test_per_class=args.test_per_class)
    at_least(1, batch_size=args.batch_size, epochs=args.epochs, threads=args.threads)
    torch.set_num_threads(args.threads)
    config = Config(dataset="synthetic-lt", imb_factor=0.1, batch_size=args.batch_size, device="cpu", seed=0)
    data = build_data(config, "cpu", make_synthetic(10, args.per_class, args.test_per_class))
    trainer = Trainer(config, data=data)
    print(f"pipeline: {len(data.train)} training images in {len(trainer.loader)} batches of {args.batch_size}, "
          f"{len(data.val)} validation images; cpu, {args.threads} thread(s); channel every {WRITE_INTERVAL_S:g} s "
          f"and at phase changes")
    timed_epoch(trainer, None)  # warm-up: the allocator's first epoch is slower
    plain, shown = [], []
    with tempfile.TemporaryDirectory() as folder:
        channel = TimedProgressFile(Path(folder) / "trial", epochs=config.epochs)
        for _ in range(args.epochs):  # alternately, so a change in the machine's load hits both alike
            plain.append(timed_epoch(trainer, None))
            shown.append(timed_epoch(trainer, channel))
    without, with_channel = statistics.median(plain), statistics.median(shown)
    listed = lambda times: ", ".join(f"{t:.2f}" for t in times)  # noqa: E731
    print(f"epoch without the channel  median {without:.3f} s over {len(plain)} ({listed(plain)})")
    print(f"epoch with the channel     median {with_channel:.3f} s over {len(shown)} ({listed(shown)}): "
          f"{100 * (with_channel - without) / without:+.2f} %, the difference of two noisy medians")
    per_epoch = channel.seconds / args.epochs
    per_call = channel.seconds / channel.calls
    print(f"channel's own time         {1000 * per_epoch:.3f} ms per epoch: {1e6 * per_call:.2f} µs per batch call "
          f"on average, {channel.writes / args.epochs:.1f} file writes per epoch")
    print(f"overhead {100 * per_epoch / without:.3f} % of an epoch")


if __name__ == "__main__":
    main()
