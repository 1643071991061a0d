"""Inference's weights packed once (cpp/include/fastmlp/weight_packs.hpp): never stale.

``Network.forward`` on a batch of at least 16 rows multiplies with each layer's W packed once and
kept between calls. Every way the weights can change must make the next call use the new ones:
each test below runs a forward (which makes the packs), changes the weights one way, and checks
that the next forward equals that of a fresh network holding the new parameters (bit for bit:
same kernels, same chunks) and differs from the first. Each fails if the packs are reused without
the check that made them stale (the memcmp of the parameters against the packs' snapshot, the
precision, the kernel).
"""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

import fastmlp
from fastmlp import _core, layers as L

SIZES = [40, 48, 24, 5]
ROWS = 300  # three chunks of 128 rows, the last 44: every product uses the packs
PRECISIONS = [None, "bf16"]


def _net(precision=None, seed=0, **kw):
    return fastmlp.Network(SIZES, activation="tanh", output_activation="softmax", seed=seed, precision=precision, **kw)


def _X(rows=ROWS, seed=1):
    return np.random.default_rng(seed).standard_normal((rows, SIZES[0])).astype(np.float32)


def _fresh_forward(net, X):
    """The forward of a new network (no packs yet) with net's parameters and precision."""
    other = _net(None if net.precision == "fp32" else net.precision)
    other.params[:] = net.params
    return other.forward(X)


def _check_changed(net, X, before):
    after = net.forward(X)
    assert not np.array_equal(after, before), "the change did not change the outputs: the test proves nothing"
    np.testing.assert_array_equal(after, _fresh_forward(net, X))
    np.testing.assert_array_equal(net.forward(X), after)  # ... and the packs made from them are reused


def _assign_weights(net, layer):
    net.weights[layer][...] = np.random.default_rng(layer).standard_normal(net.weights[layer].shape)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda net: _assign_weights(net, 0), id="weights[0][...]="),
        pytest.param(lambda net: _assign_weights(net, 1), id="weights[1][...]="),
        pytest.param(lambda net: _assign_weights(net, 2), id="weights[2][...]="),
        pytest.param(lambda net: net.weights[1].__imul__(np.float32(-2)), id="weights[1]*=-2"),
        pytest.param(lambda net: net.weights[0].__setitem__((3, 7), np.float32(5.0)), id="one element"),
        pytest.param(lambda net: net.params.__setitem__(slice(None), net.params[::-1].copy()), id="params[:]="),
        pytest.param(lambda net: net.biases[1].__iadd__(np.float32(1.0)), id="biases[1]+=1"),
        pytest.param(lambda net: net.initialize(seed=7), id="initialize"),
        pytest.param(lambda net: net.__setstate__(_net(seed=3).__getstate__()), id="__setstate__"),
    ],
)
def test_every_change_of_the_weights_reaches_forward(precision, change):
    net = _net(precision)
    X = _X()
    before = net.forward(X)
    change(net)
    _check_changed(net, X, before)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_training_steps_and_optimizer_updates_reach_forward(precision):
    net = _net(precision, max_norm=0.5)  # max-norm rescales columns after each update, in C++
    X, y = _X(), np.random.default_rng(2).integers(0, SIZES[-1], ROWS)
    Y = np.eye(SIZES[-1], dtype=np.float32)[y]
    before = net.forward(X)
    net.train_epoch(X, Y, "log_loss", fastmlp.SGD(lr=0.5), batch_size=64)  # C++ steps
    _check_changed(net, X, before)
    before = net.forward(X)
    net.loss_and_grad(X, Y, "log_loss")
    net.apply_step(fastmlp.Adam(lr=0.05))  # one optimizer update
    _check_changed(net, X, before)


