"""Data sets, long-tailed subsets, validation/test splits, shifted test sets and the on-device loader.

Images live as uint8 NCHW tensors on the training device; `BatchLoader` draws every random number of
an epoch (order, crop, flip, rotation, mixup) from one seeded NumPy generator and augments whole
batches with a single gather, so a run is a pure function of its config and seed, and the loader's
state is one small dict that a checkpoint can hold.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import Config, ConfigError
from .datasets import RawDataset, load


def load_raw(config: Config) -> RawDataset:
    return load(config.dataset, config.data_dir, config.download)


# --- long-tailed subsets and splits ------------------------------------------------------------
def long_tail_counts(n_max: int, num_classes: int, imb_factor: float) -> list[int]:
    """Images kept per class: n_max · f^(c/(C−1)) (the `exp` profile), truncated like the reference."""
    if num_classes == 1:
        return [int(n_max)]
    return [int(n_max * imb_factor ** (c / (num_classes - 1))) for c in range(num_classes)]


def long_tail_indices(labels: np.ndarray, counts: list[int], seed: int = 0) -> np.ndarray:
    """The reference rule: seed NumPy once, then per class (in order) shuffle its indices, keep the first k.
    A private RandomState(0) draws exactly what np.random.seed(0) + np.random.shuffle would."""
    rng = np.random.RandomState(seed)
    kept = []
    for cls, count in enumerate(counts):
        idx = np.where(labels == cls)[0]
        rng.shuffle(idx)
        kept.append(idx[:count])
    return np.concatenate(kept)


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a fixed `fraction` (rounded) goes to the first part. Returns (first, rest), sorted."""
    rng = np.random.RandomState(seed)
    first, rest = [], []
    for cls in np.unique(labels):
        idx = np.where(labels == cls)[0]
        rng.shuffle(idx)
        k = int(round(fraction * len(idx)))
        first.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(rest))


SHIFT_FACTORS = (50, 25, 10, 5, 2)


def shifted_test_indices(labels: np.ndarray, ratio: int, direction: str) -> np.ndarray:
    """Test-agnostic protocol: the exp profile at imbalance `ratio` applied to the test set, head-heavy
    ('forward') or tail-heavy ('backward'), with the same seed-0 rule as the training subset."""
    num_classes = int(labels.max()) + 1
    per_class = int(np.bincount(labels, minlength=num_classes).min())
    counts = long_tail_counts(per_class, num_classes, 1.0 / ratio)
    if direction == "backward":
        counts = counts[::-1]
    elif direction != "forward":
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    return long_tail_indices(labels, counts, seed=0)


@dataclass
class Split:
    images: torch.Tensor  # uint8 NCHW on the device
    labels: torch.Tensor  # int64 on the device
    indices: np.ndarray   # each sample's index in the original train or test set

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    """Everything the trainer needs: the long-tailed train set and three evaluation splits."""
    train: Split
    val: Split
    test: Split        # the reported test part (disjoint from val)
    test_full: Split   # the whole test set, for comparison with the paper
    class_counts: list[int]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def description(self) -> dict:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test),
                "test_full": len(self.test_full), "classes": self.num_classes}


def _to_split(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, device: torch.device) -> Split:
    """The samples `indices` of a whole set, on the device."""
    nchw = torch.from_numpy(np.ascontiguousarray(images[indices].transpose(0, 3, 1, 2)))
    labels = torch.from_numpy(np.asarray(labels[indices], dtype=np.int64))
    return Split(nchw.to(device), labels.to(device), np.asarray(indices, dtype=np.int64))


def build_data(config: Config, device: torch.device | str = "cpu", raw: RawDataset | None = None) -> DataBundle:
    raw = raw or load_raw(config)
    device = torch.device(device)
    n_max = len(raw.train_labels) // raw.num_classes
    counts = long_tail_counts(n_max, raw.num_classes, config.imb_factor)
    if min(counts) < 1:
        empty = [c for c, n in enumerate(counts) if n < 1]
        raise ConfigError(f"imb_factor: {config.imb_factor:g} leaves class(es) {empty[:5]}{'…' if len(empty) > 5 else ''} "
                          f"without a training image ({n_max} in the largest class); the smallest usable here is "
                          f"{1 / n_max:.3g} (got {config.imb_factor!r})")
    keep = long_tail_indices(raw.train_labels, counts, seed=0)
    val_idx, test_idx = stratified_split(raw.test_labels, config.val_fraction, seed=0)
    per_class = int(np.bincount(raw.test_labels, minlength=raw.num_classes).min())
    held_out = int(round(config.val_fraction * per_class))
    if not 0 < held_out < per_class:
        raise ConfigError(f"val_fraction: {config.val_fraction:g} of {per_class} test images per class leaves "
                          f"{'no validation' if held_out == 0 else 'no test'} image in some class; choose a share "
                          f"between {1 / per_class:.3g} and {1 - 1 / per_class:.3g} (got {config.val_fraction!r})")
    return DataBundle(
        train=_to_split(raw.train_images, raw.train_labels, keep, device),
        val=_to_split(raw.test_images, raw.test_labels, val_idx, device),
        test=_to_split(raw.test_images, raw.test_labels, test_idx, device),
        test_full=_to_split(raw.test_images, raw.test_labels, np.arange(len(raw.test_labels)), device),
        class_counts=counts, num_classes=raw.num_classes, mean=raw.mean, std=raw.std)


