"""Cool-down rungs in the trainer: the fork changes nothing for the trial that goes on."""
import pytest
import torch

from balpoe.cooldown import cooldown_epochs, cooldown_lr_factors, cooled_metrics, default_fraction, in_trunk
from balpoe.config import Config
from balpoe.trainer import Trainer
from conftest import tiny_config

TIMING = {"train_seconds", "train_images_per_s"}


def untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


def test_the_paper_recipe_cools_a_quarter_of_the_rung_half_at_each_step():
    recipe = Config()
    assert default_fraction(recipe) == 0.25
    assert cooldown_epochs(40, 0.25) == 10
    assert cooldown_lr_factors(10, recipe) == [0.1] * 5 + [pytest.approx(0.01)] * 5
    assert cooldown_lr_factors(1, recipe) == [0.1]  # at least one epoch, at the first step's LR
    assert cooldown_epochs(1, 0.25) == 1
    assert in_trunk(159, recipe) and not in_trunk(160, recipe)


def test_a_cooled_trial_ends_bit_identical_to_one_never_cooled(cifar10_dir, tmp_path):
    config = tiny_config(cifar10_dir, tmp_path, epochs=4, step1=3, step2=4)
    straight = Trainer(config)
    straight_rows = [untimed(straight.train_epoch()) for _ in range(4)]

    cooled = Trainer(config)
    rows = []
    for _ in range(4):
        rows.append(untimed(cooled.train_epoch()))
        if in_trunk(cooled.epoch, config):
            scores = cooled_metrics(cooled, 2)
            assert scores["cooldown_epochs"] == 2 and "cooled_val_balanced_acc" in scores
    assert rows == straight_rows
    a, b = straight.model.state_dict(), cooled.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.loader.state_dict() == cooled.loader.state_dict()
    assert straight.evaluate("val") == cooled.evaluate("val")


def test_a_cool_down_trains_and_reads_only_the_validation_split(cifar10_dir, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(cifar10_dir, tmp_path, epochs=4, step1=2, step2=3))  # lr 0.1, γ 0.1
    trainer.train_epoch()
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    read = []
    real_predict = trainer.predict
    monkeypatch.setattr(trainer, "predict", lambda split, callbacks=None: read.append(split) or real_predict(split))
    trained_at = []
    real_train_epoch = trainer.train_epoch
    monkeypatch.setattr(trainer, "train_epoch",
                        lambda callbacks=None, lr=None: trained_at.append(lr) or real_train_epoch(callbacks, lr))
    scores = cooled_metrics(trainer, 3)
    assert read == ["val"]
    assert trained_at == pytest.approx([0.01, 0.01, 0.001])  # half at lr·γ, half at lr·γ²
    assert trainer.epoch == 1
    assert scores["cooled_val_balanced_acc"] != trainer.evaluate("val")["val_balanced_acc"]  # it did train
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items())


def test_a_failed_cool_down_still_puts_the_state_back(cifar10_dir, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(cifar10_dir, tmp_path))
    trainer.train_epoch()
    before = trainer.loader.state_dict()

    def diverge(split, callbacks=None):
        raise RuntimeError("fault in the fork")

    monkeypatch.setattr(trainer, "evaluate", diverge)
    with pytest.raises(RuntimeError):
        cooled_metrics(trainer, 1)
    assert trainer.epoch == 1 and trainer.loader.state_dict() == before


def test_the_trials_loop_reports_cooled_rungs_and_ends_as_a_trial_without_them(tmp_path):
    from results.reader import read_progress
    from study.trainable import CooldownRungs, trial_epochs
    from study.trial_progress import ProgressFile
    from test_in_epoch_progress import TIMING as PROGRESS_TIMING, small_trainer

    schedule = dict(epochs=4, step1=3, step2=4)
    plain_trainer, cooled_trainer = small_trainer(tmp_path, **schedule), small_trainer(tmp_path, **schedule)
    plain = [row for row, _ in trial_epochs(plain_trainer, 4)]
    stages = []

    class Stages(ProgressFile):
        def _write(self, *args):
            stages.append(self.stage)
            super()._write(*args)
    progress = Stages(tmp_path / "trial", epochs=4, interval=0, max_write_share=1.0)
    rungs = CooldownRungs(frozenset({1, 2}), fraction=0.5, metric="val_balanced_acc")
    cooled = [row for row, _ in trial_epochs(cooled_trainer, 4, progress, cooldown=rungs)]
    timing = TIMING | PROGRESS_TIMING | {"cooldown_seconds"}
    for row, twin in zip(cooled, plain):  # every trunk metric is the same, every epoch and at the end
        assert {k: v for k, v in twin.items() if k not in timing}.items() <= row.items()
    assert [row.get("cooldown_epochs") for row in cooled] == [1, 1, None, None]
    assert [row["rung_val_balanced_acc"] for row in cooled] == [
        cooled[0]["cooled_val_balanced_acc"], cooled[1]["cooled_val_balanced_acc"],
        cooled[2]["val_balanced_acc"], cooled[3]["val_balanced_acc"]]
    assert not any(key.startswith("cooled_test") for row in cooled for key in row)
    assert "cooldown" in stages and read_progress(tmp_path / "trial").stage == "final"
    weights = cooled_trainer.model.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in plain_trainer.model.state_dict().items())
