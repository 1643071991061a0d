"""Tests of fastmlp.datasets: IDX reading (made-up and real files) and synthetic data."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import re
import shutil
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from fastmlp import datasets

TYPE_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX, written out field by field from the format's description."""
    header = bytes([0, 0, TYPE_CODES[array.dtype.type], array.ndim])
    header += b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, compress: bool) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# --------------------------------------------------------------------------- load_idx


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", list(TYPE_CODES))
def test_load_idx_round_trip(tmp_path, rng, dtype, compress):
    array = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    loaded = datasets.load_idx(write(tmp_path / "a.idx", idx_bytes(array), compress))
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    assert loaded.flags.writeable
    np.testing.assert_array_equal(loaded, array)


def test_load_idx_reads_mnist_style_labels(tmp_path):
    # The header of a label file: magic 0x00000801, then the count, big-endian.
    data = bytes.fromhex("00000801 00000003") + bytes([7, 0, 9])
    labels = datasets.load_idx(write(tmp_path / "labels", data, compress=True))
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, [7, 0, 9])


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "header of at least 4 bytes"),
        (bytes.fromhex("000008"), "header of at least 4 bytes"),
        (bytes.fromhex("01000801 00000001 07"), "starting with bytes 00 00; found 01 00"),
        (bytes.fromhex("00000701 00000001 07"), "type byte .* found 0x07"),
        (bytes.fromhex("00000800"), "at least 1 dimension"),
        (bytes.fromhex("00000803 0000000a 0000001c"), "16-byte header"),
        (bytes.fromhex("00000801 00000003 0709"), r"3 data bytes; found 2"),
        (bytes.fromhex("00000801 00000003 07090102"), r"3 data bytes; found 4"),
        (bytes.fromhex("00000d01 00000002 00000000 0000"), r"8 data bytes; found 6"),
    ],
    ids=["empty", "short-magic", "magic", "type", "ndim-0", "short-dims", "short", "long", "f4"],
)
def test_load_idx_rejects_malformed_files(tmp_path, data, message, compress):
    path = write(tmp_path / "bad.idx", data, compress)
    with pytest.raises(ValueError, match=message) as excinfo:
        datasets.load_idx(path)
    assert str(path) in str(excinfo.value)


def test_load_idx_rejects_truncated_gzip(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    path = tmp_path / "truncated.idx.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        datasets.load_idx(path)


@pytest.mark.parametrize("shape", [(60000, 28, 28), (2**32 - 1, 2**32 - 1, 2**32 - 1)], ids=["mnist", "2^96"])
def test_load_idx_checks_a_huge_declared_shape_before_allocating(tmp_path, shape):
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
    path = write(tmp_path / "huge.idx", header + bytes(100), compress=True)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"data bytes; found 100"):
            datasets.load_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"load_idx allocated {peak} bytes for a 100-byte file"


# --------------------------------------------------------------------------- load_mnist


