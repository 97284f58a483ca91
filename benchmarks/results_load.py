"""How fast a large experiment is read: `results.load_experiment` cold (files parsed) and warm (result
rows from the modification-time cache, tables rebuilt), and what the live results page's replica does
per request — the trials JSON, and the experiment page once its figures are drawn (first view) and
after (later views of an unchanged experiment).

It writes a synthetic experiment of T trials × E epochs: every trial folder holds a `params.json` and a
`result.json` whose rows have the keys and value types of a real BalPoE trial's reports (3 experts),
plus `study.json` — the same files a real study leaves, so the reader does the same work.

    python benchmarks/results_load.py                        # 100 trials × 200 epochs
    python benchmarks/results_load.py --trials 20 --epochs 50 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from arguments import at_least  # noqa: E402
from balpoe.config import Config  # noqa: E402
from results import load_experiment  # noqa: E402
from results.settings import StudySettings  # noqa: E402
from search_spaces import get_space, resolve_ranges  # noqa: E402
from results.app import ResultsSite  # noqa: E402

METRICS = ("lr", "train_loss", "train_loss_expert0", "train_loss_expert1", "train_loss_expert2", "train_acc",
           "train_seconds", "train_images_per_s", "val_acc", "val_balanced_acc", "val_nll", "val_ece", "val_mce",
           "val_many_acc", "val_medium_acc", "val_few_acc", "val_expert0_acc", "val_expert1_acc", "val_expert2_acc",
           "best_val_balanced_acc", "epoch_seconds", "peak_memory_mb", "time_this_iter_s", "time_total_s")
TEST = ("test_acc", "test_balanced_acc", "test_nll", "test_ece", "test_mce", "test_many_acc", "test_medium_acc",
        "test_few_acc", "test_full_acc", "test_full_balanced_acc", "test_full_ece", "test_full_mce")


def write_experiment(folder: Path, trials: int, epochs: int) -> None:
    rng = np.random.default_rng(0)
    recipe = Config().replace(epochs=epochs)  # the recipe's schedule, rescaled to `epochs`
    base = recipe.to_dict()
    folder.mkdir(parents=True)
    StudySettings(kind="search", name=folder.name, storage_path=str(folder.parent), base=recipe, space="alpha_tau",
                  ranges=resolve_ranges(get_space("alpha_tau")), num_samples=trials, startup_trials=1, asha=False,
                  max_t=epochs).save(folder)
    for t in range(trials):
        trial = folder / f"trial_{t:08x}"
        trial.mkdir()
        params = {"base": base, "space": "alpha_tau", "mixup_alpha": float(rng.uniform(0, 1)),
                  "tau_spread": float(rng.uniform(0, 1.5)), "checkpoint_every": 10, "threads": 1}
        (trial / "params.json").write_text(json.dumps(params))
        with open(trial / "result.json", "w") as handle:
            for epoch in range(1, epochs + 1):
                row = {"epoch": epoch, **{k: float(rng.random()) for k in METRICS}, "device": "cuda:0",
                       "gpu_ids": "0", "tau_list": "0;1;2", "mixup_alpha": params["mixup_alpha"], "num_experts": 3,
                       "seed": 1, "planned_epochs": epochs, "trial_id": f"{t:08x}", "training_iteration": epoch,
                       "timestamp": 1795651132 + epoch, "hostname": "node", "node_ip": "10.0.0.1",
                       "config": params, "done": epoch == epochs}
                if epoch == epochs:
                    row.update({k: float(rng.random()) for k in TEST})
                handle.write(json.dumps(row) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="warm reads to time")
    args = parser.parse_args(argv)
    at_least(1, trials=args.trials, epochs=args.epochs, repeats=args.repeats)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "big-search"
        write_experiment(folder, args.trials, args.epochs)
        size_mb = sum(p.stat().st_size for p in folder.rglob("*")) / 2**20
        start = time.perf_counter()
        exp = load_experiment(folder)
        cold = time.perf_counter() - start
        warm = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            load_experiment(folder)
            warm.append(time.perf_counter() - start)
        site = ResultsSite(scratch)
        trials_json = lambda: site.experiment("big-search").sorted_trials().to_json(  # noqa: E731
            orient="records", date_format="iso")
        timed = {"trials JSON": trials_json,
                 "page, first view (draws figures)": lambda: site.experiment_html("big-search")}
        page = {name: _seconds(call) for name, call in timed.items()}
        page["page, later view"] = statistics.median(_seconds(lambda: site.experiment_html("big-search"))
                                                     for _ in range(args.repeats))
    print(f"{args.trials} trials × {args.epochs} epochs ({size_mb:.0f} MB of result files): "
          f"{len(exp.trials)} trial rows, {len(exp.epochs)} epoch rows")
    print(f"cold load {cold:.2f} s, warm load {statistics.median(warm):.2f} s (median of {args.repeats})")
    for name, seconds in page.items():
        print(f"results page: {name} {seconds:.2f} s")


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
