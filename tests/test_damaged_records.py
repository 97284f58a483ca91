"""Records whose numbers no trial writes, and folder names that are no UTF-8: the reader takes an absurd
number for no position, an ETA never overflows (it is capped at 99 days and says so), and a folder whose
name is no UTF-8 is shown, linked and reported with its bytes escaped; nothing stops a study or breaks
another experiment's page, the index or `report`. Folders are written by hand (no Ray)."""
from __future__ import annotations

import io
import json
import os
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import run_cli
from results.app import ResultsSite
from results.in_epoch import MAX_ETA_S, format_eta, trial_eta
from results.reader import read_progress
from test_in_epoch_progress import fake_settings, local_storage, write_record
from test_page import get, report_row, served, settled_rows, write_experiment

DENORMAL = 5e-324
NOT_UTF8 = os.fsdecode(b"bad\xff")


@pytest.mark.parametrize("field, value", [("batches_per_s", DENORMAL), ("train_batches_per_s", DENORMAL),
                                          ("images_per_s", DENORMAL), ("batches_per_s", 1e300),
                                          ("total", 10**400), ("epoch", 10**30), ("epoch_started", 1e300),
                                          ("time", -1.0), ("interval_s", 1e300)],
                         ids=lambda value: value if isinstance(value, str) else str(value)[:12])
def test_a_record_with_a_number_no_trial_writes_is_no_position(tmp_path, field, value):
    write_record(tmp_path, **{field: value})
    assert read_progress(tmp_path) is None


def test_an_eta_is_capped_at_99_days_and_says_so():
    assert trial_eta(None, 1, 200, 1e308, now=0.0) == MAX_ETA_S  # 199 epochs of 1e308 s: infinite, capped
    assert format_eta(MAX_ETA_S) == "over 99 days" and format_eta(3723) == "1:02:03"


def unfinished_experiment(folder: Path, **position) -> Path:
    """A 2-seed baseline whose seed 2 reported one epoch of two and writes `position` for its second."""
    write_experiment(folder)
    (folder / "trial_t2" / "result.json").write_text(json.dumps(report_row(1, 2, 2)) + "\n")
    now = time.time()
    write_record(folder / "trial_t2", **{"epoch": 2, "epochs": 2, "epoch_started": now - 5, "time": now, **position})
    return folder


def test_the_terminal_view_goes_on_past_a_denormal_rate(tmp_path):
    from study.progress import CompactProgress
    stream = io.StringIO()
    progress = CompactProgress(fake_settings(stop_epoch=2), stream=stream)
    trial = SimpleNamespace(trial_id="a", status="RUNNING", last_result={"epoch": 1},
                            storage=local_storage(tmp_path / "trial_a"))
    now = time.time()
    write_record(tmp_path / "trial_a", epoch=2, epochs=2, stage="final", images_per_s=DENORMAL,
                 batches_per_s=DENORMAL, epoch_started=now, time=now)
    progress.print_status([trial], now=now)
    assert stream.getvalue().splitlines()[1] == "    a  epoch    2/2  val_balanced_acc best -"  # no position


def test_the_terminal_view_says_an_eta_past_99_days(tmp_path):
    from study.progress import CompactProgress
    stream = io.StringIO()
    progress = CompactProgress(fake_settings(stop_epoch=2), stream=stream)
    trial = SimpleNamespace(trial_id="a", status="RUNNING", last_result={"epoch": 1},
                            storage=local_storage(tmp_path / "trial_a"))
    now = time.time()  # the slowest rate a record may hold, a billion batches to go
    write_record(tmp_path / "trial_a", epoch=2, epochs=2, stage="final", done=0, total=10**9, batches_per_s=1e-6,
                 epoch_started=now, time=now)
    progress.print_status([trial], now=now)
    assert "eta over 99 days" in stream.getvalue().splitlines()[1]


@pytest.mark.parametrize("position, shown, eta_s", [
    ({"stage": "final", "batches_per_s": DENORMAL, "images_per_s": DENORMAL, "train_batches_per_s": DENORMAL},
     "", 1.0),  # no position: the reported pace (1 s per epoch) for the epoch left
    ({"stage": "final", "done": 0, "total": 10**9, "batches_per_s": 1e-6},
     "epoch 2/2  final train 0/1000000000 batches", MAX_ETA_S)])
def test_a_trial_with_a_damaged_or_endless_position_leaves_every_page_answering(tmp_path, position, shown, eta_s):
    unfinished_experiment(tmp_path / "runs" / "slow", **position)
    write_experiment(tmp_path / "runs" / "good")
    with served(ResultsSite(tmp_path / "runs")) as base:
        assert set(settled_rows(base)) == {"slow", "good"}
        status, body = get(base + "/api/experiments/slow/running")
        assert status == 200 and [(r["position"], r["eta_s"]) for r in json.loads(body)] == [(shown, eta_s)]
        status, body = get(base + "/experiments/slow")
        assert status == 200 and b"<td>t2</td>" in body
        assert (b"<td>over 99 days</td>" in body) == (eta_s == MAX_ETA_S)
        assert get(base + "/experiments/good")[0] == 200 and get(base + "/")[0] == 200


def test_a_folder_whose_name_is_no_utf8_is_shown_escaped_and_the_others_answer(tmp_path):
    write_experiment(tmp_path / "runs" / "good")
    bad = write_experiment(tmp_path / "runs" / NOT_UTF8)
    settings = json.loads((bad / "study.json").read_text(errors="surrogateescape"))
    (bad / "study.json").write_text(json.dumps({**settings, "name": "bad"}))  # a folder renamed by hand
    with served(ResultsSite(tmp_path / "runs")) as base:
        rows = settled_rows(base)
        assert set(rows) == {"good", "bad\\xff"} and rows["bad\\xff"]["finished"] == 2
        status, body = get(base + "/")
        link = urllib.parse.quote("bad\\xff")
        assert status == 200 and f'<a href="experiments/{link}">bad\\xff</a>'.encode() in body
        status, body = get(base + f"/experiments/{link}")  # the link leads to its page, figures and all
        assert status == 200 and "<h1>baseline 'bad\\xff'</h1>".encode() in body
        assert get(base + f"/experiments/{link}/figures/learning_curves.png")[0] == 200
        assert get(base + f"/api/experiments/{link}/trials")[0] == 200
        assert get(base + "/experiments/good")[0] == 200
        assert get(base + "/experiments/nobody%5Cxff")[0] == 404


def test_report_writes_the_report_of_a_folder_whose_name_is_no_utf8(tmp_path):
    bad = write_experiment(tmp_path / NOT_UTF8)
    settings = json.loads((bad / "study.json").read_text(errors="surrogateescape"))
    (bad / "study.json").write_text(json.dumps({**settings, "name": "bad"}))
    code, _ = run_cli(["report", str(bad)])
    page = (bad / "report" / "index.html").read_bytes().decode("utf-8")  # valid UTF-8
    assert code == 0 and "<h1>baseline 'bad\\xff'</h1>" in page
