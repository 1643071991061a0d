r"""Training data larger than memory: rows read from disk batch by batch.

:meth:`fastmlp.Network.train_epoch`, :meth:`fastmlp.Network.prepare_epoch` and the estimators'
``fit`` (also with ``distributed="mpi"``) accept, as X,

- a NumPy memmap (``np.load(path, mmap_mode="r")`` or ``np.memmap``), or a slice of one
  (:func:`fastmlp.distributed.shard` of a memmap is one);
- a list of ``.npy`` paths, the files' rows concatenated in order (:class:`NpyFiles`);
- any :class:`RowSource` (:class:`ArrayRows`, :class:`NpyFiles`, :class:`ParquetRows`: named
  columns of a Parquet data set, through ``pyarrow``).

``solver="lbfgs"`` sums its full-batch objective over chunks of rows (:func:`objective_streamed`),
and :meth:`fastmlp.Network.forward` and the estimators' ``predict``, ``predict_proba`` and
``score`` read such an X in chunks too (:func:`forward_streamed`).

Such an X is never read whole. Each mini-batch's rows, in the epoch's order, are gathered into
one reusable buffer of ``batch_size`` rows and trained on as one step (:func:`run_streamed`): the
same samples in the same order, the same steps, the same loss as the in-memory epoch (tested to
float tolerance). A memmap's rows (and each ``.npy`` file's) are read from the file with
positioned reads (``os.preadv``), not through the mapping, so the process keeps resident the
model and a batch, not the file (the page cache holds that); other arrays are gathered with
``np.take`` and a (shared, not copy-on-write) memmap's mapped pages dropped
(``madvise(MADV_DONTNEED)``) every 64 MiB.
y, the sample weights and the order stay in memory (one row of targets per sample, usually far
narrower than X).

An error while an epoch reads (an ``OSError`` from the file system, a source's own error) ends it
after the batches already taken, as Ctrl-C does; under MPI the other ranks then raise
:class:`fastmlp.distributed.RankFailed`.

A source's values are checked once, when it is made (a streamed pass over the file: NaN or
infinity is a ``ValueError`` naming the row); make the source once and pass it to every epoch
rather than a raw memmap, which is wrapped and checked again on each call.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from .epoch import make_regularization

__all__ = [
    "ArrayRows",
    "NpyFiles",
    "ParquetRows",
    "RowSource",
    "Rows",
    "as_source",
    "forward_streamed",
    "is_out_of_core",
    "objective_streamed",
    "run_streamed",
]

_RELEASE_BYTES = 64 << 20  # file pages mapped, at most, between two releases (64 MiB)
# A page fault on a file mapping maps up to this much of the page cache around the faulting page
# (Linux's fault-around: 64 KiB by default, /sys/kernel/debug/fault_around_bytes): each row
# read at random may add that much to the resident set, not just its own bytes.
_FAULT_AROUND_BYTES = 64 << 10
_SCAN_BYTES = 16 << 20  # rows checked at a time when a source is made


def _check_kind(name: str, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (bool, integer or float), got dtype {dtype}")


class RowSource:
    """Rows of a 2-D data set read on demand: ``shape``, ``dtype``, :meth:`take`, :meth:`release`.

    ``ndim`` is 2 and ``len()`` the number of rows, so a source passes where code asks an array
    its shape and dtype.
    """

    shape: tuple[int, int]
    dtype: np.dtype
    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, index: np.ndarray, out: np.ndarray) -> None:
        """Rows `index` (int64, any order, repeats allowed) into ``out[:len(index)]``, converted to
        out's dtype."""
        raise NotImplementedError

    def __getitem__(self, key: Any) -> RowSource:
        """Rows by a slice or an integer index array: a :class:`Rows` of this source (nothing read)
        — what :func:`fastmlp.distributed.shard` takes a rank's shard with."""
        if isinstance(key, slice):
            index = np.arange(self.shape[0], dtype=np.int64)[key]
        else:
            index = np.asarray(key)
            if index.ndim != 1 or index.dtype.kind not in "iu":
                raise TypeError(f"a source's rows are taken by a slice or a 1-D integer array, got {key!r}")
            index = index.astype(np.int64)
            if index.size and (index.min() < -self.shape[0] or index.max() >= self.shape[0]):
                raise IndexError(f"row index out of range for {self.shape[0]} rows")
            index = np.where(index < 0, index + self.shape[0], index)
        return Rows(self, index)

    def read(self, index: Any, dtype: Any = None) -> np.ndarray:
        """Rows `index` (in ``[0, n)``) as a new in-memory array (of `dtype`, default the source's)."""
        index = np.asarray(index)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise TypeError(f"index must be a 1-D array of row numbers, got {index!r}")
        index = index.astype(np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.shape[0]):
            raise IndexError(f"index must hold row numbers in [0, {self.shape[0]}), got {index.min()}..{index.max()}")
        out = np.empty((index.shape[0], self.shape[1]), dtype=self.dtype if dtype is None else dtype)
        self.take(index, out)
        return out

    def release(self) -> None:
        """Drops the file pages this process has mapped (they stay in the page cache)."""

    def check(self, name: str = "X", dtype: Any = None) -> None:
        """NaN or infinity in any row — in `dtype` when given (a float64 file read by a float32
        network: a value beyond float32's range overflows) —: ValueError naming the row (read
        ~16 MiB at a time, the pages released as it goes)."""
        if self.dtype.kind != "f":
            return
        target = self.dtype if dtype is None else np.dtype(dtype)
        n, d = self.shape
        step = max(1, _SCAN_BYTES // (d * self.dtype.itemsize))
        buf = np.empty((min(step, n), d), dtype=self.dtype)
        resident = _ResidentSet()
        floor = resident.bytes()
        for i in range(0, n, step):
            index = np.arange(i, min(n, i + step), dtype=np.int64)
            part = buf[: index.shape[0]]
            self.take(index, part)
            with np.errstate(over="ignore", invalid="ignore"):
                finite = np.isfinite(part if target == self.dtype else part.astype(target)).all(axis=1)
            if not finite.all():
                bad = int(np.nonzero(~finite)[0][0])
                beyond = "" if target == self.dtype else f" (or a value beyond {target.name}'s range)"
                raise ValueError(f"{name} must be finite, got NaN or infinity{beyond} in row {i + bad}")
            now = resident.bytes()
            if (i // step) % 4 == 3 or (now is not None and floor is not None and now - floor > _RELEASE_BYTES):
                self.release()
        resident.close()
        self.release()


def _release(a: np.ndarray) -> None:
    """MADV_DONTNEED on the shared file mapping under `a` (not a copy-on-write one: that would
    discard the process's changes)."""
    mm = getattr(a, "_mmap", None)
    if isinstance(mm, mmap.mmap) and getattr(a, "mode", "c") in ("r", "r+", "w+") and hasattr(mm, "madvise"):
        with contextlib.suppress(OSError, ValueError):  # closed, or refused: the pages stay, nothing breaks
            mm.madvise(mmap.MADV_DONTNEED)


_IOV_MAX = 512  # buffers per preadv call (the system's limit is at least 1024)


class _FileRows:
    """Rows of a C-ordered 2-D array stored in a file from byte `offset` on, read with positioned
    reads (``os.preadv``): unlike reads through a mapping, no page of the file enters this
    process's resident set (Linux maps a whole 2 MiB folio of the page cache for one row read
    through a mapping: a batch of 200 random rows mapped 300 MiB)."""

    def __init__(self, path: str, offset: int, row_bytes: int) -> None:
        self.path, self.offset, self.row_bytes = path, offset, row_bytes
        self._fd: int | None = None

    def __getstate__(self) -> dict[str, Any]:  # a file descriptor does not pickle: reopened on use
        return {**self.__dict__, "_fd": None}

    def read(self, index: np.ndarray, out: np.ndarray) -> None:
        """Rows `index` into the C-contiguous rows ``out[:len(index)]`` (the file's dtype)."""
        if index.shape[0] == 0:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
            weakref.finalize(self, os.close, self._fd)
        order = np.argsort(index, kind="stable")
        rows = index[order]
        bounds = [0, *(np.flatnonzero(np.diff(rows) != 1) + 1).tolist(), index.shape[0]]
        for a, b in zip(bounds[:-1], bounds[1:]):  # a run of consecutive rows in the file
            dest = order[a:b]
            pos = self.offset + int(rows[a]) * self.row_bytes
            if dest[-1] - dest[0] == b - a - 1 and (b - a == 1 or bool((np.diff(dest) == 1).all())):
                chunks = [[out[int(dest[0]) : int(dest[0]) + b - a]]]  # lands in consecutive rows too
            else:
                views = [out[j] for j in dest.tolist()]
                chunks = [views[i : i + _IOV_MAX] for i in range(0, len(views), _IOV_MAX)]
            for bufs in chunks:
                want = sum(v.nbytes for v in bufs)
                if os.preadv(self._fd, [v.data for v in bufs], pos) != want:  # .data: the rows as a buffer
                    raise OSError(f"{self.path}: short read at byte {pos} (was the file truncated?)")
                pos += want


def _file_rows(X: np.ndarray) -> _FileRows | None:
    """The file under a memmap X whose rows are C-contiguous and shared with the file (modes r, r+,
    w+), as a :class:`_FileRows`; None otherwise (X is then read through its mapping)."""
    mm, path = getattr(X, "_mmap", None), getattr(X, "filename", None)
    if not (isinstance(mm, mmap.mmap) and path and hasattr(os, "preadv")):
        return None
    if getattr(X, "mode", "c") not in ("r", "r+", "w+") or X.strides != (X.shape[1] * X.itemsize, X.itemsize):
        return None
    base = np.frombuffer(mm, dtype=np.uint8)  # the mapping's first byte
    offset = int(getattr(X, "offset", 0))
    start = offset - offset % mmap.ALLOCATIONGRANULARITY  # where np.memmap mapped from
    return _FileRows(str(path), start + (X.ctypes.data - base.ctypes.data), X.shape[1] * X.itemsize)


class ArrayRows(RowSource):
    """A 2-D array read by rows: a NumPy memmap (or a slice of one), or any 2-D ndarray.

    Parameters
    ----------
    X : numpy.ndarray
        ``(n_samples, n_features)``, bool, integer or float; C order, or any strides.
    check : bool
        Check the values once now (a streamed pass: NaN or infinity is a ``ValueError``).
    """

    def __init__(self, X: Any, *, check: bool = True, name: str = "X") -> None:
        if not isinstance(X, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array or memmap, got {type(X).__name__}")
        _check_kind(name, X.dtype)
        if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"{name} must be 2-D (n_samples >= 1, n_features >= 1), got shape {X.shape}")
        self._a = X
        self._file = _file_rows(X)
        self.shape = (int(X.shape[0]), int(X.shape[1]))
        self.dtype = X.dtype
        self._tmp: np.ndarray | None = None
        if check:
            self.check(name)

    def _gather(self, index: np.ndarray, out: np.ndarray) -> None:
        if self._file is not None:
            self._file.read(index, out)
        else:
            np.take(self._a, index, axis=0, out=out)

    def take(self, index: np.ndarray, out: np.ndarray) -> None:
        k = index.shape[0]
        if out.dtype == self.dtype and out[:k].flags.c_contiguous:
            self._gather(index, out[:k])
            return
        if self._tmp is None or self._tmp.shape[0] < k:
            self._tmp = np.empty((k, self.shape[1]), dtype=self.dtype)
        self._gather(index, self._tmp[:k])
        np.copyto(out[:k], self._tmp[:k], casting="unsafe")

    def release(self) -> None:
        _release(self._a)


class NpyFiles(RowSource):
    """``.npy`` files whose rows, concatenated in the order given, are the data set.

    Each file is opened with ``np.load(path, mmap_mode="r")`` (memory-mapped, never read whole);
    they must be 2-D with the same number of columns and the same dtype.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
    check : bool
        Check the values once now (NaN or infinity: ``ValueError`` naming the file and row).
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *, check: bool = True, name: str = "X") -> None:
        if isinstance(paths, (str, os.PathLike)) or not isinstance(paths, Sequence) or not paths:
            raise TypeError(f"{name} must be a non-empty list of .npy paths, got {type(paths).__name__}")
        arrays: list[np.ndarray] = []
        for i, p in enumerate(paths):
            if not isinstance(p, (str, os.PathLike)):
                raise TypeError(f"{name}[{i}] must be a path (str or os.PathLike), got {type(p).__name__}")
            try:
                a = np.load(p, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ValueError(f"{name}[{i}]: cannot read {os.fspath(p)!r} as a .npy file: {e}") from None
            _check_kind(f"{name}[{i}]", a.dtype)
            if a.ndim != 2 or a.shape[1] < 1:
                raise ValueError(f"{name}[{i}] ({os.fspath(p)!r}) must hold a 2-D array, got shape {a.shape}")
            if arrays and (a.shape[1] != arrays[0].shape[1] or a.dtype != arrays[0].dtype):
                raise ValueError(
                    f"{name}[{i}] ({os.fspath(p)!r}) must have {arrays[0].shape[1]} columns of dtype "
                    f"{arrays[0].dtype} like {name}[0], got shape {a.shape} and dtype {a.dtype}"
                )
            arrays.append(a)
        self.paths = [os.fspath(p) for p in paths]
        self._arrays = arrays
        self._parts = [ArrayRows(a, check=False) for a in arrays]
        self._starts = np.cumsum([0] + [a.shape[0] for a in arrays]).astype(np.int64)
        if self._starts[-1] < 1:
            raise ValueError(f"{name}: the files hold no rows")
        self.shape = (int(self._starts[-1]), int(arrays[0].shape[1]))
        self.dtype = arrays[0].dtype
        self._tmp = np.empty((0, self.shape[1]), dtype=self.dtype)
        if check:
            self.check(name)

    def take(self, index: np.ndarray, out: np.ndarray) -> None:
        k = index.shape[0]
        if self._tmp.shape[0] < k:
            self._tmp = np.empty((k, self.shape[1]), dtype=self.dtype)
        file_of = np.searchsorted(self._starts, index, side="right") - 1
        for f in np.unique(file_of):
            where = np.nonzero(file_of == f)[0]
            tmp = self._tmp[: where.shape[0]]
            self._parts[f].take(index[where] - self._starts[f], tmp)
            out[where] = tmp  # converts to out's dtype

    def release(self) -> None:
        for a in self._arrays:
            _release(a)


def _pyarrow() -> tuple[Any, Any, Any]:
    """pyarrow, pyarrow.parquet and pyarrow.dataset, or an ImportError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.dataset
        import pyarrow.parquet
    except ImportError:
        raise ImportError(
            "a Parquet source needs pyarrow: pip install 'fastmlp[parquet]' (or pip install pyarrow)"
        ) from None
    return pyarrow, pyarrow.parquet, pyarrow.dataset


_PARQUET_ROWS = 4096  # rows of a row group decoded at a time


class ParquetRows(RowSource):
    """Columns of a Parquet data set as the rows of X, read one row group at a time (``pyarrow``).

    The data set's rows are those of ``pyarrow.parquet.read_table(path)``: a file's rows in order,
    a directory's files in the order ``pyarrow.dataset`` lists them (sorted by path), a list's
    files in the order given. Only the named `columns` are read, and only from the row groups that
    hold rows asked for; the decoded row groups are kept in a cache of at most `cache_bytes`
    (least recently used dropped first; at least one row group).

    Reading in file order (``shuffle=False``, prediction, a contiguous :func:`shard`) decodes each
    row group once. A shuffled epoch's batch holds rows of up to ``batch_size`` row groups: when
    the row groups read do not all fit the cache, each is decoded again for each batch that needs
    it (measured: several hundred times slower). For shuffled training, give the cache the
    decoded size of the rows read (a rank's shard: rows × columns × itemsize), or convert the
    columns once to a ``.npy`` file and train on its memmap (see docs/distributed.md).

    Parameters
    ----------
    path : str, os.PathLike or a sequence of them
        A Parquet file, a directory of them, or a list of files.
    columns : sequence of str
        The feature columns, in the order of X's columns (required: which columns are X is never
        guessed; the targets are read separately with :meth:`column`). Bool, integer or float
        columns without nulls; the source's dtype is their common NumPy type.
    check : bool
        Check the values once now (a pass over the data: NaN or infinity is a ``ValueError``
        naming the row).
    cache_bytes : int
        The decoded row groups kept in memory, in bytes (default 64 MiB).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        columns: Sequence[str],
        *,
        check: bool = True,
        name: str = "X",
        cache_bytes: int = 64 << 20,
    ) -> None:
        pa, pq, ds = _pyarrow()
        if isinstance(columns, str) or not isinstance(columns, Sequence) or not columns:
            raise TypeError(f"columns must be a non-empty list of column names, got {columns!r}")
        if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
            raise ValueError(f"columns must be distinct column names (str), got {list(columns)!r}")
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise ValueError(f"cache_bytes must be an int >= 0, got {cache_bytes!r}")
        if isinstance(path, (str, os.PathLike)):
            if os.path.isdir(path):
                files = list(ds.dataset(os.fspath(path), format="parquet").files)
            else:
                files = [os.fspath(path)]
        elif isinstance(path, Sequence) and path and all(isinstance(p, (str, os.PathLike)) for p in path):
            files = [os.fspath(p) for p in path]
        else:
            raise TypeError(f"path must be a Parquet file, a directory or a non-empty list of files, got {path!r}")
        if not files:
            raise ValueError(f"{name}: no Parquet files in {os.fspath(path)!r}")  # type: ignore[arg-type]
        self.files, self.columns, self._name = files, list(columns), name
        self._pq, self._readers = pq, [None] * len(files)
        dtypes: list[np.dtype] = []
        groups: list[tuple[int, int]] = []
        sizes: list[int] = []
        for f, file in enumerate(files):
            reader = self._reader(f)
            schema = reader.schema_arrow
            types = []
            for c in columns:
                if schema.get_field_index(c) < 0:
                    raise ValueError(f"{name}: column {c!r} is not in {file!r} (its columns: {schema.names})")
                t = schema.field(c).type
                if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                    raise TypeError(f"{name}: column {c!r} of {file!r} must hold real numbers, got Arrow type {t}")
                types.append(np.dtype(t.to_pandas_dtype()))
            if dtypes and types != dtypes:
                raise ValueError(f"{name}: the columns of {file!r} have dtypes {types}, those of {files[0]!r} {dtypes}")
            dtypes = types
            for g in range(reader.metadata.num_row_groups):
                rows = reader.metadata.row_group(g).num_rows
                if rows:
                    groups.append((f, g))
                    sizes.append(rows)
        if not sizes:
            raise ValueError(f"{name}: the Parquet files hold no rows")
        self._groups = groups
        self._starts = np.cumsum([0, *sizes]).astype(np.int64)
        self.shape = (int(self._starts[-1]), len(columns))
        self.dtype = np.result_type(*dtypes)
        self._cache: dict[int, np.ndarray] = {}  # row group -> its rows, least recently used first
        self._cache_bytes, self._cached = cache_bytes, 0
        if check:
            self.check(name)

    def _reader(self, f: int) -> Any:
        if self._readers[f] is None:
            try:
                self._readers[f] = self._pq.ParquetFile(self.files[f])
            except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError
                raise ValueError(f"{self._name}: cannot read {self.files[f]!r} as a Parquet file: {e}") from None
        return self._readers[f]

    def __getstate__(self) -> dict[str, Any]:  # open files and pyarrow modules do not pickle: reopened on use
        return {**self.__dict__, "_pq": None, "_readers": [None] * len(self.files), "_cache": {}, "_cached": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pq = _pyarrow()[1]

    def _group(self, g: int) -> np.ndarray:
        """Row group `g`'s rows of the columns, ``(rows, len(columns))`` in the source's dtype."""
        block = self._cache.pop(g, None)
        if block is None:
            f, r = self._groups[g]
            rows = int(self._starts[g + 1] - self._starts[g])
            nbytes = rows * self.shape[1] * self.dtype.itemsize
            while self._cache and self._cached + nbytes > self._cache_bytes:  # room first, then read
                self._cached -= self._cache.pop(next(iter(self._cache))).nbytes
            block = np.empty((rows, self.shape[1]), dtype=self.dtype)
            done = 0  # decoded _PARQUET_ROWS rows at a time: Arrow holds one such batch, not the group
            for batch in self._reader(f).iter_batches(_PARQUET_ROWS, row_groups=[r], columns=self.columns):
                for j, c in enumerate(self.columns):
                    col = batch.column(j)
                    if col.null_count:
                        first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                        raise ValueError(
                            f"{self._name}: column {c!r} has a missing value (null) in row "
                            f"{int(self._starts[g]) + done + first}"
                        )
                    block[done : done + batch.num_rows, j] = col.to_numpy()
                done += batch.num_rows
            self._cached += block.nbytes
        self._cache[g] = block  # the most recently used last
        return block

    def take(self, index: np.ndarray, out: np.ndarray) -> None:
        group_of = np.searchsorted(self._starts, index, side="right") - 1
        for g in np.unique(group_of):
            where = np.flatnonzero(group_of == g)
            out[where] = self._group(int(g))[index[where] - self._starts[g]]  # converts to out's dtype

    def release(self) -> None:
        """Nothing: no file is mapped, and the row-group cache holds at most `cache_bytes`."""

    def column(self, name: str) -> np.ndarray:
        """Column `name` of every row (the targets, say), read into memory: ``(n_samples,)``."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a column name (str), got {type(name).__name__}")
        parts = []
        for f, file in enumerate(self.files):
            reader = self._reader(f)
            if reader.schema_arrow.get_field_index(name) < 0:
                raise ValueError(f"column {name!r} is not in {file!r} (its columns: {reader.schema_arrow.names})")
            parts.append(reader.read(columns=[name]).column(0).to_numpy(zero_copy_only=False))
        return np.concatenate(parts)


class Rows(RowSource):
    """Rows `index` of `source`, in that order (nothing is read until :meth:`take`)."""

    def __init__(self, source: RowSource, index: np.ndarray) -> None:
        if index.shape[0] < 1:
            raise ValueError("a source's row selection must hold at least one row")
        self.source, self.index = source, index
        self.shape = (int(index.shape[0]), source.shape[1])
        self.dtype = source.dtype

    def take(self, index: np.ndarray, out: np.ndarray) -> None:
        self.source.take(self.index[index], out)

    def release(self) -> None:
        self.source.release()


class _ResidentSet:
    """This process's resident set in bytes, read from /proc/self/statm (Linux; elsewhere None)."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = None
        self._page = mmap.PAGESIZE

    def bytes(self) -> int | None:
        if self._fd is None:
            return None
        return int(os.pread(self._fd, 128, 0).split()[1]) * self._page

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def is_out_of_core(X: Any) -> bool:
    """Whether X is read batch by batch (:func:`as_source`): a memmap, a source, a list of paths."""
    if isinstance(X, (RowSource, np.memmap)):
        return True
    return isinstance(X, (list, tuple)) and bool(X) and all(isinstance(p, (str, os.PathLike)) for p in X)


def as_source(X: Any, name: str = "X", *, check: bool = True, dtype: Any = None) -> RowSource:
    """X as a :class:`RowSource`: itself, :class:`ArrayRows` of a memmap, :class:`NpyFiles` of
    paths (checked, when `check`, as they are made; in `dtype`, the network's, when given: a
    source of a wider float type is checked again in it)."""
    if isinstance(X, RowSource):
        source = X
    elif isinstance(X, np.ndarray):
        source = ArrayRows(X, name=name, check=False)
    else:
        source = NpyFiles(X, name=name, check=False)
    wider = dtype is not None and source.dtype.kind == "f" and source.dtype.itemsize > np.dtype(dtype).itemsize
    if check and (source is not X or wider):
        source.check(name, dtype)
    return source


def run_streamed(net: Any, request: Any, source: RowSource) -> float:
    r"""One epoch of `request` (:class:`fastmlp.epoch.EpochRequest`) on `net` (the C++ network)
    with X read from `source`, batch by batch.

    The order is the request's (``rows.order``), else the network generator's shuffle
    (``shuffle=True``: the order the in-memory epoch draws), else sequential. Batch :math:`j` of
    :math:`N`: its rows are gathered into the batch buffer (X from `source`; y and weights from
    memory), the schedule's rate at clock ``epoch + j / N`` is set, and the C++ epoch runs on
    that one batch (its gradient hook too). Returns :math:`\frac1n\sum_j |B_j| L_j`, as the
    in-memory epoch does.
    """
    rows, options = request.rows, request.options
    n, d = source.shape
    dtype = rows.y.dtype
    b = min(int(options.batch_size), n)
    order = rows.order
    if order is None and options.shuffle:
        order = net.shuffled_order(n)
    n_batches = (n + b - 1) // b
    # The in-memory epoch's batches (trainer.cpp): with batch normalization, a last row left
    # alone joins the batch before it.
    bounds = [(j * b, min(n, (j + 1) * b)) for j in range(n_batches)]
    if net.needs_whole_batch and n_batches > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    rows_max = max(stop - start for start, stop in bounds)
    x = np.empty((rows_max, d), dtype=dtype)
    y = np.empty((rows_max, rows.y.shape[1]), dtype=dtype)
    w = None if rows.sample_weight is None else np.empty(rows_max, dtype=dtype)
    batch = type(rows)()
    from . import _core

    one = _core.EpochOptions(
        batch_size=rows_max,
        shuffle=False,
        regularization=options.regularization,
        schedule=None,
        epoch=0.0,
        world_size=options.world_size,
    )
    one.rank, one.weighted_hook = options.rank, options.weighted_hook
    schedule = options.schedule
    check = dtype != source.dtype  # a conversion (float64 to float32) may overflow
    # Release when the rows read since the last release may have mapped _RELEASE_BYTES, or (Linux)
    # when the resident set has grown by that much: a fault may map a whole large folio of the
    # page cache, more than fault-around's 64 KiB.
    release_rows = max(1, _RELEASE_BYTES // (d * source.dtype.itemsize + _FAULT_AROUND_BYTES))
    resident = _ResidentSet()
    floor = resident.bytes()
    total, since_release = 0.0, 0
    for j, (start, stop) in enumerate(bounds):
        index = np.arange(start, stop, dtype=np.int64) if order is None else order[start:stop]
        k = stop - start
        source.take(index, x)
        if check and not math.isfinite(float(x[:k].sum(dtype=np.float64))):
            raise ValueError(f"X must be finite as {dtype}: a row of batch {j} overflows (NaN or infinity)")
        np.take(rows.y, index, axis=0, out=y[:k])
        batch.x, batch.y = x[:k], y[:k]
        if w is not None:
            np.take(rows.sample_weight, index, out=w[:k])
            batch.sample_weight = w[:k]
        if schedule is not None:
            request.optimizer.lr = schedule.at(options.epoch + j / n_batches, 1.0 / n_batches)
        total += net.train_epoch(batch, request.loss, request.optimizer, one, request.gradient_hook) * k
        since_release += k
        now = resident.bytes()
        if since_release >= release_rows or (now is not None and floor is not None and now - floor > _RELEASE_BYTES):
            source.release()
            since_release = 0
    resident.close()
    source.release()
    return total / n


_FORWARD_BYTES = 8 << 20  # a prediction chunk's widest layer, at most (8 MiB), and its rows of X


def forward_streamed(net: Any, X: Any, out: np.ndarray | None = None, chunk_rows: int | None = None) -> np.ndarray:
    """``net.forward`` (a :class:`fastmlp.Network`) of an out-of-core X, chunk by chunk.

    X's rows are read in file order, `chunk_rows` at a time (default: as many as keep a chunk of X
    and of the network's widest layer within 8 MiB each, at least 64), into one reusable buffer
    converted to the network's dtype, and the network's output for them written into their rows
    of `out` (made when None: the one allocation that grows with the number of rows). Each row's
    output is the in-memory forward's up to rounding (the product's kernel and blocking may
    depend on the number of rows: measured, at most 1 ulp apart). A chunk with NaN or
    infinity raises ``ValueError`` naming the row; `out`'s earlier rows are then already written.
    """
    source = as_source(X, check=False)
    n, d = source.shape
    if d != net.n_inputs:
        raise ValueError(f"X must have {net.n_inputs} features (columns), got {d}")
    if out is None:
        out = np.empty((n, net.n_outputs), dtype=net.dtype)
    elif not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}")
    elif out.dtype != net.dtype or out.shape != (n, net.n_outputs):
        raise ValueError(f"out must have dtype {net.dtype} and shape {(n, net.n_outputs)}, got {out.dtype} {out.shape}")
    if chunk_rows is None:
        widest = max(net.layer_sizes) * net.dtype.itemsize
        chunk_rows = max(64, _FORWARD_BYTES // max(widest, d * net.dtype.itemsize))
    b = min(n, int(chunk_rows))
    buf = np.empty((b, d), dtype=net.dtype)
    for start in range(0, n, b):
        k = min(b, n - start)
        with np.errstate(over="ignore", invalid="ignore"):  # a value beyond the dtype's range: inf, refused below
            source.take(np.arange(start, start + k, dtype=np.int64), buf)
        if not math.isfinite(float(buf[:k].sum(dtype=np.float64))):
            finite = np.isfinite(buf[:k]).all(axis=1)
            if not finite.all():
                bad = start + int(np.flatnonzero(~finite)[0])
                raise ValueError(f"X must be finite, got NaN or infinity (as {net.dtype}) in row {bad}")
        net.forward(buf[:k], out=out[start : start + k])
    source.release()
    return out


def objective_streamed(net: Any, source: RowSource, Y: np.ndarray, sample_weight: np.ndarray | None, loss: Any) -> Any:
    r"""The full-batch objective of an out-of-core X, chunk by chunk: what L-BFGS minimizes.

    Returns ``evaluate(regularization) -> float``, equal to ``net.run_objective(rows, loss,
    regularization)`` on all the rows in memory (up to rounding), the gradient left in
    ``net.grads``. Chunk :math:`c` (:math:`W_c` its weight sum; chunks of weight 0 skipped, as
    the core refuses them; :math:`C` the others) gets the penalties :math:`\Omega/C`, so that
    :math:`\sum_c (W_c/W) (L_c + \Omega/(C W_c)) = \sum_c W_c L_c / W + \Omega / W` — the objective of
    one batch of all the rows. The chunks are those of :func:`forward_streamed`, read each time.
    """
    n, d = source.shape
    b = min(n, max(64, _FORWARD_BYTES // (max(max(net.layer_sizes), d) * net.dtype.itemsize)))
    chunks = []
    for start in range(0, n, b):
        stop = min(n, start + b)
        weight = float(stop - start if sample_weight is None else np.sum(sample_weight[start:stop], dtype=np.float64))
        if weight > 0:
            chunks.append((start, stop, weight))
    total = sum(w for _, _, w in chunks)
    if not total > 0:
        raise ValueError(f"sample_weight must have a positive sum, got {total}")
    buf = np.empty((b, d), dtype=net.dtype)
    acc = np.empty(net.params.shape[0], dtype=np.float64)

    def evaluate(reg: Any) -> float:
        part = make_regularization(
            l2=reg.l2 / len(chunks),
            l1=reg.l1 / len(chunks),
            clip_value=reg.clip_value or None,
            clip_norm=reg.clip_norm or None,
            grad_scale=reg.grad_scale,
        )
        acc[:] = 0.0
        value = 0.0
        for start, stop, weight in chunks:
            k = stop - start
            source.take(np.arange(start, stop, dtype=np.int64), buf)
            sw = None if sample_weight is None else sample_weight[start:stop]
            rows = net.prepare_rows(buf[:k], Y[start:stop], loss, sample_weight=sw)
            value += weight / total * net.run_objective(rows, loss, part)
            acc[:] += weight / total * net.grads
        net.grads[:] = acc
        source.release()
        return value

    return evaluate
