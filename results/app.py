"""The live results page: the `results` views of every experiment under a storage path, served by
Ray Serve from the cluster that runs the studies.

    /                                        index of experiments (kind, trials by status, best, last update)
    /experiments/NAME                        one experiment: running trials with ETAs, sortable trials
                                             table, figures, statistics, settings (reloads on its own)
    /experiments/NAME/figures/FILE.png       one figure, drawn from the current files
    /api/experiments                         the index as JSON
    /api/experiments/NAME/{trials,epochs,summary,running}   the tables as JSON records

Read-only: it opens experiment folders for reading and writes nothing. NAME must be a real folder
directly under the storage path (no `..`, no absolute path, no symlink out of it, no name too long for
a folder): anything else is a 404. An experiment that cannot be read now (damaged files) keeps its row
on the index with a `note` saying why, its page says so, and its JSON tables answer 409 with the
reason; the other experiments are not affected.

Each experiment is read once per change of its files, in the background (`snapshots.py`); requests
are answered from the last reading, and the tables, JSON, figures and HTML drawn from it are kept with
it (the index and the page of an experiment that cannot be read are drawn once per change, with the
clock put in per request), so a page polled by a team costs a few `stat` calls per trial a second.
Folder names that are no UTF-8 are shown, linked and answered by their printable form (`bad\\xff`).
The handlers are plain functions: FastAPI runs them in its thread pool, off the event loop. The replica
reserves no CPU and no GPU, so it never takes a slot from a trial.
"""
from __future__ import annotations

import io
import math
import threading
import time
from urllib.parse import quote, urlencode

import pandas as pd
from markupsafe import Markup

from . import figures as figure_module
from .console import default_columns
from .experiment import Experiment
from .html import experiment_context, render, stamp, table_view
from .in_epoch import capped, format_eta, format_silence
from .storage_urls import dashboard_command
from .reader import printable
from .snapshots import NotAnExperiment, Snapshot, Snapshots
from .storage import Location, location

APP_NAME = "balpoe-results"
ROUTE_PREFIX = "/"
NAME_MAX = 255                  # bytes in one file name (Linux, macOS): longer is no folder here
MAX_ONGOING_REQUESTS = 1000     # per replica; a team's burst waits in the replica's own queue (the handlers are
                                # cheap once read): past the cap, Serve's router retries with backoff, and 200
                                # requests at a cap of 100 left some of them waiting 3-15 s
REQUEST_TIMEOUT_S = 300         # Serve's proxy answers 408 past this (the first JSON of a huge experiment
                                # waits for its first reading: minutes); the reading goes on for the next
INDEX_COLUMNS = ["name", "kind", "trials", "finished", "asha_stopped", "unfinished", "errored", "not_started",
                 "complete", "objective", "best", "last_update", "note"]
FIRST_READING_WAIT_S = 5.0      # a page waits this long for an experiment never read before, then says
                                # "being read" (its JSON tables wait until it is read)
DRAWING = threading.Lock()      # pyplot is not thread-safe: one figure drawn at a time
CLOCK = Markup("<!--clock-->")  # where a page drawn once per change shows the time it is served


class NotFound(Exception):
    pass


class Unreadable(Exception):
    """The experiment is there but cannot be read now; the message says why."""


