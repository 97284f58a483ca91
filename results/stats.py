"""Statistics over the trials table: seeds, the baseline's noise, the paper, ASHA's rung fidelity.

Plain functions over DataFrames, so a notebook, the report and the dashboard use the same numbers.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from .settings import StudySettings, known_mode

# Published BalPoE figures, CIFAR-100-LT IR 100, 3 experts, τ 0/1/2, mixup α 0.4, 200 epochs, in %.
# Accuracy/ECE/MCE: the paper's Tables 2–3 (5 seeds); many/medium/few: an independent reproduction;
# shift_*: the paper's test-agnostic results.
PAPER_FIGURES = (
    ("test_full_acc", "top-1 accuracy", 52.0, 0.5, "BalPoE paper, Table 2 (5 seeds)"),
    ("test_full_ece", "ECE", 4.9, 1.0, "BalPoE paper, Table 3 (5 seeds)"),
    ("test_full_mce", "MCE", 11.3, 1.6, "BalPoE paper, Table 3 (5 seeds)"),
    ("test_full_many_acc", "many-shot accuracy", 67.6, math.nan, "independent reproduction"),
    ("test_full_medium_acc", "medium-shot accuracy", 54.5, math.nan, "independent reproduction"),
    ("test_full_few_acc", "few-shot accuracy", 30.8, math.nan, "independent reproduction"),
    ("shift_forward50_acc", "test-agnostic forward-50", 65.1, math.nan, "BalPoE paper, test-agnostic"),
    ("shift_uniform_acc", "test-agnostic uniform", 52.0, math.nan, "BalPoE paper, test-agnostic"),
    ("shift_backward50_acc", "test-agnostic backward-50", 36.1, math.nan, "BalPoE paper, test-agnostic"),
    ("shift_forward50_acc_prior", "forward-50 with prior correction", 70.3, math.nan, "BalPoE paper, test-agnostic"),
    ("shift_backward50_acc_prior", "backward-50 with prior correction", 46.1, math.nan, "BalPoE paper, test-agnostic"),
)
CANONICAL_RECIPE = {"dataset": "cifar100-lt", "imb_factor": 0.01, "epochs": 200, "num_experts": 3,
                    "tau_list": "0;1;2", "mixup_alpha": 0.4}
# recipe columns that are not a configuration's identity: seeds are aggregated over; the spread
# follows from the τ list
NOT_CONFIG = {"seed", "tau_spread"}
CONFIG_COLUMNS = ("dataset", "imb_factor", "epochs", "num_experts", "tau_list", "mixup_alpha")
FEW_TO_TELL, LOW_FIDELITY, GOOD_FIDELITY = 5, 0.5, 0.8
NOISE_LEVEL = 0.05


def config_columns(trials: pd.DataFrame) -> list[str]:
    """Columns that identify a configuration: the key recipe values plus any other recipe value that
    varies between trials (the trials table shows those as columns too)."""
    from .tables import RECIPE_FIELDS
    keys = [c for c in CONFIG_COLUMNS if c in trials.columns]
    return keys + [c for c in trials.columns if c in RECIPE_FIELDS and c not in keys and c not in NOT_CONFIG]


def summary_metrics(trials: pd.DataFrame, objectives: list[list[str]]) -> list[str]:
    wanted = [m for m, _ in objectives] + [f"best_{m}" for m, _ in objectives] + [
        "test_balanced_acc", "test_acc", "test_ece", "test_many_acc", "test_medium_acc", "test_few_acc",
        "test_full_acc", "test_full_ece", "test_full_mce", "test_full_many_acc", "test_full_medium_acc",
        "test_full_few_acc", "wall_time_s"]
    return [m for m in dict.fromkeys(wanted) if m in trials.columns]


def aggregate_seeds(trials: pd.DataFrame, metrics: list[str], statuses=("finished",)) -> pd.DataFrame:
    """One row per configuration over its seeds: `n`, the seeds, and `<metric>_mean` / `<metric>_std`
    (sample std, ddof 1; NaN for a single seed)."""
    chosen = trials[trials["status"].isin(statuses)] if statuses else trials
    keys = config_columns(trials)
    if chosen.empty:
        return pd.DataFrame(columns=[*keys, "n", "seeds"])
    grouped = chosen.assign(**{k: chosen[k].astype(str) for k in keys}).groupby(keys, sort=False, dropna=False)
    rows = []
    for _, group in grouped:
        original = chosen.loc[group.index]
        row = {k: original[k].iloc[0] for k in keys}
        row["n"] = len(group)
        row["seeds"] = " ".join(str(s) for s in sorted(original["seed"].dropna().astype(int))) \
            if "seed" in original else ""
        for metric in metrics:
            values = pd.to_numeric(original[metric], errors="coerce")
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_std"] = values.std(ddof=1) if values.count() > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


class NotComparable(ValueError):
    """The baseline ran other data or another budget, or is no baseline; the message names the field."""


def check_comparable(trials: pd.DataFrame, baseline: pd.DataFrame, stop_epoch: int | None = None,
                     baseline_stop_epoch: int | None = None, baseline_kind: str = "baseline") -> None:
    """A comparison is only meaningful on the same data and budget — the same recipe (`epochs`) stopped
    at the same epoch (`--max-t`: the stop epochs, the experiments' own or else their trials') — against
    the seeds of a baseline (`baseline_kind`), not another search's configurations."""
    for column in ("dataset", "imb_factor", "epochs"):
        ours, theirs = _values(trials, column), _values(baseline, column)
        if ours and theirs and ours != theirs:
            raise NotComparable(f"--baseline: it differs in {column} ({', '.join(map(str, sorted(theirs)))} vs "
                             f"{', '.join(map(str, sorted(ours)))}); compare experiments of the same data and epochs")
    ours = {str(stop_epoch)} if stop_epoch is not None else _values(trials, "stop_epoch", whole=True)
    theirs = {str(baseline_stop_epoch)} if baseline_stop_epoch is not None else \
        _values(baseline, "stop_epoch", whole=True)
    if ours and theirs and ours != theirs:
        raise NotComparable(f"--baseline: its trials stop at epoch {', '.join(sorted(theirs, key=int))}, this "
                            f"experiment's at epoch {', '.join(sorted(ours, key=int))} (--max-t); compare "
                            f"experiments whose trials stop at the same epoch")
    if baseline_kind != "baseline":
        raise NotComparable(f"--baseline: it is a {baseline_kind!r} experiment, not a 'baseline' one; compare with "
                            f"the seeds of a baseline (python -m study.run baseline --seeds ...) trained on the "
                            f"same data to the same epoch")


