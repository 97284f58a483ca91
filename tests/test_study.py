"""The Ray Tune layer, end to end on a local Ray with generated data (`--preset smoke`)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from balpoe.config import Config
from balpoe.shell import interpreter
from conftest import SMOKE, SMOKE_RANKED, assert_refused, interrupted_cli, printed_command
from results import load_experiment
from results.reader import read_trial, trial_folders
from study.run import main


def reports(experiment) -> dict[str, list[dict]]:
    """Each trial's reported rows, the last per epoch, straight from its result.json."""
    return {folder.name: read_trial(folder).rows for folder in trial_folders(experiment)}
TIMING = {"epoch_seconds", "train_seconds", "train_images_per_s", "time_this_iter_s", "time_total_s", "timestamp",
          "date", "pid", "peak_memory_mb", "time_since_restore", "iterations_since_restore", "training_iteration",
          "trial_id", "experiment_tag", "hostname", "node_ip", "checkpoint_dir_name", "done", "should_checkpoint",
          "config"}


@pytest.fixture(autouse=True)
def no_ray_left():
    yield
    import ray
    if ray.is_initialized():
        ray.shutdown()


@pytest.mark.parametrize("argv, option, shown", [  # the option refused, and the values and fixes the message shows
    (["search", "--space", "nope"], "--space", ["'nope'", "alpha_tau"]),  # the spaces there are
    (["baseline", "--preset", "huge"], "--preset", ["'huge'", "'smoke'", "--help"]),
    (["search", "--range", "mixup_alpha=-0.5:1"], "--range", ["mixup_alpha", "-0.5:1.0"]),
    (["search", "--grace-period", "300"], "--grace-period", ["300", "200", "--no-asha"]),
    (["baseline", "--gpus-per-trial", "1.5"], "--gpus-per-trial", ["0.25", "(got 1.5)"]),  # a packing that works
    (["baseline", "--gpus-per-trial", "2"], "--gpus-per-trial", ["0.25", "(got 2"]),
    (["baseline", "--gpus-per-trial", "-0.5"], "--gpus-per-trial", ["(got -0.5)"]),
    (["baseline", "--gpus-per-trial", "nan"], "--gpus-per-trial", ["(got nan)"]),
    (["baseline", "--tau_min", "0.5"], "tau_list", ["--tau_min 0.5", "--tau_list limits", "--tau_list uniform"]),
    (["search", "--tau-min", "0", "--tau-max", "3"], "tau_list",
     ["--tau_min 0.0", "--tau_max 3.0", "--tau_list limits"]),
    (["search", "--objectives", "val_acuracy:max"], "--objectives", ["'val_acuracy'", "val_balanced_acc"]),
    (["search", "--objectives", "test_balanced_acc:max"], "--objectives", ["test_balanced_acc ", "validation"]),
    (["baseline", "--mixup-alpha", "-1"], "mixup_alpha", ["(got -1.0)"]),
    (["resume", "missing-study"], "resume", ["{storage}/missing-study", "--storage-path"]),
    (["search", "--sampler-seed", "-1"], "--sampler-seed", ["(got -1)"]),
    (["search", "--range", "mixup_alpha=0:inf"], "--range", ["mixup_alpha", "(got 0.0:inf)"]),
    (["search", "--range", "mixup_alpha=nan:1"], "--range", ["mixup_alpha", "(got nan:1.0)"]),
    (["baseline", "--seeds", "1", "-1"], "--seeds", ["(got -1)"]),
    (["baseline", "--num-cpus", "0"], "--num-cpus", ["1 CPU", "(got 0)"]),
    (["baseline", "--num-gpus", "-1"], "--num-gpus", ["(got -1)"]),
    (["baseline", "--dashboard-port", "70000"], "--dashboard-port", ["65535", "(got 70000)"]),
    (["baseline", "--progress-interval", "0"], "--progress-interval", ["(got 0.0)"]),
    (["baseline", "--lr", "inf"], "lr", ["(got inf)"]),
    (["baseline", "--wd", "inf"], "weight_decay", ["(got inf)"]),
    (["baseline", "--tau_list", "1;;2"], "tau_list", ["(got '1;;2')"]),
    (["baseline", "--device", "gpu0"], "device", ["cuda:N", "(got 'gpu0')"]),
    (["baseline", "--dataset", "cifar10-lt", "--data-dir", "/nonexistent-data", "--download", "0"],
     "data_dir", ["/nonexistent-data/cifar-10-batches-py", "--data-dir"]),
    (["baseline", "--address", "127.0.0.1:1"], "--address", ["127.0.0.1:1 ", "ray status --address 127.0.0.1:1"]),
    (["baseline", "--address", "ray://"], "--address", ["HOST:PORT", "(got 'ray://')"]),
    (["baseline", "--address", "127.0.0.1:99999"], "--address", ["65535", "(got '127.0.0.1:99999')"]),
    (["baseline", "--connect-timeout", "1e300"], "--connect-timeout", ["3600", "(got 1e+300)"]),
    (["baseline", "--name", ""], "--name", ["(got '')"]),
    (["baseline", "--name", ".."], "--name", ["(got '..')"]),
    (["baseline", "--cpus-per-trial", "nan"], "--cpus-per-trial", ["(got nan)"]),
    (["baseline", "--dashboard-host", ""], "--dashboard-host", ["127.0.0.1", "(got '')"]),  # an interface that would do
    (["baseline", "--dashboard-host", "999.1.1.1"], "--dashboard-host", ["'999.1.1.1'"]),
    (["baseline", "--serve-results", "--results-host", "999.1.1.1"], "--results-host", ["'999.1.1.1'"]),
    (["baseline", "--results-port", "0"], "--results-port", ["65535", "(got 0)"]),
    (["baseline", "--serve-results", "--results-port", "8265"], "--results-port", ["8265", "--dashboard-port"]),
    (["search", "--max-t", "0"], "--max-t", ["epochs=200", "(got 0)"]),
    (["search", "--no-asha", "--grace-period", "-5"], "--grace-period", ["(got -5)"]),
    (["search", "--objectives", "val_acc:max", "val_acc:min"], "--objectives", ["(got val_acc val_acc)"]),
    (["search", "--mixup_alpha", "0.2"], "--space alpha_tau", ["mixup_alpha, tau_list", "--mixup_alpha", "--range"]),
    (["search", "--range", "mixup_alpha=0:1", "--range", "mixup_alpha=0:0.5"], "--range", ["mixup_alpha"]),
    (["search", "--space", "experts", "--range", "num_experts=2.5:2.7"], "--range", ["num_experts", "(got 2.5:2.7)"]),
    (["search", "--preset", "smoke", "-c", "/nonexistent.json"], "--preset", ["smoke", "--config /nonexistent.json"]),
])
def test_bad_input_is_rejected_before_ray_starts(argv, option, shown, tmp_path, capsys):
    import ray
    try:
        code = main([*argv, "--storage-path", str(tmp_path)])
    except SystemExit as exit_:  # argparse's own checks exit with 2 as well
        code = exit_.code
    assert code == 2
    assert_refused(capsys.readouterr().err, option, *(part.format(storage=tmp_path) for part in shown))
    assert not ray.is_initialized()
    # nothing is left that would block the name: at most the lock of the study that never started
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] in ([], [".study.lock"])


