"""Reliability of the estimators (issue 5, estimator half).

Bad input to every method leaves a fitted model bit-identical (weights, and
optimizer state: a twin continues identically); divergence keeps the last
finite epoch; Ctrl-C keeps a usable model; pickling and save/load round-trip
exactly and load rejects damaged or forged files without large allocations;
a soak of fit/predict/save/load cycles does not leak; threads may predict
concurrently.
"""

from __future__ import annotations

import _thread
import io
import json
import os
import pickle
import threading
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastmlp
from fastmlp import MLPClassifier, MLPRegressor
from helpers import asan_allowance, rss_bytes

# --- helpers -----------------------------------------------------------------

N, F = 40, 3
_rng = np.random.default_rng(0)
X0 = _rng.standard_normal((N, F))
Y_CLF = np.array([0, 1, 2, 3] * (N // 4))
Y_REG = X0 @ np.array([0.5, -1.0, 2.0]) + 0.1 * _rng.standard_normal(N)


def _y(kind):
    return Y_CLF if kind == "clf" else Y_REG


def _fitted(kind, dtype="float64", **kw):
    """A small fitted model with non-trivial Adam state (fit, then two partial_fit calls)."""
    params = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0, dtype=dtype, **kw)
    est = MLPClassifier(**params) if kind == "clf" else MLPRegressor(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.estimators.ConvergenceWarning)
        est.fit(X0, _y(kind))
    for _ in range(2):
        est.partial_fit(X0, _y(kind))
    return est


def _state(est):
    """Everything a failed call must leave as it was: weights as bytes, and the fitted attributes."""
    arrays = [(a.dtype.str, a.shape, a.tobytes()) for a in list(est.coefs_) + list(est.intercepts_)]
    attrs = {k: getattr(est, k) for k in ("n_iter_", "t_", "n_features_in_", "n_outputs_", "out_activation_")}
    attrs["loss_curve_"] = list(est.loss_curve_)
    if hasattr(est, "classes_"):
        attrs["classes_"] = est.classes_.tolist()
    return arrays, attrs


def _weights(est):
    return [a.tobytes() for a in list(est.coefs_) + list(est.intercepts_)]


def _with(X, i, j, value):
    X = X.copy()
    X[i, j] = value
    return X


# --- 1. bad input ---------------------------------------------------------------

# (case id, X) for every method taking X; the message must name X.
BAD_X = [
    ("wrong-n-features", X0[:, :2]),
    ("1-D", X0[:, 0]),
    ("3-D", X0[:, :, None]),
    ("0-samples", X0[:0]),
    ("0-features", X0[:, :0]),
    ("nan", _with(X0, 1, 1, np.nan)),
    ("inf", _with(X0, 2, 0, np.inf)),
    ("-inf", _with(X0, 2, 0, -np.inf)),
    ("object-non-numeric", np.array([[{"a": 1}, 2.0, 3.0]] * N, dtype=object)),
    ("str-non-numeric", np.array([["a", "b", "c"]] * N)),
    ("complex", X0.astype(complex)),
]


def _y_cases(kind):
    y = _y(kind).astype(float)
    return [
        ("nan", _with(y[:, None], 0, 0, np.nan).ravel()),
        ("inf", _with(y[:, None], 3, 0, np.inf).ravel()),
        ("wrong-length", y[:-1]),
        ("complex", y.astype(complex)),
    ] + ([("str", np.array(["a"] * N))] if kind == "reg" else [])


SW_CASES = [
    ("nan", _with(np.ones((N, 1)), 3, 0, np.nan).ravel()),
    ("inf", _with(np.ones((N, 1)), 3, 0, np.inf).ravel()),
    ("negative", _with(np.ones((N, 1)), 3, 0, -1.0).ravel()),
    ("all-zero", np.zeros(N)),
    ("wrong-length", np.ones(N - 1)),
    ("str", np.array(["a"] * N)),
    ("complex", np.ones(N, dtype=complex)),
]

HYPER = [
    ("solver", "foo", r"solver.*\['sgd', 'adam'.*'lbfgs'\]"),
    (
        "activation",
        "bar",
        r"activation.*\['identity', 'logistic', 'tanh', 'relu', 'leaky_relu', 'gelu', 'silu', 'selu', 'mish', "
        r"'softplus', 'elu'\]",
    ),
    ("learning_rate", "fast", r"learning_rate.*\['constant'"),
    ("learning_rate_init", -0.1, "learning_rate_init"),
    ("learning_rate_init", 0.0, "learning_rate_init"),
    ("learning_rate_init", float("nan"), "learning_rate_init"),
    ("batch_size", 0, "batch_size"),
    ("batch_size", -5, "batch_size"),
    ("batch_size", 2.5, "batch_size"),
    ("momentum", 1.0, "momentum"),
    ("momentum", -0.1, "momentum"),
    ("momentum", float("nan"), "momentum"),
    ("alpha", float("nan"), "alpha"),
    ("alpha", -1.0, "alpha"),
    ("beta_1", float("nan"), "beta_1"),
    ("beta_2", 1.0, "beta_2"),
    ("epsilon", float("nan"), "epsilon"),
    ("tol", float("nan"), "tol"),
    ("max_iter", 0, "max_iter"),
    ("hidden_layer_sizes", (0,), "hidden_layer_sizes"),
    ("hidden_layer_sizes", (5, -1), "hidden_layer_sizes"),
    ("power_t", -1.0, "power_t"),
    ("validation_fraction", 1.0, "validation_fraction"),
    ("n_iter_no_change", 0, "n_iter_no_change"),
    ("dtype", "float16", "dtype"),
]


def _calling(method, *args, **kwargs):
    """est -> est.<method>(*args, **kwargs), with the arguments bound now (not at the loop's end)."""
    return lambda est: getattr(est, method)(*args, **kwargs)


def _cases(kind):
    """(id, call(est), pattern the message must match)."""
    y = _y(kind)
    cases = []
    methods = ["predict", "score", "partial_fit", "fit"] + (["predict_proba"] if kind == "clf" else [])
    for name, X in BAD_X:
        for m in methods:
            if m == "fit" and name == "wrong-n-features":
                continue  # a new fit may change the number of features
            call = _calling(m, X) if m in ("predict", "predict_proba") else _calling(m, X, y)
            cases.append((f"{m}-X-{name}", call, r"\bX\b"))
    for name, yb in _y_cases(kind):
        for m in ("fit", "partial_fit", "score"):
            cases.append((f"{m}-y-{name}", _calling(m, X0, yb), r"\by\b"))
    for name, sw in SW_CASES:
        for m in ("fit", "partial_fit", "score"):
            cases.append((f"{m}-sample_weight-{name}", _calling(m, X0, y, sample_weight=sw), "sample_weight"))
    if kind == "clf":
        cases.append(
            ("partial_fit-unknown-label", lambda est: est.partial_fit(X0, np.where(Y_CLF == 3, 7, Y_CLF)), "classes")
        )
        cases.append(
            ("partial_fit-other-classes", lambda est: est.partial_fit(X0, Y_CLF, classes=[0, 1, 2, 3, 4]), "classes")
        )
    for param, value, pattern in HYPER:
        for m in ("fit", "partial_fit"):

            def call(est, param=param, value=value, m=m):
                old = est.get_params()[param]
                est.set_params(**{param: value})
                try:
                    getattr(est, m)(X0, y)
                finally:
                    est.set_params(**{param: old})

            if m == "partial_fit" and param == "solver":
                continue  # partial_fit does not exist for an unknown solver (AttributeError, as scikit-learn)
            cases.append((f"{m}-{param}={value!r}", call, pattern))
    return cases


CASES = [(kind, *c) for kind in ("clf", "reg") for c in _cases(kind)]


@pytest.fixture(scope="module")
def twins():
    """Per kind: a pristine fitted model, pickled (each test unpickles two identical copies)."""
    return {kind: pickle.dumps(_fitted(kind)) for kind in ("clf", "reg")}


@pytest.mark.parametrize("kind,case,call,pattern", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_input_raises_and_changes_nothing(twins, kind, case, call, pattern):
    est, twin = pickle.loads(twins[kind]), pickle.loads(twins[kind])
    # partial_fit once on both, so that each holds a live optimizer with moments
    est.partial_fit(X0, _y(kind))
    twin.partial_fit(X0, _y(kind))
    before = _state(est)
    assert before == _state(twin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.estimators.ConvergenceWarning)
        with pytest.raises((ValueError, TypeError), match=pattern):
            call(est)
    assert _state(est) == before
    # The optimizer state too: continuing gives bit-identical weights.
    est.partial_fit(X0, _y(kind))
    twin.partial_fit(X0, _y(kind))
    assert _weights(est) == _weights(twin)
    assert est.predict(X0).tobytes() == twin.predict(X0).tobytes()


def test_bad_input_case_count():
    """The number reported in the issue's closing note."""
    assert len(CASES) >= 250


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_numeric_strings_and_objects_are_converted_as_in_scikit_learn(kind):
    est = _fitted(kind)
    np.testing.assert_array_equal(est.predict(X0.astype(object)), est.predict(X0))
    np.testing.assert_array_equal(est.predict(X0.astype(str)), est.predict(X0))


# --- 2. divergence ----------------------------------------------------------------

DIVERGE = dict(
    hidden_layer_sizes=(16,), solver="sgd", momentum=0.9, batch_size=10, shuffle=False, random_state=0, max_iter=50
)


def _diverging_data():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((100, 4))
    return X, X @ rng.standard_normal(4) * 10


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_divergence_stops_and_keeps_the_last_finite_epoch(dtype):
    X, y = _diverging_data()
    est = MLPRegressor(learning_rate_init=0.03, dtype=dtype, **DIVERGE)
    with pytest.raises(ValueError, match=r"non-finite parameter weights.*epoch"):
        est.fit(X, y)
    k = est.n_iter_
    assert k >= 1, "choose a rate that diverges after at least one finite epoch"
    assert len(est.loss_curve_) == k and np.isfinite(est.loss_curve_).all()
    assert all(np.isfinite(a).all() for a in est.coefs_ + est.intercepts_)
    assert np.isfinite(est.predict(X)).all()
    # The same training stopped after k epochs: bit-identical weights.
    ref = MLPRegressor(learning_rate_init=0.03, dtype=dtype, **{**DIVERGE, "max_iter": k})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.estimators.ConvergenceWarning)
        ref.fit(X, y)
    assert _weights(est) == _weights(ref)
    assert est.loss_curve_ == ref.loss_curve_


def test_divergence_in_partial_fit_keeps_the_weights_and_restarts_the_optimizer():
    X, y = _diverging_data()
    est = MLPRegressor(learning_rate_init=5.0, **DIVERGE)
    est.partial_fit(X[:20], y[:20] * 0)  # finite
    before = _weights(est)
    with pytest.raises(ValueError, match="non-finite"):
        est.partial_fit(X * 100, y * 1e3)
    assert _weights(est) == before
    est.set_params(learning_rate_init=1e-4)
    est.partial_fit(X, y)  # a fresh optimizer: no NaN moments carried over
    assert all(np.isfinite(a).all() for a in est.coefs_)


def test_divergence_on_the_first_epoch_keeps_the_initial_weights():
    X, y = _diverging_data()
    est = MLPRegressor(learning_rate_init=1e4, **DIVERGE)
    with pytest.raises(ValueError, match="non-finite"):
        est.fit(X * 100, y * 1e3)
    assert est.n_iter_ == 0 and est.loss_curve_ == []
    init = MLPRegressor(**{**DIVERGE, "max_iter": 1})
    init._initialize(1, [4, 16, 1], np.dtype("float64"), np.random.RandomState(0))
    assert _weights(est) == [a.tobytes() for a in init.coefs_ + init.intercepts_]


# --- 3. Ctrl-C ----------------------------------------------------------------------


def test_ctrl_c_during_fit_returns_promptly_with_a_usable_model(ctrl_c):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4000, 20))
    y = (X[:, 0] > 0).astype(int)
    est = MLPClassifier(hidden_layer_sizes=(64,), max_iter=100000, tol=0, n_iter_no_change=10**9, random_state=0)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.warns(UserWarning, match="Training interrupted by user"):
            est.fit(X, y)
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"fit took {elapsed:.2f} s after a Ctrl-C at 0.5 s"
    assert 0 <= est.n_iter_ < 100000 and len(est.loss_curve_) == est.n_iter_
    assert all(np.isfinite(a).all() for a in est.coefs_ + est.intercepts_)
    assert est.score(X, y) > 0.8
    # and training continues from there
    est.set_params(warm_start=True, max_iter=2)
    with pytest.warns(fastmlp.estimators.ConvergenceWarning):
        est.fit(X, y)
    assert est.n_iter_ == 2


