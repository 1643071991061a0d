"""The activations gelu, silu (swish), selu, mish, softplus, elu and the losses huber,
absolute_error, quantile and label-smoothed log losses: their values, their stability, their
parameters, and the same function in the reference, finite differences, PyTorch, the estimators
and every way a model is saved. (The kernel-vs-reference, dropout, fuzz and export tests that are
parametrized by the core's names run them too: tests/helpers.py.)"""

from __future__ import annotations

import io
import math
import pickle
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp import _names, reference as ref
from helpers import TOL, copy_params
from test_export import need

NEW = ("gelu", "silu", "selu", "mish", "softplus", "elu")
DTYPES = ("float64", "float32")
LAM, ALPHA = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717


def _phi(z: float) -> float:
    return (1 + math.erf(z / math.sqrt(2))) / 2


def _softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


# Each activation's textbook formula and derivative in plain Python floats (math module).
FORMULAS = {
    "gelu": (lambda z: z * _phi(z), lambda z: _phi(z) + z * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)),
    "silu": (lambda z: z * _sigmoid(z), lambda z: _sigmoid(z) * (1 + z * (1 - _sigmoid(z)))),
    "selu": (
        lambda z: LAM * z if z > 0 else LAM * ALPHA * math.expm1(z),
        lambda z: LAM if z > 0 else LAM * ALPHA * math.exp(z),
    ),
    "mish": (
        lambda z: z * math.tanh(_softplus(z)),
        lambda z: math.tanh(_softplus(z)) + z * (1 - math.tanh(_softplus(z)) ** 2) * _sigmoid(z),
    ),
    "softplus": (_softplus, _sigmoid),
    "elu": (lambda z: z if z > 0 else math.expm1(z), lambda z: 1.0 if z > 0 else math.exp(z)),
}


def elementwise(name: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The C++ f(z) and f'(z) for a 1-D z: a Network [k, k] with W = I, b = 0 and output activation
    `name` computes f(z); the bias gradient of sum(f(z)) - via squared_error against f(z) - 1 - is f'(z)."""
    k = z.size
    net = fastmlp.Network([k, k], output_activation=name, dtype=z.dtype, seed=0)
    net.weights[0][:] = np.eye(k, dtype=z.dtype)
    net.biases[0][:] = 0
    a = net.forward(z[None, :])[0]
    # L = sum (a - y)^2 / (2k): dL/da = d / k with d = a - y (y = a less a nonzero step that
    # survives rounding at |a|'s magnitude), so dL/db = f'(z) d / k
    y = a - np.maximum(1, np.abs(a) * 2**-10).astype(z.dtype)
    d = a - y
    net.loss_and_grad(z[None, :], y[None, :], "squared_error")
    return a, net.bias_grads[0] * k / d


# --------------------------------------------------------------------------- activations


def test_the_core_has_them_for_hidden_layers():
    assert set(NEW) <= set(_names.HIDDEN)
    assert _names.canonical_activation("swish") == "silu"
    assert "swish" in _names.HIDDEN_ACTIVATIONS


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NEW)
def test_value_and_slope_are_the_textbook_formulas(name, dtype):
    z = np.array([-6.0, -2.5, -1.0, -0.3, -1e-3, 0.0, 1e-3, 0.4, 1.0, 2.0, 5.0], dtype=dtype)
    a, slope = elementwise(name, z)
    f, df = FORMULAS[name]
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=2e-6, atol=2e-7)
    np.testing.assert_allclose(a, [f(float(v)) for v in z], **tol)
    np.testing.assert_allclose(slope, [df(float(v)) for v in z], **tol)
    np.testing.assert_allclose(a, ref.activation_forward(name, z), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NEW)
