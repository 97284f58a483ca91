"""Shared fixtures: small CIFAR-format data sets generated on the fly, and tiny configs."""
from __future__ import annotations

import atexit
import contextlib
import io
import os
import pickle
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from balpoe.config import Config  # noqa: E402

torch.set_num_threads(1)  # deterministic reductions, and immune to other jobs competing for the cores


def eventually(check, timeout_s: float = 60.0, interval_s: float = 0.05):
    """The first true value of `check()`, polled every `interval_s` until `timeout_s` have passed; the last
    value otherwise (so `assert eventually(...)` fails with what was seen last)."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(interval_s)
    return value


def assert_refused(err: str, option: str, *shown: str, then: str | None = None) -> None:
    """`err` is a refusal that names `option` first, `error: OPTION: …` (`error: OPTION: THEN …` with `then`,
    the file or value the message is about), shows each of `shown` (the value refused, a file, the option
    that fixes it) and holds no traceback. The prose around them is free to change: tests/test_golden_messages.py
    pins the few messages whose exact words are a promise to users."""
    start = f"error: {option}: " + (f"{then} " if then is not None else "")
    assert err.startswith(start), f"does not start {start!r}: {err!r}"
    missing = [text for text in shown if text not in err]
    assert not missing, f"{missing} not shown in {err!r}"
    assert "Traceback" not in err, err


def printed_command(text: str, module: str) -> list[str]:
    """The words of the last command in `text` that the user is told to paste: a line of its own that runs
    `PYTHON -m MODULE …`, as the shell would split it."""
    def words(line: str) -> list[str]:
        try:
            return shlex.split(line)
        except ValueError:  # prose with an odd quote
            return []
    commands = [found for line in text.splitlines() if (found := words(line))[1:3] == ["-m", module]]
    assert commands, f"no `python -m {module}` command on a line of its own in {text!r}"
    return commands[-1]


FOLDERS = {"cifar10": ("cifar-10-batches-py", b"labels"), "cifar100": ("cifar-100-python", b"fine_labels")}


def make_cifar_folder(root: Path, name: str = "cifar10", train_per_class: int = 40, test_per_class: int = 10,
                      seed: int = 0) -> Path:
    """Write a CIFAR-format folder whose classes differ in mean colour, so a model can learn them."""
    folder_name, label_key = FOLDERS[name]
    num_classes = 10 if name == "cifar10" else 100
    rng = np.random.RandomState(seed)
    palette = rng.randint(0, 256, size=(num_classes, 3))

    def make(per_class: int):
        labels = np.repeat(np.arange(num_classes), per_class)
        rng.shuffle(labels)
        noise = rng.randint(-40, 41, size=(len(labels), 3, 32, 32))
        pixels = np.clip(palette[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
        return {b"data": pixels.reshape(len(labels), -1), label_key: labels.tolist()}

    folder = root / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    train_files = ["train"] if name == "cifar100" else [f"data_batch_{i}" for i in range(1, 6)]
    test_file = "test" if name == "cifar100" else "test_batch"
    train = make(train_per_class)
    parts = np.array_split(np.arange(len(train[label_key])), len(train_files))
    for file_name, part in zip(train_files, parts):
        batch = {b"data": train[b"data"][part], label_key: [train[label_key][i] for i in part]}
        with open(folder / file_name, "wb") as handle:
            pickle.dump(batch, handle)
    with open(folder / test_file, "wb") as handle:
        pickle.dump(make(test_per_class), handle)
    return root


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory) -> Path:
    return make_cifar_folder(tmp_path_factory.mktemp("cifar10"), "cifar10")


def tiny_config(data_dir: Path, save_dir: Path | str = "unused", **overrides) -> Config:
    """A seconds-long run of the recipe on generated CIFAR-10-format data."""
    values = dict(dataset="cifar10-lt", data_dir=str(data_dir), imb_factor=0.1, epochs=3, warmup_epochs=1,
                  step1=2, step2=3, batch_size=32, save_period=2, save_dir=str(save_dir), download=False,
                  device="cpu")
    values.update(overrides)
    return Config(**values)


def study_settings(stop_epoch: int = 4, trials: int = 2, asha: bool = False, max_failures: int = 0,
                   cooldown_fraction: float | None = None):
    """A real `StudySettings` of a baseline over `trials` seeds stopping at `stop_epoch` (ASHA from epoch 1,
    halving; with `cooldown_fraction`, its rungs before the first LR step at epoch 3 are cooled)."""
    from results.settings import StudySettings
    base = Config(epochs=max(stop_epoch, 4), warmup_epochs=1, step1=3, step2=4)
    return StudySettings(kind="baseline", name="study", storage_path="/runs", base=base,
                         seeds=tuple(range(1, trials + 1)), max_t=stop_epoch, asha=asha or cooldown_fraction is not None,
                         grace_period=1, max_failures=max_failures,
                         fidelity="cooldown" if cooldown_fraction else "trunk", cooldown_fraction=cooldown_fraction)


# --- small real studies, run once per session through the real CLI on a local 2-CPU Ray ------------
# SMOKE_RANKED: the smoke preset as users run it; its generated images are enough for epoch 1 to rank
# trials, so studies whose ASHA decisions a test counts or compares use it. SMOKE: the same on a smaller generated
# CIFAR-10 (20 training images per class before the imbalance, 10 test), for studies that prove wiring,
# not learning: a trial's epoch costs half as much.
RAY_TEST_ARGS = ["--num-cpus", "2", "--checkpoint-every", "1", "--progress-interval", "2", "--cpus-per-trial", "1"]
SMOKE_RANKED = ["--preset", "smoke", *RAY_TEST_ARGS]
STUDY_DATA = make_cifar_folder(Path(tempfile.mkdtemp(prefix="balpoe-study-data-")), "cifar10",
                               train_per_class=20, test_per_class=10)
atexit.register(shutil.rmtree, STUDY_DATA, True)
SMOKE = [*SMOKE_RANKED, "--dataset", "cifar10-lt", "--data-dir", str(STUDY_DATA)]


@dataclass
class Ran:
    """A finished CLI run: its exit code, what it printed, and the experiment folder it wrote."""
    code: int
    out: str
    experiment: Path

    @property
    def storage(self) -> Path:
        return self.experiment.parent


def run_cli(argv: list[str]) -> tuple[int, str]:
    from study.run import main
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(argv)
    return code, buffer.getvalue()


@pytest.fixture(scope="session")
def smoke_baseline(tmp_path_factory) -> Ran:
    """`study.run baseline` of `SMOKE_RANKED --seeds 1 2`: two seeds × 2 epochs, on smoke_search's data
    (the report compares the two)."""
    storage = tmp_path_factory.mktemp("baseline-runs")
    code, out = run_cli(["baseline", *SMOKE_RANKED, "--seeds", "1", "2", "--storage-path", str(storage)])
    return Ran(code, out, storage / "baseline-smoke")


@pytest.fixture(scope="session")
def smoke_search(tmp_path_factory) -> Ran:
    """`study.run search` of `SMOKE_RANKED`: 4 samples, one at a time, ASHA from epoch 1."""
    storage = tmp_path_factory.mktemp("search-runs")
    code, out = run_cli(["search", *SMOKE_RANKED, "--space", "alpha_tau", "--num-samples", "4", "--max-concurrent", "1",
                         "--grace-period", "1", "--storage-path", str(storage)])
    return Ran(code, out, storage / "search-alpha_tau-smoke")


# --- an S3-compatible server (moto's), for studies and readers on an object store ---------------------
@dataclass
class ObjectStore:
    """A moto S3 server on loopback; the AWS environment points every client (pyarrow, Ray) at it."""
    endpoint: str
    process: object

    def bucket(self, name: str) -> str:
        """A new, empty bucket; returns its URI."""
        import boto3
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return f"s3://{name}"


def start_moto(env: dict | None = None):
    """A moto server subprocess on a free loopback port, and its endpoint, once it answers."""
    import socket
    import subprocess
    import sys
    import urllib.request
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    endpoint = f"http://127.0.0.1:{port}"

    def answers_or_died() -> bool:
        if process.poll() is not None:
            return True  # nothing more to wait for
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return True
        except OSError:
            return False
    if not eventually(answers_or_died, timeout_s=60, interval_s=0.2) or process.poll() is not None:
        process.kill()
        raise RuntimeError("moto's S3 server did not start")
    return process, endpoint


AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def object_store():
    """One moto server for the session, with the AWS environment set for this process and what it starts."""
    process, endpoint = start_moto()
    saved = {key: os.environ.get(key) for key in [*AWS_TEST_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(AWS_TEST_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        yield ObjectStore(endpoint, process)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        process.kill()
        process.wait()


def interrupted_cli(argv: list[str], ready) -> str:
    """`python -m study.run ARGV` in a subprocess, sent SIGTERM (as a scheduler would) once `ready(line)` is
    true of a line it printed; returns all it printed, after checking it ended as interrupted (exit 130).
    Fails when it ends before that point; a watchdog kills it after 5 minutes."""
    import signal
    import subprocess
    import sys
    import threading
    driver = subprocess.Popen([sys.executable, "-m", "study.run", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    watchdog = threading.Timer(300, driver.kill)
    watchdog.start()
    seen = []
    for line in driver.stdout:
        seen.append(line)
        if ready(line):
            break
    else:
        pytest.fail("the study ended before the interrupt point:\n" + "".join(seen))
    driver.send_signal(signal.SIGTERM)  # forwarded as SIGUSR1: Tune saves its state and returns
    out = "".join(seen) + driver.communicate(timeout=120)[0]
    watchdog.cancel()
    assert driver.returncode == 130, out
    return out
