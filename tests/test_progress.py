"""Per-batch progress: the trainer's `on_batch_end` hook and `progress.BatchProgress` (seconds, on a CPU)."""
from __future__ import annotations

import io
import itertools
import re
from dataclasses import dataclass

import pytest
import torch

from balpoe.config import Config
from balpoe.progress import BatchProgress, EpochPrinter
from balpoe.trainer import Trainer

TIMING = {"train_seconds", "train_images_per_s", "epoch_seconds"}


def small_trainer(tmp_path, **overrides) -> Trainer:
    """Synthetic long-tailed data: 239 train images (9 batches of 27, the last of 23), 40 val, 160 test,
    200 test_full."""
    values = dict(dataset="synthetic-lt", imb_factor=0.1, epochs=1, batch_size=27, warmup_epochs=1, step1=1, step2=1,
                  device="cpu", save_dir=str(tmp_path))
    values.update(overrides)
    return Trainer(Config(**values))


class Recorder:
    def __init__(self):
        self.calls: list[tuple[str, int, int]] = []

    def on_batch_end(self, trainer, phase: str, done: int, total: int) -> None:
        self.calls.append((phase, done, total))


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def ticking_clock(step: float = 1.0):
    """A clock that moves `step` seconds each time it is read."""
    counter = itertools.count()
    return lambda: next(counter) * step


def render(text: str) -> list[str]:
    """What a terminal shows for `text`: `\\r` returns to column 0 and later characters overwrite."""
    lines, line, col = [], [], 0
    for ch in text:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        else:
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
    if line:
        lines.append("".join(line).rstrip())
    return lines


def test_hook_is_called_once_per_batch_in_train_and_predict(tmp_path, monkeypatch):
    trainer = small_trainer(tmp_path)
    recorder = Recorder()
    trainer.train_epoch(callbacks=[recorder])
    batches = len(trainer.loader)
    assert batches == 9
    assert recorder.calls == [("train", done, batches) for done in range(1, batches + 1)]

    recorder.calls.clear()
    monkeypatch.setattr("balpoe.trainer.EVAL_BATCH_SIZE", 64)  # 200 images: 64, 64, 64, 8
    logits, labels = trainer.predict("test_full", callbacks=[recorder])
    assert recorder.calls == [("test_full", done, 4) for done in range(1, 5)]
    assert len(logits) == len(labels) == 200

    recorder.calls.clear()  # the defaults: no callbacks outside `fit`, and objects without the hook are skipped
    trainer.train_epoch()
    trainer.predict("val")
    trainer.predict("val", callbacks=[object()])
    assert recorder.calls == []


@dataclass
class Fitted:
    rows: list[dict]
    final: dict
    weights: dict
    calls: list[tuple[str, int, int]]
    terminal: str
    log: str


def fit_twice_epochs(tmp_path, with_progress: bool) -> Fitted:
    trainer = small_trainer(tmp_path, epochs=2, step1=2, step2=2)
    rows, recorder, terminal, log = [], Recorder(), FakeTTY(), io.StringIO()
    callbacks = [type("Rows", (), {"on_epoch_end": lambda self, t, m: rows.append(m)})()]
    if with_progress:  # both printers on one terminal, as `train` has them (there: stdout and stderr)
        callbacks += [recorder, EpochPrinter(2, stream=terminal), BatchProgress(2, stream=terminal, tty_interval=0),
                      BatchProgress(2, stream=log, interval=0)]
    final = trainer.fit(callbacks)
    assert trainer._fit_callbacks == ()  # fit's callbacks stop with it
    rows = [{k: v for k, v in row.items() if k not in TIMING} for row in rows]
    return Fitted(rows, final, trainer.model.state_dict(), recorder.calls, terminal.getvalue(), log.getvalue())


@pytest.fixture(scope="module")
def fits(tmp_path_factory) -> tuple[Fitted, Fitted]:
    """Two epochs and the final metrics, without and with progress callbacks."""
    return (fit_twice_epochs(tmp_path_factory.mktemp("plain"), False),
            fit_twice_epochs(tmp_path_factory.mktemp("shown"), True))


def test_fit_passes_its_callbacks_to_every_phase(fits):
    train = [("train", done, 9) for done in range(1, 10)]
    assert fits[1].calls == train + [("val", 1, 1)] + train + [("val", 1, 1)] \
        + [("test_full", 1, 1)]  # final metrics: one pass over the test set, which holds val and test


def test_epoch_rows_stay_clean_on_a_shared_terminal(fits):
    """EpochPrinter and BatchProgress in one list, on one terminal: the table shows as if BatchProgress
    were absent."""
    screen = render(fits[1].terminal)
    assert len(screen) == 3 and screen[0].split()[:2] == ["epoch", "lr"]
    assert [row.split()[0] for row in screen[1:]] == ["1/2", "2/2"]
    assert "epoch 2/2  train 3/9 batches" in fits[1].terminal
    log = fits[1].log.splitlines()
    assert "\r" not in fits[1].log and len(log) == 2 * (9 + 1) + 1
    assert log[9 + 1 + 8].startswith("epoch 2/2  train 9/9 batches  ") and log[-1] == "epoch 2/2  test_full 1/1 batches"