class ResultsSite:
    """Everything the page knows, without any web framework: experiments by name, their tables and
    figures (each computed once per reading of the folder), and the HTML of each page."""

    def __init__(self, storage_path: str | Location, refresh_s: int = 15, ray_dashboard_url: str | None = None,
                 recheck_s: float = 1.0):
        self.root = location(storage_path).resolve()
        self.refresh_s = refresh_s
        self.ray_dashboard_url = ray_dashboard_url
        self.snapshots = Snapshots(recheck_s=recheck_s, prepare=self.prepare)
        self._found = None              # (time.monotonic() when listed, (name, snapshot) of each experiment)
        self._listing = threading.Lock()  # one request lists the root at a time; the others take the last listing
        self._index = None              # (the snapshots it was made from, the index)

    # --- experiments ------------------------------------------------------------------------------
    def folder(self, name: str) -> Location:
        """The experiment folder for NAME, only if it is a real folder directly under the root. A folder
        whose name is no UTF-8 goes by its printable name (`bad\\xff`), as the index shows and links it."""
        if not name or name in (".", "..") or any(c in name for c in "/\0") or \
                len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise NotFound(name)
        if "\\" in name:
            real = next((real for real in self.names() if real != printable(real) and printable(real) == name), None)
            if real is None:
                raise NotFound(name)
            name = real
        candidate = self.root / name
        try:
            if candidate.is_symlink() or not candidate.is_dir() or candidate.resolve().parent != self.root:
                raise NotFound(name)
        except (OSError, RuntimeError):  # unreadable, or gone while looked at
            raise NotFound(name) from None
        return candidate

    def snapshot(self, name: str, wait_s: float | None = None) -> Snapshot:
        """The last reading of NAME; a placeholder when its first reading takes longer than `wait_s`."""
        try:
            return self.snapshots.get(self.folder(name), wait_s)
        except NotAnExperiment:
            raise NotFound(name) from None

    def prepare(self, snapshot: Snapshot) -> None:
        """Before a new reading replaces the last one: its index row and its page, figures included,
        so that no request waits for them."""
        exp = snapshot.experiment
        snapshot.view("index row", lambda: index_row(exp.name, snapshot))
        snapshot.view(("page", None, None), lambda: self.experiment_context(snapshot, None, None))

    def readable(self, name: str) -> tuple[Snapshot, Experiment]:
        """The current snapshot of NAME and its experiment; Unreadable when it cannot be read now."""
        snapshot = self.snapshot(name)
        if snapshot.experiment is None:
            raise Unreadable(f"experiment {name!r} cannot be read now: {snapshot.problem}")
        return snapshot, snapshot.experiment

    def experiment(self, name: str) -> Experiment:
        return self.readable(name)[1]

    def names(self) -> list[str]:
        try:
            children = sorted(child.name for child in self.root.iterdir())
        except OSError:  # the storage folder is gone or unreadable: nothing to list
            return []
        return children

    def current(self) -> tuple[tuple[str, Snapshot], ...]:
        """(name, current snapshot) of every experiment under the root, listed at most every `recheck_s`
        (as each folder is looked at) and by one request at a time: a burst of requests lists the root
        once, and while one request lists it (waiting for a new folder's first reading, perhaps) the
        others answer from the last listing."""
        kept = self._found
        if kept is not None and time.monotonic() - kept[0] < self.snapshots.recheck_s:
            return kept[1]
        if not self._listing.acquire(blocking=kept is None):
            return kept[1]
        try:
            kept, start = self._found, time.monotonic()
            if kept is not None and start - kept[0] < self.snapshots.recheck_s:
                return kept[1]  # listed while this request waited for the first listing
            found, names = [], self.names()
            for name in names:
                try:
                    found.append((name, self.snapshot(name, FIRST_READING_WAIT_S)))
                except NotFound:
                    continue
            self.snapshots.keep_only({self.root / name for name in names})  # what holds no experiment is kept too
            self._found = (start, tuple(found))
            return self._found[1]
        finally:
            self._listing.release()

    def index(self, found: tuple[tuple[str, Snapshot], ...]) -> dict:
        """The index table, its JSON and its page, made once per set of snapshots (the change token: a
        snapshot is replaced only when its folder's files change)."""
        kept = self._index
        if kept is not None and len(kept[0]) == len(found) and \
                all(a == b and s is t for (a, s), (b, t) in zip(kept[0], found)):
            return kept[1]
        table = pd.DataFrame([snapshot.view("index row", lambda: index_row(name, snapshot))
                              for name, snapshot in found], columns=INDEX_COLUMNS)
        shown = table if table["note"].notna().any() else table.drop(columns="note")
        view = table_view(shown, row_hrefs=[f"experiments/{quote(n)}" for n in table["name"]]) if len(table) else None
        index = {"table": table, "json": _records(table),
                 "html": render("index.html", title="BalPoE studies", root=str(self.root), experiments=view,
                                **self.page_header(index=True, updated=CLOCK))}
        self._index = (found, index)
        return index

    def index_table(self) -> pd.DataFrame:
        return self.index(self.current())["table"]

    def index_json(self) -> str:
        return self.index(self.current())["json"]

    def table_json(self, name: str, table: str) -> str:
        """A table as JSON records; all but `running` (whose ages change by the second) computed once
        per reading of the experiment."""
        snapshot, exp = self.readable(name)
        views = {"trials": exp.sorted_trials, "epochs": lambda: exp.epochs, "summary": exp.summary}
        if table == "running":
            return _records(exp.running())
        return snapshot.view(("json", table), lambda: _records(views[table]()))

    # --- figures ----------------------------------------------------------------------------------
    def figure_png(self, name: str, figure: str) -> bytes:
        """The PNG, drawn once per reading of the experiment (a page and its images share one drawing)."""
        if figure not in figure_module.FIGURES:
            raise NotFound(figure)
        return self.drawn(self.readable(name)[0], figure)

    @staticmethod
    def drawn(snapshot: Snapshot, figure: str) -> bytes:
        png = snapshot.view(("figure", figure), lambda: _draw(figure, snapshot.experiment))
        if isinstance(png, figure_module.NotApplicable):
            raise png
        return png

    def figure_list(self, snapshot: Snapshot) -> tuple[dict, dict]:
        """Figures that apply now (URL by file name) and the others with the reason."""
        exp = snapshot.experiment
        srcs, skipped = {}, {}
        for figure in figure_module.FIGURES:
            try:
                self.drawn(snapshot, figure)
            except figure_module.NotApplicable as reason:
                skipped[figure] = str(reason)
                continue
            srcs[figure] = f"{quote(printable(exp.name))}/figures/{figure}?" + urlencode({"v": abs(hash(exp.version))})
        return srcs, skipped

    # --- pages ------------------------------------------------------------------------------------
    def page_header(self, index: bool = False, updated: str | None = None) -> dict:
        """`updated`: the time shown (now when not given; CLOCK in a page drawn once for many requests)."""
        links = [] if index else [("all experiments", "../")]
        if self.ray_dashboard_url:
            links.append(("Ray dashboard", self.ray_dashboard_url))
        return {"links": links, "updated": updated or stamp(), "refresh_s": self.refresh_s}

    def index_html(self) -> str:
        return served_now(self.index(self.current())["html"])

    def experiment_html(self, name: str, sort: str | None = None, descending: bool | None = None) -> str:
        snapshot = self.snapshot(name, FIRST_READING_WAIT_S)
        exp = snapshot.experiment
        if exp is None:
            return served_now(snapshot.view("unavailable page", lambda: render(
                "unavailable.html", title=f"{name} — BalPoE study", name=name, pending=snapshot.pending,
                problem=snapshot.problem, **self.page_header(updated=CLOCK))))
        if sort not in exp.trials.columns:
            sort, descending = None, None
        context = snapshot.view(("page", sort, descending),
                                lambda: self.experiment_context(snapshot, sort, descending))
        storage = exp.optuna_storage  # the command shows no password
        return snapshot.page((sort, descending), lambda: render(
            "live_experiment.html", **context, **self.running_section(exp), **self.page_header(),
            optuna_dashboard=dashboard_command(storage) if storage else None))

    def experiment_context(self, snapshot: Snapshot, sort: str | None, descending: bool | None) -> dict:
        exp = snapshot.experiment
        tables = {"trials": exp.sorted_trials(), "summary": exp.summary(), "asha_fidelity": exp.asha_fidelity(),
                  "paper_comparison": exp.paper_comparison()}
        tables = {k: v for k, v in tables.items() if not v.empty}
        srcs, skipped = self.figure_list(snapshot)
        return experiment_context(exp, tables, srcs, skipped, trials_table=self.trials_view(exp, sort, descending))

    def running_section(self, exp: Experiment) -> dict:
        """The unfinished trials with their position inside the epoch and their ETAs, as of now (never kept:
        the positions move and the ages change by the second; a stalled trial says how long it is silent)."""
        running = exp.running()
        if running.empty:
            return {"running": None}
        active = running[running["state"] == "running"]
        not_started = exp.progress()["not_started"]
        per_epoch = running["seconds_per_epoch"].median()
        eta = active["eta_s"].max() if len(active) else math.nan
        if not_started and not math.isnan(per_epoch) and exp.stop_epoch:
            later = not_started * exp.stop_epoch * per_epoch / max(1, len(active))
            eta = capped((0 if math.isnan(eta) else eta) + later)
        shown = running.assign(
            state=[f"stalled {format_silence(silent)}" if state == "stalled" else state
                   for state, silent in zip(running["state"], running["silent_s"])],
            images_per_s=running["images_per_s"].round(), eta=running["eta_s"].map(_duration),
            last_report=running["last_report_s_ago"].map(_duration))
        columns = ["trial_id", "state", "epoch", "epochs", "position", "images_per_s", "seconds_per_epoch", "eta",
                   "last_report"]
        return {"running": table_view(shown[columns]), "running_count": len(active), "study_eta": _duration(eta),
                "not_started": not_started}

    def trials_view(self, exp: Experiment, sort: str | None, descending: bool | None):
        trials = exp.sorted_trials()
        if trials.empty:
            return None
        columns = default_columns(exp, trials)
        if sort is not None:
            ascending = not descending if descending is not None else True
            trials = trials.sort_values(sort, ascending=ascending, na_position="last", kind="stable")

        def href(column: str) -> str:
            flip = "asc" if column == sort and descending else "desc"
            return f"{quote(printable(exp.name))}?" + urlencode({"sort": column, "order": flip})
        return table_view(trials[columns], sort_href=href)


