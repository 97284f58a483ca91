"""Training-epoch throughput: our pipeline (per precision, eager and compiled) vs a stock
torchvision/DataLoader pipeline vs a bare step.

Three measurements, in one run, on the same machine and device, with the canonical recipe
(CIFAR-100-LT at IR 100: 10,847 training images over 100 classes, ResNet-32 with 3 experts,
τ 0/1/2, mixup α 0.4, batch 128, SGD momentum 0.9 / Nesterov / wd 5e-4 at the recipe's first-epoch
LR 0.1 × 1/5; all three pipelines start from the same seeded model):

1. ours  — `balpoe.trainer.Trainer.train_epoch()` on an injected `DataBundle` (uint8 NCHW images on the
   device; `BatchLoader` augments each batch with one gather, normalises, mixes up; channels_last as the
   default config has it). The timer wraps the whole `train_epoch()` call. Measured once per
   `--precision` (fp32 always: the speedup line compares fp32 pipelines), and with `--compile` once
   more per precision with `torch.compile`, its warm-up (which compiles) reported apart. Each of these
   runs in a fresh process, so its peak memory is its own: peak allocated GPU memory on CUDA, the
   process's peak resident memory (Python, torch and the data set included) on a CPU.
2. stock — what the reference implementation does: a torch `Dataset` holding the same uint8 images as a
   NumPy HWC array, turned into PIL images per item and passed through torchvision's
   RandomCrop(32, padding=4), RandomHorizontalFlip(), RandomRotation(15), ToTensor(), Normalize(...);
   a `DataLoader` with 4 workers, batch 128, shuffle; batch-level mixup (λ ~ Beta(0.4, 0.4), one
   permutation); the same model (`build_model`) and loss (`ExpertLoss`); fp32, no channels_last.
3. bare step — forward + loss + backward + SGD step on one fixed, already normalised batch of 128,
   repeated (channels_last like ours): the ceiling for any input pipeline with this model.

The pixels are random (generated, not CIFAR itself): speed does not depend on their content, and the
benchmark runs without the data set. Each measurement excludes a short warm-up of a few batches (for
ours: a small `train_epoch()` over the warm-up batches; for stock: the first batches of the epoch,
which also hides the worker start-up; for the bare step: the first steps). CUDA is synchronised before
every timer read.

Run from the repository root:

    python benchmarks/epoch_speed.py                      # full epoch per pipeline (minutes on a CPU)
    python benchmarks/epoch_speed.py --max-images 2560    # a quick try: time 2,560 images each
    python benchmarks/epoch_speed.py --precision fp32 bf16 --compile
    python benchmarks/epoch_speed.py --device cuda
    python benchmarks/epoch_speed.py --threads 1          # CPU shared with other jobs: see --help

It prints the throughputs (images/s), bf16 ÷ fp32 and compiled ÷ eager when measured, ours ÷ bare as
a percentage, and as the last line `speedup X.XX` (ours ÷ stock, fp32 both).
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import resource
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from arguments import at_least, refuse  # noqa: E402
from balpoe.config import Config, ConfigError  # noqa: E402
from balpoe.data import DataBundle, Normalise, Split, long_tail_counts  # noqa: E402
from balpoe.datasets import CIFAR_NORMALISATION  # noqa: E402
from balpoe.losses import ExpertLoss  # noqa: E402
from balpoe.model import build_model  # noqa: E402
from balpoe.trainer import Trainer, cpu_has_bf16_kernels, lr_factor, resolve_device  # noqa: E402

NUM_CLASSES = 100
N_MAX = 500
IMB_FACTOR = 0.01
EVAL_IMAGES = 500  # val / test splits: only needed to build the bundle, never used here


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_pixels(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """CIFAR-100-LT-shaped data: uint8 NHWC images and int64 labels (rows shuffled, so any prefix mixes
    classes), and the per-class counts (10,847 images at IR 100)."""
    rng = np.random.default_rng(seed)
    counts = long_tail_counts(N_MAX, NUM_CLASSES, IMB_FACTOR)
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), counts)
    order = rng.permutation(len(labels))
    images = rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
    return images, labels[order], counts


def to_split(images_nhwc: np.ndarray, labels: np.ndarray, device: torch.device) -> Split:
    nchw = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    return Split(nchw.to(device), torch.from_numpy(labels).to(device), np.arange(len(labels)))


def head(split: Split, n: int) -> Split:
    return split if n >= len(split) else Split(split.images[:n], split.labels[:n], split.indices[:n])


# --- 1. ours -----------------------------------------------------------------------------------------
def time_ours(config: Config, images, labels, counts, device, n_timed: int, warmup_batches: int) -> dict:
    """One timed `train_epoch()` over `n_timed` images after a short warm-up epoch through the same
    code path (which is where `torch.compile` compiles)."""
    mean, std = CIFAR_NORMALISATION
    eval_split = to_split(images[:EVAL_IMAGES], labels[:EVAL_IMAGES], device)
    train = to_split(images, labels, device)
    bundle = DataBundle(train=train, val=eval_split, test=eval_split, test_full=eval_split,
                        class_counts=counts, num_classes=NUM_CLASSES, mean=mean, std=std)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(config, data=bundle)
    trainer.loader.split = head(train, warmup_batches * config.batch_size)
    start = time.perf_counter()
    trainer.train_epoch()
    sync(device)
    warmup_seconds = time.perf_counter() - start
    trainer.epoch = 0  # the timed call is the recipe's first epoch (warm-up LR), like the other two
    trainer.loader.split = head(train, n_timed)
    sync(device)
    start = time.perf_counter()
    metrics = trainer.train_epoch()
    sync(device)
    seconds = time.perf_counter() - start
    return {"images": len(trainer.loader.split), "seconds": seconds, "warmup_seconds": warmup_seconds,
            "loss": metrics["train_loss"], "peak_mb": peak_memory_mb(device)}


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory on CUDA; elsewhere the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def ours_in_fresh_process(device: str, seed: int, n_timed: int, warmup_batches: int, threads: int | None,
                          **recipe) -> dict:
    """`time_ours` for the canonical recipe with `recipe` overrides (precision, compile, channels_last),
    in a new process: no compiled code, allocator cache or memory peak carries over between runs."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_ours_child, device, seed, n_timed, warmup_batches, threads, recipe).result()


