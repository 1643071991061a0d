"""fastmlp's estimators against scikit-learn's, number for number (float64).

The issue's protocol: start both from identical weights (coefs_ set by hand,
warm_start=True, shuffle=False), train a few epochs, compare loss_curve_ and
the final weights. Beyond it: with the same random_state both draw the same
initial weights, shuffles and validation split, so whole fits agree.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkClassifier, MLPRegressor as SkRegressor

import fastmlp

TIGHT = dict(rtol=1e-10, atol=1e-12)


def _data(kind, rng, n=120):
    X = rng.standard_normal((n, 6))
    if kind == "multiclass":
        return X, np.array(["ant", "bee", "cat"])[rng.integers(0, 3, n)]
    if kind == "binary":
        return X, rng.integers(0, 2, n) * 5 - 1  # labels -1 and 4
    if kind == "multilabel":
        return X, (rng.random((n, 3)) < 0.4).astype(int)
    if kind == "multioutput":
        return X, X @ rng.standard_normal((6, 3)) + 0.1 * rng.standard_normal((n, 3))
    if kind == "poisson":
        return X, rng.poisson(np.exp(0.3 * X[:, 0]))
    return X, X @ rng.standard_normal(6)


def _pair(kind, **params):
    if kind in ("multiclass", "binary", "multilabel"):
        return SkClassifier(**params), fastmlp.MLPClassifier(**params)
    if kind == "poisson":
        return SkRegressor(loss="poisson", **params), fastmlp.MLPRegressor(loss="poisson", **params)
    return SkRegressor(**params), fastmlp.MLPRegressor(**params)


def _assert_same_fit(a, b, rtol=1e-10):
    if hasattr(a, "loss_curve_"):
        assert len(a.loss_curve_) == len(b.loss_curve_)
        np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(b.loss_, a.loss_, rtol=rtol, atol=1e-12)
    for got, want in zip(b.coefs_ + b.intercepts_, a.coefs_ + a.intercepts_):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12)
    for name in (
        "n_iter_",
        "t_",
        "n_layers_",
        "n_outputs_",
        "out_activation_",
        "n_features_in_",
        "best_loss_",
        "validation_scores_",
        "best_validation_score_",
    ):
        if hasattr(a, name):
            want, got = getattr(a, name), getattr(b, name)
            if isinstance(want, (float, list)) and want is not None:
                np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12)
            else:
                assert got == want, name


@pytest.mark.parametrize("kind", ["multiclass", "multioutput"])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_parity_from_identical_weights(solver, kind, rng):
    """The issue's protocol: the same coefs_ set by hand, warm_start, shuffle=False."""
    X, y = _data(kind, rng)
    params = dict(
        hidden_layer_sizes=(7, 5),
        solver=solver,
        max_iter=1,
        shuffle=False,
        alpha=0.01,
        learning_rate_init=0.05,
        batch_size=32,
        random_state=1,
    )
    sk, fm = _pair(kind, **params)
    with pytest.warns(ConvergenceWarning):
        sk.fit(X, y)
    with pytest.warns(ConvergenceWarning):
        fm.fit(X, y)
    coefs = [rng.uniform(-0.5, 0.5, c.shape) for c in sk.coefs_]
    intercepts = [rng.uniform(-0.5, 0.5, b.shape) for b in sk.intercepts_]
    for est in (sk, fm):
        est.coefs_ = [c.copy() for c in coefs]
        est.intercepts_ = [b.copy() for b in intercepts]
        est.set_params(warm_start=True, max_iter=6)
        with pytest.warns(ConvergenceWarning):
            est.fit(X, y)
    _assert_same_fit(sk, fm)
    np.testing.assert_allclose(
        fm.predict(X) if kind == "multioutput" else fm.predict_proba(X),
        sk.predict(X) if kind == "multioutput" else sk.predict_proba(X),
        **TIGHT,
    )


CASES = [
    ("multiclass", dict(solver="adam")),
    ("multiclass", dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.05)),
    ("multiclass", dict(solver="sgd", learning_rate="adaptive", tol=1e-2, max_iter=60, nesterovs_momentum=False)),
    ("multiclass", dict(early_stopping=True, max_iter=60)),
    ("binary", dict(early_stopping=True, max_iter=40, activation="tanh")),
    ("binary", dict(solver="sgd", momentum=0.5, activation="logistic")),
    ("multilabel", dict(activation="identity")),
    ("multioutput", dict(alpha=1.0, batch_size=50)),
    ("regression", dict(early_stopping=True, max_iter=40, validation_fraction=0.2)),
    ("poisson", dict(learning_rate_init=0.01)),
]


