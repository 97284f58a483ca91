"""The few messages whose exact words are a promise to users, word for word, in one place.

Everywhere else a test asserts what a message means — the option it names first, the exit code, the value
it refused, the file, the option that fixes it (`conftest.assert_refused`) — so that rewording a message
breaks no test that says nothing about behaviour. The messages here are kept exact because their form is
documented (docs/bad-input.md, docs/commands.md: `error: <field>: <what is wrong> (got …)`, one line, exit 2)
or because the user pastes them: the commands printed to continue a run or a study. Changing one of these
is changing a promise: change the docs with it.

Each row is what is run, as `python ARGV` in a fresh process, and what it must print on stderr. In both,
{tmp} is the row's own temporary folder, {cifar10} a small CIFAR-10 folder and {python} the interpreter as
printed commands name it; in the message, {last} is the newest checkpoint left in {tmp}/run.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from balpoe.shell import interpreter
from conftest import eventually

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Golden:
    name: str
    promise: str  # why these words are kept exact
    argv: tuple[str, ...]  # after `python`
    code: int
    stderr: str  # exactly: the whole of stderr, or its end with `ends_stderr`
    files: tuple[tuple[str, str], ...] = ()  # (path under {tmp}, text) written before it runs
    ctrl_c_once: str | None = None  # a file under {tmp}: Ctrl-C (SIGINT) is sent once it exists
    ends_stderr: bool = False  # the message ends stderr (progress lines come before it)


NO_DATA = ("--dataset", "cifar10-lt", "--data-dir", "/nonexistent-data", "--download", "0")
TRAIN = ("--dataset", "cifar10-lt", "--data-dir", "{cifar10}", "--imb-factor", "0.1", "--epochs", "100", "--warmup",
         "1", "--step1", "80", "--step2", "90", "--bs", "32", "--save_period", "1", "--device", "cpu", "--download",
         "0", "--save-dir", "{tmp}/run")

GOLDEN = [
    Golden("trainer-field", "the trainer's form: `error: <field>: <what is wrong> (got …)`, one line, exit 2",
           ("-m", "balpoe", "train", *NO_DATA, "--lr", "0"), 2,
           "error: lr: must be > 0 (got 0.0)\n"),
    Golden("study-option", "a study option's form: `error: <option>: <what is wrong> (got …)`",
           ("-m", "study.run", "search", "--max-t", "0", "--storage-path", "{tmp}"), 2,
           "error: --max-t: must be in [1, epochs=200] (got 0)\n"),
    Golden("argparse-number", "a mistake argparse finds: one line naming the option as typed, then where --help is "
           "(quoted in docs/bad-input.md)",
           ("-m", "study.run", "search", "--num-samples", "abc"), 2,
           "error: --num-samples: expected a whole number such as 128 (got 'abc')\n"
           "(`{python} -m study.run search --help` lists the options)\n"),
    Golden("benchmark-argument", "a benchmark answers a bad argument as the toolkit's commands do",
           ("benchmarks/eval_cost.py", "--repeats", "0"), 2,
           "error: --repeats: must be >= 1 (got 0)\n"),
    Golden("study-exists", "a new study under an existing one's name: the command that continues it, to paste",
           ("-m", "study.run", "baseline", "--preset", "smoke", "--storage-path", "{tmp}"), 2,
           "error: --name: experiment 'baseline-smoke' already exists in {tmp}; continue it with "
           "`{python} -m study.run resume baseline-smoke --storage-path {tmp}` or pick another --name\n",
           files=(("baseline-smoke/study.json", "{}"),)),
    Golden("train-ctrl-c", "Ctrl-C in training: the last complete checkpoint, and the command that continues "
           "from it, to paste",
           ("-m", "balpoe", "train", *TRAIN), 130,
           "\ninterrupted: the last complete checkpoint is {last}; continue with:\n"
           "  {python} -m balpoe train --resume {last}\n",
           ctrl_c_once="run/checkpoint-epoch1.pth", ends_stderr=True),
]


def newest_checkpoint(run: Path) -> str:
    found = sorted(run.glob("checkpoint-epoch*.pth"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    return str(found[-1]) if found else "(none)"


def run_golden(row: Golden, tmp: Path, cifar10: Path) -> tuple[int, str]:
    """Exit code and stderr of `python ARGV` run from the repository root, as a user would run it."""
    for path, text in row.files:
        (tmp / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp / path).write_text(text)
    argv = [part.format(tmp=tmp, cifar10=cifar10) for part in row.argv]
    process = subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"},
        # Ctrl-C reaches it even where this test runs with SIGINT ignored (started in the background)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if row.ctrl_c_once:
            started = eventually(lambda: (tmp / row.ctrl_c_once).exists() or process.poll() is not None, timeout_s=300,
                                 interval_s=0.1)
            assert started and process.poll() is None, f"it ended before {row.ctrl_c_once} was written"
            process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, err


@pytest.mark.parametrize("row", GOLDEN, ids=[row.name for row in GOLDEN])
def test_a_message_that_is_a_promise_keeps_its_words(row, tmp_path, cifar10_dir):
    code, err = run_golden(row, tmp_path, cifar10_dir)
    expected = row.stderr.format(tmp=tmp_path, python=interpreter(), last=newest_checkpoint(tmp_path / "run"))
    assert code == row.code, err
    assert (err[-len(expected):] if row.ends_stderr else err) == expected, f"{row.promise}:\n{err}"
