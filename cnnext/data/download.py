"""Download the full MNIST / Fashion-MNIST IDX files from their public mirrors.

Every file is checked against its published md5 and written atomically: it
is streamed into a temporary file next to its destination and renamed into
place only when complete and verified, so an interrupted or corrupt
download never leaves a partial file under the final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DownloadError", "Resource", "RESOURCES", "MIRRORS", "download_file", "download_dataset", "md5sum"]


@dataclass(frozen=True)
class Resource:
    """One file of a dataset: its file name on the mirrors and its md5."""

    filename: str
    md5: str


# The four official files of each dataset and their published md5 sums.
RESOURCES: dict[str, tuple[Resource, ...]] = {
    "mnist": (
        Resource("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        Resource("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        Resource("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        Resource("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
    "fashion-mnist": (
        Resource("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        Resource("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        Resource("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        Resource("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
}

# Known public mirrors, tried in order (base URLs ending in "/").
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

_CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A file could not be downloaded from any mirror, or did not verify."""


def md5sum(path: str | os.PathLike) -> str:
    """Return the hex md5 digest of the file at ``path``."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: str | os.PathLike, md5: str, *, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` and verify its md5; return ``dest`` as a Path.

    The data goes to a temporary file in dest's directory, renamed onto
    ``dest`` only once the byte count matches the server's Content-Length
    (when sent) and the md5 matches. On any failure the temporary file is
    removed, ``dest`` is left untouched, and DownloadError is raised with
    the URL and the reason (unreachable host, HTTP error, connection dropped,
    checksum mismatch).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        received = 0
        request = urllib.request.Request(url, headers={"User-Agent": "cnnext-data/1"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        if length is not None and received != int(length):
            raise DownloadError(f"{url}: connection closed after {received} of {length} bytes")
        if digest.hexdigest() != md5:
            raise DownloadError(f"{url}: md5 mismatch (got {digest.hexdigest()}, expected {md5})")
        os.replace(tmp, dest)
        return dest
    except DownloadError:
        raise
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise DownloadError(f"{url}: cannot reach server ({e.reason}); are you offline?") from e
    except (OSError, ValueError, http.client.HTTPException) as e:  # reset, IncompleteRead, timeout, bad URL
        raise DownloadError(f"{url}: download failed ({type(e).__name__}: {e})") from e
    finally:
        tmp.unlink(missing_ok=True)


def download_dataset(
    name: str,
    directory: str | os.PathLike,
    *,
    mirrors: tuple[str, ...] | None = None,
    resources: tuple[Resource, ...] | None = None,
    timeout: float = 30.0,
) -> list[Path]:
    """Make sure every file of dataset ``name`` is in ``directory``, downloading what is missing.

    A file already there with the right md5 is kept; otherwise each mirror
    is tried in turn. ``mirrors`` and ``resources`` default to the known
    ones for ``name`` ("mnist" or "fashion-mnist"). Returns the paths of
    all files. Raises KeyError for an unknown dataset name, and
    DownloadError listing every mirror's failure when a file cannot be
    fetched from any of them (for example with no internet).
    """
    mirrors = MIRRORS[name] if mirrors is None else mirrors
    resources = RESOURCES[name] if resources is None else resources
    directory = Path(directory)
    paths = []
    for resource in resources:
        dest = directory / resource.filename
        if not (dest.is_file() and md5sum(dest) == resource.md5):
            failures = []
            for base in mirrors:
                try:
                    download_file(base + resource.filename, dest, resource.md5, timeout=timeout)
                    break
                except DownloadError as e:
                    failures.append(str(e))
            else:
                raise DownloadError(
                    f"could not download {name} file {resource.filename} into {directory}:\n  "
                    + "\n  ".join(failures)
                )
        paths.append(dest)
    return paths