def test_extreme_inputs_neither_overflow_nor_lose_the_asymptote(name, dtype):
    big = 1e4 if dtype == "float32" else 1e300
    z = np.array([-big, -1e4, -800.0, -100.0, 100.0, 800.0, 1e4, big], dtype=dtype)
    a, slope = elementwise(name, z)
    assert np.isfinite(a).all() and np.isfinite(slope).all()
    np.testing.assert_allclose(a, ref.activation_forward(name, z), rtol=1e-6, atol=1e-30)
    # z -> +inf: z itself (selu: lambda z), slope 1 (selu: lambda)
    pos = z > 0
    scale = LAM if name == "selu" else 1.0
    np.testing.assert_allclose(a[pos], scale * z[pos], rtol=1e-6)
    np.testing.assert_allclose(slope[pos], scale, rtol=1e-6)
    # z -> -inf: 0 (elu: -1, selu: -lambda alpha), slope 0
    floor = {"elu": -1.0, "selu": -LAM * ALPHA}.get(name, 0.0)
    np.testing.assert_allclose(a[~pos], floor, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(slope[~pos], 0.0, atol=1e-30)


@pytest.mark.parametrize("name", NEW)
def test_reference_derivative_matches_finite_differences_near_zero(name):
    """Beside test_reference's check at random z: the smooth ones across 0 (selu is kinked there)."""
    z = np.array([-1e-2, -1e-4, 1e-4, 1e-2, 3.0, -3.0])
    h = 1e-7
    numeric = (ref.activation_forward(name, z + h) - ref.activation_forward(name, z - h)) / (2 * h)
    analytic = ref.activation_backward(name, np.ones_like(z), z, ref.activation_forward(name, z))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_he_init_of_selu_is_lecun_and_glorot_follows_the_table():
    """selu's He bound is sqrt(3 / n_in) (Var W = 1/n_in, LeCun's); the others keep sqrt(6 / n_in)."""
    for name, factor in (("selu", 3.0), ("gelu", 6.0), ("relu", 6.0)):
        net = fastmlp.Network([400, 300, 2], activation=name, init="he", dtype="float64", seed=0)
        w = net.weights[0]
        bound = math.sqrt(factor / 400)
        assert ref.he_bound(400, name) == pytest.approx(bound)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
        assert np.var(w) == pytest.approx(factor / 3 / 400, rel=0.02)
    for name in NEW:
        net = fastmlp.Network([40, 30, 2], activation=name, dtype="float64", seed=0)
        assert np.abs(net.weights[0]).max() <= ref.glorot_bound(40, 30, name)


@pytest.mark.parametrize("name", NEW)
def test_estimators_take_them_and_draw_the_glorot_bound_of_the_table(name, rng):
    X, y = rng.standard_normal((60, 4)), rng.standard_normal(60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.ConvergenceWarning)
        reg = fastmlp.MLPRegressor(
            hidden_layer_sizes=(30,), activation=name, max_iter=2, learning_rate_init=1e-300, random_state=0
        )
        reg.fit(X, y)
    assert np.abs(reg.coefs_[0]).max() <= ref.glorot_bound(4, 30, name)
    assert np.abs(reg.coefs_[0]).max() > 0.9 * ref.glorot_bound(4, 30, name)
    np.testing.assert_allclose(
        reg.predict(X), ref.predict(reg.coefs_, reg.intercepts_, X, name).ravel(), **TOL["float64"]
    )


# --------------------------------------------------------------------------- losses

SPECS = [
    ("huber", "identity"),
    ({"name": "huber", "delta": 0.3}, "identity"),
    ({"name": "huber", "delta": 2.5}, "tanh"),
    ("absolute_error", "identity"),
    ("absolute_error", "softplus"),
    ({"name": "quantile", "alpha": 0.1}, "identity"),
    ({"name": "quantile", "alpha": 0.9}, "gelu"),
    ({"name": "log_loss", "label_smoothing": 0.1}, "softmax"),
    ({"name": "binary_log_loss", "label_smoothing": 0.2}, "logistic"),
]
IDS = [f"{s if isinstance(s, str) else '-'.join(map(str, s.values()))}-{o}" for s, o in SPECS]


def _name(spec) -> str:
    return spec if isinstance(spec, str) else spec["name"]


def _data(rng, spec, n, n_in, k, dtype):
    name = _name(spec)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if name == "log_loss":
        Y = np.eye(k, dtype=dtype)[rng.integers(0, k, n)]
    elif name == "binary_log_loss":
        Y = (rng.random((n, k)) < 0.5).astype(dtype)
    else:
        Y = (2 * rng.standard_normal((n, k))).astype(dtype)
    return X, Y


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec,output", SPECS, ids=IDS)
def test_loss_and_grad_match_the_reference(spec, output, dtype, weighted, rng):
    net = fastmlp.Network([5, 7, 4], activation="mish", output_activation=output, dtype=dtype, seed=3)
    X, Y = _data(rng, spec, 31, 5, 4, dtype)
    w = rng.random(31).astype(dtype) + 0.1 if weighted else None
    value = net.loss_and_grad(X, Y, spec, sample_weight=w)
    W, b = copy_params(net)
    want, gW, gb = ref.loss_and_grad(W, b, X, Y, spec, "mish", output, sample_weight=w)
    np.testing.assert_allclose(value, want, **TOL[dtype])
    for got, exp in zip(net.weight_grads + net.bias_grads, gW + gb):
        np.testing.assert_allclose(got, exp, **TOL[dtype])


@pytest.mark.parametrize("spec,output", SPECS, ids=IDS)
def test_gradient_matches_finite_differences(spec, output, rng):
    net = fastmlp.Network([3, 5, 3], activation="gelu", output_activation=output, dtype="float64", seed=1)
    X, Y = _data(rng, spec, 9, 3, 3, "float64")
    net.loss_and_grad(X, Y, spec)
    analytic, params = net.grads.copy(), net.params
    W, b = copy_params(net)
    if _name(spec) in ("huber", "absolute_error", "quantile"):  # no residual on a kink of the loss
        d = ref.predict(W, b, X, "gelu", output) - Y
        kinks = [0.0] + ([spec["delta"] if isinstance(spec, dict) else 1.0] if _name(spec) == "huber" else [])
        assert min(abs(abs(d) - t).min() for t in kinks) > 1e-4
    h, numeric = 1e-6, np.empty_like(analytic)
    for i in range(params.size):
        saved = params[i]
        params[i] = saved + h
        up = net.loss_and_grad(X, Y, spec)
        params[i] = saved - h
        down = net.loss_and_grad(X, Y, spec)
        params[i] = saved
        numeric[i] = (up - down) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_formulas_by_hand(rng):
    z = np.array([[0.0, 2.0, -1.0], [1.5, -0.5, 0.25]])
    y = np.array([[0.5, 0.0, 0.0], [1.0, 1.0, 0.25]])
    d = z - y
    net = fastmlp.Network([3, 3], dtype="float64", seed=0)
    net.weights[0][:] = np.eye(3)
    net.biases[0][:] = 0
    huber = np.where(np.abs(d) <= 0.7, d * d / 2, 0.7 * (np.abs(d) - 0.35))
    assert net.loss_and_grad(z, y, {"name": "huber", "delta": 0.7}) == pytest.approx(huber.mean(), rel=1e-14)
    assert net.loss_and_grad(z, y, "absolute_error") == pytest.approx(np.abs(d).mean(), rel=1e-14)
    np.testing.assert_array_equal(net.bias_grads[0], np.sign(d).sum(axis=0) / 6)  # sign(0) = 0: the d = 0 entry
    r = y - z
    pinball = np.maximum(0.8 * r, -0.2 * r)
    assert net.loss_and_grad(z, y, {"name": "quantile", "alpha": 0.8}) == pytest.approx(pinball.mean(), rel=1e-14)
    # quantile 0.5 is half the absolute error
    assert net.loss_and_grad(z, y, "quantile") == pytest.approx(np.abs(d).mean() / 2, rel=1e-14)


def test_label_smoothing_is_pytorchs_convention_and_zero_is_the_plain_loss(rng):
    z = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    net = fastmlp.Network([4, 4], output_activation="softmax", dtype="float64", seed=0)
    net.weights[0][:] = np.eye(4)
    net.biases[0][:] = 0
    eps = 0.15
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    target = (1 - eps) * np.eye(4)[labels] + eps / 4
    assert net.loss_and_grad(z, labels, {"name": "log_loss", "label_smoothing": eps}) == pytest.approx(
        -(target * log_p).sum(axis=1).mean(), rel=1e-13
    )
    plain = net.loss_and_grad(z, labels, "log_loss")
    g = net.grads.copy()
    assert net.loss_and_grad(z, labels, {"name": "log_loss", "label_smoothing": 0.0}) == plain
    np.testing.assert_array_equal(net.grads, g)
    # binary: K = 2 for each output, the two-class cross-entropy of [1 - p, p]
    bnet = fastmlp.Network([1, 1], output_activation="logistic", dtype="float64", seed=0)
    bnet.weights[0][:] = 1
    bnet.biases[0][:] = 0
    zb, yb = rng.standard_normal((5, 1)), rng.integers(0, 2, (5, 1)).astype(float)
    t = (1 - eps) * yb + eps / 2
    p = 1 / (1 + np.exp(-zb))
    want = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    assert bnet.loss_and_grad(zb, yb, {"name": "binary_log_loss", "label_smoothing": eps}) == pytest.approx(
        want, rel=1e-12
    )


def test_a_spec_at_its_default_is_the_name(rng):
    net = fastmlp.Network([3, 4, 2], activation="elu", dtype="float32", seed=0)
    X, Y = _data(rng, "huber", 8, 3, 2, "float32")
    for name, spec in (("huber", {"name": "huber", "delta": 1.0}), ("quantile", {"name": "quantile"})):
        assert net.loss_and_grad(X, Y, name) == net.loss_and_grad(X, Y, spec)


@pytest.mark.parametrize("dtype", DTYPES)
def test_three_epochs_with_fixed_order_match_the_reference(dtype, rng):
    net = fastmlp.Network([4, 9, 2], activation="silu", dtype=dtype, seed=0)
    X, Y = _data(rng, "huber", 53, 4, 2, dtype)
    spec = {"name": "huber", "delta": 0.5}
    opt, ref_opt = fastmlp.Adam(0.01), ref.Adam(0.01)
    W, b = copy_params(net)
    for _ in range(3):
        order = rng.permutation(53)
        got = net.train_epoch(X, Y, spec, opt, batch_size=10, order=order, l2=1e-3)
        want = ref.train_epoch(W, b, X, Y, spec, ref_opt, 10, order, "silu", "identity", l2=1e-3)
        np.testing.assert_allclose(got, want, **TOL[dtype])
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    for got, want in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(got, want, **tol)


# --------------------------------------------------------------------------- PyTorch


def _torch_pair(activation: str, output: str, dtype: str, seed: int = 0):
    """A fastmlp Network [5, 8, 3] and the same model built with torch.nn (logits out)."""
    torch = need("torch")
    nn = torch.nn
    acts = {"gelu": nn.GELU, "silu": nn.SiLU, "selu": nn.SELU, "mish": nn.Mish, "softplus": nn.Softplus, "elu": nn.ELU}
    net = fastmlp.Network([5, 8, 3], activation=activation, output_activation=output, dtype=dtype, seed=seed)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    model = nn.Sequential(nn.Linear(5, 8, dtype=tdtype), acts[activation](), nn.Linear(8, 3, dtype=tdtype))
    with torch.no_grad():
        for layer, w, b in zip((model[0], model[2]), net.weights, net.biases):
            layer.weight.copy_(torch.from_numpy(w.T.copy()))
            layer.bias.copy_(torch.from_numpy(b.copy()))
    return torch, net, model


def _torch_loss(torch, spec, logits, Y):
    nn = torch.nn
    name = _name(spec)
    p = {} if isinstance(spec, str) else spec
    if name == "squared_error":
        return nn.MSELoss()(logits, Y) / 2
    if name == "huber":
        return nn.HuberLoss(delta=p.get("delta", 1.0))(logits, Y)
    if name == "absolute_error":
        return nn.L1Loss()(logits, Y)
    if name == "quantile":
        a, r = p.get("alpha", 0.5), Y - logits
        return torch.maximum(a * r, (a - 1) * r).mean()
    if name == "log_loss":
        return nn.CrossEntropyLoss(label_smoothing=p.get("label_smoothing", 0.0))(logits, Y.argmax(dim=1))
    eps = p.get("label_smoothing", 0.0)  # binary: PyTorch has no smoothing here; its convention with K = 2
    return nn.BCEWithLogitsLoss(reduction="sum")(logits, (1 - eps) * Y + eps / 2) / len(Y)


TORCH_CASES = [(a, "squared_error", "identity") for a in NEW] + [
    ("gelu", s, o) for s, o in SPECS if o in ("identity", "softmax", "logistic")
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "activation,spec,output", TORCH_CASES, ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(TORCH_CASES)]
)
def test_forward_and_one_training_step_equal_pytorchs(activation, spec, output, dtype, rng):
    torch, net, model = _torch_pair(activation, output, dtype)
    X, Y = _data(rng, spec, 17, 5, 3, dtype)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)
    tX, tY = torch.from_numpy(X), torch.from_numpy(Y)
    logits = model(tX)
    out = {"identity": logits, "softmax": torch.softmax(logits, 1), "logistic": torch.sigmoid(logits)}[output]
    np.testing.assert_allclose(net.forward(X), out.detach().numpy(), **tol)
    loss = _torch_loss(torch, spec, logits, tY)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    value = net.train_epoch(X, Y, spec, fastmlp.SGD(0.1), batch_size=17, shuffle=False)
    np.testing.assert_allclose(value, loss.item(), **tol)
    for layer, w, b in zip((model[0], model[2]), net.weights, net.biases):
        np.testing.assert_allclose(w, layer.weight.detach().numpy().T, **tol)
        np.testing.assert_allclose(b, layer.bias.detach().numpy(), **tol)


