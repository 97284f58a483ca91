"""What the end of training costs: `Trainer.final_metrics()` of ResNet-32 with 3 experts on a
CIFAR-100-sized test set (10,000 generated 32×32 images, 100 classes; 2,000 of them the validation
split), on one thread like a study trial. Prints the seconds and the images forwarded, by split.

    python benchmarks/final_eval.py
    python benchmarks/final_eval.py --test-per-class 5 --repeats 1   # a quick try
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from arguments import at_least  # noqa: E402
from balpoe.config import Config  # noqa: E402
from balpoe.data import build_data  # noqa: E402
from balpoe.datasets import make_synthetic  # noqa: E402
from balpoe.trainer import EVAL_BATCH_SIZE, Trainer  # noqa: E402


class ImagesForwarded:
    """Counts the images each phase forwards, from the batches `predict` reports."""

    def __init__(self, batch_size: int, sizes: dict[str, int]):
        self.batch_size, self.sizes, self.images = batch_size, sizes, Counter()

    def on_batch_end(self, trainer, phase: str, done: int, total: int) -> None:
        self.images[phase] += self.sizes[phase] - (done - 1) * self.batch_size if done == total else self.batch_size


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test-per-class", type=int, default=100, help="test images per class (CIFAR-100's: 100)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (their mean is shown)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a study trial: its CPU share)")
    args = parser.parse_args(argv)
    at_least(5, test_per_class=args.test_per_class)  # 20 % validation leaves a test image per class
    at_least(1, repeats=args.repeats, threads=args.threads)
    torch.set_num_threads(args.threads)
    config = Config(dataset="synthetic-lt", imb_factor=0.01, device="cpu")
    raw = make_synthetic(num_classes=100, train_per_class=100, test_per_class=args.test_per_class)
    trainer = Trainer(config, build_data(config, "cpu", raw))
    sizes = {split: len(getattr(trainer.data, split)) for split in ("val", "test", "test_full")}
    counter = ImagesForwarded(EVAL_BATCH_SIZE, sizes)
    trainer.final_metrics(callbacks=[counter])  # warm-up, and the images it forwards
    forwarded = dict(counter.images)
    start = time.perf_counter()
    for _ in range(args.repeats):
        trainer.final_metrics(callbacks=())
    seconds = (time.perf_counter() - start) / args.repeats
    print(f"test set {sizes['test_full']:,} images (val {sizes['val']:,}, test {sizes['test']:,}), "
          f"{args.threads} thread(s)")
    print("images forwarded: " + ", ".join(f"{phase} {n:,}" for phase, n in forwarded.items())
          + f"; {sum(forwarded.values()):,} in all")
    print(f"final_metrics: {seconds:.2f} s ({sum(forwarded.values()) / seconds:.1f} images/s)")


if __name__ == "__main__":
    main()
