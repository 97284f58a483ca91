"""The live results page without Ray: its FastAPI app served by uvicorn on 127.0.0.1 in a thread, over
experiment folders written here — damaged ones among them — and under concurrent requests. (The page
on Ray Serve, opened in Chromium, is tests/test_dashboard.py.)"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from balpoe.config import Config
from conftest import assert_refused, eventually  # the page reads folders in the background
from results import load_experiment
from results import app as app_module
from results import snapshots as snapshots_module
from results.app import ResultsSite, build_app
from results.html import render, stamp, table_view
from results.snapshots import Snapshots

ROOT = Path(__file__).resolve().parents[1]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
INJECTED = "<img src=x onerror=alert(1)>"
BASE = Config(dataset="synthetic-lt", imb_factor=0.1, epochs=2, warmup_epochs=1, step1=1, step2=2, batch_size=16,
              save_period=1, device="cpu", download=False).to_dict()


def write_experiment(folder: Path, trials: int = 2, command: str = "python -m study.run baseline") -> Path:
    """A finished 2-epoch baseline: study.json and one trial folder per seed, rows as the trainable reports."""
    folder.mkdir(parents=True)
    settings = {"kind": "baseline", "name": folder.name, "storage_path": str(folder.parent), "max_t": 2,
                "seeds": list(range(1, trials + 1)), "asha": False,
                "objectives": [["val_balanced_acc", "max"]], "base": BASE,
                "versions": {"toolkit": "0.1.0", "command": command}}
    (folder / "study.json").write_text(json.dumps(settings))
    for seed in range(1, trials + 1):
        trial = folder / f"trial_t{seed}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps({"base": BASE, "seed": seed, "stop_epoch": 2}))
        rows = [report_row(epoch, seed, 2) for epoch in (1, 2)]
        (trial / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def report_row(epoch: int, seed: int, stop: int) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "trial_id": f"t{seed}", "seed": seed,
            "val_balanced_acc": 0.1 * epoch + 0.01 * seed, "val_acc": 0.1 * epoch, "time_this_iter_s": 1.0,
            "stop_epoch": stop, "planned_epochs": stop, "tau_list": "0;1;2", "mixup_alpha": 0.4, "num_experts": 3}


def get(url: str) -> tuple[int, bytes]:
    try:
        with OPENER.open(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@contextlib.contextmanager
def served(site: ResultsSite):
    """The page's app on a free loopback port, in a thread; yields its base URL."""
    import uvicorn
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(site), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the page did not start"
            threading.Event().wait(0.05)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


@pytest.fixture
def storage(tmp_path) -> Path:
    root = tmp_path / "runs"
    write_experiment(root / "good")
    write_experiment(root / "other", trials=3)
    return root


def index_rows(base: str) -> dict:
    status, body = get(base + "/api/experiments")
    assert status == 200
    return {row["name"]: row for row in json.loads(body)}


def settled_rows(base: str) -> dict:
    """The index as JSON once no experiment is still being read for the first time."""
    def settled():
        rows = index_rows(base)
        return None if any((row["note"] or "").startswith("being read") for row in rows.values()) else rows
    return eventually(settled)


def test_the_index_and_an_experiment_answer_from_the_files(storage):
    with served(ResultsSite(storage)) as base:
        rows = settled_rows(base)
        assert set(rows) == {"good", "other"}
        assert rows["other"]["finished"] == 3 and rows["other"]["complete"] is True
        assert rows["good"]["best"] == pytest.approx(0.22) and rows["good"]["note"] is None
        status, body = get(base + "/api/experiments/other/trials")
        assert status == 200
        assert [t["trial_id"] for t in json.loads(body)] == ["t3", "t2", "t1"]  # best first
        status, body = get(base + "/")
        assert status == 200 and b'<a href="experiments/good">good</a>' in body
        status, body = get(base + "/experiments/good?sort=seed&order=desc")
        assert status == 200 and b"<h1>baseline 'good'</h1>" in body
        assert body.index(b"<td>t2</td>") < body.index(b"<td>t1</td>")  # sorted by seed, descending


