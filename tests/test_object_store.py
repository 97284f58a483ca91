"""Studies and their results on an object store (`--storage-path s3://…`), against a real S3 server
(moto's, started by the tests): the readers give the same tables from a bucket as from a folder, bad
stores are named before Ray starts, one driver per experiment is checked with a lease, Optuna's record
survives in the bucket, and real studies run, are interrupted and resume there."""
from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from ray import tune

from balpoe.shell import interpreter
from conftest import AWS_TEST_ENV, SMOKE, assert_refused, eventually, interrupted_cli, printed_command, start_moto
from results import load_experiment
from results.app import ResultsSite
from results.reader import read_progress, read_trial, trial_folders
from results.snapshots import fingerprint
from results.storage import StorePath, location
from study.lock import LEASE_FILE, StoreLease
from study.object_store import store_problem
from study.run import main
from study.searcher import OptunaSearcher

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthetic_experiments import write_experiment  # noqa: E402

sys.path.pop(0)


def upload(folder: Path, uri: str) -> StorePath:
    """Every file under `folder`, written under `uri`, as Tune's sync would."""
    root = location(uri)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            (root / path.relative_to(folder).as_posix()).write_bytes(path.read_bytes())
    return root


def ignoring_place(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in ("folder", "path", "last_update") if c in frame.columns])  # upload time


@pytest.fixture
def bucket(object_store, request) -> str:
    name = request.node.name.lower().replace("_", "-")[:40].strip("-") + f"-{time.monotonic_ns() % 10**6}"
    return object_store.bucket(name)


# --- reading ----------------------------------------------------------------------------------------
def test_a_bucket_reads_as_the_same_experiment_as_the_folder_it_was_copied_from(bucket, tmp_path, capsys,
                                                                                monkeypatch):
    folder = tmp_path / "search-a"
    write_experiment(folder, trials=5, epochs=4, last_running=True)
    (folder / "asha_stopped.json").write_text(json.dumps(["00000001"]))
    upload(folder, f"{bucket}/runs/search-a")

    local, remote = load_experiment(folder), load_experiment(f"{bucket}/runs/search-a")
    assert str(remote.path) == f"{bucket}/runs/search-a" and remote.name == "search-a"
    pd.testing.assert_frame_equal(ignoring_place(local.trials), ignoring_place(remote.trials))
    pd.testing.assert_frame_equal(local.epochs, remote.epochs)
    assert remote.settings == local.settings and remote.progress() == local.progress()

    # the commands read it as they read a folder; files they make go to ./NAME/ here
    assert main(["show", "search-a", "--storage-path", f"{bucket}/runs"]) == 0
    shown = capsys.readouterr().out
    assert f"experiment: {bucket}/runs/search-a" in shown and "1 unfinished" in shown
    monkeypatch.chdir(tmp_path)
    assert main(["report", "search-a", "--storage-path", f"{bucket}/runs"]) == 0
    assert f"report: {tmp_path / 'search-a' / 'report' / 'index.html'}" in capsys.readouterr().out
    assert len((tmp_path / "search-a" / "report" / "tables" / "trials.csv").read_text().splitlines()) == 6

    # the live page lists and draws it, and sees a change with one listing
    site = ResultsSite(f"{bucket}/runs")
    site.snapshot("search-a")
    assert "search-a" in site.index_html() and "search-a" in site.experiment_html("search-a")
    before = fingerprint(location(f"{bucket}/runs/search-a"))
    trial = location(f"{bucket}/runs/search-a/trial_00000004")
    (trial / "result.json").write_bytes((trial / "result.json").read_bytes() + b'{"epoch": 3}\n')
    assert fingerprint(location(f"{bucket}/runs/search-a")) != before


def test_a_damaged_record_in_a_bucket_is_named_on_its_trial(bucket, tmp_path):
    folder = tmp_path / "search-b"
    write_experiment(folder, trials=2, epochs=2)
    root = upload(folder, f"{bucket}/search-b")
    (root / "trial_00000000" / "params.json").write_text("{not json")
    (root / "trial_00000001" / "result.json").unlink()
    (root / "trial_00000001" / "result.json" / "part").write_text("a folder where the file belongs")
    exp = load_experiment(str(root))
    notes = dict(zip(exp.trials["trial_id"], exp.trials["notes"]))
    assert "params.json: " in notes["00000000"] and "JSON" in notes["00000000"]  # the record, and what is wrong
    assert "result.json: " in notes["00000001"] and "folder" in notes["00000001"]


def test_an_unknown_name_in_a_bucket_is_an_error_naming_it(bucket, capsys):
    assert main(["show", "nothing-here", "--storage-path", f"{bucket}/runs"]) == 2
    assert "nothing-here" in capsys.readouterr().err


# --- bad stores: exit 2 before Ray, within a bounded time -------------------------------------------
def refused(argv: list[str], capsys) -> str:
    import ray
    started = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - started < 40 and not ray.is_initialized()
    return capsys.readouterr().err


