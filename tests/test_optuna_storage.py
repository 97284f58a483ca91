"""`--optuna-storage`: Optuna's record of a search in a database of its own (a real PostgreSQL server started
here, as the `postgres` user on a private port and socket folder) or a journal file; every bad URL named
before Ray starts, within a bounded time, and no password in anything printed."""
from __future__ import annotations

import contextlib
import glob
import html
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.trial import TrialState
from ray import tune

from balpoe.config import Config
from conftest import SMOKE, SMOKE_RANKED, assert_refused
from results import load_experiment
from results.app import ResultsSite
from results.experiment import read_optuna
from results.storage_urls import CONNECT_TIMEOUT_S, resolved_storage_url
from results.settings import StudySettings
from search_spaces import get_space, resolve_ranges
from results.reader import ExperimentError, read_trial, trial_folders
from study.run import main
from study.searcher import OptunaSearcher

PASSWORD = "s3cret-pw"
SPACE = {"mixup_alpha": tune.uniform(0.0, 1.0), "tau_spread": tune.uniform(0.0, 4.0)}


# --- a PostgreSQL server of our own -------------------------------------------------------------------
def postgres_bin() -> Path | None:
    """Debian's PostgreSQL keeps its programs out of PATH, under /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    candidates = [found] if found else sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).resolve().parent if candidates else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Postgres:
    port: int
    root: Path  # its data, socket and log
    bin_dir: Path
    as_postgres: list[str]

    def url(self, database: str = "studies", password: str = PASSWORD, port: int | None = None) -> str:
        return f"postgresql://postgres:{password}@127.0.0.1:{port or self.port}/{database}"

    def ctl(self, *args: str) -> None:
        subprocess.run([*self.as_postgres, str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-w", *args],
                       check=True, capture_output=True)

    def start(self) -> None:
        self.ctl("-l", str(self.root / "server.log"), "-o",
                 f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self.ctl("-m", "fast", "stop")

    def client(self, program: str, *args: str) -> None:
        """`createdb`, `dropdb` or `psql` as the `postgres` user, over TCP."""
        subprocess.run([str(self.bin_dir / program), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", *args],
                       check=True, capture_output=True, env={**os.environ, "PGPASSWORD": PASSWORD})


@contextlib.contextmanager
def postgres_server():
    """A PostgreSQL server with password authentication and a database `studies`; stopped at the end.
    `initdb` refuses root, so as root the server runs as the `postgres` user in a folder it owns."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's programs are not installed (Debian: apt-get install postgresql)")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="balpoe-pg-"))
    (root / "password").write_text(PASSWORD + "\n")
    if as_postgres:
        shutil.chown(root, "postgres"), shutil.chown(root / "password", "postgres")
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "-E", "UTF8",
                    "--auth=scram-sha-256", f"--pwfile={root / 'password'}"], check=True, capture_output=True)
    server = Postgres(free_port(), root, bin_dir, as_postgres)
    server.start()
    try:
        server.client("createdb", "studies")
        yield server
    finally:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture(autouse=True)
def no_ray_left():
    yield
    import ray
    if ray.is_initialized():
        ray.shutdown()