def test_progress_does_not_change_training(fits):
    """The hook draws no random numbers and touches no tensors: same metrics and weights."""
    plain, shown = fits
    assert shown.rows == plain.rows and shown.final == plain.final
    assert plain.weights.keys() == shown.weights.keys()
    assert all(torch.equal(plain.weights[k], shown.weights[k]) for k in plain.weights)


def test_batch_progress_on_a_terminal_rewrites_one_line_and_clears_it(tmp_path, monkeypatch):
    trainer = small_trainer(tmp_path)
    stream = FakeTTY()
    progress = BatchProgress(total_epochs=200, stream=stream, tty_interval=0, clock=ticking_clock())
    trainer.train_epoch(callbacks=[progress])
    text = stream.getvalue()
    assert "\n" not in text and text.startswith("\r")
    # one second per batch, 16 images per batch: 16 img/s, and 4 batches (seconds) left after the 5th
    assert "\repoch 1/200  train 5/9 batches  27 img/s  eta 00:04" in text
    assert "train 8/9 batches  27 img/s  eta 00:01" in text
    assert "9/9" not in text                                      # the last batch clears instead
    assert re.search(r"\r +\r$", text)                            # blanked when the phase completes
    assert render(text) == [""]                                   # nothing left on the screen

    monkeypatch.setattr("balpoe.trainer.EVAL_BATCH_SIZE", 64)
    stream = FakeTTY()
    progress = BatchProgress(stream=stream, tty_interval=0, clock=ticking_clock(0.5))
    trainer.predict("test_full", callbacks=[progress])
    text = stream.getvalue()
    assert "\rtest_full 2/4 batches  128 img/s  eta 00:01" in text  # 64 images in half a second
    assert "epoch" not in text and render(text) == [""]


def test_batch_progress_on_a_terminal_is_throttled(tmp_path):
    trainer = small_trainer(tmp_path)
    stream = FakeTTY()
    trainer.train_epoch(callbacks=[BatchProgress(stream=stream, clock=ticking_clock(0.1))])  # 0.25 s default
    shown = [part.split()[1] for part in stream.getvalue().split("\r") if part.strip()]
    assert shown == ["1/9", "4/9", "7/9"]  # the first batch, then at most every 0.25 s


def test_batch_progress_in_a_log_writes_plain_lines(tmp_path, monkeypatch):
    trainer = small_trainer(tmp_path)
    stream = io.StringIO()
    progress = BatchProgress(total_epochs=1, stream=stream, interval=0, clock=ticking_clock())
    trainer.train_epoch(callbacks=[progress])
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 9 and lines[0] == "epoch 1/1  train 1/9 batches"
    assert lines[4] == "epoch 1/1  train 5/9 batches  27 img/s  eta 00:04"
    assert lines[-1] == "epoch 1/1  train 9/9 batches  27 img/s  took 00:08"  # 8 batches of 27 after the first, in 8 s


def test_batch_progress_in_a_log_is_silent_for_short_phases_and_paced_for_long_ones(tmp_path):
    trainer = small_trainer(tmp_path)
    stream = io.StringIO()  # the defaults: every 30 s, and only for a phase that runs that long
    trainer.train_epoch(callbacks=[BatchProgress(stream=stream)])
    trainer.predict("val", callbacks=[BatchProgress(stream=stream)])
    assert stream.getvalue() == ""

    stream = io.StringIO()  # 10 s per batch: a line at 30 s (batch 4), at 60 s (batch 7), and the end
    trainer.train_epoch(callbacks=[BatchProgress(stream=stream, clock=ticking_clock(10.0))])
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == ["4/9", "7/9", "9/9"]


def test_export_logits_reports_progress_per_split(tmp_path):
    from balpoe.export import export_logits
    trainer = small_trainer(tmp_path)
    checkpoint = tmp_path / "fake.pth"
    checkpoint.write_bytes(b"not a real checkpoint: only hashed")
    recorder, lines = Recorder(), []
    export_logits(trainer, checkpoint, tmp_path / "logits", ["train", "val", "test_full"], log=lines.append,
                  callbacks=[recorder])
    # val comes from test_full's pass (the test set holds it): each test image forwarded once
    assert [phase for phase, _, _ in recorder.calls] == ["train", "test_full"]
    assert len(lines) == 4  # a line per split, and where the export is


@pytest.mark.parametrize("stream_cls", [io.StringIO, FakeTTY])
def test_batch_progress_tolerates_an_abandoned_phase(tmp_path, stream_cls):
    """A phase that stops early (an exception) does not confuse the next one."""
    stream = stream_cls()
    progress = BatchProgress(stream=stream, interval=0, tty_interval=0, clock=ticking_clock())
    trainer = small_trainer(tmp_path)
    trainer.model.train()
    for done in (1, 2, 3):
        progress.on_batch_end(trainer, "train", done, 9)
    trainer.model.eval()
    progress.on_batch_end(trainer, "val", 1, 2)
    progress.on_batch_end(trainer, "val", 2, 2)
    text = stream.getvalue()
    assert "val 1/2 batches" in text
    if stream_cls is FakeTTY:
        assert render(text) == [""]
