"""bf16 mixed precision: training stays finite and fp32 where it must, metrics read fp32 logits, and the
precision survives config files, checkpoints, resume and the study tables.

bf16 convolutions are slow on CPUs without bf16 instructions, so the training tests use 8×8 images:
the model pools globally, and the precision rules do not depend on the image size."""
from __future__ import annotations

import json
import math
import platform
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from balpoe import trainer as trainer_module
from balpoe.checkpoint import load_checkpoint, trainer_from_checkpoint
from balpoe.cli import main as balpoe_main
from balpoe.config import Config, ConfigError, from_official, load_file, save, to_official
from balpoe.data import DataBundle, Split
from balpoe.datasets import CIFAR_NORMALISATION
from balpoe.evaluation import shift_metrics
from balpoe.metrics import classification_metrics, expert_metrics, fit_temperature
from balpoe.trainer import Trainer, check_precision
from conftest import assert_refused, make_cifar_folder

COUNTS = [12, 8, 6, 4]


def tiny_bundle(size: int = 8) -> DataBundle:
    """Four classes told apart by mean colour, long-tailed, as `size`×`size` images on the CPU."""
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    palette = rng.randint(0, 256, size=(len(COUNTS), 3))
    noise = rng.randint(-40, 41, size=(len(labels), 3, size, size))
    images = np.clip(palette[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
    split = Split(torch.from_numpy(images), torch.from_numpy(labels), np.arange(len(labels)))
    mean, std = CIFAR_NORMALISATION
    return DataBundle(train=split, val=split, test=split, test_full=split, class_counts=COUNTS,
                      num_classes=len(COUNTS), mean=mean, std=std)


def small_config(**overrides) -> Config:
    values = dict(device="cpu", batch_size=10, epochs=2, warmup_epochs=0, step1=2, step2=2, save_dir="unused")
    return Config(**{**values, **overrides})


@pytest.fixture(autouse=True)
def quiet_cpu_warning():
    """This machine may lack bf16 instructions; `test_cpu_without_bf16_kernels_warns` checks the warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="precision bf16: this CPU")
        yield


def test_bf16_training_stays_finite_fp32_and_close_to_fp32():
    runs = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(small_config(precision=precision), data=tiny_bundle())
        runs[precision] = (trainer, [trainer.train_epoch()["train_loss"] for _ in range(2)])
    bf16, losses = runs["bf16"]
    assert all(math.isfinite(loss) for loss in losses)
    assert all(p.dtype == torch.float32 and bool(torch.isfinite(p).all()) for p in bf16.model.parameters())
    buffers = [state["momentum_buffer"] for state in bf16.optimizer.state.values()]
    assert buffers and all(b.dtype == torch.float32 for b in buffers)
    fp32_losses = runs["fp32"][1]
    assert losses == pytest.approx(fp32_losses, rel=0.05)  # the same run, in the same place
    assert losses != fp32_losses  # and bf16 really computed something: autocast was on


def test_bf16_predictions_are_fp32_logits_and_metrics_use_them():
    trainer = Trainer(small_config(precision="bf16"), data=tiny_bundle())
    trainer.train_epoch()
    logits, labels = trainer.predict("val")
    assert logits.dtype == torch.float32
    assert bool((logits != logits.bfloat16().float()).any())  # the head ran in fp32: not on bf16's grid
    metrics = trainer.evaluate("val")
    ensemble = logits.double().mean(dim=1)
    nll = -torch.log_softmax(ensemble, dim=1)[torch.arange(len(labels)), labels].mean()
    assert metrics["val_nll"] == pytest.approx(float(nll), rel=1e-5)
    predicted = ensemble.argmax(dim=1)
    assert metrics["val_acc"] == pytest.approx(float((predicted == labels).double().mean()))


def test_metrics_upcast_bf16_logits_before_softmax():
    """Handed bf16 logits, every metric equals the one of the same values in fp32: nothing is computed
    in bf16 (its softmax would move NLL and ECE in the third digit)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(20)
    logits = (torch.randn(len(labels), 3, 10, generator=generator) * 8).bfloat16()
    counts = [500, 300, 180, 100, 60, 36, 22, 13, 8, 5]
    as_fp32 = logits.float()
    assert classification_metrics(logits, labels, counts) == classification_metrics(as_fp32, labels, counts)
    assert expert_metrics(logits, labels, counts, [0.0, 1.0, 2.0]) == \
        expert_metrics(as_fp32, labels, counts, [0.0, 1.0, 2.0])
    assert shift_metrics(logits, labels, counts) == shift_metrics(as_fp32, labels, counts)
    assert fit_temperature(logits, labels) == fit_temperature(as_fp32, labels)
    by_hand = torch.nn.functional.cross_entropy(as_fp32.double().mean(dim=1), labels)
    assert classification_metrics(logits, labels, counts)["nll"] == pytest.approx(float(by_hand), rel=1e-5)


def test_gpu_without_bf16_is_refused_before_data_is_read(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    monkeypatch.setattr(trainer_module, "resolve_device", lambda name: torch.device("cuda"))

    def no_data(*args, **kwargs):
        raise AssertionError("data read before the precision check")
    monkeypatch.setattr(trainer_module, "build_data", no_data)
    with pytest.raises(ConfigError, match=r"^precision: Tesla V100-SXM2-16GB\b.*--precision fp32"):  # the GPU, the fix
        Trainer(small_config(precision="bf16", device="cuda"))
    check_precision(torch.device("cuda"), "fp32")  # fp32 needs nothing


@pytest.mark.parametrize("has_kernels", [False, True])
def test_cpu_without_bf16_kernels_warns(monkeypatch, has_kernels):
    monkeypatch.setattr(trainer_module, "cpu_has_bf16_kernels", lambda: has_kernels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_precision(torch.device("cpu"), "bf16")
    assert [str(w.message).split(": ")[0] for w in caught] == ([] if has_kernels else ["precision bf16"])


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (x86-64 Linux), or None elsewhere."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.startswith("flags")), None)
    return set(line.partition(":")[2].split()) if line else None


def test_torch_still_answers_whether_the_cpu_has_bf16_kernels():
    """`cpu_has_bf16_kernels` asks torch's own oneDNN check (an upgrade that removes it fails here, on any
    machine), and its answer matches the CPU: oneDNN has bf16 kernels where the CPU has AVX-512 core
    (F, BW, VL, DQ), and none where it has neither AVX-512 nor AVX-NE-CONVERT."""
    answer = trainer_module.cpu_has_bf16_kernels()
    assert isinstance(answer, bool)
    flags = cpu_flags()
    if flags is None:
        pytest.skip("the CPU's flags are read from /proc/cpuinfo on x86-64 Linux only")
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        assert answer is True, "the CPU has AVX-512 core, but torch says oneDNN has no bf16 kernels"
    elif "avx512f" not in flags and "avx_ne_convert" not in flags:
        assert answer is False, "the CPU has neither AVX-512 nor AVX-NE-CONVERT, but torch says it has bf16 kernels"
    else:
        pytest.skip(f"a CPU with part of AVX-512 or with AVX-NE-CONVERT: oneDNN's answer ({answer}) is not "
                    f"foretold by the flags alone")


def test_precision_round_trips_through_config_files(tmp_path):
    config = Config(precision="bf16")
    save(config, tmp_path / "config.json")
    assert load_file(tmp_path / "config.json").precision == "bf16"
    (tmp_path / "ours.yaml").write_text("precision: bf16\nseed: 3\n")
    assert load_file(tmp_path / "ours.yaml").precision == "bf16"
    tree = to_official(config)
    assert tree["balpoe"]["precision"] == "bf16"  # the official format has no key for it: our section holds it
    assert "precision" not in json.dumps({k: v for k, v in tree.items() if k != "balpoe"})
    del tree["balpoe"]
    assert from_official(tree).precision == "fp32"  # an official config trains as the paper's code: fp32
    with pytest.raises(ConfigError, match=r"^precision: .*\bfp32\b.*\bbf16\b.*\(got 'fp16'\)"):  # choices, value
        Config(precision="fp16")


def test_cli_precision_flag_and_its_mistakes(tmp_path, capsys):
    code = balpoe_main(["train", "--precision", "fp16", "--save-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert_refused(err, "precision", "(got 'fp16')")
    assert not (tmp_path / "run").exists()


def test_checkpoint_and_resume_keep_the_precision(tmp_path, capsys):
    data = make_cifar_folder(tmp_path / "data", "cifar10", train_per_class=10, test_per_class=5)
    run = tmp_path / "run"
    common = ["--dataset", "cifar10-lt", "--data-dir", str(data), "--imb-factor", "0.1", "--download", "0",
              "--device", "cpu", "--bs", "16", "--val-fraction", "0.2"]
    assert balpoe_main(["train", *common, "--epochs", "1", "--precision", "bf16", "--save-dir", str(run)]) == 0
    checkpoint = run / "checkpoint-epoch1.pth"
    assert load_checkpoint(checkpoint)["config"]["precision"] == "bf16"
    assert trainer_from_checkpoint(str(checkpoint)).config.precision == "bf16"
    capsys.readouterr()
    assert balpoe_main(["train", "--resume", str(checkpoint), "--precision", "fp32"]) == 2
    assert_refused(capsys.readouterr().err, "resume", "--precision")  # the option to drop
    (run / "config.json").unlink()
    assert balpoe_main(["train", "--resume", str(checkpoint)]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert load_file(run / "config.json").precision == "bf16"  # the run folder's config, rewritten on resume


def test_study_commands_take_the_flag_before_ray_starts(capsys):
    from study.run import main as study_main
    assert study_main(["baseline", "--precision", "half"]) == 2
    assert_refused(capsys.readouterr().err, "precision", "(got 'half')")


@pytest.mark.ray
def test_precision_reaches_every_report_row_and_the_trials_table(smoke_baseline, tmp_path):
    from results import load_experiment
    from results.reader import read_trial, trial_folders
    assert smoke_baseline.code == 0
    folders = trial_folders(smoke_baseline.experiment)
    assert folders and all(row["precision"] == "fp32" for f in folders for row in read_trial(f).rows)
    assert load_experiment(smoke_baseline.experiment).trials["precision"].tolist() == ["fp32"] * len(folders)
    # the trials table reads the recipe each trial trained: a bf16 trial shows as one
    copy = shutil.copytree(smoke_baseline.experiment, tmp_path / "baseline-bf16")
    for folder in trial_folders(copy):
        params = json.loads((folder / "params.json").read_text())
        params["base"]["precision"] = "bf16"
        (folder / "params.json").write_text(json.dumps(params))
    assert load_experiment(copy).trials["precision"].tolist() == ["bf16"] * len(folders)
    assert "precision" not in load_experiment(copy).epochs.columns  # context, not a per-epoch metric