def test_a_dashboard_port_taken_by_another_program(tmp_path, capsys):
    import socket
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["baseline", *SMOKE, "--dashboard-port", str(port), "--storage-path", str(tmp_path)]) == 2
    assert_refused(capsys.readouterr().err, "--dashboard-port", f"127.0.0.1:{port} ", "Address already in use")


@pytest.mark.parametrize("change, names_the_file_first, shown", [  # {path}: the study.json; shown: what is wrong
    (lambda text: text[:40], True, ["line 3"]),
    (lambda text: text.replace('"kind"', '"kind_of"'), False, ["{path}", "kind"]),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "base"}), True, [" base"]),
    (lambda text: text.replace('"num_samples": 1', '"num_samples": "1"'), True, ["num_samples: ", "(got '1')"]),
    (lambda text: text.replace('"sampler_seed": 0', '"sampler_seed": -1'), True, ["--sampler-seed: ", "(got -1)"]),
    (lambda text: text.replace('"lr": 0.1', '"lr": -0.1'), True, ["lr: ", "(got -0.1)"]),
])
def test_a_damaged_study_json_stops_resume_before_ray(change, names_the_file_first, shown, tmp_path, capsys):
    import ray
    from study.settings import StudySettings
    folder = tmp_path / "damaged"
    folder.mkdir()
    settings = StudySettings(kind="baseline", name="damaged", storage_path=str(tmp_path), base=Config(), max_t=200,
                             grace_period=165)
    settings.save(folder)
    path = folder / "study.json"
    path.write_text(change(path.read_text()))
    assert main(["resume", "damaged", "--storage-path", str(tmp_path)]) == 2
    assert_refused(capsys.readouterr().err, "study.json", *(part.format(path=path) for part in shown),
                   then=str(path) if names_the_file_first else None)
    assert not ray.is_initialized()