# --------------------------------------------------------------------------- estimators


def _fit(est, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.ConvergenceWarning)
        return est.fit(X, y, **kw)


REGRESSOR_LOSSES = [
    (dict(loss="huber", delta=0.4), {"name": "huber", "delta": 0.4}),
    (dict(loss="absolute_error"), "absolute_error"),
    (dict(loss="quantile", quantile=0.8), {"name": "quantile", "alpha": 0.8}),
]


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
@pytest.mark.parametrize("params,spec", REGRESSOR_LOSSES, ids=["huber", "absolute", "quantile"])
def test_regressor_loss_equals_the_references(params, spec, solver, rng):
    X, y = rng.standard_normal((40, 3)), 2 * rng.standard_normal((40, 2))
    # sgd: one full batch with a vanishing step, so that loss_curve_[0] is the objective at coefs_
    kw = dict(solver="sgd", batch_size=40, momentum=0.0, learning_rate_init=1e-300, max_iter=1, shuffle=False)
    reg = fastmlp.MLPRegressor(hidden_layer_sizes=(6,), activation="selu", alpha=1e-3, random_state=0, **params)
    _fit(reg.set_params(**kw) if solver == "sgd" else reg.set_params(solver="lbfgs", max_iter=5), X, y)
    want, _, _ = ref.objective(reg.coefs_, reg.intercepts_, X, y, spec, "selu", "identity", l2=1e-3)
    assert reg.loss_ == pytest.approx(want, rel=1e-10)
    if solver == "sgd":
        assert reg.loss_curve_[0] == pytest.approx(want, rel=1e-10)


