"""Study rules that need no training: one driver per experiment folder, the ETA's arithmetic, ASHA's
record, and `--max-t` as a stop epoch (the last one runs a short real search)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import SMOKE, assert_refused, run_cli, study_settings
from results import load_experiment
from study.lock import LOCK_FILE, StudyLock
from study.settings import StudyError


def test_a_second_driver_on_the_same_experiment_is_refused_naming_the_first(tmp_path, capsys):
    folder = tmp_path / "baseline-smoke"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom study.lock import StudyLock\n"
                               f"lock = StudyLock({str(folder)!r}, 'baseline-smoke')\nlock.acquire()\n"
                               "print('held', flush=True)\ntime.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _ = run_cli(["baseline", *SMOKE, "--storage-path", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2
        # the experiment, and the driver that holds it: its pid and host
        assert_refused(err, "--name", "'baseline-smoke'", f"pid {holder.pid} on {socket.gethostname()}")
        with pytest.raises(StudyError, match=f"pid {holder.pid}"):
            StudyLock(folder, "baseline-smoke").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without releasing: only its file stays behind
        holder.wait()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == holder.pid
    with StudyLock(folder, "baseline-smoke"):
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    note = capsys.readouterr().err  # the lock it took over is reported, with the driver that left it
    assert any(line.startswith("note: ") and f"pid {holder.pid} on" in line for line in note.splitlines()), note
    assert not folder.exists() or not (folder / LOCK_FILE).exists()


def fake_settings(asha: bool = True, cooldown_fraction: float | None = None):
    return study_settings(stop_epoch=4, trials=3, asha=asha, max_failures=2, cooldown_fraction=cooldown_fraction)


def test_eta_counts_expected_epochs_under_asha_and_waits_for_a_timed_epoch():
    from study.progress import CompactProgress
    progress = CompactProgress(fake_settings(), stream=open(os.devnull, "w"))
    assert progress.rungs == [1, 2]
    # from epoch 0: 1 sure epoch, then half survive to 2, a quarter to 4: 1 + 1/2 + 2/4
    assert progress.expected_remaining(0) == pytest.approx(2.0)
    assert progress.expected_remaining(1) == pytest.approx(1 + 2 / 2)
    assert progress.expected_remaining(3) == pytest.approx(1.0)
    trials = [SimpleNamespace(trial_id="a", status="RUNNING", last_result={}),
              SimpleNamespace(trial_id="b", status="RUNNING", last_result={})]
    assert progress.eta(trials) is None  # "estimating": nothing timed yet, however long it has run
    progress.on_trial_result(0, trials, trials[0], {"epoch": 1, "time_this_iter_s": 3.0, "val_balanced_acc": 0.2})
    # a at epoch 1 (2 expected), b at 0 (2), one trial not created yet (2): 6 epochs × 3 s over 2 running
    assert progress.eta(trials) == pytest.approx(6 * 3.0 / 2)
    plain = CompactProgress(fake_settings(asha=False), stream=open(os.devnull, "w"))
    assert plain.rungs == [] and plain.expected_remaining(1) == 3
    # rungs at 1, 2 of 4, both cooled for 1 epoch: from 0, 1 + 1 to rung 1, then half of 1 + 1, a quarter of 2
    cooled = CompactProgress(fake_settings(cooldown_fraction=0.5), stream=open(os.devnull, "w"))
    assert cooled.cooldowns == {1: 1, 2: 1} and cooled.expected_remaining(0) == pytest.approx(2 + 1 + 0.5)


def test_asha_record_exists_from_the_start(tmp_path):
    from study.tuner import RecordingASHA
    record = tmp_path / "asha_stopped.json"
    RecordingASHA(str(record), time_attr="epoch", max_t=4, grace_period=1)
    assert json.loads(record.read_text()) == []


@pytest.mark.ray
def test_max_t_ends_trials_as_finished_with_their_test_evaluation(tmp_path):
    argv = ["search", *SMOKE, "--num-samples", "2", "--max-t", "1", "--no-asha", "--storage-path", str(tmp_path)]
    code, out = run_cli(argv)
    assert code == 0, out
    assert re.search(r"\b2 finished, 0 stopped early\b", out), out  # the summary's counts
    exp = load_experiment(tmp_path / "search-alpha_tau-smoke")
    assert exp.trials["status"].tolist() == ["finished", "finished"]
    assert exp.trials["epochs_run"].tolist() == [1, 1] and exp.trials["stop_epoch"].tolist() == [1, 1]
    assert exp.trials["epochs"].tolist() == [2, 2]  # the recipe's schedule is still the 2-epoch one
    assert exp.trials["test_full_acc"].notna().all() and exp.progress()["complete"]
    code, out = run_cli(["resume", "search-alpha_tau-smoke", "--storage-path", str(tmp_path)])
    assert code == 0 and "'search-alpha_tau-smoke'" in out, out  # named, and answered at once: complete
    assert load_experiment(tmp_path / "search-alpha_tau-smoke").trials["epochs_run"].tolist() == [1, 1]


def test_a_resumed_study_shows_each_trial_where_tune_last_saw_it():
    import io
    from study.progress import CompactProgress
    stream = io.StringIO()
    progress = CompactProgress(fake_settings(), stream=stream)
    trial = SimpleNamespace(trial_id="a", status="RUNNING", last_result={"epoch": 3, "val_balanced_acc": 0.5})
    progress.print_status([trial])
    assert "epoch    4/4" in stream.getvalue() and "best 0.5000" in stream.getvalue()  # the epoch under way
    assert "no results yet" not in stream.getvalue()