def test_storage_path_must_be_writable_and_ours(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["baseline", *SMOKE, "--storage-path", str(blocker / "runs")]) == 2
    assert_refused(capsys.readouterr().err, "--storage-path", then=str(blocker))  # the file in the way
    foreign = tmp_path / "runs" / "baseline-smoke"  # the smoke preset's default name
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("someone else's")
    assert main(["baseline", *SMOKE, "--storage-path", str(tmp_path / "runs")]) == 2
    assert_refused(capsys.readouterr().err, "--storage-path/--name", then=str(foreign))  # the folder, named first
    assert (foreign / "notes.txt").read_text() == "someone else's"
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # our lock came and went


@pytest.mark.ray
def test_smoke_baseline_two_seeds(smoke_baseline):
    assert smoke_baseline.code == 0, smoke_baseline.out
    out, experiment = smoke_baseline.out, smoke_baseline.experiment
    assert re.search(r"http://127\.0\.0\.1:[0-9]+", out) and re.search(r"\b2 finished\b", out), out  # dashboard
    assert f"results: {experiment}" in out
    settings = json.loads((experiment / "study.json").read_text())
    assert settings["seeds"] == [1, 2] and settings["versions"]["ray"] == "2.60.0"
    assert settings["versions"]["toolkit"] == "0.1.0" and settings["versions"]["host"]
    trials = reports(experiment)
    assert len(trials) == 2
    for rows in trials.values():
        assert [r["epoch"] for r in rows] == [1, 2]
        assert {"val_balanced_acc", "val_ece", "train_loss", "device", "gpu_ids", "peak_memory_mb"} <= set(rows[0])
        assert {"test_balanced_acc", "test_full_acc", "test_full_ece"} <= set(rows[-1])
    assert sorted(rows[0]["seed"] for rows in trials.values()) == [1, 2]


@pytest.mark.ray
def test_search_seeds_paper_point_and_asha_stops_early(smoke_search):
    assert smoke_search.code == 0, smoke_search.out
    experiment = smoke_search.experiment
    trials = reports(experiment)
    assert len(trials) == 4
    first = min(trials.values(), key=lambda rows: rows[0]["timestamp"])
    assert (first[0]["mixup_alpha"], first[0]["tau_list"]) == (0.4, "0;1;2")  # the paper's point
    stopped = json.loads((experiment / "asha_stopped.json").read_text())
    assert stopped and all(len(trials[f"trial_{t}"]) == 1 for t in stopped)
    assert (experiment / "optuna.db").exists()
    import optuna
    study = optuna.load_study(study_name="search-alpha_tau-smoke", storage=f"sqlite:///{experiment / 'optuna.db'}")
    assert len(study.trials) == 4 and study.trials[0].params == {"mixup_alpha": 0.4, "tau_spread": 1.0}
    assert study.metric_names == ["val_balanced_acc"]  # optuna-dashboard names the objective
    assert re.search(rf"\b{len(stopped)} stopped early\b", smoke_search.out), smoke_search.out  # the summary's count
    # Optuna hears ASHA's stops as PRUNED (ranked by the epoch reached), finished trials as COMPLETE
    settings = json.loads((experiment / "study.json").read_text())
    assert settings["startup_trials"] == 2 and settings["max_t"] == 2
    by_params = {(t.params["mixup_alpha"], t.params["tau_spread"]): t for t in study.trials}
    for name, rows in trials.items():
        optuna_trial = by_params[(rows[0]["config"]["mixup_alpha"], rows[0]["config"]["tau_spread"])]
        if name.removeprefix("trial_") in stopped:
            assert optuna_trial.state == optuna.trial.TrialState.PRUNED
            assert optuna_trial.intermediate_values == {1: rows[0]["val_balanced_acc"]}
        else:
            assert optuna_trial.state == optuna.trial.TrialState.COMPLETE
            assert optuna_trial.value == rows[-1]["val_balanced_acc"]