# --- 4. pickling and files --------------------------------------------------------


@pytest.mark.parametrize("kind", ["clf", "reg"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pickle_round_trips_exactly_and_continues_identically(kind, dtype):
    est = _fitted(kind, dtype=dtype)
    back = pickle.loads(pickle.dumps(est))
    assert [a.dtype for a in back.coefs_] == [np.dtype(dtype)] * 2
    assert _weights(back) == _weights(est)
    assert est.predict(X0).tobytes() == back.predict(X0).tobytes()
    if kind == "clf":
        assert est.predict_proba(X0).tobytes() == back.predict_proba(X0).tobytes()
    for m in (est, back):
        m.set_params(warm_start=True, max_iter=2)
        with pytest.warns(fastmlp.estimators.ConvergenceWarning):
            m.fit(X0, _y(kind))
    assert _weights(back) == _weights(est)
    assert est.loss_curve_ == back.loss_curve_


@pytest.mark.parametrize("kind", ["clf", "reg"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trips_exactly(tmp_path, kind, dtype):
    est = _fitted(kind, dtype=dtype)
    est.save(tmp_path / "m.npz")
    back = fastmlp.load(tmp_path / "m.npz")
    assert _weights(back) == _weights(est)
    assert est.predict(X0).tobytes() == back.predict(X0).tobytes()


def test_save_is_atomic_a_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    est = _fitted("reg")
    path = tmp_path / "m.npz"
    est.save(path)
    good = path.read_bytes()
    import fastmlp.io as fio

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fio.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        est.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind


def test_load_never_unpickles(tmp_path, monkeypatch):
    est = _fitted("clf")
    est.save(tmp_path / "m.npz")

    def refuse(*a, **k):
        raise AssertionError("load unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    fastmlp.load(tmp_path / "m.npz")


def _saved_bytes(kind="clf", dtype="float64"):
    buf = io.BytesIO()
    est = _fitted(kind, dtype=dtype)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        est.save(os.path.join(d, "m.npz"))
        with open(os.path.join(d, "m.npz"), "rb") as f:
            buf.write(f.read())
    return est, buf.getvalue()


_EST, _GOOD = _saved_bytes()


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _npy(array=None, *, header=None, body=b""):
    """A .npy member: of `array`, or a hand-written header dict with `body` after it."""
    f = io.BytesIO()
    if header is None:
        np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
        return f.getvalue()
    np.lib.format.write_array_header_1_0(f, header)
    return f.getvalue() + body


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return f.getvalue()


def _meta(data: bytes) -> dict:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return json.loads(str(z["__fastmlp__"][()]))


def _with_meta(meta) -> bytes:
    m = _members(_GOOD)
    m["__fastmlp__.npy"] = _npy(np.array(meta if isinstance(meta, str) else json.dumps(meta)))
    return _zip(m)


def _load_bytes(tmp_path, data: bytes, name="f.npz"):
    """load() of `data`; returns (estimator or exception, peak traced bytes)."""
    path = tmp_path / name
    path.write_bytes(data)
    tracemalloc.start()
    try:
        try:
            result = fastmlp.load(path)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            result = exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


def _forged():
    """(id, file bytes) of damaged and malicious files, each of which load must reject."""
    m = _members(_GOOD)
    meta = _meta(_GOOD)
    w0 = m["coefs_0.npy"]
    out = [
        ("empty", b""),
        ("not-a-zip", b"hello world" * 10),
        ("truncated-half", _GOOD[: len(_GOOD) // 2]),
        ("truncated-end", _GOOD[:-10]),
        (
            "huge-declared-shape",
            _zip(
                {
                    **m,
                    "coefs_0.npy": _npy(
                        header=dict(descr="<f8", fortran_order=False, shape=(10**6, 10**6)), body=w0[128:]
                    ),
                }
            ),
        ),
        (
            "huge-declared-1d",
            _zip(
                {
                    **m,
                    "loss_curve_.npy": _npy(
                        header=dict(descr="<f8", fortran_order=False, shape=(10**11,)), body=b"\0" * 64
                    ),
                }
            ),
        ),
        (
            "huge-metadata-string",
            _zip(
                {
                    **m,
                    "__fastmlp__.npy": _npy(header=dict(descr="<U1000000000", fortran_order=False, shape=()), body=b""),
                }
            ),
        ),
        (
            "object-dtype",
            _zip(
                {
                    **m,
                    "classes_.npy": _npy(
                        header=dict(descr="|O", fortran_order=False, shape=(4,)), body=b"\x80\x04N." * 4
                    ),
                }
            ),
        ),
        ("wrong-dtype-coefs", _zip({**m, "coefs_0.npy": _npy(np.zeros((F, 5), dtype=np.int64))})),
        ("float32-coefs-in-float64-model", _zip({**m, "coefs_0.npy": _npy(np.zeros((F, 5), dtype=np.float32))})),
        ("wrong-shape-coefs", _zip({**m, "coefs_0.npy": _npy(np.zeros((F, 6)))})),
        ("missing-coefs", _zip({k: v for k, v in m.items() if k != "coefs_1.npy"})),
        ("extra-array", _zip({**m, "payload.npy": _npy(np.zeros(3))})),
        ("extra-coefs", _zip({**m, "coefs_2.npy": _npy(np.zeros((4, 4)))})),
        ("non-npy-member", _zip({**m, "run.py": b"import os"})),
        ("compressed", _zip(m, zipfile.ZIP_DEFLATED)),
        ("bad-json", _with_meta("{not json")),
        ("json-list", _with_meta([1, 2, 3])),
        ("deep-json", _with_meta("[" * 100000 + "]" * 100000)),
        ("other-format", _with_meta({**meta, "format": "other"})),
        ("future-version", _with_meta({**meta, "version": 99})),
        ("version-string", _with_meta({**meta, "version": "1"})),
        ("version-zero", _with_meta({**meta, "version": 0})),
        ("unknown-class", _with_meta({**meta, "class": "os.system"})),
        ("unknown-param", _with_meta({**meta, "params": {**meta["params"], "evil": 1}})),
        ("bad-param", _with_meta({**meta, "params": {**meta["params"], "activation": "rm -rf"}})),
        ("huge-n-layers", _with_meta({**meta, "attributes": {**meta["attributes"], "n_layers_": 10**12}})),
        (
            "n-layers-one-short",
            _with_meta(
                {**meta, "attributes": {**meta["attributes"], "n_layers_": meta["attributes"]["n_layers_"] - 1}}
            ),
        ),
        ("huge-n-features", _with_meta({**meta, "attributes": {**meta["attributes"], "n_features_in_": 10**12}})),
        ("negative-n-iter", _with_meta({**meta, "attributes": {**meta["attributes"], "n_iter_": -1}})),
        ("str-loss", _with_meta({**meta, "attributes": {**meta["attributes"], "loss_": "x"}})),
        ("bad-y-type", _with_meta({**meta, "attributes": {**meta["attributes"], "y_type": "evil"}})),
        ("params-not-dict", _with_meta({**meta, "params": [1]})),
        ("classes-mismatch", _zip({**m, "classes_.npy": _npy(np.arange(7))})),
        ("2-D-curve", _zip({**m, "loss_curve_.npy": _npy(np.zeros((2, 2)))})),
    ]
    return out


FORGED = _forged()


@pytest.mark.parametrize("case,data", FORGED, ids=[c for c, _ in FORGED])
def test_load_rejects_damaged_and_malicious_files(tmp_path, case, data):
    result, peak = _load_bytes(tmp_path, data)
    assert isinstance(result, ValueError), f"{case}: got {result!r}"
    assert str(tmp_path / "f.npz") in str(result)  # the message says which file
    assert peak < 8 * 2**20 + 8 * len(data), f"{case}: load allocated {peak} bytes"


def test_a_pending_hidden_layer_sizes_loads_without_allocating(tmp_path):
    """hidden_layer_sizes in the file is the next fit's parameter (set_params after the fit may have
    changed it): the fitted shapes come from n_layers_ and the coefs_ chain, so even a huge value
    loads without allocating, predicts as saved, and is refused by the next fit."""
    meta = _meta(_GOOD)
    est, peak = _load_bytes(
        tmp_path, _with_meta({**meta, "params": {**meta["params"], "hidden_layer_sizes": [10**12]}})
    )
    assert peak < 8 * 2**20 + 8 * len(_GOOD)
    assert est.hidden_layer_sizes == [10**12]
    assert est.predict(X0).tobytes() == _EST.predict(X0).tobytes()
    with pytest.raises(ValueError, match="GiB"):
        est.fit(X0, _EST.predict(X0))


def test_forged_baseline_loads(tmp_path):
    """The untouched bytes load (so every rejection above is due to its forgery)."""
    est, _ = _load_bytes(tmp_path, _zip(_members(_GOOD)))
    assert est.predict(X0).tobytes() == _EST.predict(X0).tobytes()


@pytest.mark.slow
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_load_fuzz_mutated_files(tmp_path, data):
    """Random truncations, byte flips, inserted and deleted runs: a ValueError, or (a mutation
    zip and CRC checks cannot see, e.g. in a timestamp) the original model exactly."""
    raw = bytearray(_GOOD)
    for _ in range(data.draw(st.integers(1, 4), label="n_mutations")):
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)), label="at")
        if kind == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif kind == "truncate":
            del raw[at:]
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del raw[at : at + data.draw(st.integers(1, 64))]
        else:
            chunk = data.draw(st.binary(min_size=1, max_size=16))
            raw[at : at + len(chunk)] = chunk
        if not raw:
            break
    result, peak = _load_bytes(tmp_path, bytes(raw))
    assert peak < 8 * 2**20, f"load allocated {peak} bytes"
    if isinstance(result, Exception):
        assert isinstance(result, ValueError), repr(result)
        assert str(tmp_path / "f.npz") in str(result)
    else:
        assert result.predict(X0).tobytes() == _EST.predict(X0).tobytes()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)


@pytest.mark.slow
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    key=st.sampled_from(["params", "attributes", "class", "version", "format"]),
    path_key=st.text(max_size=24),
    value=_json,
    data=st.data(),
)
def test_load_fuzz_metadata(tmp_path, key, path_key, value, data):
    """Random JSON values in the metadata: load rejects them with ValueError or loads a model that predicts."""
    meta = _meta(_GOOD)
    if isinstance(meta[key], dict) and meta[key]:
        sub = data.draw(st.sampled_from(sorted(meta[key])) | st.just(path_key), label="sub")
        meta[key] = {**meta[key], sub: value}
    else:
        meta[key] = value
    result, peak = _load_bytes(tmp_path, _with_meta(meta))
    assert peak < 8 * 2**20
    if isinstance(result, Exception):
        assert isinstance(result, ValueError), repr(result)
    else:
        assert result.predict(X0).shape[0] == N


# --- 5. soak ----------------------------------------------------------------------


@pytest.mark.slow
def test_soak_fit_predict_save_load_does_not_leak(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    y = (X[:, 0] > 0).astype(int)
    path = tmp_path / "m.npz"
    rss = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.estimators.ConvergenceWarning)
        for i in range(1000):
            est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=i)
            est.fit(X, y)
            p = est.predict(X)
            est.save(path)
            back = fastmlp.load(path)
            assert back.predict(X).tobytes() == p.tobytes()
            if i + 1 in (100, 1000):
                rss[i + 1] = rss_bytes()
    growth = rss[1000] - rss[100]
    print(f"RSS after 100 cycles: {rss[100] / 2**20:.1f} MiB; growth over the next 900: {growth / 2**20:.2f} MiB")
    assert growth < 4 * 2**20 + asan_allowance()  # ASan's quarantine holds freed memory: not a leak


# --- 6. threads -------------------------------------------------------------------


def _run_threads(fns):
    errors, results = [], [None] * len(fns)

    def wrap(i, fn):
        try:
            results[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_threads_predict_with_one_estimator(kind):
    rng = np.random.default_rng(0)
    est = _fitted(kind)
    Xs = [rng.standard_normal((20000 + 50 * i, F)) for i in range(6)]
    expected = [est.predict(X) for X in Xs]

    def work(i):
        return [est.predict(Xs[i]) for _ in range(10)]

    for got, want in zip(_run_threads([lambda i=i: work(i) for i in range(6)]), expected):
        for g in got:
            assert g.tobytes() == want.tobytes()


def test_fit_in_one_thread_while_another_estimator_predicts():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 10))
    y = (X[:, 0] > 0).astype(int)
    kw = dict(hidden_layer_sizes=(32,), max_iter=30, tol=0, n_iter_no_change=10**6, random_state=0)
    b = _fitted("reg")
    Xb = rng.standard_normal((300, F))
    want = b.predict(Xb)
    predicted = threading.Semaphore(0)

    def after_epoch(metrics):
        # Each epoch ends only once the other thread has predicted again: the two really
        # interleave however the threads are scheduled (a loaded machine once ran the whole
        # fit before the predicting thread got the CPU).
        assert predicted.acquire(timeout=60)

    a = MLPClassifier(**kw, callbacks=[after_epoch])
    ref = MLPClassifier(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.estimators.ConvergenceWarning)
        ref.fit(X, y)
        done = threading.Event()

        def fit():
            try:
                a.fit(X, y)
            finally:
                done.set()

        def predict():
            n = 0
            while not done.is_set():
                assert b.predict(Xb).tobytes() == want.tobytes()
                n += 1
                predicted.release()
            return n

        n_predictions = _run_threads([fit, predict])[1]
    assert n_predictions >= 30  # at least one prediction per epoch of the other estimator's fit
    assert _weights(a) == _weights(ref)


