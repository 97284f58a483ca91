"""The trials table as text for a terminal: `study.run show` and the table a study prints at its end."""
from __future__ import annotations

import pandas as pd

from .experiment import Experiment

IDENTITY = ("trial_id", "status", "epochs_run")
CONFIG_SHOWN = ("seed", "mixup_alpha", "tau_spread", "tau_list", "num_experts")  # the searched value and what it made
RESULTS_SHOWN = ("test_balanced_acc", "test_full_acc", "test_full_ece")


def default_columns(exp: Experiment, trials: pd.DataFrame | None = None) -> list[str]:
    """Who, what (the key config, and any other recipe value that varies), how good (objectives,
    best-so-far, test results)."""
    from .stats import config_columns
    trials = exp.trials if trials is None else trials
    varying = [c for c in config_columns(trials) if c not in CONFIG_SHOWN and trials[c].astype(str).nunique() > 1]
    objectives = [m for m, _ in exp.objectives]
    wanted = [*IDENTITY, *CONFIG_SHOWN, *varying, *objectives, f"best_{exp.metric}", f"best_{exp.metric}_epoch",
              *RESULTS_SHOWN]
    return [c for c in dict.fromkeys(wanted) if c in trials.columns]


def trials_text(exp: Experiment, columns: list[str] | None = None, top: int | None = None) -> str:
    """The trials sorted by the (first) objective; multi-objective studies get a `pareto` column."""
    trials = exp.trials.copy()
    if len(exp.objectives) > 1:
        trials["pareto"] = exp.pareto().map({True: "*", False: ""})
    chosen = columns or default_columns(exp, trials) + (["pareto"] if "pareto" in trials else [])
    unknown = [c for c in chosen if c not in trials.columns]
    if unknown:
        raise KeyError(f"--columns: no column {', '.join(map(repr, unknown))}; this experiment has: "
                       f"{', '.join(trials.columns)}")
    if trials.empty:
        return "(no trials yet)" + warnings_text(exp)
    if exp.metric in trials:
        trials = trials.sort_values(exp.metric, ascending=exp.mode == "min", na_position="last", kind="stable")
    shown = trials[chosen].head(top) if top else trials[chosen]
    text = shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4f}")
    if top and len(trials) > top:
        text += f"\n({len(trials) - top} more; --top to show more)"
    if "pareto" in chosen:
        text += "\npareto *: no other finished trial is at least as good on every objective and better on one"
    return text + warnings_text(exp)


def warnings_text(exp: Experiment) -> str:
    """Damaged records and values read as missing, one line each under the table ("" when none)."""
    return "".join(f"\nwarning: {line}" for line in exp.warnings())


def progress_text(p: dict) -> str:
    """`Experiment.progress()` in words."""
    return (f"{p['finished']} finished, {p['asha_stopped']} stopped early by ASHA, {p['unfinished']} unfinished, "
            f"{p['not_started']} not started, {p['errored']} errored")


def compute_text(exp: Experiment) -> str:
    """What the study trained, in epochs, against the same trials without ASHA ("" without ASHA)."""
    if not (exp.settings and exp.settings.asha) or exp.trials.empty:
        return ""
    spent = exp.compute()
    cooled = f" + {spent['cooldown_epochs']:.0f} in cool-downs" if spent["cooldown_epochs"] else ""
    return (f"trained {spent['trunk_epochs']:.0f} epochs{cooled}: {spent['fraction']:.0%} of the "
            f"{spent['without_asha_epochs']:.0f} these trials would train without ASHA")