def _values(frame: pd.DataFrame, column: str, whole: bool = False) -> set:
    if column not in frame:
        return set()
    values = frame[column].dropna()
    return set((values.astype("int64") if whole else values).astype(str))


def noise_test(values: np.ndarray, baseline: np.ndarray, level: float = NOISE_LEVEL) -> tuple[bool | None, str]:
    """Whether `values` (one or more seeds of a config) differ from the baseline's seeds beyond seed noise.

    One value: is it outside the baseline's 95 % prediction interval for a new seed,
    mean ± t(0.975, n−1) · s · √(1 + 1/n)? Several: Welch's t-test at p < 0.05.
    None (cannot tell) when the baseline has fewer than 2 seeds."""
    from scipy import stats as scipy_stats
    values, baseline = values[~np.isnan(values)], baseline[~np.isnan(baseline)]
    n = len(baseline)
    if n < 2 or len(values) == 0:
        return None, f"cannot tell: the baseline needs ≥ 2 seeds (has {n})"
    mean, std = baseline.mean(), baseline.std(ddof=1)
    if len(values) == 1:
        half_width = scipy_stats.t.ppf(1 - level / 2, n - 1) * std * math.sqrt(1 + 1 / n)
        beyond = bool(abs(values[0] - mean) > half_width)
        return beyond, f"95% prediction interval of {n} baseline seeds: ±{half_width:.4g}"
    if np.std(values) == 0 and std == 0:
        return bool(values[0] != mean), "no spread in either: exact comparison"
    p_value = scipy_stats.ttest_ind(values, baseline, equal_var=False).pvalue
    return bool(p_value < level), f"Welch t-test ({len(values)} vs {n} seeds): p = {p_value:.3g}"


