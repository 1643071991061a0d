"""The GEMM layer (cpp/include/fastmlp/gemm.hpp) against NumPy, with each kernel forced.

Every product shape class the engine makes: one row and a few rows (Eigen's GEMV below the
packed kernel's minimum), tall-skinny (an output layer of a few units), wide, sizes that are no
multiple of the register tile or of the blocking (edge tiles, several depth blocks, several
column panels), the transposes of the backward pass (Aᵀ·B for dW, A·Bᵀ for dX), and a thread's
share of the columns (the rest of C untouched). float64 to rounding; float32 against the exact
(float64) product within float32's accumulated rounding: |error| <= 8 ε₃₂ √k Σ|a||b|.

Then the network: forward and gradients against fastmlp.reference under each kernel, and
forward after every way the weights can change (no packed copy of a weight may go stale).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
from fastmlp import _core, reference as ref
from helpers import TOL, copy_params, make_data

KERNELS = _core.build_info()["gemm_kernels"]
SHAPES = [  # (m, n, k): C is m × n, the sum runs over k
    (1, 256, 784),  # one row: latency
    (5, 33, 17),  # fewer rows than the packed kernel takes
    (16, 10, 128),  # an output layer: too narrow for the packed kernel on AVX-512 (Eigen's)
    (16, 16, 128),  # the smallest packed product on every build (kMinPackedRows × kMinPackedCols)
    (64, 1, 32),  # one output: Eigen's GEMV
    (128, 10, 256),  # tall-skinny
    (128, 256, 784),  # mnist's first layer, a batch of 128
    (37, 53, 29),  # no multiple of any tile
    (100, 70, 700),  # several depth blocks (kKc = 384)
    (40, 1100, 50),  # several column panels (kNc = 1024)
    (97, 131, 1),  # a sum of one term
]


@pytest.fixture(params=KERNELS)
def kernel(request):
    """Forces one GEMM kernel for the test, then restores the default."""
    default = _core.build_info()["gemm_kernel"]
    _core._set_gemm_kernel(request.param)
    try:
        yield request.param
    finally:
        _core._set_gemm_kernel(default)


def _operands(rng, m, n, k, ta, tb, dtype):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    A = a.T.astype(np.float64) if ta else a.astype(np.float64)
    B = b.T.astype(np.float64) if tb else b.astype(np.float64)
    return a, b, A, B


def _check(c, A, B, dtype, cols=None):
    exact = A @ B
    if cols is not None:
        exact = exact[:, cols[0] : cols[1]]
        c = c[:, cols[0] : cols[1]]
    if dtype == "float64":
        np.testing.assert_allclose(c, exact, rtol=1e-12, atol=1e-12)
    else:
        bound = 8 * np.finfo(np.float32).eps * np.sqrt(A.shape[1]) * (np.abs(A) @ np.abs(B))
        if cols is not None:
            bound = bound[:, cols[0] : cols[1]]
        assert np.all(np.abs(c - exact) <= bound + 1e-30), np.max(np.abs(c - exact) / (bound + 1e-30))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_matches_numpy(kernel, shape, ta, tb, dtype):
    m, n, k = shape
    rng = np.random.default_rng(m * 7919 + n * 31 + k)
    a, b, A, B = _operands(rng, m, n, k, ta, tb, dtype)
    c = np.full((m, n), np.nan, dtype=dtype)
    _core._gemm(a, b, ta, tb, (0, n), c)
    _check(c, A, B, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cols", [(0, 16), (16, 45), (3, 4), (45, 77), (0, 0)])
def test_gemm_writes_only_its_columns(kernel, cols, dtype):
    m, n, k = 50, 77, 300
    rng = np.random.default_rng(1)
    a, b, A, B = _operands(rng, m, n, k, False, True, dtype)
    c = np.full((m, n), 7.0, dtype=dtype)
    _core._gemm(a, b, False, True, cols, c)
    _check(c, A, B, dtype, cols)
    outside = np.ones(n, bool)
    outside[cols[0] : cols[1]] = False
    assert np.all(c[:, outside] == 7.0)


def test_kernels_agree_on_every_column_split():
    """A column of C does not depend on which share of the columns computed it (the packed
    kernel sums each element over k in one fixed order): a product split across threads
    equals the product computed whole, bit for bit. (Eigen's GEMM, the default of builds
    without AVX-512, does not promise it: there a split changes the last bits.)"""
    if "packed" not in KERNELS:
        pytest.skip("this build has no packed kernel (it needs AVX2+FMA)")
    rng = np.random.default_rng(2)
    a = rng.standard_normal((64, 900)).astype(np.float32)
    b = rng.standard_normal((900, 200)).astype(np.float32)
    default = _core.build_info()["gemm_kernel"]
    _core._set_gemm_kernel("packed")
    try:
        whole = np.zeros((64, 200), np.float32)
        _core._gemm(a, b, False, False, (0, 200), whole)
        split = np.zeros((64, 200), np.float32)
        for begin, end in [(0, 16), (16, 112), (112, 200)]:
            _core._gemm(a, b, False, False, (begin, end), split)
    finally:
        _core._set_gemm_kernel(default)
    np.testing.assert_array_equal(split, whole)


def test_set_gemm_kernel_refuses_unknown_names():
    with pytest.raises(ValueError, match="'eigen' or 'packed'"):
        _core._set_gemm_kernel("mkl")


def test_show_config_names_the_kernel_and_why():
    info = _core.build_info()
    assert info["gemm_kernel"] in info["gemm_kernels"]
    assert info["gemm_why"]
    assert fastmlp._config.config()["gemm"].startswith(info["gemm_kernel"] + " (")


# --------------------------------------------------------------------------- the network


SIZES = [[37, 70, 45, 3], [784, 256, 128, 10]]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows", [1, 7, 40, 300])
@pytest.mark.parametrize("sizes", SIZES, ids=["odd", "mnist"])
def test_network_against_reference(kernel, sizes, rows, dtype):
    net = fastmlp.Network(sizes, activation="tanh", output_activation="softmax", dtype=dtype, seed=3)
    rng = np.random.default_rng(rows)
    X, Y = make_data(rng, rows, sizes[0], sizes[-1], "log_loss", dtype)
    W, b = copy_params(net)
    np.testing.assert_allclose(net.forward(X), ref.predict(W, b, X, "tanh", "softmax"), **TOL[dtype])
    value = net.loss_and_grad(X, Y, "log_loss")
    v_ref, gW, gb = ref.loss_and_grad(W, b, X, Y, "log_loss", "tanh", "softmax")
    np.testing.assert_allclose(value, v_ref, **TOL[dtype])
    for got, want in zip(net.weight_grads + net.bias_grads, gW + gb):
        np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("rows", [1, 20, 1000])
def test_forward_sees_every_change_of_the_weights(kernel, rows, tmp_path):
    """forward() after each path that changes the weights — assignment through the views,
    a training epoch, an optimizer step, load — equals the reference on the new weights."""
    sizes = [20, 64, 48, 5]
    net = fastmlp.Network(sizes, activation="relu", output_activation="identity", seed=0)
    rng = np.random.default_rng(rows)
    X = rng.standard_normal((rows, sizes[0])).astype(np.float32)
    Y = rng.standard_normal((rows, sizes[-1])).astype(np.float32)

    def check():  # against the float64 reference of the current float32 weights
        W, b = ([p.astype(np.float64) for p in ps] for ps in copy_params(net))
        want = ref.predict(W, b, X.astype(np.float64), "relu", "identity")
        np.testing.assert_allclose(net.forward(X), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())

    check()
    net.weights[1][...] = rng.standard_normal(net.weights[1].shape)
    net.biases[2][...] = 1.5
    check()
    net.params[: sizes[0]] = 0.25
    check()
    net.train_epoch(X, Y, loss="squared_error", optimizer=fastmlp.SGD(lr=0.05), batch_size=8)
    check()
    net.loss_and_grad(X, Y, "squared_error")
    opt = fastmlp.Adam(lr=0.01)
    opt.step(net)
    check()
    other = fastmlp.Network(sizes, activation="relu", output_activation="identity", seed=9)
    other.save(tmp_path / "net.npz")
    net = fastmlp.Network.load(tmp_path / "net.npz")
    check()


def _unaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of `a` whose elements lie one byte off their natural alignment
    (as an array read from a byte buffer or unpickled out of band can)."""
    raw = bytearray(a.nbytes + 1)
    out = np.frombuffer(raw, dtype=a.dtype, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unaligned_arrays_give_the_aligned_results(kernel, dtype):
    """Every array the core reads is element-aligned (the binding copies one that is not): the
    kernels' scalar loads would otherwise be undefined behaviour (UBSan reports them)."""
    sizes = [9, 40, 3]
    net = fastmlp.Network(sizes, activation="tanh", output_activation="softmax", dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    X, Y = make_data(rng, 50, sizes[0], sizes[-1], "log_loss", dtype)
    np.testing.assert_array_equal(net.forward(_unaligned(X)), net.forward(X))
    assert net.loss_and_grad(_unaligned(X), _unaligned(Y), "log_loss") == net.loss_and_grad(X, Y, "log_loss")
    twin = fastmlp.Network(sizes, activation="tanh", output_activation="softmax", dtype=dtype, seed=0)
    net.train_epoch(_unaligned(X), _unaligned(Y), loss="log_loss", optimizer=fastmlp.SGD(lr=0.1), batch_size=16)
    twin.train_epoch(X, Y, loss="log_loss", optimizer=fastmlp.SGD(lr=0.1), batch_size=16)
    np.testing.assert_array_equal(net.params, twin.params)
