"""How many BalPoE trials to pack on one GPU: aggregate epochs/s at 1, 2, 4, 8 trials per GPU.

For each packing k it runs the real command a user would run,

    python -m study.run baseline --seeds 1..k --gpus-per-trial 1/k --epochs E ...

so the figures include Ray's scheduling and the trainable as shipped. From each trial's `result.json`
it takes the epochs after the first (the first one pays for CUDA start-up and cuDNN autotuning) and
reports, per packing: trials, the median seconds per epoch of one trial, the aggregate epochs/s of the
GPU (the sum of the trials' rates, as all k run at once), the gain over one trial per GPU, and the
largest peak GPU memory of a trial.

The recipe is the canonical one (CIFAR-100-LT IR 100, ResNet-32 × 3 experts, batch 128) with
`--epochs E` (default 4). Without `--data-dir` it writes random pixels in CIFAR-100's format and size
(50,000 + 10,000 images) to a temporary folder: speed does not depend on what the pixels show.

    python benchmarks/gpu_packing.py                       # on a GPU machine
    python benchmarks/gpu_packing.py --data-dir ./data     # a real CIFAR-100 copy
    python benchmarks/gpu_packing.py --logical-gpus --packings 1 2 --epochs 2 -- --preset smoke
                                                            # CPU machine: checks the script, not a GPU

Arguments after `--` go to `study.run baseline` as they are (any recipe option, e.g. `--bs 256`).

It ends with `best packing: k trials per GPU`.
"""
from __future__ import annotations

import argparse
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from arguments import at_least, refuse  # noqa: E402
from results import load_experiment  # noqa: E402


def write_random_cifar100(root: Path) -> Path:
    """CIFAR-100's files, format and size, holding random pixels."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, per_class in (("train", 500), ("test", 100)):
        labels = np.repeat(np.arange(100), per_class)
        pixels = rng.integers(0, 256, size=(len(labels), 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": pixels, b"fine_labels": labels.tolist()}, handle)
    return root


def run_packing(k: int, epochs: int, cpus_per_trial: float, data_dir: Path, storage: Path, logical_gpus: bool,
                study_args: list[str]) -> dict:
    """`study.run baseline` with k seeds sharing one GPU; its trials' median seconds per epoch (the
    first epoch not counted), the GPU's aggregate epochs/s and the largest peak memory of a trial."""
    name = f"pack-{k}"
    command = [sys.executable, "-m", "study.run", "baseline", "--seeds", *map(str, range(1, k + 1)),
               "--gpus-per-trial", f"{1 / k:g}", "--cpus-per-trial", f"{cpus_per_trial:g}",
               "--epochs", str(epochs), "--data-dir", str(data_dir), "--storage-path", str(storage),
               "--name", name, "--checkpoint-every", str(epochs), "--progress-interval", "30"]
    if logical_gpus:
        command += ["--num-gpus", "1"]
    command += study_args
    print(f"\n$ {' '.join(command)}", flush=True)
    status = subprocess.run(command, cwd=Path(__file__).resolve().parents[1]).returncode
    if status:
        print(f"error: {name}: study.run baseline ended with exit status {status} (its message is above)",
              file=sys.stderr)
        raise SystemExit(status)
    epochs = load_experiment(storage / name).epochs
    timed = epochs[epochs["epoch"] > 1].groupby("trial_id")
    per_epoch = timed["epoch_seconds"].median().tolist()
    peaks = epochs.groupby("trial_id")["peak_memory_mb"].max().tolist()
    if len(per_epoch) != k:
        raise SystemExit(f"pack-{k}: expected {k} trials, found {len(per_epoch)}")
    return {"trials_per_gpu": k, "epoch_seconds": statistics.median(per_epoch),
            "epochs_per_s": sum(1 / s for s in per_epoch), "peak_memory_mb": max(peaks)}


def measure(packings: list[int], epochs: int, cpus_per_trial: float = 1.0, data_dir: str | None = None,
            output: str | None = None, logical_gpus: bool = False, study_args: list[str] = ()) -> list[dict]:
    """One `run_packing` row per packing, on `data_dir` or random CIFAR-100-sized pixels."""
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(data_dir).resolve() if data_dir else write_random_cifar100(Path(scratch) / "data")
        storage = Path(output).resolve() if output else Path(scratch) / "runs"
        return [run_packing(k, epochs, cpus_per_trial, data, storage, logical_gpus, list(study_args))
                for k in packings]


def table(rows: list[dict]) -> str:
    base = rows[0]["epochs_per_s"]
    lines = [f"{'trials/GPU':>10} {'s/epoch (1 trial)':>18} {'epochs/s (GPU)':>15} {'gain':>6} {'peak MB':>8}"]
    lines += [f"{row['trials_per_gpu']:>10} {row['epoch_seconds']:>18.2f} {row['epochs_per_s']:>15.3f} "
              f"{row['epochs_per_s'] / base:>5.2f}x {row['peak_memory_mb']:>8.0f}" for row in rows]
    return "\n".join(lines)


def best(rows: list[dict]) -> int:
    return max(rows, key=lambda row: row["epochs_per_s"])["trials_per_gpu"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packings", type=int, nargs="+", default=[1, 2, 4, 8], help="trials per GPU to try")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (≥ 2; the first is not timed)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--data-dir", help="a folder with cifar-100-python/ (default: random pixels, same size)")
    parser.add_argument("--logical-gpus", action="store_true",
                        help="declare one logical GPU on a CPU machine (checks the script, measures nothing GPU)")
    parser.add_argument("--output", help="where the experiments go (default: a temporary folder)")
    parser.add_argument("study_args", nargs="*", help="after --: passed to study.run baseline")
    args = parser.parse_args(argv)
    at_least(2, epochs=args.epochs)  # the first epoch is not timed
    at_least(1, packings=min(args.packings))
    at_least(0.01, cpus_per_trial=args.cpus_per_trial)
    if args.data_dir and not Path(args.data_dir, "cifar-100-python").is_dir():
        refuse("--data-dir", "holds no cifar-100-python/ folder", args.data_dir)
    rows = measure(args.packings, args.epochs, args.cpus_per_trial, args.data_dir, args.output, args.logical_gpus,
                   args.study_args)
    print("\n" + table(rows))
    print(f"best packing: {best(rows)} trials per GPU")


if __name__ == "__main__":
    main()
