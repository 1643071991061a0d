"""From notebook to production: the estimators' fast path for small batches, one fastmlp.load for
both file formats, and the small traps a new user met (callbacks, pickling, schedules)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp import _compat


def fitted(cls=fastmlp.MLPClassifier, dtype=None, **kw):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    y = rng.integers(0, 3, 60) if cls is fastmlp.MLPClassifier else X @ [1.0, -2.0, 0.5, 0.0]
    est = cls(hidden_layer_sizes=(7,), max_iter=20, random_state=0, dtype=dtype, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.ConvergenceWarning)
        return est.fit(X, y), X


def no_validation(monkeypatch):
    """Makes scikit-learn's validation fail, so that a call that still succeeds did not use it."""

    def refuse(*args, **kwargs):
        raise AssertionError("validate_X was called")

    monkeypatch.setattr(_compat, "validate_X", refuse)


# ------------------------------------------------------------------ fast path
@pytest.mark.parametrize("dtype", [None, "float32"])
@pytest.mark.parametrize("cls", [fastmlp.MLPClassifier, fastmlp.MLPRegressor])
def test_a_small_contiguous_array_skips_validation_with_the_same_results(cls, dtype, monkeypatch):
    est, X = fitted(cls, dtype)
    Xd = X.astype(dtype or np.float64)
    methods = ["predict", "predict_proba", "predict_log_proba"] if cls is fastmlp.MLPClassifier else ["predict"]
    expected = {m: getattr(est, m)(Xd[:5].tolist()) for m in methods}  # a list: the full path
    no_validation(monkeypatch)
    for m in methods:
        for rows in (Xd[:1], Xd[:5]):
            got = getattr(est, m)(np.ascontiguousarray(rows))
            np.testing.assert_array_equal(got, expected[m][: len(rows)])


@pytest.mark.parametrize(
    "X, error",
    [
        (np.zeros((1, 3)), "X has 3 features, but MLPClassifier is expecting 4 features as input."),
        (np.array([[0.0, np.nan, 0.0, 0.0]]), "Input X contains NaN"),
        (np.array([[0.0, np.inf, 0.0, 0.0]]), "Input X contains infinity"),
        (np.zeros((0, 4)), "Found array with 0 sample"),
        (np.zeros(4), "Expected 2D array, got 1D array instead"),
    ],
)
def test_bad_arrays_still_get_the_full_paths_errors(X, error):
    est, _ = fitted()
    for arr in (X, X.tolist()) if len(X) else (X,):  # the fast path's candidate and a list (never fast): one message
        with pytest.raises(ValueError, match=error):
            est.predict_proba(arr)


def test_arrays_the_fast_path_declines_are_converted_as_before(monkeypatch):
    """Another dtype, Fortran order, a strided view, an int array: all through validation, same results."""
    est, X = fitted()
    expected = est.predict_proba(X[:6].tolist())
    real, calls = _compat.validate_X, []
    monkeypatch.setattr(_compat, "validate_X", lambda *a, **k: calls.append(1) or real(*a, **k))
    for other in (X[:6].astype(np.float32), np.asfortranarray(X[:6]), X[:12:2], (X[:6] * 1000).astype(np.int64)):
        calls.clear()
        got = est.predict_proba(other)
        assert calls, f"{other.dtype} {other.flags['C_CONTIGUOUS']}: expected the full path"
        if other.dtype.kind == "f":
            np.testing.assert_allclose(got, est.predict_proba(other.tolist()), rtol=1e-6)
    np.testing.assert_allclose(est.predict_proba(np.asfortranarray(X[:6])), expected, rtol=0, atol=0)


def test_the_fast_path_follows_changed_weights_and_parameters():
    """coefs_ replaced in place, set_params(activation=...), feature names: each seen as the full path sees it."""
    est, X = fitted()
    x = np.ascontiguousarray(X[:3])
    before = est.predict_proba(x)
    est.coefs_[0] = est.coefs_[0] * 3.0  # a new array in the same list
    after = est.predict_proba(x)
    assert not np.allclose(after, before)
    np.testing.assert_array_equal(after, est.predict_proba(x.tolist()))
    est.set_params(activation="tanh")
    tanh = est.predict_proba(x)
    np.testing.assert_array_equal(tanh, est.predict_proba(x.tolist()))
    assert not np.allclose(tanh, after)

    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X, columns=list("abcd"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.ConvergenceWarning)
        named = fastmlp.MLPClassifier(hidden_layer_sizes=(3,), max_iter=5, random_state=0).fit(df, np.arange(60) % 2)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        named.predict(x)


def test_a_pickled_or_saved_model_predicts_through_the_fast_path(tmp_path, monkeypatch):
    est, X = fitted()
    x = np.ascontiguousarray(X[:2])
    expected = est.predict_proba(x)
    back = pickle.loads(pickle.dumps(est))
    assert "_fast" not in back.__dict__
    np.testing.assert_array_equal(back.predict_proba(x), expected)  # the first call rebuilds the network
    est.save(tmp_path / "m.npz")
    loaded = fastmlp.load(tmp_path / "m.npz")
    no_validation(monkeypatch)
    np.testing.assert_array_equal(back.predict_proba(x), expected)
    np.testing.assert_array_equal(loaded.predict_proba(x), expected)


# ------------------------------------------------------------ one fastmlp.load
def test_fastmlp_load_reads_network_files_too_and_network_load_names_fastmlp_load(tmp_path):
    net = fastmlp.Network([4, 6, 2], activation="tanh", output_activation="softmax", dtype="float64", seed=2)
    net.save(tmp_path / "net.npz")
    back = fastmlp.load(tmp_path / "net.npz")
    assert isinstance(back, fastmlp.Network) and repr(back) == repr(net)
    np.testing.assert_array_equal(back.params, net.params)
    est, _ = fitted()
    est.save(tmp_path / "est.npz")
    with pytest.raises(ValueError, match=r"est.npz' is not a fastmlp network file but an estimator's .*fastmlp.load"):
        fastmlp.Network.load(tmp_path / "est.npz")
    np.savez(tmp_path / "other.npz", __fastmlp__=np.array('{"format": "something.else"}'))
    with pytest.raises(ValueError, match="not a fastmlp model file"):
        fastmlp.load(tmp_path / "other.npz")