@pytest.mark.ray
def test_crashed_trial_resumes_from_checkpoint_with_identical_results(tmp_path):
    import ray
    from ray import tune

    from study import tuner
    from study.settings import PRESETS
    from study.settings import StudySettings

    config = Config().replace(**PRESETS["smoke"]).replace(epochs=3, step1=2, step2=3)
    settings = StudySettings(kind="baseline", name="faults", storage_path=str(tmp_path), base=config, max_t=3,
                             grace_period=1, cpus_per_trial=1, gpus_per_trial=0, checkpoint_every=1, max_failures=1,
                             asha=False)
    from study.trainable import train_balpoe

    def crash_once_at_epoch_2(trial_config: dict) -> None:  # pickled by value: the workers never import tests/
        marker = trial_config["crash_marker"]

        def crash(metrics: dict) -> None:
            if marker and metrics["epoch"] == 2 and not Path(marker).exists():
                Path(marker).write_text("crashed once\n")
                raise RuntimeError("injected fault at epoch 2")
        train_balpoe(trial_config, on_epoch_end=crash)

    space = tuner.param_space(settings)
    space["crash_marker"] = tune.grid_search([None, str(tmp_path / "crashed")])
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # its own Ray, never one running here
    results = tune.Tuner(tune.with_resources(crash_once_at_epoch_2, {"cpu": 1, "gpu": 0}), param_space=space,
                         run_config=tune.RunConfig(name="faults", storage_path=str(tmp_path), verbose=0,
                                                   failure_config=tune.FailureConfig(max_failures=1))).fit()
    assert (tmp_path / "crashed").exists() and not results.errors
    plain, faulty = sorted(reports(tmp_path / "faults").values(), key=lambda rows: rows[0]["config"]["crash_marker"] is not None)
    assert [r["epoch"] for r in faulty] == [1, 2, 3]
    for a, b in zip(plain, faulty):
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
    # the results tables see the failure (Tune's error.txt) and that the retry finished the trial
    table = load_experiment(tmp_path / "faults").trials.set_index("trial_id")
    crashed = table.loc[faulty[0]["trial_id"]]
    assert (crashed["status"], crashed["failures"], crashed["epochs_run"]) == ("finished", 1, 3)
    assert "injected fault at epoch 2" in crashed["error"]
    assert table.loc[plain[0]["trial_id"], "failures"] == 0


