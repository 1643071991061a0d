"""The C++ engine against fastmlp.reference (NumPy) and finite differences."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import fastmlp
from fastmlp import reference as ref
from helpers import HIDDEN, LOSS_OUTPUT, OUTPUTS, TOL, copy_params, make_data

DTYPES = ("float64", "float32")
SIZES = [5, 7, 6, 4]


def make_net(hidden, output, dtype, sizes=SIZES, seed=0, **kw):
    return fastmlp.Network(sizes, activation=hidden, output_activation=output, dtype=dtype, seed=seed, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_forward_matches_reference(hidden, output, dtype, rng):
    net = make_net(hidden, output, dtype)
    X = rng.standard_normal((37, SIZES[0])).astype(dtype)
    got = net.forward(X)
    assert got.dtype == np.dtype(dtype) and got.shape == (37, SIZES[-1])
    W, b = copy_params(net)
    np.testing.assert_allclose(got, ref.predict(W, b, X, hidden, output), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,output", LOSS_OUTPUT)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_loss_and_grad_matches_reference(hidden, loss, output, dtype, rng):
    net = make_net(hidden, output, dtype)
    X, Y = make_data(rng, 29, SIZES[0], SIZES[-1], loss, dtype)
    value = net.loss_and_grad(X, Y, loss)
    W, b = copy_params(net)
    ref_value, ref_gW, ref_gb = ref.loss_and_grad(W, b, X, Y, loss, hidden, output)
    np.testing.assert_allclose(value, ref_value, **TOL[dtype])
    for got, want in zip(net.weight_grads + net.bias_grads, ref_gW + ref_gb):
        np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("loss,output", LOSS_OUTPUT)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradient_matches_finite_differences(hidden, loss, output, rng):
    net = make_net(hidden, output, "float64", sizes=[3, 5, 4, 3], leaky_relu_slope=0.1)
    X, Y = make_data(rng, 11, 3, 3, loss, "float64")
    net.loss_and_grad(X, Y, loss)
    analytic = net.grads.copy()
    params = net.params
    h = 1e-6
    numeric = np.empty_like(analytic)
    for i in range(params.size):
        saved = params[i]
        params[i] = saved + h
        up = net.loss_and_grad(X, Y, loss)
        params[i] = saved - h
        down = net.loss_and_grad(X, Y, loss)
        params[i] = saved
        numeric[i] = (up - down) / (2 * h)
    # relu's kink: a finite difference straddling z = 0 is meaningless there;
    # with these seeds no pre-activation lies within h of 0 (checked below).
    W, b = copy_params(net)
    Zs, _ = ref.forward(W, b, X, hidden, output, 0.1)
    assert min(np.abs(Z).min() for Z in Zs) > 1e-4
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_is_stable_for_extreme_logits(dtype):
    net = make_net("relu", "softmax", dtype, sizes=[2, 3])
    net.weights[0][:] = 0
    net.biases[0][:] = [1e4, -1e4, 0]
    X = np.zeros((2, 2), dtype)
    value = net.loss_and_grad(X, np.array([1, 0]), "log_loss")
    assert np.isfinite(value) and np.isfinite(net.grads).all()
    np.testing.assert_allclose(value, 1e4, rtol=1e-6)  # row 0: −log p₁ = 2e4, row 1: 0
    net2 = make_net("relu", "logistic", dtype, sizes=[2, 1])
    net2.weights[0][:] = 0
    net2.biases[0][:] = -1e4
    value = net2.loss_and_grad(X, np.ones((2, 1)), "binary_log_loss")
    np.testing.assert_allclose(value, 1e4, rtol=1e-6)


def test_views_are_live_and_outlive_the_network(rng):
    net = make_net("tanh", "identity", "float64")
    X = rng.standard_normal((3, SIZES[0]))
    before = net.forward(X)
    net.weights[0][0, 0] += 1.0
    assert not np.array_equal(before, net.forward(X))
    # weights, biases and params share memory in the documented layout.
    flat = np.concatenate([np.concatenate([w.ravel(), b]) for w, b in zip(net.weights, net.biases)])
    np.testing.assert_array_equal(net.params, flat)
    assert np.shares_memory(net.params, net.weights[1])
    assert net.params.size == net.n_params == sum(a * b + b for a, b in zip(SIZES, SIZES[1:]))
    w = net.weights[2]
    g = net.grads
    del net
    import gc

    gc.collect()
    w[:] = 3.0  # the view keeps the C++ memory alive
    assert float(w.sum()) == 3.0 * w.size and g.shape == (sum(a * b + b for a, b in zip(SIZES, SIZES[1:])),)


def test_seed_gives_the_same_weights_everywhere():
    a = fastmlp.Network([4, 3, 2], seed=123, dtype="float64")
    b = fastmlp.Network([4, 3, 2], seed=123, dtype="float64")
    c = fastmlp.Network([4, 3, 2], seed=124, dtype="float64")
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    # The generator is written out in C++ (xoshiro256**), not taken from a
    # standard library, so these digits are the same on every machine.
    np.testing.assert_allclose(a.params[:3], GOLDEN_SEED_123, rtol=1e-15)
    # Glorot bounds, scikit-learn's (factor 6 for relu, 2 for logistic).
    for act, net in [("relu", a), ("logistic", fastmlp.Network([4, 3, 2], activation="logistic", seed=1))]:
        for w, bias in zip(net.weights, net.biases):
            bound = ref.glorot_bound(w.shape[0], w.shape[1], act)
            assert np.abs(w).max() <= bound and np.abs(bias).max() <= bound
    he = fastmlp.Network([400, 300, 2], init="he", seed=0)
    assert not he.biases[0].any() and np.abs(he.weights[0]).max() <= np.sqrt(6 / 400)
    assert np.abs(he.weights[0]).max() > 0.9 * np.sqrt(6 / 400)


GOLDEN_SEED_123 = [-0.5616129302966213, 0.8694789333859622, -0.060288805675481213]


def _optimizer_pair(kind):
    if kind == "sgd":
        return fastmlp.SGD(lr=0.1), ref.SGD(lr=0.1)
    if kind == "momentum":
        return fastmlp.SGD(lr=0.1, momentum=0.9), ref.SGD(lr=0.1, momentum=0.9)
    if kind == "nesterov":
        return fastmlp.SGD(lr=0.1, momentum=0.9, nesterov=True), ref.SGD(lr=0.1, momentum=0.9, nesterov=True)
    return fastmlp.Adam(lr=0.01), ref.Adam(lr=0.01)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["sgd", "momentum", "nesterov", "adam"])
def test_optimizer_steps_match_reference(kind, dtype, rng):
    net = make_net("tanh", "softmax", dtype)
    X, Y = make_data(rng, 16, SIZES[0], SIZES[-1], "log_loss", dtype)
    opt, ref_opt = _optimizer_pair(kind)
    W, b = copy_params(net)
    for _ in range(3):  # three steps, so momentum and moments matter
        net.loss_and_grad(X, Y, "log_loss")
        opt.step(net)
        _, gW, gb = ref.loss_and_grad(W, b, X, Y, "log_loss", "tanh", "softmax")
        ref_opt.step([p for pair in zip(W, b) for p in pair], [g for pair in zip(gW, gb) for g in pair])
    for got, want in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(got, want, **TOL[dtype])
    if kind == "adam":
        assert opt.t == 3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["momentum", "nesterov", "adam"])
@pytest.mark.parametrize(
    "loss,output", [("log_loss", "softmax"), ("squared_error", "identity"), ("binary_log_loss", "logistic")]
)
def test_three_epochs_with_fixed_order_match_reference(loss, output, kind, dtype, rng):
    net = make_net("relu", output, dtype, sizes=[6, 16, 8, 3])
    X, Y = make_data(rng, 103, 6, 3, loss, dtype)  # 103 = 4 batches of 25 + 3
    opt, ref_opt = _optimizer_pair(kind)
    W, b = copy_params(net)
    for _epoch in range(3):
        order = rng.permutation(103)
        got = net.train_epoch(X, Y, loss, opt, batch_size=25, order=order, l2=1e-3)
        want = ref.train_epoch(W, b, X, Y, loss, ref_opt, 25, order, "relu", output, l2=1e-3)
        np.testing.assert_allclose(got, want, **TOL[dtype])
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    for got, want in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(got, want, **tol)


def test_unshuffled_epoch_equals_identity_order(rng):
    X, Y = make_data(rng, 50, 5, 4, "squared_error", "float64")
    a, b = make_net("tanh", "identity", "float64"), make_net("tanh", "identity", "float64")
    la = a.train_epoch(X, Y, "squared_error", fastmlp.SGD(0.05, 0.5), batch_size=8, shuffle=False)
    lb = b.train_epoch(X, Y, "squared_error", fastmlp.SGD(0.05, 0.5), batch_size=8, order=np.arange(50))
    assert la == lb
    np.testing.assert_array_equal(a.params, b.params)


def test_full_batch_when_batch_size_exceeds_n(rng):
    X, Y = make_data(rng, 20, 5, 4, "squared_error", "float64")
    net = make_net("tanh", "identity", "float64")
    W, b = copy_params(net)
    value = net.train_epoch(X, Y, "squared_error", fastmlp.SGD(0.1), batch_size=1000, shuffle=False)
    want = ref.train_epoch(W, b, X, Y, "squared_error", ref.SGD(0.1), 1000, np.arange(20), "tanh", "identity")
    np.testing.assert_allclose(value, want, **TOL["float64"])
    np.testing.assert_allclose(
        net.params, np.concatenate([np.r_[w.ravel(), c] for w, c in zip(W, b)]), **TOL["float64"]
    )


def _train_copy(threads, seed=7, epochs=2):
    fastmlp.set_num_threads(threads)
    rng = np.random.default_rng(3)
    X, Y = make_data(rng, 2000, 20, 5, "log_loss", "float32")
    net = fastmlp.Network([20, 64, 32, 5], output_activation="softmax", seed=seed)
    opt = fastmlp.Adam(1e-3)
    for _ in range(epochs):
        net.train_epoch(X, Y, "log_loss", opt, batch_size=128)
    return net.params.copy()


def test_determinism_same_seed_same_threads_bit_identical():
    threads = fastmlp.get_num_threads()
    try:
        for t in sorted({1, 2}):
            np.testing.assert_array_equal(_train_copy(t), _train_copy(t))
    finally:
        fastmlp.set_num_threads(threads)


def test_thread_counts_agree_to_tolerance():
    threads = fastmlp.get_num_threads()
    try:
        one, two = _train_copy(1), _train_copy(2)
    finally:
        fastmlp.set_num_threads(threads)
    np.testing.assert_allclose(one, two, rtol=1e-4, atol=1e-5)


def test_gil_is_released_during_train_epoch(rng):
    X, Y = make_data(rng, 20000, 256, 10, "log_loss", "float32")
    net = fastmlp.Network([256, 512, 512, 10], output_activation="softmax", seed=0)
    opt = fastmlp.SGD(0.01)
    done = threading.Event()
    started = time.perf_counter()

    def train():
        net.train_epoch(X, Y, "log_loss", opt, batch_size=64)
        done.set()

    worker = threading.Thread(target=train)
    worker.start()
    ticks = 0
    while not done.is_set():
        ticks += 1  # pure-Python work: only runs if the GIL is free
        time.sleep(0)
    worker.join()
    elapsed = time.perf_counter() - started
    assert elapsed > 0.05, "the epoch was too short to tell"
    assert ticks > 100, f"the main thread ran only {ticks} times in {elapsed:.2f}s: the GIL was held"


@pytest.mark.parametrize("dtype", DTYPES)
def test_spiral_is_learned(dtype):
    from fastmlp.datasets import make_spiral

    X, y = make_spiral(1000, n_classes=2, noise=0.1, seed=0, dtype=dtype)
    net = fastmlp.Network([2, 64, 64, 2], activation="relu", output_activation="softmax", dtype=dtype, seed=0)
    opt = fastmlp.Adam(0.01)
    for _ in range(200):
        net.train_epoch(X, y, "log_loss", opt, batch_size=64)
    accuracy = (net.forward(X).argmax(1) == y).mean()
    assert accuracy >= 0.97


@pytest.mark.slow
def test_fashion_mnist_one_epoch(data_dir):
    from fastmlp.datasets import load_mnist

    X, y = load_mnist("fashion-mnist", "train", path=data_dir / "fashion-mnist")
    Xt, yt = load_mnist("fashion-mnist", "test", path=data_dir / "fashion-mnist")
    net = fastmlp.Network([784, 256, 128, 10], output_activation="softmax", seed=0)
    # Adam, batch 32: scikit-learn's MLPClassifier gets 0.80-0.81 here in one epoch.
    net.train_epoch(X[:10000], y[:10000], "log_loss", fastmlp.Adam(1e-3), batch_size=32)
    accuracy = (net.forward(Xt).argmax(1) == yt).mean()
    assert accuracy >= 0.80, accuracy


def test_ctrl_c_interrupts_train_epoch_promptly(rng, ctrl_c):
    import _thread

    X, Y = make_data(rng, 40000, 256, 10, "log_loss", "float32")
    net = fastmlp.Network([256, 512, 512, 10], output_activation="softmax", seed=0)
    before = net.params.copy()
    timer = threading.Timer(0.3, _thread.interrupt_main)
    started = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        for _ in range(100):  # far longer than the timer, were it not interrupted
            net.train_epoch(X, Y, "log_loss", fastmlp.SGD(0.01), batch_size=64)
    elapsed = time.perf_counter() - started
    timer.join()
    assert elapsed < 3.0, f"Ctrl-C took {elapsed:.2f}s to stop training"
    assert np.isfinite(net.params).all() and not np.array_equal(net.params, before)


def test_gradient_hook_sees_each_batch_and_can_rescale(rng):
    X, Y = make_data(rng, 100, 5, 4, "squared_error", "float64")
    plain, hooked, halved = (make_net("tanh", "identity", "float64") for _ in range(3))
    seen = []

    def identity(grads, loss):
        seen.append((grads.shape, loss))
        return loss

    kw = dict(batch_size=30, shuffle=False, l2=0.01)
    a = plain.train_epoch(X, Y, "squared_error", fastmlp.SGD(0.1), **kw)
    b = hooked.train_epoch(X, Y, "squared_error", fastmlp.SGD(0.1), gradient_hook=identity, **kw)
    assert a == b and len(seen) == 4 and seen[0][0] == (hooked.n_params,)
    np.testing.assert_array_equal(plain.params, hooked.params)

    # Halving the gradients and the loss, with world_size 2 halving the L2
    # term, is one step of half the size: the same as lr / 2.
    def halve(grads, loss):
        grads *= 0.5
        return loss * 0.5

    W, b_ = copy_params(halved)
    c = halved.train_epoch(X, Y, "squared_error", fastmlp.SGD(0.1), gradient_hook=halve, world_size=2, **kw)
    want = ref.train_epoch(W, b_, X, Y, "squared_error", ref.SGD(0.05), 30, np.arange(100), "tanh", "identity", l2=0.01)
    np.testing.assert_allclose(2 * c, want, **TOL["float64"])
    np.testing.assert_allclose(
        halved.params, np.concatenate([np.r_[w.ravel(), v] for w, v in zip(W, b_)]), **TOL["float64"]
    )


def test_gradient_hook_error_propagates(rng):
    X, Y = make_data(rng, 20, 5, 4, "squared_error", "float64")
    net = make_net("tanh", "identity", "float64")

    def broken(grads, loss):
        raise ConnectionError("allreduce failed")

    with pytest.raises(ConnectionError, match="allreduce failed"):
        net.train_epoch(X, Y, "squared_error", fastmlp.SGD(0.1), gradient_hook=broken)
