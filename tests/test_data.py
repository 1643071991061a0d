"""Out-of-core X (fastmlp.data): a memmap, .npy files or a source, read batch by batch, trains
exactly as the same data in memory."""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
from fastmlp.data import ArrayRows, NpyFiles, as_source
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
    with pytest.raises(ValueError, match="solver='lbfgs' needs X in memory"):
        fastmlp.MLPClassifier(solver="lbfgs").fit(paths, y)
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
