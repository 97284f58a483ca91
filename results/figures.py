"""Figures of an experiment (matplotlib, PNG-ready): each function returns a Figure, or raises
`NotApplicable` with the reason when the experiment has nothing to show for it (a baseline has no α
axis; trials that reported no shifted test sets have no test-agnostic curve).

`FIGURES` lists them by file name; the report writes each, the dashboard can render any of them.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in trials
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .tables import pareto_front  # noqa: E402

PAPER_POINT = {"mixup_alpha": 0.4, "tau_spread": 1.0}
STATUS_MARKERS = {"finished": "o", "asha_stopped": "x", "unfinished": ".", "errored": "s"}
SHIFT_ORDER = ("forward50", "forward25", "forward10", "forward5", "forward2", "uniform",
               "backward2", "backward5", "backward10", "backward25", "backward50")
MAX_LABELLED_LINES = 12


class NotApplicable(Exception):
    """The experiment has nothing to show in this figure; the message says why."""


def metric_label(metric: str) -> tuple[str, float]:
    """Axis label with unit, and the factor from stored value to shown value."""
    split = {"val": "validation", "test": "test", "test_full": "full test", "train": "training"}
    prefix = next((p for p in ("test_full", "val", "test", "train") if metric.startswith(p + "_")), "")
    name = metric.removeprefix(prefix + "_") if prefix else metric
    words = {"balanced_acc": "balanced accuracy", "acc": "accuracy", "ece": "ECE", "mce": "MCE", "nll": "NLL",
             "loss": "loss", "many_acc": "many-shot accuracy", "medium_acc": "medium-shot accuracy",
             "few_acc": "few-shot accuracy"}.get(name, name.replace("_", " "))
    label = f"{split.get(prefix, '')} {words}".strip()
    if name.endswith(("acc", "ece", "mce")):
        return f"{label} (%)", 100.0
    if name in ("nll", "loss"):
        return f"{label} (nats)", 1.0
    return label, 1.0


def _new(width: float = 6.4, height: float = 4.2, ncols: int = 1):
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False, layout="constrained")
    return fig, list(axes[0])


def _finish(axis, xlabel: str, ylabel: str, title: str, legend: bool = True) -> None:
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if legend:
        axis.legend(fontsize="small")


def learning_curves(exp) -> plt.Figure:
    """Validation balanced accuracy and NLL per epoch, one line per trial; ASHA stops marked ×, and the
    cooled scores of cool-down rungs as rings beside the trunk's curve."""
    epochs = exp.epochs
    cooled_rungs = exp.rungs[exp.rungs["fidelity"] == "cooldown"]
    if epochs.empty:
        raise NotApplicable("no trial has reported an epoch yet")
    status = exp.trials.set_index("trial_id")["status"]
    fig, axes = _new(ncols=2)
    many = epochs["trial_id"].nunique() > MAX_LABELLED_LINES
    for axis, metric in zip(axes, ("val_balanced_acc", "val_nll")):
        label, scale = metric_label(metric)
        for trial_id, history in epochs.groupby("trial_id", sort=False):
            if metric not in history:
                continue
            line, = axis.plot(history["epoch"], history[metric] * scale, lw=1.2, alpha=0.85,
                              label=None if many else trial_id)
            if status.get(trial_id) == "asha_stopped":
                last = history.iloc[-1]
                axis.plot(last["epoch"], last[metric] * scale, "x", color=line.get_color(), ms=8, mew=2)
            cooled = cooled_rungs[cooled_rungs["trial_id"] == trial_id] if metric in cooled_rungs else ()
            if len(cooled):  # where a short cool-down took the trunk: the score its rung was judged by
                axis.plot(cooled["epoch"], cooled[metric] * scale, "o", mfc="none", color=line.get_color(), ms=6)
        _finish(axis, "epoch", label, "", legend=False)
    axes[0].set_title("learning curves (× = stopped by ASHA, ○ = cool-down rung)" if len(cooled_rungs)
                      else "learning curves (× = stopped by ASHA)")
    labelled = [axis for axis in axes if axis.get_legend_handles_labels()[0]]  # a metric may be missing
    if not many and labelled:
        labelled[-1].legend(fontsize="small", title="trial")
    return fig


def _objective_axis(exp):
    metric = exp.metric
    if metric not in exp.trials:
        raise NotApplicable(f"no trial has reported {metric} yet")
    return metric, *metric_label(metric)


def _scatter_by_status(axis, trials: pd.DataFrame, x: str, y: str, y_scale: float, x_scale: float = 1.0) -> None:
    for status, marker in STATUS_MARKERS.items():
        chosen = trials[trials["status"] == status]
        if len(chosen):
            axis.scatter(chosen[x] * x_scale, chosen[y] * y_scale, marker=marker, s=36, label=status.replace("_", " "))


