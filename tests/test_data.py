"""IDX reader, MNIST / Fashion-MNIST datasets, embedded sample and downloader.

The real images these tests read, checksum and serve come from the sample the
package embeds: its two parts joined back in their original order are the
10,000 official MNIST test images (see ``embedded_source``), written here as
gzip IDX files under the official names. Only the tests whose subject is an
official file that the package does not embed (the Fashion-MNIST label files
of the built-in md5 table, the copy of the official t10k files) read
../shared/data, and they skip when it is absent. The downloader is exercised
against HTTP servers on 127.0.0.1; nothing here touches the internet.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnext.data import (
    EMBEDDED_DIR,
    DownloadError,
    FashionMNIST,
    IdxDataset,
    IdxError,
    MNIST,
    download_dataset,
    download_file,
    embedded_source,
    embedded_split,
    load_datasets,
    read_idx,
    read_images,
    read_labels,
    write_idx,
)
from cnnext.data.datasets import EMBEDDED_SOURCES
from cnnext.data.download import MIRRORS, RESOURCES, Resource

SHARED = Path(os.environ.get("CNNEXT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FIRST_T10K_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
T10K_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory) -> Path:
    """A folder with the real MNIST test set (from the embedded sample) as gzip IDX files under
    the official names t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz."""
    folder = tmp_path_factory.mktemp("real")
    images, labels = embedded_source("mnist")
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(scope="module")
def mnist_images(real_dir) -> Path:
    return real_dir / "t10k-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def mnist_labels(real_dir) -> Path:
    return real_dir / "t10k-labels-idx1-ubyte.gz"


@pytest.fixture(scope="module")
def shared_data() -> Path:
    """../shared/data (or $CNNEXT_SHARED_DATA), for the tests whose subject is a file there; skips when absent."""
    if not (SHARED / "mnist-t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the official data files are not in {SHARED} (set CNNEXT_SHARED_DATA to where they are)")
    return SHARED


# ----------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_roundtrip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((7, 5, 3)) * 100).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype).newbyteorder("=") and back.shape == (7, 5, 3)
    np.testing.assert_array_equal(back, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_write_idx_is_reproducible(tmp_path):
    array = np.random.default_rng(2).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_read_real_mnist(mnist_images, mnist_labels):
    images, labels = read_images(mnist_images), read_labels(mnist_labels)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels[:10].tolist() == FIRST_T10K_LABELS
    assert np.bincount(labels).tolist() == T10K_CLASS_COUNTS
    assert abs(images.mean() / 255 - 0.1325) < 5e-4


def test_truncated_gzip_names_file(tmp_path, mnist_images):
    bad = tmp_path / "cut-images-idx3-ubyte.gz"
    raw = mnist_images.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IdxError, match="cut-images-idx3-ubyte.gz.*truncated"):
        read_images(bad)


def test_corrupt_gzip_names_file(tmp_path, mnist_labels):
    raw = bytearray(mnist_labels.read_bytes())
    rng = np.random.default_rng(3)
    for i in rng.choice(np.arange(20, len(raw) - 8), size=50, replace=False):
        raw[i] ^= 0xFF
    bad = tmp_path / "garbled.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(IdxError, match="garbled.gz"):
        read_labels(bad)


def _raw_idx(tmp_path: Path, content: bytes, name: str = "x.idx") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_truncated_raw_data(tmp_path):
    header = bytes([0, 0, 8, 3]) + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    body = np.random.default_rng(4).integers(0, 256, 99 * 784, dtype=np.uint8).tobytes()
    path = _raw_idx(tmp_path, header + body, "short.idx")
    with pytest.raises(IdxError, match=r"short.idx: truncated IDX data.*\(100, 28, 28\) needs 78400 bytes, file has 77616"):
        read_idx(path)


def test_truncated_header(tmp_path):
    with pytest.raises(IdxError, match="h.idx: truncated IDX header"):
        read_idx(_raw_idx(tmp_path, bytes([0, 0, 8, 3]) + (100).to_bytes(4, "big"), "h.idx"))
    with pytest.raises(IdxError, match="e.idx: truncated IDX header"):
        read_idx(_raw_idx(tmp_path, b"\x00\x00", "e.idx"))


def test_trailing_bytes(tmp_path):
    content = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 3, 4])
    with pytest.raises(IdxError, match="1 unexpected trailing bytes"):
        read_idx(_raw_idx(tmp_path, content))


@pytest.mark.parametrize("magic", [b"\x00\x00\x07\x01", b"\x01\x00\x08\x01", b"\x00\x00\x08\x00", b"PK\x03\x04"])
def test_bad_magic(tmp_path, magic):
    with pytest.raises(IdxError, match="m.idx: (bad IDX magic|IDX header declares 0)"):
        read_idx(_raw_idx(tmp_path, magic + bytes(16), "m.idx"))


def test_wrong_kind_of_file(tmp_path, mnist_images, mnist_labels):
    with pytest.raises(IdxError, match="expected uint8 images"):
        read_images(mnist_labels)
    with pytest.raises(IdxError, match="expected uint8 labels"):
        read_labels(mnist_images)
    labels = np.random.default_rng(5).integers(0, 10, 50, dtype=np.uint8)
    labels[17] = 10
    write_idx(tmp_path / "l.gz", labels)
    with pytest.raises(IdxError, match="label 10 out of range"):
        read_labels(tmp_path / "l.gz")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


# ----------------------------------------------------------------------------- datasets


def test_embedded_sample_is_a_real_split():
    """Embedded MNIST = the 10,000 official test images, split 8,000 / 2,000 without overlap;
    embedded Fashion = the first 2,557 official train images, split 2,000 / 557."""
    sizes = {"mnist": (8000, 2000), "fashion-mnist": (2000, 557)}
    total = sum(f.stat().st_size for f in EMBEDDED_DIR.iterdir())
    assert total < 3_000_000
    for name, (n_train, n_test) in sizes.items():
        parts = [read_images(EMBEDDED_DIR / f"{name}-{s}-images-idx3-ubyte.gz") for s in ("train", "test")]
        assert [len(p) for p in parts] == [n_train, n_test]
        keys = [{img.tobytes() for img in p} for p in parts]
        assert not keys[0] & keys[1]


def test_embedded_split_is_a_partition():
    train, held_out = embedded_split(100, 30)
    assert len(held_out) == 30 and np.all(np.diff(train) > 0) and np.all(np.diff(held_out) > 0)
    assert sorted(np.concatenate([train, held_out]).tolist()) == list(range(100))
    assert [a.tolist() for a in embedded_split(100, 30)] == [train.tolist(), held_out.tolist()]
    assert embedded_split(100, 30, seed=1)[1].tolist() != held_out.tolist()


@pytest.mark.parametrize("name, count", [("mnist", 10000), ("fashion-mnist", 2557)])
def test_embedded_source_joins_the_parts(name, count):
    images, labels = embedded_source(name)
    assert images.shape == (count, 28, 28) and images.dtype == np.uint8 and labels.shape == (count,)
    index = dict(zip(("train", "test"), embedded_split(count, EMBEDDED_SOURCES[name][1])))
    for split, rows in index.items():
        part = read_images(EMBEDDED_DIR / f"{name}-{split}-images-idx3-ubyte.gz")
        np.testing.assert_array_equal(images[rows], part)


def test_embedded_matches_shared_data(shared_data):
    """The embedded sample joined back is, image for image and label for label, the official files it was cut from."""
    sources = [("mnist", "mnist-t10k"), ("fashion-mnist", "fashion-mnist-train-first2557")]
    for name, prefix in sources:
        images, labels = embedded_source(name)
        np.testing.assert_array_equal(images, read_images(shared_data / f"{prefix}-images-idx3-ubyte.gz"))
        np.testing.assert_array_equal(labels, read_labels(shared_data / f"{prefix}-labels-idx1-ubyte.gz"))


@pytest.mark.parametrize("cls, sizes, mean, std", [(MNIST, (8000, 2000), 0.1307, 0.3081), (FashionMNIST, (2000, 557), 0.2860, 0.3530)])
def test_embedded_datasets(cls, sizes, mean, std):
    for train, size in zip((True, False), sizes):
        ds = cls(None, train)
        assert len(ds) == size and ds.source == "embedded"
        assert ds.images.dtype == torch.float32 and ds.images.shape == (size, 1, 28, 28)
        assert ds.labels.dtype == torch.int64 and set(ds.labels.tolist()) == set(range(10))
        # normalised as the seeds do: background pixels map to -mean/std, ink to (1-mean)/std
        assert ds.images.min().item() == pytest.approx(-mean / std, abs=1e-5)
        assert ds.images.max().item() == pytest.approx((1 - mean) / std, abs=1e-5)
        assert abs(ds.images.mean().item()) < 0.05 and abs(ds.images.std().item() - 1) < 0.05
        i = int(torch.randint(size, ()))
        image, label = ds[i]
        assert torch.equal(image, ds.images[i]) and label == ds.labels[i].item() and isinstance(label, int)


def _full_root(tmp_path: Path, real_dir: Path, compressed: bool = True) -> Path:
    """A data root whose mnist/ folder holds the official file names (the t10k files for both splits)."""
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            src = real_dir / f"t10k-{kind}-ubyte.gz"
            dest = folder / f"{split}-{kind}-ubyte.gz"
            if compressed:
                shutil.copyfile(src, dest)
            else:
                dest.with_suffix("").write_bytes(gzip.decompress(src.read_bytes()))
    return folder.parent


@pytest.mark.parametrize("compressed", [True, False])
def test_full_data_from_root(tmp_path, real_dir, compressed):
    root = _full_root(tmp_path, real_dir, compressed)
    messages = []
    train, test = load_datasets("mnist", root, log=messages.append)
    assert messages == []
    assert len(train) == len(test) == 10000 and train.source == test.source == "full"
    assert test.labels[:10].tolist() == FIRST_T10K_LABELS


def test_missing_full_data_falls_back_to_embedded(tmp_path):
    messages = []
    train, test = load_datasets("fashion-mnist", tmp_path / "empty", log=messages.append)
    assert (len(train), len(test), train.source) == (2000, 557, "embedded")
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "embedded" in messages[0] and "--download" in messages[0] and str(tmp_path / "empty" / "fashion-mnist") in messages[0]
    with pytest.raises(FileNotFoundError, match="--download"):
        FashionMNIST(tmp_path / "empty")


def test_corrupt_full_data_is_an_error(tmp_path, real_dir):
    root = _full_root(tmp_path, real_dir)
    path = root / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(IdxError, match="train-images-idx3-ubyte.gz"):
        load_datasets("mnist", root, log=lambda m: None)


def test_image_label_count_mismatch(tmp_path):
    rng = np.random.default_rng(6)
    write_idx(tmp_path / "i.gz", rng.integers(0, 256, (30, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "l.gz", rng.integers(0, 10, 29, dtype=np.uint8))
    with pytest.raises(IdxError, match="30 images but .*l.gz has 29 labels"):
        IdxDataset(tmp_path / "i.gz", tmp_path / "l.gz", 0.5, 0.5)


# ----------------------------------------------------------------------------- downloader


class _Server:
    """An HTTP server on 127.0.0.1 in a thread; ``mode`` picks how it answers GETs."""

    def __init__(self, directory: Path, mode: str = "ok"):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                if mode == "drop":  # promise the whole file, send half, hang up
                    body = (directory / self.path.lstrip("/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(real_dir):
    servers = []

    def start(mode: str = "ok", directory: Path = real_dir) -> _Server:
        servers.append(_Server(directory, mode))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def test_download_good_file(tmp_path, serve, mnist_images):
    server = serve()
    dest = tmp_path / "out" / "mnist.gz"
    assert download_file(server.url + mnist_images.name, dest, md5(mnist_images)) == dest
    assert dest.read_bytes() == mnist_images.read_bytes()
    assert _leftovers(dest.parent) == []


def test_download_wrong_checksum_keeps_old_file(tmp_path, serve, mnist_labels):
    server = serve()
    dest = tmp_path / "labels.gz"
    dest.write_bytes(b"previous content")
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download_file(server.url + mnist_labels.name, dest, "0" * 32)
    assert dest.read_bytes() == b"previous content" and _leftovers(tmp_path) == []


def test_download_dropped_connection(tmp_path, serve, mnist_images):
    server = serve("drop")
    dest = tmp_path / "images.gz"
    with pytest.raises(DownloadError, match=f"{mnist_images.name}: (connection closed|download failed)"):
        download_file(server.url + mnist_images.name, dest, md5(mnist_images), timeout=10)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_download_http_error_and_offline(tmp_path, serve):
    server = serve()
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url + "no-such-file.gz", tmp_path / "x.gz", "0" * 32)
    with pytest.raises(DownloadError, match="cannot reach server.*offline"):
        download_file(_closed_port_url() + "x.gz", tmp_path / "x.gz", "0" * 32, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_download_dataset_official_md5s(tmp_path, serve, shared_data):
    """The official Fashion-MNIST label files verify against the built-in md5 table,
    fetched from the second mirror after the first drops the connection."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for split in ("train", "t10k"):
        shutil.copyfile(shared_data / f"fashion-mnist-{split}-labels-idx1-ubyte.gz", mirror / f"{split}-labels-idx1-ubyte.gz")
    bad, good = serve("drop", mirror), serve("ok", mirror)
    labels = tuple(r for r in RESOURCES["fashion-mnist"] if "labels" in r.filename)
    out = tmp_path / "fashion-mnist"
    paths = download_dataset("fashion-mnist", out, mirrors=(bad.url, good.url), resources=labels)
    assert [p.name for p in paths] == ["train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert len(read_labels(paths[0])) == 60000 and len(read_labels(paths[1])) == 10000
    # a second call finds verified files and fetches nothing
    count = len(good.requests)
    download_dataset("fashion-mnist", out, mirrors=(good.url,), resources=labels)
    assert len(good.requests) == count


def test_download_dataset_all_mirrors_fail(tmp_path, serve):
    server = serve()
    offline = _closed_port_url()
    with pytest.raises(DownloadError) as info:
        download_dataset("mnist", tmp_path, mirrors=(offline, server.url), resources=(Resource("missing.gz", "0" * 32),), timeout=5)
    message = str(info.value)
    assert "missing.gz" in message and offline in message and "HTTP 404" in message


def test_load_datasets_download(tmp_path, serve, monkeypatch, mnist_images, mnist_labels):
    """download=True fetches into root/<name>/ and uses the result; a failing
    download falls back to the embedded sample, saying why."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    names = {"train-images-idx3-ubyte.gz": mnist_images, "train-labels-idx1-ubyte.gz": mnist_labels,
             "t10k-images-idx3-ubyte.gz": mnist_images, "t10k-labels-idx1-ubyte.gz": mnist_labels}
    for name, src in names.items():
        shutil.copyfile(src, mirror / name)
    monkeypatch.setitem(RESOURCES, "mnist", tuple(Resource(n, md5(s)) for n, s in names.items()))

    monkeypatch.setitem(MIRRORS, "mnist", (_closed_port_url(),))
    messages = []
    train, _ = load_datasets("mnist", tmp_path / "root", download=True, log=messages.append)
    assert train.source == "embedded" and len(messages) == 2
    assert "cannot reach server" in messages[0] and "could not download MNIST" in messages[1]

    monkeypatch.setitem(MIRRORS, "mnist", (serve("ok", mirror).url,))
    messages.clear()
    train, test = load_datasets("mnist", tmp_path / "root", download=True, log=messages.append)
    assert messages == [] and train.source == "full" and len(train) == len(test) == 10000
    assert sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir()) == sorted(names)