def test_quantile_regressor_estimates_the_quantile(rng):
    X = rng.random((2000, 1))
    y = X[:, 0] + rng.standard_normal(2000)
    for q in (0.1, 0.9):
        reg = _fit(
            fastmlp.MLPRegressor(hidden_layer_sizes=(16,), loss="quantile", quantile=q, random_state=0, max_iter=60),
            X,
            y,
        )
        below = np.mean(y < reg.predict(X))
        assert abs(below - q) < 0.05, (q, below)


@pytest.mark.parametrize("multilabel", [False, True])
def test_classifier_label_smoothing_loss_equals_the_references(multilabel, rng):
    X = rng.standard_normal((50, 4))
    y = (rng.random((50, 3)) < 0.5).astype(int) if multilabel else rng.integers(0, 3, 50)
    kw = dict(solver="sgd", batch_size=50, momentum=0.0, learning_rate_init=1e-300, max_iter=1, shuffle=False)
    clf = _fit(
        fastmlp.MLPClassifier(hidden_layer_sizes=(5,), activation="gelu", label_smoothing=0.2, random_state=0, **kw),
        X,
        y,
    )
    name = "binary_log_loss" if multilabel else "log_loss"
    Y = y.astype(float) if multilabel else np.eye(3)[y]
    spec = {"name": name, "label_smoothing": 0.2}
    want, _, _ = ref.objective(clf.coefs_, clf.intercepts_, X, Y, spec, "gelu", clf.out_activation_, l2=1e-4)
    assert clf.loss_curve_[0] == pytest.approx(want, rel=1e-10)
    plain = _fit(fastmlp.MLPClassifier(hidden_layer_sizes=(5,), activation="gelu", random_state=0, **kw), X, y)
    want, _, _ = ref.objective(plain.coefs_, plain.intercepts_, X, Y, name, "gelu", clf.out_activation_, l2=1e-4)
    assert plain.loss_curve_[0] == pytest.approx(want, rel=1e-10) and plain.loss_curve_[0] != clf.loss_curve_[0]


