"""The data-set registry and the readers of whole data sets (NumPy only; torch is never imported here).

One `DatasetInfo` per data set holds everything other modules need to know about it: class count,
normalisation, class names, the official code's loader name, where its files are, how to read and
download them, and whether a copy is the official one. The config (validation, official-JSON export),
the trainer's data pipeline and `study.run doctor` all read this registry, so a new data set is one
entry here. NumPy is imported inside the readers so that `--help`, config checks and `doctor` work
even where NumPy or torch is broken.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

CIFAR_NORMALISATION = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
FASHION_MNIST_NORMALISATION = ((0.2860,) * 3, (0.3530,) * 3)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
_FASHION_MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                        "t10k-labels-idx1-ubyte")


class DataError(Exception):
    """The data set cannot be used as it is (absent, truncated, damaged); the message says what to do."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The data set is absent and could not be downloaded; the message says how to provide it."""


@dataclass
class RawDataset:
    """Whole train and test sets as uint8 NHWC arrays (3 channels, 32×32) with int64 labels."""
    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class DatasetInfo:
    name: str                                     # the config's `dataset` value
    num_classes: int
    normalisation: tuple[tuple[float, ...], tuple[float, ...]]
    official_loader: str | None                   # `data_loader.type` in the official configs
    load: Callable[[Path, bool], RawDataset]      # (data_dir, download) -> RawDataset
    missing: Callable[[Path], list[str]]          # files absent from data_dir (empty: present)
    location: Callable[[Path], Path]              # where the files are read from
    names: Callable[[Path], list[str] | None]     # class names in label order, if known
    canonical: Callable[[Path], bool] | None = None  # the official files (checksums), when checkable
    fix: str = ""                                 # how to get the data when it is missing


# --- CIFAR ---------------------------------------------------------------------------------------
# name -> (folder, train files, test files, label key, number of classes)
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}


class _ForeignObject(pickle.UnpicklingError):
    """The pickle asks for something a CIFAR data file never holds (a function to call, an object)."""


class NotCifarPickle(DataError, pickle.UnpicklingError):
    """A data file that is a pickle but no CIFAR one: refused before anything in it ran."""


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR's python files are pickles: allow only the NumPy array machinery, never arbitrary code."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise _ForeignObject(f"{module}.{name}")
        return super().find_class(module, name)


def _damaged(path: Path, why: str, fix: str) -> DataError:
    return DataError(f"{path}: the file is damaged or truncated ({why}); {fix}")


def _read_cifar_batch(path: Path, label_key: bytes):
    import numpy as np
    fix = f"delete {path.parent} and run again to download a fresh copy, or point --data-dir at an intact copy"
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
        data, labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[label_key], dtype=np.int64)
    except _ForeignObject as err:
        raise NotCifarPickle(f"{path}: not a CIFAR pickle: it asks for {err}, which a CIFAR data file never "
                             f"holds; refusing to load it, so nothing in it ran. {fix[0].upper()}{fix[1:]}") from None
    except pickle.UnpicklingError as err:
        raise _damaged(path, str(err), fix) from None
    except (EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            RecursionError) as err:
        raise _damaged(path, f"{type(err).__name__}: {err}", fix) from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise _damaged(path, f"{data.shape} images for {len(labels)} labels; expected (N, 3072)", fix)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def cifar_folder(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / _CIFAR[name][0]


def _cifar_missing(data_dir: Path, name: str) -> list[str]:
    folder_name, train_files, test_files, _, _ = _CIFAR[name]
    return [f for f in train_files + test_files if not (Path(data_dir) / folder_name / f).is_file()]


def _download_cifar(data_dir: Path, name: str) -> None:
    from torchvision import datasets  # torchvision checks the archive's MD5 before extracting
    cls = datasets.CIFAR100 if name == "cifar100" else datasets.CIFAR10
    try:
        cls(str(data_dir), train=True, download=True)
    except Exception as err:  # network errors come in many types; the user needs one message
        raise DataNotFoundError(
            f"data_dir: {name.upper()} is not in {cifar_folder(data_dir, name)} and the download failed ({err}). "
            f"Either point --data-dir at a folder that holds '{_CIFAR[name][0]}/', or run where the "
            f"download host is reachable (torchvision fetches and checks it).") from None


def load_cifar(data_dir: str | Path, name: str, download: bool = True) -> RawDataset:
    import numpy as np
    folder_name, train_files, test_files, label_key, num_classes = _CIFAR[name]
    folder = Path(data_dir) / folder_name
    if _cifar_missing(Path(data_dir), name):
        if not download:
            raise DataNotFoundError(
                f"data_dir: {name.upper()} files not found in {folder}. Point --data-dir at a folder holding "
                f"'{folder_name}/', or allow the download (torchvision's, with its checksums).")
        _download_cifar(Path(data_dir), name)
    train = [_read_cifar_batch(folder / f, label_key) for f in train_files]
    test = [_read_cifar_batch(folder / f, label_key) for f in test_files]
    mean, std = CIFAR_NORMALISATION
    raw = RawDataset(name, np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                     np.concatenate([x for x, _ in test]), np.concatenate([y for _, y in test]),
                     num_classes, mean, std)
    return _checked(raw, folder)


def cifar_is_canonical(data_dir: str | Path, name: str) -> bool:
    """True when the files carry the official MD5 sums (torchvision's list)."""
    from torchvision import datasets
    cls = datasets.CIFAR100 if name == "cifar100" else datasets.CIFAR10
    folder = cifar_folder(data_dir, name)
    for file_name, md5 in cls.train_list + cls.test_list:
        path = folder / file_name
        if not path.is_file() or hashlib.md5(path.read_bytes()).hexdigest() != md5:
            return False
    return True


def cifar100_names(data_dir: Path) -> list[str] | None:
    """CIFAR-100's names come from its `meta` file, read like its data files."""
    meta = cifar_folder(data_dir, "cifar100") / "meta"
    try:
        with open(meta, "rb") as handle:
            names = _ArrayUnpickler(handle, encoding="bytes").load()[b"fine_label_names"]
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, EOFError):
        return None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


