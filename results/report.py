"""`write_report(exp)`: an offline folder with the experiment's tables (CSV, Parquet, Markdown),
figures (PNG) and an `index.html` that shows them all with the resolved settings and provenance
(the page's markup is shared with the live results page: `html.py`).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import figures as figure_module
from .experiment import Experiment
from .html import escape, experiment_sections, page, provenance_sections, stamp, status_text
from .reader import ExperimentError

TABLE_FORMATS = ("csv", "parquet", "md")


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
def _links(paths: list[Path], root: Path) -> str:
    return " · ".join(f'<a href="{escape(p.relative_to(root).as_posix())}">{escape(p.suffix[1:])}</a>' for p in paths)


def render_html(exp: Experiment, tables: dict, table_files: dict, figures: dict, skipped: dict,
                baseline: Experiment | None, root: Path) -> str:
    parts = [f"<h1>{escape(exp.kind)} '{escape(exp.name)}'</h1>",
             f'<p class="note">{escape(exp.path)} · report written {escape(stamp())} · {escape(status_text(exp))}</p>']
    sources = {name: path.relative_to(root).as_posix() for name, path in figures.items()}
    parts += experiment_sections(exp, tables, sources, skipped, baseline)
    parts.append("<h2>Files</h2><ul>")
    parts += [f"<li>{escape(name)}: {_links(paths, root)}</li>" for name, paths in table_files.items()]
    parts.append("</ul>")
    parts += provenance_sections(exp)
    return page(f"{exp.name} — BalPoE study", parts)