BAD_ESTIMATOR_PARAMS = [
    (fastmlp.MLPRegressor, dict(loss="hinge"), ValueError, r"'loss' parameter must be one of \['squared_error', "),
    (fastmlp.MLPRegressor, dict(loss="log_loss"), ValueError, "'loss' parameter must be one of"),
    (fastmlp.MLPRegressor, dict(loss=3), TypeError, "'loss' parameter"),
    (fastmlp.MLPRegressor, dict(loss="huber", delta=0.0), ValueError, "'delta' parameter must be a real number in"),
    (fastmlp.MLPRegressor, dict(loss="huber", delta=-1), ValueError, "'delta' parameter"),
    (fastmlp.MLPRegressor, dict(delta="1"), TypeError, "'delta' parameter must be a real number"),
    (fastmlp.MLPRegressor, dict(loss="quantile", quantile=0.0), ValueError, "'quantile' parameter"),
    (fastmlp.MLPRegressor, dict(loss="quantile", quantile=1.0), ValueError, "'quantile' parameter"),
    (fastmlp.MLPRegressor, dict(quantile=float("nan")), ValueError, "'quantile' parameter"),
    (fastmlp.MLPClassifier, dict(label_smoothing=1.0), ValueError, "'label_smoothing' parameter"),
    (fastmlp.MLPClassifier, dict(label_smoothing=-0.1), ValueError, "'label_smoothing' parameter"),
    (fastmlp.MLPClassifier, dict(label_smoothing=None), TypeError, "'label_smoothing' parameter"),
]