@pytest.fixture
def fake_mnist(tmp_path, rng) -> tuple[Path, dict]:
    """A folder ``mnist/`` with MNIST's four file names holding 5 train and 3 test images."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    arrays = {}
    for split, prefix, n, compress in (("train", "train", 5, True), ("test", "t10k", 3, False)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if compress else ""  # both spellings are accepted
        write(folder / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images), compress)
        write(folder / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels), compress)
        arrays[split] = images, labels
    return folder, arrays


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_mnist_from_a_folder(fake_mnist, split):
    folder, arrays = fake_mnist
    images, labels = arrays[split]
    X, y = datasets.load_mnist("mnist", split, folder)
    assert X.dtype == np.float32 and X.shape == (len(labels), 784)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(X, images.reshape(len(labels), 784) / 255, rtol=1e-7)

    X_raw, _ = datasets.load_mnist("mnist", split, folder, dtype=np.uint8, normalize=False)
    np.testing.assert_array_equal(X_raw, images.reshape(len(labels), 784))
    X64, _ = datasets.load_mnist("mnist", split, folder, dtype="float64")
    assert X64.dtype == np.float64


def test_load_mnist_uses_fastmlp_data(fake_mnist, monkeypatch):
    folder, arrays = fake_mnist
    monkeypatch.setenv("FASTMLP_DATA", str(folder.parent))
    _, y = datasets.load_mnist("mnist", "test")
    np.testing.assert_array_equal(y, arrays["test"][1])
    # Each name has its own subfolder.
    with pytest.raises(FileNotFoundError, match="fashion-mnist"):
        datasets.load_mnist("fashion-mnist", "test")
    shutil.copytree(folder, folder.parent / "fashion-mnist")
    _, y = datasets.load_mnist("fashion-mnist", "test")
    np.testing.assert_array_equal(y, arrays["test"][1])


def test_load_mnist_without_files_says_where_it_looked_and_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTMLP_DATA", raising=False)
    monkeypatch.setattr(datasets.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert datasets.data_home() == tmp_path / "cache" / "fastmlp"
    with pytest.raises(
        FileNotFoundError, match=re.escape(str(tmp_path / "cache" / "fastmlp" / "mnist")) + r".*download=True"
    ):
        datasets.load_mnist("mnist", "train")


# --------------------------------------------------------------------------- download


def test_published_checksums_are_those_of_the_shared_copies(data_dir):
    for name, files in datasets.MNIST_MD5.items():
        for file, md5 in files.items():
            assert datasets._md5(data_dir / name / file) == md5, f"{name}/{file}"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror folder; a file named in `truncate` is announced whole but cut in half."""

    truncate: frozenset = frozenset()
    requests: list

    def do_GET(self):  # http.server's name
        self.requests.append(self.path)
        if self.path.lstrip("/") in self.truncate:
            body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, data_dir, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving copies of MNIST's test files as <base>/mnist/<file>,
    set as $FASTMLP_DATA_MIRROR; yields (root folder, handler class). Stops when the test ends."""
    root = tmp_path / "mirror"
    (root / "mnist").mkdir(parents=True)
    for file in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(data_dir / "mnist" / file, root / "mnist" / file)
    handler = type("Handler", (_Handler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("FASTMLP_DATA_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setattr(datasets, "_DOWNLOAD_TIMEOUT", 10.0)
    try:
        yield root, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_fetches_verifies_and_caches(mirror, tmp_path, monkeypatch, data_dir):
    _, handler = mirror
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "cache"))
    X, y = datasets.load_mnist("mnist", "test", download=True)
    folder = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    X_ref, y_ref = datasets.load_mnist("mnist", "test", data_dir / "mnist")
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert sorted(handler.requests) == ["/mnist/t10k-images-idx3-ubyte.gz", "/mnist/t10k-labels-idx1-ubyte.gz"]
    datasets.load_mnist("mnist", "test", download=True)  # cached: nothing fetched again
    assert len(handler.requests) == 2
    umask = os.umask(0)
    os.umask(umask)
    assert all((p.stat().st_mode & 0o777) == 0o666 & ~umask for p in folder.iterdir())  # not mkstemp's 0600


def test_a_file_url_mirror_works(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("FASTMLP_DATA_MIRROR", data_dir.as_uri())
    _, y = datasets.load_mnist("fashion-mnist", "test", tmp_path / "fm", download=True)
    _, y_ref = datasets.load_mnist("fashion-mnist", "test", data_dir / "fashion-mnist")
    np.testing.assert_array_equal(y, y_ref)


def _assert_download_fails(folder, match, kept=()):
    """The download fails with `match`; only the files in `kept` (verified ones) are left behind:
    nothing under the failed file's name, no temporary file."""
    with pytest.raises(OSError, match=match):
        datasets.load_mnist("mnist", "test", folder, download=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)


def test_a_corrupt_download_is_rejected_and_not_kept(mirror, tmp_path):
    root, _ = mirror
    images = root / "mnist" / "t10k-images-idx3-ubyte.gz"
    corrupt = bytearray(images.read_bytes())
    corrupt[1000] ^= 0xFF
    images.write_bytes(bytes(corrupt))
    _assert_download_fails(
        tmp_path / "out",
        r"t10k-images-idx3-ubyte.gz: MD5 [0-9a-f]{32} differs from the "
        r"published 9fb629c4189551a2d022fa330f9573f3",
    )


def test_a_truncated_download_is_rejected_and_not_kept(mirror, tmp_path):
    root, handler = mirror
    handler.truncate = frozenset({"mnist/t10k-images-idx3-ubyte.gz"})
    size = (root / "mnist" / "t10k-images-idx3-ubyte.gz").stat().st_size
    _assert_download_fails(tmp_path / "out", rf"download truncated: got {size // 2} of {size} bytes")


def test_a_missing_file_on_the_mirror_says_what_to_do(mirror, tmp_path):
    root, _ = mirror
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    _assert_download_fails(
        tmp_path / "out",
        r"(?s)could not download t10k-labels-idx1-ubyte.gz of 'mnist'.*"
        r"404.*FASTMLP_DATA_MIRROR",
        kept=["t10k-images-idx3-ubyte.gz"],
    )


