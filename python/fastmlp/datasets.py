"""Datasets: MNIST and Fashion-MNIST (downloaded on request, checksums verified),
IDX files, and small seeded synthetic problems.

Needs only NumPy and the standard library.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import sys
import tempfile
import urllib.request
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["data_home", "load_idx", "load_mnist", "make_blobs_classification", "make_spiral"]

# IDX element types: type byte -> big-endian NumPy dtype.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"

MNIST_NAMES = ("mnist", "fashion-mnist")
MNIST_SPLITS = ("train", "test")
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Where each data set is published, tried in order, and the MD5 of each file as
# its publishers list it. MNIST's home page (yann.lecun.com) no longer serves the
# files reliably; the two mirrors below are the ones TensorFlow and PyTorch use.
MNIST_URLS = {
    "mnist": ("https://storage.googleapis.com/cvdf-datasets/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
MNIST_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
# The published size in bytes of each file: a download stops there (a server that sends more,
# or without end, is refused before it fills the disk).
MNIST_SIZES = {
    "mnist": {
        "train-images-idx3-ubyte.gz": 9912422,
        "train-labels-idx1-ubyte.gz": 28881,
        "t10k-images-idx3-ubyte.gz": 1648877,
        "t10k-labels-idx1-ubyte.gz": 4542,
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": 26421880,
        "train-labels-idx1-ubyte.gz": 29515,
        "t10k-images-idx3-ubyte.gz": 4422102,
        "t10k-labels-idx1-ubyte.gz": 5148,
    },
}
# What a failed download raises: URLError, HTTPError and timeouts are OSErrors; a connection cut
# short (IncompleteRead), a server that does not speak HTTP (BadStatusLine) are HTTPExceptions;
# a malformed URL is a ValueError.
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)
_DOWNLOAD_TIMEOUT = 60.0  # seconds without a byte before a download is given up


def data_home() -> Path:
    """The folder that holds ``mnist/`` and ``fashion-mnist/``.

    ``$FASTMLP_DATA`` if set, else the platform's user cache folder:
    ``$XDG_CACHE_HOME/fastmlp`` (default ``~/.cache/fastmlp``) on Linux,
    ``~/Library/Caches/fastmlp`` on macOS, ``%LOCALAPPDATA%\\fastmlp\\Cache``
    on Windows.
    """
    root = os.environ.get("FASTMLP_DATA")
    if root:
        return Path(root)
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "fastmlp" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "fastmlp"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastmlp"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, target: Path, md5: str, published: int) -> None:
    """Downloads url to target: into a temporary file beside it, checked (length, MD5), then
    renamed, so that target is either absent or complete and verified. At most `published`
    bytes are read: a longer (or endless) answer is refused there."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest, size = hashlib.md5(usedforsecurity=False), 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and (not declared.isdigit() or int(declared) != published):
                raise OSError(
                    f"{url}: the server announces {declared} bytes, the published size is {published}; "
                    "nothing was saved"
                )
            # one byte more than published: enough to tell an overlong answer, never more
            while block := response.read(min(1 << 20, published + 1 - size)):
                out.write(block)
                digest.update(block)
                size += len(block)
                if size > published:
                    raise OSError(
                        f"{url}: the server sends more than the published {published} bytes; nothing was saved"
                    )
        if declared is not None and size != int(declared):
            raise OSError(f"{url}: download truncated: got {size} of {declared} bytes; nothing was saved")
        if digest.hexdigest() != md5:
            raise OSError(
                f"{url}: MD5 {digest.hexdigest()} differs from the published {md5} "
                "(a corrupt or different file); nothing was saved"
            )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would keep a shared cache from others
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _download(name: str, files: tuple[str, ...], folder: Path) -> None:
    """Fetches the missing ones of `files` into folder, from $FASTMLP_DATA_MIRROR/<name>/ when
    that is set, else from the published locations (the next one when one fails)."""
    mirror = os.environ.get("FASTMLP_DATA_MIRROR")
    bases = (mirror.rstrip("/") + f"/{name}/",) if mirror else MNIST_URLS[name]
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        target = folder / file
        if target.is_file():
            continue
        errors = []
        for base in bases:
            url = base + file
            print(f"fastmlp: downloading {url} to {folder}", file=sys.stderr)
            try:
                _fetch(url, target, MNIST_MD5[name][file], MNIST_SIZES[name][file])
                break
            except _NETWORK_ERRORS as exc:  # the next source, then one OSError saying what to do
                text = str(exc) if str(exc).startswith(url) else f"{url}: {type(exc).__name__}: {exc}"
                errors.append(text)
        else:
            raise OSError(
                f"could not download {file} of {name!r}:\n  "
                + "\n  ".join(errors)
                + "\nSet FASTMLP_DATA_MIRROR to a base URL serving <name>/<file>, or put the files in "
                f"{folder} yourself"
            )


