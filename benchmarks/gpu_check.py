"""The GPU check: what a CUDA machine does with the toolkit, in one run of under 8 minutes, ending in one
summary.

1. step     one training step of the canonical recipe (batch 128) on the GPU and on the CPU, from the
            same weights and batch (the trainer builds the model on the CPU, the loader draws on
            NumPy): the loss and the weights after the step must agree within STEP_TOLERANCE in fp32
            (TF32 off); the difference with TF32 on, as training runs by default, is reported too.
2. epochs   images/s of a full epoch of our pipeline (`epoch_speed.time_ours`, each in a fresh
            process) for fp32 and bf16, channels_last on and off, and peak GPU memory of each.
3. packing  1, 2 and 4 trials sharing the GPU through the real `study.run baseline`
            (`gpu_packing.measure`): aggregate epochs/s and peak memory per trial.
4. compile  fp32 and bf16 under torch.compile, warm-up (compilation) apart.

Measurements run in that order; one expected to end after `--limit-s` (480 s) is skipped and the
summary names it. The exit status is 1 when the step check fails, 2 on a bad argument or without a
CUDA GPU.

    python benchmarks/gpu_check.py                 # on a CUDA machine
    python benchmarks/gpu_check.py --cpu-dry-run   # any machine: every stage at a tiny size on the CPU
                                                   # (two epoch runs); checks the script, measures nothing
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import epoch_speed  # noqa: E402
import gpu_packing  # noqa: E402
from arguments import at_least, refuse  # noqa: E402
from balpoe.config import Config  # noqa: E402
from balpoe.data import DataBundle  # noqa: E402
from balpoe.datasets import CIFAR_NORMALISATION  # noqa: E402
from balpoe.trainer import Trainer  # noqa: E402

STEP_TOLERANCE = {"loss_rel": 1e-4, "weights_abs": 1e-4}  # fp32, TF32 off: summation order differs only
EPOCH_RUNS = [("fp32", True), ("fp32", False), ("bf16", True), ("bf16", False)]  # (precision, channels_last)
DRY_RUN_EPOCH_RUNS = [("fp32", True), ("bf16", False)]  # each code path once
COMPILE_RUNS = ["fp32", "bf16"]
STAGES = ("step", "epochs", "packing", "compile")
ESTIMATE_S = {"step": 30, "epochs": 25, "epoch": 25, "packing": 60, "compile": 180}  # guesses for an H100


def one_step(device: torch.device, batch_size: int) -> tuple[float, dict[str, torch.Tensor]]:
    """The loss of the recipe's first training step on `device` and the weights after it (on the CPU)."""
    images, labels, counts = epoch_speed.make_pixels()
    split = epoch_speed.to_split(images[:batch_size], labels[:batch_size], device)
    mean, std = CIFAR_NORMALISATION
    bundle = DataBundle(train=split, val=split, test=split, test_full=split, class_counts=counts,
                        num_classes=epoch_speed.NUM_CLASSES, mean=mean, std=std)
    trainer = Trainer(Config(device=str(device), batch_size=batch_size), data=bundle)
    loss = trainer.train_epoch()["train_loss"]  # one batch: the whole split
    return loss, {k: v.detach().float().cpu() for k, v in trainer.model.state_dict().items()}