def test_a_change_to_the_files_shows_on_the_next_request(storage):
    def epochs_run():
        status, body = get(base + "/api/experiments/good/trials")
        return {t["trial_id"]: t["epochs_run"] for t in json.loads(body)}
    with served(ResultsSite(storage, recheck_s=0)) as base:
        assert settled_rows(base)["good"]["finished"] == 2
        with open(storage / "good" / "trial_t1" / "result.json", "w") as handle:  # t1 back at epoch 1
            handle.write(json.dumps(report_row(1, 1, 2)) + "\n")
        assert eventually(lambda: epochs_run() == {"t1": 1, "t2": 2})
        write_experiment(storage / "new")
        shutil.rmtree(storage / "other")
        assert set(settled_rows(base)) == {"good", "new"}
        assert get(base + "/experiments/other")[0] == 404


def test_a_changed_folder_is_read_again_in_the_background_while_the_last_reading_answers(storage):
    reads, gate = [], threading.Event()

    def gated(folder):
        if reads:
            gate.wait(30)  # the second reading takes as long as the test says
        reads.append(folder)
        return load_experiment(folder)
    folder = storage / "good"
    snapshots = Snapshots(load=gated, recheck_s=3600)
    first = snapshots.get(folder)
    (folder / "trial_t1" / "result.json").write_text(json.dumps(report_row(1, 1, 2)) + "\n")
    assert snapshots.get(folder) is first  # checked less than recheck_s ago: the files are not looked at
    snapshots.recheck_s = 0
    assert snapshots.get(folder) is first and snapshots.get(folder, wait_s=0) is first  # while it is read again
    gate.set()
    second = eventually(lambda: (latest := snapshots.get(folder)) is not first and latest)
    assert second.experiment.trials.set_index("trial_id").loc["t1", "epochs_run"] == 1
    assert snapshots.get(folder) is second and len(reads) == 2  # files unchanged since: the same reading


def test_requests_at_once_read_each_experiment_once(storage):
    reads = []

    def counted(folder):
        reads.append(folder.name)
        return load_experiment(folder)
    site = ResultsSite(storage)
    site.snapshots = Snapshots(load=counted)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda n: json.loads(site.table_json(("good", "other")[n % 2], "trials")), range(64)))
    assert sorted(reads) == ["good", "other"]
    assert [len(trials) for trials in answers] == [2, 3] * 32


def test_an_experiment_read_the_first_time_holds_up_neither_the_index_nor_its_page(storage):
    gate = threading.Event()

    def slow(folder):
        if folder.name == "good":
            gate.wait(30)
        return load_experiment(folder)
    site = ResultsSite(storage)
    site.snapshots = Snapshots(load=slow)
    with served(site) as base:
        rows = eventually(lambda: (rows := index_rows(base))["other"]["note"] is None and rows)
        assert rows["other"]["finished"] == 3 and rows["good"]["note"].startswith("being read"), rows  # not yet
        status, body = get(base + "/experiments/good")
        assert status == 200 and b"being read" in body
        gate.set()
        assert eventually(lambda: index_rows(base)["good"]["note"] is None)
        assert b"<td>t1</td>" in get(base + "/experiments/good")[1]


def test_a_folder_that_holds_no_experiment_is_looked_at_once_per_change_not_per_request(storage, monkeypatch):
    checked = []
    real_check = snapshots_module.check_experiment_folder
    monkeypatch.setattr(snapshots_module, "check_experiment_folder", lambda folder: (checked.append(folder.name),
                                                                                     real_check(folder)))
    (storage / "notes").mkdir()  # no study.json, no trial folders
    site = ResultsSite(storage, recheck_s=0)
    for _ in range(20):
        assert [row["name"] for row in json.loads(site.index_json())] == ["good", "other"]
    assert checked.count("notes") == 1
    (storage / "notes" / "trial_1").mkdir()
    (storage / "notes" / "trial_1" / "result.json").write_text(json.dumps(report_row(1, 1, 2)) + "\n")
    assert eventually(lambda: "notes" in site.index_json()) and checked.count("notes") == 2