def load_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the format of MNIST), gzip-compressed or plain.

    The layout is: two zero bytes, a type byte, a byte ``ndim``, then
    ``ndim`` big-endian uint32 sizes, then the elements in row-major order,
    big-endian. Type bytes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64. A file starting with the gzip magic bytes
    ``1f 8b`` is decompressed first.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    array : ndarray
        Of the declared shape, in the native byte order of the element type.

    Raises
    ------
    ValueError
        If the file is not a well-formed IDX file: a corrupt gzip stream, a
        bad magic number, an unknown type, a short header, or a data length
        that differs from the one the header declares. The declared shape is
        checked against the data actually read before any array is made.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: not a valid gzip file ({exc})") from exc

    if len(raw) < 4:
        raise ValueError(f"{path}: expected an IDX header of at least 4 bytes; found {len(raw)}")
    zero0, zero1, type_code, ndim = raw[:4]
    if zero0 != 0 or zero1 != 0:
        raise ValueError(
            f"{path}: expected an IDX magic number starting with bytes 00 00; found {zero0:02x} {zero1:02x}"
        )
    if type_code not in _IDX_DTYPES:
        valid = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise ValueError(f"{path}: expected an IDX type byte among {valid}; found 0x{type_code:02X}")
    if ndim == 0:
        raise ValueError(f"{path}: expected at least 1 dimension; found 0")

    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: expected a {header_size}-byte header for {ndim} dimensions; found {len(raw)} bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # Python int: no overflow
    found = len(raw) - header_size
    if found != expected:
        raise ValueError(
            f"{path}: header declares shape {shape} of {dtype.name}, i.e. {expected} data bytes; found {found}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    # astype copies: the result is writable and in native byte order.
    return data.astype(dtype.newbyteorder("="))


def _find_idx_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"neither {stem}.gz nor {stem} found in {folder}; load_mnist(..., download=True) fetches them"
    )


