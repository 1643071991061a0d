"""The estimators' networks of layers: normalization=, residual=, layers= (issue 23).

What they build (checked against the spec), that they fit, that they train as a fastmlp.Network of
the same layers trained the same way, that their other parameters and running statistics survive
pickling, save/load, clone, warm_start, partial_fit, early stopping and refits, and bad input.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression

import fastmlp
from fastmlp import MLPClassifier, MLPRegressor
from fastmlp.layers import Activation, BatchNorm, Dense, Dropout, Embedding, LayerNorm, Residual

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _clf_data():
    X, y = make_classification(240, 6, n_informative=4, n_classes=3, random_state=0)
    return X, y


def _reg_data():
    X, y = make_regression(240, 6, noise=0.1, random_state=0)
    return X, y / np.std(y)


def _with_codes(X):
    """X whose column 2 holds integer codes 0..4 (for an Embedding), informative of the target."""
    X = X.copy()
    X[:, 2] = np.digitize(X[:, 2], [-1.0, -0.3, 0.3, 1.0])
    return X


KINDS = [
    dict(normalization="batch"),
    dict(normalization="layer"),
    dict(residual=True),
    dict(normalization="batch", residual=True, activation="gelu"),
    dict(layers=[Dense(32), LayerNorm(), Activation("silu"), Residual([Dense(32), BatchNorm(), Activation("relu")])]),
    dict(layers=[Embedding([2], [5], [3]), Dense(32), BatchNorm(), Activation("mish"), Dropout(0.1)]),
]
IDS = ["batch", "layer", "residual", "batch_residual_gelu", "layers", "embedding"]


def _flatten(spec):
    for d in spec:
        yield d
        if d["kind"] == "residual":
            yield from _flatten(d["layers"])


def test_architecture_of_the_parameters():
    X, y = _clf_data()
    est = MLPClassifier((16, 16, 8, 8), normalization="batch", residual=True, dropout=0.1, max_iter=2).fit(X, y)
    spec = est.fitted_network().spec
    block = [Dense(16), BatchNorm(), Activation("relu"), Dropout(0.1)]
    want = [*block, Residual(tuple(block))]
    block8 = [Dense(8), BatchNorm(), Activation("relu"), Dropout(0.1)]
    want += [*block8, Residual(tuple(block8)), Dense(3)]
    assert spec == fastmlp.layers.to_spec(want)
    assert [c.shape for c in est.coefs_] == [(6, 16), (16, 16), (16, 8), (8, 8), (8, 3)]
    # coefs_ are the Dense layers' views
    net = est.fitted_network()
    dense = [arrays for kind, arrays in net.layer_params() if kind == "dense"]
    assert all(np.shares_memory(c, d["W"]) for c, d in zip(est.coefs_, dense))
    assert est.n_layers_ == 6


def test_residual_without_equal_widths_is_the_plain_network():
    """residual=True with no two equal consecutive widths builds Dense/Activation only: the same
    initial draws and training as the default estimator, bit for bit."""
    X, y = _clf_data()
    kw = dict(hidden_layer_sizes=(12, 7), max_iter=5, random_state=0)
    a = MLPClassifier(**kw).fit(X, y)
    b = MLPClassifier(residual=True, **kw).fit(X, y)
    assert b.fitted_network().activation is None and a.fitted_network().activation == "relu"  # layers / shorthand
    assert b.fitted_network().spec == a.fitted_network().spec
    for ca, cb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


@pytest.mark.parametrize("kw", KINDS, ids=IDS)
def test_classifier_fits(kw):
    X, y = _clf_data()
    X = _with_codes(X)
    est = MLPClassifier((32, 32), max_iter=150, random_state=0, learning_rate_init=3e-3, **kw).fit(X, y)
    assert est.score(X, y) > 0.8  # 3 classes: chance is 1/3
    assert est.predict_proba(X).shape == (len(X), 3)


@pytest.mark.parametrize("kw", KINDS, ids=IDS)
def test_regressor_fits(kw):
    X, y = _reg_data()
    X = _with_codes(X)
    est = MLPRegressor(hidden_layer_sizes=(32, 32), max_iter=150, random_state=0, learning_rate_init=3e-3, **kw).fit(
        X, y
    )
    assert est.score(X, y) > 0.9


@pytest.mark.parametrize("loss", ["huber", "absolute_error", "quantile"])
def test_robust_losses_with_layers(loss):
    X, y = _reg_data()
    est = MLPRegressor(
        loss, hidden_layer_sizes=(32,), normalization="layer", activation="silu", max_iter=150, random_state=0
    )
    est.set_params(learning_rate_init=3e-3).fit(X, y)
    assert est.score(X, y) > 0.8


def test_label_smoothing_with_layers():
    X, y = _clf_data()
    est = MLPClassifier((32,), normalization="batch", activation="elu", label_smoothing=0.1, max_iter=100)
    assert est.set_params(random_state=0).fit(X, y).score(X, y) > 0.75


def _same_training_as_network(est, X, Y, loss, epochs):
    """Fits `est` once (max_iter=1), then trains a Network with its layers, parameters and state and
    `est` with warm_start for `epochs` epochs; both must end with the same parameters and state."""
    est.set_params(max_iter=1).fit(X, Y.ravel() if loss == "squared_error" else np.argmax(Y, axis=1))
    fitted = est.fitted_network()
    net = fastmlp.Network(
        X.shape[1], layers=fitted.spec, output_activation=fitted.output_activation, dtype="float64", seed=0
    )
    net.params[:] = fitted.params
    net.state[:] = fitted.state
    opt = fastmlp.optim.Adam(lr=est.learning_rate_init, beta1=0.9, beta2=0.999, eps=1e-8)
    for _ in range(epochs):
        net.train_epoch(X, Y, loss, opt, batch_size=est.batch_size, shuffle=False)
    est.set_params(warm_start=True, max_iter=epochs).fit(
        X, Y.ravel() if loss == "squared_error" else np.argmax(Y, axis=1)
    )
    got = est.fitted_network()
    np.testing.assert_array_equal(got.params, net.params)  # the same C++ steps: bit for bit
    np.testing.assert_array_equal(got.state, net.state)
    assert got.state.size == net.state.size


@pytest.mark.parametrize("kw", KINDS[:5], ids=IDS[:5])
def test_regressor_trains_as_the_network(kw):
    X, y = _reg_data()
    est = MLPRegressor(
        hidden_layer_sizes=(16, 16), alpha=0.0, batch_size=40, shuffle=False, random_state=0, tol=0, **kw
    )
    _same_training_as_network(est, X, y.reshape(-1, 1), "squared_error", 3)


def test_classifier_trains_as_the_network():
    X, y = _clf_data()
    est = MLPClassifier((16, 16), normalization="batch", residual=True, alpha=0.0, batch_size=48, shuffle=False)
    est.set_params(random_state=0, tol=0)
    _same_training_as_network(est, X, np.eye(3)[y], "log_loss", 3)


@pytest.mark.parametrize("kw", KINDS, ids=IDS)
def test_round_trips_predict_and_continue_identically(kw, tmp_path):
    X, y = _clf_data()
    X = _with_codes(X)
    est = MLPClassifier((16, 16), max_iter=5, random_state=0, **kw).fit(X, y)
    assert (est.fitted_network().state.size > 0) == ("BatchNorm" in repr(kw) or "'batch'" in repr(kw))
    est.save(tmp_path / "m.npz")
    copies = [pickle.loads(pickle.dumps(est)), fastmlp.load(tmp_path / "m.npz")]
    for other in copies:
        np.testing.assert_array_equal(other.predict_proba(X), est.predict_proba(X))
        np.testing.assert_array_equal(other.fitted_network().params, est.fitted_network().params)
        np.testing.assert_array_equal(other.fitted_network().state, est.fitted_network().state)
    for other in copies:
        other.partial_fit(X, y)
    est.partial_fit(X, y)
    for other in copies:
        np.testing.assert_array_equal(other.fitted_network().params, est.fitted_network().params)
        np.testing.assert_array_equal(other.fitted_network().state, est.fitted_network().state)
        np.testing.assert_array_equal(other.predict_proba(X), est.predict_proba(X))


def test_files_of_plain_networks_stay_version_2(tmp_path):
    import json

    X, y = _clf_data()
    MLPClassifier((8,), max_iter=2, random_state=0).fit(X, y).save(tmp_path / "plain.npz")
    MLPClassifier((8,), normalization="layer", max_iter=2, random_state=0).fit(X, y).save(tmp_path / "l.npz")
    for name, version in (("plain", 2), ("l", 3)):
        with np.load(tmp_path / f"{name}.npz") as z:
            assert json.loads(str(z["__fastmlp__"]))["version"] == version
            assert ("layer_params" in z.files) == (version == 3)


def test_a_file_of_layers_for_an_older_reader(tmp_path, monkeypatch):
    """A fastmlp that reads up to version 2 refuses a file of layers with 'upgrade fastmlp'."""
    from fastmlp import io

    X, y = _clf_data()
    MLPClassifier((8,), normalization="batch", max_iter=2, random_state=0).fit(X, y).save(tmp_path / "b.npz")
    monkeypatch.setattr(io, "FORMAT_VERSION", 2)
    with pytest.raises(ValueError, match=r"format version 3.*upgrade fastmlp"):
        fastmlp.load(tmp_path / "b.npz")


def test_damaged_layer_arrays_are_refused(tmp_path):
    X, y = _clf_data()
    est = MLPClassifier((8,), normalization="batch", max_iter=2, random_state=0).fit(X, y)
    est.save(tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["layer_state"] = arrays["layer_state"][:-1]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="layer_state has shape"):
        fastmlp.load(tmp_path / "bad.npz")


def test_clone_is_safe_and_refits_identically():
    X, y = _clf_data()
    layers = [Dense(16), BatchNorm(momentum=0.2), Activation("gelu"), Residual([Dense(16), Activation("tanh")])]
    est = MLPClassifier(layers=layers, max_iter=5, random_state=0)
    twin = clone(est)
    assert twin.get_params()["layers"] == layers
    est.fit(X, y)
    twin.fit(X, y)
    np.testing.assert_array_equal(est.predict_proba(X), twin.predict_proba(X))
    assert est.layers == layers  # not changed by fit


def test_early_stopping_restores_the_best_epochs_running_statistics():
    X, y = _clf_data()
    est = MLPClassifier(
        (16,), normalization="batch", early_stopping=True, n_iter_no_change=3, max_iter=60, random_state=0
    )
    est.set_params(learning_rate_init=0.05).fit(X, y)
    best = int(np.argmax(est.validation_scores_))
    assert best < len(est.validation_scores_) - 1  # stopped after the best epoch: a restore happened
    net = est.fitted_network()
    np.testing.assert_array_equal(net.params, est._best_params)
    np.testing.assert_array_equal(net.state, est._best_state)


def test_refit_after_set_params_keeps_the_other_parameters():
    """set_params(dropout=...) rebuilds the network for the next fit (Dropout layers join the spec):
    its normalization parameters and running statistics are carried over, not re-initialized."""
    X, y = _clf_data()
    est = MLPClassifier((16,), normalization="batch", max_iter=20, random_state=0, learning_rate_init=0.01)
    before = est.fit(X, y).fitted_network()
    norm = next(a for kind, a in before.layer_params() if kind == "batch_norm")
    gamma, beta = np.array(norm["weight"]), np.array(norm["bias"])
    assert not np.allclose(gamma, 1.0, atol=1e-3) and not np.allclose(beta, 0.0, atol=1e-3)
    est.set_params(dropout=0.2, warm_start=True, max_iter=1, learning_rate_init=1e-12).fit(X, y)
    rebuilt = est.fitted_network()
    assert rebuilt is not before and {"kind": "dropout", "rate": 0.2} in rebuilt.spec
    norm = next(a for kind, a in rebuilt.layer_params() if kind == "batch_norm")
    np.testing.assert_allclose(norm["weight"], gamma, atol=1e-9)
    np.testing.assert_allclose(norm["bias"], beta, atol=1e-9)


def test_a_new_fit_starts_the_layers_afresh():
    X, y = _clf_data()
    est = MLPClassifier((16,), normalization="batch", max_iter=5, random_state=0).fit(X, y)
    first = np.array(est.fitted_network().params), np.array(est.fitted_network().state)
    est.fit(X, y)  # warm_start=False: the same random_state, the same fit
    np.testing.assert_array_equal(est.fitted_network().params, first[0])
    np.testing.assert_array_equal(est.fitted_network().state, first[1])


def test_exports_of_an_estimator_of_layers():
    ort = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    from fastmlp.export import to_onnx, to_torch

    X, y = _clf_data()
    X = _with_codes(X)
    for target in (y, (y > 0).astype(int)):
        est = MLPClassifier(layers=KINDS[5]["layers"] + KINDS[4]["layers"][:3], max_iter=5, random_state=0)
        est.fit(X, target)
        proto = to_onnx(est, dtype=np.float64)
        label, proba = ort.InferenceSession(proto.SerializeToString()).run(None, {"X": X})
        np.testing.assert_allclose(proba, est.predict_proba(X), atol=1e-12)
        np.testing.assert_array_equal(label, est.predict(X))
        out = to_torch(est)(torch.from_numpy(X)).detach().numpy()
        np.testing.assert_allclose(out, est.predict_proba(X), atol=1e-12)


@pytest.mark.parametrize(
    "kw, error, match",
    [
        (dict(normalization="group"), ValueError, "normalization"),
        (dict(residual="yes"), (TypeError, ValueError), "residual"),
        (dict(layers="dense"), TypeError, "layers"),
        (dict(layers=[Dense(4), "relu"]), TypeError, r"layers.*\[1\]"),
        (dict(layers=[Embedding([9], [3], [2]), Dense(4)]), ValueError, "Embedding columns"),
        (dict(layers=[Dense(4), Residual([Dense(5)])]), ValueError, "Residual"),
        (dict(layers=[Dense(4)], normalization="batch"), ValueError, "leave normalization='batch'"),
        (dict(layers=[Dense(4)], dropout=0.1), ValueError, "Dropout layers in the list"),
        (dict(normalization="layer", dropout=[0.1, 0.0]), ValueError, r"dropout\[0\]"),
        (dict(normalization="batch", solver="lbfgs"), ValueError, "lbfgs"),
        (dict(layers=[Dense(4), BatchNorm()], solver="lbfgs"), ValueError, "lbfgs"),
        (dict(layers=[Dense(4), Dropout(0.5)], solver="lbfgs"), ValueError, "lbfgs"),
    ],
)
def test_bad_input_changes_nothing(kw, error, match):
    X, y = _clf_data()
    est = MLPClassifier((8,), normalization="layer", max_iter=3, random_state=0).fit(X, y)
    before = est.predict_proba(X)
    attrs = {k: v for k, v in est.__dict__.items() if k.endswith("_") and not k.startswith("_")}
    est.set_params(**{"normalization": None, **kw})
    with pytest.raises(error, match=match):
        est.fit(X, y)
    np.testing.assert_array_equal(est.predict_proba(X), before)
    assert est.fitted_network().spec[1] == {"kind": "layer_norm", "eps": 1e-5}
    assert est.n_iter_ == attrs["n_iter_"] and est.loss_curve_ == attrs["loss_curve_"]


def test_warm_start_with_other_layers_is_refused():
    X, y = _clf_data()
    est = MLPClassifier((8,), normalization="layer", max_iter=3, random_state=0).fit(X, y)
    before = est.predict_proba(X)
    for kw in (dict(normalization="batch"), dict(normalization=None), dict(layers=[Dense(8), Activation("relu")])):
        est.set_params(warm_start=True, **{"normalization": None, **kw})
        with pytest.raises(ValueError, match="continues the fitted network"):
            est.fit(X, y)
        np.testing.assert_array_equal(est.predict_proba(X), before)


def test_sparse_x_with_an_embedding_is_refused():
    sparse = pytest.importorskip("scipy.sparse")
    X, y = _clf_data()
    est = MLPClassifier(layers=[Embedding([2], [5], [2]), Dense(4)], max_iter=2)
    with pytest.raises(ValueError, match="sparse X"):
        est.fit(sparse.csr_matrix(_with_codes(X)), y)


def test_to_sklearn_refuses_layers():
    X, y = _clf_data()
    est = MLPClassifier((8,), normalization="layer", max_iter=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="no scikit-learn equivalent"):
        est.to_sklearn()


def test_warnings_free_default():
    """normalization/residual/layers at their defaults build no network of layers."""
    X, y = _clf_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((8,), max_iter=2, random_state=0).fit(X, y)
    assert est._layers_spec is None and est.fitted_network().activation == "relu"


# scikit-learn's own checks (as tests/test_sklearn_checks.py runs them) with batch normalization and
# residual blocks.
def _sklearn_cases():
    from sklearn.utils.estimator_checks import estimator_checks_generator

    from test_sklearn_checks import NOT_APPLICABLE, _name

    kw = dict(hidden_layer_sizes=(32, 32), normalization="batch", residual=True, max_iter=50, random_state=0)
    return [
        (est, check)
        for e in (MLPClassifier(**kw), MLPRegressor(**kw))
        for est, check in estimator_checks_generator(e)
        if _name(check) not in NOT_APPLICABLE and _name(check) not in NOT_APPLICABLE_WITH_BATCH_NORM
    ]


# Batch statistics are unweighted means over a batch's rows: a sample repeated twice moves them,
# a sample weighted 2 does not (as in PyTorch's BatchNorm1d).
NOT_APPLICABLE_WITH_BATCH_NORM = {
    "check_sample_weight_equivalence_on_dense_data": "batch statistics count rows, not weights",
    "check_sample_weight_equivalence_on_sparse_data": "batch statistics count rows, not weights",
}
SKLEARN_CASES = _sklearn_cases()


@pytest.mark.parametrize(
    "estimator,check",
    SKLEARN_CASES,
    ids=[f"{type(e).__name__}-{c.func.__name__ if hasattr(c, 'func') else c.__name__}" for e, c in SKLEARN_CASES],
)
def test_sklearn_checks_with_batch_norm_and_residual(estimator, check):
    check(estimator)
