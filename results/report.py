"""`write_report(exp)`: an offline folder with the experiment's tables (CSV, Parquet, Markdown),
figures (PNG) and an `index.html` that shows them all with the resolved settings and provenance.

Every value that comes from an experiment is HTML-escaped; the page is built from fixed markup only.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import figures as figure_module
from .console import default_columns
from .experiment import Experiment
from .reader import ExperimentError
from .stats import config_columns, is_canonical

TABLE_FORMATS = ("csv", "parquet", "md")
WIDE_FIGURES = {"learning_curves.png"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.scroll { overflow-x: auto; } .note { color: #555; } .warn { color: #a33; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 560px; border: 1px solid #eee; }
img.wide { max-width: 1130px; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def experiment_tables(exp: Experiment, baseline: Experiment | None = None) -> dict[str, pd.DataFrame]:
    """Every table of the report, by name (empty tables are left out)."""
    tables = {"trials": exp.sorted_trials(), "epochs": exp.epochs, "summary": exp.summary(),
              "asha_fidelity": exp.asha_fidelity(), "paper_comparison": exp.paper_comparison()}
    if baseline is not None:
        tables["baseline_comparison"] = exp.compare(baseline)
    try:
        tables["optuna_trials"] = exp.optuna_trials
    except ExperimentError as err:
        print(f"warning: {err}")
    return {name: table for name, table in tables.items() if not table.empty}


def export_table(table: pd.DataFrame, folder: Path, name: str) -> list[Path]:
    """CSV, Parquet and Markdown of one table."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.{ext}" for ext in TABLE_FORMATS]
    table.to_csv(paths[0], index=False)
    table.to_parquet(paths[1], index=False)
    paths[2].write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n", encoding="utf-8")
    return paths


def write_figures(exp: Experiment, folder: Path, baseline: Experiment | None = None) -> tuple[dict, dict]:
    """PNG files of every applicable figure; returns ({file: path}, {file: why it was left out})."""
    folder.mkdir(parents=True, exist_ok=True)
    written, skipped = {}, {}
    for name in figure_module.FIGURES:
        try:
            fig = figure_module.render(name, exp, baseline)
        except figure_module.NotApplicable as reason:
            skipped[name] = str(reason)
            continue
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written[name] = folder / name
    return written, skipped


def write_report(exp: Experiment, output: str | Path | None = None, baseline: Experiment | None = None) -> Path:
    """Write the report folder (default `<experiment>/report/`) and return its `index.html`."""
    folder = Path(output) if output else exp.path / "report"
    tables = experiment_tables(exp, baseline)
    table_files = {name: export_table(table, folder / "tables", name) for name, table in tables.items()}
    figures, skipped = write_figures(exp, folder / "figures", baseline)
    index = folder / "index.html"
    index.write_text(render_html(exp, tables, table_files, figures, skipped, baseline, folder), encoding="utf-8")
    return index


# --- HTML ------------------------------------------------------------------------------------------
def _e(value) -> str:
    return html.escape(str(value))


def _table_html(table: pd.DataFrame, max_rows: int | None = None) -> str:
    """The table with its constant configuration columns said once above it, not on every row."""
    constant = [c for c in config_columns(table) if len(table) > 1 and table[c].astype(str).nunique() == 1]
    common = ""
    if constant:
        common = '<p class="note">All rows: ' + ", ".join(f"{_e(c)} {_e(table[c].iloc[0])}" for c in constant) + "</p>"
        table = table.drop(columns=constant)
    shown = table.head(max_rows) if max_rows else table
    body = shown.to_html(index=False, escape=True, na_rep="–", float_format=lambda v: f"{v:.4g}", border=0)
    more = f'<p class="note">{len(table) - len(shown)} more rows in the files below.</p>' \
        if max_rows and len(table) > max_rows else ""
    return f'{common}<div class="scroll">{body}</div>{more}'


def _links(paths: list[Path], root: Path) -> str:
    return " · ".join(f'<a href="{_e(p.relative_to(root).as_posix())}">{_e(p.suffix[1:])}</a>' for p in paths)