def test_a_bucket_that_does_not_exist_is_named(object_store, capsys):
    err = refused(["baseline", *SMOKE, "--storage-path", "s3://no-such-bucket/runs"], capsys)
    assert_refused(err, "--storage-path", "'no-such-bucket'")


def test_an_endpoint_that_does_not_answer_is_named(object_store, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    err = refused(["baseline", *SMOKE, "--storage-path", "s3://runs/x"], capsys)
    assert_refused(err, "--storage-path", "AWS_ENDPOINT_URL")  # and the setting to check


def test_a_store_that_never_answers_is_given_up_on(monkeypatch):
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections, never answers
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
    started = time.monotonic()
    problem = store_problem("s3://runs/x", timeout_s=3)
    assert time.monotonic() - started < 5 and " 3 s" in problem, problem  # the bound it waited
    silent.close()


def test_a_scheme_pyarrow_cannot_open_is_named(capsys):
    err = refused(["baseline", *SMOKE, "--storage-path", "nosuch://bucket/runs"], capsys)
    assert_refused(err, "--storage-path: nosuch://bucket/runs", "s3://BUCKET/PATH")  # the URI, and one that works


@pytest.fixture(scope="module")
def store_with_users():
    """A second moto server that checks credentials, with a bucket and a user who may only read it."""
    import boto3
    process, endpoint = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "5"})  # the set-up below, then auth
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, **_keys(AWS_TEST_ENV))
        s3 = boto3.client("s3", endpoint_url=endpoint, **_keys(AWS_TEST_ENV))
        s3.create_bucket(Bucket="guarded")
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                                                    "Resource": "*"}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        process.kill()
        process.wait()


def _keys(env: dict) -> dict:
    return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
            "region_name": env["AWS_DEFAULT_REGION"]}


def test_credentials_the_store_does_not_know_are_named(object_store, store_with_users, monkeypatch, capsys):
    endpoint, _, _ = store_with_users
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000")
    err = refused(["baseline", *SMOKE, "--storage-path", "s3://guarded/runs"], capsys)
    assert_refused(err, "--storage-path", "AWS_ACCESS_KEY_ID")  # the setting to fix


def test_a_bucket_these_credentials_may_not_write_is_named(object_store, store_with_users, monkeypatch, capsys):
    endpoint, key, secret = store_with_users
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    err = refused(["baseline", *SMOKE, "--storage-path", "s3://guarded/runs"], capsys)
    assert_refused(err, "--storage-path", " s3://guarded/runs ", "AWS_ACCESS_KEY_ID")  # where, and what to change


# --- one driver per experiment: a lease ----------------------------------------------------------------
def test_a_fresh_lease_refuses_a_second_driver_and_a_stale_one_is_taken_over(bucket, capsys):
    folder = location(f"{bucket}/runs/leased")
    first = StoreLease(folder, "leased", renew_s=0.2)
    first.acquire()
    try:
        assert "has no locks" in capsys.readouterr().err
        taken = json.loads((folder / LEASE_FILE).read_text())
        def renewed():
            lease = json.loads((folder / LEASE_FILE).read_text())
            return lease["renewed"] != taken["renewed"] and lease
        held = eventually(renewed, timeout_s=10)
        assert held, "the lease was never renewed"
        assert held["pid"] == os.getpid() and held["renewed"] > taken["renewed"]
        with pytest.raises(ValueError, match=rf"^--name: .*'leased'.*\bpid {os.getpid()} "):
            StoreLease(folder, "leased").acquire()  # the experiment, and the driver that holds it
    finally:
        first.release()
    assert not (folder / LEASE_FILE).exists()

    (folder / LEASE_FILE).write_text(json.dumps({"pid": 1, "host": "gone", "renewed": time.time() - 600}))
    second = StoreLease(folder, "leased")
    second.acquire()
    second.release()
    note = capsys.readouterr().err  # who held it, and how long ago its lease ran out
    assert note.startswith("note: ") and "'leased'" in note and "600 s" in note and "pid 1 on gone" in note, note


