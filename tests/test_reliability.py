"""Network-level reliability: sizes that cannot be allocated, views that
outlive their network, numerical extremes against the reference, threads,
and a soak test for leaks."""

from __future__ import annotations

import contextlib
import gc
import os
import threading

import numpy as np
import pytest

import fastmlp
from fastmlp import reference as ref
from helpers import TOL, asan_allowance, copy_params, make_data, rss_bytes

PHYSICAL = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# --- sizes that cannot be allocated ---------------------------------------


@pytest.mark.parametrize("sizes", [[4, 10**12], [10**7, 10**7], [3, 2**40, 2], [2**31, 2**31, 2**31]])
def test_huge_layers_raise_value_error_before_allocating(sizes):
    with pytest.raises(ValueError, match=r"layer_sizes of .* parameters needs .* GiB.*this machine has"):
        fastmlp.Network(sizes, seed=0)


def _wide_net():
    # 2^21 hidden units: 8 MiB of float32 parameters, but every batch row
    # needs 3 x 2^21 values of workspace (24 MiB).
    return fastmlp.Network([1, 2**21, 1], seed=0)


def test_training_workspace_beyond_memory_is_a_value_error_and_changes_nothing():
    net = _wide_net()
    rows = int(2 * PHYSICAL / (3 * 4 * 2**21)) + 1  # twice the machine's memory of workspace
    X = np.zeros((rows, 1), np.float32)
    y = np.zeros((rows, 1), np.float32)
    before = net.params.copy()
    opt = fastmlp.SGD(0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"training workspace.*GiB; this machine has .* GiB.*batch_size"):
        net.train_epoch(X, y, "squared_error", opt, batch_size=rows)
    with pytest.raises(ValueError, match="training workspace"):
        net.loss_and_grad(X, y, "squared_error")
    np.testing.assert_array_equal(net.params, before)
    # The same data in small batches trains fine: only the batch was too big.
    net.train_epoch(X[:4], y[:4], "squared_error", opt, batch_size=2)
    assert np.isfinite(net.params).all()


def test_forward_memory_is_bounded_for_wide_layers():
    """forward runs chunk by chunk: a wide layer shrinks the chunk, not the machine."""
    net = _wide_net()
    X = np.linspace(-1, 1, 300, dtype=np.float32).reshape(-1, 1)
    rss = rss_bytes()
    out = net.forward(X)
    assert rss_bytes() - rss < 512 * 2**20  # 256-row chunks x 2^21 x 4 B would be 2 GiB per buffer
    W, b = copy_params(net)
    for rows in (slice(0, 2), slice(150, 152), slice(298, 300)):  # the reference is not chunked: a few rows
        np.testing.assert_allclose(out[rows], ref.predict(W, b, X[rows], "relu", "identity"), rtol=1e-4, atol=1e-4)


def test_forward_output_beyond_memory_is_a_value_error():
    net = fastmlp.Network([1, 2**20], activation="identity", seed=0)
    rows = int(2 * PHYSICAL / (4 * 2**20)) + 1
    # A broadcast view: X itself takes no memory.
    X = np.broadcast_to(np.float32(1), (rows, 1))
    with pytest.raises(ValueError, match=r"forward's output.*GiB"):
        net.forward(X)


# --- views outlive their owners -------------------------------------------


def test_every_view_keeps_its_memory_alive():
    net = fastmlp.Network([3, 4, 2], dtype="float64", seed=0)
    X, Y = make_data(np.random.default_rng(0), 8, 3, 2, "squared_error", "float64")
    kept = {}

    def hook(grads, loss):
        kept["hook"] = grads  # noqa: F821 - runs before `del kept` below
        return loss

    net.train_epoch(X, Y, "squared_error", fastmlp.SGD(0.1), gradient_hook=hook)
    views = [net.params, net.grads, *net.weights, *net.biases, *net.weight_grads, *net.bias_grads, kept["hook"]]
    opt = fastmlp.Adam(0.1)
    net.loss_and_grad(X, Y, "squared_error")
    opt.step(net)
    m = opt._impl.get_state()["m"]
    opt._impl.reset()  # frees the moments: what was read out must not dangle
    del net, opt, kept
    for _ in range(3):
        gc.collect()
    junk = [np.full(64, 7.0) for _ in range(1000)]  # reuse freed memory, if any was freed
    for v in views + [m]:
        v[...] = 1.5
        assert float(v.sum()) == 1.5 * v.size
    del junk