# --- Fashion-MNIST -------------------------------------------------------------------------------
def _read_idx(path: Path):
    import numpy as np
    fix = f"replace {path} with an intact copy (Debian's dataset-fashion-mnist, or torchvision's download)"
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as err:
        raise _damaged(path, str(err), fix) from None
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise _damaged(path, "not an unsigned-byte IDX file", fix)
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _damaged(path, "header cut short", fix)
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise _damaged(path, f"{len(data)} bytes, its header promises {expected}", fix)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def fashion_mnist_folder(data_dir: str | Path) -> Path:
    """Where Fashion-MNIST is read from: a copy under --data-dir wins (torchvision's `FashionMNIST/raw/`
    layout, or the IDX files directly in it), then Debian's (dataset-fashion-mnist); when neither holds
    it, torchvision's folder under --data-dir, where a download puts it."""
    own = Path(data_dir) / "FashionMNIST" / "raw"
    for folder in (own, Path(data_dir), FASHION_MNIST_SYSTEM_DIR):
        if _find_idx(folder, _FASHION_MNIST_STEMS[0]):
            return folder
    return own


def _fashion_mnist_missing(data_dir: Path) -> list[str]:
    folder = fashion_mnist_folder(data_dir)
    return [stem for stem in _FASHION_MNIST_STEMS if not _find_idx(folder, stem)]


def load_fashion_mnist(data_dir: str | Path, download: bool = True) -> RawDataset:
    import numpy as np
    if _fashion_mnist_missing(Path(data_dir)) and download:
        try:
            from torchvision import datasets
            datasets.FashionMNIST(str(data_dir), train=True, download=True)
        except Exception as err:
            raise DataNotFoundError(
                f"data_dir: Fashion-MNIST not found ({data_dir}, {FASHION_MNIST_SYSTEM_DIR}) and the download "
                f"failed ({err}). Install Debian's dataset-fashion-mnist, or point --data-dir at a copy.") from None
    folder = fashion_mnist_folder(data_dir)
    paths = [_find_idx(folder, s) for s in _FASHION_MNIST_STEMS]
    if None in paths:
        raise DataNotFoundError(f"data_dir: Fashion-MNIST IDX files not found in {data_dir} or "
                                f"{FASHION_MNIST_SYSTEM_DIR}; install Debian's dataset-fashion-mnist, point "
                                f"--data-dir at a copy, or allow the download.")
    train_x, train_y, test_x, test_y = (_read_idx(p) for p in paths)
    for images, labels in ((train_x, train_y), (test_x, test_y)):
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{folder}: the IDX files do not fit together ({images.shape} images, "
                            f"{labels.shape} labels); replace them with an intact copy")

    def to_rgb32(images):  # 28×28 grey → 32×32×3, zero border like the background
        padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
        return np.repeat(padded[..., None], 3, axis=3)

    mean, std = FASHION_MNIST_NORMALISATION
    raw = RawDataset("fashion-mnist", to_rgb32(train_x), train_y.astype(np.int64), to_rgb32(test_x),
                     test_y.astype(np.int64), 10, mean, std)
    return _checked(raw, folder)