def index_row(name: str, snapshot: Snapshot) -> dict:
    """One experiment on the index: trials by status, the best objective value, the last update."""
    exp, name = snapshot.experiment, printable(name)
    if exp is None:
        return {"name": name, "note": "being read; reload in a moment" if snapshot.pending
                else f"cannot be read now: {snapshot.problem}"}
    progress, warnings = exp.progress(), exp.warnings()
    best = exp.sorted_trials()[exp.metric].iloc[0] if exp.metric in exp.trials and len(exp.trials) else math.nan
    updated = exp.trials["last_update"].max() if len(exp.trials) else None
    return {"name": name, "kind": exp.kind, "trials": len(exp.trials),
            **{s: progress[s] for s in ("finished", "asha_stopped", "unfinished", "errored", "not_started")},
            "complete": progress["complete"], "objective": exp.metric, "best": best, "last_update": updated,
            "note": f"{len(warnings)} warning(s) on its page" if warnings else None}


def _draw(figure: str, exp: Experiment) -> bytes | figure_module.NotApplicable:
    with DRAWING:
        try:
            fig = figure_module.render(figure, exp)
        except figure_module.NotApplicable as reason:
            return reason
        try:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=110)
        finally:
            figure_module.plt.close(fig)
    return buffer.getvalue()