def step_difference(device: torch.device, reference: torch.device, batch_size: int, tf32: bool) -> dict:
    """How far one step on `device` is from the same step on `reference`."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    loss_ref, weights_ref = one_step(reference, batch_size)
    loss, weights = one_step(device, batch_size)
    return {"loss": loss, "loss_rel": abs(loss - loss_ref) / abs(loss_ref),
            "weights_abs": max(float((weights[k] - weights_ref[k]).abs().max()) for k in weights_ref)}


def step_passes(difference: dict) -> bool:
    return all(difference[key] <= limit for key, limit in STEP_TOLERANCE.items())


def summary(report: dict) -> str:
    """The one block the check ends with; `report` holds what the stages measured (a stage that did
    not run is absent or None)."""
    lines = [f"GPU check summary: {report['device_name']} | torch {report['torch']} | "
             f"{report['seconds'] / 60:.1f} min"]
    step = report.get("step")
    if step:
        strict, tf32 = step["fp32"], step.get("tf32")
        verdict = "PASS" if step_passes(strict) else "FAIL"
        lines.append(f"step, GPU vs CPU, fp32 (TF32 off): loss rel. diff {strict['loss_rel']:.1e} (tolerance "
                     f"{STEP_TOLERANCE['loss_rel']:.0e}), largest weight diff {strict['weights_abs']:.1e} "
                     f"(tolerance {STEP_TOLERANCE['weights_abs']:.0e}): {verdict}")
        if tf32:
            lines.append(f"step with TF32 on (training's default): loss rel. diff {tf32['loss_rel']:.1e}, "
                         f"largest weight diff {tf32['weights_abs']:.1e}")
    epochs = report.get("epochs") or {}
    if epochs:
        lines.append(f"epoch images/s ({report['memory']}):")
        base = epochs.get(("fp32", True, False))
        for (precision, channels_last, compiled), run in epochs.items():
            rate = run["images"] / run["seconds"]
            ratio = f" = {rate / (base['images'] / base['seconds']):.2f}x fp32" if base and run is not base else ""
            warmup = f", warm-up (compiling) {run['warmup_seconds']:.0f} s" if compiled else ""
            name = f"{precision} channels_last {'on' if channels_last else 'off'}{' compiled' if compiled else ''}"
            lines.append(f"  {name + ':':<30} {rate:8.0f}{ratio} ({run['peak_mb']:.0f} MB{warmup})")
    packing = report.get("packing")
    if packing:
        lines.append("trials per GPU (study.run baseline, fp32):")
        lines += ["  " + line for line in gpu_packing.table(packing).splitlines()]
        lines.append(f"  best packing: {gpu_packing.best(packing)} trials per GPU")
    lines += [f"skipped: {name} (would end after {report['limit_s']:.0f} s)" for name in report["skipped"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run every stage on the CPU at a tiny size (checks the script, measures nothing)")
    parser.add_argument("--limit-s", type=float, default=480,
                        help="start no measurement expected to end after this many seconds (default 480: 8 min)")
    parser.add_argument("--packings", type=int, nargs="+", default=[1, 2, 4], help="trials per GPU to try")
    parser.add_argument("--skip", nargs="+", default=[], choices=STAGES, help="stages not to run")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    at_least(0, limit_s=args.limit_s)
    at_least(1, packings=min(args.packings), threads=args.threads)
    if args.cpu_dry_run:
        device, reference = torch.device("cpu"), torch.device("cpu")
        sizes = {"step_batch": 8, "batch_size": 4, "max_images": 4, "warmup_batches": 1, "epochs": 2,
                 "study_args": ["--preset", "smoke"], "epoch_runs": DRY_RUN_EPOCH_RUNS}
    else:
        if not torch.cuda.is_available():
            refuse("device", "torch sees no CUDA GPU on this machine; run the check on a GPU machine, or "
                             "--cpu-dry-run to check the script here", "cpu")
        device, reference = torch.device("cuda"), torch.device("cpu")
        sizes = {"step_batch": 128, "batch_size": 128, "max_images": None, "warmup_batches": 3, "epochs": 2,
                 "study_args": [], "epoch_runs": EPOCH_RUNS}
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = None if "packing" in args.skip else gpu_packing.write_random_cifar100(Path(scratch) / "data")
        report = run_stages(args, device, reference, sizes, data_dir)
    print("\n" + summary(report))
    step = report.get("step")
    return 1 if step and not step_passes(step["fp32"]) else 0


def run_stages(args: argparse.Namespace, device: torch.device, reference: torch.device, sizes: dict,
               data_dir: Path | None) -> dict:
    """Each measurement in stage order, unless it is expected to end after `--limit-s` (the estimate
    of a compiled epoch is the last compile's warm-up, or ESTIMATE_S)."""
    start = time.perf_counter()
    report = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)",
              "torch": torch.__version__, "limit_s": args.limit_s, "skipped": [], "epochs": {}, "packing": [],
              "memory": "peak GPU memory allocated" if device.type == "cuda" else "peak process memory"}
    n_timed = sizes["max_images"] or len(epoch_speed.make_pixels()[1])
    estimates = dict(ESTIMATE_S)

    def step() -> None:
        report["step"] = {"fp32": step_difference(device, reference, sizes["step_batch"], tf32=False),
                          "tf32": step_difference(device, reference, sizes["step_batch"], tf32=True)
                          if device.type == "cuda" else None}

    def epoch(precision: str, channels_last: bool, compiled: bool) -> None:
        run = epoch_speed.ours_in_fresh_process(str(device), 1, n_timed, sizes["warmup_batches"], args.threads,
                                                precision=precision, channels_last=channels_last,
                                                compile=compiled, batch_size=sizes["batch_size"])
        report["epochs"][precision, channels_last, compiled] = run
        if compiled:
            estimates["compile"] = run["warmup_seconds"] + estimates["epoch"]

    def pack(k: int) -> None:
        report["packing"] += gpu_packing.measure([k], sizes["epochs"], data_dir=str(data_dir),
                                                 logical_gpus=args.cpu_dry_run, study_args=sizes["study_args"])

    units = [("step", "step", step)]
    units += [("epochs", f"epoch {p} channels_last {int(cl)}", partial(epoch, p, cl, False)) for p, cl in sizes["epoch_runs"]]
    units += [("packing", f"packing {k} per GPU", partial(pack, k)) for k in args.packings]
    units += [("compile", f"compiled epoch {p}", partial(epoch, p, True, True)) for p in COMPILE_RUNS]
    for stage, name, measure in units:
        if stage in args.skip:
            continue
        elapsed = time.perf_counter() - start
        if elapsed + estimates[stage] > args.limit_s:
            report["skipped"].append(name)
            continue
        print(f"[{elapsed:5.0f} s] {name}", flush=True)
        measure()
    report["seconds"] = time.perf_counter() - start
    return report


if __name__ == "__main__":
    sys.exit(main())