# --- bad URLs: one line naming the option, exit 2, before Ray -------------------------------------------
def refused(argv: list[str], storage: Path, capsys) -> str:
    import ray
    code = main(["search", *SMOKE, "--num-samples", "2", *argv, "--storage-path", str(storage)])
    err = "\n".join(line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: port"))
    assert code == 2, err
    assert err.startswith("error: --optuna-storage: ") and "\n" not in err and "Traceback" not in err
    assert PASSWORD not in err and not ray.is_initialized()
    assert [p.name for p in storage.rglob("*") if p.is_file()] in ([], [".study.lock"])  # nothing left behind
    return err


@pytest.mark.parametrize("url, shown", [  # what the message must show: the URL or its scheme, the fix
    ("not-a-url", ["'not-a-url'", "postgresql://", "journal:///"]),
    ("s3://bucket/optuna", ["s3://", "postgresql://", "journal:///"]),
    ("sqlite://", ["sqlite://", "sqlite:////PATH"]),  # in memory: the fix is a file
    ("journal://", ["journal:// ", "journal:///"]),
    ("journal:///nonexistent-folder/optuna.log", [" /nonexistent-folder ", "journal:///nonexistent-folder/optuna.log"]),
    ("sqlite:////nonexistent-folder/optuna.db", [" /nonexistent-folder ", "sqlite:////nonexistent-folder/optuna.db"]),
    ("nosuchdb://u:" + PASSWORD + "@host/db", ["nosuchdb://u:***@host/db", "sqlalchemy.dialects:nosuchdb"]),
])
def test_a_malformed_or_impossible_url_is_named(url, shown, tmp_path, capsys):
    assert_refused(refused(["--optuna-storage", url], tmp_path, capsys), "--optuna-storage", *shown)


def test_a_journal_file_that_is_no_journal_is_named(tmp_path, capsys):
    notes = tmp_path / "notes.log"
    notes.write_text("my notes, not Optuna's\n")
    err = refused(["--optuna-storage", f"journal://{notes}"], tmp_path / "runs", capsys)
    assert_refused(err, "--optuna-storage", f"{notes} ", "b'my notes, not Optuna'")  # the file, and its first line
    assert notes.read_text() == "my notes, not Optuna's\n"


def test_a_missing_driver_is_named_with_the_extra_that_installs_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails, as where it is not installed
    err = refused(["--optuna-storage", f"postgresql://me:{PASSWORD}@127.0.0.1:1/db"], tmp_path, capsys)
    assert_refused(err, "--optuna-storage", " psycopg", "pip install 'balpoe-study[postgres]'")  # the package, the fix


def test_a_port_where_nothing_listens_is_named(tmp_path, capsys):
    port = free_port()
    err = refused(["--optuna-storage", f"postgresql://me:{PASSWORD}@127.0.0.1:{port}/db"], tmp_path, capsys)
    # the URL without its password, and the cause libpq gives
    assert_refused(err, "--optuna-storage", f"postgresql://me:***@127.0.0.1:{port}/db ", "Connection refused")


@pytest.mark.parametrize("query", ["", "?connect_timeout=600", "?connect_timeout=0"])  # 0: libpq waits for ever
def test_a_server_that_never_answers_is_given_up_on_within_the_timeout(query, tmp_path, capsys):
    """The URL's own connect_timeout may shorten the bound, never lengthen it."""
    with socket.socket() as silent:  # the kernel accepts the connection; nothing ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        err = refused(["--optuna-storage", f"postgresql://me@127.0.0.1:{silent.getsockname()[1]}/db{query}"],
                      tmp_path, capsys)
    assert f"(no answer within {CONNECT_TIMEOUT_S} s)" in err
    assert time.monotonic() - started < 3 * CONNECT_TIMEOUT_S


