"""The trainer's answer to bad input and faults: `error: <field>: ... (got ...)` and exit 2 before any
data is read, never a traceback; interrupts and full disks leave no partial file and name the last
complete checkpoint."""
from __future__ import annotations

import gzip
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from balpoe import datasets
from balpoe.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from balpoe.cli import main
from balpoe.trainer import Trainer
from conftest import make_cifar_folder, tiny_config

# a data set that is absent on purpose: any check that comes after reading data would report it instead
NO_DATA = ["--dataset", "cifar10-lt", "--data-dir", "/nonexistent-data", "--download", "0"]


def train(argv: list[str], capsys) -> tuple[int, str]:
    code = main(["train", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "lr: must be a finite number (got inf)"),
    (["--wd", "inf"], "weight_decay: must be a finite number (got inf)"),
    (["--norm_scale", "inf"], "norm_scale: must be a finite number (got inf)"),
    (["--mixup_alpha", "nan"], "mixup_alpha: must be a finite number (got nan)"),
    (["--lr", "0"], "lr: must be > 0 (got 0.0)"),
    (["--tau_list", "1;;2"], "tau_list: an empty value between separators"),
    (["--tau_list", "0;1;nan"], "tau_list: every τ must be a finite number"),
    (["--seed", "-1"], "seed: must be in [0, 4294967295] (got -1)"),
    (["--device", "cuda:x"], "device: must be auto, cpu, cuda, cuda:N or mps (got 'cuda:x')"),
    (["--device", "gpu"], "device: must be auto, cpu, cuda, cuda:N or mps"),
    (["--imb-factor", "2"], "imb_factor: must be in (0, 1] (got 2.0)"),
    (["--save_dir", ""], "--save_dir: an empty path"),
])
def test_bad_values_on_the_command_line(argv, message, capsys):
    code, err = train([*NO_DATA, *argv], capsys)
    assert (code, err.startswith("error: ")) == (2, True), err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_this_machine_lacks(capsys):
    code, err = train([*NO_DATA, "--device", "cuda"], capsys)
    assert code == 2 and "device: torch sees no CUDA GPU on this machine; use --device cpu or auto" in err


@pytest.mark.parametrize("name, text, message", [
    ("true.json", '{"batch_size": true}', "batch_size: must be an integer (got True)"),
    ("float.json", '{"epochs": 2.5}', "epochs: must be an integer (got 2.5)"),
    ("flag.json", '{"use_norm": 1}', "use_norm: must be true or false"),
    ("device.yaml", "device: 5\n", "device: must be a non-empty string without control characters (got 5)"),
    ("letters.yaml", 'tau_list: [0, "a", 2]\n', "tau_list: item 1 must be a finite number (got 'a'"),
    ("null.json", '{"tau_list": [0, null, 2]}', "tau_list: item 1 must be a finite number (got None"),
    ("rule.json", '{"tau_list": "limits", "tau_min": "0", "tau_max": 2}', "tau_min: must be a finite number (got '0')"),
    ("keys.yaml", "1: 2\nlr: 0.1\n", "line 1: a key must be a name like lr (got 1)"),
    ("list.json", "[1, 2]", "must hold a mapping at the top level (got list)"),
    ("section.json", '{"arch": {}, "data_loader": {}, "balpoe": 3}', "balpoe: expected our config as a mapping"),
])
def test_wrongly_typed_config_files(name, text, message, tmp_path, capsys):
    (tmp_path / name).write_text(text)
    code, err = train(["-c", str(tmp_path / name), "--data-dir", "/nonexistent-data", "--download", "0"], capsys)
    assert code == 2 and message in err and "Traceback" not in err, err


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))  # 9**9 values


