"""MNIST and Fashion-MNIST as in-memory ``torch.utils.data.Dataset`` objects.

Images are normalised as the seed notebooks do: ``(pixel / 255 - mean) / std``
with MNIST mean 0.1307, std 0.3081 and Fashion-MNIST mean 0.2860, std 0.3530.

Full data lives in ``<root>/mnist/`` or ``<root>/fashion-mnist/`` under the
official file names (``train-images-idx3-ubyte.gz`` ..., gzip or not). With
``root=None`` a dataset reads the real sample embedded in the package
(``cnnext/data/embedded``, built by ``tools/make_embedded_data.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .download import DownloadError, download_dataset
from .idx import IdxError, read_images, read_labels

__all__ = [
    "EMBEDDED_DIR",
    "DATASETS",
    "IdxDataset",
    "MNIST",
    "FashionMNIST",
    "default_root",
    "embedded_source",
    "embedded_split",
    "load_datasets",
]

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"

# What the embedded sample of each dataset was cut from: the official file prefix, and how
# many of its images were held out. The cut is `embedded_split` (tools/make_embedded_data.py).
EMBEDDED_SOURCES = {
    "mnist": ("mnist-t10k", 2000),
    "fashion-mnist": ("fashion-mnist-train-first2557", 557),
}

_OFFICIAL = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def default_root() -> Path:
    """The default data directory: $CNNEXT_DATA, else ~/.cache/cnnext/data."""
    return Path(os.environ.get("CNNEXT_DATA") or Path.home() / ".cache" / "cnnext" / "data")


def embedded_split(count: int, held_out: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The random split of ``count`` images that made an embedded sample.

    Returns (train indices, held-out indices): disjoint, each sorted ascending, together
    ``range(count)``, with ``held_out`` held-out indices; the same for the same arguments.
    """
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def embedded_source(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The real images the embedded sample of ``name`` was cut from, in their original order.

    Joins the embedded train and held-out parts back through ``embedded_split``: for "mnist"
    the 10,000 official MNIST test images (t10k), for "fashion-mnist" the first 2,557 official
    Fashion-MNIST training images. Returns (uint8 images (N, 28, 28), uint8 labels (N,)).
    Raises KeyError for another name.
    """
    _, held_out = EMBEDDED_SOURCES[name]
    parts = {
        split: (read_images(EMBEDDED_DIR / f"{name}-{split}-images-idx3-ubyte.gz"),
                read_labels(EMBEDDED_DIR / f"{name}-{split}-labels-idx1-ubyte.gz"))
        for split in ("train", "test")
    }
    count = len(parts["train"][0]) + len(parts["test"][0])
    images = np.empty((count, 28, 28), np.uint8)
    labels = np.empty(count, np.uint8)
    for split, index in zip(("train", "test"), embedded_split(count, held_out)):
        images[index], labels[index] = parts[split]
    return images, labels


class IdxDataset(Dataset):
    """Images and labels from a pair of IDX files, normalised, held in memory.

    Attributes: ``images`` float32 of shape (N, 1, 28, 28), normalised;
    ``labels`` int64 of shape (N,), values in [0, 10). ``dataset[i]``
    returns ``(images[i], int(labels[i]))``. Raises IdxError (naming the
    files) when either file is invalid or their counts differ.
    """

    def __init__(self, images_path: Path, labels_path: Path, mean: float, std: float) -> None:
        images = read_images(images_path)
        labels = read_labels(labels_path)
        if len(images) != len(labels):
            raise IdxError(
                f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
            )
        self.images = torch.from_numpy(images).float().div_(255).sub_(mean).div_(std).unsqueeze(1)
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class _IdxDatasetFamily(IdxDataset):
    """Shared constructor of MNIST and FashionMNIST; subclasses set the class attributes."""

    name: str
    title: str
    mean: float
    std: float
    classes: tuple[str, ...]

    def __init__(self, root: str | os.PathLike | None = None, train: bool = True, *, download: bool = False) -> None:
        """Load the train (``train=True``) or test split.

        ``root=None`` reads the embedded sample: its train part, or its
        held-out part for ``train=False``. Otherwise reads the full data
        from ``root/<name>/``, first downloading it when ``download`` is set
        (DownloadError if that fails). Raises FileNotFoundError, saying how
        to get the data, when a full-data file is missing.
        """
        if root is None:
            split = "train" if train else "test"
            images_path = EMBEDDED_DIR / f"{self.name}-{split}-images-idx3-ubyte.gz"
            labels_path = EMBEDDED_DIR / f"{self.name}-{split}-labels-idx1-ubyte.gz"
            self.source = "embedded"
        else:
            directory = Path(root) / self.name
            if download:
                download_dataset(self.name, directory)
            images_path, labels_path = (self._find(directory, f) for f in _OFFICIAL[train])
            self.source = "full"
        self.train = train
        super().__init__(images_path, labels_path, self.mean, self.std)

    def _find(self, directory: Path, filename: str) -> Path:
        """The path of ``filename`` in ``directory``, gzip or uncompressed; FileNotFoundError if neither."""
        for candidate in (directory / filename, directory / filename.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"{self.title} file {directory / filename} not found; download it with "
            f"download=True (CLI: --download) or copy the official IDX files into {directory}"
        )


class MNIST(_IdxDatasetFamily):
    """The MNIST handwritten digits (60,000 train / 10,000 test when full)."""

    name = "mnist"
    title = "MNIST"
    mean = 0.1307
    std = 0.3081
    classes = tuple(str(i) for i in range(10))


class FashionMNIST(_IdxDatasetFamily):
    """Zalando's Fashion-MNIST clothing images (60,000 train / 10,000 test when full)."""

    name = "fashion-mnist"
    title = "Fashion-MNIST"
    mean = 0.2860
    std = 0.3530
    classes = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )


DATASETS: dict[str, type[_IdxDatasetFamily]] = {"mnist": MNIST, "fashion-mnist": FashionMNIST}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_datasets(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    log: Callable[[str], None] = _stderr,
) -> tuple[IdxDataset, IdxDataset]:
    """Return the (train, test) datasets of ``name`` ("mnist" or "fashion-mnist").

    Uses the full data in ``root`` (default: ``default_root()``) when it is
    there, after downloading it if ``download`` is set. When the full data
    is absent, or the download fails, falls back to the embedded sample and
    calls ``log`` with a one-line message saying so and how to get the full
    data (a failed download is reported through ``log`` first). Corrupt
    full-data files are not papered over: IdxError propagates. Raises
    KeyError for an unknown dataset name.
    """
    family = DATASETS[name]
    root = default_root() if root is None else Path(root)
    directory = root / family.name
    reason = f"no full {family.title} in {directory}"
    hint = f"--download (download=True) with internet, or the official IDX .gz files in {directory}"
    try:
        return family(root, True, download=download), family(root, False)
    except FileNotFoundError:
        pass
    except DownloadError as e:
        log(f"cnnext: {e}")
        reason = f"could not download {family.title}"
        hint = f"the official IDX .gz files in {directory}"
    train, test = family(None, True), family(None, False)
    log(
        f"cnnext: {reason}; using the embedded real sample ({len(train)} train / {len(test)} "
        f"held-out images). For the full data: {hint}"
    )
    return train, test