def damaged_sqlite(path: Path) -> Path:
    """An SQLite database whose pages after the first are overwritten: the header is intact."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x)")
        connection.executemany("INSERT INTO t VALUES (?)", [("x" * 100,)] * 500)
    connection.close()
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
@pytest.mark.parametrize("shape", ["named pipe", "device", "damaged"])
def test_a_pipe_a_device_or_a_damaged_file_is_refused_at_once(kind, shape, tmp_path, capsys):
    """A pipe would be waited on for ever, /dev/null would take every record and keep none, a damaged file
    would fail once trials run: each is named before Ray starts."""
    path = tmp_path / f"optuna.{kind}"
    if shape == "named pipe":
        os.mkfifo(path)
    elif shape == "device":
        path = Path("/dev/null")
    elif kind == "sqlite":
        damaged_sqlite(path)
    else:
        path.write_text('{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}\n{"op_code": 0, "w\n')
    url = f"sqlite:///{path}" if kind == "sqlite" else f"journal://{path}"
    started = time.monotonic()
    err = refused(["--optuna-storage", url], tmp_path / "runs", capsys)
    assert str(path) in err and time.monotonic() - started < CONNECT_TIMEOUT_S


@pytest.mark.parametrize("lock", ["held", "dangling"])
def test_a_journal_lock_left_by_a_dead_driver_is_named_within_the_bound(lock, tmp_path, capsys):
    """Optuna waits 30 s for a lock its holder never releases, and for ever when the lock points nowhere."""
    journal = tmp_path / "optuna.log"
    JournalStorage(JournalFileBackend(str(journal)))  # an empty journal
    if lock == "held":
        assert JournalFileSymlinkLock(str(journal)).acquire()  # and never released: its driver died
    else:
        os.symlink(tmp_path / "moved-away.log", f"{journal}.lock")
    started = time.monotonic()
    err = refused(["--optuna-storage", f"journal://{journal}"], tmp_path / "runs", capsys)
    assert f"{journal}.lock" in err and time.monotonic() - started < CONNECT_TIMEOUT_S
    assert os.path.lexists(f"{journal}.lock")  # named, not removed: another search may be writing


def test_a_wrong_password_and_a_missing_database_are_named(postgres, tmp_path, capsys):
    err = refused(["--optuna-storage", postgres.url(password="wrong-pw")], tmp_path, capsys)
    assert 'password authentication failed for user "postgres"' in err and "wrong-pw" not in err  # the server's words
    err = refused(["--optuna-storage", postgres.url(database="nope")], tmp_path, capsys)
    assert_refused(err, "--optuna-storage", f"postgresql://postgres:***@127.0.0.1:{postgres.port}/nope ",
                   'database "nope" does not exist')  # the URL, and the server's answer


def test_a_name_already_in_the_shared_database_is_refused(postgres, tmp_path, capsys):
    optuna.create_study(study_name="taken", storage=postgres.url())
    err = refused(["--name", "taken", "--optuna-storage", postgres.url()], tmp_path, capsys)
    shared = f"postgresql://postgres:***@127.0.0.1:{postgres.port}/studies"
    assert_refused(err, "--optuna-storage", "'taken'", then=shared)  # the database, then the name it already holds


def test_relative_file_urls_are_made_absolute_where_the_search_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolved_storage_url("sqlite:///records/optuna.db") == f"sqlite:///{tmp_path}/records/optuna.db"
    assert resolved_storage_url("journal://records/optuna.log") == f"journal://{tmp_path}/records/optuna.log"
    for kept in ("sqlite:////abs/optuna.db", "journal:///abs/optuna.log", "postgresql://me@db/optuna"):
        assert resolved_storage_url(kept) == kept


def started_search(folder: Path, url: str) -> Path:
    """The folder of a search Tune had started, whose Optuna record is at `url`."""
    folder.mkdir(parents=True)
    StudySettings(kind="search", name=folder.name, storage_path=str(folder.parent), base=Config(), max_t=200,
                  grace_period=165, space="alpha_tau", ranges=resolve_ranges(get_space("alpha_tau"), {}),
                  startup_trials=2, optuna_storage=url).save(folder)
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    return folder


@pytest.mark.parametrize("record", ["journal", "study"])
def test_a_started_search_whose_record_is_gone_is_not_resumed(record, tmp_path, capsys):
    """The search's journal file is gone, or holds no study of that name: resuming would start TPE afresh
    and lose which Optuna trial is which, so it is refused before Ray starts, and nothing is created."""
    import ray
    journal = tmp_path / "records" / "optuna.log"
    journal.parent.mkdir()
    if record == "study":
        optuna.create_study(study_name="another-search", storage=JournalStorage(JournalFileBackend(str(journal))))
    folder = started_search(tmp_path / "runs" / "gone", f"journal://{journal}")
    assert main(["resume", "gone", "--storage-path", str(folder.parent)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --optuna-storage: journal://{journal} ") and "'gone'" in err
    assert journal.exists() == (record == "study") and not ray.is_initialized()


@pytest.mark.parametrize("dropped", ["database", "tables"])
def test_a_resume_whose_database_was_dropped_says_it_is_gone(dropped, postgres, tmp_path, capsys):
    """Optuna says "invalid data in the commit, e.g. exceeding max length" for a dropped database or its dropped
    tables; the cause is named instead, before Ray starts."""
    import ray
    database = f"dropped_{dropped}"
    postgres.client("createdb", database)
    optuna.create_study(study_name="gone", storage=postgres.url(database))
    folder = started_search(tmp_path / "gone", postgres.url(database))
    if dropped == "database":
        postgres.client("dropdb", "--force", database)  # --force: Optuna's connection above is still open
    else:
        postgres.client("psql", database, "-c", "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    assert main(["resume", "gone", "--storage-path", str(folder.parent)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --optuna-storage: postgresql://postgres:***@127.0.0.1:{postgres.port}/{database} "
                          f"is gone (") and "\n" not in err.strip()
    assert "invalid data" not in err and PASSWORD not in err and not ray.is_initialized()


# --- the searcher and the readers on a storage of their own ------------------------------------------
def searcher_on(folder: Path, url: str, name: str = "shared-study") -> OptunaSearcher:
    searcher = OptunaSearcher(folder, name, [("val_balanced_acc", "max")], stop_epoch=3, startup_trials=2,
                              storage_url=url)
    assert searcher.set_search_properties(None, None, SPACE)
    return searcher


def run_trial(searcher: OptunaSearcher, trial_id: str, values: list[float]) -> dict:
    config = searcher.suggest(trial_id)
    for epoch, value in enumerate(values[:-1], 1):
        searcher.on_trial_result(trial_id, {"epoch": epoch, "val_balanced_acc": value})
    searcher.on_trial_complete(trial_id, {"epoch": len(values), "val_balanced_acc": values[-1]})
    return config


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_a_restored_searcher_reopens_its_storage_and_the_readers_find_it(kind, tmp_path, request):
    url = f"journal://{tmp_path / 'optuna.log'}" if kind == "journal" else request.getfixturevalue("postgres").url()
    name = f"shared-study-{kind}"
    searcher = searcher_on(tmp_path, url, name)
    finished = run_trial(searcher, "a", [0.2, 0.3, 0.4])
    searcher.suggest("b")
    searcher.on_trial_result("b", {"epoch": 1, "val_balanced_acc": 0.1})
    searcher.save(str(tmp_path / "state.pkl"))

    restored = OptunaSearcher.__new__(OptunaSearcher)  # as Tune does: a blank searcher, then its saved state
    restored.restore(str(tmp_path / "state.pkl"))
    restored.open_in(tmp_path / "moved")  # the folder does not matter: the study is in the storage
    restored.on_trial_complete("b", {"epoch": 2, "val_balanced_acc": 0.15})  # ASHA stopped it at epoch 2 of 3
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "moved").exists()

    table = read_optuna(url, name, ["val_balanced_acc"])
    assert table[["number", "state", "val_balanced_acc"]].values.tolist() == [[0, "COMPLETE", 0.4], [1, "PRUNED", 0.15]]
    assert {k: table.loc[0, k] for k in finished} == finished
    with pytest.raises(ExperimentError, match="'other'"):  # the study name it looked for
        read_optuna(url, "other", ["val_balanced_acc"])


def test_a_reader_creates_nothing_and_names_a_database_that_does_not_answer(tmp_path):
    assert read_optuna(f"journal://{tmp_path / 'later.log'}", "s", ["val_acc"]).empty  # not recorded yet
    assert not (tmp_path / "later.log").exists()
    with pytest.raises(ExperimentError, match=r"^optuna_storage: cannot open postgresql://me:\*\*\*@127\.0\.0\.1:"):
        read_optuna(f"postgresql://me:{PASSWORD}@127.0.0.1:{free_port()}/db", "s", ["val_acc"])


# --- a real search on PostgreSQL ------------------------------------------------------------------------
@pytest.mark.ray
def test_a_search_on_postgresql_records_every_trial_there_and_results_read_it(postgres, tmp_path, capsys,
                                                                              monkeypatch):
    url = postgres.url()
    argv = ["search", *SMOKE_RANKED, "--space", "alpha_tau", "--num-samples", "4", "--max-concurrent", "1",
            "--grace-period", "1", "--name", "pg-search", "--optuna-storage", url, "--storage-path", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["study.run", *argv])  # the command study.json records
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    experiment = tmp_path / "pg-search"
    shown = f"postgresql://postgres:***@127.0.0.1:{postgres.port}/studies"
    assert f"Optuna: {shown}" in out and PASSWORD not in out + err
    assert not (experiment / "optuna.db").exists()
    settings = json.loads((experiment / "study.json").read_text())
    assert settings["optuna_storage"] == url  # resume reopens it
    assert PASSWORD not in settings["versions"]["command"] and shown in settings["versions"]["command"]

    # every Tune trial is an Optuna trial in PostgreSQL, told as what it was: ASHA's stops PRUNED
    study = optuna.load_study(study_name="pg-search", storage=url)
    stopped = set(json.loads((experiment / "asha_stopped.json").read_text()))
    rows = {folder.name.removeprefix("trial_"): read_trial(folder).rows for folder in trial_folders(experiment)}
    assert len(study.trials) == len(rows) == 4 and stopped and len(stopped) < 4
    by_params = {(t.params["mixup_alpha"], t.params["tau_spread"]): t for t in study.trials}
    for trial_id, trial_rows in rows.items():
        config = trial_rows[0]["config"]
        recorded = by_params[(config["mixup_alpha"], config["tau_spread"])]
        if trial_id in stopped:
            assert recorded.state == TrialState.PRUNED
            assert recorded.intermediate_values == {1: trial_rows[0]["val_balanced_acc"]}
        else:
            assert recorded.state == TrialState.COMPLETE and recorded.value == trial_rows[-1]["val_balanced_acc"]

    # results read it back from the database: the tables, the report, the live page's command
    exp = load_experiment(experiment)
    assert exp.optuna_storage == url
    table = exp.optuna_trials
    assert sorted(table["state"]) == sorted("PRUNED" if t in stopped else "COMPLETE" for t in rows)
    assert main(["report", "pg-search", "--storage-path", str(tmp_path)]) == 0
    report = experiment / "report"
    assert len((report / "tables" / "optuna_trials.csv").read_text().splitlines()) == 5
    page = html.unescape((report / "index.html").read_text())
    assert f"Optuna's record ({shown})" in page and PASSWORD not in page
    site = ResultsSite(tmp_path)
    site.snapshot("pg-search")
    live = html.unescape(site.experiment_html("pg-search"))
    assert f"optuna-dashboard '{shown}'" in live and PASSWORD not in live

    # a finished search resumes as complete, with its database checked first
    capsys.readouterr()
    assert main(["resume", "pg-search", "--storage-path", str(tmp_path)]) == 0
    assert "'pg-search'" in capsys.readouterr().out  # named, and no trial added
    assert len(optuna.load_study(study_name="pg-search", storage=url).trials) == 4


@pytest.mark.ray
def test_a_database_that_stops_mid_search_stops_the_study_and_resume_tells_what_it_missed(tmp_path, capsys,
                                                                                          monkeypatch):
    """The server stops as the first trial ends, so Optuna cannot be told of it: one `error:` line naming the
    database, exit 1 (the machine's fault), the results kept; with the server back, `resume` tells Optuna that
    trial and runs the rest."""
    with postgres_server() as server:
        tell_untold = OptunaSearcher.tell_untold

        def server_stops_first(searcher):
            if searcher.untold and not stopped:
                server.stop()
                stopped.append(searcher)
            tell_untold(searcher)

        stopped = []
        monkeypatch.setattr(OptunaSearcher, "tell_untold", server_stops_first)
        argv = ["search", *SMOKE, "--space", "alpha_tau", "--num-samples", "3", "--max-concurrent", "1",
                "--grace-period", "1", "--name", "pg-stops", "--optuna-storage", server.url(),
                "--storage-path", str(tmp_path)]
        assert main(argv) == 1
        out, err = capsys.readouterr()
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith("error: --optuna-storage: ") and \
            f"127.0.0.1:{server.port}" in errors[0]
        assert "Traceback" not in out + err and "invalid data" not in out + err and PASSWORD not in out + err
        experiment = tmp_path / "pg-stops"
        first = {folder.name: read_trial(folder).rows for folder in trial_folders(experiment)}
        assert len(first) == 1 and [row["epoch"] for row in next(iter(first.values()))] == [1, 2]  # kept

        server.start()
        assert main(["resume", "pg-stops", "--storage-path", str(tmp_path)]) == 0
        study = optuna.load_study(study_name="pg-stops", storage=server.url())
        assert len(study.trials) == 3 and TrialState.RUNNING not in {t.state for t in study.trials}
        rows = next(iter(first.values()))
        told = next(t for t in study.trials if t.params["mixup_alpha"] == rows[0]["config"]["mixup_alpha"])
        assert told.state == TrialState.COMPLETE and told.value == rows[-1]["val_balanced_acc"]
