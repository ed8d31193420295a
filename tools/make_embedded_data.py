"""Rebuild cnnext/data/embedded/ from the real data in ../shared/data.

The embedded sample is what `python -m cnnext.train` trains on when the full
datasets are not present and cannot be downloaded. It holds:

- mnist: the 10,000 official MNIST test images, split at random (seed 0)
  into 8,000 train and 2,000 held-out images;
- fashion-mnist: the first 2,557 official Fashion-MNIST training images,
  split at random (seed 0) into 2,000 train and 557 held-out images.

Each part is a gzip IDX pair named <dataset>-<train|test>-<images|labels>-idx?-ubyte.gz.
The output is deterministic: rerunning the script reproduces the files byte for byte.

Usage (with cnnext importable, e.g. after `pip install --no-build-isolation -e .`):
    python tools/make_embedded_data.py [SOURCE_DIR] [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cnnext.data.datasets import EMBEDDED_SOURCES, embedded_split
from cnnext.data.idx import read_images, read_labels, write_idx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "cnnext" / "data" / "embedded"

def split_dataset(name: str, source: Path, out: Path, seed: int = 0) -> None:
    """Write the train / held-out IDX pairs of dataset ``name`` into ``out``."""
    prefix, n_test = EMBEDDED_SOURCES[name]
    images = read_images(source / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_labels(source / f"{prefix}-labels-idx1-ubyte.gz")
    parts = dict(zip(("train", "test"), embedded_split(len(images), n_test, seed)))
    for split, index in parts.items():
        write_idx(out / f"{name}-{split}-images-idx3-ubyte.gz", images[index])
        write_idx(out / f"{name}-{split}-labels-idx1-ubyte.gz", labels[index])
        print(f"{name} {split}: {len(index)} images, class counts {np.bincount(labels[index], minlength=10).tolist()}")


def main(argv: list[str]) -> None:
    source = Path(argv[0]) if argv else DEFAULT_SOURCE
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    for name in EMBEDDED_SOURCES:
        split_dataset(name, source, out)
    total = sum(f.stat().st_size for f in out.glob("*.gz"))
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1:])