# --- numerical extremes, equal to the reference ----------------------------


def _check_against_reference(net, X, Y, loss, dtype):
    W, b = copy_params(net)
    value = net.loss_and_grad(X, Y, loss)
    want, gW, gb = ref.loss_and_grad(
        W, b, X.astype(dtype), Y.astype(dtype), loss, net.activation, net.output_activation
    )
    assert np.isfinite(value) and np.isfinite(net.grads).all()
    tol = TOL[dtype]
    np.testing.assert_allclose(value, want, **tol)
    for got, w in zip(net.weight_grads + net.bias_grads, gW + gb):
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(got, w, rtol=tol["rtol"], atol=tol["rtol"] * scale)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "loss,output",
    [
        ("log_loss", "softmax"),
        ("binary_log_loss", "logistic"),
        ("squared_error", "softmax"),
        ("squared_error", "logistic"),
        ("squared_error", "tanh"),
        ("squared_error", "identity"),
    ],
)
def test_extreme_logits(loss, output, dtype):
    k = 1 if output == "logistic" else 3
    net = fastmlp.Network([2, k], output_activation=output, dtype=dtype, seed=0)
    net.weights[0][:] = 0
    net.biases[0][:] = [1e4, -1e4, 0][:k] if k == 3 else [-1e4]
    X = np.zeros((4, 2), dtype)
    rng = np.random.default_rng(0)
    Y = make_data(rng, 4, 2, k, loss, dtype)[1]
    _check_against_reference(net, X, Y, loss, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden", ["logistic", "tanh", "relu", "leaky_relu"])
def test_saturated_hidden_activations(hidden, dtype):
    net = fastmlp.Network([3, 5, 4, 3], activation=hidden, output_activation="softmax", dtype=dtype, seed=0)
    for w in net.weights[:-1]:
        w *= 1e3  # pre-activations in the thousands: logistic/tanh flat, relu huge
    X, Y = make_data(np.random.default_rng(1), 7, 3, 3, "log_loss", dtype)
    if hidden in ("relu", "leaky_relu"):
        net.weights[-1][:] *= 1e-6  # keep the logits sane; the hidden layers are the extreme ones
    _check_against_reference(net, X, Y, "log_loss", dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_all_equal_inputs_one_sample_batches_one_class(dtype):
    net = fastmlp.Network([4, 6, 3], activation="tanh", output_activation="softmax", dtype=dtype, seed=0)
    X = np.full((9, 4), 0.5, dtype)
    y = np.zeros(9, np.int64)  # a single class
    Y = np.eye(3, dtype=dtype)[y]
    _check_against_reference(net, X, Y, "log_loss", dtype)
    _check_against_reference(net, X[:1], Y[:1], "log_loss", dtype)
    W, b = copy_params(net)
    got = net.train_epoch(X, y, "log_loss", fastmlp.SGD(0.5), batch_size=1, order=np.arange(9))
    want = ref.train_epoch(W, b, X, Y, "log_loss", ref.SGD(0.5), 1, np.arange(9), "tanh", "softmax")
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, want, **tol)
    for p, q in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(p, q, **tol)
    binary = fastmlp.Network([4, 1], output_activation="logistic", dtype=dtype, seed=0)
    _check_against_reference(binary, X, np.ones((9, 1), dtype), "binary_log_loss", dtype)


def test_nan_weights_written_by_the_user_do_not_crash():
    net = fastmlp.Network([3, 4, 2], output_activation="softmax", dtype="float64", seed=0)
    net.weights[0][0, 0] = np.nan
    X = np.ones((5, 3))
    assert np.isnan(net.forward(X)).all()
    assert np.isnan(net.loss_and_grad(X, np.array([0, 1, 0, 1, 0]), "log_loss"))


def test_huge_learning_rate_gives_a_non_finite_loss_not_a_crash():
    """The Network reports divergence in its return value; stopping is the estimator's decision."""
    net = fastmlp.Network([4, 8, 1], dtype="float32", seed=0)
    X, Y = make_data(np.random.default_rng(0), 64, 4, 1, "squared_error", "float32")
    losses = [net.train_epoch(X * 1e3, Y * 1e3, "squared_error", fastmlp.SGD(1e6), batch_size=8) for _ in range(5)]
    assert not np.isfinite(losses[-1])


# --- threads -----------------------------------------------------------------


def _in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn()))
    t.start()
    t.join()
    return out["v"]


