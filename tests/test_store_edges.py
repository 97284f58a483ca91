"""The edges of an object store (moto's S3 server): experiment names, a store that never answers, a
lease that cannot be trusted, and a store's fault named with its URI."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from conftest import SMOKE
from results.storage import StoreError, join, location
from study.commands import open_experiment
from study.lock import LEASE_FILE, LEASE_STALE_S, StoreLease
from study.object_store import store_name_problem
from study.run import main
from study.settings import StudyError, default_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthetic_experiments import write_experiment  # noqa: E402

sys.path.pop(0)

ROOT = Path(__file__).resolve().parents[1]
ESCAPED_NAMES = ["exp#2", "x%2Fy", "a b", "q?x", "é"]


@pytest.fixture
def bucket(object_store) -> str:
    return object_store.bucket(f"edges-{uuid.uuid4().hex[:16]}")


def keys(bucket: str) -> list[str]:
    filesystem, path = pafs.FileSystem.from_uri(bucket)
    found = filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(info.path.split("/", 1)[1] for info in found if info.type == pafs.FileType.File)


def upload(folder: Path, root) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            (root / path.relative_to(folder).as_posix()).write_bytes(path.read_bytes())


# --- names: one encoding for every writer and reader ------------------------------------------------
@pytest.mark.parametrize("name", ESCAPED_NAMES)
def test_a_name_is_one_plain_segment_and_its_uri_opens_the_same_object(bucket, name):
    record = location(f"{bucket}/runs") / name / "study.json"
    record.write_text("{}")
    assert keys(bucket) == [f"runs/{name}/study.json"]  # where Tune writes it: storage path / name, as typed
    assert location(str(record)) == record and location(str(record)).read_text() == "{}"
    assert location(join(f"{bucket}/runs", name)) == record.parent


@pytest.mark.parametrize("name", ESCAPED_NAMES)
def test_a_new_study_on_a_store_refuses_a_name_a_uri_must_escape(bucket, name, capsys):
    import ray
    assert main(["baseline", *SMOKE, "--storage-path", f"{bucket}/runs", "--name", name]) == 2
    assert "--name" in capsys.readouterr().err
    assert keys(bucket) == [] and not ray.is_initialized()


def test_resume_on_a_store_refuses_a_name_a_uri_must_escape(bucket, capsys):
    assert main(["resume", "exp#2", "--storage-path", f"{bucket}/runs"]) == 2
    assert "--name" in capsys.readouterr().err


@pytest.mark.parametrize("kind, space, preset", [("baseline", None, "paper"), ("search", "alpha_tau", "smoke"),
                                                 ("search", "alpha_tau", "fmnist")])
def test_the_default_names_are_allowed_on_a_store(kind, space, preset):
    assert store_name_problem(default_name(kind, space, preset)) is None


def test_show_reads_the_folder_of_the_name_given_not_a_neighbour_its_uri_would_parse_to(bucket, tmp_path):
    for name, trials in (("exp", 3), ("exp#2", 1)):
        write_experiment(tmp_path / name, trials=trials, epochs=2)
        upload(tmp_path / name, location(f"{bucket}/runs") / name)
    exp = open_experiment("exp#2", f"{bucket}/runs")
    assert exp.path.name == "exp#2" and len(exp.trials) == 1


# --- a store that accepts connections and never answers ---------------------------------------------
@pytest.fixture
def silent_store():
    """An endpoint that accepts connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def start_study_cli(argv: list[str], endpoint: str, cwd: Path) -> subprocess.Popen:
    """`python -m study.run ARGV` against `endpoint`."""
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "study.run", *argv], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


SILENT_STORE_COMMANDS = {"show": ["show", "x"], "baseline": ["baseline", *SMOKE], "dashboard": ["dashboard"],
                         "doctor": ["doctor", "--skip-ray", "--dataset", "synthetic-lt"]}


def test_every_command_on_a_store_that_never_answers_ends_within_30_s(silent_store, tmp_path):
    """All at once (each mostly waits on the store): a study command exits 2 naming --storage-path,
    and doctor fails its storage check (exit 1)."""
    started = time.monotonic()
    running = {name: start_study_cli([*argv, "--storage-path", "s3://runs/x"], silent_store, tmp_path)
               for name, argv in SILENT_STORE_COMMANDS.items()}
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        took = time.monotonic() - started
        assert took < 30, (name, took, err[-2000:])
        if name == "doctor":
            assert process.returncode == 1, (out[-2000:], err[-2000:])
            [row] = [line for line in out.splitlines() if "storage path" in line]
            assert "FAIL" in row
        else:
            assert process.returncode == 2 and "--storage-path" in err and "Traceback" not in err, (name, err[-2000:])


# --- a store's fault names the URI and what failed -------------------------------------------------
@pytest.mark.parametrize("action", ["iterdir", "read_bytes", "write_bytes", "stat", "files_below"])
def test_a_fault_of_the_store_names_its_uri(monkeypatch, action):
    with socket.socket() as probe:  # a port nothing listens on: the store refuses at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    where = location("s3://runs/exp/trial_00000000")
    call = getattr(where, action)
    with pytest.raises(StoreError) as raised:
        call(b"x") if action == "write_bytes" else call()
    assert raised.value.filename == "s3://runs/exp/trial_00000000"
    assert str(raised.value).startswith("s3://runs/exp/trial_00000000: ")


def test_a_store_gone_away_is_one_line_naming_the_uri(bucket, tmp_path, monkeypatch, capsys):
    write_experiment(tmp_path / "exp", trials=1, epochs=2)
    upload(tmp_path / "exp", location(f"{bucket}/runs") / "exp")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert main(["show", "exp", "--storage-path", f"{bucket}/runs"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and f"{bucket}/runs/exp" in line


# --- a lease that cannot be trusted -----------------------------------------------------------------
@pytest.mark.parametrize("text", ["{not json", json.dumps(["a", "list"]), json.dumps({"pid": 1}),
                                  json.dumps({"pid": 1, "renewed": "yesterday"})],
                         ids=["not-json", "not-a-mapping", "no-renewal", "renewal-not-a-number"])
def test_a_lease_that_cannot_be_read_is_refused_and_left_as_it_was(bucket, text):
    folder = location(f"{bucket}/runs/leased")
    (folder / LEASE_FILE).write_text(text)
    with pytest.raises(StudyError, match="--name") as refused:
        StoreLease(folder, "leased").acquire()
    assert str(folder / LEASE_FILE) in str(refused.value)
    assert (folder / LEASE_FILE).read_text() == text


def future_lease(bucket: str):
    folder = location(f"{bucket}/runs/leased")
    (folder / LEASE_FILE).write_text(json.dumps({"pid": 1, "host": "ahead", "renewed": time.time() + 3600}))
    return folder


def test_a_lease_renewed_in_the_future_is_held_while_the_store_wrote_it_recently(bucket):
    folder = future_lease(bucket)
    with pytest.raises(StudyError, match="--name"):
        StoreLease(folder, "leased").acquire()


def test_a_lease_renewed_in_the_future_runs_out_once_the_store_last_wrote_it_long_ago(bucket, capsys):
    folder = future_lease(bucket)
    later = StoreLease(folder, "leased", clock=lambda: time.time() + LEASE_STALE_S + 10)
    later.acquire()
    try:
        assert json.loads((folder / LEASE_FILE).read_text())["pid"] == os.getpid()
        assert "ran out" in capsys.readouterr().err
    finally:
        later.release()
