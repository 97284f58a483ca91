"""The live results page: the `results` views of every experiment under a storage path, served by
Ray Serve from the cluster that runs the studies.

    /                                        index of experiments (kind, trials by status, best, last update)
    /experiments/NAME                        one experiment: running trials with ETAs, sortable trials
                                             table, figures, statistics, settings (reloads on its own)
    /experiments/NAME/figures/FILE.png       one figure, drawn from the current files
    /api/experiments                         the index as JSON
    /api/experiments/NAME/{trials,epochs,summary,running}   the tables as JSON records

Read-only: it opens experiment folders for reading and writes nothing. NAME must be a real folder
directly under the storage path (no `..`, no absolute path, no symlink out of it): anything else is
a 404. The replica reserves no CPU and no GPU, so it never takes a slot from a trial.
"""
from __future__ import annotations

import io
import math
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import pandas as pd

from balpoe.progress import format_duration

from . import figures as figure_module
from .console import default_columns
from .experiment import Experiment, load_experiment
from .html import escape, experiment_sections, page, provenance_sections, stamp, status_text, table_html
from .reader import ExperimentError

APP_NAME = "balpoe-results"
ROUTE_PREFIX = "/"
FIGURE_CACHE_SIZE = 64


class NotFound(Exception):
    pass


class ResultsSite:
    """Everything the page knows, without any web framework: experiments by name, their tables and
    figures (drawn once per experiment version), and the HTML of each page."""

    def __init__(self, storage_path: str | Path, refresh_s: int = 15, ray_dashboard_url: str | None = None):
        self.root = Path(storage_path).resolve()
        self.refresh_s = refresh_s
        self.ray_dashboard_url = ray_dashboard_url
        self._figures: dict[tuple, bytes] = {}
        self._lock = threading.Lock()

    # --- experiments ------------------------------------------------------------------------------
    def folder(self, name: str) -> Path:
        """The experiment folder for NAME, only if it is a real folder directly under the root."""
        if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
            raise NotFound(name)
        candidate = self.root / name
        if candidate.is_symlink() or not candidate.is_dir() or candidate.resolve().parent != self.root:
            raise NotFound(name)
        return candidate

    def experiment(self, name: str) -> Experiment:
        try:
            return load_experiment(self.folder(name))
        except ExperimentError:
            raise NotFound(name) from None

    def experiments(self) -> list[Experiment]:
        found = []
        if not self.root.is_dir():
            return found
        for child in sorted(self.root.iterdir()):
            try:
                found.append(self.experiment(child.name))
            except NotFound:
                continue
        return found

    def index_table(self) -> pd.DataFrame:
        rows = []
        for exp in self.experiments():
            progress = exp.progress()
            best = exp.sorted_trials()[exp.metric].iloc[0] if exp.metric in exp.trials and len(exp.trials) else math.nan
            updated = exp.trials["last_update"].max() if len(exp.trials) else None
            rows.append({"name": exp.name, "kind": exp.kind, "trials": len(exp.trials),
                         **{s: progress[s] for s in ("finished", "asha_stopped", "unfinished", "errored",
                                                    "not_started")},
                         "complete": progress["complete"], "objective": exp.metric, "best": best,
                         "last_update": updated})
        return pd.DataFrame(rows, columns=["name", "kind", "trials", "finished", "asha_stopped", "unfinished",
                                           "errored", "not_started", "complete", "objective", "best",
                                           "last_update"])

    # --- figures ----------------------------------------------------------------------------------
    def figure_png(self, name: str, figure: str, exp: Experiment | None = None) -> bytes:
        """The PNG, drawn once per experiment version (a page and its images share one drawing)."""
        if figure not in figure_module.FIGURES:
            raise NotFound(figure)
        exp = exp or self.experiment(name)
        key = (name, figure, exp.version)
        with self._lock:
            cached = self._figures.get(key)
        if cached is None:
            try:
                fig = figure_module.render(figure, exp)
                buffer = io.BytesIO()
                fig.savefig(buffer, format="png", dpi=110)
                figure_module.plt.close(fig)
                cached = buffer.getvalue()
            except figure_module.NotApplicable as reason:
                cached = reason
            with self._lock:
                if len(self._figures) >= FIGURE_CACHE_SIZE:
                    self._figures.pop(next(iter(self._figures)))
                self._figures[key] = cached
        if isinstance(cached, figure_module.NotApplicable):
            raise cached
        return cached

    def figure_list(self, exp: Experiment) -> tuple[dict, dict]:
        """Figures that apply now (URL by file name) and the others with the reason."""
        srcs, skipped = {}, {}
        for figure in figure_module.FIGURES:
            try:
                self.figure_png(exp.name, figure, exp)
            except figure_module.NotApplicable as reason:
                skipped[figure] = str(reason)
                continue
            srcs[figure] = f"{quote(exp.name)}/figures/{figure}?" + urlencode({"v": abs(hash(exp.version))})
        return srcs, skipped

    # --- pages ------------------------------------------------------------------------------------
    def header_links(self, index: bool = False) -> str:
        links = [] if index else ['<a href="../">all experiments</a>']
        if self.ray_dashboard_url:
            links.append(f'<a href="{escape(self.ray_dashboard_url)}">Ray dashboard</a>')
        return '<p class="note">' + "".join(f"{link} · " for link in links) + f"updated {escape(stamp())}, " \
            f"reloads every {escape(self.refresh_s)} s</p>"

    def index_html(self) -> str:
        table = self.index_table()
        parts = ["<h1>BalPoE studies</h1>", self.header_links(index=True), f'<p class="note">{escape(self.root)}</p>']
        if table.empty:
            parts.append('<p class="note">No experiments here yet: start one with <code>python -m study.run '
                         "baseline</code> or <code>search</code>.</p>")
        else:
            names = [f'<a href="experiments/{escape(quote(n))}">{escape(n)}</a>' for n in table["name"]]
            parts.append(_linked_first_column(table_html(table), names))
        return page("BalPoE studies", parts, self.refresh_s)

    def experiment_html(self, name: str, sort: str | None = None, descending: bool | None = None) -> str:
        exp = self.experiment(name)
        tables = {"trials": exp.sorted_trials(), "summary": exp.summary(), "asha_fidelity": exp.asha_fidelity(),
                  "paper_comparison": exp.paper_comparison()}
        tables = {k: v for k, v in tables.items() if not v.empty}
        parts = [f"<h1>{escape(exp.kind)} '{escape(exp.name)}'</h1>", self.header_links(),
                 f'<p class="note">{escape(exp.path)} · {escape(status_text(exp))}</p>']
        parts += self.running_section(exp)
        if exp.kind == "search" and (exp.path / "optuna.db").exists():
            parts.append(f'<p class="note">Optuna\'s own view: <code>optuna-dashboard sqlite:///'
                         f'{escape(exp.path / "optuna.db")}</code></p>')
        srcs, skipped = self.figure_list(exp)
        parts += experiment_sections(exp, tables, srcs, skipped, trials_table=self.trials_html(exp, sort, descending))
        parts += provenance_sections(exp)
        return page(f"{exp.name} — BalPoE study", parts, self.refresh_s)

    def running_section(self, exp: Experiment) -> list[str]:
        running = exp.running()
        if running.empty:
            return []
        active = running[running["state"] == "running"]
        not_started = exp.progress()["not_started"]
        per_epoch = running["seconds_per_epoch"].median()
        eta = active["eta_s"].max() if len(active) else math.nan
        if not_started and not math.isnan(per_epoch) and exp.stop_epoch:
            eta = (0 if math.isnan(eta) else eta) + not_started * exp.stop_epoch * per_epoch / max(1, len(active))
        shown = running.assign(eta=running["eta_s"].map(_duration), last_report=running["last_report_s_ago"].map(_duration))
        return [f"<h2>Unfinished trials ({len(active)} running)</h2>",
                f'<p class="note">Study ETA about {escape(_duration(eta))} (the slowest running trial, plus '
                f"{escape(not_started)} trials not started yet at the current pace).</p>",
                table_html(shown[["trial_id", "state", "epoch", "epochs", "seconds_per_epoch", "eta", "last_report"]])]

    def trials_html(self, exp: Experiment, sort: str | None, descending: bool | None) -> str:
        trials = exp.sorted_trials()
        if trials.empty:
            return '<p class="note">No trial has started yet.</p>'
        columns = default_columns(exp, trials)
        if sort in trials.columns:
            ascending = not descending if descending is not None else True
            trials = trials.sort_values(sort, ascending=ascending, na_position="last", kind="stable")
        else:
            sort = None

        def href(column: str) -> str:
            flip = "asc" if column == sort and descending else "desc"
            return f"{quote(exp.name)}?" + urlencode({"sort": column, "order": flip})
        return table_html(trials[columns], sort_href=href)


