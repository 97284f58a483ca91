"""Progress inside an epoch: the trial's `progress.json` (written by `study.trial_progress`, read by
`results`), the ETA that counts down between reports and the stalled flag, in the terminal view and the
live page's `running()` table; the channel changes no reported metric."""
from __future__ import annotations

import io
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from balpoe.config import Config
from balpoe.trainer import Trainer
from conftest import assert_refused, study_settings
from results import load_experiment
from results.in_epoch import format_silence
from results.reader import PROGRESS_FILE, read_progress
from study.trainable import trial_epochs
from study.trial_progress import ProgressFile

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"train_seconds", "train_images_per_s", "epoch_seconds"}


def local_storage(folder: Path) -> SimpleNamespace:
    """What the progress view reads of a Tune trial's storage context: a folder on the local filesystem."""
    import pyarrow.fs
    return SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(), trial_fs_path=str(folder))


def small_trainer(tmp_path, **overrides) -> Trainer:
    """Synthetic long-tailed data: 9 training batches of 27 (the last one smaller), and one evaluation
    batch for each of val, test and test_full."""
    values = dict(dataset="synthetic-lt", imb_factor=0.1, epochs=2, batch_size=27, warmup_epochs=1, step1=2, step2=2,
                  device="cpu", save_dir=str(tmp_path))
    values.update(overrides)
    return Trainer(Config(**values))


def ticking_clock(step: float = 1.0):
    """A clock that moves `step` seconds each time it is read (from 0)."""
    counter = itertools.count()
    return lambda: next(counter) * step


def record(**overrides) -> dict:
    """A progress record as the trainable writes it: epoch 3 of 4, training, 45 of 85 batches."""
    values = {"epoch": 3, "epochs": 4, "stage": "epoch", "phase": "train", "done": 45, "total": 85,
              "images_per_s": 412.4, "batches_per_s": 3.2, "train_batches": 85, "train_batches_per_s": 3.2,
              "epoch_started": 1000.0, "time": 1014.0, "interval_s": 2.0}
    values.update(overrides)
    return values


def write_record(folder: Path, **overrides) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PROGRESS_FILE).write_text(json.dumps(record(**overrides)))


# --- the trainable's side ------------------------------------------------------------------------
class RecordingProgressFile(ProgressFile):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int, int]] = []

    def on_batch_end(self, trainer, phase: str, done: int, total: int) -> None:
        self.calls.append((phase, done, total))
        super().on_batch_end(trainer, phase, done, total)


def test_the_progress_channel_changes_no_reported_metric(tmp_path):
    """The trainable's epoch loop with and without its progress file (written at every batch here, the
    most it can be): the same metrics, end-of-training ones included, and the same weights."""
    plain = small_trainer(tmp_path)
    shown = small_trainer(tmp_path)
    channel = RecordingProgressFile(tmp_path / "trial", epochs=2, interval=0, max_write_share=1.0)
    without = list(trial_epochs(plain, 2))
    with_channel = list(trial_epochs(shown, 2, channel))
    assert [last for _, last in with_channel] == [last for _, last in without] == [False, True]
    strip = [({k: v for k, v in m.items() if k not in TIMING}, last) for m, last in without]
    assert [({k: v for k, v in m.items() if k not in TIMING}, last) for m, last in with_channel] == strip
    assert "test_full_acc" in strip[-1][0]
    weights = plain.model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in shown.model.state_dict().items())
    # every batch of every phase reaches it: each epoch's training and validation, then the final metrics'
    # one pass over the test set (test_full); each was written, and each epoch's start
    epoch = [("train", done, 9) for done in range(1, 10)] + [("val", 1, 1)]
    assert channel.calls == epoch + epoch + [("test_full", 1, 1)]
    assert channel.writes == 2 * (1 + 9 + 1) + 1 and not channel.failed
    last = read_progress(tmp_path / "trial")
    assert (last.epoch, last.epochs, last.stage, last.phase, last.done, last.total) == \
        (2, 2, "final", "test_full", 1, 1)
    assert last.train_batches == 9 and last.train_batches_per_s > 0
    assert not (tmp_path / "trial" / (PROGRESS_FILE + ".tmp")).exists()