def _ours_child(device: str, seed: int, n_timed: int, warmup_batches: int, threads: int | None, recipe: dict) -> dict:
    warnings.filterwarnings("ignore", message="precision bf16: this CPU")  # the parent says it once
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    images, labels, counts = make_pixels()
    config = Config(device=device, seed=seed, **recipe)  # the canonical recipe otherwise
    return time_ours(config, images, labels, counts, torch.device(device), n_timed, warmup_batches)


# --- 2. stock ----------------------------------------------------------------------------------------
class StockDataset(torch.utils.data.Dataset):
    """Like torchvision's CIFAR100: a NumPy HWC uint8 array, a PIL image per item, then the transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def time_stock(config: Config, images, labels, counts, device, n_timed: int, warmup_batches: int,
               workers: int):
    from torchvision import transforms
    mean, std = CIFAR_NORMALISATION
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(15),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    loader = torch.utils.data.DataLoader(StockDataset(images, labels, transform), batch_size=config.batch_size,
                                         shuffle=True, num_workers=workers, drop_last=False,
                                         pin_memory=device.type == "cuda")
    model = build_model(config, NUM_CLASSES).to(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr * lr_factor(0, config), momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    criterion = ExpertLoss(config.tau_list, counts, device)
    alpha = config.mixup_alpha
    # the epoch's first `warmup_batches` batches are the warm-up; the timed part may then be short of
    # n_timed when the epoch ends (n_timed + warm-up > data set)
    seen, loss_total, start = 0, 0.0, time.perf_counter()
    for i, (inputs, targets) in enumerate(loader):
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        lam = float(np.random.beta(alpha, alpha))
        perm = torch.randperm(inputs.size(0), device=device)
        inputs = lam * inputs + (1 - lam) * inputs[perm]
        logits = model(inputs)
        loss, _ = criterion(logits, targets, targets[perm], lam)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_total += loss.item() * len(targets)   # the reference logs loss.item() every batch
        if i == warmup_batches - 1:
            sync(device)
            start, seen, loss_total = time.perf_counter(), 0, 0.0
        elif i >= warmup_batches:
            seen += len(targets)
            if seen >= n_timed:
                break
    sync(device)
    seconds = time.perf_counter() - start
    del loader
    return seen, seconds, loss_total / max(seen, 1)


# --- 3. bare step ------------------------------------------------------------------------------------
def time_bare(config: Config, images, labels, counts, device, steps: int, warmup_batches: int):
    mean, std = CIFAR_NORMALISATION
    bs = config.batch_size
    model = build_model(config, NUM_CLASSES).to(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr * lr_factor(0, config), momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    criterion = ExpertLoss(config.tau_list, counts, device)
    batch = to_split(images[:bs], labels[:bs], device)
    inputs = Normalise(mean, std, device, config.channels_last)(batch.images)
    targets = batch.labels
    mix_targets = targets[torch.randperm(bs, device=device)]
    lam = 0.7  # any λ < 1 makes the loss do the mixup work (two gathers)

    def step():
        logits = model(inputs)
        loss, _ = criterion(logits, targets, mix_targets, lam)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup_batches):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * bs, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Last line printed: 'speedup X.XX' (ours ÷ stock images/s, fp32 both).")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32"],
                        help="precisions of our pipeline to time, in the same run (fp32 always)")
    parser.add_argument("--compile", action="store_true",
                        help="also time our pipeline under torch.compile, per precision (its warm-up compiles, "
                             "minutes on a CPU, and is reported apart)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="time only this many images of the epoch per pipeline (default: the full epoch)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (the recipe's: 128)")
    parser.add_argument("--warmup-batches", type=int, default=3,
                        help="batches run before each timer starts (default 3)")
    parser.add_argument("--bare-steps", type=int, default=None,
                        help="timed steps of the bare step (default: as many batches as ours times)")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the stock pipeline")
    parser.add_argument("--seed", type=int, default=1, help="run seed (Config.seed) for all pipelines")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice, usually the core count). On a "
                             "machine busy with other jobs, 1 avoids OpenMP oversubscription, which can slow "
                             "every op by a scheduler time slice")
    args = parser.parse_args(argv)
    at_least(1, max_images=args.max_images, batch_size=args.batch_size, warmup_batches=args.warmup_batches,
             bare_steps=args.bare_steps, threads=args.threads)
    at_least(0, workers=args.workers, seed=args.seed)
    try:
        device = resolve_device(args.device)
    except ConfigError as err:
        refuse("--device", str(err).removeprefix("device: ").split(" (got")[0], args.device)
    precisions = list(dict.fromkeys(["fp32", *args.precision]))

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # the recipe's 4 workers exceed a small machine's cores; torch warns about it on every epoch
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    config = Config(device=str(device), seed=args.seed, batch_size=args.batch_size)  # the recipe otherwise
    images, labels, counts = make_pixels()
    n_epoch = len(labels)
    n_timed = n_epoch if args.max_images is None else min(args.max_images, n_epoch)
    bare_steps = args.bare_steps or math.ceil(n_timed / config.batch_size)
    threads = torch.get_num_threads()
    print(f"device {device} | torch {torch.__version__} | {threads} intra-op threads | "
          f"{n_epoch} training images over {NUM_CLASSES} classes | timing {n_timed} images per pipeline | "
          f"warm-up {args.warmup_batches} batches", flush=True)
    if "bf16" in precisions and device.type == "cpu" and not cpu_has_bf16_kernels():
        print("note: this CPU has no bf16 instructions (avx512_bf16, AMX or AVX-512): torch runs bf16 "
              "convolutions on slow reference kernels", flush=True)

    memory = "peak GPU memory allocated" if device.type == "cuda" else "peak process memory (RSS)"
    ours = {}
    for compiled in (False, True) if args.compile else (False,):
        for precision in precisions:
            run = ours_in_fresh_process(str(device), args.seed, n_timed, args.warmup_batches, args.threads,
                                        precision=precision, compile=compiled, batch_size=args.batch_size)
            ours[precision, compiled] = run["images"] / run["seconds"]
            label = f"ours {precision}{' compiled' if compiled else ''}"
            print(f"{label:<19} Trainer.train_epoch(), on-device loader {ours[precision, compiled]:9.1f} images/s  "
                  f"({run['images']} images in {run['seconds']:.1f} s; loss {run['loss']:.3f}) | warm-up "
                  f"{'(compiling) ' if compiled else ''}{run['warmup_seconds']:.1f} s | {memory} "
                  f"{run['peak_mb']:.0f} MB", flush=True)
    for compiled in (False, True) if args.compile else (False,):
        for precision in precisions[1:]:
            print(f"{precision} / fp32{' (compiled)' if compiled else ''}: "
                  f"{ours[precision, compiled] / ours['fp32', compiled]:.2f}x")
    if args.compile:
        print("compiled / eager: " + ", ".join(f"{p} {ours[p, True] / ours[p, False]:.2f}x" for p in precisions))

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    n, secs, loss = time_stock(config, images, labels, counts, device, n_timed, args.warmup_batches, args.workers)
    stock = n / secs
    print(f"stock     DataLoader({args.workers} workers) + torchvision, fp32 {stock:9.1f} images/s  "
          f"({n} images in {secs:.1f} s; loss {loss:.3f})", flush=True)

    torch.manual_seed(args.seed)
    n, secs = time_bare(config, images, labels, counts, device, bare_steps, args.warmup_batches)
    bare = n / secs
    print(f"bare step fwd+bwd+SGD on one fixed batch, fp32   {bare:9.1f} images/s  "
          f"({n} images in {secs:.1f} s)", flush=True)

    print(f"ours fp32 / bare step: {100 * ours['fp32', False] / bare:.1f}%")
    print(f"speedup {ours['fp32', False] / stock:.2f}")


if __name__ == "__main__":
    main()
