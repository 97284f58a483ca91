import csv
import json
import random

import numpy as np
import pytest
import torch

from balpoe.cli import main
from balpoe.checkpoint import CheckpointError, RunFolder, load_checkpoint, save_checkpoint
from balpoe.config import ConfigError
from balpoe.trainer import EVAL_BATCH_SIZE, Trainer
from conftest import tiny_config


def test_first_batch_is_pinned(cifar10_dir, tmp_path):
    """The first batch's mixup draw, targets and loss at initialisation, pinned to catch any change in
    the recipe's arithmetic or random streams. Pinned before any update: a few SGD steps at lr 0.1
    amplify the last-bit differences between CPUs' kernels (AVX2 vs AVX-512) into percents."""
    trainer = Trainer(tiny_config(cifar10_dir, tmp_path, batch_size=16))
    batch = next(iter(trainer.loader))
    with torch.no_grad():
        loss, per_expert = trainer.loss(trainer.forward(batch.inputs), batch.targets, batch.mix_targets, batch.lam)
    assert batch.targets[:8].tolist() == [2, 0, 1, 8, 4, 1, 0, 1]
    assert float(batch.lam) == pytest.approx(0.9515536933847684, abs=1e-12)
    assert float(loss) == pytest.approx(4.48254, abs=1e-3)
    assert per_expert.tolist() == pytest.approx([5.62719, 3.79731, 4.02312], abs=1e-3)


def test_smoke_run_metrics(cifar10_dir, tmp_path):
    """Four epochs on generated data: every key, the LR schedule, a falling loss, and a model that
    learns the colour-coded classes well above chance."""
    trainer = Trainer(tiny_config(cifar10_dir, tmp_path, batch_size=16, epochs=4, step1=3, step2=4))
    rows = []
    final = trainer.fit([type("Rows", (), {"on_epoch_end": lambda self, t, m: rows.append(m)})()])
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.1, 0.1, 0.01])
    expected_keys = {"epoch", "lr", "train_loss", "train_loss_expert0", "train_loss_expert1", "train_loss_expert2",
                     "train_acc", "val_acc", "val_balanced_acc", "val_many_acc", "val_medium_acc", "val_few_acc",
                     "val_nll", "val_ece", "val_mce", "epoch_seconds", "train_images_per_s"}
    assert expected_keys <= set(rows[0])
    losses = [r["train_loss"] for r in rows]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.5 * losses[0]
    assert final["test_full_acc"] > 0.25   # 10 colour-coded classes: well above chance (0.1)
    assert {"test_acc", "test_balanced_acc", "test_ece", "test_full_mce", "test_few_acc"} <= set(final)
    # the test-agnostic protocol comes with every end of training, from the same full-test logits
    assert final["shift_uniform_acc"] == pytest.approx(final["test_full_acc"])
    assert final["shift_uniform_acc_prior"] == pytest.approx(final["shift_uniform_acc"])  # uniform prior: a constant
    accs = [final[f"shift_{d}{r}_acc"] for d in ("forward", "backward") for r in (50, 25, 10, 5, 2)]
    assert final["shift_worst_acc"] == pytest.approx(min(accs + [final["shift_uniform_acc"]]))
    bins = json.loads(final["test_full_reliability"])
    assert len(bins) == 15 and sum(count for count, _, _ in bins) == len(trainer.data.test_full)
    assert sum(n * abs(acc - conf) for n, conf, acc in bins if n) / len(trainer.data.test_full) == \
        pytest.approx(final["test_full_ece"])


