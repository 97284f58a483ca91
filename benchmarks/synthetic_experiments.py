"""Synthetic experiment folders, as a search on Ray Tune leaves them, for the reading benchmarks
(`results_load.py`, `page_load.py`): `study.json` through the toolkit's own model, and per trial a
`params.json` and one `result.json` row per epoch with the metrics a real trial reports."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from balpoe.config import Config
from results.settings import StudySettings
from search_spaces import get_space, resolve_ranges

METRICS = ("lr", "train_loss", "train_loss_expert0", "train_loss_expert1", "train_loss_expert2", "train_acc",
           "train_seconds", "train_images_per_s", "val_acc", "val_balanced_acc", "val_nll", "val_ece", "val_mce",
           "val_many_acc", "val_medium_acc", "val_few_acc", "val_expert0_acc", "val_expert1_acc", "val_expert2_acc",
           "best_val_balanced_acc", "epoch_seconds", "peak_memory_mb", "time_this_iter_s", "time_total_s")
TEST = ("test_acc", "test_balanced_acc", "test_nll", "test_ece", "test_mce", "test_many_acc", "test_medium_acc",
        "test_few_acc", "test_full_acc", "test_full_balanced_acc", "test_full_ece", "test_full_mce")


def write_experiment(folder: Path, trials: int, epochs: int, seed: int = 0, last_running: bool = False,
                     kind: str = "search") -> None:
    """A search of `trials` trials × `epochs` epochs (or a baseline: one trial per seed); with
    `last_running`, the last trial is halfway."""
    rng = np.random.default_rng(seed)
    recipe = Config().replace(epochs=epochs)  # the recipe's schedule, rescaled to `epochs`
    base = recipe.to_dict()
    folder.mkdir(parents=True)
    study = {"seeds": tuple(range(1, trials + 1))} if kind == "baseline" else \
        {"space": "alpha_tau", "ranges": resolve_ranges(get_space("alpha_tau")), "num_samples": trials,
         "startup_trials": 1}
    StudySettings(kind=kind, name=folder.name, storage_path=str(folder.parent), base=recipe, asha=False,
                  max_t=epochs, versions={"toolkit": "0.1.0"}, **study).save(folder)
    for t in range(trials):
        trial = folder / f"trial_{t:08x}"
        trial.mkdir()
        params = {"base": base, "space": "alpha_tau", "mixup_alpha": float(rng.uniform(0, 1)),
                  "tau_spread": float(rng.uniform(0, 1.5)), "checkpoint_every": 10, "threads": 1}
        (trial / "params.json").write_text(json.dumps(params))
        reported = max(1, epochs // 2) if last_running and t == trials - 1 else epochs
        with open(trial / "result.json", "w") as handle:
            for epoch in range(1, reported + 1):
                row = {"epoch": epoch, **{k: float(rng.random()) for k in METRICS}, "device": "cuda:0",
                       "gpu_ids": "0", "tau_list": "0;1;2", "mixup_alpha": params["mixup_alpha"], "num_experts": 3,
                       "seed": t + 1 if kind == "baseline" else 1, "precision": "fp32", "planned_epochs": epochs,
                       "stop_epoch": epochs,
                       "trial_id": f"{t:08x}", "training_iteration": epoch, "timestamp": 1795651132 + epoch,
                       "hostname": "node", "node_ip": "10.0.0.1", "config": params, "done": epoch == epochs}
                if epoch == epochs:
                    row.update({k: float(rng.random()) for k in TEST})
                handle.write(json.dumps(row) + "\n")
