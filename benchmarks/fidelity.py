"""Ground truth for ASHA's fidelity on the recipe's step schedule: trunk rungs against cool-down rungs.

Trains configurations of the `alpha_tau` space (the paper point plus a scrambled Halton sample of the
space's ranges) to the end, with every seed asked, without Ray, on the recipe's schedule shape at
`--epochs` (warm-up 1/40, first step at 0.8, second at 0.9 of the budget). For every configuration
and seed it records the validation score after every epoch (the trunk fidelity: the score of the
moment) and, at every rung epoch in the trunk that a replay below needs, the score after a cool-down
forked from that state (`balpoe.cooldown`: `--cooldown-fraction` · r epochs at lr·γ then lr·γ²,
thrown away afterwards). The final score is the validation score at the last epoch (what a search
optimises; the test split is never read).

It prints, per fidelity and rung (1/10, 1/5 and 2/5 of the budget):
- Spearman's ρ between rung and final scores over the configurations (mean over seeds, with a
  bootstrap 90 % interval over configurations), top-3 overlap, and the regret of the configuration
  each would pick (best final score minus the final score of the rung's favourite);
- the noise ceiling: ρ between seed 1's and seed 2's final scores (no fidelity can beat it);
- an offline replay of ASHA (Ray's asynchronous rule, trials arriving in sample order, reduction factor
  2 and 3, first rung at each recorded rung): the compute it spends as a fraction of running every
  trial to the end (cool-down epochs counted), and the final score of the winner it keeps.

The recorded scores go to `--csv` (the replay and the figures can be re-made from it with
`--from-csv`), and `--figure` draws ρ against compute fraction for both fidelities with the ceiling.

    python benchmarks/fidelity.py --epochs 20 --train-per-class 100 --workers 2 --csv fid.csv --figure fid.png  # CPU
    python benchmarks/fidelity.py --dataset cifar100-lt --epochs 200 --device cuda --csv fid.csv     # GPU, full size
    python benchmarks/fidelity.py --from-csv docs/figures/fidelity-fmnist-lt-e20.csv --figure fid.png

`--train-per-class N` keeps the first N training images of each class before the long-tailed subset is
drawn (so the largest class has N), to fit a CPU; the validation and test splits stay whole.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from arguments import at_least, refuse  # noqa: E402
from balpoe.config import Config, ConfigError  # noqa: E402
from results.settings import asha_rungs  # noqa: E402
from results.stats import spearman  # noqa: E402
from search_spaces import get_space, resolve_ranges  # noqa: E402

SPACE = "alpha_tau"
REPLAY_FACTORS = (2, 3)
RUNG_SHARES = (0.1, 0.2, 0.4)  # the rungs the tables report, as shares of the budget
FIDELITIES = ("trunk", "cooled")
BOOTSTRAP = 1000


# --- what to train ---------------------------------------------------------------------------------
def sample_points(count: int) -> list[dict]:
    """The paper point first, then a scrambled Halton sample (seed 0) of the space's ranges."""
    from scipy.stats import qmc
    space = get_space(SPACE)
    ranges = resolve_ranges(space, None)
    names = list(space.PARAMS)
    low, high = [ranges[n][0] for n in names], [ranges[n][1] for n in names]
    unit = qmc.Halton(d=len(names), scramble=True, seed=0).random(count - 1)
    points = [dict(space.PAPER_POINT)]
    points += [dict(zip(names, map(float, row))) for row in qmc.scale(unit, low, high)]
    return points


def schedule(epochs: int) -> dict:
    """The recipe's shape (5/160/180 of 200) at another budget."""
    return {"epochs": epochs, "warmup_epochs": max(1, round(epochs / 40)),
            "step1": round(0.8 * epochs), "step2": round(0.9 * epochs)}


def rung_epochs(epochs: int) -> list[int]:
    return sorted({max(1, round(share * epochs)) for share in RUNG_SHARES})


def cooled_rungs(epochs: int, step1: int) -> list[int]:
    """Every trunk milestone of every replayed ASHA (first rung at a recorded rung, each factor)."""
    milestones = {m for first in rung_epochs(epochs) for rf in REPLAY_FACTORS for m in asha_rungs(first, rf, epochs)}
    return sorted(m for m in milestones if m < step1)


