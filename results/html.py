"""HTML of an experiment, shared by the offline report and the live results page.

Pages are assembled from fixed markup; every value that comes from an experiment (names, config
values, errors, settings) passes through `escape`, and no template or code is built from it.
"""
from __future__ import annotations

import html
import json
import math
import time
from typing import Callable

import pandas as pd

from .experiment import Experiment
from .stats import config_columns, is_canonical

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
th a { color: inherit; }
.scroll { overflow-x: auto; } .note { color: #555; } .warn { color: #a33; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 560px; border: 1px solid #eee; }
img.wide { max-width: 1130px; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""
WIDE_FIGURES = {"learning_curves.png"}
STATUS_ORDER = ("finished", "asha_stopped", "unfinished", "errored", "not_started")


def escape(value) -> str:
    return html.escape(str(value), quote=True)


def cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return escape(value)


def table_html(table: pd.DataFrame, max_rows: int | None = None,
               sort_href: Callable[[str], str] | None = None, more_note: str = "") -> str:
    """A table with its constant configuration columns said once above it, not on every row; with
    `sort_href`, each column header links to the table sorted by that column."""
    constant = [c for c in config_columns(table) if len(table) > 1 and table[c].astype(str).nunique() == 1]
    common = ""
    if constant:
        common = '<p class="note">All rows: ' + ", ".join(f"{escape(c)} {cell(table[c].iloc[0])}"
                                                         for c in constant) + "</p>"
        table = table.drop(columns=constant)
    shown = table.head(max_rows) if max_rows else table
    headers = "".join(f'<th><a href="{escape(sort_href(c))}">{escape(c)}</a></th>' if sort_href
                      else f"<th>{escape(c)}</th>" for c in shown.columns)
    rows = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in shown.itertuples(index=False, name=None))
    more = f'<p class="note">{len(table) - len(shown)} more rows{escape(more_note)}.</p>' \
        if max_rows and len(table) > max_rows else ""
    return f'{common}<div class="scroll"><table><thead><tr>{headers}</tr></thead><tbody>{rows}</tbody></table></div>{more}'


def status_text(exp: Experiment) -> str:
    progress = exp.progress()
    counts = ", ".join(f"{progress[s]} {s.replace('_', ' ')}" for s in STATUS_ORDER if progress[s])
    state = "complete" if progress["complete"] else "not complete (running, interrupted or failed)"
    objectives = ", ".join(f"{m} ({mode})" for m, mode in exp.objectives)
    return f"{len(exp.trials)} trials: {counts or 'none yet'} · {state} · objective {objectives}"


def experiment_sections(exp: Experiment, tables: dict, figure_srcs: dict, skipped: dict,
                        baseline: Experiment | None = None, trials_table: str | None = None) -> list[str]:
    """The body of an experiment's page: trials, figures, seed statistics, baseline and paper
    comparisons, ASHA fidelity, Optuna's record. `trials_table` replaces the default trials markup."""
    from .console import default_columns
    parts = []
    if exp.skipped_lines:
        parts.append(f'<p class="warn">{escape(exp.skipped_lines)} half-written or damaged report line(s) '
                     f'were left out.</p>')
    trials = tables.get("trials", pd.DataFrame())
    parts.append("<h2>Trials (best first)</h2>")
    if trials_table is not None:
        parts.append(trials_table)
    elif trials.empty:
        parts.append('<p class="note">No trial has started yet.</p>')
    else:
        parts.append(table_html(trials[default_columns(exp, trials)], max_rows=25, more_note=" in the tables"))

    parts.append("<h2>Figures</h2>")
    for name, src in figure_srcs.items():
        wide = ' class="wide"' if name in WIDE_FIGURES else ""
        parts.append(f'<figure><img{wide} src="{escape(src)}" alt="{escape(name)}">'
                     f"<figcaption>{escape(name)}</figcaption></figure>")
    if skipped:
        parts.append('<ul class="note">' + "".join(f"<li>{escape(n)}: {escape(why)}</li>"
                                                   for n, why in skipped.items()) + "</ul>")

    parts.append("<h2>Configurations over seeds (finished trials)</h2>")
    parts.append(table_html(tables["summary"], 25) if "summary" in tables
                 else '<p class="note">No finished trials yet.</p>')

    parts.append("<h2>Against the baseline's seed noise</h2>")
    if "baseline_comparison" in tables:
        parts.append(f"<p>Baseline: '{escape(baseline.name)}' ({escape(baseline.path)}).</p>")
        parts.append(table_html(tables["baseline_comparison"], 40))
    else:
        parts.append('<p class="note">No baseline given (<code>study.run report NAME --baseline BASELINE</code> '
                     "compares every configuration with a seeded baseline experiment).</p>")

    parts.append("<h2>Against the published figures</h2>")
    if "paper_comparison" in tables:
        parts.append(table_html(tables["paper_comparison"]))
    else:
        parts.append(f'<p class="note">Not shown: {escape(is_canonical(exp.trials)[1])}.</p>')

    parts.append("<h2>ASHA fidelity: do early scores rank final scores?</h2>")
    if "asha_fidelity" in tables:
        fidelity = tables["asha_fidelity"]
        parts.append('<p class="note">Spearman correlation, over the trials that ran to the end, between the '
                     "objective at each rung and at the last epoch. With ASHA only a rung's survivors reach the "
                     "end, so this is the ranking among survivors.</p>")
        parts.append(table_html(fidelity))
        parts += [f'<p class="warn">{escape(v)}</p>' for v in fidelity["verdict"] if not v.startswith("good")]
    else:
        parts.append('<p class="note">No rungs to check.</p>')

    if "optuna_trials" in tables:
        parts.append("<h2>Optuna's record (optuna.db)</h2>")
        parts.append(table_html(tables["optuna_trials"], 25))
    return parts


def provenance_sections(exp: Experiment) -> list[str]:
    versions = exp.settings.get("versions", {})
    parts = ["<h2>Provenance</h2>",
             "<p>" + " · ".join(f"{escape(k)} {escape(v)}" for k, v in versions.items() if k != "command") + "</p>"]
    if "command" in versions:
        parts.append(f"<pre>{escape(versions['command'])}</pre>")
    parts.append("<h2>Resolved study settings (study.json)</h2>")
    parts.append(f"<pre>{escape(json.dumps(exp.settings, indent=2, sort_keys=True))}</pre>")
    return parts


def page(title: str, parts: list[str], refresh_s: int | None = None) -> str:
    """A whole page; `refresh_s` makes the browser reload it on its own (the live page)."""
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    body = "\n".join(parts)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">{refresh}<title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
