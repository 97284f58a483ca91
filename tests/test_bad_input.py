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
from pathlib import Path

import numpy as np
import pytest
import torch

from balpoe import datasets
from balpoe.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from balpoe.cli import main
from balpoe.shell import interpreter
from balpoe.trainer import Trainer
from conftest import assert_refused, eventually, make_cifar_folder, printed_command, tiny_config

# a data set that is absent on purpose: any check that comes after reading data would report it instead
NO_DATA = ["--dataset", "cifar10-lt", "--data-dir", "/nonexistent-data", "--download", "0"]


def train(argv: list[str], capsys) -> tuple[int, str]:
    code = main(["train", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, field, shown", [  # the field refused, and what the message must show
    (["--lr", "inf"], "lr", ["(got inf)"]),
    (["--wd", "inf"], "weight_decay", ["(got inf)"]),
    (["--norm_scale", "inf"], "norm_scale", ["(got inf)"]),
    (["--mixup_alpha", "nan"], "mixup_alpha", ["(got nan)"]),
    (["--lr", "0"], "lr", ["(got 0.0)"]),
    (["--tau_list", "1;;2"], "tau_list", ["(got '1;;2')"]),
    (["--tau_list", "0;1;nan"], "tau_list", ["(got '0;1;nan')"]),
    (["--seed", "-1"], "seed", ["4294967295", "(got -1)"]),
    (["--device", "cuda:x"], "device", ["cuda:N", "(got 'cuda:x')"]),  # the accepted forms, and the one given
    (["--device", "gpu"], "device", ["cuda:N", "(got 'gpu')"]),
    (["--imb-factor", "2"], "imb_factor", ["(got 2.0)"]),
    (["--save_dir", ""], "--save_dir", ["(got '')"]),
])
def test_bad_values_on_the_command_line(argv, field, shown, capsys):
    """Refused before any data is read: the data set is absent, so a later check would name data_dir."""
    code, err = train([*NO_DATA, *argv], capsys)
    assert code == 2, err
    assert_refused(err, field, *shown)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_this_machine_lacks(capsys):
    code, err = train([*NO_DATA, "--device", "cuda"], capsys)
    assert code == 2, err
    assert_refused(err, "device", "--device cpu", "(got 'cuda')")  # the fix, and the value refused


@pytest.mark.parametrize("name, text, field, shown", [  # {path}: the config file
    ("true.json", '{"batch_size": true}', "batch_size", ["(got True)"]),
    ("float.json", '{"epochs": 2.5}', "epochs", ["(got 2.5)"]),
    ("flag.json", '{"use_norm": 1}', "use_norm", ["(got 1)"]),
    ("device.yaml", "device: 5\n", "device", ["(got 5)"]),
    ("letters.yaml", 'tau_list: [0, "a", 2]\n', "tau_list", ["item 1 ", "(got 'a'"]),
    ("null.json", '{"tau_list": [0, null, 2]}', "tau_list", ["item 1 ", "(got None"]),
    ("rule.json", '{"tau_list": "limits", "tau_min": "0", "tau_max": 2}', "tau_min", ["(got '0')"]),
    ("keys.yaml", "1: 2\nlr: 0.1\n", "config", ["{path}: line 1:", "(got 1)"]),
    ("list.json", "[1, 2]", "config", ["{path} ", "(got list)"]),
    ("section.json", '{"arch": {}, "data_loader": {}, "balpoe": 3}', "balpoe", ["(got 3)"]),
])
def test_wrongly_typed_config_files(name, text, field, shown, tmp_path, capsys):
    (tmp_path / name).write_text(text)
    code, err = train(["-c", str(tmp_path / name), "--data-dir", "/nonexistent-data", "--download", "0"], capsys)
    assert code == 2, err
    assert_refused(err, field, *(part.format(path=tmp_path / name) for part in shown))


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
    assert code == 2, err
    assert_refused(err, "config", f"{tmp_path / 'latin1.json'} ", "UTF-8", "(byte 19)")  # the file, the bad byte