def _duration(seconds: float) -> str:
    return "–" if seconds is None or math.isnan(seconds) else format_eta(seconds)


def served_now(html: str) -> str:
    """A page drawn once for many requests, with the time it is served in its header."""
    return html.replace(CLOCK, stamp(), 1)


def _records(table: pd.DataFrame) -> str:
    return table.to_json(orient="records", date_format="iso")


def build_app(site: ResultsSite):
    """The FastAPI app of the page; read-only GET routes, each a plain function (FastAPI runs those in
    its thread pool, so a reading of the folder never blocks the event loop)."""
    from fastapi import FastAPI, HTTPException, Response
    from fastapi.responses import HTMLResponse

    app = FastAPI(title="BalPoE results", docs_url=None, redoc_url=None, openapi_url=None)

    def guarded(make):
        try:
            return make()
        except NotFound:
            raise HTTPException(status_code=404, detail="no such experiment or figure") from None
        except Unreadable as reason:
            raise HTTPException(status_code=409, detail=str(reason)) from None

    def json_response(text: str) -> Response:
        return Response(text, media_type="application/json")

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
        return json_response(site.index_json())

    @app.get("/api/experiments/{name}/{table}")
    def table(name: str, table: str):
        tables = ("trials", "epochs", "summary", "running")
        if table not in tables:
            raise HTTPException(status_code=404, detail=f"no table {table!r}; tables: {', '.join(tables)}")
        return json_response(guarded(lambda: site.table_json(name, table)))

    return app


def serve_app(storage_path: str, refresh_s: int = 15, ray_dashboard_url: str | None = None):
    """The Ray Serve application (bind it with `serve.run`): one replica that reserves no CPU or GPU
    (trials keep every slot), taking up to MAX_ONGOING_REQUESTS at once; the page's state (the
    snapshots) is built on the replica."""
    from ray import serve

    def build():
        return build_app(ResultsSite(storage_path, refresh_s, ray_dashboard_url))

    @serve.deployment(name="ResultsPage", num_replicas=1, max_ongoing_requests=MAX_ONGOING_REQUESTS,
                      ray_actor_options={"num_cpus": 0, "num_gpus": 0})
    @serve.ingress(build)
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
