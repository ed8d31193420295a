"""Reader and writer for the IDX file format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim``
big-endian uint32 dimension sizes, then the array data, big-endian, in C
order. Files may be gzip-compressed; the reader recognises gzip by its
content, not by the file name.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IdxError", "read_idx", "read_images", "read_labels", "write_idx"]

# IDX type code -> numpy dtype (big-endian where it matters).
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxError(ValueError):
    """A file is not a valid IDX file (bad magic, truncated, corrupt, wrong shape)."""


def _read_bytes(path: Path) -> bytes:
    """Return the decompressed content of ``path`` (gzip or raw).

    Raises IdxError naming the file when the gzip stream is truncated or
    corrupt; FileNotFoundError when the file does not exist.
    """
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as e:
        raise IdxError(f"{path}: truncated gzip stream ({e})") from e
    except (gzip.BadGzipFile, zlib.error) as e:
        raise IdxError(f"{path}: corrupt gzip stream ({e})") from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a numpy array.

    Returns an array of the file's shape and element type (uint8 for MNIST),
    in native byte order. Raises IdxError, with the file name in the message,
    when the magic number or type code is invalid, when the header or the
    data is shorter than the header promises, or when bytes are left over.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IdxError(f"{path}: truncated IDX header ({len(data)} bytes)")
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in _DTYPES:
        raise IdxError(f"{path}: bad IDX magic number 0x{data[:4].hex()}")
    if ndim == 0:
        raise IdxError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxError(f"{path}: truncated IDX header ({len(data)} of {header_len} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual < expected:
        raise IdxError(
            f"{path}: truncated IDX data: header shape {shape} needs {expected} bytes, "
            f"file has {actual}"
        )
    if actual > expected:
        raise IdxError(
            f"{path}: {actual - expected} unexpected trailing bytes after IDX data of shape {shape}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_images(path: str | os.PathLike, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """Read an IDX image file: a uint8 array of shape (N, H, W) with (H, W) == size.

    Raises IdxError naming the file for anything else.
    """
    array = read_idx(path)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[1:] != tuple(size):
        raise IdxError(
            f"{path}: expected uint8 images of shape (N, {size[0]}, {size[1]}), "
            f"got {array.dtype} {array.shape}"
        )
    return array


def read_labels(path: str | os.PathLike, num_classes: int = 10) -> np.ndarray:
    """Read an IDX label file: a uint8 array of shape (N,), every value < num_classes.

    Raises IdxError naming the file for anything else.
    """
    array = read_idx(path)
    if array.dtype != np.uint8 or array.ndim != 1:
        raise IdxError(f"{path}: expected uint8 labels of shape (N,), got {array.dtype} {array.shape}")
    if array.size and int(array.max()) >= num_classes:
        raise IdxError(f"{path}: label {int(array.max())} out of range [0, {num_classes})")
    return array


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed (level 9, mtime 0) if ``path`` ends in .gz.

    The output is byte-for-byte reproducible. Raises ValueError for an
    element type IDX cannot store or a 0-d array.
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes or array.ndim == 0:
        raise ValueError(f"cannot store a {array.ndim}-d {array.dtype} array in IDX")
    header = bytes([0, 0, codes[native], array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    content = header + array.astype(_DTYPES[codes[native]], copy=False).tobytes(order="C")
    path = Path(path)
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0
        ) as out:
            out.write(content)
    else:
        path.write_bytes(content)
