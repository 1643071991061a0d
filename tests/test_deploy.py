"""From notebook to production: the estimators' fast path for small batches, one fastmlp.load for
both file formats, and the small traps a new user met (callbacks, pickling, schedules)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from pathlib import Path

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


def test_network_forward_takes_a_ready_array_as_it_is(monkeypatch):
    """Network.forward: an aligned C-contiguous finite array of its dtype and width goes to the core
    unconverted; anything else through as_matrix, with its messages."""
    from fastmlp import network as network_module

    net = fastmlp.Network([3, 5, 2], dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3))
    expected = net.forward(x.tolist())
    real, calls = network_module.as_matrix, []
    monkeypatch.setattr(network_module, "as_matrix", lambda *a, **k: calls.append(1) or real(*a, **k))
    np.testing.assert_array_equal(net.forward(x), expected)
    np.testing.assert_array_equal(net.forward(x[:1]), expected[:1])
    assert not calls
    np.testing.assert_array_equal(net.forward(x.astype(np.float32)), net.forward(x.astype(np.float32).tolist()))
    assert calls
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"X must be finite, got NaN at index \(1, 2\)"):
        net.forward(bad)
    # The core checks a ready array's values (one pass, before anything is written): the first
    # value that is not finite, "NaN" if any is, as as_matrix says it; a given `out` is untouched.
    bad[0, 1] = np.inf
    out, converted = np.full((4, 2), 7.0), len(calls)
    with pytest.raises(ValueError, match=r"X must be finite, got NaN at index \(0, 1\)"):
        net.forward(bad, out=out)
    bad[1, 2] = -np.inf
    with pytest.raises(ValueError, match=r"X must be finite, got infinity at index \(0, 1\)"):
        net.forward(bad, out=out)
    np.testing.assert_array_equal(out, 7.0)
    f32 = fastmlp.Network([3, 5, 2], dtype="float32", seed=0)
    with pytest.raises(ValueError, match=r"X must be finite, got infinity at index \(0, 1\)"):
        f32.forward(bad.astype(np.float32))
    assert len(calls) == converted  # ready arrays all: the core checked them, not as_matrix
    with pytest.raises(ValueError, match=r"X must have 3 features \(columns\), got shape \(1, 4\)"):
        net.forward(np.zeros((1, 4)))


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


# ------------------------------------------------------------------ the traps
def test_callbacks_takes_a_single_callable_and_numbers_epochs_from_one():
    seen = []
    est, X = fitted(callbacks=lambda m: seen.append(m["epoch"]))
    assert seen == list(range(1, est.n_iter_ + 1)) and est.n_iter_ == 20
    seen.clear()
    est.partial_fit(X, est.predict(X))
    assert seen == [1]
    with pytest.raises(TypeError, match="must be None, a callable or a list of callables; got 3"):
        fitted(callbacks=3)


def module_level_callback(metrics):
    return None


def test_a_model_fitted_with_a_lambda_callback_pickles_without_it(tmp_path):
    est, X = fitted(callbacks=[lambda m: None])
    with pytest.warns(UserWarning, match=r"cannot be pickled .*callbacks=None \(as save\(\) writes it\)"):
        data = pickle.dumps(est)
    back = pickle.loads(data)
    assert back.callbacks is None and est.callbacks is not None  # the original keeps them
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    kept, _ = fitted(callbacks=[module_level_callback])  # picklable: kept, no warning
    assert pickle.loads(pickle.dumps(kept)).callbacks == [module_level_callback]
    unfitted = fastmlp.MLPClassifier(callbacks=[module_level_callback])
    assert pickle.loads(pickle.dumps(unfitted)).callbacks == [module_level_callback]


def test_cosine_runs_its_planned_epochs_without_a_convergence_warning():
    """The training-loss tol criterion once stopped a 50-epoch cosine run at 47 and warned at max_iter."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((80, 3))
    y = (X[:, 0] > 0).astype(int)
    kw = dict(hidden_layer_sizes=(4,), max_iter=30, random_state=0, tol=10.0, n_iter_no_change=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cos = fastmlp.MLPClassifier(learning_rate="cosine", **kw).fit(X, y)
    assert cos.n_iter_ == 30  # tol=10 stops any other run after a few epochs:
    assert fastmlp.MLPClassifier(learning_rate="step", **kw).fit(X, y).n_iter_ == 4
    with pytest.warns(fastmlp.ConvergenceWarning, match="Maximum iterations"):
        fastmlp.MLPClassifier(learning_rate="step", hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    stopped = fastmlp.MLPClassifier(learning_rate="cosine", early_stopping=True, **kw).fit(X, y)
    assert stopped.n_iter_ < 30  # the validation criterion still stops it


@pytest.mark.slow
def test_the_dask_example_runs_as_a_script():
    """docs/distributed.md's Dask snippet pasted into a script died with "Nanny failed to start"
    (no __main__ guard); examples/dask_search.py is that snippet as a script that runs."""
    pytest.importorskip("dask.distributed")
    script = Path(__file__).resolve().parents[1] / "examples" / "dask_search.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("training accuracy") == 3 and "best lr=" in done.stdout


@pytest.mark.slow
def test_the_latency_benchmark_prints_its_table():
    """benchmarks/latency.py runs and prints one row per path (its numbers are not asserted: timing is noise here)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "latency.py"
    done = subprocess.run(
        [sys.executable, str(script), "--repeats", "20", "--hidden", "8"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| path |") and {r.split(" | ")[0] for r in table[1:]} >= {
        "| MLPClassifier.predict_proba",
        "| Network.forward",
    }
