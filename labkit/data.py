"""Datasets for the labs.

* ``digits`` (the embedded default): scikit-learn's bundled handwritten digits,
  1,797 grey images of 8x8 pixels in 10 classes. Nothing is downloaded.
* ``cifar10``: the CIFAR-10 python-pickle batches read from a local folder, for
  users who have them (``download_cifar10`` fetches them on a machine with internet).
* ``pydoc``: the text of Python's language reference that ships with CPython
  (``pydoc_data.topics``, about 465,000 characters), as a character-level
  :class:`Corpus` for the language model of lab 08. Nothing is downloaded.

Both are split into train / validation / test with a fixed seed. The validation
split is for every choice a lab makes (model selection, sensitivity, search); the
test split is only reported, never used to choose (the original lab chose on test).
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from labkit.validation import check_count, check_real, check_seed

DATASETS = ("digits", "cifar10", "pydoc")
TEXT_SPLITS = ("train", "val", "test")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)


@dataclass(frozen=True)
class Splits:
    """Train / validation / test splits of one dataset, as tensor datasets.

    Images are float tensors of shape ``(N, C, H, W)``, normalised with the mean
    and standard deviation of the training split; labels are ``int64``.
    """

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    classes: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        return tuple(self.train.tensors[0].shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def loaders(
        self, batch_size: int = 64, seed: int = 0
    ) -> tuple[DataLoader, DataLoader, DataLoader]:
        """DataLoaders for train (shuffled with ``seed``), validation and test."""
        batch_size = check_count(batch_size, "batch_size")
        generator = torch.Generator().manual_seed(check_seed(seed))
        train = DataLoader(self.train, batch_size=batch_size, shuffle=True, generator=generator)
        val = DataLoader(self.val, batch_size=512)
        test = DataLoader(self.test, batch_size=512)
        return train, val, test


def subset_loader(dataset: Dataset, size: int, *, batch_size: int,
                  seed: int | None = None) -> DataLoader:
    """A DataLoader over ``size`` examples of ``dataset``, unshuffled, in batches of
    ``batch_size``: the first ``size`` when ``seed`` is None, else ``size`` drawn without
    replacement by ``torch.randperm`` with ``seed`` (a fixed validation subset for a
    search's reward, or calibration images for a criterion)."""
    size = check_count(size, "size", 1, len(dataset))
    batch_size = check_count(batch_size, "batch_size")
    if seed is None:
        indices = list(range(size))
    else:
        generator = torch.Generator().manual_seed(check_seed(seed))
        indices = torch.randperm(len(dataset), generator=generator)[:size].tolist()
    return DataLoader(Subset(dataset, indices), batch_size=batch_size)


def load(
    name: str = "digits",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
) -> Splits | Corpus:
    """Load a dataset and split it with a fixed ``seed``.

    ``digits``: stratified split of the 1,797 images, ``test_fraction`` for test and
    ``val_fraction`` for validation (fractions of the whole set).
    ``pydoc``: a :class:`Corpus`; the text is cut into three contiguous blocks, train
    first, then ``val_fraction`` for validation and ``test_fraction`` for test (``seed`` is
    unused: the split is fixed).
    ``cifar10``: the official 10,000-image test batch is the test split; ``val_fraction``
    of the 50,000 training images is held out for validation. ``root`` is the folder
    holding ``cifar-10-batches-py`` (or the batch files themselves).
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    seed = check_seed(seed)
    for arg, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        check_real(value, arg, 0.0, 1.0, low_open=True, high_open=True)
    if name != "cifar10" and val_fraction + test_fraction >= 1.0:
        raise ValueError(
            "val_fraction + test_fraction must be below 1, "
            f"got {val_fraction} + {test_fraction}"
        )
    if name == "digits":
        return _load_digits(seed, val_fraction, test_fraction)
    if name == "pydoc":
        return _load_pydoc(val_fraction, test_fraction)
    if root is None:
        raise ValueError("root is required for cifar10: the folder with the python batches")
    return _load_cifar10(Path(root), seed, val_fraction)


@dataclass(frozen=True)
class Corpus:
    """A character-level text corpus cut into contiguous train / validation / test blocks.

    Each split is a 1-D ``int64`` tensor of token ids; token ``i`` is the character
    ``vocabulary[i]`` (every character of the whole text, sorted).
    """

    name: str
    vocabulary: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def encode(self, text: str) -> torch.Tensor:
        """The token ids of ``text``; a character outside the vocabulary is an error."""
        index = {character: i for i, character in enumerate(self.vocabulary)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"text holds characters outside the vocabulary: {unknown!r}")
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    def decode(self, tokens: torch.Tensor) -> str:
        return "".join(self.vocabulary[i] for i in tokens.tolist())

    def split(self, name: str) -> torch.Tensor:
        if name not in TEXT_SPLITS:
            raise ValueError(f"split must be one of {TEXT_SPLITS}, got {name!r}")
        return getattr(self, name)

    def windows(self, split: str, length: int, *, count: int | None = None,
                seed: int = 0) -> torch.Tensor:
        """Windows of ``length + 1`` consecutive tokens of ``split``, one per row.

        A model reads ``w[:, :-1]`` and predicts ``w[:, 1:]``. ``count=None``: every
        non-overlapping window from the start of the split (for evaluation); otherwise
        ``count`` windows at offsets drawn uniformly with ``seed`` (training batches,
        calibration samples).
        """
        tokens = self.split(split)
        check_count(length, "length")
        if length + 1 > tokens.numel():
            raise ValueError(f"length must be below the {split} split's {tokens.numel()} "
                             f"tokens, got {length}")
        if count is None:
            starts = torch.arange(0, tokens.numel() - length, length)
        else:
            check_count(count, "count", minimum=0)
            generator = torch.Generator().manual_seed(check_seed(seed))
            starts = torch.randint(tokens.numel() - length, (count,), generator=generator)
        return tokens[starts[:, None] + torch.arange(length + 1)]


def pydoc_text() -> str:
    """Python's language reference as shipped with CPython: every ``pydoc_data.topics``
    entry, in sorted order, separated by blank lines."""
    return "\n\n".join(topics[key] for key in sorted(topics))


def _load_pydoc(val_fraction: float, test_fraction: float) -> Corpus:
    text = pydoc_text()
    vocabulary = "".join(sorted(set(text)))
    index = {character: i for i, character in enumerate(vocabulary)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
    val_start = round(len(text) * (1.0 - val_fraction - test_fraction))
    test_start = round(len(text) * (1.0 - test_fraction))
    return Corpus("pydoc", vocabulary, ids[:val_start], ids[val_start:test_start],
                  ids[test_start:])


def _load_digits(seed: int, val_fraction: float, test_fraction: float) -> Splits:
    from sklearn.datasets import load_digits  # imported on use: it takes a second
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None] / 16.0
    labels = bunch.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1.0 - test_fraction),
        random_state=seed, stratify=y_rest,
    )
    classes = tuple(str(c) for c in bunch.target_names)
    return _normalised_splits("digits", (x_train, y_train), (x_val, y_val), (x_test, y_test),
                              classes)


def _normalised_splits(name, train, val, test, classes) -> Splits:
    """Standardise every split per channel with the training split's statistics."""
    mean = train[0].mean(axis=(0, 2, 3), keepdims=True)
    std = train[0].std(axis=(0, 2, 3), keepdims=True) + 1e-8

    def dataset(split):
        x, y = split
        return TensorDataset(torch.from_numpy((x - mean) / std).float(), torch.from_numpy(y))

    return Splits(name, dataset(train), dataset(val), dataset(test), classes)


def _cifar10_folder(root: Path) -> Path:
    """The folder that holds the CIFAR-10 batch files, or a clear error."""
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 root folder {str(root)!r} does not exist")
    folder = root / CIFAR10_FOLDER if (root / CIFAR10_FOLDER).is_dir() else root
    missing = [b for b in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
               if not (folder / b).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 batches not found in {str(folder)!r}: missing {', '.join(missing)}. "
            f"Put the python version of CIFAR-10 in {str(root / CIFAR10_FOLDER)!r} "
            "(labkit.data.download_cifar10 fetches it where there is internet)."
        )
    return folder


def _read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data.astype(np.float32) / 255.0, np.asarray(batch[b"labels"], dtype=np.int64)


def _load_cifar10(root: Path, seed: int, val_fraction: float) -> Splits:
    from sklearn.model_selection import train_test_split  # imported on use: it takes a second

    folder = _cifar10_folder(root)
    parts = [_read_cifar10_batch(folder / b) for b in CIFAR10_TRAIN_BATCHES]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=val_fraction, random_state=seed, stratify=labels
    )
    test = _read_cifar10_batch(folder / CIFAR10_TEST_BATCH)
    return _normalised_splits("cifar10", (x_train, y_train), (x_val, y_val), test,
                              CIFAR10_CLASSES)


def download_cifar10(
    root: str | Path, *, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5
) -> Path:
    """Download and unpack CIFAR-10 (python version) into ``root``; check its MD5.

    Needs internet; labs and tests never call it with the default ``url``. Returns the
    folder holding the batches. A checksum mismatch raises ``ValueError`` and leaves
    nothing behind.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / "cifar-10-python.tar.gz"
        with urllib.request.urlopen(url) as response, open(archive, "wb") as out:
            shutil.copyfileobj(response, out)
        digest = hashlib.md5(archive.read_bytes()).hexdigest()
        if digest != md5:
            raise ValueError(f"checksum mismatch for {url}: expected md5 {md5}, got {digest}")
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    return _cifar10_folder(root)
