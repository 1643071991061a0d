"""Tests of the NumPy oracle, fastmlp.reference: finite differences and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastmlp import reference as ref
from helpers import HIDDEN, LOSS_OUTPUT

# The core's names (helpers.py); test_names_match_the_core checks the reference has the same.
LOSS_OUTPUTS = LOSS_OUTPUT
KINKED = ("relu", "leaky_relu", "selu")  # selu: slopes lambda and lambda * alpha meet at 0


# Overflow, division by zero and NaNs are errors; underflow to 0 is the right answer
# for exp(-1e4), so it is allowed.
def strict_fp() -> np.errstate:
    return np.errstate(over="raise", divide="raise", invalid="raise")


def numerical_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function f() with respect to x, perturbed in place."""
    grad = np.empty_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        f_plus = f()
        x[i] = saved - eps
        f_minus = f()
        x[i] = saved
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def make_targets(loss: str, rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    if loss == "log_loss":
        return ref.to_targets(rng.integers(0, k, n), loss, k)
    if loss == "binary_log_loss":
        return rng.integers(0, 2, (n, k)).astype(np.float64)
    if loss == "poisson":
        return rng.poisson(1.0, (n, k)).astype(np.float64)
    return rng.normal(size=(n, k))


def make_network(layer_sizes, n, activation, output_activation, dtype=np.float64, margin=1e-3):
    """Random weights, biases and inputs whose kinked pre-activations stay >= margin from 0.

    Finite differences across the kink of relu would be meaningless; redrawing
    with the next seed keeps the test deterministic.
    """
    for seed in range(100):
        rng = np.random.default_rng(seed)
        weights = [rng.normal(size=s) for s in zip(layer_sizes[:-1], layer_sizes[1:])]
        biases = [rng.normal(scale=0.5, size=s) for s in layer_sizes[1:]]
        X = rng.normal(size=(n, layer_sizes[0]))
        Zs, _ = ref.forward(weights, biases, X, activation, output_activation)
        kinked = [Z for Z in Zs[:-1] if activation in KINKED]
        if output_activation in KINKED:
            kinked.append(Zs[-1])
        if all(np.min(np.abs(Z)) >= margin for Z in kinked):
            cast = [np.asarray(a, dtype=dtype) for a in (*weights, *biases, X)]
            n_layers = len(weights)
            return cast[:n_layers], cast[n_layers:-1], cast[-1], rng
    raise AssertionError("no seed kept the pre-activations away from the kink")


# --------------------------------------------------------------------------- activations


@pytest.mark.parametrize("name", ref.ACTIVATIONS)
def test_activation_backward_matches_finite_differences(name, rng):
    z = rng.normal(size=(3, 4))
    z[np.abs(z) < 1e-3] = 0.5  # away from the kink
    dA = rng.normal(size=z.shape)
    a = ref.activation_forward(name, z, slope=0.1)
    dZ = ref.activation_backward(name, dA, z, a, slope=0.1)
    expected = numerical_gradient(lambda: np.sum(dA * ref.activation_forward(name, z, 0.1)), z)
    np.testing.assert_allclose(dZ, expected, rtol=1e-6, atol=1e-9)


def test_activation_values_by_hand():
    z = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    np.testing.assert_array_equal(ref.activation_forward("identity", z), z)
    np.testing.assert_array_equal(ref.activation_forward("relu", z), [[0, 0, 0, 0.5, 3]])
    np.testing.assert_allclose(ref.activation_forward("leaky_relu", z, slope=0.1), [[-0.2, -0.05, 0, 0.5, 3]])
    np.testing.assert_allclose(ref.activation_forward("tanh", z), np.tanh(z))
    np.testing.assert_allclose(ref.activation_forward("logistic", z), 1 / (1 + np.exp(-z)))
    np.testing.assert_array_equal(ref.activation_forward("sigmoid", z), ref.activation_forward("logistic", z))
    np.testing.assert_allclose(ref.activation_forward("softmax", z), np.exp(z) / np.exp(z).sum())


def test_relu_derivative_at_zero_is_zero():
    z = np.array([[-1.0, 0.0, 1.0]])
    dA = np.ones_like(z)
    relu = ref.activation_forward("relu", z)
    leaky = ref.activation_forward("leaky_relu", z, slope=0.1)
    np.testing.assert_array_equal(ref.activation_backward("relu", dA, z, relu), [[0, 0, 1]])
    np.testing.assert_allclose(ref.activation_backward("leaky_relu", dA, z, leaky, slope=0.1), [[0.1, 0.1, 1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logistic_is_stable_at_extreme_inputs(dtype):
    z = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=dtype)
    with strict_fp():
        a = ref.activation_forward("logistic", z)
    assert a.dtype == dtype
    assert np.all(np.isfinite(a))
    assert a[0] == 0 and a[2] == 0.5 and a[-1] == 1
    # exp(-50) ~ 2e-22: the small side keeps its relative precision.
    np.testing.assert_allclose(a[1], math.exp(-50), rtol=1e-6)


def test_softmax_rows_sum_to_one(rng):
    z = np.vstack([rng.normal(scale=5, size=(4, 6)), [1e4, -1e4, 0, 0, 1e4, 3]])
    with strict_fp():
        p = ref.activation_forward("softmax", z)
    assert np.all(np.isfinite(p)) and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-14)
    np.testing.assert_allclose(p[-1], [0.5, 0, 0, 0, 0.5, 0], atol=1e-300)


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="activation must be one of"):
        ref.activation_forward("hardswish", np.zeros((1, 1)))


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("loss, output_activation", LOSS_OUTPUTS)
def test_output_grad_matches_finite_differences(loss, output_activation, rng):
    z = rng.normal(size=(5, 3))
    z[np.abs(z) < 1e-3] = 0.5
    y = make_targets(loss, rng, 5, 3)
    _, dZ = ref.output_loss_and_grad(loss, output_activation, z, y)
    expected = numerical_gradient(lambda: ref.output_loss_and_grad(loss, output_activation, z, y)[0], z)
    np.testing.assert_allclose(dZ, expected, rtol=1e-6, atol=1e-10)


def test_squared_error_is_scikit_learns_half_mean_square(rng):
    z, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    value, dZ = ref.output_loss_and_grad("squared_error", "identity", z, y)
    assert isinstance(value, float)
    assert value == pytest.approx(((y - z) ** 2).mean() / 2, rel=1e-14)
    np.testing.assert_allclose(dZ, (z - y) / z.size)


def test_log_loss_equals_naive_formula(rng):
    z = rng.normal(scale=3, size=(6, 4))
    y = ref.to_targets(rng.integers(0, 4, 6), "log_loss", 4)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    value, dZ = ref.output_loss_and_grad("log_loss", "softmax", z, y)
    assert isinstance(value, float)
    assert value == pytest.approx(-np.sum(y * np.log(p)) / 6, rel=1e-12)
    np.testing.assert_allclose(dZ, (p - y) / 6, rtol=1e-12)


def test_binary_log_loss_equals_naive_formula(rng):
    z = rng.normal(scale=3, size=(6, 2))
    y = rng.integers(0, 2, (6, 2)).astype(float)
    p = 1 / (1 + np.exp(-z))
    value, dZ = ref.output_loss_and_grad("binary_log_loss", "logistic", z, y)
    naive = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) / 6
    assert value == pytest.approx(naive, rel=1e-12)
    np.testing.assert_allclose(dZ, (p - y) / 6, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropies_are_finite_at_extreme_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], dtype=dtype)
    y = np.array([[1, 0, 0], [1, 0, 0]], dtype=dtype)
    with strict_fp():
        value, dZ = ref.output_loss_and_grad("log_loss", "softmax", z, y)
    # Row 0 is certain and right (loss 0); row 1 puts log p = -2e4 on its class.
    assert value == pytest.approx(1e4, rel=1e-6)
    np.testing.assert_allclose(dZ, [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-6)

    z = np.array([[1e4], [-1e4], [1e4]], dtype=dtype)
    y = np.array([[1], [0], [0]], dtype=dtype)
    with strict_fp():
        value, dZ = ref.output_loss_and_grad("binary_log_loss", "logistic", z, y)
    assert value == pytest.approx(1e4 / 3, rel=1e-6)
    np.testing.assert_allclose(dZ, [[0], [0], [1 / 3]], atol=1e-6)


@pytest.mark.parametrize(
    "loss, output_activation",
    [("log_loss", "identity"), ("log_loss", "logistic"), ("binary_log_loss", "softmax")],
)
def test_cross_entropy_needs_its_output_activation(loss, output_activation):
    with pytest.raises(ValueError, match="needs output_activation"):
        ref.output_loss_and_grad(loss, output_activation, np.zeros((2, 2)), np.zeros((2, 2)))


def test_output_loss_rejects_bad_names_and_shapes():
    with pytest.raises(ValueError, match="loss must be one of"):
        ref.output_loss_and_grad("hinge", "identity", np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="same shape"):
        ref.output_loss_and_grad("squared_error", "identity", np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="same shape"):
        ref.output_loss_and_grad("squared_error", "identity", np.zeros(2), np.zeros(2))


# --------------------------------------------------------------------------- network


def test_forward_by_hand():
    X = np.array([[1.0, 2.0]])
    weights = [np.array([[1.0, -1.0], [2.0, 0.0]]), np.array([[1.0], [3.0]])]
    biases = [np.array([0.5, -0.5]), np.array([-1.0])]
    Zs, As = ref.forward(weights, biases, X, "leaky_relu", "tanh", slope=0.1)
    assert len(Zs) == 2 and len(As) == 3
    np.testing.assert_array_equal(As[0], X)
    np.testing.assert_allclose(Zs[0], [[5.5, -1.5]])
    np.testing.assert_allclose(As[1], [[5.5, -0.15]])
    np.testing.assert_allclose(Zs[1], [[5.5 - 0.45 - 1]])
    np.testing.assert_allclose(As[2], np.tanh([[4.05]]))
    np.testing.assert_array_equal(ref.predict(weights, biases, X, "leaky_relu", "tanh", slope=0.1), As[2])


def test_forward_rejects_bad_networks():
    W, b, X = np.zeros((2, 2)), np.zeros(2), np.zeros((1, 2))
    with pytest.raises(ValueError, match="activation must be one of"):
        ref.forward([W, W], [b, b], X, activation="softmax")
    with pytest.raises(ValueError, match="same length"):
        ref.forward([W, W], [b], X)
    with pytest.raises(ValueError, match="non-empty"):
        ref.forward([], [], X)


@pytest.mark.parametrize("loss, output_activation", LOSS_OUTPUTS)
@pytest.mark.parametrize("activation", HIDDEN)
def test_loss_and_grad_matches_finite_differences(activation, loss, output_activation):
    weights, biases, X, rng = make_network([4, 5, 3], 6, activation, output_activation)
    Y = make_targets(loss, rng, 6, 3)

    def value():
        return ref.loss_and_grad(weights, biases, X, Y, loss, activation, output_activation)[0]

    value0, weight_grads, bias_grads = ref.loss_and_grad(weights, biases, X, Y, loss, activation, output_activation)
    assert isinstance(value0, float)
    for W, gW in zip(weights, weight_grads):
        np.testing.assert_allclose(gW, numerical_gradient(value, W), rtol=1e-6, atol=1e-9)
    for b, gb in zip(biases, bias_grads):
        np.testing.assert_allclose(gb, numerical_gradient(value, b), rtol=1e-6, atol=1e-9)


def test_leaky_relu_slope_reaches_the_output_layer():
    weights, biases, X, rng = make_network([3, 2], 4, "relu", "leaky_relu")
    Y = rng.normal(size=(4, 2))

    args = (X, Y, "squared_error", "relu", "leaky_relu", 0.3)

    def value():
        return ref.loss_and_grad(weights, biases, *args)[0]

    _, (gW,), _ = ref.loss_and_grad(weights, biases, *args)
    np.testing.assert_allclose(gW, numerical_gradient(value, weights[0]), rtol=1e-6, atol=1e-9)


def test_float32_stays_float32():
    weights, biases, X, rng = make_network([4, 5, 3], 6, "tanh", "softmax")
    Y = make_targets("log_loss", rng, 6, 3)
    w32, b32 = [W.astype(np.float32) for W in weights], [b.astype(np.float32) for b in biases]
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)

    for name in ref.ACTIVATIONS:
        a = ref.activation_forward(name, X32)
        assert a.dtype == np.float32, name
        assert ref.activation_backward(name, X32, X32, a).dtype == np.float32, name
    for loss, output_activation in LOSS_OUTPUTS:
        value, dZ = ref.output_loss_and_grad(loss, output_activation, X32, X32)
        assert isinstance(value, float) and dZ.dtype == np.float32, (loss, output_activation)

    Zs, As = ref.forward(w32, b32, X32, "tanh", "softmax")
    assert all(a.dtype == np.float32 for a in Zs + As)
    value32, gW32, gb32 = ref.loss_and_grad(w32, b32, X32, Y32, "log_loss", "tanh", "softmax")
    assert all(g.dtype == np.float32 for g in gW32 + gb32)

    value64, gW64, gb64 = ref.loss_and_grad(weights, biases, X, Y, "log_loss", "tanh", "softmax")
    assert value32 == pytest.approx(value64, rel=1e-5)
    for g32, g64 in zip(gW32 + gb32, gW64 + gb64):
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-6)

    for optimizer in (ref.SGD(0.1, momentum=0.9, nesterov=True), ref.Adam(0.1)):
        params = [p.copy() for p in w32]
        optimizer.step(params, gW32)
        assert all(p.dtype == np.float32 for p in params)