def test_concurrent_forward_on_one_network_is_correct():
    net = fastmlp.Network([32, 64, 10], output_activation="softmax", dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1000 + 37 * i, 32)) for i in range(4)]
    W, b = copy_params(net)
    wants = [ref.predict(W, b, X, "relu", "softmax") for X in inputs]
    errors = []

    def work(i):
        try:
            for _ in range(15):
                np.testing.assert_allclose(net.forward(inputs[i]), wants[i], rtol=1e-12, atol=1e-14)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_training_one_network_while_another_predicts():
    rng = np.random.default_rng(0)
    X, Y = make_data(rng, 4000, 16, 4, "log_loss", "float32")

    def train():
        net = fastmlp.Network([16, 64, 4], output_activation="softmax", seed=3)
        opt = fastmlp.Adam(1e-3)
        for _ in range(4):
            net.train_epoch(X, Y, "log_loss", opt, batch_size=32)
        return net.params.copy()

    alone = _in_thread(train)  # same thread setup, nothing beside it
    other = fastmlp.Network([16, 32, 4], output_activation="softmax", dtype="float64", seed=5)
    Xo = rng.standard_normal((500, 16))
    want = other.forward(Xo)
    result = {}
    trainer = threading.Thread(target=lambda: result.setdefault("p", train()))
    trainer.start()
    calls = 0
    while trainer.is_alive() or calls < 5:
        np.testing.assert_array_equal(other.forward(Xo), want)
        calls += 1
    trainer.join()
    np.testing.assert_array_equal(result["p"], alone)


def _hold_training(net, opt, X, Y, loss):
    """Starts train_epoch in a thread and parks it inside C++ (in its gradient hook, lock held)."""
    inside, release = threading.Event(), threading.Event()

    def hook(grads, value):
        inside.set()
        release.wait(30)
        return value

    out = {}

    def run():
        try:
            out["loss"] = net.train_epoch(X, Y, loss, opt, batch_size=len(X), shuffle=False, gradient_hook=hook)
        except BaseException as exc:  # noqa: BLE001
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    assert inside.wait(30), "the training thread never reached its hook"
    return t, release, out