# --- 7. a gradient hook that raises leaves Adam's step count alone -------------------


@pytest.mark.parametrize("opt", [fastmlp.Adam, fastmlp.AdamW])
def test_failed_hook_leaves_the_optimizer_unchanged(opt):
    net = fastmlp.Network([3, 4, 2], output_activation="softmax", dtype="float64", seed=0)
    twin = fastmlp.Network([3, 4, 2], output_activation="softmax", dtype="float64", seed=0)
    o, o_twin = opt(0.01), opt(0.01)
    X, y = X0, Y_CLF % 2
    net.train_epoch(X, y, "log_loss", o, batch_size=8, shuffle=False)
    twin.train_epoch(X, y, "log_loss", o_twin, batch_size=8, shuffle=False)
    t, params = o.t, np.array(net.params)

    def hook(g, loss):
        raise RuntimeError("allreduce failed")

    with pytest.raises(RuntimeError, match="allreduce failed"):
        net.train_epoch(X, y, "log_loss", o, batch_size=8, shuffle=False, gradient_hook=hook)
    assert o.t == t
    assert np.array_equal(net.params, params)
    net.train_epoch(X, y, "log_loss", o, batch_size=8, shuffle=False)
    twin.train_epoch(X, y, "log_loss", o_twin, batch_size=8, shuffle=False)
    assert o.t == o_twin.t
    assert np.array_equal(net.params, twin.params)