def test_end_of_training_forwards_each_test_image_once(cifar10_dir, tmp_path):
    """val and test are parts of the test set: the final metrics take them from its one pass, and they
    equal what a pass over each split gives."""
    trainer = Trainer(tiny_config(cifar10_dir, tmp_path, epochs=1, warmup_epochs=0, step1=1, step2=1))
    trainer.run_epoch(callbacks=())
    forwarded = []
    counter = type("Batches", (), {"on_batch_end": lambda self, t, phase, done, total: forwarded.append(phase)})()
    final = trainer.final_metrics(callbacks=[counter])
    assert set(forwarded) == {"test_full"} and len(forwarded) == -(-len(trainer.data.test_full) // EVAL_BATCH_SIZE)
    predictions = trainer.predict_test_set(callbacks=())
    for split in ("val", "test"):
        logits, labels = trainer.predict(split, callbacks=())
        assert torch.equal(predictions[split][1], labels)
        assert torch.allclose(predictions[split][0], logits, atol=1e-5)
    assert final["test_balanced_acc"] == pytest.approx(trainer.evaluate("test")["test_balanced_acc"])
    assert final["test_full_ece"] == pytest.approx(trainer.evaluate("test_full")["test_full_ece"])


def test_shift_metrics_every_n_epochs_when_asked(cifar10_dir, tmp_path):
    trainer = Trainer(tiny_config(cifar10_dir, tmp_path, epochs=3, eval_shift_every=2))
    rows = [trainer.run_epoch() for _ in range(2)]
    assert rows[1]["shift_uniform_acc"] == pytest.approx(trainer.evaluate("test_full")["test_full_acc"])
    rows.append(trainer.run_epoch())
    assert [("shift_forward50_acc" in row) for row in rows] == [False, True, False]  # epoch 3: final_metrics
    with pytest.raises(ConfigError, match=r"eval_shift_every: must be >= 0 \(got -1\)"):
        tiny_config(cifar10_dir, tmp_path, eval_shift_every=-1)


def test_shift_metrics_follow_the_profile_and_add_the_log_prior():
    from balpoe.data import long_tail_counts, shifted_test_indices
    from balpoe.evaluation import shift_metrics
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(20)
    logits = torch.randn(len(labels), 3, 10, generator=generator) + 2.0 * torch.nn.functional.one_hot(labels, 10)[:, None]
    counts = [100] * 3 + [40] * 3 + [10] * 4
    metrics = shift_metrics(logits, labels, counts)
    for direction in ("forward", "backward"):
        indices = shifted_test_indices(labels.numpy(), 50, direction)
        expected = long_tail_counts(20, 10, 1 / 50)
        assert np.bincount(labels[indices].numpy(), minlength=10).tolist() == \
            (list(expected) if direction == "forward" else list(expected)[::-1])
        sub_logits, sub_labels = logits[indices].mean(dim=1), labels[indices]
        prior = torch.bincount(sub_labels, minlength=10).float() / len(sub_labels)
        by_hand = ((sub_logits + torch.log(prior + 1e-9)).argmax(dim=1) == sub_labels).float().mean()
        assert metrics[f"shift_{direction}50_acc_prior"] == pytest.approx(float(by_hand))
        plain = (sub_logits.argmax(dim=1) == sub_labels).float().mean()
        assert metrics[f"shift_{direction}50_acc"] == pytest.approx(float(plain))
    assert len([k for k in metrics if k.endswith("_acc") and not k.startswith(("shift_mean", "shift_worst"))]) == 11


def _weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_equals_uninterrupted(cifar10_dir, tmp_path):
    straight = Trainer(tiny_config(cifar10_dir, tmp_path / "a"))
    straight_rows = [straight.train_epoch() for _ in range(3)]

    first = Trainer(tiny_config(cifar10_dir, tmp_path / "b"))
    first_rows = [first.train_epoch() for _ in range(2)]
    save_checkpoint(first.state_dict(), tmp_path / "mid.pth")
    del first
    state = load_checkpoint(tmp_path / "mid.pth")
    assert set(state["rng"]) == {"loader"}  # no global or per-GPU stream: loads on any machine

    def resume(restore_loader: bool = True) -> tuple[Trainer, list[dict]]:
        torch.manual_seed(999), np.random.seed(999), random.seed(999)  # global streams play no part
        trainer = Trainer(tiny_config(cifar10_dir, tmp_path / "b"))
        fresh_loader = trainer.loader.state_dict()
        trainer.load_state_dict(state)
        if not restore_loader:
            trainer.loader.load_state_dict(fresh_loader)
        return trainer, first_rows + [trainer.train_epoch()]

    timing = {"train_seconds", "train_images_per_s"}

    def same_rows(rows_a, rows_b) -> bool:
        return all({k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
                   for a, b in zip(rows_a, rows_b))

    resumed, resumed_rows = resume()
    assert same_rows(straight_rows, resumed_rows)
    assert _weights_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert straight.evaluate("val") == resumed.evaluate("val")
    # the check has teeth: without the loader's stream, epoch 3 replays epoch 1's order and mixup
    unrestored, unrestored_rows = resume(restore_loader=False)
    assert not same_rows(straight_rows, unrestored_rows)
    assert not _weights_equal(straight.model.state_dict(), unrestored.model.state_dict())


def test_checkpoints_from_older_versions_with_gpu_rng_states_load_on_a_cpu(cifar10_dir, tmp_path):
    trainer = Trainer(tiny_config(cifar10_dir, tmp_path))
    trainer.train_epoch()
    state = trainer.state_dict()
    state["rng"].update({"torch": torch.get_rng_state(), "cuda": [torch.get_rng_state()] * 8,  # 8 GPUs' worth
                         "python": "[3, [0], null]"})
    save_checkpoint(state, tmp_path / "old.pth")
    again = Trainer(tiny_config(cifar10_dir, tmp_path))
    again.load_state_dict(load_checkpoint(tmp_path / "old.pth"))
    assert again.epoch == 1 and _weights_equal(trainer.model.state_dict(), again.model.state_dict())


class Payload:
    """An arbitrary object: a weights_only load must refuse to rebuild it."""


def test_checkpoint_errors(tmp_path, cifar10_dir):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    state = Trainer(tiny_config(cifar10_dir, tmp_path)).state_dict()
    save_checkpoint(state, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "truncated.pth")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="not a BalPoE checkpoint"):
        load_checkpoint(tmp_path / "foreign.pth")
    torch.save({"format": "balpoe-checkpoint", "x": Payload()}, tmp_path / "objects.pth")
    with pytest.raises(CheckpointError, match="cannot be read"):  # weights_only refuses arbitrary objects
        load_checkpoint(tmp_path / "objects.pth")


def test_cli_train_resume_evaluate_export(cifar10_dir, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--dataset", "cifar10-lt", "--data-dir", str(cifar10_dir), "--imb-factor", "0.1", "--epochs", "3",
              "--warmup", "1", "--step1", "2", "--step2", "3", "--bs", "32", "--save_period", "2",
              "--device", "cpu", "--download", "0"]
    assert main(["train", *common, "--save-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "ETA" in out.upper() and f"outputs: {run}/" in out
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-epoch2.pth", "checkpoint-epoch3.pth", "config.json",
                                                     "metrics.json", "model_best.pth", "summary.csv"]
    config = json.loads((run / "config.json").read_text())
    assert config["arch"]["args"]["num_experts"] == 3 and config["balpoe"]["epochs"] == 3
    assert config["n_gpu"] == 0  # a CPU run
    with (run / "summary.csv").open() as handle:
        straight = list(csv.DictReader(handle))
    metrics = json.loads((run / "metrics.json").read_text())

    # resume from epoch 2 into the same folder: rows for epoch 3 are replaced, results identical
    (run / "metrics.json").unlink()
    assert main(["train", "--resume", str(run / "checkpoint-epoch2.pth")]) == 0
    with (run / "summary.csv").open() as handle:
        resumed = list(csv.DictReader(handle))
    assert [r["epoch"] for r in resumed] == ["1", "2", "3"]
    assert resumed[2]["train_loss"] == straight[2]["train_loss"]
    assert json.loads((run / "metrics.json").read_text())["test_full_acc"] == metrics["test_full_acc"]

    assert main(["evaluate", str(run / "model_best.pth"), "--output", str(tmp_path / "eval.json")]) == 0
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    assert [r["distribution"] for r in evaluation["test_agnostic"]][:6] == [
        "forward-50", "forward-25", "forward-10", "forward-5", "forward-2", "uniform"]
    assert "test_full_acc" in evaluation

    exported = tmp_path / "logits"
    assert main(["export-logits", str(run / "checkpoint-epoch3.pth"), "--output", str(exported)]) == 0
    assert f"logits written to {exported}/" in capsys.readouterr().out
    manifest = json.loads((exported / "manifest.json").read_text())
    import hashlib
    assert manifest["checkpoint_sha256"] == hashlib.sha256((run / "checkpoint-epoch3.pth").read_bytes()).hexdigest()
    assert (manifest["format"], manifest["tau_list"], manifest["class_names"][0]) == ("balpoe-logits", [0, 1, 2],
                                                                                       "airplane")
    assert manifest["splits"]["test_full"]["logits_shape"] == [100, 3, 10]
    assert manifest["splits"]["train"]["logits_shape"] == [159, 3, 10]
    assert sum(manifest["train_class_counts"]) == 159 and manifest["split_rule"]["val_fraction"] == 0.2
    full = np.load(exported / "test_full.npz")  # NumPy alone reads it back
    assert full["logits"].dtype == np.float32 and (full["indices"] == np.arange(100)).all()
    accuracy = float((full["logits"].mean(axis=1).argmax(axis=1) == full["labels"]).mean())
    assert accuracy == pytest.approx(metrics["test_full_acc"])
    val, test = np.load(exported / "val.npz"), np.load(exported / "test.npz")
    assert sorted(np.concatenate([val["indices"], test["indices"]]).tolist()) == list(range(100))  # disjoint


def test_cli_rejects_bad_input_before_work(tmp_path, capsys):
    assert main(["train", "--mixup_alpha", "-1"]) == 2
    assert "mixup_alpha" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "missing.pth")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "x.pth"), "--lr", "0.5"]) == 2
    assert "--lr" in capsys.readouterr().err
    assert main(["train", "--dataset", "cifar100-lt", "--data-dir", str(tmp_path), "--download", "0"]) == 2
    assert "--data-dir" in capsys.readouterr().err


def test_run_folder_keeps_best_by_validation(tmp_path, cifar10_dir):
    config = tiny_config(cifar10_dir, tmp_path / "run", epochs=2, step1=1, step2=2, warmup_epochs=0, save_period=5)
    trainer = Trainer(config)
    trainer.fit([RunFolder(config.save_dir, config)])
    best = load_checkpoint(tmp_path / "run" / "model_best.pth")
    assert best["epoch"] == trainer.best_epoch and best["monitor"] == "val_balanced_acc"
    assert sorted(p.name for p in (tmp_path / "run").glob("*.pth")) == ["checkpoint-epoch2.pth", "model_best.pth"]
