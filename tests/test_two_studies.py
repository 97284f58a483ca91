"""Two studies on one workstation at once, as two users would start them: the second finds the usual
ports (Ray dashboard 8265, results page 8000) taken by the first, takes the next free ones by itself,
says which, and both run to the end. The second's trials take every CPU of its Ray, and its page still
answers while they run (the page's replica asks for no CPU). (A port given explicitly that is taken stays
an error: tests/test_study.py.)"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from conftest import SMOKE
from results import load_experiment

PAGE = re.compile(r"http://127\.0\.0\.1:(\d+)/experiments/")  # the results page's address, as printed
DEFAULTS = {"--dashboard-port": 8265, "--results-port": 8000}


def start(name: str, storage: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "study.run", "baseline", *SMOKE, "--serve-results", "--name", name,
            "--storage-path", str(storage), *extra]
    with (storage / f"{name}.stderr").open("w") as err:  # a file: Ray's warnings never fill a pipe
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "RAY_AUTH_MODE": "disabled"})


def read_until_up(driver: subprocess.Popen) -> str:
    """What the driver printed until its results page was up (its Ray is up by then too)."""
    seen = []
    for line in driver.stdout:
        seen.append(line)
        if PAGE.search(line):
            return "".join(seen)
    pytest.fail("the study ended before its results page was up:\n" + "".join(seen))


def ports_taken(err: str) -> dict[str, int]:
    """The port of each option as the driver chose it: the usual one, or the one its note names."""
    chosen = {option: re.search(rf"^note: .*{option} (\d+)\b", err, re.M) for option in DEFAULTS}
    return {option: int(chosen[option].group(1)) if chosen[option] else default for option, default in DEFAULTS.items()}


def poll(port: int, answers: list, stop: threading.Event) -> None:
    """The trials table of the second study's page, once a second, until `stop`."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/experiments/second/trials", timeout=5) as reply:
                answers.append(reply.status)
        except OSError:
            pass
        stop.wait(1.0)


@pytest.mark.ray
def test_two_studies_at_once_each_take_their_own_ports_and_both_finish(tmp_path):
    first = start("first", tmp_path, "--epochs", "10")  # long enough to still run while the second starts
    second = None
    watchdog = threading.Timer(900, lambda: [p.kill() for p in (first, second) if p is not None])
    watchdog.start()
    answers, stop = [], threading.Event()
    try:
        first_out = read_until_up(first)
        second = start("second", tmp_path, "--cpus-per-trial", "2")  # every CPU of its 2-CPU Ray
        second_out = read_until_up(second)
        assert first.poll() is None, "the first study ended before the second was up: they never ran together"
        poller = threading.Thread(target=poll, args=(int(PAGE.search(second_out).group(1)), answers, stop))
        poller.start()
        second_out += second.communicate(timeout=600)[0]
        stop.set()
        poller.join(timeout=10)
        first_out += first.communicate(timeout=600)[0]
    finally:
        stop.set()
        watchdog.cancel()
    first_err, second_err = ((tmp_path / f"{name}.stderr").read_text() for name in ("first", "second"))
    assert (first.returncode, second.returncode) == (0, 0), (first_out, first_err, second_out, second_err)
    assert "Traceback" not in first_err + second_err

    # the second took other ports than the first, and said which for each it did not get as usual
    first_ports, second_ports = ports_taken(first_err), ports_taken(second_err)
    assert set(first_ports.values()).isdisjoint(second_ports.values())
    assert f"http://127.0.0.1:{first_ports['--results-port']}/experiments/first" in first_out
    assert f"http://127.0.0.1:{second_ports['--results-port']}/experiments/second" in second_out
    if first_ports == DEFAULTS:  # the usual case: the first got the usual ports, so the second says so twice
        for option, default in DEFAULTS.items():  # a note naming the usual port, the option and the port it got
            note = rf"^note: .*\b{default}\b.*{option} {second_ports[option]}\b"
            assert re.search(note, second_err, re.M), second_err

    assert 200 in answers  # the second's page answered while its trials held every CPU

    for name, epochs in (("first", 10), ("second", 2)):
        trials = load_experiment(tmp_path / name).trials
        assert trials["status"].tolist() == ["finished"] and trials["epochs_run"].tolist() == [epochs]
