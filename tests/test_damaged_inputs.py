"""The trainer's inputs and outputs under damage: configs nested too deeply or that are no file, CIFAR
pickles that carry code, and logit exports cut short over an earlier export.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import re

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from balpoe import export as export_module
from balpoe.cli import main
from balpoe.config import Config, ConfigError, load_file
from balpoe.datasets import DataError, load_cifar
from conftest import assert_refused, make_cifar_folder


# --- configs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, text", [("deep.json", "[" * 100_000 + "]" * 100_000),
                                        ("deep-map.json", '{"a": ' * 100_000 + "1" + "}" * 100_000),
                                        ("deep.yaml", "[" * 700 + "]" * 700),  # PyYAML is slow to scan deep nesting
                                        ("deep-map.yaml", "".join("  " * i + "a:\n" for i in range(1_000)))])
def test_a_config_nested_too_deeply_is_named(tmp_path, capsys, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^config: {re.escape(str(path))} .*nested"):  # the file, and why
        load_file(path)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "nested" in err, err
    assert_refused(err, "config", then=str(path))


def test_a_config_that_is_no_regular_file_is_named_without_reading_it(tmp_path, capsys):
    pipe = tmp_path / "config.json"
    os.mkfifo(pipe)  # reading it would wait for a writer forever
    for path in ("/dev/zero", str(pipe)):
        assert main(["train", "--config", path]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "regular file" in err, err  # what it is not
        assert_refused(err, "config", then=path)
    assert main(["train", "--config", str(tmp_path / "absent.json")]) == 2
    assert_refused(capsys.readouterr().err, "config", str(tmp_path / "absent.json"))


# --- CIFAR pickles ----------------------------------------------------------------------------------------
class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_cifar_pickle_with_a_code_payload_is_refused_by_name_and_never_runs(tmp_path, capsys):
    root = make_cifar_folder(tmp_path / "data", "cifar10", train_per_class=2, test_per_class=1)
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    marker = tmp_path / "the-payload-ran"
    batch.write_bytes(pickle.dumps({b"data": RunsACommand(marker), b"labels": [0]}))
    with pytest.raises(DataError) as caught:
        load_cifar(root, "cifar10", download=False)
    assert str(caught.value).startswith(f"{batch}: ") and "posix.system" in str(caught.value)  # the file, the call
    code = main(["train", "--dataset", "cifar10-lt", "--data-dir", str(root), "--download", "0", "--epochs", "1",
                 "--save_dir", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert_refused(err, str(batch), "posix.system")
    assert not marker.exists()


# --- export-logits over an earlier export -----------------------------------------------------------------
class MadeUpTrainer:
    """What export_logits reads of a trainer, with made-up logits (this export's number in every value):
    what is under test is how the files land, not the model."""
    SIZES = {"train": 30, "val": 4, "test": 16, "test_full": 20}

    def __init__(self, number: int):
        self.number, self.epoch, self.config = number, 2, Config(dataset="synthetic-lt", device="cpu")
        self.data = SimpleNamespace(num_classes=10, class_counts=[3] * 10,
                                    **{split: Split(np.arange(n)) for split, n in self.SIZES.items()})

    def predict(self, split: str, callbacks=()):
        n = self.SIZES[split]
        return torch.full((n, 3, 10), float(self.number)), torch.zeros(n, dtype=torch.int64)


class Split:
    def __init__(self, indices):
        self.indices = indices

    def __len__(self):
        return len(self.indices)


def export(trainer, checkpoint, output, splits):
    return export_module.export_logits(trainer, checkpoint, output, splits, log=lambda line: None, callbacks=())


def files_of(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("stop", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
                         ids=["full-disk", "ctrl-c"])
def test_an_export_cut_short_over_an_earlier_one_leaves_the_earlier_one_whole(tmp_path, monkeypatch, stop):
    checkpoint = tmp_path / "fake.pth"
    checkpoint.write_bytes(b"only hashed")
    output = tmp_path / "logits"
    export(MadeUpTrainer(1), checkpoint, output, ["val", "test"])
    earlier = files_of(output)
    assert sorted(earlier) == ["manifest.json", "test.npz", "val.npz"]

    real_savez, saved = export_module._savez, []

    def savez_then_stop(path, arrays):
        if saved:  # after the first split file of the new export
            raise stop
        real_savez(path, arrays)
        saved.append(path)
    monkeypatch.setattr(export_module, "_savez", savez_then_stop)
    with pytest.raises(type(stop)):
        export(MadeUpTrainer(2), checkpoint, output, ["test", "val"])
    assert len(saved) == 1 and saved[0].name.startswith("test.npz")
    assert files_of(output) == earlier and [p.name for p in output.iterdir() if p.is_dir()] == []

    monkeypatch.setattr(export_module, "_savez", real_savez)
    export(MadeUpTrainer(3), checkpoint, output, ["train", "test"])
    manifest = json.loads((output / "manifest.json").read_text())
    assert sorted(manifest["splits"]) == ["test", "train"]
    assert sorted(files_of(output)) == ["manifest.json", "test.npz", "train.npz"]  # the earlier val.npz is gone
    for split, samples in (("train", 30), ("test", 16)):
        with np.load(output / f"{split}.npz") as arrays:
            assert arrays["logits"].shape == tuple(manifest["splits"][split]["logits_shape"]) == (samples, 3, 10)
            assert (arrays["logits"] == 3).all()


def test_an_export_cut_short_in_a_new_folder_has_no_manifest(tmp_path, monkeypatch):
    checkpoint = tmp_path / "fake.pth"
    checkpoint.write_bytes(b"only hashed")
    real_savez, saved = export_module._savez, []

    def savez_then_stop(path, arrays):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(path, arrays)
        saved.append(path)
    monkeypatch.setattr(export_module, "_savez", savez_then_stop)
    with pytest.raises(OSError):
        export(MadeUpTrainer(1), checkpoint, tmp_path / "logits", ["val", "test"])
    assert sorted(p.name for p in (tmp_path / "logits").iterdir()) == ["val.npz"]  # no manifest: cut short


def test_a_failed_write_through_a_handle_names_the_file(tmp_path):
    """np.savez and friends write to an open handle, whose OSError names no file: the message must."""
    from balpoe.files import atomic_write

    def write(tmp):
        with tmp.open("wb") as handle:
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "train.npz", write)
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(tmp_path / "train.npz"))
    assert list(tmp_path.iterdir()) == []


def test_study_export_on_a_full_disk_names_the_file_without_a_traceback(monkeypatch, capsys, tmp_path):
    import errno
    import study.commands
    from study.run import main

    def full_disk(*args, **kwargs):  # what a write of the export meets when the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "train.npz"))
    monkeypatch.setattr(study.commands, "open_experiment", full_disk)
    assert main(["export", "anything", "--storage-path", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'out' / 'train.npz'}: No space left on device\n"
