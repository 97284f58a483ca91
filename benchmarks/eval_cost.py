"""What the evaluation adds to a trial, on CIFAR-100-sized logits (3 experts, 100 classes): the
per-epoch validation diagnostics (2,000 images) against the ensemble metrics they come with, and the
end-of-training extras on the full test set (10,000 images). Logits are random: the cost does not
depend on their values. Compare the per-epoch figure with an epoch's time (`epoch_speed.py`).

    python benchmarks/eval_cost.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from balpoe.data import long_tail_counts  # noqa: E402
from balpoe.evaluation import shift_metrics  # noqa: E402
from balpoe.metrics import classification_metrics, expert_metrics, fit_temperature  # noqa: E402


def seconds(call, repeats: int = 5) -> float:
    call()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    torch.set_num_threads(1)
    counts = long_tail_counts(500, 100, 0.01)
    generator = torch.Generator().manual_seed(0)
    for images, split in ((2000, "val, every epoch"), (10000, "test_full, at the end")):
        labels = torch.arange(100).repeat_interleave(images // 100)
        logits = torch.randn(images, 3, 100, generator=generator)
        timed = {"ensemble metrics": lambda: classification_metrics(logits, labels, counts),
                 "per-expert diagnostics": lambda: expert_metrics(logits, labels, counts, [0.0, 1.0, 2.0])}
        if images == 2000:
            timed["temperature fit (once, at the end)"] = lambda: fit_temperature(logits, labels)
        else:
            timed["shift metrics (11 distributions)"] = lambda: shift_metrics(logits, labels, counts)
        for name, call in timed.items():
            print(f"{split:22s} {name:34s} {seconds(call):.3f} s")


if __name__ == "__main__":
    main()
