import pickle

import numpy as np
import pytest
import torch

from balpoe import data, datasets
from balpoe.metrics import shot_groups
from conftest import make_cifar_folder, tiny_config


def test_long_tail_counts_match_the_paper_subset():
    counts = data.long_tail_counts(500, 100, 0.01)
    assert sum(counts) == 10847
    assert (counts[0], counts[50], counts[99]) == (500, 48, 5)
    groups = {g: int(m.sum()) for g, m in shot_groups(counts).items()}
    assert groups == {"many": 35, "medium": 35, "few": 30}
    assert sum(data.long_tail_counts(5000, 10, 0.01)) == 12406


def test_long_tail_indices_follow_the_reference_rule(cifar10_dir):
    raw = datasets.load_cifar(cifar10_dir, "cifar10", download=False)
    counts = data.long_tail_counts(40, 10, 0.1)
    assert counts == [40, 30, 23, 18, 14, 11, 8, 6, 5, 4]
    kept = data.long_tail_indices(raw.train_labels, counts)
    np.random.seed(0)  # the reference: global seed once, then shuffle per class in order
    expected = []
    for cls in range(10):
        idx = np.where(raw.train_labels == cls)[0]
        np.random.shuffle(idx)
        expected.append(idx[:counts[cls]])
    np.testing.assert_array_equal(kept, np.concatenate(expected))
    assert np.bincount(raw.train_labels[kept]).tolist() == counts


def test_generated_cifar100_loads_through_the_same_code(tmp_path):
    root = make_cifar_folder(tmp_path, "cifar100", train_per_class=5, test_per_class=2)
    raw = datasets.load_cifar(root, "cifar100", download=False)
    assert raw.train_images.shape == (500, 32, 32, 3) and raw.train_images.dtype == np.uint8
    assert raw.num_classes == 100 and np.bincount(raw.test_labels).tolist() == [2] * 100
    assert not datasets.cifar_is_canonical(root, "cifar100")


def test_missing_data_names_both_remedies(tmp_path):
    with pytest.raises(datasets.DataNotFoundError, match="--data-dir"):
        datasets.load_cifar(tmp_path, "cifar100", download=False)


def test_data_files_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    for name in ("train", "test"):
        (folder / name).write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        datasets.load_cifar(tmp_path, "cifar100", download=False)


def test_splits_are_stratified_disjoint_and_fixed(cifar10_dir):
    bundle = data.build_data(tiny_config(cifar10_dir))
    assert bundle.description() == {"train": 159, "val": 20, "test": 80, "test_full": 100, "classes": 10}
    assert torch.bincount(bundle.val.labels).tolist() == [2] * 10
    val_idx, test_idx = data.stratified_split(np.repeat(np.arange(10), 10), 0.2)
    assert not set(val_idx) & set(test_idx) and len(val_idx) + len(test_idx) == 100
    again, _ = data.stratified_split(np.repeat(np.arange(10), 10), 0.2)
    np.testing.assert_array_equal(val_idx, again)


def test_shifted_test_sets():
    labels = np.repeat(np.arange(100), 100)
    forward = data.shifted_test_indices(labels, 50, "forward")
    backward = data.shifted_test_indices(labels, 50, "backward")
    assert np.bincount(labels[forward], minlength=100)[[0, 99]].tolist() == [100, 2]
    assert np.bincount(labels[backward], minlength=100)[[0, 99]].tolist() == [2, 100]


def _identity_params(b):
    zeros = torch.zeros(b, dtype=torch.long)
    return zeros, zeros, torch.zeros(b, dtype=torch.bool), torch.zeros(b)


def test_augment_geometry():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 3, 32, 32)
    dx, dy, flip, angle = _identity_params(2)
    assert torch.equal(data.augment(images, dx, dy, flip, angle), images)
    flipped = data.augment(images, dx, dy, torch.ones(2, dtype=torch.bool), angle)
    assert torch.equal(flipped, images.flip(3))
    shifted = data.augment(images, torch.tensor([1, -4]), dy, flip, angle)
    assert torch.equal(shifted[0, :, :, :31], images[0, :, :, 1:]) and shifted[0, :, :, 31].eq(0).all()
    assert torch.equal(shifted[1, :, :, 4:], images[1, :, :, :28]) and shifted[1, :, :, :4].eq(0).all()
    quarter = data.augment(images, dx, dy, flip, torch.full((2,), torch.pi / 2))
    assert torch.equal(quarter, images.rot90(1, dims=(2, 3))) or torch.equal(quarter, images.rot90(-1, dims=(2, 3)))
    rotated = data.augment(images, dx, dy, flip, torch.full((2,), 0.26))  # 15°: corners leave the frame
    assert rotated[:, :, 0, 0].eq(0).all() and rotated.shape == images.shape and rotated.dtype == torch.uint8


def _loader(split, seed=0, alpha=0.4):
    return data.BatchLoader(split, 32, data.Normalise((0.5,) * 3, (0.25,) * 3, "cpu"), seed=seed, mixup_alpha=alpha)


def test_loader_is_deterministic_and_resumable(cifar10_dir):
    split = data.build_data(tiny_config(cifar10_dir)).train
    first = [(b.inputs, b.targets, b.mix_targets, b.lam) for b in _loader(split)]
    second = [(b.inputs, b.targets, b.mix_targets, b.lam) for b in _loader(split)]
    assert len(first) == 5 and first[-1][0].shape == (159 - 4 * 32, 3, 32, 32)  # last partial batch kept
    for a, b in zip(first, second):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[3] == b[3]
    loader = _loader(split)
    list(loader)
    state = loader.state_dict()
    epoch2 = [b.inputs for b in loader]
    resumed = _loader(split, seed=123)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(epoch2, (b.inputs for b in resumed)))
    assert not torch.equal(epoch2[0], first[0][0])


def test_loader_mixup():
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    images[2:] = 255
    split = data.Split(images, torch.tensor([0, 0, 1, 1]), np.arange(4))
    batch = next(iter(data.BatchLoader(split, 4, data.Normalise((0.0,) * 3, (1.0,) * 3, "cpu"), seed=1,
                                       mixup_alpha=0.4, max_degrees=0.0, pad=0)))
    assert 0.0 < batch.lam < 1.0
    for i in range(4):  # every image is λ·own + (1−λ)·partner, and the partner's label is recorded
        own, partner = float(batch.targets[i]), float(batch.mix_targets[i])
        assert batch.inputs[i].mean().item() == pytest.approx(batch.lam * own + (1 - batch.lam) * partner, abs=1e-6)
    plain = next(iter(_loader(split, alpha=0.0)))
    assert plain.lam == 1.0 and torch.equal(plain.targets, plain.mix_targets)
