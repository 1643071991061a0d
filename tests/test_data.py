"""Out-of-core X (fastmlp.data): a memmap, .npy files or a source, read batch by batch, trains
exactly as the same data in memory."""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import _compat
from fastmlp.data import ArrayRows, NpyFiles, ParquetRows, as_source
from fastmlp.schedules import Schedule

pytestmark = pytest.mark.filterwarnings("ignore::fastmlp.ConvergenceWarning")


def _data(n: int = 103, d: int = 5, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n)
    w = rng.uniform(0.0, 2.0, size=n)
    w[:7] = 0.0  # a batch may weigh nothing
    return X, y, w


def _memmap(tmp_path, X: np.ndarray, name: str = "X.npy") -> np.memmap:
    path = tmp_path / name
    np.save(path, X)
    return np.load(path, mmap_mode="r")


def _train(X, y, *, dtype="float64", opt="sgd", epochs=3, **kw):
    net = fastmlp.Network([5, 8, 3], "tanh", "softmax", dtype=dtype, seed=3)
    o = fastmlp.SGD(0.05, momentum=0.9, nesterov=True) if opt == "sgd" else fastmlp.Adam(0.01)
    losses = [net.train_epoch(X, y, "log_loss", o, epoch=float(e), **kw) for e in range(epochs)]
    return net, losses


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize(
    "kw",
    [
        dict(batch_size=16),  # shuffled by the network's generator: shuffled_order
        dict(batch_size=16, shuffle=False, l2=0.1, l1=0.01, clip_norm=0.5),
        dict(batch_size=10, sample_weight="w"),
        dict(batch_size=32, schedule=Schedule("cosine", 0.05, total_epochs=3, warmup_epochs=1)),
        dict(batch_size=200),  # one batch
    ],
)
def test_memmap_epoch_equals_in_memory(tmp_path, opt, kw):
    X, y, w = _data()
    kw = {k: (w if v == "w" else v) for k, v in kw.items()}
    net_mem, loss_mem = _train(X, y, opt=opt, **kw)
    net_map, loss_map = _train(_memmap(tmp_path, X), y, opt=opt, **kw)
    np.testing.assert_allclose(loss_map, loss_mem, rtol=1e-12)
    np.testing.assert_allclose(net_map.params, net_mem.params, rtol=1e-11, atol=1e-13)


def test_explicit_order_and_dropout(tmp_path):
    X, y, _ = _data()
    order = np.random.default_rng(1).permutation(len(y))

    def train(X):
        net = fastmlp.Network([5, 8, 3], "relu", "softmax", dtype="float64", seed=3, dropout=0.3)
        o = fastmlp.SGD(0.05, momentum=0.9)
        return net, [net.train_epoch(X, y, "log_loss", o, batch_size=16, order=order) for _ in range(2)]

    (a, la), (b, lb) = train(X), train(_memmap(tmp_path, X))
    np.testing.assert_allclose(lb, la, rtol=1e-12)
    np.testing.assert_allclose(b.params, a.params, rtol=1e-11, atol=1e-13)


def test_float32_network_from_float64_file(tmp_path):
    X, y, _ = _data()
    net_mem, loss_mem = _train(X, y, dtype="float32", batch_size=16)
    net_map, loss_map = _train(_memmap(tmp_path, X), y, dtype="float32", batch_size=16)
    np.testing.assert_allclose(loss_map, loss_mem, rtol=1e-6)
    np.testing.assert_allclose(net_map.params, net_mem.params, rtol=1e-5, atol=1e-6)


def test_npy_files_are_their_rows_concatenated(tmp_path):
    X, y, _ = _data()
    paths = []
    for i, (a, b) in enumerate([(0, 40), (40, 41), (41, 103)]):
        np.save(tmp_path / f"part{i}.npy", X[a:b])
        paths.append(str(tmp_path / f"part{i}.npy"))
    source = NpyFiles(paths)
    assert source.shape == X.shape and len(source) == 103
    idx = np.array([102, 0, 40, 39, 41, 40], dtype=np.int64)
    np.testing.assert_array_equal(source.read(idx), X[idx])
    net_mem, loss_mem = _train(X, y, batch_size=16)
    for src in (paths, source):
        net_f, loss_f = _train(src, y, batch_size=16)
        np.testing.assert_allclose(loss_f, loss_mem, rtol=1e-12)
        np.testing.assert_allclose(net_f.params, net_mem.params, rtol=1e-11, atol=1e-13)


