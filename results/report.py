"""`write_report(exp)`: an offline folder with the experiment's tables (CSV, Parquet, Markdown),
figures (PNG) and an `index.html` that shows them all with the resolved settings and provenance
(the page's markup is shared with the live results page: `html.py`).
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import figures as figure_module
from .experiment import Experiment
from .html import experiment_context, render, stamp
from .reader import ExperimentError
from .tables import is_text_or_missing

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


def table_contents(table: pd.DataFrame) -> dict[str, bytes]:
    """CSV, Parquet and Markdown of one table, in memory."""
    return {"csv": table.to_csv(index=False).encode("utf-8"), "parquet": parquet_bytes(table),
            "md": (table.to_markdown(index=False, floatfmt=".4g") + "\n").encode("utf-8")}


def parquet_bytes(table: pd.DataFrame) -> bytes:
    """The table as Parquet. The tables keep each column to one kind; should a column still mix kinds
    that Arrow cannot type, it is written as text rather than failing the report."""
    buffer = io.BytesIO()
    try:
        table.to_parquet(buffer, index=False)
    except (TypeError, ValueError):  # pyarrow's ArrowTypeError / ArrowInvalid
        text = table.copy()
        for column in text.columns[text.dtypes == object]:
            text[column] = text[column].map(lambda v: v if is_text_or_missing(v) else str(v))
        buffer = io.BytesIO()
        text.to_parquet(buffer, index=False)
    return buffer.getvalue()


def export_table(table: pd.DataFrame, folder: Path, name: str) -> list[Path]:
    """CSV, Parquet and Markdown of one table."""
    return _write(folder, {f"{name}.{ext}": data for ext, data in table_contents(table).items()})


def render_figures(exp: Experiment, baseline: Experiment | None = None) -> tuple[dict[str, bytes], dict[str, str]]:
    """PNG images of every applicable figure, in memory; returns ({file: PNG}, {file: why it was left out})."""
    images, skipped = {}, {}
    for name in figure_module.FIGURES:
        try:
            fig = figure_module.render(name, exp, baseline)
        except figure_module.NotApplicable as reason:
            skipped[name] = str(reason)
            continue
        try:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=110)
        finally:
            plt.close(fig)
        images[name] = buffer.getvalue()
    return images, skipped


def write_figures(exp: Experiment, folder: Path, baseline: Experiment | None = None) -> tuple[dict, dict]:
    """PNG files of every applicable figure; returns ({file: path}, {file: why it was left out})."""
    images, skipped = render_figures(exp, baseline)
    return dict(zip(images, _write(folder, images))), skipped


def write_report(exp: Experiment, output: str | Path | None = None, baseline: Experiment | None = None) -> Path:
    """Write the report folder (default `<experiment>/report/`) and return its `index.html`. Every table,
    figure and the page are made in memory first, so a report that fails (a baseline that is not
    comparable, a figure that cannot be drawn) writes nothing."""
    folder = Path(output) if output else exp.path / "report"
    tables = experiment_tables(exp, baseline)
    contents = {name: table_contents(table) for name, table in tables.items()}
    images, skipped = render_figures(exp, baseline)
    table_files = {name: [folder / "tables" / f"{name}.{ext}" for ext in TABLE_FORMATS] for name in contents}
    figures = {name: folder / "figures" / name for name in images}
    html = render_html(exp, tables, table_files, figures, skipped, baseline, folder)
    for name, data in contents.items():
        _write(folder / "tables", {f"{name}.{ext}": data[ext] for ext in TABLE_FORMATS})
    _write(folder / "figures", images)
    index = folder / "index.html"
    index.write_text(html, encoding="utf-8")
    return index


def _write(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


# --- HTML ------------------------------------------------------------------------------------------
def render_html(exp: Experiment, tables: dict, table_files: dict, figures: dict, skipped: dict,
                baseline: Experiment | None, root: Path) -> str:
    """The report's index.html (templates/report.html), with links relative to the report folder."""
    sources = {name: path.relative_to(root).as_posix() for name, path in figures.items()}
    files = [(name, [(p.relative_to(root).as_posix(), p.suffix[1:]) for p in paths])
             for name, paths in table_files.items()]
    return render("report.html", **experiment_context(exp, tables, sources, skipped, baseline),
                  written=stamp(), files=files)