@pytest.mark.ray
def test_interrupted_study_resumes_without_rerunning_finished_trials(tmp_path, capsys):
    experiment = tmp_path / "baseline-smoke"
    argv = ["baseline", *SMOKE, "--seeds", "1", "2", "--max-concurrent", "1", "--storage-path", str(tmp_path)]
    one_done = False

    def ready(line: str) -> bool:  # once one trial finished and the other is into its first epoch
        nonlocal one_done
        one_done = "1 running, 1 terminated" in line or (one_done and line.startswith("    "))
        return one_done and "epoch    2/2" in line  # the epoch under way: the first one is reported
    out = interrupted_cli(argv, ready)
    printed = printed_command(out, "study.run")
    assert printed[:5] == [interpreter(), "-m", "study.run", "resume", "baseline-smoke"]
    assert "Tuner.restore" not in out  # one instruction only: ours
    assert "Failed to fetch metrics" not in out  # Tune's grid of a trial not started, which we never read
    trials = reports(experiment)
    finished = next(name for name, rows in trials.items() if len(rows) == 2)
    finished_log = (experiment / finished / "result.json").read_text()
    assert sorted(len(rows) for rows in trials.values()) == [1, 2]

    assert main([*printed[3:], "--num-cpus", "2"]) == 0  # the command as printed, through the real parser
    trials = reports(experiment)
    assert all([r["epoch"] for r in rows] == [1, 2] for rows in trials.values())
    assert (experiment / finished / "result.json").read_text() == finished_log  # not re-run

    import ray
    capsys.readouterr()
    assert main(["resume", "baseline-smoke", "--storage-path", str(tmp_path)]) == 0  # complete: answered without Ray
    assert "'baseline-smoke'" in capsys.readouterr().out and not ray.is_initialized()
    assert (experiment / finished / "result.json").read_text() == finished_log


def optuna_decisions(experiment: Path) -> list[tuple]:
    """Each Optuna trial in order: its number, parameters and state (PRUNED: stopped by ASHA)."""
    import optuna
    study = optuna.load_study(study_name=experiment.name, storage=f"sqlite:///{experiment / 'optuna.db'}")
    return [(t.number, t.params, t.state.name) for t in study.trials]


@pytest.mark.ray
def test_a_resumed_search_stops_the_trials_its_uninterrupted_twin_stops(smoke_search, tmp_path):
    """The smoke search (4 trials one at a time, ASHA at epoch 1) interrupted as its third trial starts,
    then resumed: ASHA's rungs are rebuilt from the first two trials, so the later ones meet the same
    cutoffs and the same trials are stopped, with the same points."""
    twin = optuna_decisions(smoke_search.experiment)
    assert any(state == "PRUNED" for number, _, state in twin if number >= 2)  # a decision the resume must redo
    argv = ["search", *SMOKE_RANKED, "--space", "alpha_tau", "--num-samples", "4", "--max-concurrent", "1",
            "--grace-period", "1", "--storage-path", str(tmp_path)]
    interrupted_cli(argv, lambda line: "2 terminated" in line and "1 running" in line)
    experiment = tmp_path / "search-alpha_tau-smoke"
    assert len(load_experiment(experiment).trials) <= 3
    assert main(["resume", experiment.name, "--storage-path", str(tmp_path), "--num-cpus", "2"]) == 0
    assert optuna_decisions(experiment) == twin


@pytest.mark.ray
def test_a_second_ctrl_c_while_tune_stops_ends_quietly_with_the_resume_command(tmp_path):
    argv = [sys.executable, "-m", "study.run", "baseline", *SMOKE, "--epochs", "100", "--storage-path", str(tmp_path)]
    driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    watchdog = threading.Timer(300, driver.kill)
    watchdog.start()
    for line in driver.stdout:  # interrupt once the trial is training
        under_way = re.search(r"\bepoch +(\d+)/100\b", line)
        if under_way and int(under_way.group(1)) >= 2:  # the epoch under way: the first one is reported
            break
    driver.send_signal(signal.SIGINT)
    time.sleep(0.5)  # two signals at once would be delivered as one
    driver.send_signal(signal.SIGINT)
    out, err = driver.communicate(timeout=120)
    watchdog.cancel()
    assert driver.returncode == 130, out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert printed_command(out + err, "study.run") == [interpreter(), "-m", "study.run", "resume", "baseline-smoke",
                                                       "--storage-path", str(tmp_path)]