def test_the_index_is_drawn_once_per_change_and_shows_the_time_it_is_served(storage, monkeypatch):
    drawn = counted_renders(monkeypatch)
    site = ResultsSite(storage, recheck_s=0)
    eventually(lambda: "being read" not in site.index_json())  # the index's last change: drawn with it
    drawn.clear()
    pages = [site.index_html() for _ in range(20)]
    assert drawn == [] and all(stamp()[:10] in page and "<!--clock-->" not in page for page in pages)
    write_experiment(storage / "new")
    assert eventually(lambda: "experiments/new" in site.index_html()) and drawn.count("index.html") >= 1


def counted_renders(monkeypatch) -> list[str]:
    """The templates the page renders from now on, in order."""
    drawn = []
    real_render = app_module.render
    monkeypatch.setattr(app_module, "render", lambda template, **context: (drawn.append(template),
                                                                           real_render(template, **context))[1])
    return drawn


def test_the_page_of_an_unreadable_experiment_is_drawn_once_per_change(storage, monkeypatch):
    (storage / "good" / "study.json").write_text("{not json")
    drawn = counted_renders(monkeypatch)
    site = ResultsSite(storage, recheck_s=0)
    pages = [site.experiment_html("good") for _ in range(20)]
    # each time the same page, naming the damaged record
    assert drawn.count("unavailable.html") == 1 and len(set(pages)) == 1 and "study.json" in pages[0], pages[0]


def test_with_a_damaged_experiment_requests_at_once_draw_the_index_once_per_change(storage, monkeypatch):
    (storage / "good" / "study.json").write_text("{not json")
    drawn = counted_renders(monkeypatch)
    with served(ResultsSite(storage, recheck_s=0)) as base:  # every request may look at the files
        assert settled_rows(base)["good"]["note"].startswith("cannot be read now: ")
        drawn.clear()
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: get(base + "/"), range(64)))
        assert drawn == [] and all(status == 200 and b"study.json" in body for status, body in answers)
        write_experiment(storage / "fixed")
        shutil.rmtree(storage / "good")
        shutil.copytree(storage / "fixed", storage / "good")  # repaired: readable again
        assert eventually(lambda: b'<a href="experiments/fixed">' in get(base + "/")[1]
                          and b"study.json" not in get(base + "/")[1])
        changes = drawn.count("index.html")
        with ThreadPoolExecutor(16) as pool:
            assert all(b"study.json" not in body for _, body in pool.map(lambda _: get(base + "/"), range(64)))
        assert 1 <= changes == drawn.count("index.html")


def test_requests_at_once_look_at_a_folder_once_and_the_others_answer_meanwhile(storage, monkeypatch):
    folder = storage / "good"
    snapshots = Snapshots(recheck_s=0)
    first = snapshots.get(folder)
    looks, gate = [], threading.Event()
    real_fingerprint = snapshots_module.fingerprint
    monkeypatch.setattr(snapshots_module, "fingerprint", lambda path: (looks.append(path), gate.wait(30),
                                                                        real_fingerprint(path))[2])
    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(snapshots.get, folder) for _ in range(8)]
        try:
            assert eventually(lambda: sum(answer.done() for answer in answers) == 7)  # one looks, seven answered
            assert looks == [folder]
        finally:
            gate.set()
        assert all(answer.result() is first for answer in answers)  # the files did not change


