"""Datasets: MNIST-style IDX files and small seeded synthetic problems.

Needs only NumPy and the standard library.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["load_idx", "load_mnist", "make_classification", "make_spiral"]

# IDX element types: type byte -> big-endian NumPy dtype.
_IDX_DTYPES = {
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


def load_idx(path: str | os.PathLike) -> np.ndarray:
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
            f"{path}: expected an IDX magic number starting with bytes 00 00; "
            f"found {zero0:02x} {zero1:02x}"
        )
    if type_code not in _IDX_DTYPES:
        valid = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise ValueError(
            f"{path}: expected an IDX type byte among {valid}; found 0x{type_code:02X}"
        )
    if ndim == 0:
        raise ValueError(f"{path}: expected at least 1 dimension; found 0")

    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(
            f"{path}: expected a {header_size}-byte header for {ndim} dimensions; "
            f"found {len(raw)} bytes"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # Python int: no overflow
    found = len(raw) - header_size
    if found != expected:
        raise ValueError(
            f"{path}: header declares shape {shape} of {dtype.name}, i.e. {expected} data bytes; "
            f"found {found}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    # astype copies: the result is writable and in native byte order.
    return data.astype(dtype.newbyteorder("="))


def _find_idx_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"neither {stem}.gz nor {stem} found in {folder}")


def load_mnist(
    name: str = "mnist",
    split: str = "train",
    path: str | os.PathLike | None = None,
    *,
    dtype="float32",
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST from the original IDX files.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}, default="mnist"
    split : {"train", "test"}, default="train"
        60,000 training or 10,000 test images.
    path : str or path-like, optional
        The folder holding the four files ``train-images-idx3-ubyte.gz``,
        ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
        ``t10k-labels-idx1-ubyte.gz`` (gzip-compressed or not). Defaults to
        ``$FASTMLP_DATA/<name>``.
    dtype : dtype, default="float32"
        The dtype of ``X``.
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
        raise ValueError(
            f"split must be one of {', '.join(map(repr, MNIST_SPLITS))}; got {split!r}"
        )
    dtype = np.dtype(dtype)
    if normalize and dtype.kind != "f":
        raise ValueError(f"normalize=True needs a floating dtype; got dtype {dtype}")
    if path is None:
        root = os.environ.get("FASTMLP_DATA")
        if not root:
            raise FileNotFoundError(
                f"no folder given for {name!r}: pass path=<folder with the IDX files> "
                "or set the environment variable FASTMLP_DATA to the folder that holds "
                f"'{name}/'"
            )
        path = Path(root) / name
    folder = Path(path)

    images_stem, labels_stem = _MNIST_FILES[split]
    images_file = _find_idx_file(folder, images_stem)
    labels_file = _find_idx_file(folder, labels_stem)
    images = load_idx(images_file)
    labels = load_idx(labels_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{images_file}: expected images of shape (n, 28, 28); found {images.shape}"
        )
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"{labels_file}: expected {images.shape[0]} labels to match {images_file}; "
            f"found shape {labels.shape}"
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
    dtype="float64",
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


def make_classification(
    n_samples: int = 1000,
    n_features: int = 20,
    n_classes: int = 10,
    seed: int | None = 0,
    dtype="float64",
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