# --- generated -----------------------------------------------------------------------------------
def make_synthetic(num_classes: int = 10, train_per_class: int = 60, test_per_class: int = 20) -> RawDataset:
    """Generated stand-in (class = mean colour + noise), for smoke runs that must need no download."""
    import numpy as np
    rng = np.random.RandomState(0)
    palette = rng.randint(0, 256, size=(num_classes, 3))

    def make(per_class: int):
        labels = np.repeat(np.arange(num_classes), per_class)
        noise = rng.randint(-40, 41, size=(len(labels), 32, 32, 3))
        return np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8), labels

    (train_x, train_y), (test_x, test_y) = make(train_per_class), make(test_per_class)
    mean, std = CIFAR_NORMALISATION
    return RawDataset("synthetic", train_x, train_y, test_x, test_y, num_classes, mean, std)


def _checked(raw: RawDataset, folder: Path) -> RawDataset:
    """Labels a model can learn from: every one in [0, classes), every class in both sets."""
    import numpy as np
    for part, labels in (("train", raw.train_labels), ("test", raw.test_labels)):
        if len(labels) == 0 or labels.min() < 0 or labels.max() >= raw.num_classes:
            raise DataError(f"{folder}: {part} labels outside 0…{raw.num_classes - 1}; not a {raw.name} copy")
        absent = np.setdiff1d(np.arange(raw.num_classes), labels)
        if len(absent):
            raise DataError(f"{folder}: the {part} set has no image of class(es) {absent[:10].tolist()}; "
                            f"replace it with a complete copy")
    return raw


# --- the registry --------------------------------------------------------------------------------
def _cifar_info(name: str, official_loader: str, names: Callable[[Path], list[str] | None]) -> DatasetInfo:
    folder = _CIFAR[name][0]
    return DatasetInfo(
        name=f"{name}-lt", num_classes=_CIFAR[name][4], normalisation=CIFAR_NORMALISATION,
        official_loader=official_loader,
        load=lambda data_dir, download: load_cifar(data_dir, name, download),
        missing=lambda data_dir: _cifar_missing(data_dir, name),
        location=lambda data_dir: cifar_folder(data_dir, name), names=names,
        canonical=lambda data_dir: cifar_is_canonical(data_dir, name),
        fix=f"offline: copy {folder}/ from a machine that has it into a folder and pass --data-dir FOLDER; "
            f"online: a study downloads it; without CIFAR: --preset fmnist or smoke")


REGISTRY: dict[str, DatasetInfo] = {info.name: info for info in (
    _cifar_info("cifar100", "ImbalanceCIFAR100DataLoader", cifar100_names),
    _cifar_info("cifar10", "ImbalanceCIFAR10DataLoader", lambda _: list(CIFAR10_CLASSES)),
    DatasetInfo(name="fashion-mnist-lt", num_classes=10, normalisation=FASHION_MNIST_NORMALISATION,
                official_loader=None, load=load_fashion_mnist, missing=_fashion_mnist_missing,
                location=fashion_mnist_folder, names=lambda _: list(FASHION_MNIST_CLASSES),
                fix="apt-get install dataset-fashion-mnist, or point --data-dir at a copy"),
    DatasetInfo(name="synthetic-lt", num_classes=10, normalisation=CIFAR_NORMALISATION, official_loader=None,
                load=lambda data_dir, download: make_synthetic(), missing=lambda _: [],
                location=lambda _: Path("(generated in memory)"), names=lambda _: None),
)}
DATASET_NAMES = tuple(REGISTRY)


def load(dataset: str, data_dir: str | Path, download: bool = True) -> RawDataset:
    folder = Path(data_dir)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"data_dir: {folder} is a file; point --data-dir at a folder (got {str(data_dir)!r})")
    return REGISTRY[dataset].load(folder, download)


def class_names(dataset: str, data_dir: str | Path) -> list[str] | None:
    """Class names in label order, where the data set names them; None for generated data or a copy
    without names."""
    return REGISTRY[dataset].names(Path(data_dir))