@pytest.mark.parametrize("name, text", [
    ("bomb.yaml", ALIAS_BOMB),
    ("complex-key.yaml", "? [a, b]\n: 1\n"),
    ("keys.json", "{" + ", ".join(f'"k{i}": {i}' for i in range(60_000)) + ', "k7": 0}'),
])
def test_a_config_made_to_cost_time_is_refused_at_once_without_loading_torch(name, text, tmp_path):
    """An alias bomb, a key that is no name, 60,000 keys with a repeat: one line naming the config, exit 2,
    within a second or two of the command starting (the duplicate check is linear, torch is not loaded)."""
    (tmp_path / name).write_text(text)
    probe = ("import sys, time; from balpoe.cli import main; start = time.monotonic(); "
             f"code = main(['train', '-c', {str(tmp_path / name)!r}]); "
             "print(code, round(time.monotonic() - start, 2), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    code, seconds, torch_loaded = done.stdout.split()
    assert (code, torch_loaded) == ("2", "False") and float(seconds) < 2, done
    assert done.stderr.startswith(f"error: config: {tmp_path / name}") and len(done.stderr.splitlines()) == 1


def test_a_config_that_is_not_utf8(tmp_path, capsys):
    (tmp_path / "latin1.json").write_bytes('{"save_dir": "runs/é"}'.encode("latin-1"))
    code, err = train(["-c", str(tmp_path / "latin1.json")], capsys)
    assert code == 2 and "is not UTF-8 text (byte 19)" in err


def test_an_unusable_save_folder_is_found_before_the_data(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for save_dir, message in ((blocker, "is a file, not a folder"), (blocker / "run", "is a file, so no folder"),
                              (Path("/proc/no-such-run"), "is not writable")):
        code, err = train([*NO_DATA, "--save_dir", str(save_dir)], capsys)
        assert code == 2 and err.startswith("error: save_dir: ") and message in err, err


def test_truncated_and_inconsistent_cifar_files(tmp_path):
    root = make_cifar_folder(tmp_path, "cifar10", train_per_class=4, test_per_class=2)
    test_file = root / "cifar-10-batches-py" / "test_batch"
    whole = test_file.read_bytes()
    test_file.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(datasets.DataError, match="test_batch: the file is damaged or truncated"):
        datasets.load_cifar(root, "cifar10", download=False)
    import pickle
    batch = pickle.loads(whole)
    batch[b"labels"] = batch[b"labels"][:-1]  # one label fewer than images
    test_file.write_bytes(pickle.dumps(batch))
    with pytest.raises(datasets.DataError, match=r"20 labels; expected \(N, 3072\)|19 labels"):
        datasets.load_cifar(root, "cifar10", download=False)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def make_fashion_mnist(root: Path, per_class: int = 3) -> Path:
    folder = root / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    labels = np.repeat(np.arange(10), per_class)
    images = np.full((len(labels), 28, 28), 7)
    for stem in ("train", "t10k"):
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels)
    return folder


def test_an_explicit_fashion_mnist_folder_wins_over_the_system_copy(tmp_path):
    folder = make_fashion_mnist(tmp_path)
    assert datasets.fashion_mnist_folder(tmp_path) == folder
    raw = datasets.load_fashion_mnist(tmp_path, download=False)
    assert raw.train_images.shape == (30, 32, 32, 3) and raw.train_images.max() == 7  # ours, not the system's
    path = folder / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    with gzip.open(path, "wb") as handle:
        handle.write(data[:-5])
    with pytest.raises(datasets.DataError, match="t10k-labels-idx1-ubyte.gz: the file is damaged or truncated "
                                                 r"\(33 bytes, its header promises 38\)"):
        datasets.load_fashion_mnist(tmp_path, download=False)


def test_checkpoints_that_lack_keys_or_hold_a_bad_config(tmp_path, cifar10_dir):
    state = Trainer(tiny_config(cifar10_dir, tmp_path)).state_dict()
    for key in ("optimizer", "class_counts"):
        partial = {k: v for k, v in state.items() if k != key}
        save_checkpoint(partial, tmp_path / "partial.pth")
        with pytest.raises(CheckpointError, match=f"incomplete checkpoint, it lacks {key}"):
            load_checkpoint(tmp_path / "partial.pth")
    save_checkpoint({**state, "config": {**state["config"], "lr": -1.0}}, tmp_path / "bad-config.pth")
    with pytest.raises(CheckpointError, match=r"its saved config is invalid \(lr: must be > 0"):
        load_checkpoint(tmp_path / "bad-config.pth")


def test_resume_on_other_data_is_refused(tmp_path, cifar10_dir, capsys):
    run = tmp_path / "run"
    common = ["--dataset", "cifar10-lt", "--imb-factor", "0.1", "--epochs", "2", "--warmup", "0", "--step1", "1",
              "--step2", "2", "--bs", "64", "--save_period", "1", "--device", "cpu", "--download", "0"]
    assert main(["train", *common, "--data-dir", str(cifar10_dir), "--save-dir", str(run)]) == 0
    capsys.readouterr()
    other = make_cifar_folder(tmp_path / "other", "cifar10", train_per_class=20, test_per_class=10)
    code = main(["train", "--resume", str(run / "checkpoint-epoch1.pth"), "--data-dir", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and "trained on 10 classes, 159 long-tailed training images, but the data here gives 10 classes, 78" in err


def interrupt_the_second_checkpoint(monkeypatch, exception: BaseException) -> None:
    """torch.save writes part of epoch 2's checkpoint, then `exception` hits (Ctrl-C, SIGTERM, full disk)."""
    import balpoe.checkpoint as checkpoint
    real_save = torch.save

    def save(state, path):
        if Path(path).name.startswith("checkpoint-epoch2"):
            Path(path).write_bytes(b"PK\x03\x04 partial")
            raise exception
        real_save(state, path)
    monkeypatch.setattr(checkpoint.torch, "save", save)


@pytest.mark.parametrize("exception, code, message", [
    (KeyboardInterrupt(), 130, "interrupted: the last complete checkpoint is"),
    (RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                  "data/3: file write failed"), 2, "checkpoint-epoch2.pth: could not be written"),
    (OSError(28, "No space left on device"), 2, "No space left on device"),
])
def test_a_checkpoint_write_cut_short(exception, code, message, tmp_path, cifar10_dir, capsys, monkeypatch):
    interrupt_the_second_checkpoint(monkeypatch, exception)
    run = tmp_path / "run"
    config = tiny_config(cifar10_dir, run, save_period=1)
    argv = ["train", "--dataset", "cifar10-lt", "--data-dir", config.data_dir, "--imb-factor", "0.1", "--epochs", "3",
            "--warmup", "1", "--step1", "2", "--step2", "3", "--bs", "32", "--save_period", "1", "--device", "cpu",
            "--download", "0", "--save-dir", str(run)]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert f"the last complete checkpoint is {run / 'checkpoint-epoch1.pth'}" in err
    assert f"python -m balpoe train --resume {run / 'checkpoint-epoch1.pth'}" in err
    assert not list(run.glob("*.tmp"))  # the partial file is gone
    assert load_checkpoint(run / "checkpoint-epoch1.pth")["epoch"] == 1  # and the earlier one is intact


def test_sigterm_on_train_prints_the_resume_hint(tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "balpoe", "train", "--dataset", "synthetic-lt", "--imb-factor", "0.1", "--epochs", "200", "--bs", "16",
         "--save_period", "1", "--device", "cpu", "--save-dir", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run / "checkpoint-epoch1.pth").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted: the last complete checkpoint is" in err and "Traceback" not in err
    last = err.split("the last complete checkpoint is ")[1].split(";")[0]
    assert load_checkpoint(last)["epoch"] >= 1 and not list(run.glob("*.tmp"))


SYNTHETIC = ["--dataset", "synthetic-lt", "--imb-factor", "0.1", "--epochs", "1", "--bs", "64", "--device", "cpu"]


@pytest.mark.parametrize("argv, message", [
    (["--val-fraction", "0.01"], "val_fraction: 0.01 of 20 test images per class leaves no validation image"),
    (["--val-fraction", "0.99"], "val_fraction: 0.99 of 20 test images per class leaves no test image"),
    (["--imb-factor", "0.001"], "imb_factor: 0.001 leaves class(es) [6, 7, 8, 9] without a training image"),
    (["--lr", "1e30"], "lr: training diverged: the loss became nan in epoch 1"),
    (["--device", "cuda:99999999999999999999"], "device: must be auto, cpu, cuda, cuda:N or mps"),
    (["--save_dir", "bad\nname"], "save_dir: must be a non-empty string without control characters"),
])
def test_values_that_only_the_data_or_the_first_epoch_can_judge(argv, message, tmp_path, capsys):
    code, err = train([*SYNTHETIC, "--save_dir", str(tmp_path / "run"), *argv], capsys)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not list(tmp_path.glob("run/*.pth"))


def test_a_new_run_never_writes_into_an_earlier_one(tmp_path, capsys):
    run = tmp_path / "run"
    assert train([*SYNTHETIC, "--save_dir", str(run), "--save_period", "1"], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    code, err = train([*SYNTHETIC, "--save_dir", str(run), "--seed", "2"], capsys)
    assert code == 2 and f"save_dir: {run} already holds a run (checkpoint-epoch1.pth, metrics.json" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.parametrize("name, text, message", [
    ("twice.json", '{"lr": 0.5, "lr": 0.2}', "not valid JSON: key(s) lr given more than once"),
    ("twice.yaml", "lr: 0.5\nlr: 0.2\n", "not valid YAML: key(s) lr given more than once"),
    ("huge.json", '{"seed": ' + "9" * 5000 + "}", "not valid JSON: Exceeds the limit (4300 digits)"),
    ("loader.json", '{"arch": {"type": "ResNet32Model"}, "data_loader": {"type": [1]}}',
     "data_loader.type: [1] is not supported"),
])
def test_config_files_that_parse_badly(name, text, message, tmp_path, capsys):
    (tmp_path / name).write_text(text)
    code, err = train(["-c", str(tmp_path / name)], capsys)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_a_data_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, err = train(["--dataset", "fashion-mnist-lt", "--data-dir", str(tmp_path / "file")], capsys)
    assert code == 2 and f"data_dir: {tmp_path / 'file'} is a file; point --data-dir at a folder" in err


def test_checkpoint_arguments_and_outputs_that_cannot_work(tmp_path, cifar10_dir, capsys):
    state = Trainer(tiny_config(cifar10_dir, tmp_path)).state_dict()
    checkpoint = tmp_path / "good.pth"
    save_checkpoint(state, checkpoint)
    (tmp_path / "empty.pth").write_bytes(b"")
    for key, value, message in (("version", "x", "its format version must be an integer (got 'x')"),
                                ("class_counts", "abc", "num_classes and class_counts must be")):
        save_checkpoint({**state, key: value}, tmp_path / "odd.pth")
        with pytest.raises(CheckpointError, match=re.escape(message)):
            load_checkpoint(tmp_path / "odd.pth")
    cases = [
        (["evaluate", str(checkpoint), "--output", str(checkpoint)], "--output: ", "is the checkpoint itself"),
        (["evaluate", str(checkpoint), "--output", str(tmp_path)], "--output: ", "is a folder"),
        (["evaluate", ""], "checkpoint: ", "(got '')"),
        (["export-logits", str(tmp_path)], "is a folder; name a .pth file in it", ""),
        (["evaluate", str(tmp_path / "empty.pth")], "an empty file (0 bytes), not a checkpoint", ""),
        (["train", "--resume", ""], "--resume: ", "(got '')"),
    ]
    for argv, message, more in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and more in err and "Traceback" not in err, err
    assert load_checkpoint(checkpoint)["epoch"] == 0  # untouched


def test_an_export_cut_short_by_a_full_disk_leaves_no_partial_file(tmp_path, cifar10_dir, capsys, monkeypatch):
    trainer = Trainer(tiny_config(cifar10_dir, tmp_path))
    checkpoint = tmp_path / "good.pth"
    save_checkpoint(trainer.state_dict(), checkpoint)
    real_savez = np.savez

    def savez(handle, **arrays):
        if arrays["labels"].shape[0] == 80:  # the test split, after train and val were written
            handle.write(b"PK partial")
            raise OSError(28, "No space left on device", str(tmp_path / "logits" / "test.npz.tmp"))
        real_savez(handle, **arrays)
    monkeypatch.setattr(np, "savez", savez)
    assert main(["export-logits", str(checkpoint), "--output", str(tmp_path / "logits")]) == 1
    err = capsys.readouterr().err
    assert "test.npz.tmp: No space left on device" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "logits").iterdir()) == ["train.npz", "val.npz"]  # no manifest