def test_the_file_is_written_at_phase_changes_and_at_most_every_interval(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr("study.trial_progress.write_record", lambda path, text: written.append(json.loads(text)))
    trainer = small_trainer(tmp_path)
    # (max_write_share 1: the real time a write takes here does not space them out on the fake clock)
    channel = ProgressFile(tmp_path, epochs=2, interval=2.5, clock=ticking_clock(), wall=lambda: 5000.0,
                           max_write_share=1.0)
    channel.begin_epoch(1, len(trainer.loader))       # clock 0: the epoch's start
    trainer.train_epoch(callbacks=[channel])          # batch k ends at clock k
    # the start, the first batch, then when 2.5 s have passed since the last write, and the last batch
    assert [(r["phase"], r["done"], r["total"]) for r in written] == [("train", d, 9) for d in (0, 1, 4, 7, 9)]
    first, fourth, last = written[1], written[2], written[-1]
    assert first["batches_per_s"] is None and first["images_per_s"] is None  # timed from the first batch's end
    assert fourth["batches_per_s"] == 1.0 and fourth["images_per_s"] == 27.0  # 3 batches of 27 in 3 s
    images = len(trainer.loader.split)  # the last batch is not full
    assert images < 9 * 27 and last["batches_per_s"] == 1.0 and last["images_per_s"] == (images - 27) / 8
    assert last["train_batches"] == 9 and last["epoch"] == 1 and last["epoch_started"] == 5000.0

    written.clear()  # batches of 0.1 s: a phase change writes only once a quarter interval (0.5 s) has passed
    channel = ProgressFile(tmp_path, epochs=2, interval=2.0, clock=ticking_clock(0.1), wall=lambda: 5000.0,
                           max_write_share=1.0)
    channel.begin_epoch(1, len(trainer.loader))
    trainer.train_epoch(callbacks=[channel])
    assert [r["done"] for r in written] == [0, 9]  # the start; batch 1 at 0.1 s waits; the end at 0.9 s
    assert written[-1]["batches_per_s"] == pytest.approx(10.0)  # still timed from batch 1's end


def test_writes_take_no_more_than_their_share_of_the_time_on_a_slow_filesystem(tmp_path, monkeypatch):
    """Batches of 3 s would each be written at a 2 s interval; writes of 20 ms keep 4 s apart."""
    at = []
    clock = ticking_clock(3.0)

    def slow_write(path, text):  # 20 ms a write, say a network filesystem: the next waits 200 × 20 ms
        time.sleep(0.02)
        at.append(now[0])
    now = [0.0]

    def ticking():
        now[0] = clock()
        return now[0]
    monkeypatch.setattr("study.trial_progress.write_record", slow_write)
    trainer = small_trainer(tmp_path)
    channel = ProgressFile(tmp_path, epochs=2, interval=2.0, clock=ticking)
    channel.begin_epoch(1, len(trainer.loader))
    trainer.train_epoch(callbacks=[channel])  # batch k ends at clock 3k
    assert at[0] == 0 and len(at) >= 2 and all(b - a >= 200 * 0.02 for a, b in zip(at, at[1:])), at


def test_a_finished_trial_records_where_it_ended_however_slow_its_store(tmp_path):
    """Writes spaced past the whole trial (an object store that takes seconds): the start of epoch 1 is
    written, and still the record ends at the last batch of the end-of-training evaluation."""
    trainer = small_trainer(tmp_path)
    channel = ProgressFile(tmp_path / "trial", epochs=2, interval=10_000.0)
    assert [last for _, last in trial_epochs(trainer, 2, channel)] == [False, True]
    last = read_progress(tmp_path / "trial")
    assert channel.writes == 2
    assert (last.epoch, last.stage, last.phase, last.done, last.total) == (2, "final", "test_full", 1, 1)


def test_a_failed_write_is_said_once_and_training_goes_on(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the trial folder belongs")
    trainer = small_trainer(tmp_path, epochs=1, step1=1, step2=1)
    channel = ProgressFile(blocker / "trial", epochs=1, interval=0)
    rows = list(trial_epochs(trainer, 1, channel))
    assert len(rows) == 1 and "test_full_acc" in rows[0][0]
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]  # one, naming the record
    assert len(warnings) == 1 and "progress.json" in warnings[0], err
    assert channel.failed and channel.writes == 0


# --- the reader ----------------------------------------------------------------------------------
def test_read_progress_reads_a_record_and_tolerates_anything_else(tmp_path):
    write_record(tmp_path / "good")
    position = read_progress(tmp_path / "good")
    assert (position.epoch, position.phase, position.done, position.total, position.images_per_s) == \
        (3, "train", 45, 85, 412.4)
    assert position.describe() == "epoch 3/4  train 45/85 batches"
    assert read_progress(tmp_path / "absent") is None
    damaged = {
        "cut short": json.dumps(record())[:40],
        "empty": "",
        "not a mapping": "[3, 45, 85]",
        "done past total": json.dumps(record(done=86)),
        "a count as a boolean": json.dumps(record(done=True)),
        "an infinite rate": json.dumps(record()).replace("3.2", "1e400", 1),
        "a missing field": json.dumps({k: v for k, v in record().items() if k != "time"}),
        "an unknown stage": json.dumps(record(stage="warmup")),
        "too large": json.dumps(record(padding="x" * 5000)),
    }
    for name, text in damaged.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        (folder / PROGRESS_FILE).write_text(text)
        assert read_progress(folder) is None, name
    (tmp_path / "folder" / PROGRESS_FILE).mkdir(parents=True)
    assert read_progress(tmp_path / "folder") is None
    os.mkfifo(tmp_path / "good" / "pipe")  # opened without blocking, never read: no writer would come
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / PROGRESS_FILE)
    assert read_progress(tmp_path / "fifo") is None
    assert read_progress(tmp_path / "good" / "not-a-folder") is None
    extra = tmp_path / "extra"
    write_record(extra, written_by="a later version")  # fields it does not know are left aside
    assert read_progress(extra).done == 45