def test_to_targets():
    Y = ref.to_targets(np.array([2, 0, 1]), "log_loss", 3, np.float32)
    assert Y.dtype == np.float32
    np.testing.assert_array_equal(Y, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(ref.to_targets([1.5, 2.5], "squared_error", 1), [[1.5], [2.5]])
    np.testing.assert_array_equal(ref.to_targets([[0, 1]], "binary_log_loss", 2), [[0, 1]])
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 3\)"):
        ref.to_targets(np.array([0, 3]), "log_loss", 3)
    with pytest.raises(ValueError, match="integer class indices"):
        ref.to_targets(np.array([0.0, 1.0]), "log_loss", 2)
    with pytest.raises(ValueError, match="n_outputs=2"):
        ref.to_targets([[0, 1, 0]], "log_loss", 2)
    with pytest.raises(ValueError, match="n_outputs=3"):
        ref.to_targets([1.0, 2.0], "squared_error", 3)


def test_glorot_bound():
    assert ref.glorot_bound(10, 20, "relu") == pytest.approx(math.sqrt(6 / 30))
    assert ref.glorot_bound(10, 20, "tanh") == pytest.approx(math.sqrt(6 / 30))
    assert ref.glorot_bound(10, 20, "logistic") == pytest.approx(math.sqrt(2 / 30))
    assert ref.glorot_bound(10, 20, "sigmoid") == pytest.approx(math.sqrt(2 / 30))