def parameter_effect(exp, parameter: str) -> plt.Figure:
    """The objective against one searched parameter, the paper's value marked."""
    trials = exp.trials
    if parameter not in trials or trials[parameter].astype(float).nunique() < 2:
        raise NotApplicable(f"{parameter} does not vary in this experiment")
    metric, label, scale = _objective_axis(exp)
    fig, (axis,) = _new()
    _scatter_by_status(axis, trials, parameter, metric, scale)
    axis.axvline(PAPER_POINT[parameter], color="grey", ls="--", lw=1, label=f"paper ({PAPER_POINT[parameter]:g})")
    _finish(axis, {"mixup_alpha": "mixup α", "tau_spread": "τ spread δ (τ = 1 − δ … 1 + δ)"}[parameter],
            f"final {label}", f"{metric} vs {parameter}")
    return fig


def alpha_spread_map(exp) -> plt.Figure:
    """Both searched parameters at once, coloured by the objective (2-D searches)."""
    trials = exp.trials
    for parameter in ("mixup_alpha", "tau_spread"):
        if parameter not in trials or trials[parameter].astype(float).nunique() < 2:
            raise NotApplicable(f"{parameter} does not vary: not a 2-D search")
    metric, label, scale = _objective_axis(exp)
    fig, (axis,) = _new()
    shown = trials.dropna(subset=[metric])
    points = axis.scatter(shown["mixup_alpha"], shown["tau_spread"], c=shown[metric] * scale, cmap="viridis",
                          s=60, edgecolors="k", linewidths=0.4)
    fig.colorbar(points, ax=axis, label=f"final {label}")
    axis.plot(PAPER_POINT["mixup_alpha"], PAPER_POINT["tau_spread"], "*", color="red", ms=14, label="paper point")
    _finish(axis, "mixup α", "τ spread δ", f"{metric} over α × δ")
    return fig


def accuracy_vs_ece(exp, baseline=None) -> plt.Figure:
    """Validation balanced accuracy against ECE, with the Pareto front of the finished trials."""
    trials = exp.trials
    if not {"val_balanced_acc", "val_ece"} <= set(trials.columns):
        raise NotApplicable("no validation accuracy and ECE reported yet")
    fig, (axis,) = _new()
    _scatter_by_status(axis, trials, "val_ece", "val_balanced_acc", 100, x_scale=100)
    finished = trials[trials["status"] == "finished"].dropna(subset=["val_balanced_acc", "val_ece"])
    if len(finished):
        objectives = [["val_balanced_acc", "max"], ["val_ece", "min"]]
        front = finished[pareto_front(finished, objectives)].sort_values("val_ece")
        axis.step(front["val_ece"] * 100, front["val_balanced_acc"] * 100, where="post", color="black", lw=1.2,
                  label="Pareto front (finished)")
    if baseline is not None and {"val_balanced_acc", "val_ece"} <= set(baseline.trials.columns):
        seeds = baseline.trials[baseline.trials["status"] == "finished"]
        axis.scatter(seeds["val_ece"] * 100, seeds["val_balanced_acc"] * 100, marker="*", s=120, color="red",
                     label=f"baseline '{baseline.name}' seeds")
    _finish(axis, "validation ECE (%), lower is better", "validation balanced accuracy (%)", "accuracy vs calibration")
    return fig


def shot_groups(exp, baseline=None, top: int = 3) -> plt.Figure:
    """Many/medium/few-shot test accuracy of the best configs (mean ± std over seeds) and the baseline."""
    groups = ["test_many_acc", "test_medium_acc", "test_few_acc"]
    summary = exp.summary(metrics=[exp.metric, *[g for g in groups if g in exp.trials]])
    if summary.empty or not any(f"{g}_mean" in summary for g in groups):
        raise NotApplicable("no finished trial has test results yet")
    ascending = exp.mode == "min"
    best = summary.sort_values(f"{exp.metric}_mean", ascending=ascending).head(top)
    bars = [(_config_label(row, exp.name), row) for _, row in best.iterrows()]
    if baseline is not None:
        base = baseline.summary(metrics=[g for g in groups if g in baseline.trials])
        bars += [(f"baseline '{baseline.name}' (n={int(row['n'])})", row) for _, row in base.head(1).iterrows()]
    fig, (axis,) = _new(width=7.2)
    width = 0.8 / len(bars)
    positions = np.arange(len(groups))
    for i, (label, row) in enumerate(bars):
        means = [row.get(f"{g}_mean", math.nan) * 100 for g in groups]
        stds = [row.get(f"{g}_std", math.nan) * 100 for g in groups]
        axis.bar(positions + i * width, means, width, yerr=np.nan_to_num(stds), capsize=3, label=label)
    axis.set_xticks(positions + width * (len(bars) - 1) / 2, ["many-shot", "medium-shot", "few-shot"])
    _finish(axis, "", "test accuracy (%)", "accuracy by class frequency (mean ± std over seeds)", legend=False)
    axis.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    return fig