@pytest.mark.parametrize("cls,params,exc,match", BAD_ESTIMATOR_PARAMS)
def test_bad_loss_parameters_name_themselves_and_change_nothing(cls, params, exc, match, rng):
    X = rng.standard_normal((30, 3))
    y = rng.integers(0, 2, 30) if cls is fastmlp.MLPClassifier else rng.standard_normal(30)
    est = _fit(cls(hidden_layer_sizes=(4,), max_iter=2, random_state=0), X, y)
    before = [c.copy() for c in est.coefs_], list(est.loss_curve_)
    est.set_params(**params)
    with pytest.raises(exc, match=match):
        est.fit(X, y)
    with pytest.raises(exc, match=match):
        est.partial_fit(X, y) if cls is fastmlp.MLPRegressor else est.partial_fit(X, y, classes=[0, 1])
    for got, want in zip(est.coefs_, before[0]):
        np.testing.assert_array_equal(got, want)
    assert est.loss_curve_ == before[1]


def test_default_loss_parameters_change_nothing(rng):
    """delta and quantile are read by their loss only: squared_error fits bit-identically whatever they are."""
    X, y = rng.standard_normal((40, 3)), rng.standard_normal(40)
    a = _fit(fastmlp.MLPRegressor(hidden_layer_sizes=(5,), max_iter=5, random_state=0), X, y)
    b = _fit(fastmlp.MLPRegressor(hidden_layer_sizes=(5,), max_iter=5, random_state=0, delta=3.0, quantile=0.2), X, y)
    assert a.loss_curve_ == b.loss_curve_
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("how", ["save", "pickle", "clone"])
@pytest.mark.parametrize(
    "cls,params",
    [
        (fastmlp.MLPRegressor, dict(loss="huber", delta=0.3, activation="mish")),
        (fastmlp.MLPRegressor, dict(loss="quantile", quantile=0.7, activation="selu")),
        (fastmlp.MLPClassifier, dict(label_smoothing=0.1, activation="gelu")),
    ],
)
def test_round_trips_keep_the_loss_and_continue_training_bit_identically(cls, params, how, rng, tmp_path):
    X = rng.standard_normal((40, 3))
    y = rng.integers(0, 3, 40) if cls is fastmlp.MLPClassifier else rng.standard_normal(40)
    est = _fit(cls(hidden_layer_sizes=(5,), max_iter=3, random_state=0, solver="sgd", **params), X, y)
    if how == "save":
        est.save(tmp_path / "m.npz")
        twin = fastmlp.load(tmp_path / "m.npz")
    elif how == "pickle":
        twin = pickle.loads(pickle.dumps(est))
    else:
        from sklearn.base import clone

        twin = clone(est)
        assert twin.get_params() == est.get_params()
        return
    assert twin.get_params() == est.get_params()
    np.testing.assert_array_equal(twin.predict(X), est.predict(X))
    for e in (est, twin):
        e.partial_fit(X, y)
    assert twin.loss_curve_ == est.loss_curve_
    for u, v in zip(est.coefs_, twin.coefs_):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("name", [*NEW, "swish"])
