"""`study.run` at its edges: threads per trial, objectives' directions, a closed stdout, argparse
mistakes, Ctrl-C while Ray starts, paths through `~user`, `--help` on an ASCII terminal, GPU requests no
trial could meet, and `export` over files it did not write."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

from conftest import eventually
from study.options import build_parser
from study.run import main
from study.trainable import trial_threads
from test_results_robustness import make_baseline

NO_USER = "~no-such-user-balpoe"  # a `~user` that names no user on any test machine


def cli_error(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of `study.run ARGV` that stops in argparse or in the checks before Ray."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


# --- 1. a trial never runs more threads than the cores it can have ------------------------------
def test_a_cpu_share_above_the_cores_here_gets_one_thread_per_core(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert (trial_threads(64), trial_threads(2), trial_threads(1), trial_threads(0.5)) == (2, 2, 1, 1)


def test_without_affinity_the_cpu_count_bounds_the_threads(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert (trial_threads(8), trial_threads(2)) == (3, 2)


# --- 2. an objective without a mode takes its metric's direction --------------------------------
@pytest.mark.parametrize("metric, mode", [("val_ece", "min"), ("val_mce", "min"), ("val_nll", "min"),
                                          ("train_loss", "min"), ("val_balanced_acc", "max"), ("val_acc", "max")])
def test_an_objective_without_a_mode_takes_its_metrics_direction(metric, mode):
    args = build_parser().parse_args(["search", "--objectives", metric])
    assert args.objectives == [(metric, mode)]


def test_an_explicit_mode_is_kept():
    args = build_parser().parse_args(["search", "--objectives", "val_ece:max", "val_acc:min"])
    assert args.objectives == [("val_ece", "max"), ("val_acc", "min")]


def test_an_unknown_metric_without_a_mode_is_refused(capsys):
    code, err = cli_error(["search", "--objectives", "val_mystery"], capsys)
    assert code == 2 and err.startswith("error: --objectives") and "Traceback" not in err


def test_the_tables_rank_by_the_same_direction():
    """`compare_with_baseline` without the study's modes: a lower ECE is better, as for the objective."""
    import pandas as pd

    from results.stats import compare_with_baseline
    trials = pd.DataFrame({"status": ["finished"], "mixup_alpha": [0.4], "val_ece": [0.05], "val_brier": [0.3]})
    baseline = pd.DataFrame({"status": ["finished"] * 2, "mixup_alpha": [0.4] * 2, "val_ece": [0.10, 0.11],
                             "val_brier": [0.4, 0.41]})
    rows = compare_with_baseline(trials, baseline, ["val_ece", "val_brier"])
    assert rows.set_index("metric")["better"].to_dict() == {"val_ece": True, "val_brier": True}


