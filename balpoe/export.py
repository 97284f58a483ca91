"""Per-expert logits for a downstream stage (e.g. a plug-in or rejection optimiser trained on the
experts' predictions), readable with NumPy alone.

Layout of an export folder:

    manifest.json      format, version, splits (file, samples, shape, source set), classes (order and
                       names), tau_list, train_class_counts, the split rule, the config, the checkpoint
                       and its SHA-256
    <split>.npz        logits   float32 (samples, experts, classes)   raw per-expert logits
                       labels   int64   (samples,)
                       indices  int64   (samples,)   index of each sample in the original train or test
                                                     set (train: unaugmented, in the subset's order)

Only an earlier export's own files are ever replaced or removed: a `manifest.json` whose "format" is
"balpoe-logits" and `<split>.npz` archives of exactly logits, labels and indices; a folder holding any
other file of those names is refused before anything is computed (`check_export_folder`).

The ensemble's prediction is `logits.mean(axis=1).argmax(axis=1)`; expert e's logits corrected to the
uniform prior are `logits[:, e] + (tau_list[e] - 1) * log(train_class_counts / sum)`.
"""
from __future__ import annotations

import hashlib
import os
import time
import zipfile
from pathlib import Path

import numpy as np

from .checkpoint import write_json
from .config import ConfigError
from .files import atomic_write, publish_folder, read_small_json
from .datasets import class_names
from .progress import BatchProgress, format_duration

FORMAT, VERSION = "balpoe-logits", 1
MANIFEST = "manifest.json"
SOURCES = {"train": "train set (long-tailed subset)", "val": "test set (validation part)",
           "test": "test set (reported part)", "test_full": "test set (whole)"}
TEST_SET_SPLITS = ("val", "test", "test_full")  # parts of the test set, and the whole
ARRAYS = ("logits", "labels", "indices")  # what each <split>.npz holds, and nothing else


def written_by_export(path: Path) -> bool:
    """Whether `path` is a file an export writes: our manifest, or a split archive of exactly ARRAYS."""
    if path.name == MANIFEST:
        record = read_small_json(path)
        return isinstance(record, dict) and record.get("format") == FORMAT
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return sorted(archive.namelist()) == sorted(f"{name}.npy" for name in ARRAYS)
    except (OSError, zipfile.BadZipFile):
        return False


def check_export_folder(folder: str | Path) -> None:
    """Refuse a folder holding a file an export would replace or remove but did not write."""
    folder = Path(folder)
    names = (MANIFEST, *(f"{split}.npz" for split in SOURCES))
    foreign = [name for name in names if os.path.lexists(folder / name) and not written_by_export(folder / name)]
    if foreign:
        raise ConfigError(f"--output: {folder} holds {', '.join(foreign)}, not written by an export; they are left "
                          f"as they are: choose another --output, or move them")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _savez(path: Path, arrays: dict) -> None:
    with path.open("wb") as handle:  # a handle: np.savez would add ".npz" to the temporary name
        np.savez(handle, **arrays)


def export_logits(trainer, checkpoint: str | Path, output: str | Path, splits, log=print, callbacks=None,
                  checkpoint_name: str | None = None) -> Path:
    """Write one `.npz` per split and `manifest.json` into `output`; returns the manifest's path.
    Each file is written whole or not at all, and the manifest last: a folder without one is an
    export that was cut short. Over an earlier export (a folder with a manifest) the new one is written
    beside it and moved in only when complete, so a cut-short export leaves the earlier one whole.
    Prints one line per split as it is done, with the time left at the pace so far. `callbacks` get
    `on_batch_end(trainer, split, done, total)` while a split is predicted (default: a `BatchProgress`
    on stderr, which shows per-batch progress on a terminal; pass () for none). `checkpoint_name` is what
    the manifest names as the checkpoint when `checkpoint` is a local copy of it (one in an object store)."""
    callbacks = [BatchProgress()] if callbacks is None else list(callbacks)
    folder = Path(output)
    check_export_folder(folder)
    config = trainer.config
    sizes = {split: len(getattr(trainer.data, split)) for split in splits}  # images forwarded for each
    shared_pass = "test_full" in splits and [split for split in splits if split in TEST_SET_SPLITS]
    if shared_pass:  # the first of them forwards the whole test set, the others none
        sizes.update({split: 0 for split in shared_pass} | {shared_pass[0]: len(trainer.data.test_full)})
    manifest = {
        "format": FORMAT, "version": VERSION, "checkpoint": checkpoint_name or str(Path(checkpoint).resolve()),
        "checkpoint_sha256": sha256(checkpoint), "epoch": trainer.epoch, "splits": {},
        "num_classes": trainer.data.num_classes, "class_order": list(range(trainer.data.num_classes)),
        "class_names": class_names(config.dataset, config.data_dir), "tau_list": list(config.tau_list),
        "train_class_counts": list(trainer.data.class_counts),
        "split_rule": {"validation": "stratified share of each test class", "val_fraction": config.val_fraction,
                       "val_seed": 0, "train_subset": "exp profile", "imb_factor": config.imb_factor,
                       "train_subset_seed": 0},
        "config": config.to_dict(),
    }
    start, done = time.perf_counter(), 0

    test_set = {}  # with test_full asked for, val and test come from its pass (the test set holds them)

    def predicted(split: str):
        if shared_pass and split in TEST_SET_SPLITS:
            if not test_set:
                test_set.update(trainer.predict_test_set(callbacks))
            return test_set[split]
        return trainer.predict(split, callbacks=callbacks)

    def write(target: Path) -> None:
        nonlocal done
        for split in splits:
            logits, labels = predicted(split)
            arrays = {"logits": logits.numpy().astype(np.float32), "labels": labels.numpy().astype(np.int64),
                      "indices": getattr(trainer.data, split).indices}
            atomic_write(target / f"{split}.npz", lambda tmp: _savez(tmp, arrays))
            manifest["splits"][split] = {"file": f"{split}.npz", "samples": len(labels),
                                         "logits_shape": list(logits.shape), "source": SOURCES[split]}
            done += sizes[split]
            elapsed = time.perf_counter() - start
            left = elapsed / done * (sum(sizes.values()) - done)
            log(f"{split:>10}: logits {tuple(logits.shape)}  [{format_duration(elapsed)} elapsed, "
                f"{format_duration(left)} left]")
        write_json(target / MANIFEST, manifest)

    if (folder / MANIFEST).exists():  # an earlier export: keep it whole until the new one is
        publish_folder(folder, write, last=MANIFEST, stale=[f"{split}.npz" for split in SOURCES])
    else:
        folder.mkdir(parents=True, exist_ok=True)
        write(folder)
    log(f"logits written to {folder}/ ({', '.join(f'{s}.npz' for s in splits)}, {MANIFEST})")
    return folder / MANIFEST
