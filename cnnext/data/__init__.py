"""MNIST / Fashion-MNIST data: IDX reader, datasets, downloader, embedded sample.

Typical use::

    from cnnext.data import load_datasets
    train, test = load_datasets("mnist")          # full data if present, else embedded sample
    train, test = load_datasets("mnist", download=True)
"""

from .datasets import (
    DATASETS,
    EMBEDDED_DIR,
    FashionMNIST,
    IdxDataset,
    MNIST,
    default_root,
    embedded_source,
    embedded_split,
    load_datasets,
)
from .download import DownloadError, download_dataset, download_file
from .idx import IdxError, read_idx, read_images, read_labels, write_idx

__all__ = [
    "DATASETS",
    "EMBEDDED_DIR",
    "DownloadError",
    "FashionMNIST",
    "IdxDataset",
    "IdxError",
    "MNIST",
    "default_root",
    "download_dataset",
    "download_file",
    "embedded_source",
    "embedded_split",
    "load_datasets",
    "read_idx",
    "read_images",
    "read_labels",
    "write_idx",
]