def test_precision_and_kernel_changes_reach_forward():
    net = _net()
    X = _X()
    before = net.forward(X)  # float32 packs
    net._net.precision = "bf16"
    _check_changed(net, X, before)  # bf16 packs, not the float ones read as pairs
    net._net.precision = "fp32"
    np.testing.assert_array_equal(net.forward(X), before)
    default = _core.build_info()["gemm_kernel"]
    for kernel in _core.build_info()["gemm_kernels"]:
        _core._set_gemm_kernel(kernel)
        try:
            np.testing.assert_array_equal(net.forward(X), _fresh_forward(net, X))
        finally:
            _core._set_gemm_kernel(default)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pickle_load_and_estimator_coefs(tmp_path):
    net = _net()
    X = _X()
    before = net.forward(X)
    copy = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(copy.forward(X), before)
    copy.weights[0][...] = 0.5
    np.testing.assert_array_equal(net.forward(X), before)  # the copy's weights are its own
    _check_changed(copy, X, before)
    copy.save(tmp_path / "net.npz")
    loaded = fastmlp.Network.load(tmp_path / "net.npz")
    np.testing.assert_array_equal(loaded.forward(X), copy.forward(X))

    y = np.random.default_rng(2).integers(0, 3, ROWS)
    clf = fastmlp.MLPClassifier(hidden_layer_sizes=(32,), max_iter=3, random_state=0).fit(X, y)
    before = clf.predict_proba(X)
    clf.coefs_[0][...] = np.random.default_rng(4).standard_normal(clf.coefs_[0].shape)
    after = clf.predict_proba(X)
    assert not np.array_equal(after, before)
    fresh = pickle.loads(pickle.dumps(clf))  # unpickled: a new network, nothing packed yet
    np.testing.assert_array_equal(fresh.predict_proba(X), after)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_concurrent_forwards_see_whole_packs(precision):
    """Threads call forward at once right after each change (one makes the packs, the others wait
    for it or reuse it): every result is the new weights' output."""
    net = _net(precision)
    X = _X()
    threads, rounds = 4, 12
    barrier = threading.Barrier(threads + 1)
    results: list[list[np.ndarray]] = [[] for _ in range(threads)]

    def worker(t):
        for _ in range(rounds):
            barrier.wait()  # the weights were changed
            results[t].append(net.forward(X))
            barrier.wait()  # done: the next change may come

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    expected = []
    for r in range(rounds):
        net.weights[r % 3][...] = np.random.default_rng(r).standard_normal(net.weights[r % 3].shape)
        expected.append(_fresh_forward(net, X))
        barrier.wait()
        barrier.wait()
    for th in pool:
        th.join()
    for t in range(threads):
        for r in range(rounds):
            np.testing.assert_array_equal(results[t][r], expected[r])


def test_short_batches_and_tails_agree_with_the_packed_rows():
    """Rows below 16 (a single row, a chunk's tail) read W in place; with the packs or not, each
    row's output is that row's output (to float32 rounding: other kernels)."""
    net = _net()
    X = _X(ROWS + 5)
    whole = net.forward(X)  # the last chunk has 49 rows, not a multiple of any tile
    rows = np.concatenate([net.forward(X[i : i + 1]) for i in range(0, ROWS + 5, 37)])
    np.testing.assert_allclose(rows, whole[::37], rtol=1e-5, atol=1e-6)
    net.weights[0][...] *= 2
    rows = np.concatenate([net.forward(X[i : i + 1]) for i in range(0, ROWS + 5, 37)])
    np.testing.assert_allclose(rows, net.forward(X)[::37], rtol=1e-5, atol=1e-6)


def test_a_network_of_layers_packs_each_dense_layer():
    """Dense layers between normalizations and a residual block: each dense op takes its own pack
    (the n-th dense op the n-th), and a change of any one reaches forward."""
    spec = [
        L.Dense(32),
        L.Activation("relu"),
        L.LayerNorm(),
        L.Residual([L.Dense(32), L.Activation("tanh")]),
        L.Dense(7),
    ]

    def fresh(params):  # a new network (nothing packed yet) holding these parameters
        other = fastmlp.Network(SIZES[0], layers=spec, seed=1, output_activation="softmax")
        other.params[:] = params
        return other

    net = fastmlp.Network(SIZES[0], layers=spec, seed=0, output_activation="softmax")
    X = _X()
    before = net.forward(X)
    for layer in range(3):
        net.weights[layer][...] = np.random.default_rng(layer).standard_normal(net.weights[layer].shape)
        after = net.forward(X)
        assert not np.array_equal(after, before)
        np.testing.assert_array_equal(after, fresh(net.params).forward(X))
        before = after