def test_while_one_request_lists_the_storage_the_others_answer_from_the_last_listing(storage, monkeypatch):
    site = ResultsSite(storage, recheck_s=0)
    listed = eventually(lambda: "being read" not in (index := site.index_json()) and index)
    gate, listings = threading.Event(), []
    real_names = site.names
    monkeypatch.setattr(site, "names", lambda: (listings.append(1), gate.wait(30), real_names())[2])
    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(site.index_json) for _ in range(8)]
        try:
            assert eventually(lambda: sum(answer.done() for answer in answers) == 7) and len(listings) == 1
        finally:
            gate.set()
        assert all(answer.result() == listed for answer in answers)


def test_a_first_reading_never_waits_for_figures_being_drawn(storage):
    write_experiment(storage / "third")
    gate = threading.Event()
    snapshots = Snapshots(prepare=lambda snapshot: gate.wait(30))  # drawing the figures takes as long as it takes
    try:
        first = [snapshots.get(storage / name) for name in ("good", "other")]  # both wait to be drawn
        third = snapshots.get(storage / "third", wait_s=10)
        assert not third.pending and third.experiment is not None and all(s.experiment is not None for s in first)
    finally:
        gate.set()


def make_fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def make_folder(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


@pytest.mark.parametrize("record, damage", [("study.json", make_folder), ("study.json", make_fifo)])
def test_an_unreadable_experiment_is_flagged_and_the_others_answer(storage, record, damage):
    damage(storage / "good" / record)
    with served(ResultsSite(storage)) as base:
        rows = settled_rows(base)
        assert rows["good"]["note"].startswith("cannot be read now: ") and "study.json" in rows["good"]["note"]
        assert rows["other"]["finished"] == 3
        status, body = get(base + "/")
        assert status == 200 and b"study.json" in body and b'<a href="experiments/other">other</a>' in body
        status, body = get(base + "/experiments/good")
        assert status == 200 and b"This experiment cannot be read now" in body and b"study.json" in body
        status, body = get(base + "/api/experiments/good/trials")
        assert status == 409 and "study.json" in json.loads(body)["detail"]
        assert get(base + "/experiments/other")[0] == 200


@pytest.mark.parametrize("record, damage, kind", [("result.json", make_folder, "a folder"),
                                                  ("result.json", make_fifo, "a named pipe"),
                                                  ("params.json", make_folder, "a folder"),
                                                  ("error.txt", make_fifo, "a named pipe")])
def test_a_damaged_trial_record_is_flagged_on_its_page_and_the_other_trials_show(storage, record, damage, kind):
    damage(storage / "good" / "trial_t1" / record)
    with served(ResultsSite(storage)) as base:
        rows = settled_rows(base)
        assert rows["good"]["note"] == "1 warning(s) on its page" and rows["good"]["trials"] == 2
        status, body = get(base + "/experiments/good")
        flagged = [line for line in body.decode().splitlines() if line.startswith('<p class="warn">trial ')]
        assert status == 200 and flagged == [f'<p class="warn">trial t1: damaged: {record}: {kind}, not a regular '
                                             f'file</p>']
        status, body = get(base + "/api/experiments/good/trials")
        assert status == 200 and {t["trial_id"] for t in json.loads(body)} == {"t1", "t2"}


def test_a_folder_removed_while_it_is_read_leaves_the_index_answering(storage):
    def removed_midway(folder):
        if folder.name == "good":
            shutil.rmtree(folder)
        return load_experiment(folder)
    site = ResultsSite(storage)
    site.snapshots = Snapshots(load=removed_midway)
    with served(site) as base:
        assert eventually(lambda: set(index_rows(base)) == {"other"})
        assert get(base + "/")[0] == 200


@pytest.mark.parametrize("path", ["/experiments/" + "a" * 5000, "/api/experiments/" + "a" * 5000 + "/trials",
                                  "/experiments/" + "a" * 5000 + "/figures/reliability.png",
                                  "/experiments/..", "/experiments/%2E%2E", "/experiments/linked",
                                  "/api/experiments/good/secrets", "/experiments/good/figures/..%2Fstudy.json"])
def test_names_that_are_no_experiment_here_are_404(storage, tmp_path, path):
    (storage / "linked").symlink_to(write_experiment(tmp_path / "outside"), target_is_directory=True)
    with served(ResultsSite(storage)) as base:
        status, body = get(base + path)
        assert status == 404 and b"kind" not in body


def test_values_from_the_folders_are_escaped_on_every_page(storage, tmp_path):
    write_experiment(storage / INJECTED, command=f"python -m study.run baseline --name '{INJECTED}'")
    escaped = b"&lt;img src=x onerror=alert(1)&gt;"
    with served(ResultsSite(storage, ray_dashboard_url='http://x/"><script>')) as base:
        for path in ("/", "/experiments/" + urllib.request.quote(INJECTED, safe="")):
            status, body = get(base + path)
            assert status == 200 and INJECTED.encode() not in body and escaped in body
            assert b"<script>" not in body and b"&#34;&gt;&lt;script&gt;" in body


def test_the_offline_report_shares_the_templates_and_escapes_too(storage):
    from results.report import write_report
    folder = write_experiment(storage / "evil", command=f"python -m study.run baseline --name '{INJECTED}'")
    page = write_report(load_experiment(folder)).read_text()
    assert INJECTED not in page and "--name &#39;&lt;img src=x onerror=alert(1)&gt;&#39;" in page
    assert "<h1>baseline 'evil'</h1>" in page and 'http-equiv="refresh"' not in page  # it does not reload
    assert '<li>trials: <a href="tables/trials.csv">csv</a> · <a href="tables/trials.parquet">parquet</a>' in page
    assert '<figure><img class="wide" src="figures/learning_curves.png" alt="learning_curves.png">' in page


def test_a_table_view_says_constant_columns_once_and_keeps_links():
    import pandas as pd
    table = pd.DataFrame({"name": ["a&b", "c"], "dataset": ["x", "x"], "best": [0.123456, float("nan")]})
    view = table_view(table, row_hrefs=["experiments/a%26b", "experiments/c"], max_rows=1)
    assert view.common == [("dataset", "x")] and view.more == 1
    assert view.rows == [("experiments/a%26b", ["a&b", "0.1235"])]
    html = render("index.html", title="t", root="/r", experiments=view, links=[], updated="now", refresh_s=5)
    assert '<td><a href="experiments/a%26b">a&amp;b</a></td><td>0.1235</td>' in html
    assert "All rows: dataset x" in html and "1 more rows." in html


def test_the_load_benchmark_runs_at_a_tiny_size():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "page_load.py"), "--size", "tiny", "--damaged",
                          "1", "--concurrency", "8", "--timeout", "60"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("3 experiments (1 damaged), ") and "the app alone; 8 concurrent requests" in lines[0]
    assert lines[1].startswith("first reading of every experiment: ") and lines[2].split()[0] == "route"
    routes = {line.split()[0]: line.split()[1:] for line in lines[3:-1]}
    assert list(routes) == ["/", "/api/experiments", "/experiments/search-large",
                            "/api/experiments/search-large/trials"]
    assert all(figures[1:3] == ["8", "0"] for figures in routes.values())  # all answered, none failed
    assert lines[-1].startswith("page process peak memory ") and lines[-1].endswith(" MB")


@pytest.mark.parametrize("argv, shown", [(["--concurrency", "0"], ["10000", "(got 0)"]),  # the bound, the value
                                         (["--timeout", "-1"], ["3600", "(got -1.0)"]),
                                         (["--report-every", "nan"], ["3600", "(got nan)"]),
                                         (["--damaged", "-1"], ["1000", "(got -1)"])])
def test_the_load_benchmark_answers_bad_arguments_in_one_line(argv, shown):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "page_load.py"), *argv],
                         capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout, len(run.stderr.splitlines())) == (2, "", 1), run.stderr
    assert_refused(run.stderr, argv[0], *shown)