# --- Optuna's record: a copy in the bucket after every change --------------------------------------
def test_the_searchers_record_is_in_the_bucket_after_each_change_and_a_new_driver_continues_it(bucket):
    folder = f"{bucket}/runs/search-c"
    searcher = OptunaSearcher(folder, "search-c", [("val_balanced_acc", "max")], stop_epoch=2,
                              seed_point={"x": 0.5}, startup_trials=1)
    searcher.set_search_properties(None, None, {"x": tune.uniform(0, 1)})
    assert searcher.suggest("a") == {"x": 0.5}
    searcher.on_trial_result("a", {"epoch": 1, "val_balanced_acc": 0.25})
    searcher.on_trial_complete("a", {"epoch": 2, "val_balanced_acc": 0.5})
    searcher.suggest("b")
    state = pickle.dumps(searcher.__getstate__())

    def in_bucket() -> optuna.Study:
        copy = Path(location(folder).path.replace("/", "_"))
        copy.write_bytes((location(folder) / "optuna.db").read_bytes())
        try:
            return optuna.load_study(study_name="search-c", storage=f"sqlite:///{copy.resolve()}")
        finally:
            copy.unlink()
    recorded = in_bucket()
    assert [t.state for t in recorded.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert recorded.trials[0].intermediate_values == {1: 0.25} and recorded.trials[0].value == 0.5

    # a driver on another machine: the pickled searcher, opened on the bucket, goes on from its copy
    restored = OptunaSearcher.__new__(OptunaSearcher)
    restored.__setstate__(pickle.loads(state))
    restored.open_in(location(folder))
    restored.on_trial_complete("b", {"epoch": 1, "val_balanced_acc": 0.1})
    assert [t.state for t in in_bucket().trials] == [TrialState.COMPLETE, TrialState.PRUNED]


# --- real studies on the bucket ------------------------------------------------------------------------
@pytest.mark.ray
def test_a_smoke_baseline_runs_on_a_bucket_and_its_results_read_back(bucket, tmp_path, capsys, monkeypatch):
    storage = f"{bucket}/runs"
    assert main(["baseline", *SMOKE, "--seeds", "1", "--storage-path", storage]) == 0, capsys.readouterr()
    out = capsys.readouterr()
    assert f"results: {storage}/baseline-smoke" in out.out and "has no locks" in out.err
    root = location(f"{storage}/baseline-smoke")
    names = {p.name for p in root.iterdir()}
    assert {"study.json", ".study-started.json"} <= names and any(n.startswith("trial_") for n in names)
    assert not (root / LEASE_FILE).exists()
    exp = load_experiment(root)
    assert exp.trials["status"].tolist() == ["finished"] and exp.trials["epochs_run"].tolist() == [2]
    [trial] = trial_folders(root)
    position = read_progress(trial)  # written through the store, all along the trial
    assert position is not None and (position.epoch, position.epochs) == (2, 2)
    monkeypatch.chdir(tmp_path)
    assert main(["export", "baseline-smoke", "--storage-path", storage, "--trial", "best", "--splits", "test"]) == 0
    manifest = json.loads(next((tmp_path / "baseline-smoke" / "exports").glob("trial_*/manifest.json")).read_text())
    assert manifest["checkpoint"].startswith(f"{storage}/baseline-smoke/trial_")
    assert not Path("runs").exists()  # nothing landed in a local folder named after the bucket's path


def reports(root: StorePath) -> dict[str, list[int]]:
    return {folder.name: [row["epoch"] for row in read_trial(folder).rows] for folder in trial_folders(root)}


@pytest.mark.ray
def test_a_search_on_a_bucket_is_interrupted_resumed_and_read_back(bucket, capsys):
    storage = f"{bucket}/runs"
    root = location(f"{storage}/search-alpha_tau-smoke")
    argv = ["search", *SMOKE, "--space", "alpha_tau", "--num-samples", "4", "--max-concurrent", "1",
            "--grace-period", "1", "--storage-path", storage]
    out = interrupted_cli(argv, lambda line: "2 terminated" in line or "3 terminated" in line)  # two trials ended
    assert printed_command(out, "study.run") == [interpreter(), "-m", "study.run", "resume", "search-alpha_tau-smoke",
                                                 "--storage-path", storage]
    before = reports(root)
    ended = {name: rows for name, rows in before.items() if rows}
    logs = {name: (root / name / "result.json").read_bytes() for name in ended}

    assert main(["resume", "search-alpha_tau-smoke", "--storage-path", storage, "--num-cpus", "2"]) == 0
    after = reports(root)
    assert len(after) == 4 and all(rows for rows in after.values())
    stopped = set(json.loads((root / "asha_stopped.json").read_text()))
    for name, log in logs.items():
        if after[name] == before[name]:
            assert (root / name / "result.json").read_bytes() == log  # a trial that had ended is not re-run

    exp = load_experiment(root)
    assert exp.progress()["complete"]
    table = exp.optuna_trials  # Optuna's record, from the bucket
    assert len(table) == 4
    assert sorted(table["state"]) == sorted("PRUNED" if t in stopped else "COMPLETE" for t in exp.trials["trial_id"])
    assert exp.optuna_storage == f"{storage}/search-alpha_tau-smoke/optuna.db"
    site = ResultsSite(storage)
    site.snapshot("search-alpha_tau-smoke")
    page = site.experiment_html("search-alpha_tau-smoke")
    assert f"aws s3 cp {storage}/search-alpha_tau-smoke/optuna.db optuna.db" in page
    capsys.readouterr()
    assert main(["resume", "search-alpha_tau-smoke", "--storage-path", storage]) == 0
    assert "'search-alpha_tau-smoke'" in capsys.readouterr().out and reports(root) == after  # named; nothing re-run