def recipe(args, point: dict, seed: int) -> Config:
    overrides = get_space(SPACE).to_overrides(point, 3)
    imbalance = {} if args.imb_factor is None else {"imb_factor": args.imb_factor}
    return Config(dataset=args.dataset, data_dir=str(args.data_dir), download=False, device=args.device,
                  precision=args.precision, seed=seed, **imbalance, **schedule(args.epochs), **overrides)


def capped(raw, per_class: int | None):
    """The first `per_class` training images of each class (all when None)."""
    if per_class is None:
        return raw
    keep = np.sort(np.concatenate([np.flatnonzero(raw.train_labels == c)[:per_class]
                                   for c in range(raw.num_classes)]))
    return replace(raw, train_images=raw.train_images[keep], train_labels=raw.train_labels[keep])


# --- training (one process per worker) --------------------------------------------------------------
def train_runs(args, jobs: list[tuple[int, dict, int]]) -> list[dict]:
    """Rows (one per configuration, seed and epoch) for `jobs` of (configuration index, point, seed)."""
    import torch
    from balpoe.cooldown import cooldown_epochs, cooled_metrics
    from balpoe.data import build_data, load_raw
    from balpoe.trainer import MONITOR, Trainer, resolve_device

    torch.set_num_threads(args.threads)
    first = recipe(args, jobs[0][1], jobs[0][2])
    data = build_data(first, resolve_device(first.device), capped(load_raw(first), args.train_per_class))
    cool_at = set(cooled_rungs(first.epochs, first.step1))
    fraction = args.cooldown_fraction if args.cooldown_fraction is not None else \
        (first.epochs - first.step1) / first.step1
    rows = []
    for index, point, seed in jobs:
        config = recipe(args, point, seed)
        trainer = Trainer(config, data=data)
        started = time.perf_counter()
        while not trainer.finished:
            metrics = trainer.run_epoch()
            row = {"config": index, **point, "seed": seed, "epoch": trainer.epoch, "trunk": metrics[MONITOR],
                   "epoch_seconds": metrics["epoch_seconds"], "cooled": math.nan, "cooldown_epochs": 0,
                   "cooldown_seconds": 0.0}
            if trainer.epoch in cool_at:
                cooled = cooled_metrics(trainer, cooldown_epochs(trainer.epoch, fraction))
                row.update(cooled=cooled["cooled_" + MONITOR], cooldown_epochs=cooled["cooldown_epochs"],
                           cooldown_seconds=cooled["cooldown_seconds"])
            rows.append(row)
        print(f"  config {index} seed {seed}: final {rows[-1]['trunk']:.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


def record(args) -> pd.DataFrame:
    jobs = [(i, point, seed) for i, point in enumerate(sample_points(args.configs)) for seed in args.seeds]
    print(f"training {args.configs} configurations x {len(args.seeds)} seeds to epoch {args.epochs} "
          f"({args.dataset}, {args.precision}, {args.workers} worker(s) x {args.threads} thread(s))", flush=True)
    if args.workers == 1:
        return pd.DataFrame(train_runs(args, jobs))
    shares = [jobs[w::args.workers] for w in range(args.workers)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
        parts = list(pool.map(train_runs, [args] * len(shares), shares))
    return pd.DataFrame([row for part in parts for row in part]).sort_values(["config", "seed", "epoch"])


# --- the analysis: plain functions over the recorded rows -------------------------------------------
def rung_score(curve: pd.DataFrame, epoch: int, fidelity: str) -> float:
    """A configuration-seed's score at a rung: the trunk's, or the cooled one where it was recorded."""
    row = curve.loc[curve["epoch"] == epoch].iloc[0]
    return float(row["cooled"]) if fidelity == "cooled" and not math.isnan(row["cooled"]) else float(row["trunk"])


def scores_at(rows: pd.DataFrame, epoch: int, fidelity: str) -> pd.DataFrame:
    """configuration × seed tables of the rung score and the final score."""
    last = rows["epoch"].max()
    out = []
    for (config, seed), curve in rows.groupby(["config", "seed"]):
        out.append({"config": config, "seed": seed, "rung": rung_score(curve, epoch, fidelity),
                    "final": float(curve.loc[curve["epoch"] == last, "trunk"].iloc[0])})
    return pd.DataFrame(out)


def mean_rho(table: pd.DataFrame, configs=None) -> float:
    values = []
    for _, per_seed in table.groupby("seed"):
        per_seed = per_seed.set_index("config")
        if configs is not None:
            per_seed = per_seed.loc[configs]
        values.append(spearman(per_seed["rung"], per_seed["final"]))
    values = [v for v in values if not math.isnan(v)]  # a seed whose scores are all tied ranks nothing
    return float(np.mean(values)) if values else math.nan


def bootstrap_interval(statistic, configs: np.ndarray, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.choice(configs, size=len(configs), replace=True)) for _ in range(BOOTSTRAP)]
    return tuple(float(q) for q in np.nanpercentile(draws, [5, 95]))


def top_overlap_and_regret(table: pd.DataFrame, k: int = 3) -> tuple[float, float]:
    overlaps, regrets = [], []
    for _, per_seed in table.groupby("seed"):
        by_rung, by_final = per_seed.nlargest(k, "rung"), per_seed.nlargest(k, "final")
        overlaps.append(len(set(by_rung["config"]) & set(by_final["config"])))
        regrets.append(per_seed["final"].max() - float(by_rung["final"].iloc[0]))
    return float(np.mean(overlaps)), float(np.mean(regrets))


def noise_ceiling(rows: pd.DataFrame) -> tuple[float, tuple[float, float]]:
    """ρ between the first two seeds' final scores over the same configurations (NaN with one seed)."""
    seeds = sorted(rows["seed"].unique())
    if len(seeds) < 2:
        return math.nan, (math.nan, math.nan)
    last = rows[rows["epoch"] == rows["epoch"].max()]
    finals = last.pivot(index="config", columns="seed", values="trunk")[seeds[:2]]
    rho = spearman(finals[seeds[0]], finals[seeds[1]])
    interval = bootstrap_interval(lambda c: spearman(finals.loc[c, seeds[0]], finals.loc[c, seeds[1]]),
                                  finals.index.to_numpy())
    return rho, interval


def rung_table(rows: pd.DataFrame) -> pd.DataFrame:
    epochs = int(rows["epoch"].max())
    table = []
    for fidelity in FIDELITIES:
        for rung in rung_epochs(epochs):
            scores = scores_at(rows, rung, fidelity)
            configs = scores["config"].unique()
            low, high = bootstrap_interval(lambda c: mean_rho(scores, c), configs)
            overlap, regret = top_overlap_and_regret(scores)
            cool = rows.loc[rows["epoch"] == rung, "cooldown_epochs"].max() if fidelity == "cooled" else 0
            table.append({"fidelity": fidelity, "rung_epoch": rung, "compute": (rung + cool) / epochs,
                          "spearman": mean_rho(scores), "ci_low": low, "ci_high": high,
                          "top3_overlap": overlap, "regret": regret})
    return pd.DataFrame(table)


def replay_asha(rows: pd.DataFrame, fidelity: str, first_rung: int, factor: int) -> dict:
    """Ray's asynchronous successive halving (one bracket, trials in sample order, one at a time): at
    each milestone a trial is stopped when its score is below the (1 − 1/rf) percentile of the scores
    recorded there before it. Per seed: the compute fraction and the final score of the best trial
    that ran to the end; averaged over seeds."""
    epochs = int(rows["epoch"].max())
    milestones = [m for m in asha_rungs(first_rung, factor, epochs) if m < epochs]
    fractions, winners, regrets = [], [], []
    for _, per_seed in rows.groupby("seed"):
        recorded = {m: [] for m in milestones}
        spent, survivors = 0, {}
        curves = dict(list(per_seed.groupby("config")))
        for config in sorted(curves):
            curve, stopped = curves[config], False
            for milestone in milestones:
                score = rung_score(curve, milestone, fidelity)
                if fidelity == "cooled":
                    spent += int(curve.loc[curve["epoch"] == milestone, "cooldown_epochs"].iloc[0])
                seen = recorded[milestone]
                cutoff = np.nanpercentile(seen, (1 - 1 / factor) * 100) if seen else None
                seen.append(score)
                if cutoff is not None and score < cutoff:
                    spent += milestone
                    stopped = True
                    break
            if not stopped:
                spent += epochs
                survivors[config] = float(curve.loc[curve["epoch"] == epochs, "trunk"].iloc[0])
        best_final = per_seed.loc[per_seed["epoch"] == epochs, "trunk"].max()
        fractions.append(spent / (len(curves) * epochs))
        winners.append(max(survivors.values()))
        regrets.append(best_final - max(survivors.values()))
    return {"fidelity": fidelity, "reduction_factor": factor, "first_rung": first_rung,
            "compute": float(np.mean(fractions)), "winner_final": float(np.mean(winners)),
            "regret": float(np.mean(regrets))}


def replay_table(rows: pd.DataFrame) -> pd.DataFrame:
    epochs = int(rows["epoch"].max())
    return pd.DataFrame([replay_asha(rows, fidelity, first, factor) for fidelity in FIDELITIES
                         for factor in REPLAY_FACTORS for first in rung_epochs(epochs)])


def draw(rungs: pd.DataFrame, ceiling: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    for fidelity, marker in zip(FIDELITIES, "os"):
        part = rungs[rungs["fidelity"] == fidelity]
        axes.errorbar(part["compute"], part["spearman"], yerr=[part["spearman"] - part["ci_low"],
                      part["ci_high"] - part["spearman"]], marker=marker, capsize=3, label=f"{fidelity} rungs")
    if not math.isnan(ceiling):
        axes.axhline(ceiling, color="grey", linestyle="--", label="noise ceiling (seed vs seed)")
    axes.set_xlabel("compute to score the rung (fraction of a full trial)")
    axes.set_ylabel("Spearman's ρ with the final score")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def report(rows: pd.DataFrame, figure: Path | None) -> None:
    ceiling, (low, high) = noise_ceiling(rows)
    print(f"configurations {rows['config'].nunique()}, seeds {sorted(map(int, rows['seed'].unique()))}, "
          f"epochs {int(rows['epoch'].max())}")
    print(f"noise ceiling (final scores, seed vs seed): rho {ceiling:.3f} [90 % {low:.3f}, {high:.3f}]")
    rungs = rung_table(rows)
    print("\nper rung (rho: mean over seeds, 90 % bootstrap interval over configurations)")
    print(rungs.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nASHA replayed over the recorded curves (mean over seeds)")
    print(replay_table(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if figure:
        draw(rungs, ceiling, figure)
        print(f"\nfigure: {figure}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist-lt")
    parser.add_argument("--data-dir", type=Path, default=Path("data").resolve())
    parser.add_argument("--epochs", type=int, default=20, help="the budget, on the recipe's schedule shape")
    parser.add_argument("--configs", type=int, default=12, help="configurations: the paper point + a Halton sample")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--imb-factor", type=float, help="the data set's imbalance (default: the recipe's 0.01)")
    parser.add_argument("--train-per-class", type=int, help="keep the first N training images of each class")
    parser.add_argument("--cooldown-fraction", type=float, help="cool-down epochs per rung epoch "
                        "(default: the recipe's (epochs - step1) / step1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--workers", type=int, default=1, help="training processes side by side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--csv", type=Path, help="write the recorded scores here")
    parser.add_argument("--from-csv", type=Path, help="analyse scores recorded earlier; train nothing")
    parser.add_argument("--figure", type=Path, help="write rho against compute here (PNG)")
    args = parser.parse_args(argv)
    at_least(1, workers=args.workers, threads=args.threads, train_per_class=args.train_per_class)
    at_least(3, configs=args.configs)
    at_least(10, epochs=args.epochs)
    if args.cooldown_fraction is not None and not args.cooldown_fraction > 0:
        refuse("--cooldown-fraction", "must be > 0", args.cooldown_fraction)
    if args.from_csv:
        if not args.from_csv.is_file():
            refuse("--from-csv", "no such file", str(args.from_csv))
        report(pd.read_csv(args.from_csv), args.figure)
        return
    from balpoe.data import build_data, load_raw
    from balpoe.datasets import DataError
    from balpoe.trainer import resolve_device
    try:  # a missing data set, or a class left without images, is named here, not in every worker
        first = recipe(args, sample_points(args.configs)[0], args.seeds[0])
        if args.train_per_class is not None and args.train_per_class * first.imb_factor < 1:
            refuse("--train-per-class", f"the imbalance factor {first.imb_factor:g} needs at least "
                   f"{math.ceil(1 / first.imb_factor)} for the smallest class to keep an image", args.train_per_class)
        build_data(first, resolve_device(first.device), capped(load_raw(first), args.train_per_class))
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2)
    started = time.perf_counter()
    rows = record(args)
    print(f"trained in {time.perf_counter() - started:.0f} s")
    if args.csv:
        rows.to_csv(args.csv, index=False)
        print(f"scores: {args.csv}")
    report(rows, args.figure)


if __name__ == "__main__":
    main()