# --------------------------------------------------------------------------- optimizers


def test_sgd_steps_by_hand():
    g = np.array([0.5])
    plain, momentum, nesterov = np.array([1.0]), np.array([1.0]), np.array([1.0])
    opt_plain = ref.SGD(0.1)
    opt_momentum = ref.SGD(0.1, momentum=0.9)
    opt_nesterov = ref.SGD(0.1, momentum=0.9, nesterov=True)
    for opt, p in ((opt_plain, plain), (opt_momentum, momentum), (opt_nesterov, nesterov)):
        opt.step([p], [g])
    # v1 = -0.1 * 0.5 = -0.05
    np.testing.assert_allclose(plain, [0.95])
    np.testing.assert_allclose(momentum, [0.95])
    np.testing.assert_allclose(nesterov, [1 + 0.9 * -0.05 - 0.05])  # 0.905
    for opt, p in ((opt_plain, plain), (opt_momentum, momentum), (opt_nesterov, nesterov)):
        opt.step([p], [g])
    # v2 = 0.9 * -0.05 - 0.05 = -0.095
    np.testing.assert_allclose(plain, [0.9])
    np.testing.assert_allclose(momentum, [0.95 - 0.095])
    np.testing.assert_allclose(nesterov, [0.905 + 0.9 * -0.095 - 0.05])  # 0.7695
    np.testing.assert_allclose(opt_nesterov.velocities[0], [-0.095])


