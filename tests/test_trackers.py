"""Experiment trackers: `--log-to` and `export-tracker` against a real MLflow tracking server started here
(SQLite backend store in a temporary folder) and W&B in offline mode (no account), read back with their own
clients and files; and every tracker input that cannot work refused before Ray starts."""
from __future__ import annotations

import contextlib
import glob
import json
import struct
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from conftest import SMOKE, assert_refused, eventually, interrupted_cli
from results import load_experiment
from results.reader import read_trial, trial_folders
from study.run import main
from study.trackers import Tracker, epoch_metrics, resumed_trackers
from test_optuna_storage import free_port

TOKEN = "tok-Secret-4f1c9e"            # credentials the trackers read from the environment: never in the folder
WANDB_KEY = "k" * 30 + "Secret7c2e0b"


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """`mlflow server` on 127.0.0.1 with a SQLite backend store in `folder`, while the block runs."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--workers", "1",
                               "--default-artifact-root", str(folder / "artifacts")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            return False
    try:
        assert eventually(answers, timeout_s=90, interval_s=0.2), "mlflow server did not start"
        yield MlflowServer(url, server)
    finally:
        server.terminate()
        server.wait(timeout=30)


def runs_by_trial(uri: str, experiment: str) -> dict:
    from mlflow import MlflowClient
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} at {uri}"
    runs = client.search_runs([found.experiment_id])
    by_trial = {run.data.tags["trial_id"]: run for run in runs}
    assert len(by_trial) == len(runs), [run.data.tags for run in runs]  # one run per trial
    return by_trial


def histories(uri: str, run) -> dict[str, dict[int, float]]:
    """Every metric of the run as {step: value}; a step logged twice (a trial resumed at it) keeps the later."""
    from mlflow import MlflowClient
    client = MlflowClient(uri)
    return {key: {m.step: m.value for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                   key=lambda m: (m.step, m.timestamp))}
            for key in run.data.metrics}


def what_a_run_holds(uri: str, run) -> tuple:
    ours = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    return run.info.run_name, run.info.status, run.data.params, ours, histories(uri, run)


def wandb_history(folder: Path, run_id: str = "*") -> dict[int, dict[str, float]]:
    """The metrics W&B offline wrote under `folder` (a trial's, or an export's working folder), by step, read
    from its `.wandb` files (a LevelDB-style log of protobuf records, 32 KiB blocks); a resumed trial has one
    offline run folder per run of the study."""
    from wandb.proto import wandb_internal_pb2
    steps: dict[int, dict[str, float]] = {}
    paths = sorted(glob.glob(str(folder / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb")))
    assert paths, f"no W&B offline run under {folder}"
    for path in paths:
        data, position, pieces = Path(path).read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while position + 7 <= len(data):
            if 32768 - position % 32768 < 7:   # a block's tail too short for a header is padding
                position += 32768 - position % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[position:position + 7])
            piece, position = data[position + 7:position + 7 + length], position + 7 + length
            pieces = piece if kind in (1, 2) else pieces + piece   # full / first, else middle / last
            if kind in (1, 4):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pieces)
                if record.WhichOneof("record_type") == "history":
                    values = steps.setdefault(record.history.step.num, {})
                    values.update({key: json.loads(item.value_json) for item in record.history.item
                                   if not (key := "/".join(item.nested_key) or item.key).startswith("_")
                                   and key != "training_iteration"})  # W&B's own, and the live step marker
    return steps


def folder_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


# --- a search logged live, interrupted, resumed, and exported again --------------------------------------
@pytest.mark.ray
def test_a_search_is_one_run_per_trial_through_a_resume_and_its_export_gives_the_same_runs(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    storage, name = tmp_path / "runs", "search-alpha_tau-smoke"
    with mlflow_server(tmp_path / "mlflow") as server:
        url = server.url
        argv = ["search", *SMOKE, "--space", "alpha_tau", "--num-samples", "2", "--max-concurrent", "1",
                "--grace-period", "1", "--log-to", f"mlflow={url}", "--log-to", "wandb=balpoe-tests",
                "--storage-path", str(storage)]
        interrupted_cli(argv, lambda line: "1 running, 1 terminated" in line)  # the second trial under way
        cut_off = {t: (r.info.status, r.data.tags["status"]) for t, r in runs_by_trial(url, name).items()}
        assert sorted(cut_off.values()) == [("FINISHED", "finished"), ("KILLED", "unfinished")], cut_off
        # both W&B runs' files are in the trial folders already, the cut-off one's included
        assert all(glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb"))
                   for folder in trial_folders(storage / name))
        assert main(["resume", name, "--storage-path", str(storage)]) == 0
        out = capsys.readouterr().out
        exp = load_experiment(storage / name)
        assert exp.progress()["complete"] and len(exp.trials) == 2
        assert f"MLflow: {url}" in out

        live = runs_by_trial(url, name)
        assert set(live) == set(exp.trials["trial_id"])  # the resumed trial's run went on: no second run
        for trial in exp.trials.to_dict("records"):
            run = live[trial["trial_id"]]
            tags = run.data.tags
            assert (tags["study"], tags["kind"], tags["status"]) == (name, "search", trial["status"])
            assert tags["toolkit_commit"] == exp.settings.versions["commit"]
            assert run.info.status == "FINISHED" and run.info.run_name == f"trial_{trial['trial_id']}"
            params = run.data.params
            assert float(params["mixup_alpha"]) == trial["mixup_alpha"]
            assert float(params["tau_spread"]) == pytest.approx(trial["tau_spread"])
            assert len(json.loads(params["tau_list"])) == 3 and (params["precision"], params["seed"]) == ("fp32", "1")
            epochs = exp.epochs[exp.epochs["trial_id"] == trial["trial_id"]]
            expected = dict(zip(epochs["epoch"], epochs["val_balanced_acc"]))
            assert histories(url, run)["val_balanced_acc"] == pytest.approx(expected)  # one step per epoch
            if trial["status"] == "finished":
                assert run.data.metrics["test_balanced_acc"] == pytest.approx(trial["test_balanced_acc"])
            assert not [key for key in run.data.metrics if key.startswith(("cooled_", "rung_", "time_"))]

            folder = storage / name / f"trial_{trial['trial_id']}"
            logged = wandb_history(folder)  # W&B offline: the run's own files, in the trial's folder
            assert {step: values["val_balanced_acc"] for step, values in logged.items()
                    if "val_balanced_acc" in values} == pytest.approx(expected)

        folder = storage / name
        assert TOKEN.encode() not in folder_bytes(folder) and WANDB_KEY.encode() not in folder_bytes(folder)

        monkeypatch.chdir(tmp_path)  # W&B offline writes ./wandb/
        assert main(["export-tracker", name, "--storage-path", str(storage), "--to", "wandb=balpoe-tests"]) == 0
        for folder in trial_folders(storage / name):
            assert wandb_history(tmp_path, folder.name.removeprefix("trial_")) == wandb_history(folder)

        exported_uri = f"sqlite:///{tmp_path / 'exported.db'}"
        assert main(["export-tracker", name, "--storage-path", str(storage), "--to", f"mlflow={exported_uri}"]) == 0
        exported = runs_by_trial(exported_uri, name)
        assert {t: what_a_run_holds(exported_uri, r) for t, r in exported.items()} == \
            {t: what_a_run_holds(url, r) for t, r in live.items()}

        # `resume --log-to` on the complete study sends it from its files, as export-tracker does
        resumed_uri = f"sqlite:///{tmp_path / 'resumed.db'}"
        assert main(["resume", name, "--storage-path", str(storage), "--log-to", f"mlflow={resumed_uri}"]) == 0
        assert {t: what_a_run_holds(resumed_uri, r) for t, r in runs_by_trial(resumed_uri, name).items()} == \
            {t: what_a_run_holds(url, r) for t, r in live.items()}


@pytest.mark.ray
def test_a_tracking_server_that_stops_mid_study_costs_one_warning_and_no_result(tmp_path, capsys):
    storage = tmp_path / "runs"
    with mlflow_server(tmp_path / "mlflow") as server:
        url = server.url

        def stop_after_the_first_run():
            from mlflow import MlflowClient
            def ended():
                try:
                    found = MlflowClient(url).get_experiment_by_name("gone")
                    return found and MlflowClient(url).search_runs([found.experiment_id], "attributes.status = 'FINISHED'")
                except Exception:
                    return False
            eventually(ended, timeout_s=240, interval_s=0.5)
            server.process.terminate()
        watcher = threading.Thread(target=stop_after_the_first_run, daemon=True)
        watcher.start()
        code = main(["baseline", *SMOKE, "--seeds", "1", "2", "--max-concurrent", "1", "--name", "gone",
                     "--log-to", f"mlflow={url}", "--storage-path", str(storage)])
        watcher.join(timeout=30)
    err = capsys.readouterr().err
    assert code == 0, err
    exp = load_experiment(storage / "gone")
    assert exp.progress()["complete"] and set(exp.trials["status"]) == {"finished"}
    assert len([line for line in err.splitlines() if line.startswith(f"warning: --log-to mlflow={url}: ")]) == 1, err
    assert all(read_trial(folder).rows[-1]["epoch"] == 2 for folder in trial_folders(storage / "gone"))


# --- refused before Ray starts -------------------------------------------------------------------------
def no_login(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc


def no_mlflow_package(monkeypatch, tmp_path):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))


PASSWORD = "Hunter2Secret"
REFUSED = {  # --log-to value, what the environment lacks, the option named, what the error shows
    "not a tracker": ("neptune", None, "--log-to", "'neptune'"),
    "an empty target": ("mlflow=", None, "--log-to", "'mlflow='"),
    "no package": ("mlflow=sqlite:///x.db", no_mlflow_package, "--log-to mlflow", ".[mlflow]"),
    "no server": ("mlflow=http://127.0.0.1:{port}", None, "--log-to mlflow", "http://127.0.0.1:{port}"),
    "a password in the URI": (f"mlflow=http://me:{PASSWORD}@127.0.0.1:{{port}}", None, "--log-to mlflow",
                              "MLFLOW_TRACKING_PASSWORD"),
    "a project W&B refuses": ("wandb=lab/balpoe", None, "--log-to wandb", "'lab/balpoe'"),
    "no W&B login": ("wandb=balpoe", no_login, "--log-to wandb", "WANDB_MODE=offline"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_tracker_that_cannot_work_is_refused_before_ray_starts(case, tmp_path, monkeypatch, capsys):
    value, environment, option, shown = REFUSED[case]
    port = free_port()
    if environment:
        environment(monkeypatch, tmp_path)
    storage = tmp_path / "runs"
    try:
        code = main(["baseline", *SMOKE, "--log-to", value.format(port=port), "--storage-path", str(storage)])
    except SystemExit as parse_error:  # argparse's own refusal of the value's shape
        code = parse_error.code
    err = capsys.readouterr().err
    assert code == 2 and not ray.is_initialized() and not storage.exists()
    assert_refused(err, option, shown.format(port=port))
    assert PASSWORD not in err


def test_export_tracker_checks_its_tracker_before_reading_the_experiment(tmp_path, capsys):
    port = free_port()
    code = main(["export-tracker", "no-such-study", "--storage-path", str(tmp_path),
                 "--to", f"mlflow=http://127.0.0.1:{port}"])
    assert code == 2
    assert_refused(capsys.readouterr().err, "--to mlflow", f"http://127.0.0.1:{port}")


def test_a_resumed_study_whose_tracker_is_gone_resumes_without_it(monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    gone = f"mlflow=http://127.0.0.1:{free_port()}"
    given = (Tracker("mlflow", "sqlite:////tmp/given.db"),)
    kept = resumed_trackers((gone, "wandb=balpoe-x"), given=given)
    assert [str(t) for t in kept] == ["wandb=balpoe-x", "mlflow=sqlite:////tmp/given.db"]
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: --log-to mlflow: ") and gone[7:] in warnings[0]


def test_a_run_holds_the_reports_learning_values_not_tunes_bookkeeping():
    report = {"epoch": 3, "lr": 0.1, "train_loss": 1.5, "val_balanced_acc": 0.4, "test_full_acc": 0.5,
              "shift_forward5_acc": 0.3, "cooled_val_balanced_acc": 0.45, "rung_val_balanced_acc": 0.45,
              "cooldown_epochs": 1, "time_total_s": 9.0, "training_iteration": 3, "val_ece": float("nan"),
              "trial_id": "abc", "done": False, "val_flag": True}
    assert epoch_metrics(report) == {"lr": 0.1, "train_loss": 1.5, "val_balanced_acc": 0.4, "test_full_acc": 0.5,
                                     "shift_forward5_acc": 0.3}