def _config_label(row: pd.Series, name: str) -> str:
    parts = []
    if "mixup_alpha" in row:
        parts.append(f"α {float(row['mixup_alpha']):.2f}")
    if "tau_list" in row:
        parts.append(f"τ {row['tau_list']}")
    return ", ".join(parts) + f" (n={int(row['n'])})"


def _best_finished(exp, columns: list[str], top: int, what: str) -> pd.DataFrame:
    """The `top` finished trials that reported `columns`, best first by the (first) objective."""
    trials = exp.sorted_trials()
    finished = trials[trials["status"] == "finished"].dropna(subset=columns)
    if finished.empty:
        raise NotApplicable(f"no finished trial has {what}")
    return finished.head(top)


def test_agnostic(exp, top: int = 3) -> plt.Figure:
    """Accuracy per shifted test distribution (forward-50 … uniform … backward-50), without and with
    the post-hoc prior correction, for the best finished trials."""
    keys = [f"shift_{d}_acc" for d in SHIFT_ORDER]
    present = [k for k in keys if k in exp.trials]
    if not present:
        raise NotApplicable("no trial reported shifted-test accuracies (shift_*_acc)")
    best = _best_finished(exp, present, top, "shifted-test accuracies")
    names = [k.removeprefix("shift_").removesuffix("_acc") for k in present]
    fig, (axis,) = _new(width=8)
    x = np.arange(len(present))
    for _, row in best.iterrows():
        line, = axis.plot(x, [row[k] * 100 for k in present], "o-", label=f"{row['trial_id']}")
        corrected = [f"{k}_prior" for k in present]
        if all(c in row and not pd.isna(row[c]) for c in corrected):
            axis.plot(x, [row[c] * 100 for c in corrected], "s--", color=line.get_color(),
                      label=f"{row['trial_id']} + prior correction")
    axis.set_xticks(x, names, rotation=45, ha="right")
    _finish(axis, "test distribution (forward: head-heavy, backward: tail-heavy; number = imbalance)",
            "test accuracy (%)", "test-agnostic evaluation")
    return fig


def reliability(exp, top: int = 3) -> plt.Figure:
    """Reliability diagram of the full test set (accuracy against confidence per bin, 15 bins) for the
    best finished trials; the diagonal is perfect calibration."""
    if "test_full_reliability" not in exp.trials:
        raise NotApplicable("no trial reported reliability-diagram data (test_full_reliability)")
    best = _best_finished(exp, ["test_full_reliability"], top, "reliability-diagram data")
    fig, (axis,) = _new()
    axis.plot([0, 100], [0, 100], color="grey", ls="--", lw=1, label="perfect calibration")
    for _, row in best.iterrows():
        bins = reliability_bins(row["test_full_reliability"])
        if not bins:  # a damaged value: that trial is left out of the diagram
            continue
        ece = f", ECE {100 * row['test_full_ece']:.1f} %" if "test_full_ece" in row else ""
        axis.plot([100 * b[1] for b in bins], [100 * b[2] for b in bins], "o-", label=f"{row['trial_id']}{ece}")
    _finish(axis, "mean confidence in bin (%)", "accuracy in bin (%)", "reliability (full test set, 15 bins)")
    return fig


def reliability_bins(value) -> list[list[float]]:
    """The non-empty [count, confidence, accuracy] bins of a reported `test_full_reliability` (a JSON
    list); [] when the value is damaged (not JSON, not such a list)."""
    import json
    try:
        bins = json.loads(value) if isinstance(value, str) else None
    except (ValueError, RecursionError):
        return []
    if not isinstance(bins, list):
        return []
    numbers = (int, float)
    return [b for b in bins if isinstance(b, list) and len(b) == 3 and all(isinstance(x, numbers) for x in b) and b[0]]


FIGURES = {
    "learning_curves.png": lambda exp, baseline: learning_curves(exp),
    "alpha_effect.png": lambda exp, baseline: parameter_effect(exp, "mixup_alpha"),
    "tau_spread_effect.png": lambda exp, baseline: parameter_effect(exp, "tau_spread"),
    "alpha_spread_map.png": lambda exp, baseline: alpha_spread_map(exp),
    "accuracy_vs_ece.png": accuracy_vs_ece,
    "shot_groups.png": shot_groups,
    "test_agnostic.png": lambda exp, baseline: test_agnostic(exp),
    "reliability.png": lambda exp, baseline: reliability(exp),
}


def render(name: str, exp, baseline=None) -> plt.Figure:
    return FIGURES[name](exp, baseline)
