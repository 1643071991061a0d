"""Issue 19 (hardening, round 3): sparse memory, forged network files, saving after set_params,
failed fits, dropout continuity, downloads, load_mnist's dtype, networks without hidden layers,
and the lazy import.

Each test failed before its fix. Cases that could exhaust memory run in a child process under an
address-space limit; servers listen on 127.0.0.1 only, in threads bounded in time.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

import fastmlp
from fastmlp import MLPClassifier, MLPRegressor, datasets
from fastmlp.network import Network

rng = np.random.default_rng(0)
X = rng.standard_normal((60, 4))
Y_CLF = (X[:, 0] - X[:, 1] > 0).astype(int)
Y_REG = X @ np.array([0.5, -1.0, 2.0, 0.0])


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.ConvergenceWarning)
        return fn(*args, **kw)


def _weights(est) -> list[bytes]:
    return [np.array(a).tobytes() for a in est.coefs_ + est.intercepts_]


def _run_child(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


# --- 1. sparse input is never densified ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("solver,budget_gib", [("adam", 1.0), ("lbfgs", 3.5)])
def test_sparse_input_with_millions_of_columns_fits_in_memory_of_its_values(solver, budget_gib):
    """2**22 hashed columns, 8 stored values a row: the training workspace reserved rows x 2**22
    dense values per slice (a mini-batch fit needed 4 GiB, L-BFGS 'needs 64 GiB'). Now both fit
    in what the weights (8.4 M) and the stored values need; L-BFGS-B's own history (25 vectors of
    the parameters, 1.7 GB; 2.5 GiB of address space measured, scikit-learn 2.3) is most of its budget."""
    result = _run_child(
        f"""
        import resource, warnings
        import numpy as np, scipy.sparse as sp, scipy.optimize, sklearn
        from fastmlp import MLPClassifier
        n, cols, per_row = 2048, 2**22, 8
        rng = np.random.default_rng(0)
        indices = np.sort(rng.integers(0, cols, (n, per_row)), axis=1)
        X = sp.csr_matrix(
            (np.ones(n * per_row, np.float32), indices.ravel(), np.arange(0, n * per_row + 1, per_row)),
            shape=(n, cols),
        )
        y = indices[:, 0] % 2
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        limit = vm + int({budget_gib} * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        est = MLPClassifier((2,), solver={solver!r}, batch_size=256, max_iter=2, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, y)
        assert est.coefs_[0].shape == (cols, 2) and est.n_iter_ >= 1
        assert est.predict(X[:5]).shape == (5,)
        print("fitted", est.n_iter_)
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("fitted")


def test_prepare_step_counts_no_dense_rows_for_sparse_input():
    """The memory check of a sparse batch counted rows x columns: one batch of 2**14 rows of 2**24
    columns, one stored value each, was refused ('needs 1024 GiB') by train_epoch and objective
    (L-BFGS). Now it counts the stored values, and trains."""
    cols, n = 2**24, 2**14
    net = Network([cols, 1], seed=0)
    Xs = sp.csr_matrix(
        (np.ones(n, np.float32), rng.integers(0, cols, n), np.arange(n + 1)), shape=(n, cols), dtype=np.float32
    )
    y = np.ones((n, 1), np.float32)
    loss = net.train_epoch(Xs, y, "squared_error", fastmlp.SGD(0.01), batch_size=n)
    assert np.isfinite(loss)
    assert np.isfinite(net.objective(Xs, y, "squared_error"))


# --- 2. Network.load of a forged file -----------------------------------------------


def _rewrite_meta(path, **changes):
    with zipfile.ZipFile(path) as z:
        arrays = {n[:-4]: np.load(io.BytesIO(z.read(n))) for n in z.namelist()}
    meta = json.loads(str(arrays["__fastmlp__"]))
    meta.update(changes)
    arrays["__fastmlp__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "changes",
    [
        dict(layer_sizes=[2000, 2000, 3]),
        dict(layer_sizes=[8000, 8000]),
        dict(layer_sizes=[3, 4, 2], dtype="float64"),
        dict(layer_sizes="3,4,2"),
        dict(layer_sizes=[3, True, 2]),
        dict(layer_sizes=[3, 0, 2]),
        dict(dtype="int8"),
    ],
)
def test_network_load_checks_declared_shapes_before_building(tmp_path, changes):
    """A 2 KB file declaring 8000 x 8000 layers built (and filled) the whole network before its
    params were compared: now no network is built for a file whose declared shapes its members lack."""
    path = tmp_path / "net.npz"
    Network([3, 4, 2], seed=0).save(path)
    _rewrite_meta(path, **changes)
    built = []

    class Counting(Network):
        def __init__(self, *args, **kw):
            built.append(args)
            super().__init__(*args, **kw)

    with pytest.raises(ValueError, match="not a readable fastmlp network file"):
        Counting.load(path)
    assert built == []
    Network([3, 4, 2], seed=0).save(path)
    assert Counting.load(path).layer_sizes == (3, 4, 2) and len(built) == 1  # the untouched file builds


# --- 3. save after set_params; predict/save/summary with unfitted parameters --------------


@pytest.mark.parametrize("cls,y", [(MLPClassifier, Y_CLF), (MLPRegressor, Y_REG)])
def test_save_after_changing_hidden_layer_sizes_saves_what_was_fitted(tmp_path, cls, y):
    """fit, set_params(hidden_layer_sizes=(16,)), save: the save succeeded and load rejected the file
    as damaged. The fitted shapes win: the file loads, predicts as the model did, and keeps the new
    parameter for the next fit."""
    est = _quiet(cls(hidden_layer_sizes=(5, 3), max_iter=3, random_state=0).fit, X, y)
    expected = est.predict(X)
    est.set_params(hidden_layer_sizes=(16,))
    path = tmp_path / "m.npz"
    est.save(path)
    back = fastmlp.load(path)
    assert back.hidden_layer_sizes == (16,)
    assert [c.shape for c in back.coefs_] == [(4, 5), (5, 3), (3, est.n_outputs_)]
    assert back.predict(X).tobytes() == expected.tobytes()
    refit = _quiet(back.fit, X, y)  # the next fit uses the new sizes
    assert [c.shape[1] for c in refit.coefs_[:-1]] == [16]


@pytest.mark.parametrize(
    "bad", [dict(dropout=2.0), dict(input_noise=-1.0), dict(dropout=[0.1] * 7), dict(max_norm=-3.0)]
)
def test_invalid_training_settings_set_after_fit_do_not_break_the_fitted_model(tmp_path, bad):
    """An invalid dropout/input_noise set after fitting made predict, save and summary raise:
    they concern the next fit (which rejects them), not the fitted model's outputs."""
    est = _quiet(MLPClassifier((5,), dropout=0.2, max_iter=3, random_state=0).fit, X, Y_CLF)
    expected = est.predict_proba(X)
    est.set_params(**bad)
    assert est.predict_proba(X).tobytes() == expected.tobytes()
    out = io.StringIO()
    est.summary(file=out)
    assert "dense 0" in out.getvalue()
    path = tmp_path / "m.npz"
    est.save(path)
    back = fastmlp.load(path)
    assert back.predict_proba(X).tobytes() == expected.tobytes()
    assert {k: back.get_params()[k] for k in bad} == bad
    name = next(iter(bad))
    before = _weights(back)
    with pytest.raises(ValueError, match=name):
        back.fit(X, Y_CLF)
    assert _weights(back) == before


# --- 4. a failed fit changes nothing; the sparse tag ---------------------------------------


@pytest.mark.parametrize("early_check", [True, False])
@pytest.mark.parametrize("setting", [dict(input_noise=0.1), dict(dropout=[0.2, 0.0])])
def test_a_fit_failing_in_its_first_epoch_changes_nothing(monkeypatch, early_check, setting):
    """input_noise set on a fitted model, then fit with sparse X: the error came inside the first
    epoch, after the point where a failed fit is undone (new weights, n_iter_ 5 -> 0, an empty
    loss_curve_). Now it is checked first; and (early_check=False: the same check reached inside
    the epoch, as any check that fails before the first step) the fit is undone whole."""
    est = _quiet(MLPClassifier((5,), max_iter=5, random_state=0).fit, X, Y_CLF)
    est.set_params(**setting)
    if not early_check:
        monkeypatch.setattr(MLPClassifier, "_perturbs_inputs", lambda self: False)
    before = (_weights(est), est.n_iter_, list(est.loss_curve_), est.t_, est._net.training_steps)
    with pytest.raises(ValueError, match="dense X"):
        est.fit(sp.csr_matrix(X), Y_CLF)
    assert (_weights(est), est.n_iter_, list(est.loss_curve_), est.t_, est._net.training_steps) == before


def test_the_sparse_tag_is_false_with_input_noise_or_input_dropout():
    pytest.importorskip("sklearn")
    assert MLPClassifier().__sklearn_tags__().input_tags.sparse
    assert MLPRegressor(dropout=0.5).__sklearn_tags__().input_tags.sparse  # hidden dropout: sparse is fine
    for est in (MLPClassifier(input_noise=0.1), MLPRegressor(dropout=[0.2, 0.0])):
        assert not est.__sklearn_tags__().input_tags.sparse
    from sklearn.utils.estimator_checks import check_estimator_sparse_tag

    for est in (MLPClassifier((4,), input_noise=0.1, max_iter=5), MLPClassifier((4,), max_iter=5)):
        _quiet(check_estimator_sparse_tag, type(est).__name__, est)


# --- 5. dropout continuity --------------------------------------------------------------------


def _dropout_model(cls=MLPClassifier):
    return cls(hidden_layer_sizes=(6,), dropout=[0.1, 0.3], input_noise=0.05, random_state=0, batch_size=16)


def _partial(est, y, times):
    for _ in range(times):
        if isinstance(est, MLPClassifier):
            est.partial_fit(X, y, classes=[0, 1])
        else:
            est.partial_fit(X, y)
    return est


@pytest.mark.parametrize("cls,y", [(MLPClassifier, Y_CLF), (MLPRegressor, Y_REG)])
@pytest.mark.parametrize("how", ["pickle", "save"])
def test_partial_fit_continues_the_dropout_draws_after_pickle_and_save(tmp_path, cls, y, how):
    """The step count that keys the dropout masks was not stored: partial_fit after a pickle or
    load drew the first steps' masks again (0.0039 from the uninterrupted run). Now bit-exact."""
    straight = _partial(_dropout_model(cls), y, 4)
    half = _partial(_dropout_model(cls), y, 2)
    if how == "pickle":
        resumed = pickle.loads(pickle.dumps(half))
    else:
        half.save(tmp_path / "m.npz")
        resumed = fastmlp.load(tmp_path / "m.npz")
    _partial(resumed, y, 2)
    assert _weights(resumed) == _weights(straight)


@pytest.mark.parametrize("cls,y", [(MLPClassifier, Y_CLF), (MLPRegressor, Y_REG)])
def test_fit_twice_with_the_same_random_state_is_bit_identical(cls, y):
    """The step count carried over from the first fit (0.009 apart; scikit-learn's
    check_fit_idempotent failed): it restarts at fit, and continues at partial_fit."""
    est = _dropout_model(cls).set_params(max_iter=3)
    first = _weights(_quiet(est.fit, X, y))
    assert _weights(_quiet(est.fit, X, y)) == first
    assert _weights(_quiet(_dropout_model(cls).set_params(max_iter=3).fit, X, y)) == first


# --- 6. downloads ---------------------------------------------------------------------------


class _Server:
    """A TCP server on 127.0.0.1 in a thread that answers every connection with `reply(conn)`;
    stops (and is joined) on exit, within a second."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)  # the request
                    self.reply(conn, self.stop)
                except OSError:
                    pass

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def _cut_chunked(conn, stop):  # a chunked answer cut short: IncompleteRead
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"x" * 100)


def _not_http(conn, stop):  # BadStatusLine
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")


def _endless(conn, stop):  # streams without end (bounded here: 10 s or 64 MiB)
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
    end, block = time.monotonic() + 10, b"\0" * 65536
    for _ in range(1024):
        if stop.is_set() or time.monotonic() > end:
            return
        conn.sendall(block)


def _too_long(conn, stop):  # announces more than the published size
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 99999999999\r\n\r\n" + b"\0" * 1000)


LABELS = "t10k-labels-idx1-ubyte.gz"


@pytest.mark.parametrize("reply", [_cut_chunked, _not_http, _endless, _too_long])
def test_every_download_failure_tries_the_next_source_then_says_what_to_do(tmp_path, monkeypatch, data_dir, reply):
    """A mirror that cut a chunked download short or was not an HTTP server raised raw
    IncompleteRead / BadStatusLine, without the advice and without trying the other sources; an
    endless one was written to disk until it filled. Each is now a failed source: the next one is
    tried, and when none is left, one OSError says what to do; nothing partial is left behind."""
    monkeypatch.delenv("FASTMLP_DATA_MIRROR", raising=False)
    monkeypatch.setattr(datasets, "_DOWNLOAD_TIMEOUT", 5.0)
    good = (data_dir / "mnist").as_uri() + "/"
    with _Server(reply) as bad:
        monkeypatch.setitem(datasets.MNIST_URLS, "mnist", (bad.url, good))
        datasets._download("mnist", (LABELS,), tmp_path / "a")
        assert (tmp_path / "a" / LABELS).read_bytes() == (data_dir / "mnist" / LABELS).read_bytes()
        with _Server(reply) as bad2:
            monkeypatch.setitem(datasets.MNIST_URLS, "mnist", (bad.url, bad2.url))
            with pytest.raises(
                OSError, match=r"(?s)could not download.*127\.0\.0\.1.*127\.0\.0\.1.*FASTMLP_DATA_MIRROR"
            ):
                datasets._download("mnist", (LABELS,), tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []


def test_an_endless_download_stops_at_the_published_size(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_DOWNLOAD_TIMEOUT", 5.0)
    with _Server(_endless) as bad:
        with pytest.raises(OSError, match=f"more than the published {datasets.MNIST_SIZES['mnist'][LABELS]} bytes"):
            datasets._fetch(bad.url + LABELS, tmp_path / LABELS, "0" * 32, datasets.MNIST_SIZES["mnist"][LABELS])
    assert list(tmp_path.iterdir()) == []


def test_published_sizes_and_checksums_agree_with_the_files(data_dir):
    for name in datasets.MNIST_NAMES:
        for file, size in datasets.MNIST_SIZES[name].items():
            data = (data_dir / name / file).read_bytes()
            assert len(data) == size and hashlib.md5(data).hexdigest() == datasets.MNIST_MD5[name][file]


# --- 7. load_mnist's dtype ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int8", "bool", "U3", "datetime64[s]", "complex64", object])
def test_load_mnist_refuses_dtypes_that_cannot_hold_pixels(tmp_path, dtype):
    """dtype='int8', normalize=False returned pixels wrapped into -128..127."""
    with pytest.raises(ValueError, match=r"holds the pixel values 0\.\.255"):
        datasets.load_mnist("mnist", "test", tmp_path, dtype=dtype, normalize=False)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float16", "float32"])
def test_load_mnist_returns_true_pixel_values(data_dir, dtype):
    X_, _ = datasets.load_mnist("mnist", "test", data_dir / "mnist", dtype=dtype, normalize=False)
    assert X_.dtype == np.dtype(dtype) and X_.max() == 255 and X_.min() == 0


# --- 8. no hidden layers ------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "logistic", []])
@pytest.mark.parametrize("cls,y", [(MLPClassifier, Y_CLF), (MLPClassifier, Y_REG > 0.5), (MLPRegressor, Y_REG)])
def test_no_hidden_layers_trains_a_linear_model_as_scikit_learn_does(tmp_path, cls, y, activation):
    """hidden_layer_sizes=() with activation=[] raised IndexError. It is a linear (logistic)
    model, which scikit-learn trains too: the same weights as scikit-learn's."""
    est = _quiet(cls(hidden_layer_sizes=(), activation=activation, max_iter=20, random_state=0).fit, X, y)
    assert [c.shape for c in est.coefs_] == [(4, est.n_outputs_)] and est.n_layers_ == 2
    assert est.predict(X).shape == (60,)
    net = est.fitted_network()
    assert net.layer_sizes == (4, est.n_outputs_) and net.activations == ()
    path = tmp_path / "m.npz"
    est.save(path)
    assert fastmlp.load(path).predict(X).tobytes() == est.predict(X).tobytes()
    est.summary(file=io.StringIO())
    if activation != []:
        sklearn_nn = pytest.importorskip("sklearn.neural_network")
        sk = _quiet(
            getattr(sklearn_nn, cls.__name__)(
                hidden_layer_sizes=(), activation=activation, max_iter=20, random_state=0
            ).fit,
            X,
            y,
        )
        for ours, theirs in zip(est.coefs_ + est.intercepts_, sk.coefs_ + sk.intercepts_):
            np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    pytest.importorskip("sklearn")
    np.testing.assert_allclose(est.to_sklearn().predict(X), est.predict(X))  # activation=[]: raised


def test_a_network_without_hidden_layers_takes_an_empty_activation_list():
    net = Network([4, 2], activation=[], output_activation="softmax", seed=0)
    assert net.activations == () and net.forward(X).shape == (60, 2)
    with pytest.raises(ValueError, match="one activation per hidden layer"):
        Network([4, 3, 2], activation=[])


# --- 9. the lazy import ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_first_forward_imports_neither_scipy_nor_sklearn_nor_pandas():
    """The first Network.forward on a NumPy array imported scikit-learn, SciPy and pandas (the sparse
    check went through _compat): 1.1-1.9 s before the first prediction. Now under 0.3 s from
    `import fastmlp` (the best of five runs: the machine may be shared), and none of them imported."""
    code = """
        import sys, time
        start = time.perf_counter()
        import fastmlp
        import numpy as np
        net = fastmlp.Network([8, 16, 2], seed=0)
        net.forward(np.ones((4, 8)))
        seconds = time.perf_counter() - start
        heavy = sorted(m for m in ("scipy", "sklearn", "pandas") if m in sys.modules)
        print(seconds, heavy)
        """
    times = []
    for _ in range(5):
        result = _run_child(code, timeout=60)
        assert result.returncode == 0, result.stderr
        seconds, heavy = result.stdout.split(" ", 1)
        assert heavy.strip() == "[]"
        times.append(float(seconds))
    assert min(times) < 0.3, times


def test_is_sparse_imports_scipy_only_for_scipy_objects(monkeypatch):
    from fastmlp._validation import is_sparse

    monkeypatch.delitem(sys.modules, "scipy.sparse")  # an import would put it back
    for x in (np.ones((2, 2)), [[1.0]], 3.0, None, "x"):
        assert not is_sparse(x)
    assert "scipy.sparse" not in sys.modules
    monkeypatch.undo()
    assert is_sparse(sp.csr_matrix(np.eye(2))) and is_sparse(sp.csc_array(np.eye(2)))

    class Mine(sp.csr_matrix):  # a subclass defined elsewhere is still sparse
        pass

    assert is_sparse(Mine(np.eye(2)))
