"""The engine's training extras against fastmlp.reference: sample weights, the
poisson loss, L1, clipping, the new optimizers and the learning-rate schedules."""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
from fastmlp import reference as ref
from fastmlp.schedules import Schedule, schedule_lr
from helpers import TOL, copy_params, make_data

DTYPES = ("float64", "float32")
SIZES = [5, 7, 3]
LOSS_OUTPUT = [
    ("squared_error", "identity"),
    ("squared_error", "exp"),
    ("log_loss", "softmax"),
    ("binary_log_loss", "logistic"),
    ("poisson", "exp"),
]


def _data(rng, loss, dtype, n=23):
    if loss == "poisson":
        X = rng.standard_normal((n, SIZES[0])).astype(dtype)
        return X, rng.poisson(1.5, (n, SIZES[-1])).astype(dtype)
    return make_data(rng, n, SIZES[0], SIZES[-1], loss, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,output", LOSS_OUTPUT)
def test_weighted_loss_and_grad_matches_reference(loss, output, dtype, rng):
    net = fastmlp.Network(SIZES, "tanh", output, dtype=dtype, seed=1)
    X, Y = _data(rng, loss, dtype)
    w = rng.uniform(0, 3, len(X)).astype(dtype)
    w[3] = 0
    value = net.loss_and_grad(X, Y, loss, sample_weight=w)
    W, b = copy_params(net)
    want, gW, gb = ref.loss_and_grad(W, b, X, Y, loss, "tanh", output, sample_weight=w)
    np.testing.assert_allclose(value, want, **TOL[dtype])
    for got, exp in zip(net.weight_grads + net.bias_grads, gW + gb):
        np.testing.assert_allclose(got, exp, **TOL[dtype])
    # Integer weights are repetitions of rows.
    counts = rng.integers(0, 4, len(X))
    repeated = net.loss_and_grad(X[np.repeat(np.arange(len(X)), counts)], Y[np.repeat(np.arange(len(X)), counts)], loss)
    grads = net.grads.copy()
    np.testing.assert_allclose(net.loss_and_grad(X, Y, loss, sample_weight=counts), repeated, **TOL[dtype])
    np.testing.assert_allclose(net.grads, grads, rtol=1e-4 if dtype == "float32" else 1e-10, atol=1e-6)


@pytest.mark.parametrize("loss,output", [("poisson", "exp"), ("squared_error", "exp"), ("log_loss", "softmax")])
def test_weighted_regularized_objective_matches_finite_differences(loss, output, rng):
    net = fastmlp.Network([3, 4, 3], "tanh", output, dtype="float64", seed=2)
    X, Y = make_data(rng, 9, 3, 3, "log_loss" if loss == "log_loss" else "squared_error", "float64")
    if loss == "poisson":
        Y = rng.poisson(1.0, Y.shape).astype(float)
    w = rng.uniform(0.1, 2, 9)
    kw = dict(l2=0.3, l1=0.05, sample_weight=w)
    value = net.objective(X, Y, loss, **kw)
    analytic = net.grads.copy()
    W, b = copy_params(net)
    want, gW, gb = ref.objective(W, b, X, Y, loss, "tanh", output, l2=0.3, l1=0.05, sample_weight=w)
    np.testing.assert_allclose(value, want, **TOL["float64"])
    flat_ref = np.concatenate([np.concatenate([g.ravel(), h]) for g, h in zip(gW, gb)])
    np.testing.assert_allclose(analytic, flat_ref, **TOL["float64"])
    p, h = net.params, 1e-6
    numeric = np.empty_like(analytic)
    for i in range(p.size):
        saved = p[i]
        p[i] = saved + h
        up = net.objective(X, Y, loss, **kw)
        p[i] = saved - h
        down = net.objective(X, Y, loss, **kw)
        p[i] = saved
        numeric[i] = (up - down) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def _pair(kind):
    return {
        "sgd": (fastmlp.SGD(0.05, momentum=0.9, nesterov=True), ref.SGD(0.05, 0.9, True)),
        "adam": (fastmlp.Adam(0.01), ref.Adam(0.01)),
        "adamw": (fastmlp.AdamW(0.01, weight_decay=0.1), ref.AdamW(0.01, weight_decay=0.1)),
        "rmsprop": (fastmlp.RMSprop(0.01, rho=0.8), ref.RMSprop(0.01, rho=0.8)),
        "adagrad": (fastmlp.Adagrad(0.05), ref.Adagrad(0.05)),
    }[kind]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_train_epoch_with_every_extra_matches_reference(kind, dtype, rng):
    net = fastmlp.Network(SIZES, "leaky_relu", "softmax", dtype=dtype, seed=3, leaky_relu_slope=0.05)
    X, Y = make_data(rng, 37, SIZES[0], SIZES[-1], "log_loss", dtype)
    w = rng.uniform(0, 2, len(X)).astype(dtype)
    opt, ref_opt = _pair(kind)
    sched = Schedule("cosine", 0.02, total_epochs=3, warmup_epochs=0.5, min_lr=0.001)
    W, b = copy_params(net)
    kw = dict(l2=0.1, l1=0.01, clip_value=0.5, clip_norm=0.3)
    for epoch in range(3):
        order = rng.permutation(len(X))
        got = net.train_epoch(
            X, Y, "log_loss", opt, batch_size=8, order=order, sample_weight=w, schedule=sched, epoch=epoch, **kw
        )
        want = ref.train_epoch(
            W,
            b,
            X,
            Y,
            "log_loss",
            ref_opt,
            8,
            order,
            "leaky_relu",
            "softmax",
            0.05,
            sample_weight=w,
            schedule=lambda p, d: schedule_lr("cosine", 0.02, p, d, total_epochs=3, warmup_epochs=0.5, min_lr=0.001),
            epoch=epoch,
            **kw,
        )
        np.testing.assert_allclose(got, want, **TOL[dtype])
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    for got, exp in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(got, exp, **tol)


def test_clipping_limits_the_update(rng):
    net = fastmlp.Network([4, 3], "relu", "identity", dtype="float64", seed=0)
    X, Y = rng.standard_normal((10, 4)) * 100, rng.standard_normal((10, 3)) * 100
    before = net.params.copy()
    net.train_epoch(X, Y, "squared_error", fastmlp.SGD(1.0), batch_size=10, shuffle=False, clip_norm=0.5)
    np.testing.assert_allclose(np.linalg.norm(net.params - before), 0.5, rtol=1e-12)
    before = net.params.copy()
    net.train_epoch(X, Y, "squared_error", fastmlp.SGD(1.0), batch_size=10, shuffle=False, clip_value=0.01)
    assert np.abs(net.params - before).max() == pytest.approx(0.01, rel=1e-12)


def test_grad_scale_multiplies_the_gradient_only(rng):
    net = fastmlp.Network([4, 3], "relu", "identity", dtype="float64", seed=0)
    X, Y = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    W, b = copy_params(net)
    v1, gW, _ = ref.loss_and_grad(W, b, X, Y, "squared_error", "relu", "identity", grad_scale=3.0)
    v0, gW0, _ = ref.loss_and_grad(W, b, X, Y, "squared_error", "relu", "identity")
    assert v1 == v0
    np.testing.assert_allclose(gW[0], 3 * gW0[0], rtol=1e-14)
    got = net.train_epoch(X, Y, "squared_error", fastmlp.SGD(0.1), batch_size=6, shuffle=False)
    assert got == pytest.approx(v0, rel=1e-12)


@pytest.mark.parametrize(
    "kind,kw",
    [
        ("constant", {}),
        ("step", dict(gamma=0.5, step_size=2)),
        ("exponential", dict(gamma=0.9)),
        ("cosine", dict(total_epochs=10, min_lr=0.01, warmup_epochs=2)),
    ],
)
def test_schedule_formulas(kind, kw):
    s = Schedule(kind, 0.1, **kw)
    for p in np.linspace(0, 12, 49):
        assert s.at(p, 0.25) == pytest.approx(schedule_lr(kind, 0.1, p, 0.25, **kw), rel=1e-14, abs=1e-16)
    if kind == "step":
        assert s.at(0, 0.1) == 0.1 and s.at(2.0, 0.1) == 0.05 and s.at(4.5, 0.1) == 0.025
    if kind == "cosine":
        assert s.at(0, 0.5) == pytest.approx(0.1 * 0.25)  # warmup: (0 + 0.5) / 2
        assert s.at(2, 0.5) == pytest.approx(0.1) and s.at(10, 0.5) == pytest.approx(0.01)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sample_weight=-np.ones(5)), "sample_weight must be >= 0"),
        (dict(sample_weight=np.zeros(5)), "sample_weight must have a positive sum"),
        (dict(sample_weight=np.ones(4)), r"sample_weight must have shape \(5,\)"),
        (dict(l1=-1.0), "l1 must be"),
        (dict(clip_norm=0.0), "clip_norm must be"),
        (dict(clip_value=float("nan")), "clip_value must be"),
        (dict(schedule="cosine"), "schedule must be a fastmlp.schedules.Schedule"),
    ],
)
def test_bad_training_arguments_change_nothing(kwargs, match, rng):
    net = fastmlp.Network([3, 2], dtype="float64", seed=0)
    before = net.params.copy()
    opt = fastmlp.Adam()
    with pytest.raises((ValueError, TypeError), match=match):
        net.train_epoch(rng.standard_normal((5, 3)), rng.standard_normal((5, 2)), "squared_error", opt, **kwargs)
    np.testing.assert_array_equal(net.params, before)
    assert opt.t == 0


def test_bad_optimizer_and_schedule_arguments():
    with pytest.raises(ValueError, match="weight_decay"):
        fastmlp.AdamW(weight_decay=-1)
    with pytest.raises(ValueError, match="rho"):
        fastmlp.RMSprop(rho=1.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        Schedule("linear", 0.1)
    with pytest.raises(ValueError, match="step_size"):
        Schedule("step", 0.1, step_size=0)
    with pytest.raises(ValueError, match="loss 'poisson' needs output_activation 'exp'"):
        fastmlp.Network([2, 1]).loss_and_grad(np.ones((1, 2)), np.ones((1, 1)), "poisson")
