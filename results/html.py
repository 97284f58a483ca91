"""HTML of experiments, shared by the offline report and the live results page.

The markup is in Jinja2 templates (`results/templates/`) rendered with autoescape on: every value that
comes from an experiment folder (names, config values, errors, settings) is escaped by the engine, and
no template is ever built from data; text that no encoder takes (a folder name that is no UTF-8) is shown
with its bytes escaped (`reader.printable`). This module only shapes tables into what the templates show.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Callable

import jinja2
import pandas as pd

from .experiment import Experiment
from .storage_urls import hide_password, shown_url
from .reader import printable
from .stats import config_columns, is_canonical

WIDE_FIGURES = {"learning_curves.png"}
STATUS_ORDER = ("finished", "asha_stopped", "unfinished", "errored", "not_started")


def writable(value):
    """What a template writes of `value`: text made printable (a surrogate would fail the page's encoding,
    and with it the whole page), anything else as it is."""
    if isinstance(value, str):
        shown = printable(value)
        return value if shown is value else type(value)(shown)  # Markup stays Markup
    return value


TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("results", "templates"),
                               autoescape=jinja2.select_autoescape(["html"]), finalize=writable,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context) -> str:
    return TEMPLATES.get_template(template).render(**context)


@dataclass(frozen=True)
class TableView:
    """A table as the templates show it: texts only, links beside them (the engine escapes both)."""
    headers: list[tuple[str, str | None]]      # (column, link that sorts by it)
    rows: list[tuple[str | None, list[str]]]   # (link of the first cell, cells)
    common: list[tuple[str, str]]              # constant configuration columns, said once above
    more: int = 0                              # rows left out
    more_note: str = ""


def cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def table_view(table: pd.DataFrame, max_rows: int | None = None, sort_href: Callable[[str], str] | None = None,
               row_hrefs: list[str] | None = None, more_note: str = "") -> TableView:
    """A table with its constant configuration columns said once above it, not on every row; with
    `sort_href`, each column header links to the table sorted by that column; with `row_hrefs`, each
    row's first cell links there."""
    constant = [c for c in config_columns(table) if len(table) > 1 and table[c].astype(str).nunique() == 1]
    common = [(c, cell(table[c].iloc[0])) for c in constant]
    if constant:
        table = table.drop(columns=constant)
    shown = table.head(max_rows) if max_rows else table
    links = row_hrefs or [None] * len(shown)
    rows = [(link, [cell(v) for v in row]) for link, row in zip(links, shown.itertuples(index=False, name=None))]
    return TableView(headers=[(str(c), sort_href(c) if sort_href else None) for c in shown.columns], rows=rows,
                     common=common, more=len(table) - len(shown), more_note=more_note)


def status_text(exp: Experiment) -> str:
    progress = exp.progress()
    counts = ", ".join(f"{progress[s]} {s.replace('_', ' ')}" for s in STATUS_ORDER if progress[s])
    state = "complete" if progress["complete"] else "not complete (running, interrupted or failed)"
    objectives = ", ".join(f"{m} ({mode})" for m, mode in exp.objectives)
    return f"{len(exp.trials)} trials: {counts or 'none yet'} · {state} · objective {objectives}"


def experiment_context(exp: Experiment, tables: dict, figure_srcs: dict, skipped: dict,
                       baseline: Experiment | None = None, trials_table: TableView | None = None) -> dict:
    """What experiment.html shows of an experiment: trials, figures, seed statistics, baseline and
    paper comparisons, ASHA fidelity, Optuna's record, provenance. `trials_table` replaces the default
    view of the trials (the live page's sortable one)."""
    from .console import compute_text, default_columns

    def view(name: str, max_rows: int | None = None) -> TableView | None:
        return table_view(tables[name], max_rows) if name in tables else None

    trials = tables.get("trials", pd.DataFrame())
    if trials_table is None and not trials.empty:
        trials_table = table_view(trials[default_columns(exp, trials)], max_rows=25, more_note=" in the tables")
    fidelity = tables.get("asha_fidelity")
    recorded = exp.settings.model_dump(mode="json") if exp.settings else {}
    versions = recorded.get("versions", {})
    storage = recorded.get("optuna_storage")  # shown without its password, wherever it appears
    shown_settings = {**recorded, **({"optuna_storage": shown_url(storage)} if storage else {})}
    return {
        "title": f"{exp.name} — BalPoE study", "status": status_text(exp),
        "exp": {"name": exp.name, "kind": exp.kind, "path": str(exp.path), "skipped_lines": exp.skipped_lines},
        "warnings": exp.warnings(),
        "trials": trials_table,
        "figures": [(name, src, name in WIDE_FIGURES) for name, src in figure_srcs.items()],
        "skipped_figures": skipped,
        "summary": view("summary", 25),
        "baseline": {"name": baseline.name, "path": str(baseline.path)} if baseline is not None else None,
        "baseline_comparison": view("baseline_comparison", 40),
        "paper_comparison": view("paper_comparison"),
        "paper_reason": "" if "paper_comparison" in tables else is_canonical(exp.trials)[1],
        "asha_fidelity": view("asha_fidelity"),
        "compute": compute_text(exp),
        "fidelity_warnings": [v for v in fidelity["verdict"] if not v.startswith("good")] if fidelity is not None
        else [],
        "optuna_trials": view("optuna_trials", 25),
        "optuna_where": shown_url(storage) if storage else "optuna.db",
        "versions": [(k, v) for k, v in versions.items() if k != "command"],
        "command": hide_password(versions["command"], storage) if "command" in versions else None,
        "settings_json": hide_password(json.dumps(shown_settings, indent=2, sort_keys=True), storage),
    }


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