def load_mnist(
    name: str = "mnist",
    split: str = "train",
    path: str | os.PathLike[str] | None = None,
    download: bool = False,
    *,
    dtype: DTypeLike = "float32",
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST from the original IDX files, downloading them if asked.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}, default="mnist"
    split : {"train", "test"}, default="train"
        60,000 training or 10,000 test images.
    path : str or path-like, optional
        The folder holding the four files ``train-images-idx3-ubyte.gz``,
        ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
        ``t10k-labels-idx1-ubyte.gz`` (gzip-compressed or not). Defaults to
        ``data_home()/<name>``: ``$FASTMLP_DATA/<name>``, else the user cache
        folder (``~/.cache/fastmlp/<name>`` on Linux).
    download : bool, default=False
        Fetch the split's two files when they are missing: from
        ``$FASTMLP_DATA_MIRROR/<name>/<file>`` when that base URL is set (a
        proxy, or a local copy laid out as ``mnist/``, ``fashion-mnist/``),
        else from the published locations (:data:`MNIST_URLS`). Each file is
        written under a temporary name, its published MD5
        (:data:`MNIST_MD5`) checked, and only then renamed: a truncated or
        corrupt download raises ``OSError`` and leaves nothing behind.
    dtype : dtype, default="float32"
        The dtype of ``X``: a floating dtype, or (``normalize=False``) any integer or
        floating dtype that holds 0..255 exactly (``int8`` and ``bool`` are refused).
    normalize : bool, default=True
        Scale pixels from 0..255 to ``[0, 1]`` (``X = pixels / 255``); needs
        a floating ``dtype``.

    Returns
    -------
    X : ndarray of shape (n, 784)
        One flattened 28x28 image per row.
    y : ndarray of int64 of shape (n,)
        Labels 0..9.
    """
    if name not in MNIST_NAMES:
        raise ValueError(f"name must be one of {', '.join(map(repr, MNIST_NAMES))}; got {name!r}")
    if split not in MNIST_SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, MNIST_SPLITS))}; got {split!r}")
    dtype = np.dtype(dtype)
    if normalize and dtype.kind != "f":
        raise ValueError(f"normalize=True needs a floating dtype; got dtype {dtype}")
    if dtype.kind not in "iuf" or not np.can_cast(np.uint8, dtype):
        raise ValueError(
            f"dtype must be a numeric dtype that holds the pixel values 0..255 (uint8, int16, float32, ...); "
            f"got dtype {dtype}"
        )
    folder = data_home() / name if path is None else Path(path)
    images_stem, labels_stem = _MNIST_FILES[split]
    if download:
        # (an uncompressed copy counts as present)
        _download(
            name, tuple(f"{stem}.gz" for stem in (images_stem, labels_stem) if not (folder / stem).is_file()), folder
        )
    images_file = _find_idx_file(folder, images_stem)
    labels_file = _find_idx_file(folder, labels_stem)
    images = load_idx(images_file)
    labels = load_idx(labels_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_file}: expected images of shape (n, 28, 28); found {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"{labels_file}: expected {images.shape[0]} labels to match {images_file}; found shape {labels.shape}"
        )

    X = images.reshape(images.shape[0], -1).astype(dtype)
    if normalize:
        X /= 255
    return X, labels.astype(np.int64)


def _balanced_labels(n_samples: int, n_classes: int) -> np.ndarray:
    """Labels 0..n_classes-1, sorted, whose counts differ by at most one."""
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1; got {n_classes}")
    if n_samples < n_classes:
        raise ValueError(f"n_samples must be at least n_classes={n_classes}; got {n_samples}")
    return np.arange(n_samples, dtype=np.int64) * n_classes // n_samples


def make_spiral(
    n_samples: int = 1000,
    n_classes: int = 2,
    noise: float = 0.2,
    seed: int | None = 0,
    dtype: DTypeLike = "float64",
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved spiral arms, one per class, in the plane.

    A point of class ``c`` at radius ``r`` in ``[0, 1]`` lies at angle
    ``theta = 3 pi r + 2 pi c / n_classes + noise * N(0, 1)``, i.e.
    ``x = r (cos theta, sin theta)``; the radii of each class are evenly
    spaced. Every arm winds one and a half turns, so the classes are not
    linearly separable.

    Parameters
    ----------
    n_samples : int, default=1000
        Split as evenly as possible among the classes.
    n_classes : int, default=2
    noise : float, default=0.2
        Standard deviation of the angular noise, in radians.
    seed : int or None, default=0
        Seed of ``np.random.default_rng``.
    dtype : dtype, default="float64"

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
    y : ndarray of int64 of shape (n_samples,)
        Class indices, in shuffled order.
    """
    rng = np.random.default_rng(seed)
    y = _balanced_labels(n_samples, n_classes)
    r = np.empty(n_samples)
    for c in range(n_classes):
        in_class = y == c
        r[in_class] = np.linspace(0.0, 1.0, np.count_nonzero(in_class))
    theta = 3 * np.pi * r + 2 * np.pi * y / n_classes + noise * rng.standard_normal(n_samples)
    X = r[:, None] * np.column_stack([np.cos(theta), np.sin(theta)])
    perm = rng.permutation(n_samples)
    return X[perm].astype(dtype), y[perm]


def make_blobs_classification(
    n_samples: int = 1000,
    n_features: int = 20,
    n_classes: int = 10,
    seed: int | None = 0,
    dtype: DTypeLike = "float64",
    *,
    class_sep: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: one isotropic normal cluster per class.

    Class centres are drawn once as ``class_sep * N(0, I)`` in
    ``n_features`` dimensions; a sample of class ``c`` is its centre plus
    ``N(0, I)`` noise. Larger ``class_sep`` makes the problem easier.

    Parameters
    ----------
    n_samples : int, default=1000
        Split as evenly as possible among the classes.
    n_features : int, default=20
    n_classes : int, default=10
    seed : int or None, default=0
        Seed of ``np.random.default_rng``.
    dtype : dtype, default="float64"
    class_sep : float, default=1.0

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of int64 of shape (n_samples,)
        Class indices, in shuffled order.
    """
    if n_features < 1:
        raise ValueError(f"n_features must be at least 1; got {n_features}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(_balanced_labels(n_samples, n_classes))
    centres = class_sep * rng.standard_normal((n_classes, n_features))
    X = centres[y] + rng.standard_normal((n_samples, n_features))
    return X.astype(dtype), y


def make_classification(*args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Deprecated: renamed :func:`make_blobs_classification` (same arguments), so as not to
    be mistaken for scikit-learn's ``make_classification``, whose signature differs."""
    warnings.warn(
        "fastmlp.datasets.make_classification is deprecated: it is now make_blobs_classification "
        "(same arguments; scikit-learn's make_classification is a different function)",
        FutureWarning,
        stacklevel=2,
    )
    return make_blobs_classification(*args, **kwargs)