def test_network_save_load_pickle_and_summary_keep_the_activation(name, rng, tmp_path):
    net = fastmlp.Network([4, 6, 5, 2], activation=[name, "relu"], output_activation=name, seed=0)
    X = rng.standard_normal((9, 4)).astype(np.float32)
    net.save(tmp_path / "n.npz")
    for twin in (fastmlp.Network.load(tmp_path / "n.npz"), pickle.loads(pickle.dumps(net))):
        assert twin.activations == net.activations and twin.output_activation == net.output_activation
        np.testing.assert_array_equal(twin.forward(X), net.forward(X))
    buf = io.StringIO()
    net.summary(file=buf)
    assert name in buf.getvalue()


def test_to_sklearn_drops_a_loss_scikit_learn_lacks(rng):
    need("sklearn")
    X, y = rng.standard_normal((30, 3)), rng.standard_normal(30)
    reg = _fit(fastmlp.MLPRegressor(hidden_layer_sizes=(4,), loss="huber", delta=0.5, max_iter=3, random_state=0), X, y)
    with pytest.warns(UserWarning, match=r"delta=0.5, loss='huber' \(becomes 'squared_error'\)"):
        sk = fastmlp.io.to_sklearn(reg)
    assert sk.loss == "squared_error"
    np.testing.assert_allclose(sk.predict(X), reg.predict(X), **TOL["float64"])


def test_the_cores_loss_checks_its_own_arguments(rng):
    """The binding's Loss, for callers of fastmlp._core: a range error or a wrong type, naming the argument."""
    from fastmlp import _core

    assert _core.Loss("huber", delta=2.0).delta == 2.0 and _core.Loss("quantile").alpha == 0.5
    with pytest.raises(ValueError, match=r"loss parameter delta must be in \(0, inf\), got -1"):
        _core.Loss("huber", delta=-1.0)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1"):
        _core.Loss("log_loss", label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"loss must be one of 'squared_error'.*got 'hinge'"):
        _core.Loss("hinge")
    net = _core.Network_float64([2, 2], ["relu"], "identity", 0.01, 0, "glorot")
    X = np.zeros((3, 2))
    with pytest.raises(TypeError, match=r"loss must be a name .* or a fastmlp\._core\.Loss, got int"):
        net.loss_and_grad(X, X, 3)
    assert net.loss_and_grad(X, X, _core.Loss("huber")) == net.loss_and_grad(X, X, "huber")
    assert net.loss_and_grad(X, X, _core.Loss("huber", delta=0.5)) != net.loss_and_grad(X, X, "huber")


@pytest.mark.parametrize("name", NEW)
def test_float32_forms_follow_the_reference_everywhere(name):
    """float32's gelu, silu, mish and softplus are Eigen array expressions (vectorized exp, log1p,
    tanh, erf), the others std:: functions: on a fine sweep of [-20, 20] values stay within 4e-6 of
    the float64 reference relative to max(|f|, 0.01) (gelu: see below), slopes within 8e-6 (absolute, relative above
    1: a slope's zero is a cancellation), and a value is the same bits at
    any position in its block of the vectorized loop (the sweep shifted by one)."""
    sweep = np.linspace(-20.0, 20.0, 2400)
    for z in np.split(sweep, 12):
        z32 = z.astype(np.float32)
        a, slope = elementwise(name, z32)
        exact = ref.activation_forward(name, z32.astype(np.float64))
        exact_slope = ref.activation_backward(name, np.ones_like(exact), z32.astype(np.float64), exact)
        # values: relative to max(|f|, 0.01), which a logistic with an absolute error fails in the
        # tail; gelu's z (1 + erf(z/√2)) / 2 cancels for z < 0 (PyTorch's formula too): 1e-6 absolute
        floor = 0.25 if name == "gelu" else 0.01
        assert np.all(np.abs(a - exact) <= 4e-6 * np.maximum(floor, np.abs(exact))), name
        assert np.all(np.abs(slope - exact_slope) <= 8e-6 * np.maximum(1.0, np.abs(exact_slope))), name
        shifted, _ = elementwise(name, np.r_[np.float32(0.5), z32])
        np.testing.assert_array_equal(shifted[1:], a)
