"""What the evaluation adds to a trial, on CIFAR-100-sized logits (3 experts, 100 classes): the
per-epoch validation diagnostics (2,000 images) against the ensemble metrics they come with, and the
end-of-training extras on the full test set (10,000 images). Logits are random: the cost does not
depend on their values. Compare the per-epoch figure with an epoch's time (`epoch_speed.py`).

    python benchmarks/eval_cost.py
    python benchmarks/eval_cost.py --val-images 200 --test-images 1000 --repeats 1   # a quick try
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from arguments import at_least  # noqa: E402
from balpoe.data import long_tail_counts  # noqa: E402
from balpoe.evaluation import shift_metrics  # noqa: E402
from balpoe.metrics import classification_metrics, expert_metrics, fit_temperature  # noqa: E402


def seconds(call, repeats: int = 5) -> float:
    call()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val-images", type=int, default=2000, help="validation images (CIFAR-100-LT's: 2,000)")
    parser.add_argument("--test-images", type=int, default=10000, help="full test set (CIFAR-100's: 10,000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per figure (their mean is shown)")
    args = parser.parse_args(argv)
    at_least(100, val_images=args.val_images, test_images=args.test_images)  # one image per class at least
    at_least(1, repeats=args.repeats)
    torch.set_num_threads(1)
    counts = long_tail_counts(500, 100, 0.01)
    generator = torch.Generator().manual_seed(0)
    for images, split in ((args.val_images, "val, every epoch"), (args.test_images, "test_full, at the end")):
        labels = torch.arange(100).repeat_interleave(images // 100)
        logits = torch.randn(images, 3, 100, generator=generator)
        timed = {"ensemble metrics": lambda: classification_metrics(logits, labels, counts),
                 "per-expert diagnostics": lambda: expert_metrics(logits, labels, counts, [0.0, 1.0, 2.0])}
        if split.startswith("val"):
            timed["temperature fit (once, at the end)"] = lambda: fit_temperature(logits, labels)
        else:
            timed["shift metrics (11 distributions)"] = lambda: shift_metrics(logits, labels, counts)
        for name, call in timed.items():
            print(f"{split:22s} {name:34s} {seconds(call, args.repeats):.3f} s")


if __name__ == "__main__":
    main()