def test_rows_of_a_source(tmp_path):
    X, _, _ = _data()
    src = as_source(_memmap(tmp_path, X))
    idx = np.array([5, 3, 100])
    np.testing.assert_array_equal(src[idx].read([2, 0]), X[[100, 5]])
    np.testing.assert_array_equal(src[10:20].read(np.arange(10)), X[10:20])
    np.testing.assert_array_equal(src[-3:].read([0]), X[[100]])


def test_integer_memmap_is_converted(tmp_path):
    rng = np.random.default_rng(0)
    X8 = rng.integers(0, 255, size=(50, 5), dtype=np.uint8)
    y = rng.integers(0, 3, size=50)
    net_mem, loss_mem = _train(X8, y, batch_size=8)
    net_map, loss_map = _train(_memmap(tmp_path, X8), y, batch_size=8)
    np.testing.assert_allclose(loss_map, loss_mem, rtol=1e-12)
    np.testing.assert_allclose(net_map.params, net_mem.params, rtol=1e-11)


def test_bad_out_of_core_input_changes_nothing(tmp_path):
    X, y, _ = _data()
    X[57, 2] = np.nan
    net = fastmlp.Network([5, 8, 3], "tanh", "softmax", dtype="float64", seed=3)
    before = net.params.copy()
    with pytest.raises(ValueError, match="X must be finite, got NaN or infinity in row 57"):
        net.train_epoch(_memmap(tmp_path, X), y, "log_loss", fastmlp.SGD(0.1))
    np.testing.assert_array_equal(net.params, before)
    # finite in the file's float64, beyond float32's range: refused before a float32 network trains
    # (the fuzz test found it raised mid-epoch, after some batches had trained)
    X[57, 2] = 1e300
    small = fastmlp.Network([5, 8, 3], "tanh", "softmax", seed=3)
    start = small.params.copy()
    for fit in (
        lambda: small.train_epoch(_memmap(tmp_path, X, "big.npy"), y, "log_loss", fastmlp.SGD(0.1), batch_size=8),
        lambda: fastmlp.MLPClassifier((4,), max_iter=2, dtype="float32").fit(_memmap(tmp_path, X, "big.npy"), y),
    ):
        with pytest.raises(ValueError, match="beyond float32's range\\) in row 57"):
            fit()
    np.testing.assert_array_equal(small.params, start)
    with pytest.raises(ValueError, match="X must have 5 features"):
        net.train_epoch(_memmap(tmp_path, np.zeros((4, 6)), "six.npy"), y[:4], "log_loss", fastmlp.SGD(0.1))
    with pytest.raises(ValueError, match=r"y must have 4 entries"):
        net.train_epoch(_memmap(tmp_path, np.zeros((4, 5)), "four.npy"), y, "log_loss", fastmlp.SGD(0.1))
    np.save(tmp_path / "a.npy", np.zeros((3, 5)))
    np.save(tmp_path / "b.npy", np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"X\[1\] .*must have 5 columns of dtype float64"):
        NpyFiles([tmp_path / "a.npy", tmp_path / "b.npy"])
    with pytest.raises(ValueError, match=r"X\[0\]: cannot read"):
        NpyFiles([tmp_path / "missing.npy"])
    with pytest.raises(TypeError, match=r"non-empty list of \.npy paths"):
        NpyFiles(str(tmp_path / "a.npy"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="real numbers"):
        ArrayRows(np.zeros((3, 2), dtype=complex))
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize(
    "make, kw",
    [
        (fastmlp.MLPClassifier, dict(solver="sgd", momentum=0.9, learning_rate="invscaling")),
        (fastmlp.MLPClassifier, dict(solver="adam", early_stopping=True, n_iter_no_change=2)),
        (fastmlp.MLPClassifier, dict(solver="adam", class_weight="balanced")),
        (fastmlp.MLPRegressor, dict(solver="adam", dtype="float32")),
    ],
)
def test_estimator_fit_on_a_memmap_equals_in_memory(tmp_path, make, kw):
    X, y, w = _data(n=150)
    if make is fastmlp.MLPRegressor:
        y = np.c_[X[:, 0] - X[:, 1], X[:, 2]]
    params = dict(hidden_layer_sizes=(7,), batch_size=16, max_iter=6, random_state=0, **kw)
    a = make(**params).fit(X, y, sample_weight=w)
    b = make(**params).fit(_memmap(tmp_path, X), y, sample_weight=w)
    tol = 1e-5 if kw.get("dtype") == "float32" else 1e-11
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=tol)
    for pa, pb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(pb, pa, rtol=tol, atol=tol)
    assert b.n_features_in_ == 5 and b.n_iter_ == a.n_iter_ and b.t_ == a.t_
    np.testing.assert_array_equal(b.predict(X), a.predict(X))