def _linked_first_column(table: str, links: list[str]) -> str:
    """Replace the first cell of each body row (the escaped name) with its link."""
    head, _, body = table.partition("<tbody>")
    rows = body.split("<tr>")
    out = [rows[0]]
    for row, link in zip(rows[1:], links):
        cells = row.split("</td>", 1)
        out.append(f"<td>{link}</td>" + cells[1] if len(cells) == 2 else row)
    return head + "<tbody>" + "<tr>".join(out)


def _duration(seconds: float) -> str:
    return "–" if seconds is None or math.isnan(seconds) else format_duration(seconds)


def _json(table: pd.DataFrame):
    from fastapi import Response
    return Response(table.to_json(orient="records", date_format="iso"), media_type="application/json")


def build_app(site: ResultsSite):
    """The FastAPI app of the page; read-only GET routes."""
    from fastapi import FastAPI, HTTPException, Response
    from fastapi.responses import HTMLResponse

    app = FastAPI(title="BalPoE results", docs_url=None, redoc_url=None, openapi_url=None)

    def guarded(make):
        try:
            return make()
        except NotFound:
            raise HTTPException(status_code=404, detail="no such experiment or figure") from None

    @app.get("/", response_class=HTMLResponse)
    def index():
        return site.index_html()

    @app.get("/experiments/{name}", response_class=HTMLResponse)
    def experiment(name: str, sort: str | None = None, order: str | None = None):
        return guarded(lambda: site.experiment_html(name, sort, None if order is None else order == "desc"))

    @app.get("/experiments/{name}/figures/{figure}")
    def figure(name: str, figure: str):
        try:
            png = guarded(lambda: site.figure_png(name, figure))
        except figure_module.NotApplicable as reason:
            raise HTTPException(status_code=404, detail=str(reason)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/api/experiments")
    def experiments():
        return _json(site.index_table())

    @app.get("/api/experiments/{name}/{table}")
    def table(name: str, table: str):
        views = {"trials": lambda exp: exp.sorted_trials(), "epochs": lambda exp: exp.epochs,
                 "summary": lambda exp: exp.summary(), "running": lambda exp: exp.running()}
        if table not in views:
            raise HTTPException(status_code=404, detail=f"no table {table!r}; tables: {', '.join(views)}")
        return _json(guarded(lambda: views[table](site.experiment(name))))

    return app


def serve_app(storage_path: str, refresh_s: int = 15, ray_dashboard_url: str | None = None):
    """The Ray Serve application (bind it with `serve.run`): one replica that reserves no CPU or GPU."""
    from ray import serve

    site = ResultsSite(storage_path, refresh_s, ray_dashboard_url)
    app = build_app(site)

    @serve.deployment(name="ResultsPage", num_replicas=1, ray_actor_options={"num_cpus": 0, "num_gpus": 0})
    @serve.ingress(app)
    class ResultsPage:
        pass

    return ResultsPage.bind()


def wait_until_up(url: str, timeout_s: float = 60.0) -> None:
    """Serve answers a little after `serve.run` returns; wait for the index to answer 200."""
    import urllib.error
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the results page at {url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.5)