def write_running_experiment(folder: Path, t0: float) -> Path:
    """A 4-epoch baseline, three trials unfinished: `t1` reported 2 epochs of 60 s, `t2` none yet, `t3` one;
    every file last changed 100 s before `t0`."""
    base = Config(dataset="synthetic-lt", imb_factor=0.1, epochs=4, warmup_epochs=1, step1=2, step2=3,
                  batch_size=16, device="cpu", download=False).to_dict()
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({
        "kind": "baseline", "name": folder.name, "storage_path": str(folder.parent), "max_t": 4, "seeds": [1, 2, 3],
        "asha": False, "objectives": [["val_balanced_acc", "max"]], "base": base,
        "versions": {"toolkit": "0.1.0", "command": "python -m study.run baseline"}}))
    for seed, epochs in ((1, 2), (2, 0), (3, 1)):
        trial = folder / f"trial_t{seed}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps({"base": base, "seed": seed, "stop_epoch": 4}))
        rows = [{"epoch": e, "training_iteration": e, "trial_id": f"t{seed}", "seed": seed, "val_balanced_acc": 0.1 * e,
                 "time_this_iter_s": 60.0, "stop_epoch": 4} for e in range(1, epochs + 1)]
        (trial / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
        for name in ("params.json", "result.json"):
            os.utime(trial / name, (t0 - 100, t0 - 100))
    return folder


def test_running_shows_the_position_an_eta_that_counts_down_and_stalled_trials(tmp_path):
    t0 = 1_700_000_000.0
    folder = write_running_experiment(tmp_path / "baseline", t0)
    # t1: in epoch 3 since t0, last write at t0 + 20; t2: in its first epoch, 2 batches/s over 100 batches
    write_record(folder / "trial_t1", epoch=3, done=40, total=100, train_batches=100, batches_per_s=2.0,
                 train_batches_per_s=2.0, images_per_s=256.0, epoch_started=t0, time=t0 + 20)
    write_record(folder / "trial_t2", epoch=1, done=20, total=100, train_batches=100, batches_per_s=2.0,
                 train_batches_per_s=2.0, epoch_started=t0, time=t0 + 20)
    (folder / "trial_t3" / PROGRESS_FILE).write_text('{"epoch": 2, "stage": "ep')  # cut short: no position
    exp = load_experiment(folder)

    def rows(now: float) -> dict:
        return {row["trial_id"]: row for row in exp.running(now=now).to_dict("records")}
    at_30, at_40 = rows(t0 + 30), rows(t0 + 40)
    t1 = at_30["t1"]
    assert (t1["state"], t1["epoch"], t1["position"], t1["phase"], t1["batches_done"], t1["batches_total"]) == \
        ("running", 2, "epoch 3/4  train 40/100 batches", "train", 40, 100)
    assert t1["images_per_s"] == 256.0 and t1["seconds_per_epoch"] == 60.0
    assert t1["eta_s"] == pytest.approx(2 * 60 - 30)           # 2 epochs left, 30 s into the first of them
    assert at_40["t1"]["eta_s"] == pytest.approx(2 * 60 - 40)  # counts down with no new report
    assert t1["silent_s"] == pytest.approx(10) and t1["last_report_s_ago"] == pytest.approx(130)
    t2 = at_30["t2"]  # nothing timed yet: 100 batches at 2 per second make a 50 s epoch
    assert t2["seconds_per_epoch"] == 50.0 and t2["eta_s"] == pytest.approx(4 * 50 - 30)
    assert at_40["t2"]["eta_s"] == pytest.approx(4 * 50 - 40)
    t3 = at_30["t3"]  # a damaged position is no position: reported pace, last report's age
    assert (t3["state"], t3["position"], t3["seconds_per_epoch"], t3["eta_s"]) == ("running", "", 60.0, 3 * 60.0)
    assert math.isnan(t3["images_per_s"]) and t3["silent_s"] == pytest.approx(130)

    # silent for longer than a minute (10 writes of 2 s, 3 batches at 2/s are less): stalled; without a
    # position, silent for longer than 3 epochs' time: idle (interrupted, or waiting for resources)
    late = rows(t0 + 20 + 61)
    assert (late["t1"]["state"], late["t1"]["silent_s"]) == ("stalled", pytest.approx(61))
    assert late["t2"]["state"] == "stalled" and (late["t3"]["state"], late["t3"]["silent_s"]) == ("idle", 181)
    assert rows(t0 + 20 + 59)["t1"]["state"] == "running"
    # at a phase boundary the next batch may compile the model: ten minutes before it counts as stalled
    write_record(folder / "trial_t1", epoch=3, done=0, total=100, batches_per_s=None, epoch_started=t0, time=t0 + 20)
    assert rows(t0 + 20 + 500)["t1"]["state"] == "running" and rows(t0 + 20 + 601)["t1"]["state"] == "stalled"


def test_running_in_the_final_evaluation_and_with_a_record_from_before_the_last_report(tmp_path):
    t0 = 1_700_000_000.0
    folder = write_running_experiment(tmp_path / "baseline", t0)
    # t1 reported 2 epochs: a record of epoch 2 is from before that report, one of epoch 4 cannot be yet
    write_record(folder / "trial_t1", epoch=2, phase="val", done=1, total=1, epoch_started=t0, time=t0 + 20)
    row = load_experiment(folder).running(now=t0 + 30).set_index("trial_id").loc["t1"]
    assert row["position"] == "" and row["eta_s"] == pytest.approx(2 * 60) and row["state"] == "running"
    write_record(folder / "trial_t3", epoch=2, stage="final", phase="test", done=5, total=20, batches_per_s=5.0,
                 epochs=2, time=t0 + 20)  # t3 reported 1 epoch; its last one is being evaluated
    row = load_experiment(folder).running(now=t0 + 22).set_index("trial_id").loc["t3"]
    assert row["position"] == "epoch 2/2  final test 5/20 batches"
    assert row["eta_s"] == pytest.approx(15 / 5 - 2)  # what is left of the split being predicted


def test_the_live_page_shows_positions_counting_down_etas_and_stalled_trials(tmp_path):
    from results.app import ResultsSite
    now = time.time()
    folder = write_running_experiment(tmp_path / "runs" / "baseline", now)
    write_record(folder / "trial_t1", epoch=3, done=40, total=100, images_per_s=256.4, batches_per_s=2.0,
                 epoch_started=now - 30, time=now - 5)
    write_record(folder / "trial_t2", epoch=1, done=20, total=100, batches_per_s=2.0, train_batches=100,
                 train_batches_per_s=2.0, epoch_started=now - 300, time=now - 200)  # silent for 200 s
    section = ResultsSite(tmp_path / "runs").running_section(load_experiment(folder))
    headers = [name for name, _ in section["running"].headers]
    rows = {cells[0]: dict(zip(headers, cells)) for _, cells in section["running"].rows}
    assert headers == ["trial_id", "state", "epoch", "position", "images_per_s", "seconds_per_epoch", "eta",
                       "last_report"]  # (`epochs`, the same for all, is said once above the table)
    assert (rows["t1"]["state"], rows["t1"]["position"], rows["t1"]["images_per_s"]) == \
        ("running", "epoch 3/4  train 40/100 batches", "256")
    assert rows["t1"]["eta"] in ("01:30", "01:29")  # 2 epochs of 60 s, 30 s into the first (a second may pass)
    # t2 wrote last 200 s ago, its params.json 100 s ago: silent since the later of the two
    assert rows["t2"]["state"] in ("stalled 1m40s", "stalled 1m41s")
    assert rows["t2"]["position"] == "epoch 1/4  train 20/100 batches"
    assert section["running_count"] == 2  # t3, without a position, still runs by its last report


# --- the terminal view ---------------------------------------------------------------------------
def fake_settings(expected_trials: int = 2, stop_epoch: int = 4):
    return study_settings(stop_epoch=stop_epoch, trials=expected_trials)


def test_the_terminal_view_shows_each_trials_position_and_its_counting_down_eta(tmp_path):
    from study.progress import CompactProgress
    stream = io.StringIO()
    progress = CompactProgress(fake_settings(), stream=stream)
    trial = SimpleNamespace(trial_id="a", status="RUNNING", last_result={}, storage=local_storage(tmp_path / "trial_a"))
    for epoch in (1, 2):
        progress.on_trial_result(0, [trial], trial, {"epoch": epoch, "time_this_iter_s": 60.0,
                                                     "val_balanced_acc": 0.2 * epoch})
    t0 = time.time()
    write_record(tmp_path / "trial_a", epoch=3, done=45, total=85, images_per_s=412.4, epoch_started=t0, time=t0 + 5)
    progress.print_status([trial], now=t0 + 37)
    progress.print_status([trial], now=t0 + 47)
    lines = stream.getvalue().splitlines()
    # the trial: 2 epochs of 60 s left, 37 s into the first; the study: 2 + 4 epochs (one trial not started)
    # less 37/60 of the current one, at 60 s each
    assert lines[1] == "    a  epoch    3/4  train 45/85 batches  412 img/s  eta 01:23  val_balanced_acc best 0.4000"
    assert lines[3] == "    a  epoch    3/4  train 45/85 batches  412 img/s  eta 01:13  val_balanced_acc best 0.4000"
    assert lines[0].endswith("| ETA 05:23") and lines[2].endswith("| ETA 05:13")

    stream.truncate(0)
    stream.seek(0)
    progress.print_status([trial], now=t0 + 5 + 190)  # no write for 190 s, at 3.2 batches/s: stalled
    assert stream.getvalue().splitlines()[1] == \
        "    a  epoch    3/4  train 45/85 batches  412 img/s  stalled 3m10s  val_balanced_acc best 0.4000"


def test_the_study_eta_in_a_trials_final_evaluation_counts_what_that_evaluation_has_left(tmp_path):
    """The last trial in its end-of-training evaluation, 8 of 10 batches at 2 batches/s: its training is
    done, so the study has about a second left, not the epoch of 60 s its reports would suggest."""
    from study.progress import CompactProgress
    progress = CompactProgress(fake_settings(expected_trials=1, stop_epoch=2), stream=io.StringIO())
    trial = SimpleNamespace(trial_id="a", status="RUNNING", last_result={}, storage=local_storage(tmp_path / "trial_a"))
    progress.on_trial_result(0, [trial], trial, {"epoch": 1, "time_this_iter_s": 60.0, "val_balanced_acc": 0.2})
    t0 = time.time()
    write_record(tmp_path / "trial_a", epoch=2, epochs=2, stage="final", phase="test_full", done=8, total=10,
                 batches_per_s=2.0, epoch_started=t0 - 70, time=t0)
    assert progress.eta([trial], now=t0) == pytest.approx(1.0)
    write_record(tmp_path / "trial_a", epoch=2, epochs=2, stage="cooldown", phase="train", done=3, total=9,
                 batches_per_s=2.0, epoch_started=t0 - 30, time=t0)  # a cool-down belongs to its epoch
    assert progress.eta([trial], now=t0) == pytest.approx(30.0)


def test_the_terminal_view_estimates_from_the_in_epoch_rate_before_an_epoch_is_timed(tmp_path):
    from study.progress import CompactProgress
    stream = io.StringIO()
    progress = CompactProgress(fake_settings(), stream=stream)
    trial = SimpleNamespace(trial_id="b", status="RUNNING", last_result={}, storage=local_storage(tmp_path / "trial_b"))
    assert progress.eta([trial]) is None  # no report, no position: estimating
    t0 = time.time()
    write_record(tmp_path / "trial_b", epoch=1, done=20, total=100, images_per_s=None, batches_per_s=4.0,
                 train_batches=100, train_batches_per_s=4.0, epoch_started=t0, time=t0 + 5)
    progress.print_status([trial], now=t0 + 10)
    lines = stream.getvalue().splitlines()
    # a 25 s epoch: the trial has 4 − 10/25 epochs left, the study 4 more for the trial not started yet
    assert lines[1] == "    b  epoch    1/4  train 20/100 batches  eta 01:30  val_balanced_acc best -"
    assert lines[0].endswith("| ETA 03:10")


def test_the_terminal_view_without_a_progress_file_shows_the_epoch_under_way(tmp_path):
    from study.progress import CompactProgress
    stream = io.StringIO()
    progress = CompactProgress(fake_settings(), stream=stream)
    trial = SimpleNamespace(trial_id="c", status="RUNNING", last_result={"epoch": 1, "val_balanced_acc": 0.3},
                            storage=local_storage(tmp_path / "nothing-here"))
    progress.print_status([trial])
    assert stream.getvalue().splitlines()[1] == "    c  epoch    2/4  val_balanced_acc best 0.3000"
    assert format_silence(59) == "59s" and format_silence(3725) == "1h02m"


# --- a real study, and the benchmark -------------------------------------------------------------
@pytest.mark.ray
def test_each_trial_of_a_study_keeps_its_progress_file(smoke_baseline):
    assert smoke_baseline.code == 0, smoke_baseline.out
    folders = sorted(smoke_baseline.experiment.glob("trial_*"))
    assert len(folders) == 2
    for folder in folders:
        last = read_progress(folder)  # the last write: in the final evaluation
        assert (last.epoch, last.epochs, last.stage) == (2, 2, "final") and last.phase in ("val", "test", "test_full")
        assert last.train_batches >= 1 and last.train_batches_per_s > 0
    assert load_experiment(smoke_baseline.experiment).running().empty


def test_the_progress_cost_benchmark_runs_at_a_tiny_size():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "progress_cost.py"), "--per-class", "20",
                           "--batch-size", "16", "--epochs", "1", "--threads", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("epoch without the channel ") for line in lines)
    assert any(line.startswith("epoch with the channel ") for line in lines)
    assert any(line.startswith("channel's own time ") for line in lines)
    assert lines[-1].startswith("overhead ") and lines[-1].endswith(" % of an epoch")


def test_the_progress_cost_benchmark_answers_a_bad_argument_in_one_line():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "progress_cost.py"), "--epochs", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, len(done.stderr.splitlines())) == (2, "", 1), done.stderr
    assert_refused(done.stderr, "--epochs", "(got 0)")


def test_a_trial_in_a_cool_down_says_so_and_its_eta_counts_the_cool_downs_ahead():
    from results.in_epoch import InEpochProgress, trial_eta
    position = InEpochProgress.parse(json.dumps(record(epoch=3, stage="cooldown", phase="train", done=2, total=9)))
    assert position.phase_text == "cool-down train" and "cool-down train 2/9" in position.describe()
    # 2 of 4 epochs reported, 10 s each: 2 epochs and 1 cool-down epoch ahead, none of it begun
    assert trial_eta(None, 2, 4, 10.0, now=0.0, cooldown_ahead=1) == 30.0
    assert trial_eta(None, 2, 4, 10.0, now=0.0) == 20.0