@pytest.mark.ray
def test_fractional_gpus_pack_trials_on_logical_gpus(tmp_path):
    argv = ["baseline", *SMOKE, "--seeds", "1", "2", "3", "4", "--num-gpus", "2", "--gpus-per-trial", "0.5",
            "--storage-path", str(tmp_path)]
    argv[argv.index("--cpus-per-trial") + 1] = "0.5"
    assert main(argv) == 0
    trials = reports(tmp_path / "baseline-smoke")
    assert sorted(rows[0]["gpu_ids"] for rows in trials.values()) == ["0", "0", "1", "1"]
    assert {rows[0]["device"] for rows in trials.values()} == {"cpu"}  # logical GPUs: torch sees none
    starts = [rows[0]["timestamp"] - rows[0]["time_total_s"] for rows in trials.values()]
    ends = [rows[-1]["timestamp"] for rows in trials.values()]
    assert max(starts) < min(ends)  # all four ran at once


def test_a_trial_no_node_can_hold_is_refused():
    from study.resources import check_schedulable
    from study.settings import StudyError
    nodes = [{"Alive": True, "Resources": {"CPU": 4.0}}, {"Alive": True, "Resources": {"CPU": 2.0, "GPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    check_schedulable(4, 0, nodes)
    check_schedulable(2, 1, nodes)
    # the trial asked for, and the nodes alive (the dead one is left out)
    with pytest.raises(StudyError, match=r"^--cpus-per-trial/--gpus-per-trial: .*\b3 CPU/1 GPU\b"
                                         r".*\b2 CPU/1 GPU, 4 CPU/0 GPU\b"):
        check_schedulable(3, 1, nodes)  # 6 CPUs and a GPU in all, but never on one node


def test_an_address_that_accepts_but_is_no_ray_ends_within_the_timeout(tmp_path):
    import socket
    with socket.socket() as impostor:  # the kernel accepts connections; nothing ever answers
        impostor.bind(("127.0.0.1", 0))
        impostor.listen(16)
        address = f"127.0.0.1:{impostor.getsockname()[1]}"
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "study.run", "baseline", "--preset", "smoke", "--address", address,
                               "--connect-timeout", "3", "--storage-path", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    error = next((line for line in done.stderr.splitlines() if line.startswith("error: ")), done.stderr)
    assert_refused(error, "--address", f" {address} ", " 3 s", "--connect-timeout")  # where, how long, the fix
    assert "Traceback" not in done.stderr and time.monotonic() - started < 60


@pytest.mark.ray
def test_a_study_stops_cleanly_before_its_disk_is_full_and_resume_keeps_every_epoch(tmp_path, capsys, monkeypatch):
    import study.disk
    experiment = tmp_path / "baseline-smoke"
    monkeypatch.setattr(study.disk, "free_mb", lambda path: 50.0)  # below the 200 MB reserve from epoch 1 on
    code = main(["baseline", *SMOKE, "--epochs", "4", "--checkpoint-every", "1", "--storage-path", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 130, out + err
    error = next((line for line in err.splitlines() if line.startswith("error: ")), err)
    assert_refused(error, "--storage-path", "50 MB", f" {experiment}", "--min-free-mb")  # what is left, where
    assert printed_command(out, "study.run")[1:5] == ["-m", "study.run", "resume", "baseline-smoke"]
    stopped_at = [r["epoch"] for r in next(iter(reports(experiment).values()))]
    assert stopped_at and stopped_at == list(range(1, len(stopped_at) + 1)) and len(stopped_at) < 4

    monkeypatch.undo()  # space was freed
    assert main(["resume", "baseline-smoke", "--storage-path", str(tmp_path)]) == 0
    assert [r["epoch"] for r in next(iter(reports(experiment).values()))] == [1, 2, 3, 4]


def test_a_study_without_room_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    import ray
    import study.settings
    monkeypatch.setattr(study.settings, "free_mb", lambda path: 10.0)
    assert main(["baseline", *SMOKE, "--storage-path", str(tmp_path)]) == 2
    # the space there is, where, and the option that sets how much a study needs
    assert_refused(capsys.readouterr().err, "--storage-path", "10 MB", str(tmp_path), "--min-free-mb")
    assert not ray.is_initialized()
    assert main(["baseline", *SMOKE, "--min-free-mb", "-1", "--storage-path", str(tmp_path)]) == 2
    assert_refused(capsys.readouterr().err, "--min-free-mb", "(got -1)")