@pytest.mark.parametrize("kind,params", CASES)
def test_same_random_state_same_model(kind, params, rng):
    """Same random_state: same initial weights, shuffles and validation split as scikit-learn."""
    X, y = _data(kind, rng)
    params = dict(dict(hidden_layer_sizes=(8,), random_state=3, max_iter=15), **params)
    sk, fm = _pair(kind, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y)
        fm.fit(X, y)
    _assert_same_fit(sk, fm)
    method = "predict_proba" if kind in ("multiclass", "binary", "multilabel") else "predict"
    np.testing.assert_allclose(getattr(fm, method)(X), getattr(sk, method)(X), **TIGHT)
    if method == "predict_proba":
        np.testing.assert_array_equal(fm.predict(X), sk.predict(X))
    assert fm.score(X, y) == pytest.approx(sk.score(X, y), rel=1e-12)


@pytest.mark.parametrize("kind", ["multiclass", "multioutput"])
def test_sample_weight_parity(kind, rng):
    X, y = _data(kind, rng)
    w = rng.uniform(0, 3, len(X))
    sk, fm = _pair(kind, hidden_layer_sizes=(6,), random_state=0, max_iter=10, batch_size=25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y, sample_weight=w)
        fm.fit(X, y, sample_weight=w)
    _assert_same_fit(sk, fm)
    assert fm.score(X, y, sample_weight=w) == pytest.approx(sk.score(X, y, sample_weight=w), rel=1e-12)


@pytest.mark.parametrize("kind", ["multiclass", "multioutput", "binary"])
def test_lbfgs_parity(kind, rng):
    X, y = _data(kind, rng)
    w = rng.uniform(0.5, 2, len(X))
    sk, fm = _pair(kind, hidden_layer_sizes=(6,), solver="lbfgs", random_state=0, max_iter=40, alpha=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y, sample_weight=w)
        fm.fit(X, y, sample_weight=w)
    # L-BFGS amplifies rounding differences (sums in another order) over 40 iterations.
    _assert_same_fit(sk, fm, rtol=1e-6)
    assert fm.n_iter_ == sk.n_iter_


def test_lbfgs_stops_at_max_fun_with_a_warning(rng):
    X, y = _data("multiclass", rng)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        est = fastmlp.MLPClassifier((5,), solver="lbfgs", max_fun=5, random_state=0).fit(X, y)
    assert est.n_iter_ <= 5


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_input_parity(fmt, rng):
    X = sp.random(150, 40, density=0.1, random_state=1, format=fmt)
    y = rng.integers(0, 3, 150)
    sk, fm = _pair("multiclass", hidden_layer_sizes=(9,), random_state=0, max_iter=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y)
        fm.fit(X, y)
    _assert_same_fit(sk, fm)
    np.testing.assert_allclose(fm.predict_proba(X), sk.predict_proba(X), **TIGHT)
    np.testing.assert_allclose(fm.predict_proba(X), fm.predict_proba(X.toarray()), **TIGHT)


def test_partial_fit_parity(rng):
    X, y = _data("multiclass", rng)
    sk, fm = _pair("multiclass", hidden_layer_sizes=(6,), random_state=0, solver="sgd")
    for start in range(0, 120, 40):
        for est in (sk, fm):
            est.partial_fit(X[start : start + 40], y[start : start + 40], classes=np.unique(y))
    _assert_same_fit(sk, fm)


def test_float32_stays_float32_and_matches_loosely(rng):
    X, y = _data("multiclass", rng)
    X = X.astype(np.float32)
    sk, fm = _pair("multiclass", hidden_layer_sizes=(6,), random_state=0, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y)
        fm.fit(X, y)
    assert fm.coefs_[0].dtype == np.float32 and fm.predict_proba(X).dtype == np.float32
    np.testing.assert_allclose(fm.loss_curve_, sk.loss_curve_, rtol=1e-5)
    for got, want in zip(fm.coefs_, sk.coefs_):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
