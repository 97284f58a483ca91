"""Real, offline data: Debian's dataset-fashion-mnist. CI installs it, so there this test must run."""
import os
from dataclasses import replace

import numpy as np
import pytest

from balpoe.config import Config
from balpoe.data import build_data, load_raw
from balpoe.datasets import fashion_mnist_folder, load_fashion_mnist
from balpoe.trainer import Trainer

present = (fashion_mnist_folder("unused") / "train-images-idx3-ubyte.gz").exists()
if not present and os.environ.get("CI"):
    raise RuntimeError("CI must run the Fashion-MNIST test: install Debian's dataset-fashion-mnist")
needs_data = pytest.mark.skipif(not present, reason="Debian's dataset-fashion-mnist is not installed")


@needs_data
def test_reads_the_idx_files():
    raw = load_fashion_mnist("unused", download=False)
    assert raw.train_images.shape == (60000, 32, 32, 3) and raw.test_images.shape == (10000, 32, 32, 3)
    assert raw.train_images[:, :2].max() == 0  # the 2-pixel pad is background
    assert sorted(set(raw.test_labels.tolist())) == list(range(10))


def first_per_class(raw, train: int, test: int):
    """The first `train` training and `test` test images of each class: the real images, fewer of them, so
    that one epoch takes under a minute (a test fixture; the product always reads them all)."""
    def first(labels, count):
        return np.sort(np.concatenate([np.flatnonzero(labels == c)[:count] for c in range(raw.num_classes)]))
    kept_train, kept_test = first(raw.train_labels, train), first(raw.test_labels, test)
    return replace(raw, train_images=raw.train_images[kept_train], train_labels=raw.train_labels[kept_train],
                   test_images=raw.test_images[kept_test], test_labels=raw.test_labels[kept_test])


@needs_data
def test_one_epoch_learns_and_the_experts_lean_as_their_tau_says():
    """τ = 0/1/2 on real long-tailed data: after one epoch expert 0 (plain cross-entropy) already leans to
    the head classes and expert 2 to the tail, as BalPoE intends; the ensemble learns above chance."""
    config = Config(dataset="fashion-mnist-lt", epochs=1, warmup_epochs=0, step1=1, step2=1,
                    reduce_dimension=True, batch_size=32, device="cpu", download=False)
    raw = load_raw(config)
    assert len(build_data(config, "cpu", raw).train) == 14886  # the whole long-tailed set
    trainer = Trainer(config, build_data(config, "cpu", first_per_class(raw, train=1500, test=300)))
    assert (len(trainer.data.train), len(trainer.data.test_full)) == (3720, 3000)
    final = trainer.fit()
    assert final["test_balanced_acc"] > 0.2  # chance is 0.1
    assert final["test_full_expert0_many_acc"] > final["test_full_expert0_medium_acc"]  # head bias
    assert final["test_full_expert2_medium_acc"] > final["test_full_expert2_many_acc"]  # tail bias