def render_html(exp: Experiment, tables: dict, table_files: dict, figures: dict, skipped: dict,
                baseline: Experiment | None, root: Path) -> str:
    progress = exp.progress()
    counts = ", ".join(f"{progress[s]} {s.replace('_', ' ')}" for s in
                       ("finished", "asha_stopped", "unfinished", "errored", "not_started") if progress[s])
    state = "complete" if progress["complete"] else "not complete (running, interrupted or failed)"
    objectives = ", ".join(f"{m} ({mode})" for m, mode in exp.objectives)
    parts = [f"<h1>{_e(exp.kind)} '{_e(exp.name)}'</h1>",
             f'<p class="note">{_e(exp.path)} · report written {_e(time.strftime("%Y-%m-%d %H:%M:%S"))} · '
             f"{_e(len(exp.trials))} trials: {_e(counts or 'none yet')} · {_e(state)} · objective {_e(objectives)}</p>"]
    if exp.skipped_lines:
        parts.append(f'<p class="warn">{_e(exp.skipped_lines)} half-written report line(s) were left out.</p>')

    trials = tables.get("trials", pd.DataFrame())
    parts.append("<h2>Trials (best first)</h2>")
    if trials.empty:
        parts.append('<p class="note">No trial has started yet.</p>')
    else:
        columns = default_columns(exp, trials)
        parts.append(_table_html(trials[columns], max_rows=25))

    parts.append("<h2>Figures</h2>")
    for name, path in figures.items():
        wide = ' class="wide"' if name in WIDE_FIGURES else ""
        parts.append(f'<figure><img{wide} src="{_e(path.relative_to(root).as_posix())}" alt="{_e(name)}">'
                     f"<figcaption>{_e(name)}</figcaption></figure>")
    if skipped:
        parts.append("<ul class=\"note\">" + "".join(f"<li>{_e(n)}: {_e(why)}</li>" for n, why in skipped.items())
                     + "</ul>")

    parts.append("<h2>Configurations over seeds (finished trials)</h2>")
    parts.append(_table_html(tables["summary"], 25) if "summary" in tables
                 else '<p class="note">No finished trials yet.</p>')

    parts.append("<h2>Against the baseline's seed noise</h2>")
    if "baseline_comparison" in tables:
        parts.append(f"<p>Baseline: '{_e(baseline.name)}' ({_e(baseline.path)}).</p>")
        parts.append(_table_html(tables["baseline_comparison"], 40))
    else:
        parts.append('<p class="note">No baseline given (<code>--baseline NAME</code> compares every configuration '
                     "with a seeded baseline experiment).</p>")

    parts.append("<h2>Against the published figures</h2>")
    if "paper_comparison" in tables:
        parts.append(_table_html(tables["paper_comparison"]))
    else:
        parts.append(f'<p class="note">Not shown: {_e(is_canonical(exp.trials)[1])}.</p>')

    parts.append("<h2>ASHA fidelity: do early scores rank final scores?</h2>")
    if "asha_fidelity" in tables:
        fidelity = tables["asha_fidelity"]
        parts.append('<p class="note">Spearman correlation, over the trials that ran to the end, between the '
                     "objective at each rung and at the last epoch. With ASHA only a rung's survivors reach the "
                     "end, so this is the ranking among survivors.</p>")
        parts.append(_table_html(fidelity))
        for verdict in fidelity["verdict"]:
            if not verdict.startswith("good"):
                parts.append(f'<p class="warn">{_e(verdict)}</p>')
    else:
        parts.append('<p class="note">No rungs to check.</p>')

    if "optuna_trials" in tables:
        parts.append("<h2>Optuna's record (optuna.db)</h2>")
        parts.append(_table_html(tables["optuna_trials"], 25))

    parts.append("<h2>Files</h2><ul>")
    for name, paths in table_files.items():
        parts.append(f"<li>{_e(name)}: {_links(paths, root)}</li>")
    parts.append("</ul>")

    versions = exp.settings.get("versions", {})
    parts.append("<h2>Provenance</h2>")
    parts.append("<p>" + " · ".join(f"{_e(k)} {_e(v)}" for k, v in versions.items() if k != "command") + "</p>")
    if "command" in versions:
        parts.append(f"<pre>{_e(versions['command'])}</pre>")
    parts.append("<h2>Resolved study settings (study.json)</h2>")
    parts.append(f"<pre>{_e(json.dumps(exp.settings, indent=2, sort_keys=True))}</pre>")

    body = "\n".join(parts)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(exp.name)} — BalPoE study'
            f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
