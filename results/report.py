"""`write_report(exp)`: an offline folder with the experiment's tables (CSV, Parquet, Markdown),
figures (PNG) and an `index.html` that shows them all with the resolved settings and provenance
(the page's markup is shared with the live results page: `html.py`).

A report folder is either the previous report or the complete new one: everything is made in memory,
written into a staging folder, and moved in with `index.html` last (`balpoe.files.publish_folder`).
Its manifest (MANIFEST) lists the files it wrote: only those may be replaced or removed by the next one.
"""
from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path

from .storage import local_outputs

import matplotlib.pyplot as plt
import pandas as pd

from balpoe.files import atomic_write, publish_folder, read_small_json, writable_folder_problem

from . import figures as figure_module
from .experiment import Experiment
from .html import experiment_context, render, stamp
from .reader import ExperimentError
from .tables import is_text_or_missing

TABLE_FORMATS = ("csv", "parquet", "md")
TABLE_NAMES = ("trials", "epochs", "rungs", "summary", "asha_fidelity", "paper_comparison", "baseline_comparison",
               "optuna_trials")
INDEX = "index.html"
MANIFEST = ".report.json"  # hidden and sorting first, so publish_folder moves it in before the files it lists
MANIFEST_FORMAT = "balpoe-report"
PARTS = (*(f"tables/{name}.{ext}" for name in TABLE_NAMES for ext in TABLE_FORMATS),
         *(f"figures/{name}" for name in figure_module.FIGURES))


class ReportError(ExperimentError):
    """The report cannot be written where asked (a file in the way, no permission, a full disk); the
    message starts with the option to change, and nothing was half-written."""


def experiment_tables(exp: Experiment, baseline: Experiment | None = None) -> dict[str, pd.DataFrame]:
    """Every table of the report, by name (empty tables are left out)."""
    tables = {"trials": exp.sorted_trials(), "epochs": exp.epochs, "rungs": exp.rungs, "summary": exp.summary(),
              "asha_fidelity": exp.asha_fidelity(), "paper_comparison": exp.paper_comparison()}
    if baseline is not None:
        tables["baseline_comparison"] = exp.compare(baseline)
    try:
        tables["optuna_trials"] = exp.optuna_trials
    except ExperimentError as err:
        print(f"warning: {err}", file=sys.stderr)
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
    """CSV, Parquet and Markdown of one table, each file written whole or not at all."""
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
    """PNG files of every applicable figure, each written whole or not at all; returns
    ({file: path}, {file: why it was left out})."""
    images, skipped = render_figures(exp, baseline)
    return dict(zip(images, _write(folder, images))), skipped


def write_report(exp: Experiment, output: str | Path | None = None, baseline: Experiment | None = None) -> Path:
    """Write the report folder (default `<experiment>/report/`; `./NAME/report/` for an experiment in an
    object store) and return its `index.html`. A folder
    that cannot take it is refused first; every table, figure and the page are then made in memory,
    so a report that fails (a baseline that is not comparable, a figure that cannot be drawn) writes
    nothing, and a write that fails (a full disk) leaves the previous report as it was. Each damaged
    record the reader noted (`exp.warnings()`) is printed as a warning. Raises `ReportError`."""
    option = "--output" if output else "report"
    folder = Path(output).expanduser() if output else local_outputs(exp.path) / "report"
    check_report_folder(folder, option)
    for warning in exp.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    tables = experiment_tables(exp, baseline)
    contents = {name: table_contents(table) for name, table in tables.items()}
    images, skipped = render_figures(exp, baseline)
    table_files = {name: [folder / "tables" / f"{name}.{ext}" for ext in TABLE_FORMATS] for name in contents}
    figures = {name: folder / "figures" / name for name in images}
    html = render_html(exp, tables, table_files, figures, skipped, baseline, folder)
    files = {f"tables/{name}.{ext}": data[ext] for name, data in contents.items() for ext in TABLE_FORMATS}
    files |= {f"figures/{name}": data for name, data in images.items()}
    files[INDEX] = html.encode("utf-8")
    files[MANIFEST] = json.dumps({"format": MANIFEST_FORMAT, "version": 1, "files": sorted(files)}).encode()

    def write(staging: Path) -> None:
        for name, data in files.items():
            _write_file(staging / name, data)
    try:
        publish_folder(folder, write, last=INDEX, stale=PARTS)
    except OSError as err:
        raise ReportError(f"{option}: the report could not be written to {folder} ({err.strerror or err}); the "
                          f"folder is left as it was; free space or choose another --output") from None
    return folder / INDEX


def check_report_folder(folder: Path, option: str) -> None:
    """Refuse, before any work, a folder that cannot take a report: a file in its place or on its path,
    no permission, a read-only disk, report parts (`index.html`, `tables/`, `figures/`) that are
    something else, or a file the report would replace or remove that no earlier report wrote."""
    problem = writable_folder_problem(folder)
    if problem:
        raise ReportError(f"{option}: {problem}; name a folder the report can be written to")
    for part, is_right in ((INDEX, Path.is_file), ("tables", Path.is_dir), ("figures", Path.is_dir)):
        path = folder / part
        if os.path.lexists(path) and not is_right(path):
            raise ReportError(f"{option}: {path} is in the way of the report's {part} (it is not a "
                              f"{'file' if part == INDEX else 'folder'}); move it, or choose another --output")
    owned = written_by_report(folder)
    foreign = [name for name in (MANIFEST, INDEX, *PARTS) if os.path.lexists(folder / name) and name not in owned]
    if foreign:
        raise ReportError(f"{option}: {folder} holds {', '.join(foreign)}, not written by a report; they are left "
                          f"as they are: choose another --output, or move them")


def written_by_report(folder: Path) -> set[str]:
    """The files an earlier report wrote in `folder`, as its manifest lists them (and the manifest itself);
    every part a report writes for a report from before manifests; none otherwise."""
    record = read_small_json(folder / MANIFEST)
    if not (isinstance(record, dict) and record.get("format") == MANIFEST_FORMAT
            and isinstance(record.get("files"), list)):
        return set(PARTS) | {INDEX} if is_report_before_manifests(folder) else set()
    return {MANIFEST, *(name for name in record["files"] if isinstance(name, str))}


def is_report_before_manifests(folder: Path) -> bool:
    """A report written before reports kept a manifest: no manifest, and its index.html is our page
    (its title says so), so re-running `report` into the folder it chose itself keeps working."""
    if os.path.lexists(folder / MANIFEST) or not (folder / INDEX).is_file():
        return False
    try:
        with open(folder / INDEX, "rb") as page:
            head = page.read(4096)
    except OSError:
        return False
    return re.search(rb"<title>[^<]* \xe2\x80\x94 BalPoE study</title>", head) is not None


def _write(folder: Path, files: dict[str, bytes]) -> list[Path]:
    paths = [folder / name for name in files]
    for path, data in zip(paths, files.values()):
        atomic_write(path, lambda tmp, data=data: _write_file(tmp, data))
    return paths


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# --- HTML ------------------------------------------------------------------------------------------
def render_html(exp: Experiment, tables: dict, table_files: dict, figures: dict, skipped: dict,
                baseline: Experiment | None, root: Path) -> str:
    """The report's index.html (templates/report.html), with links relative to the report folder."""
    sources = {name: path.relative_to(root).as_posix() for name, path in figures.items()}
    files = [(name, [(p.relative_to(root).as_posix(), p.suffix[1:]) for p in paths])
             for name, paths in table_files.items()]
    return render("report.html", **experiment_context(exp, tables, sources, skipped, baseline),
                  written=stamp(), files=files)