def test_estimator_on_npy_files_and_partial_fit(tmp_path):
    X, y, _ = _data(n=90)
    paths = []
    for i in range(3):
        np.save(tmp_path / f"p{i}.npy", X[30 * i : 30 * (i + 1)])
        paths.append(tmp_path / f"p{i}.npy")
    params = dict(hidden_layer_sizes=(6,), batch_size=20, max_iter=3, random_state=1)
    a = fastmlp.MLPClassifier(**params).fit(X, y)
    b = fastmlp.MLPClassifier(**params).fit(NpyFiles(paths), y)
    np.testing.assert_allclose(b.coefs_[0], a.coefs_[0], rtol=1e-11)
    a.partial_fit(X, y)
    b.partial_fit(paths, y)
    np.testing.assert_allclose(b.coefs_[0], a.coefs_[0], rtol=1e-11)
    with pytest.raises(ValueError, match="X has 4 features, but MLPClassifier is expecting 5"):
        b.partial_fit(as_source(_memmap(tmp_path, X[:, :4], "x4.npy")), y)


def test_rows_read_from_the_file_and_through_a_mapping(tmp_path):
    """A memmap's C-ordered rows are read from its file (positioned reads, runs of rows in one
    call); other arrays (a copy-on-write memmap, strided columns, plain arrays) by np.take."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    np.save(tmp_path / "X.npy", X)
    m = np.load(tmp_path / "X.npy", mmap_mode="r")
    cases = {
        "file": m,
        "file, a row slice": m[1000:2500],
        "copy-on-write": np.load(tmp_path / "X.npy", mmap_mode="c"),
        "strided columns": m[:, ::2],
        "in memory": X,
    }
    for what, a in cases.items():
        src = ArrayRows(a)
        assert (src._file is not None) == what.startswith("file"), what
        n = a.shape[0]
        for idx in (np.arange(n)[::-1], rng.integers(0, n, 700), np.r_[5, 6, 7, 1, 2, 2, n - 1]):
            np.testing.assert_array_equal(src.read(idx), np.asarray(a)[idx], err_msg=what)
            np.testing.assert_array_equal(src.read(idx, np.float32), np.asarray(a)[idx].astype(np.float32))


def test_bf16_network_on_a_memmap(tmp_path):
    """precision='bf16' streams as float32 does: batch by batch, the same steps."""
    X, y, _ = _data()
    X = X.astype(np.float32)

    def train(X):
        net = fastmlp.Network([5, 8, 3], "tanh", "softmax", seed=3, precision="bf16")
        opt = fastmlp.SGD(0.05, momentum=0.9)
        return net, [net.train_epoch(X, y, "log_loss", opt, batch_size=16) for _ in range(2)]

    (a, la), (b, lb) = train(X), train(_memmap(tmp_path, X))
    np.testing.assert_allclose(lb, la, rtol=1e-6)
    np.testing.assert_allclose(b.params, a.params, rtol=1e-5, atol=1e-6)


def test_read_checks_its_index(tmp_path):
    src = as_source(_memmap(tmp_path, np.zeros((4, 2))))
    with pytest.raises(IndexError, match=r"index must hold row numbers in \[0, 4\), got -1\.\.2"):
        src.read([-1, 2])
    with pytest.raises(IndexError, match=r"in \[0, 4\)"):
        src.read([4])
    with pytest.raises(TypeError, match="index must be a 1-D array of row numbers"):
        src.read([[0]])
    with pytest.raises(TypeError, match="index must be a 1-D array of row numbers"):
        src.read([0.5])
    assert src.read([]).shape == (0, 2)


# --------------------------------------------------------------------------- Parquet (pyarrow)


def _need_pyarrow():
    """pyarrow (the test extra installs it): under CI=true a missing one fails rather than skips."""
    if os.environ.get("CI", "").lower() == "true" and importlib.util.find_spec("pyarrow") is None:
        pytest.fail("pyarrow is not installed; under CI=true the Parquet tests must run (the test extra has it)")
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


FEATURES = [f"f{i}" for i in range(5)]


def _write_parquet(tmp_path, X, y, parts=((0, 40), (40, 41), (41, None)), row_group_size=9):
    """X's columns f0..f4 (f4 as int32 when X's last column is integral) and the label column y
    in a directory of Parquet files (names sorted in row order), row groups of 9 rows."""
    pa, pq = _need_pyarrow()
    folder = tmp_path / "parquet"
    folder.mkdir()
    for i, (a, b) in enumerate(parts):
        cols = {name: X[a:b, j] for j, name in enumerate(FEATURES)}
        if np.array_equal(X[:, 4], np.round(X[:, 4])):
            cols["f4"] = X[a:b, 4].astype(np.int32)
        cols["label"] = y[a:b]
        pq.write_table(pa.table(cols), folder / f"part{i}.parquet", row_group_size=row_group_size)
    return folder


def test_parquet_rows_are_the_tables_rows(tmp_path):
    _, pq = _need_pyarrow()
    X, y, _ = _data()
    X[:, 4] = np.round(3 * X[:, 4])  # an int32 column beside the float64 ones: the source is float64
    folder = _write_parquet(tmp_path, X, y)
    src = ParquetRows(folder, FEATURES)
    assert src.shape == X.shape and src.dtype == np.float64 and len(src._groups) == 5 + 1 + 7
    table = pq.read_table(folder)  # what one process would load: the same rows in the same order
    np.testing.assert_array_equal(np.column_stack([table.column(c).to_numpy() for c in FEATURES]), X)
    np.testing.assert_array_equal(src.column("label"), y)
    rng = np.random.default_rng(0)
    for idx in (rng.permutation(103), rng.integers(0, 103, 300), np.r_[102, 0, 40, 39, 41, 40]):
        np.testing.assert_array_equal(src.read(idx), X[idx])
        np.testing.assert_array_equal(src.read(idx, np.float32), X[idx].astype(np.float32))
    reversed_files = ParquetRows(sorted(folder.iterdir(), reverse=True), ["f1", "f0"], check=False)
    np.testing.assert_array_equal(reversed_files.read(np.arange(62)), X[41:, [1, 0]])  # a list: in its order
    small = ParquetRows(folder / "part2.parquet", FEATURES, cache_bytes=3 * 9 * 5 * 8)  # 3 row groups
    perm = rng.permutation(62)
    np.testing.assert_array_equal(small.read(perm), X[41:][perm])
    assert len(small._cache) == 3 and small._cached == sum(b.nbytes for b in small._cache.values())
    none = ParquetRows(folder / "part2.parquet", FEATURES, cache_bytes=0)  # keeps the last one only
    np.testing.assert_array_equal(none.read(perm), X[41:][perm])
    assert len(none._cache) == 1
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(src)).read([5, 99]), X[[5, 99]])
    # docs/distributed.md's conversion to .npy (for shuffled training on more than the cache)
    out = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=src.shape)
    for start in range(0, src.shape[0], 40):
        rows = np.arange(start, min(start + 40, src.shape[0]))
        src.take(rows, out[rows[0] : rows[-1] + 1])
    out.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "X.npy"), X.astype(np.float32))


@pytest.mark.parametrize("kw", [dict(batch_size=16), dict(batch_size=10, shuffle=False, sample_weight="w")])
def test_parquet_epoch_equals_in_memory(tmp_path, kw):
    X, y, w = _data()
    kw = {k: (w if v == "w" else v) for k, v in kw.items()}
    src = ParquetRows(_write_parquet(tmp_path, X, y), FEATURES)
    net_mem, loss_mem = _train(X, y, **kw)
    net_pq, loss_pq = _train(src, src.column("label"), **kw)
    np.testing.assert_allclose(loss_pq, loss_mem, rtol=1e-12)
    np.testing.assert_allclose(net_pq.params, net_mem.params, rtol=1e-11, atol=1e-13)


def test_estimator_fit_on_parquet_equals_in_memory(tmp_path):
    X, y, w = _data(n=150)
    src = ParquetRows(_write_parquet(tmp_path, X, y, parts=((0, 77), (77, None))), FEATURES)
    params = dict(hidden_layer_sizes=(7,), batch_size=16, max_iter=4, random_state=0, solver="adam")
    a = fastmlp.MLPClassifier(**params, early_stopping=True).fit(X, y, sample_weight=w)
    b = fastmlp.MLPClassifier(**params, early_stopping=True).fit(src, src.column("label"), sample_weight=w)
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=1e-11)
    np.testing.assert_allclose(b.validation_scores_, a.validation_scores_, rtol=1e-11)
    for pa_, pb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(pb, pa_, rtol=1e-11, atol=1e-11)


def test_bad_parquet_input(tmp_path, monkeypatch):
    pa, pq = _need_pyarrow()
    X, y, _ = _data(n=30)
    folder = _write_parquet(tmp_path, X, y, parts=((0, None),))
    path = folder / "part0.parquet"
    with pytest.raises(TypeError, match="columns must be a non-empty list of column names, got None"):
        ParquetRows(path, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="columns must be a non-empty list"):
        ParquetRows(path, "f0")
    with pytest.raises(ValueError, match="columns must be distinct column names"):
        ParquetRows(path, ["f0", "f0"])
    with pytest.raises(ValueError, match=r"column 'g' is not in .*part0.parquet.* \(its columns: \['f0'"):
        ParquetRows(path, ["f0", "g"])
    with pytest.raises(ValueError, match="cache_bytes must be an int >= 0, got -1"):
        ParquetRows(path, ["f0"], cache_bytes=-1)
    with pytest.raises(TypeError, match="path must be a Parquet file, a directory or a non-empty list"):
        ParquetRows([], ["f0"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no Parquet files in"):
        ParquetRows(tmp_path / "empty", ["f0"])
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(ValueError, match=r"cannot read '.*x.npy' as a Parquet file"):
        ParquetRows(tmp_path / "x.npy", ["f0"])
    pq.write_table(pa.table({"s": ["a", "b"], "v": pa.array([1.0, None]), "n": [1.0, np.nan]}), tmp_path / "o.parquet")
    with pytest.raises(TypeError, match=r"column 's' of .* must hold real numbers, got Arrow type string"):
        ParquetRows(tmp_path / "o.parquet", ["s"])
    with pytest.raises(ValueError, match=r"column 'v' has a missing value \(null\) in row 1"):
        ParquetRows(tmp_path / "o.parquet", ["v"])
    with pytest.raises(ValueError, match="X must be finite, got NaN or infinity in row 1"):
        ParquetRows(tmp_path / "o.parquet", ["n"])
    pq.write_table(pa.table({"f0": pa.array([1, 2], pa.int8())}), tmp_path / "i8.parquet")
    with pytest.raises(ValueError, match=r"the columns of .*i8.parquet' have dtypes \[dtype\('int8'\)\]"):
        ParquetRows([path, tmp_path / "i8.parquet"], ["f0"])
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` raises ImportError
    with pytest.raises(ImportError, match=r"needs pyarrow: pip install 'fastmlp\[parquet\]'"):
        ParquetRows(path, ["f0"])


# --------------------------------------------------------------------------- prediction in chunks


def _sources(tmp_path, X, y):
    paths = []
    for i, (a, b) in enumerate([(0, 50), (50, len(X))]):
        np.save(tmp_path / f"pred{i}.npy", X[a:b])
        paths.append(str(tmp_path / f"pred{i}.npy"))
    out = {"memmap": _memmap(tmp_path, X, "pred.npy"), ".npy files": paths}
    if importlib.util.find_spec("pyarrow") is not None or os.environ.get("CI", "").lower() == "true":
        out["parquet"] = ParquetRows(_write_parquet(tmp_path, X, y), FEATURES)
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predict_on_out_of_core_sources_equals_in_memory(tmp_path, monkeypatch, dtype):
    """predict, predict_proba, score and Network.forward read an out-of-core X in chunks (here of
    7 rows: 15 chunks, the last partial) and give the in-memory results (up to rounding)."""
    monkeypatch.setattr(fastmlp.data, "_FORWARD_BYTES", 7 * 5 * 8)
    X, y, w = _data()
    Y = np.c_[X[:, 0] - X[:, 1], X[:, 2]]
    params = dict(hidden_layer_sizes=(7,), max_iter=5, random_state=0, dtype=dtype)
    clf = fastmlp.MLPClassifier(**params).fit(X, y)
    reg = fastmlp.MLPRegressor(**params).fit(X, Y)
    net = fastmlp.Network([5, 6, 2], "tanh", dtype=dtype, seed=1)
    tol = dict(rtol=1e-12, atol=1e-15) if dtype == "float64" else dict(rtol=1e-6, atol=1e-7)
    for what, src in _sources(tmp_path, X, y).items():
        np.testing.assert_allclose(clf.predict_proba(src), clf.predict_proba(X), **tol, err_msg=what)
        np.testing.assert_array_equal(clf.predict(src), clf.predict(X), err_msg=what)
        assert clf.score(src, y, sample_weight=w) == pytest.approx(clf.score(X, y, sample_weight=w), rel=1e-12)
        np.testing.assert_allclose(reg.predict(src), reg.predict(X), **tol, err_msg=what)
        assert reg.score(src, Y) == pytest.approx(reg.score(X, Y), rel=1e-9)
        np.testing.assert_allclose(net.forward(src), net.forward(X.astype(dtype)), **tol, err_msg=what)
        out = np.full((103, 2), np.nan, dtype=dtype)
        assert net.forward(src, out=out) is out
        np.testing.assert_allclose(out, net.forward(X.astype(dtype)), **tol, err_msg=what)


def test_predict_on_a_source_holds_a_chunk_not_the_data(tmp_path):
    """The chunk buffer is the only per-call buffer besides the output: take() sees one chunk's
    rows at a time, in file order."""
    X, _, _ = _data(n=1000)
    seen = []

    class Recording(ArrayRows):
        def take(self, index, out):
            seen.append((int(index[0]), len(index), out.shape[0]))
            super().take(index, out)

    net = fastmlp.Network([5, 6, 3], dtype="float64", seed=1)
    source = Recording(X)
    seen.clear()  # the check's pass when it was made
    np.testing.assert_allclose(
        fastmlp.data.forward_streamed(net, source, chunk_rows=300), net.forward(X), rtol=1e-12, atol=1e-15
    )
    assert seen == [(0, 300, 300), (300, 300, 300), (600, 300, 300), (900, 100, 300)]
    seen.clear()
    net.forward(source)  # the default chunk: 8 MiB of the widest layer (here all 1000 rows)
    assert seen == [(0, 1000, 1000)]


def test_bad_input_to_predict_on_a_source(tmp_path):
    X, y, _ = _data()
    clf = fastmlp.MLPClassifier((4,), max_iter=2, random_state=0, dtype="float32").fit(X, y)
    with pytest.raises(ValueError, match="X has 4 features, but MLPClassifier is expecting 5 features"):
        clf.predict(_memmap(tmp_path, X[:, :4], "x4.npy"))
    bad = X.copy()
    bad[57, 1] = np.inf
    with pytest.raises(ValueError, match=r"X must be finite, got NaN or infinity \(as float32\) in row 57"):
        clf.predict_proba(_memmap(tmp_path, bad, "bad.npy"))
    big = X.copy()
    big[99, 1] = 1e300  # finite in the file, beyond the float32 network's range
    with pytest.raises(ValueError, match="in row 99"):
        clf.predict(_memmap(tmp_path, big, "big.npy"))
    with pytest.raises(_compat.NotFittedError, match="not fitted yet"):
        fastmlp.MLPClassifier().predict(_memmap(tmp_path, X, "unfitted.npy"))
    net = fastmlp.Network([5, 3], dtype="float64", seed=0)
    with pytest.raises(ValueError, match="X must have 5 features"):
        net.forward(_memmap(tmp_path, X[:, :4], "x4b.npy"))
    with pytest.raises(ValueError, match=r"out must have dtype float64 and shape \(103, 3\)"):
        net.forward(_memmap(tmp_path, X, "o.npy"), out=np.empty((103, 2)))
    with pytest.raises(ValueError, match=r"y must have shape \(103,\) or \(103, n_outputs\)"):
        clf.score(_memmap(tmp_path, X, "s.npy"), y[:5])


def test_validation_data_from_a_source(tmp_path):
    """validation_data's X may be out of core too (read into memory, as early_stopping's rows are):
    a RowSource raised TypeError ("a source's rows are taken by a slice...") before."""
    X, y, _ = _data(n=150)
    Xv, yv = X[:40] + 0.1, y[:40]
    params = dict(hidden_layer_sizes=(6,), batch_size=16, max_iter=3, random_state=0, dtype="float32")
    want = fastmlp.MLPClassifier(**params).fit(X, y, validation_data=(Xv, yv)).validation_loss_curve_
    sources = {"memmap": _memmap(tmp_path, Xv, "v.npy"), "source": ArrayRows(_memmap(tmp_path, Xv, "v2.npy"))}
    if importlib.util.find_spec("pyarrow") is not None or os.environ.get("CI", "").lower() == "true":
        sources["parquet"] = ParquetRows(_write_parquet(tmp_path, Xv, yv, parts=((0, None),)), FEATURES)
    for what, src in sources.items():
        got = fastmlp.MLPClassifier(**params).fit(X, y, validation_data=(src, yv)).validation_loss_curve_
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=what)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["parquet", "npy"])
def test_predict_memory_script_runs(tmp_path, kind):
    """benchmarks/predict_memory.py end to end on a tiny file (its memory figures are the docs';
    here only that it runs, under an address-space limit for Parquet, and prints its line)."""
    if kind == "parquet":
        _need_pyarrow()
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "predict_memory.py"
    # AddressSanitizer reserves terabytes of shadow address space at start: an RLIMIT_AS cannot
    # hold under it (CI's ASan stage preloads libasan), so there the script runs without a limit.
    sanitized = "libasan" in os.environ.get("LD_PRELOAD", "")
    limit = ["--limit-mib", "3000"] if kind == "parquet" and not sanitized else []
    run = subprocess.run(
        [sys.executable, str(script), "--kind", kind, "--rows", "3000", "--features", "16", "--dir", str(tmp_path)]
        + limit,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    line = rf"^{kind}: X 3,000 x 16 float32, .* peak \d+ MiB .* output 0\.1 MiB"
    assert re.search(line, run.stdout, re.M), run.stdout
    assert not list(tmp_path.iterdir())  # the file was removed


@pytest.mark.parametrize("make", [fastmlp.MLPClassifier, fastmlp.MLPRegressor])
def test_lbfgs_on_an_out_of_core_x_equals_in_memory(tmp_path, monkeypatch, make):
    """L-BFGS's full-batch objective summed over chunks (here of 64 rows, the least: 3 chunks, the
    last partial, the middle one of weight 0) equals one pass over all the rows in memory: the
    same iterates. (Refused with "solver='lbfgs' needs X in memory" before.)"""
    monkeypatch.setattr(fastmlp.data, "_FORWARD_BYTES", 1)  # the least chunk: 64 rows
    X, y, w = _data(n=150)
    w[64:128] = 0.0  # chunk 1 weighs nothing: skipped (the core refuses it), its share of the penalty the others'
    if make is fastmlp.MLPRegressor:
        y = np.c_[X[:, 0] - X[:, 1], X[:, 2]]
    params = dict(hidden_layer_sizes=(9,), solver="lbfgs", max_iter=30, alpha=0.01, l1=1e-3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.ConvergenceWarning)
        a = make(**params).fit(X, y, sample_weight=w)
        sources = {"memmap": _memmap(tmp_path, X)}
        if importlib.util.find_spec("pyarrow") is not None or os.environ.get("CI", "").lower() == "true":
            sources["parquet"] = ParquetRows(_write_parquet(tmp_path, X, np.zeros(150)), FEATURES)
        for what, src in sources.items():
            b = make(**params).fit(src, y, sample_weight=w)
            assert b.n_iter_ == a.n_iter_ == 30, what
            assert b.loss_ == pytest.approx(a.loss_, rel=1e-9), what
            for pa_, pb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
                np.testing.assert_allclose(pb, pa_, rtol=1e-7, atol=1e-9, err_msg=what)