# --- the on-device loader ------------------------------------------------------------------------
class Normalise:
    """uint8 NCHW → normalised float, on the images' device."""

    def __init__(self, mean, std, device, channels_last: bool = False):
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, -1, 1, 1)
        self.shift = (-torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, -1, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = torch.addcmul(self.shift, images.float(), self.scale)
        return out.contiguous(memory_format=self.memory_format)


def augment(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, flip: torch.Tensor,
            angle: torch.Tensor) -> torch.Tensor:
    """Random crop (zero padding), horizontal flip and rotation (nearest, zero fill), in that order,
    as one gather. Each output pixel is traced back through the rotation (into the crop), the flip and
    the crop offset (into the source); pixels that leave the crop or the source become zero, exactly
    as the sequential transforms would."""
    b, c, h, w = images.shape
    dev = images.device
    ys = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1) - (h - 1) / 2
    xs = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w) - (w - 1) / 2
    cos, sin = torch.cos(angle).view(b, 1, 1), torch.sin(angle).view(b, 1, 1)
    u = torch.round(cos * xs - sin * ys + (w - 1) / 2).long()    # column in the flipped crop
    v = torch.round(sin * xs + cos * ys + (h - 1) / 2).long()    # row in the flipped crop
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u = torch.where(flip.view(b, 1, 1), w - 1 - u, u)            # undo the flip
    src_x, src_y = u + dx.view(b, 1, 1), v + dy.view(b, 1, 1)     # undo the crop
    inside &= (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    index = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    out = torch.gather(images.reshape(b, c, h * w), 2, index) * inside.view(b, 1, h * w)
    return out.view(b, c, h, w)


@dataclass
class Batch:
    inputs: torch.Tensor   # normalised float, possibly mixed
    targets: torch.Tensor
    mix_targets: torch.Tensor  # targets of the mixing partners (== targets without mixup)
    lam: float             # weight of `targets`; 1.0 without mixup


class BatchLoader:
    """Shuffled, augmented, mixed-up training batches from an on-device uint8 split.

    All randomness of an epoch is drawn up front from `self.rng` (NumPy PCG64), so `state_dict()` taken
    between epochs resumes the exact same stream. The last partial batch is kept."""

    def __init__(self, split: Split, batch_size: int, normalise: Normalise, seed: int, mixup_alpha: float,
                 pad: int = 4, max_degrees: float = 15.0):
        self.split, self.batch_size, self.normalise = split, batch_size, normalise
        self.mixup_alpha, self.pad, self.max_radians = mixup_alpha, pad, math.radians(max_degrees)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def __iter__(self):
        n, bs, device = len(self.split), self.batch_size, self.split.labels.device
        order = self.rng.permutation(n)
        shifts = self.rng.integers(-self.pad, self.pad + 1, size=(2, n))
        flips = self.rng.random(n) < 0.5
        angles = self.rng.uniform(-self.max_radians, self.max_radians, size=n)
        plan = [torch.from_numpy(a).to(device, non_blocking=True) for a in (order, shifts[0], shifts[1], flips)]
        order_t, dx, dy, flip = plan
        angle = torch.from_numpy(angles.astype(np.float32)).to(device)
        for start in range(0, n, bs):
            sel = order_t[start:start + bs]
            images = augment(self.split.images[sel], dx[start:start + bs], dy[start:start + bs],
                             flip[start:start + bs], angle[start:start + bs])
            inputs, targets = self.normalise(images), self.split.labels[sel]
            if self.mixup_alpha > 0:
                lam = float(self.rng.beta(self.mixup_alpha, self.mixup_alpha))
                partner = torch.from_numpy(self.rng.permutation(len(sel))).to(device)
                inputs = lam * inputs + (1.0 - lam) * inputs[partner]
                yield Batch(inputs, targets, targets[partner], lam)
            else:
                yield Batch(inputs, targets, targets, 1.0)

    def state_dict(self) -> dict:
        return {"rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])


def eval_batches(split: Split, batch_size: int, normalise: Normalise):
    for start in range(0, len(split), batch_size):
        yield normalise(split.images[start:start + batch_size]), split.labels[start:start + batch_size]