def test_adam_steps_by_hand():
    p = np.array([1.0, 1.0])
    adam = ref.Adam(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    adam.step([p], [np.array([0.5, -2.0])])
    assert adam.t == 1
    # Step 1: m = 0.1 g, v = 0.001 g^2, lr_1 = 0.1 sqrt(1 - 0.999) / (1 - 0.9), and the
    # step lr_1 m / (sqrt(v) + eps) is lr * sign(g) up to eps.
    step_1 = [
        0.1 * math.sqrt(0.001) / 0.1 * 0.05 / (math.sqrt(0.00025) + 1e-8),
        0.1 * math.sqrt(0.001) / 0.1 * -0.2 / (math.sqrt(0.004) + 1e-8),
    ]
    np.testing.assert_allclose(step_1, [0.1, -0.1], rtol=1e-6)  # the first step is lr * sign(g)
    np.testing.assert_allclose(p, [1 - step_1[0], 1 - step_1[1]], rtol=1e-15)

    adam.step([p], [np.array([-1.0, -2.0])])
    assert adam.t == 2
    # Step 2: m = 0.9 m + 0.1 g, v = 0.999 v + 0.001 g^2, lr_2 = 0.1 sqrt(1 - 0.999^2) / (1 - 0.81)
    m = [0.9 * 0.05 + 0.1 * -1.0, 0.9 * -0.2 + 0.1 * -2.0]  # [-0.055, -0.38]
    v = [0.999 * 0.00025 + 0.001 * 1.0, 0.999 * 0.004 + 0.001 * 4.0]
    lr_2 = 0.1 * math.sqrt(1 - 0.999**2) / (1 - 0.9**2)
    expected = [1 - step_1[i] - lr_2 * m[i] / (math.sqrt(v[i]) + 1e-8) for i in range(2)]
    np.testing.assert_allclose(p, expected, rtol=1e-14)
    np.testing.assert_allclose(adam.ms[0], m, rtol=1e-14)
    np.testing.assert_allclose(adam.vs[0], v, rtol=1e-14)


@pytest.mark.parametrize("optimizer", [ref.SGD(0.1, momentum=0.5), ref.Adam(0.1)])
def test_optimizers_update_in_place_and_check_shapes(optimizer):
    W, b = np.ones((2, 3)), np.ones(3)
    W_id, b_id = id(W), id(b)
    optimizer.step([W, b], [np.ones((2, 3)), -np.ones(3)])
    assert id(W) == W_id and id(b) == b_id
    assert np.all(W < 1) and np.all(b > 1)
    with pytest.raises(ValueError, match="params"):
        optimizer.step([W, b], [np.ones((2, 3))])
    with pytest.raises(ValueError, match="shape"):
        optimizer.step([W, b], [np.ones((3, 2)), np.ones(3)])
    with pytest.raises(ValueError, match="shapes"):
        optimizer.step([b, W], [np.ones(3), np.ones((2, 3))])


# --------------------------------------------------------------------------- training


def _small_problem():
    weights, biases, X, rng = make_network([3, 4, 2], 10, "tanh", "softmax")
    Y = ref.to_targets(rng.integers(0, 2, 10), "log_loss", 2)
    return weights, biases, X, Y, rng


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_train_epoch_with_zero_lr_returns_weighted_mean_of_batch_losses(l2):
    weights, biases, X, Y, rng = _small_problem()
    before = [p.copy() for p in weights + biases]
    order = rng.permutation(10)

    mean_loss = ref.train_epoch(weights, biases, X, Y, "log_loss", ref.SGD(0.0), 4, order, "tanh", "softmax", l2=l2)

    for p, p0 in zip(weights + biases, before):
        np.testing.assert_array_equal(p, p0)
    penalty = 0.5 * l2 * sum(np.sum(W**2) for W in weights)
    expected = 0.0
    for idx in (order[:4], order[4:8], order[8:]):  # batches of 4, 4 and 2
        value = ref.loss_and_grad(weights, biases, X[idx], Y[idx], "log_loss", "tanh", "softmax")[0]
        expected += (value + penalty / len(idx)) * len(idx)
    assert mean_loss == pytest.approx(expected / 10, rel=1e-12)


def test_train_epoch_full_batch_is_one_l2_regularized_step():
    weights, biases, X, Y, rng = _small_problem()
    before_W, before_b = [W.copy() for W in weights], [b.copy() for b in biases]
    value, gW, gb = ref.loss_and_grad(weights, biases, X, Y, "log_loss", "tanh", "softmax")

    mean_loss = ref.train_epoch(
        weights, biases, X, Y, "log_loss", ref.SGD(0.5), 100, rng.permutation(10),
        "tanh", "softmax", l2=0.2,
    )  # fmt: skip

    penalty = 0.5 * 0.2 * sum(np.sum(W**2) for W in before_W) / 10
    assert mean_loss == pytest.approx(value + penalty, rel=1e-12)
    for W, W0, g in zip(weights, before_W, gW):
        np.testing.assert_allclose(W, W0 - 0.5 * (g + 0.2 * W0 / 10), rtol=1e-12)
    for b, b0, g in zip(biases, before_b, gb):  # biases are not regularized
        np.testing.assert_allclose(b, b0 - 0.5 * g, rtol=1e-12)


def test_train_epoch_lowers_the_loss():
    weights, biases, X, Y, rng = _small_problem()
    optimizer = ref.Adam(0.01)
    losses = [
        ref.train_epoch(weights, biases, X, Y, "log_loss", optimizer, 3, rng.permutation(10), "tanh", "softmax")
        for _ in range(50)
    ]
    assert losses[-1] < 0.5 * losses[0]
    assert optimizer.t == 50 * 4


def test_train_epoch_rejects_bad_arguments():
    weights, biases, X, Y, _ = _small_problem()
    with pytest.raises(ValueError, match="order"):
        ref.train_epoch(weights, biases, X, Y, "log_loss", ref.SGD(0.1), 4, np.arange(9), "tanh", "softmax")
    with pytest.raises(ValueError, match="batch_size"):
        ref.train_epoch(weights, biases, X, Y, "log_loss", ref.SGD(0.1), 0, np.arange(10), "tanh", "softmax")


def test_names_match_the_core():
    """The reference's lists of names are its own (it imports no compiled code); they equal the core's."""
    from fastmlp import _names

    assert ref.ACTIVATIONS == _names.OUTPUT_ACTIVATIONS
    assert ref.HIDDEN_ACTIVATIONS == _names.HIDDEN_ACTIVATIONS
    assert ref.LOSSES == _names.LOSSES
    for name in _names.OUTPUT_ACTIVATIONS:  # the initializations' factors (kActivations' columns)
        own = _names.canonical_activation(name)
        assert ref.glorot_bound(3, 5, name) == math.sqrt(_names.GLOROT_FACTOR[own] / 8)
        assert ref.he_bound(3, name) == math.sqrt(_names.HE_FACTOR[own] / 3)
    for loss in _names.LOSSES:  # each loss's parameter, its default and range (kLosses, kLossParams)
        param = _names.LOSS_PARAM[loss]
        assert ref._LOSS_PARAMS.get(loss, (None,))[0] == param
        if param is not None:
            default, lo, hi, lo_open, hi_open = _names.LOSS_PARAM_RANGE[param]
            _, ref_default, ok, _ = ref._LOSS_PARAMS[loss]
            assert ref_default == default and ok(default)
            assert ok(lo) != lo_open and (math.isinf(hi) or ok(hi) != hi_open)
    z = np.linspace(-3, 3, 7)
    for name in _names.OUTPUT_ACTIVATIONS:  # an alias computes what its activation computes
        np.testing.assert_array_equal(
            ref.activation_forward(name, z), ref.activation_forward(_names.canonical_activation(name), z)
        )