# --- 3. a closed stdout ends a command quietly ---------------------------------------------------
def with_closed_stdout(argv: list[str]) -> subprocess.CompletedProcess:
    """`python -m study.run ARGV` whose stdout's reader has already gone, as in `… | head -0`."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "study.run", *argv], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)


def test_show_into_a_closed_pipe_exits_0_without_a_message(tmp_path):
    make_baseline(tmp_path / "exp")
    done = with_closed_stdout(["show", str(tmp_path / "exp")])
    assert (done.returncode, done.stderr) == (0, "")


def test_help_into_a_closed_pipe_exits_0_without_a_message():
    done = with_closed_stdout(["search", "--help"])
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("fault, line", [
    (OSError("When listing objects under key 'runs/exp': AWS Error NETWORK_CONNECTION"),
     "error: When listing objects under key 'runs/exp': AWS Error NETWORK_CONNECTION"),
    (PermissionError(13, "Permission denied", "/srv/runs/exp/study.json"),
     "error: /srv/runs/exp/study.json: Permission denied"),
])
def test_a_fault_of_the_machine_is_one_line_with_what_failed_and_exit_1(fault, line, monkeypatch, capsys):
    def failing(args):
        raise fault
    monkeypatch.setattr("study.run.dispatch", failing)
    assert main(["show", "exp"]) == 1
    assert capsys.readouterr().err.splitlines() == [line]


# --- 4. argparse's mistakes are one line naming the option -------------------------------------
@pytest.mark.parametrize("argv", [
    ["baseline", "--num-cpus", "abc"], ["baseline", "--num-cpus", ""], ["baseline", "--num-cpus", "1e3"],
    ["baseline", "--cpus-per-trial", "abc"], ["search", "--num-samples", "1e3"], ["show", "x", "--top", "two"],
    ["baseline", "--progress-interval", ""],
])
def test_a_number_option_given_no_number_is_one_line_naming_it(argv, capsys):
    code, err = cli_error(argv, capsys)
    option = next(arg for arg in argv if arg.startswith("--"))
    assert code == 2 and err.startswith(f"error: {option}:") and "usage:" not in err, err
    assert len(err.splitlines()) <= 2, err


# --- 6. '' and `~user` that names no user, wherever a path goes --------------------------------
@pytest.mark.parametrize("argv, option", [
    (["baseline", "--storage-path", f"{NO_USER}/runs"], "--storage-path"),
    (["baseline", "--storage-path", ""], "--storage-path"),
    (["baseline", "--preset", "smoke", "--data-dir", f"{NO_USER}/data"], "--data-dir"),
    (["baseline", "--preset", "smoke", "--data-dir", ""], "--data-dir"),
    (["baseline", "--config", f"{NO_USER}/recipe.json"], "--config"),
    (["show", f"{NO_USER}/exp"], "NAME"),
    (["show", "exp", "--storage-path", f"{NO_USER}/runs"], "--storage-path"),
    (["report", "exp", "--output", f"{NO_USER}/report"], "--output"),
    (["report", "exp", "--baseline", f"{NO_USER}/baseline"], "--baseline"),
    (["export", "exp", "--data-dir", f"{NO_USER}/data"], "--data-dir"),
    (["doctor", "--data-dir", f"{NO_USER}/data"], "--data-dir"),
])
def test_a_path_through_no_users_home_or_empty_is_refused_by_its_option(argv, option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = cli_error(argv, capsys)
    assert code == 2 and err.startswith(f"error: {option}:") and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # nothing made in the current folder, as '' or '~…' would have


# --- 5. Ctrl-C while Ray starts leaves none of its processes ----------------------------------
def processes_with(marker: str) -> dict[int, bytes]:
    """Our processes whose environment holds `marker` (everything Ray starts inherits the driver's), with
    their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:  # gone, or not ours
                continue
    return found


@pytest.mark.ray
def test_ctrl_c_while_ray_starts_stops_everything_it_started(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    marker = f"RAY_TMPDIR={ray_tmp}"
    driver = subprocess.Popen(
        [sys.executable, "-m", "study.run", "baseline", "--preset", "smoke", "--num-cpus", "1",
         "--storage-path", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,  # Ray's agents would hold a stdout pipe
        env={**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"})
    try:
        # the raylet has just started: ray.init is under way (interrupted here, Ray 2.60 left its agents)
        def raylet_or_driver_gone():
            if any(b"raylet" in command for command in processes_with(marker).values()):
                return "raylet"
            return driver.poll() is not None and "the driver ended"
        assert eventually(raylet_or_driver_gone, timeout_s=120, interval_s=0.02) == "raylet", driver.communicate()
        driver.send_signal(signal.SIGINT)
        err = driver.communicate(timeout=120)[1]
        assert driver.returncode == 130, err
        assert not (tmp_path / "baseline-smoke" / "study.json").exists() and "resume" not in err
        eventually(lambda: not processes_with(marker), timeout_s=20, interval_s=0.2)
        assert processes_with(marker) == {}
    finally:
        driver.kill()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


# --- 7. --help whatever the terminal's encoding ---------------------------------------------------
@pytest.mark.parametrize("argv", [["study.run", "search", "--help"], ["balpoe", "train", "--help"]])
def test_help_on_an_ascii_terminal_writes_tau_escaped(argv):
    done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0 and done.stderr == "" and "\\u03c4" in done.stdout, done.stderr


# --- 8. a GPU no trial could have is refused before the data is read and Ray starts ------------
@pytest.mark.parametrize("argv, option", [
    (["--device", "cuda", "--gpus-per-trial", "0"], "--device"),
    (["--gpus-per-trial", "1", "--num-gpus", "0"], "--gpus-per-trial"),
    pytest.param(["--device", "cuda", "--precision", "bf16"], "--device", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="this machine has a GPU")),
])
def test_a_gpu_request_no_trial_could_meet_is_refused_before_data_and_ray(argv, option, tmp_path, monkeypatch,
                                                                          capsys):
    def never(*args, **kwargs):
        raise AssertionError("the data was read or Ray started")
    monkeypatch.setitem(sys.modules, "study.driver", types.SimpleNamespace(run_study=never))
    for command in ("baseline", "search"):
        code, err = cli_error([command, "--preset", "smoke", "--storage-path", str(tmp_path), *argv], capsys)
        assert code == 2 and err.startswith(f"error: {option}:") and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


# --- 9. study export refuses files it did not write before it reads the checkpoint -------------
def test_study_export_refuses_a_foreign_file_before_reading_the_checkpoint(tmp_path, capsys):
    make_baseline(tmp_path / "exp")
    for trial in (tmp_path / "exp").glob("t*"):  # a checkpoint that would be an error if it were read
        (trial / "checkpoint_000000").mkdir()
        (trial / "checkpoint_000000" / "trainer_state.pth").write_bytes(b"not a checkpoint")
    output = tmp_path / "out"
    output.mkdir()
    (output / "manifest.json").write_text('{"mine": true}')
    code, err = cli_error(["export", str(tmp_path / "exp"), "--output", str(output)], capsys)
    assert code == 2 and err.startswith("error: --output:"), err
    assert [p.name for p in output.iterdir()] == ["manifest.json"]
    assert (output / "manifest.json").read_text() == '{"mine": true}'


def test_a_mistyped_experiment_name_is_answered_with_the_studies_that_are_there(tmp_path, capsys):
    make_baseline(tmp_path / "first-study")
    make_baseline(tmp_path / "second-study")
    (tmp_path / "not-a-study").mkdir()
    code, err = cli_error(["show", "firts-study", "--storage-path", str(tmp_path)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "'firts-study'" in err and str(tmp_path) in err
    assert "first-study, second-study" in err and "not-a-study" not in err
    code, err = cli_error(["report", "x", "--storage-path", str(tmp_path / "not-a-study")], capsys)
    assert code == 2 and str(tmp_path / "not-a-study") in err and "first-study" not in err  # none there


def test_resume_of_a_mistyped_name_lists_the_studies_there_before_ray(tmp_path, capsys):
    make_baseline(tmp_path / "first-study")
    code, err = cli_error(["resume", "first_study", "--storage-path", str(tmp_path)], capsys)
    assert code == 2 and "first-study" in err and str(tmp_path) in err
    import ray
    assert not ray.is_initialized()