def test_an_unusable_save_folder_is_found_before_the_data(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for save_dir, in_the_way in ((blocker, blocker), (blocker / "run", blocker),
                                 (Path("/proc/no-such-run"), Path("/proc/no-such-run"))):
        code, err = train([*NO_DATA, "--save_dir", str(save_dir)], capsys)
        assert code == 2, err
        assert_refused(err, "save_dir", f"(got '{save_dir}')", then=str(in_the_way))  # what is in the way, named first


def test_truncated_and_inconsistent_cifar_files(tmp_path):
    root = make_cifar_folder(tmp_path, "cifar10", train_per_class=4, test_per_class=2)
    test_file = root / "cifar-10-batches-py" / "test_batch"
    whole = test_file.read_bytes()
    test_file.write_bytes(whole[: len(whole) // 2])
    damaged = f"^{re.escape(str(test_file))}: "  # the file named first
    with pytest.raises(datasets.DataError, match=damaged + f".*delete {re.escape(str(test_file.parent))} "):
        datasets.load_cifar(root, "cifar10", download=False)  # and the fix: a fresh copy of its folder
    import pickle
    batch = pickle.loads(whole)
    batch[b"labels"] = batch[b"labels"][:-1]  # one label fewer than images
    test_file.write_bytes(pickle.dumps(batch))
    with pytest.raises(datasets.DataError, match=damaged + r".*\(20, 3072\).*\b19 labels\b"):
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
    with pytest.raises(datasets.DataError, match=f"^{re.escape(str(path))}: " + r".*\b33 bytes\b.*\b38\b"):
        datasets.load_fashion_mnist(tmp_path, download=False)  # the file, its size and the size it should have


def test_checkpoints_that_lack_keys_or_hold_a_bad_config(tmp_path, cifar10_dir):
    state = Trainer(tiny_config(cifar10_dir, tmp_path)).state_dict()
    for key in ("optimizer", "class_counts"):
        partial = {k: v for k, v in state.items() if k != key}
        save_checkpoint(partial, tmp_path / "partial.pth")
        with pytest.raises(CheckpointError, match=f"^{re.escape(str(tmp_path / 'partial.pth'))}: .*\\b{key}$"):
            load_checkpoint(tmp_path / "partial.pth")  # the file, then the key it lacks
    save_checkpoint({**state, "config": {**state["config"], "lr": -1.0}}, tmp_path / "bad-config.pth")
    bad_config = f"^{re.escape(str(tmp_path / 'bad-config.pth'))}: "
    with pytest.raises(CheckpointError, match=bad_config + r".*\blr: .*\(got -1\.0\)"):
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
    assert code == 2, err
    # the checkpoint, the images it was trained on and those the data here gives, and the option that fixes it
    assert_refused(err, str(run / "checkpoint-epoch1.pth"), " 159 ", " 78 ", "--data-dir")


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


@pytest.mark.parametrize("exception, code, cause", [  # cause: what the error line must show; None: an interrupt
    (KeyboardInterrupt(), 130, None),
    (RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                  "data/3: file write failed"), 2, "file write failed"),
    (OSError(28, "No space left on device"), 2, "No space left on device"),
])
def test_a_checkpoint_write_cut_short(exception, code, cause, tmp_path, cifar10_dir, capsys, monkeypatch):
    interrupt_the_second_checkpoint(monkeypatch, exception)
    run = tmp_path / "run"
    config = tiny_config(cifar10_dir, run, save_period=1)
    argv = ["train", "--dataset", "cifar10-lt", "--data-dir", config.data_dir, "--imb-factor", "0.1", "--epochs", "3",
            "--warmup", "1", "--step1", "2", "--step2", "3", "--bs", "32", "--save_period", "1", "--device", "cpu",
            "--download", "0", "--save-dir", str(run)]
    assert main(argv) == code
    err = capsys.readouterr().err
    if cause is None:
        assert err.lstrip().startswith("interrupted: "), err
    else:  # the checkpoint that could not be written, named first, and why
        assert_refused(err, str(run / "checkpoint-epoch2.pth"), cause)
    assert "Traceback" not in err, err
    # the command to paste continues from the last complete checkpoint
    last = run / "checkpoint-epoch1.pth"
    assert printed_command(err, "balpoe") == [interpreter(), "-m", "balpoe", "train", "--resume", str(last)], err
    assert not list(run.glob("*.tmp"))  # the partial file is gone
    assert load_checkpoint(run / "checkpoint-epoch1.pth")["epoch"] == 1  # and the earlier one is intact


def test_sigterm_on_train_prints_the_resume_hint(tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "balpoe", "train", "--dataset", "synthetic-lt", "--imb-factor", "0.1", "--epochs", "200", "--bs", "16",
         "--save_period", "1", "--device", "cpu", "--save-dir", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    eventually((run / "checkpoint-epoch1.pth").exists, timeout_s=120, interval_s=0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.lstrip().startswith("interrupted: ") and "Traceback" not in err, err
    *command, last = printed_command(err, "balpoe")
    assert command == [interpreter(), "-m", "balpoe", "train", "--resume"]
    assert Path(last).parent == run and load_checkpoint(last)["epoch"] >= 1 and not list(run.glob("*.tmp"))


SYNTHETIC = ["--dataset", "synthetic-lt", "--imb-factor", "0.1", "--epochs", "1", "--bs", "64", "--device", "cpu"]


@pytest.mark.parametrize("argv, field, shown", [  # the field refused, and the values and fixes the message shows
    (["--val-fraction", "0.01"], "val_fraction", ["0.05", "0.95", "(got 0.01)"]),  # the usable shares
    (["--val-fraction", "0.99"], "val_fraction", ["0.05", "0.95", "(got 0.99)"]),
    (["--imb-factor", "0.001"], "imb_factor", ["[6, 7, 8, 9]", "0.0167", "(got 0.001)"]),  # empty classes, the least
    (["--lr", "1e30"], "lr", ["nan", "epoch 1", "--lr", "1e+30"]),
    (["--device", "cuda:99999999999999999999"], "device", ["cuda:N", "(got 'cuda:99999999999999999999')"]),
    (["--save_dir", "bad\nname"], "save_dir", ["(got 'bad\\nname')"]),
])
def test_values_that_only_the_data_or_the_first_epoch_can_judge(argv, field, shown, tmp_path, capsys):
    code, err = train([*SYNTHETIC, "--save_dir", str(tmp_path / "run"), *argv], capsys)
    assert code == 2, err
    assert_refused(err.splitlines()[-1] + "\n", field, *shown)  # the last line: a diverged run printed its start
    assert not list(tmp_path.glob("run/*.pth"))


def test_a_new_run_never_writes_into_an_earlier_one(tmp_path, capsys):
    run = tmp_path / "run"
    assert train([*SYNTHETIC, "--save_dir", str(run), "--save_period", "1"], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    code, err = train([*SYNTHETIC, "--save_dir", str(run), "--seed", "2"], capsys)
    assert code == 2, err
    assert_refused(err, "save_dir", "checkpoint-epoch1.pth", "metrics.json",  # what it holds, and how to continue it
                   f"--resume {run}/checkpoint-epoch", then=str(run))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.parametrize("name, text, field, shown", [  # {path}: the config file
    ("twice.json", '{"lr": 0.5, "lr": 0.2}', "config", ["{path} ", "JSON", " lr "]),  # the key given twice
    ("twice.yaml", "lr: 0.5\nlr: 0.2\n", "config", ["{path} ", "YAML", " lr "]),
    ("huge.json", '{"seed": ' + "9" * 5000 + "}", "config", ["{path} ", "JSON", "4300 digits"]),
    ("loader.json", '{"arch": {"type": "ResNet32Model"}, "data_loader": {"type": [1]}}', "data_loader.type",
     ["[1]", "ImbalanceCIFAR10DataLoader"]),  # the value, and the loaders that are supported
])
def test_config_files_that_parse_badly(name, text, field, shown, tmp_path, capsys):
    (tmp_path / name).write_text(text)
    code, err = train(["-c", str(tmp_path / name)], capsys)
    assert code == 2, err
    assert_refused(err, field, *(part.format(path=tmp_path / name) for part in shown))


def test_a_data_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, err = train(["--dataset", "fashion-mnist-lt", "--data-dir", str(tmp_path / "file")], capsys)
    assert code == 2, err
    assert_refused(err, "data_dir", "--data-dir", then=str(tmp_path / "file"))


def test_checkpoint_arguments_and_outputs_that_cannot_work(tmp_path, cifar10_dir, capsys):
    state = Trainer(tiny_config(cifar10_dir, tmp_path)).state_dict()
    checkpoint = tmp_path / "good.pth"
    save_checkpoint(state, checkpoint)
    (tmp_path / "empty.pth").write_bytes(b"")
    odd = re.escape(str(tmp_path / "odd.pth"))
    for key, value, shown in (("version", "x", r"\bversion\b.*\(got 'x'\)"),
                              ("class_counts", "abc", r"\bclass_counts\b.*\(got 10 and 'abc'\)")):
        save_checkpoint({**state, key: value}, tmp_path / "odd.pth")
        with pytest.raises(CheckpointError, match=f"^{odd}: .*{shown}"):
            load_checkpoint(tmp_path / "odd.pth")
    cases = [  # what the message names first, and what else it shows: the value, or the file that would do
        (["evaluate", str(checkpoint), "--output", str(checkpoint)], "--output", [f" {checkpoint} ", ".json"]),
        (["evaluate", str(checkpoint), "--output", str(tmp_path)], "--output", [f" {tmp_path} ", ".json"]),
        (["evaluate", ""], "checkpoint", ["(got '')", "evaluate --help"]),
        (["export-logits", str(tmp_path)], str(tmp_path), [".pth"]),
        (["evaluate", str(tmp_path / "empty.pth")], str(tmp_path / "empty.pth"), ["(0 bytes)"]),
        (["train", "--resume", ""], "--resume", ["(got '')", "train --help"]),
    ]
    for argv, named, shown in cases:
        assert main(argv) == 2, argv
        assert_refused(capsys.readouterr().err, named, *shown)
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
    assert_refused(capsys.readouterr().err, str(tmp_path / "logits" / "test.npz.tmp"), "No space left on device")
    assert sorted(p.name for p in (tmp_path / "logits").iterdir()) == ["train.npz", "val.npz"]  # no manifest