def compare_with_baseline(trials: pd.DataFrame, baseline: pd.DataFrame, metrics: list[str],
                          modes: dict | None = None) -> pd.DataFrame:
    """Each configuration's mean against the baseline's seeds, per metric: difference (higher is better
    for `max` metrics), and whether it is beyond the baseline's seed noise, with the test named."""
    modes = modes or {}
    keys = config_columns(trials)
    done = trials[trials["status"] == "finished"]
    base_done = baseline[baseline["status"] == "finished"]
    rows = []
    for metric in metrics:
        if metric not in done or metric not in base_done:
            continue
        reference = pd.to_numeric(base_done[metric], errors="coerce").to_numpy(float)
        for _, group in done.groupby([done[k].astype(str) for k in keys], sort=False):
            values = pd.to_numeric(group[metric], errors="coerce").to_numpy(float)
            beyond, test = noise_test(values, reference)
            difference = np.nanmean(values) - np.nanmean(reference) if len(reference) else math.nan
            sign = -1 if modes.get(metric, known_mode(metric)) == "min" else 1
            rows.append({**{k: group[k].iloc[0] for k in keys}, "metric": metric, "n": len(group),
                         "mean": np.nanmean(values), "baseline_mean": np.nanmean(reference) if len(reference) else math.nan,
                         "baseline_std": np.nanstd(reference, ddof=1) if len(reference) > 1 else math.nan,
                         "baseline_n": len(reference), "difference": difference,
                         "better": bool(sign * difference > 0) if not math.isnan(difference) else None,
                         "beyond_noise": beyond, "test": test})
    return pd.DataFrame(rows)


def is_canonical(trials: pd.DataFrame) -> tuple[bool, str]:
    """Whether the finished trials ran the paper's recipe, so its published figures apply."""
    done = trials[trials["status"] == "finished"]
    if done.empty:
        return False, "no finished trials"
    for column, value in CANONICAL_RECIPE.items():
        found = set(done[column].map(_as_text)) if column in done else {"?"}
        if found != {str(value)}:
            return False, f"the paper's figures are for {column} = {value} (this experiment: {', '.join(sorted(found))})"
    return True, "the canonical CIFAR-100-LT recipe"


def _as_text(value) -> str:
    """A recipe value as text, whatever a damaged trial holds (NaN, None, inf): "?" when missing."""
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else str(value)


def paper_comparison(trials: pd.DataFrame) -> pd.DataFrame:
    """Published figures next to this experiment's full-test results (mean ± std over seeds, in %).
    Empty unless the finished trials ran the canonical recipe."""
    canonical, _ = is_canonical(trials)
    if not canonical:
        return pd.DataFrame(columns=["metric", "paper_pct", "paper_std_pct", "ours_mean_pct", "ours_std_pct", "n",
                                     "difference_pct", "source"])
    done = trials[trials["status"] == "finished"]
    rows = []
    for column, label, paper, paper_std, source in PAPER_FIGURES:
        values = pd.to_numeric(done.get(column, pd.Series(dtype=float)), errors="coerce").dropna() * 100
        mean = values.mean() if len(values) else math.nan
        rows.append({"metric": label, "column": column, "paper_pct": paper, "paper_std_pct": paper_std,
                     "ours_mean_pct": mean, "ours_std_pct": values.std(ddof=1) if len(values) > 1 else math.nan,
                     "n": len(values), "difference_pct": mean - paper, "source": source})
    return pd.DataFrame(rows)


def spearman(a, b) -> float:
    """Spearman's rank correlation (scipy's; ties share their mean rank). NaN when it is undefined:
    a side that is constant or holds a NaN, fewer than two pairs."""
    from scipy import stats as scipy_stats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy_stats.ConstantInputWarning)  # undefined: NaN says so
        return float(scipy_stats.spearmanr(np.asarray(a, dtype=float), np.asarray(b, dtype=float)).statistic)