def test_training_the_same_network_from_two_threads_is_refused_clearly():
    rng = np.random.default_rng(0)
    X, Y = make_data(rng, 64, 5, 3, "log_loss", "float64")
    net = fastmlp.Network([5, 8, 3], output_activation="softmax", dtype="float64", seed=0)
    twin = fastmlp.Network([5, 8, 3], output_activation="softmax", dtype="float64", seed=0)
    opt, twin_opt = fastmlp.Adam(0.01), fastmlp.Adam(0.01)
    t, release, out = _hold_training(net, opt, X, Y, "log_loss")
    try:
        busy = "being trained by another thread"
        with pytest.raises(RuntimeError, match=busy):
            net.train_epoch(X, Y, "log_loss", fastmlp.SGD(0.1))
        with pytest.raises(RuntimeError, match=busy):
            net.loss_and_grad(X, Y, "log_loss")
        with pytest.raises(RuntimeError, match=busy):
            fastmlp.SGD(0.1).step(net)
        with pytest.raises(RuntimeError, match=busy):
            net.initialize(seed=1)
        # The optimizer in use is refused too, even for another network.
        other = fastmlp.Network([5, 8, 3], output_activation="softmax", dtype="float64", seed=0)
        with pytest.raises(RuntimeError, match="optimizer is in use by another thread"):
            other.train_epoch(X, Y, "log_loss", opt)
        with pytest.raises(RuntimeError, match="optimizer is in use by another thread"):
            opt.step(other)
        with pytest.raises(RuntimeError, match="optimizer is in use by another thread"):
            opt._impl.reset()
        # Reading is allowed while it trains.
        assert net.forward(X).shape == (64, 3)
    finally:
        release.set()
        t.join()
    assert "error" not in out, out.get("error")
    # None of the refused calls changed anything: the same as training alone.
    twin.train_epoch(X, Y, "log_loss", twin_opt, batch_size=64, shuffle=False, gradient_hook=lambda g, v: v)
    np.testing.assert_array_equal(net.params, twin.params)
    np.testing.assert_array_equal(opt.state_dict()["m"], twin_opt.state_dict()["m"])
    assert net._seed == twin._seed and opt.t == twin_opt.t == 1


def test_racing_threads_on_one_network_never_corrupt_it():
    """Unsynchronized: several threads hammer one network; each call succeeds or is refused cleanly."""
    rng = np.random.default_rng(0)
    X, Y = make_data(rng, 512, 8, 3, "log_loss", "float32")
    net = fastmlp.Network([8, 32, 3], output_activation="softmax", seed=0)
    outcomes = {"ok": 0, "busy": 0}
    lock = threading.Lock()
    errors = []

    def work(i):
        opt = fastmlp.SGD(0.01, momentum=0.9)
        for _ in range(30):
            try:
                if i % 3 == 0:
                    net.train_epoch(X, Y, "log_loss", opt, batch_size=64)
                elif i % 3 == 1:
                    net.loss_and_grad(X[:64], Y[:64], "log_loss")
                    opt.step(net)
                else:
                    net.forward(X)
                with lock:
                    outcomes["ok"] += 1
            except RuntimeError as exc:
                if "another thread" not in str(exc):
                    errors.append(exc)
                with lock:
                    outcomes["busy"] += 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert outcomes["ok"] > 0 and np.isfinite(net.params).all()


# --- soak: no leak over many cycles ------------------------------------------


@pytest.mark.slow
def test_soak_network_cycles_do_not_leak():
    rng = np.random.default_rng(0)
    X, Y = make_data(rng, 256, 16, 4, "log_loss", "float32")
    labels = Y.argmax(1)
    opt = fastmlp.Adam(1e-3)
    keep = fastmlp.Network([16, 32, 4], output_activation="softmax", seed=0)
    growth_at = {}
    for cycle in range(1000):
        net = fastmlp.Network([16, 32, 4], output_activation="softmax", seed=cycle)  # built and dropped
        net.forward(X[:32])
        net.loss_and_grad(X[:32], labels[:32], "log_loss")
        _ = net.weights, net.biases, net.params, net.grads
        keep.train_epoch(X, labels, "log_loss", opt, batch_size=64)
        keep.loss_and_grad(X, Y, "log_loss")
        opt.step(keep)
        keep.forward(X)
        with contextlib.suppress(ValueError):  # failed calls must not leak either
            keep.forward(X[:, :3])
        if cycle == 99:
            gc.collect()
            growth_at[100] = rss_bytes()
    gc.collect()
    growth = rss_bytes() - growth_at[100]
    assert growth <= 4 * 2**20 + asan_allowance(), f"resident memory grew {growth / 2**20:.1f} MiB"