def test_load_mnist_rejects_bad_arguments(fake_mnist, tmp_path):
    folder, _ = fake_mnist
    with pytest.raises(ValueError, match="name must be one of 'mnist', 'fashion-mnist'; got 'cifar'"):
        datasets.load_mnist("cifar", "train", folder)
    with pytest.raises(ValueError, match="split must be one of 'train', 'test'; got 'valid'"):
        datasets.load_mnist("mnist", "valid", folder)
    with pytest.raises(ValueError, match="floating dtype"):
        datasets.load_mnist("mnist", "train", folder, dtype=np.uint8)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        datasets.load_mnist("mnist", "train", tmp_path / "nowhere")


def test_load_mnist_rejects_mismatched_files(fake_mnist):
    folder, _ = fake_mnist
    write(folder / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(4, np.uint8)), compress=False)
    with pytest.raises(ValueError, match="expected 3 labels"):
        datasets.load_mnist("mnist", "test", folder)
    write(folder / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((4, 28, 27), np.uint8)), False)
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 28, 28\)"):
        datasets.load_mnist("mnist", "test", folder)


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_mnist_train(data_dir):
    X, y = datasets.load_mnist("mnist", "train", data_dir / "mnist")
    assert X.shape == (60000, 784) and X.dtype == np.float32
    assert X.min() == 0 and X.max() == 1
    counts = np.bincount(y, minlength=10)
    np.testing.assert_array_equal(counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])


@pytest.mark.slow
def test_real_mnist_test(data_dir):
    X, y = datasets.load_mnist("mnist", "test", data_dir / "mnist")
    assert X.shape == (10000, 784)
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


@pytest.mark.slow
def test_real_fashion_mnist_test(data_dir):
    X, y = datasets.load_mnist("fashion-mnist", "test", data_dir / "fashion-mnist")
    assert X.shape == (10000, 784)
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [1000] * 10)


# --------------------------------------------------------------------------- synthetic data


@pytest.mark.parametrize("n_samples, n_classes", [(1000, 2), (301, 3)])
def test_make_spiral(n_samples, n_classes):
    X, y = datasets.make_spiral(n_samples, n_classes, noise=0.2, seed=1)
    assert X.shape == (n_samples, 2) and X.dtype == np.float64 and y.dtype == np.int64
    counts = np.bincount(y)
    assert len(counts) == n_classes and counts.max() - counts.min() <= 1
    assert np.all(np.linalg.norm(X, axis=1) <= 1 + 1e-12)
    X2, y2 = datasets.make_spiral(n_samples, n_classes, noise=0.2, seed=1)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(X, datasets.make_spiral(n_samples, n_classes, seed=2)[0])
    assert datasets.make_spiral(10, 2, dtype=np.float32)[0].dtype == np.float32


def test_make_spiral_arms_interleave():
    # Without noise each arm is its own curve: a point's angle, minus the 3 pi r winding,
    # is its class's offset 2 pi c / n_classes.
    X, y = datasets.make_spiral(300, 3, noise=0.0, seed=0)
    r = np.linalg.norm(X, axis=1)
    keep = r > 0
    offset = np.arctan2(X[keep, 1], X[keep, 0]) - 3 * np.pi * r[keep]
    np.testing.assert_allclose(np.cos(offset), np.cos(2 * np.pi * y[keep] / 3), atol=1e-9)
    np.testing.assert_allclose(np.sin(offset), np.sin(2 * np.pi * y[keep] / 3), atol=1e-9)
    # ... and each arm turns all the way round, so no line separates the classes.
    for c in range(3):
        angles = np.arctan2(X[(y == c) & keep, 1], X[(y == c) & keep, 0])
        assert np.ptp(angles) > 6


def test_make_blobs_classification():
    X, y = datasets.make_blobs_classification(1000, 20, 10, seed=0, dtype="float32", class_sep=3.0)
    assert X.shape == (1000, 20) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [100] * 10)
    X2, y2 = datasets.make_blobs_classification(1000, 20, 10, seed=0, dtype="float32", class_sep=3.0)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    # Learnable: the nearest class mean of the first half classifies the second half.
    means = np.stack([X[:500][y[:500] == c].mean(axis=0) for c in range(10)])
    distances = ((X[500:, None, :] - means[None]) ** 2).sum(axis=2)
    assert np.mean(distances.argmin(axis=1) == y[500:]) > 0.9


def test_make_classification_is_a_deprecated_alias():
    with pytest.warns(FutureWarning, match="make_blobs_classification"):
        X, y = datasets.make_classification(50, 3, 2, seed=1)
    X2, y2 = datasets.make_blobs_classification(50, 3, 2, seed=1)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)


def test_synthetic_data_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_samples"):
        datasets.make_spiral(2, 3)
    with pytest.raises(ValueError, match="n_classes"):
        datasets.make_blobs_classification(10, 2, 0)
    with pytest.raises(ValueError, match="n_features"):
        datasets.make_blobs_classification(10, 0, 2)