def default_rungs(settings: StudySettings | None, stop_epoch: int | None) -> list[int]:
    """The study's own ASHA rungs; for a study without ASHA (or a plain Tune folder), the epoch quartiles
    (what a rung there would have seen). Rungs at the stop epoch are left out: they rank the final score."""
    if not stop_epoch:
        return []
    if settings is not None and settings.asha:
        return list(settings.asha_rungs)
    return [r for r in sorted({max(1, stop_epoch * q // 4) for q in (1, 2, 3)}) if r < stop_epoch]


def asha_fidelity(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str, rungs: list[int],
                  rung_scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per rung: Spearman's correlation between the metric at the rung and the final metric, over the
    trials that reached the end (with ASHA, the rung's survivors) — the trunk's score (`spearman`) and,
    where `rung_scores` (the rungs table) holds cool-downs, the cooled one (`cooled_spearman`) — with a
    plain-words verdict on the score ASHA decided by."""
    finished = trials.loc[trials["status"] == "finished", "trial_id"]
    final_by_trial = trials.set_index("trial_id")[metric] if metric in trials else pd.Series(dtype=float)
    cooled = rung_scores[rung_scores["fidelity"] == "cooldown"] if rung_scores is not None and len(rung_scores) \
        else pd.DataFrame(columns=["trial_id", "epoch", metric])

    def rho_at(scores: pd.DataFrame, rung: int) -> tuple[float, int]:
        scores = scores[scores["trial_id"].isin(finished)] if len(scores) else scores
        at_rung = scores[scores["epoch"] == rung].set_index("trial_id")[metric] if metric in scores else pd.Series()
        pairs = pd.DataFrame({"rung": at_rung, "final": final_by_trial.reindex(at_rung.index)}).dropna()
        return (spearman(pairs["rung"], pairs["final"]) if len(pairs) >= 3 else math.nan), len(pairs)

    rows = []
    for rung in rungs:
        rho, n = rho_at(epochs, rung)
        cooled_rho, cooled_n = rho_at(cooled, rung)
        decided_by = (cooled_rho, cooled_n) if cooled_n else (rho, n)
        rows.append({"rung_epoch": rung, "metric": metric, "trials": n, "spearman": rho,
                     "cooled_spearman": cooled_rho, "verdict": fidelity_verdict(*decided_by, rung)})
    return pd.DataFrame(rows, columns=["rung_epoch", "metric", "trials", "spearman", "cooled_spearman", "verdict"])


def compute_spent(trials: pd.DataFrame, rung_scores: pd.DataFrame, stop_epoch: int | None) -> dict:
    """What a study trained, in epochs: every trial's trunk, the cool-downs of its rungs, their sum, and
    that sum as a fraction of the same trials each run to the stop epoch (the study without ASHA)."""
    trunk = float(pd.to_numeric(trials["epochs_run"], errors="coerce").fillna(0).sum()) if len(trials) else 0.0
    cooldown = float(rung_scores["cooldown_epochs"].fillna(0).sum()) if len(rung_scores) else 0.0
    full = float(len(trials) * stop_epoch) if stop_epoch else math.nan
    return {"trunk_epochs": trunk, "cooldown_epochs": cooldown, "trained_epochs": trunk + cooldown,
            "without_asha_epochs": full, "fraction": (trunk + cooldown) / full if full else math.nan}


def fidelity_verdict(rho: float, n: int, rung: int) -> str:
    if n < 3:
        return f"too few trials reached the end ({n}) to tell"
    if math.isnan(rho):
        return "cannot tell: the scores at the rung or at the end are all equal"
    if rho < LOW_FIDELITY:
        verdict = (f"low: epoch-{rung} scores rank final scores poorly; a rung here may stop future winners "
                   f"(later --grace-period, or --no-asha)")
    elif rho < GOOD_FIDELITY:
        verdict = f"moderate: epoch-{rung} scores rank final scores only roughly; ASHA may stop some good trials"
    else:
        verdict = f"good: epoch-{rung} scores rank final scores well"
    return verdict + (f" (only {n} trials reached the end: uncertain)" if n < FEW_TO_TELL else "")
