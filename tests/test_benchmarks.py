"""Every script in benchmarks/ at a tiny size: it runs end to end and prints its figures (never how
fast), and answers a bad argument like the toolkit's commands: one `error:` line, exit status 2.
(benchmarks/page_load.py has its own test.)"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_refused
ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
NUMBER = r"[0-9]+(\.[0-9]+)?"


def run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    command = ["bash", str(BENCHMARKS / script)] if script.endswith(".sh") else [sys.executable, str(BENCHMARKS / script)]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHON": sys.executable, **env})


@pytest.mark.parametrize("script, args, option, shown", [  # the option refused, and the bound and value shown
    ("epoch_speed.py", ["--max-images", "0"], "--max-images", [" 1 ", "(got 0)"]),
    ("epoch_speed.py", ["--threads", "-2"], "--threads", [" 1 ", "(got -2)"]),
    ("results_load.py", ["--epochs", "0"], "--epochs", [" 1 ", "(got 0)"]),
    ("eval_cost.py", ["--repeats", "0"], "--repeats", [" 1 ", "(got 0)"]),  # word for word: tests/test_golden_messages.py
    ("final_eval.py", ["--test-per-class", "4"], "--test-per-class", [" 5 ", "(got 4)"]),
    ("gpu_packing.py", ["--epochs", "1"], "--epochs", [" 2 ", "(got 1)"]),
    ("gpu_packing.py", ["--data-dir", "/nonexistent"], "--data-dir", ["cifar-100-python/", "(got '/nonexistent')"]),
    ("gpu_check.py", ["--packings", "0"], "--packings", [" 1 ", "(got 0)"]),
    ("fashion_mnist_compare.sh", ["ten"], "EPOCHS", [" 1 ", "(got 'ten')"]),
])
def test_bad_arguments_get_one_error_line_and_exit_2(script, args, option, shown):
    done = run(script, *args)
    assert (done.returncode, done.stdout, len(done.stderr.splitlines())) == (2, "", 1), done.stderr
    assert_refused(done.stderr, option, *shown)


def test_epoch_speed_times_both_precisions_and_compile_and_ends_with_the_speedup():
    done = run("epoch_speed.py", "--max-images", "4", "--batch-size", "4", "--warmup-batches", "1", "--bare-steps",
               "1", "--workers", "0", "--threads", "1", "--precision", "fp32", "bf16", "--compile",
               TORCH_COMPILE_DISABLE="1")  # the --compile path without minutes of compiling
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for label in ("ours fp32 ", "ours bf16 ", "ours fp32 compiled ", "ours bf16 compiled "):
        line = next(line for line in lines if line.startswith(label))
        assert re.search(rf"{NUMBER} images/s .*\(4 images in .*warm-up .*{NUMBER} s \| peak .* {NUMBER} MB$", line)
    assert re.search(rf"^bf16 / fp32: {NUMBER}x$", done.stdout, re.M)
    assert re.search(rf"^compiled / eager: fp32 {NUMBER}x, bf16 {NUMBER}x$", done.stdout, re.M)
    assert any(line.startswith("stock ") for line in lines) and any(line.startswith("bare step ") for line in lines)
    assert re.fullmatch(r"speedup [0-9]+\.[0-9]{2}", lines[-1])


def test_results_load_reads_a_short_recipe():
    done = run("results_load.py", "--trials", "2", "--epochs", "10", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    assert "2 trials × 10 epochs" in done.stdout and ": 2 trial rows, 20 epoch rows" in done.stdout
    assert re.search(rf"^cold load {NUMBER} s, warm load {NUMBER} s", done.stdout, re.M)
    assert re.search(rf"^results page: page, later view {NUMBER} s$", done.stdout, re.M)


def test_eval_cost_prints_each_part():
    done = run("eval_cost.py", "--val-images", "100", "--test-images", "200", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    for part in ("ensemble metrics", "per-expert diagnostics", "temperature fit", "shift metrics"):
        assert re.search(rf"{part}.* {NUMBER} s$", done.stdout, re.M), part


def test_final_eval_prints_the_images_it_forwards_and_its_time():
    done = run("final_eval.py", "--test-per-class", "5", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    assert "images forwarded: test_full 500; 500 in all" in done.stdout  # each test image once
    assert re.search(rf"^final_metrics: {NUMBER} s \({NUMBER} images/s\)$", done.stdout, re.M)


def test_fashion_mnist_compare_prints_both_runs(tmp_path):
    done = run("fashion_mnist_compare.sh", "1", str(tmp_path / "out"), "--dataset", "synthetic-lt", "--imb-factor",
               "0.1", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[-2:]}
    assert set(rows) == {"balpoe", "plain-ce"} and all(len(values) == 7 for values in rows.values())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.ray
def test_gpu_packing_through_study_run_on_a_logical_gpu():
    done = run("gpu_packing.py", "--logical-gpus", "--packings", "1", "--epochs", "2", "--", "--preset", "smoke",
               "--num-cpus", "2", "--dashboard-port", str(free_port()))
    assert done.returncode == 0, done.stderr
    assert re.search(rf"^ +1 +{NUMBER} +{NUMBER} +1.00x +{NUMBER}$", done.stdout, re.M)
    assert done.stdout.splitlines()[-1] == "best packing: 1 trials per GPU"


# --- the GPU check, on a CPU ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu_check
        yield gpu_check
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_refuses_without_a_gpu():
    done = run("gpu_check.py")
    assert done.returncode == 2 and done.stdout == ""
    assert_refused(done.stderr, "device", "--cpu-dry-run")  # and the way to run it here


def test_gpu_check_dry_run_on_the_cpu():
    done = run("gpu_check.py", "--cpu-dry-run", "--skip", "packing", "compile", "--limit-s", "3600", "--threads", "1")
    assert done.returncode == 0, done.stderr
    summary = done.stdout.split("\nGPU check summary: ")[1]
    assert re.search(r"step, GPU vs CPU, fp32 \(TF32 off\): loss rel\. diff 0\.0e\+00 .* diff 0\.0e\+00 .*: PASS",
                     summary)
    for name in ("fp32 channels_last on:", "bf16 channels_last off:"):
        assert re.search(rf"^  {name} +{NUMBER}", summary, re.M), name


def test_gpu_check_step_difference_of_a_device_with_itself_is_zero(gpu_check):
    difference = gpu_check.step_difference(torch.device("cpu"), torch.device("cpu"), batch_size=4, tf32=False)
    assert difference["loss_rel"] == 0 and difference["weights_abs"] == 0 and difference["loss"] > 0
    assert gpu_check.step_passes(difference)
    assert not gpu_check.step_passes({**difference, "weights_abs": 2 * gpu_check.STEP_TOLERANCE["weights_abs"]})


def test_gpu_check_summary(gpu_check):
    run_ = {"images": 10847, "seconds": 2.0, "warmup_seconds": 1.0, "loss": 4.6, "peak_mb": 900.0}
    report = {"device_name": "NVIDIA H100 80GB HBM3", "torch": "2.14.1", "seconds": 450.0, "limit_s": 480,
              "memory": "peak GPU memory allocated", "skipped": ["compiled epoch bf16"],
              "step": {"fp32": {"loss": 4.6, "loss_rel": 2e-7, "weights_abs": 3e-4},
                       "tf32": {"loss": 4.6, "loss_rel": 1e-4, "weights_abs": 2e-3}},
              "epochs": {("fp32", True, False): run_, ("bf16", True, False): {**run_, "seconds": 1.0, "peak_mb": 500.0},
                         ("fp32", True, True): {**run_, "seconds": 1.6, "warmup_seconds": 95.0}},
              "packing": [{"trials_per_gpu": 1, "epoch_seconds": 4.0, "epochs_per_s": 0.25, "peak_memory_mb": 900},
                          {"trials_per_gpu": 2, "epoch_seconds": 5.0, "epochs_per_s": 0.4, "peak_memory_mb": 910}]}
    lines = gpu_check.summary(report).splitlines()
    assert lines[0] == "GPU check summary: NVIDIA H100 80GB HBM3 | torch 2.14.1 | 7.5 min"
    assert lines[1].endswith("largest weight diff 3.0e-04 (tolerance 1e-04): FAIL")
    assert lines[2] == "step with TF32 on (training's default): loss rel. diff 1.0e-04, largest weight diff 2.0e-03"
    assert lines[3] == "epoch images/s (peak GPU memory allocated):"
    assert lines[4].split() == ["fp32", "channels_last", "on:", "5424", "(900", "MB)"]
    assert lines[5].split() == ["bf16", "channels_last", "on:", "10847", "=", "2.00x", "fp32", "(500", "MB)"]
    assert "= 1.25x fp32 (900 MB, warm-up (compiling) 95 s)" in lines[6]
    assert lines[-2] == "  best packing: 2 trials per GPU"
    assert lines[-1] == "skipped: compiled epoch bf16 (would end after 480 s)"


def test_fidelity_records_trunk_and_cooled_rungs_and_replays_asha(tmp_path):
    csv = tmp_path / "fidelity.csv"
    done = run("fidelity.py", "--dataset", "synthetic-lt", "--imb-factor", "0.1", "--epochs", "10", "--configs", "3",
               "--seeds", "1", "2", "--train-per-class", "10", "--csv", str(csv), "--figure", str(tmp_path / "fidelity.png"))
    assert done.returncode == 0, done.stderr
    import pandas as pd
    rows = pd.read_csv(csv)
    assert len(rows) == 3 * 2 * 10  # configurations × seeds × epochs
    cooled = rows.dropna(subset=["cooled"])
    assert set(cooled["epoch"]) == {1, 2, 3, 4, 6}  # every trunk milestone a replay needs (step1 = 8)
    assert (cooled["cooldown_epochs"] >= 1).all() and (rows.loc[rows["cooled"].isna(), "cooldown_epochs"] == 0).all()
    assert re.search(rf"^noise ceiling .*rho ", done.stdout, re.M) and (tmp_path / "fidelity.png").stat().st_size
    again = run("fidelity.py", "--from-csv", str(csv))  # the analysis again, from the recorded scores alone
    assert again.returncode == 0, again.stderr
    assert re.search(r"^ASHA replayed", again.stdout, re.M)
