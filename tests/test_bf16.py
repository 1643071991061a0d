"""bfloat16 mixed precision (precision="bf16"): the GEMM layer's bf16 products and the network.

The kernels and fastmlp.reference round every operand of a product to bfloat16 with the same
rule (round to nearest even, a denormal to zero: reference.bf16_round), so a bf16 product and
the exact float64 product of the rounded operands differ only by the float32 accumulation:

    |C - Â·B̂| <= 8 ε₃₂ √k Σ|â||b̂|        (ε₃₂ = 2⁻²³; the float32 bound of test_gemm.py)

— far tighter than bf16's own 2⁻⁸, and checked for every shape class with each bf16 kernel
forced (the AVX512-BF16 kernel where the CPU has it, the fallback everywhere; the fallback
without its buffers, a scalar loop, too).

A network's layers chain products: an activation that lands within that accumulation error of a
bf16 rounding boundary rounds to the neighbouring bf16 value in one computation and not in the
other, a difference of one bf16 step (2⁻⁸ relative) in that element. So network-level results
are compared element by element at float32 tolerance, allowing such steps in a small fraction
of the elements, each bounded by a few bf16 steps of the output's scale.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import fastmlp
from fastmlp import _core, reference as ref
from helpers import copy_params, make_data

BF16_KERNELS = ["avx512bf16", "fallback"]
NATIVE = _core.build_info()["bf16_kernels"]
SHAPES = [  # (m, n, k), as in test_gemm.py, plus odd depths (a pair half empty)
    (1, 256, 784),
    (5, 33, 17),
    (16, 10, 128),
    (128, 10, 256),
    (128, 256, 784),
    (37, 53, 29),
    (100, 70, 700),
    (40, 1100, 50),
    (97, 131, 1),
    (8, 32, 771),  # several depth blocks of the bf16 kernel (768 values), an odd tail
    (2, 300, 1),  # the few-rows kernel (m <= 4, nothing of B packed): one term
    (3, 37, 771),  # ... several depth blocks, an odd tail, a partial column block
    (4, 16, 2),
]


@pytest.fixture(params=BF16_KERNELS)
def bf16_kernel(request):
    """Forces one bf16 kernel for the test (skipped where this CPU or build lacks it), then restores."""
    if request.param not in NATIVE:
        pytest.skip(f"the {request.param} kernel needs a CPU with AVX512-BF16 and an AVX-512 build; here: {NATIVE}")
    default = _core.build_info()["bf16_kernel"]
    _core._set_bf16_kernel(request.param)
    try:
        yield request.param
    finally:
        _core._set_bf16_kernel(default)


def _check_bf16(c, a_op, b_op, cols=None):
    A = ref.bf16_round(np.ascontiguousarray(a_op)).astype(np.float64)
    B = ref.bf16_round(np.ascontiguousarray(b_op)).astype(np.float64)
    exact, bound = A @ B, 8 * np.finfo(np.float32).eps * np.sqrt(A.shape[1]) * (np.abs(A) @ np.abs(B))
    if cols is not None:
        exact, bound, c = (x[:, cols[0] : cols[1]] for x in (exact, bound, c))
    err = np.abs(c - exact)
    assert np.all(err <= bound + 1e-30), np.max(err / (bound + 1e-30))


# --------------------------------------------------------------------------- rounding


def test_bf16_round_is_round_to_nearest_even():
    one = np.float32(1.0)
    step = np.float32(2.0**-7)  # bf16's spacing at 1
    x = np.array([1.0, 1 + 2.0**-8, 1 + 3 * 2.0**-8, 1 + 2.0**-8 + 2.0**-20, -(1 + 3 * 2.0**-8)], np.float32)
    want = np.array([1.0, 1.0, 1 + 2 * step, 1 + step, -(1 + 2 * step)], np.float32)  # ties to even
    np.testing.assert_array_equal(ref.bf16_round(x), want)
    special = np.array([np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 3.4e38], np.float32)
    got = ref.bf16_round(special)
    np.testing.assert_array_equal(got[:4], special[:4])
    assert got[4] == 0 and got[5] == 0 and np.signbit(got[5])  # denormals flush to a zero of their sign
    assert got[6] == np.inf  # rounds past the largest bf16
    assert np.isnan(ref.bf16_round(np.array([np.nan], np.float32)))[0]
    assert ref.bf16_round(one) == one


def test_bf16_round_refuses_float64():
    with pytest.raises(TypeError, match="float32"):
        ref.bf16_round(np.ones(3))


def test_kernels_round_as_the_reference(bf16_kernel):
    """A product with the identity is the rounded operand itself, bit for bit: the kernels'
    rounding is the reference's (values spread over many binades, ties included)."""
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((40, 64)) * np.exp2(rng.integers(-30, 30, (40, 64)))).astype(np.float32)
    a[0, :8] = np.float32(1 + 2.0**-8)  # exact ties
    c = np.zeros((40, 64), np.float32)
    _core._gemm(a, np.eye(64, dtype=np.float32), False, False, (0, 64), c, precision="bf16")
    np.testing.assert_array_equal(c, ref.bf16_round(a))


# --------------------------------------------------------------------------- the GEMM layer


@pytest.mark.parametrize("room", [True, False], ids=["buffers", "no-buffers"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bf16_gemm_matches_the_rounded_product(bf16_kernel, shape, ta, tb, room):
    m, n, k = shape
    rng = np.random.default_rng(m * 7919 + n * 31 + k)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    _core._gemm(a, b, ta, tb, (0, n), c, precision="bf16", bf16_room=room)
    _check_bf16(c, a.T if ta else a, b.T if tb else b)


@pytest.mark.parametrize("cols", [(0, 16), (16, 45), (3, 4), (45, 77), (0, 0)])
def test_bf16_gemm_writes_only_its_columns(bf16_kernel, cols):
    m, n, k = 50, 77, 300
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32)
    c = np.full((m, n), 7.0, np.float32)
    _core._gemm(a, b, False, True, cols, c, precision="bf16")
    _check_bf16(c, a, b.T, cols)
    outside = np.ones(n, bool)
    outside[cols[0] : cols[1]] = False
    assert np.all(c[:, outside] == 7.0)


def test_bf16_gemm_is_split_invariant(bf16_kernel):
    """A column of C does not depend on the share of columns that computed it (bit for bit): the
    AVX512-BF16 kernel, and the fallback on the packed float kernel, sum each element over k in one
    fixed order (Eigen's GEMM, the fallback's float product on builds without the packed kernel
    or where it is forced, does not promise it)."""
    if bf16_kernel == "fallback" and _core.build_info()["gemm_kernel"] != "packed":
        pytest.skip("the fallback runs Eigen's float GEMM here, which is not split-invariant")
    rng = np.random.default_rng(2)
    a = rng.standard_normal((64, 900)).astype(np.float32)
    b = rng.standard_normal((900, 200)).astype(np.float32)
    whole = np.zeros((64, 200), np.float32)
    _core._gemm(a, b, False, False, (0, 200), whole, precision="bf16")
    split = np.zeros((64, 200), np.float32)
    for begin, end in [(0, 16), (16, 112), (112, 200)]:
        _core._gemm(a, b, False, False, (begin, end), split, precision="bf16")
    np.testing.assert_array_equal(split, whole)


def test_bf16_gemm_refuses_float64_and_unknown_precisions():
    a = np.ones((4, 4))
    with pytest.raises(ValueError, match="float32"):
        _core._gemm(a, a, False, False, (0, 4), np.zeros((4, 4)), precision="bf16")
    f = a.astype(np.float32)
    with pytest.raises(ValueError, match="'fp32' or 'bf16'"):
        _core._gemm(f, f, False, False, (0, 4), np.zeros((4, 4), np.float32), precision="fp16")
    with pytest.raises(ValueError, match="'avx512bf16' or 'fallback'"):
        _core._set_bf16_kernel("amx")


def test_show_config_names_the_bf16_kernel():
    info = _core.build_info()
    assert info["bf16_kernel"] in info["bf16_kernels"] and info["bf16_why"]
    assert fastmlp._config.config()["bf16"].startswith(info["bf16_kernel"] + " (")


# --------------------------------------------------------------------------- the network


def _assert_close_bf16(got, want):
    """got within half a bf16 step (2⁻⁹) of want's scale, element by element. Roundings across a
    bf16 boundary (the module's docstring) stay below it (measured up to 6e-4 of the scale, in
    dW of 784-256-128-10 over 300 rows), while a product computed from unrounded float32
    operands differs from the bf16 reference by 1-2 bf16 steps (3e-3 to 6e-3 of the scale)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.max(np.abs(want)))
    err = float(np.max(np.abs(got - want)))
    assert err <= 2.0**-9 * scale, f"error {err:.3g} = {err / scale:.3g} of the scale {scale:.3g}"


SIZES = [[37, 70, 45, 3], [784, 256, 128, 10]]


@pytest.mark.parametrize("rows", [1, 7, 40, 300])
@pytest.mark.parametrize("sizes", SIZES, ids=["odd", "mnist"])
def test_network_against_reference(bf16_kernel, sizes, rows):
    net = fastmlp.Network(sizes, activation="tanh", output_activation="softmax", seed=3, precision="bf16")
    assert net.precision == "bf16"
    rng = np.random.default_rng(rows)
    X, Y = make_data(rng, rows, sizes[0], sizes[-1], "log_loss", "float32")
    W, b = copy_params(net)
    _assert_close_bf16(net.forward(X), ref.predict(W, b, X, "tanh", "softmax", precision="bf16"))
    value = net.loss_and_grad(X, Y, "log_loss")
    v_ref, gW, gb = ref.loss_and_grad(W, b, X, Y, "log_loss", "tanh", "softmax", precision="bf16")
    np.testing.assert_allclose(value, v_ref, rtol=1e-3)
    for got, want in zip(net.weight_grads + net.bias_grads, gW + gb):
        _assert_close_bf16(got, want)


def test_bf16_differs_from_fp32_as_rounding_predicts():
    """The bf16 network is not the float32 one (the products really take bf16 operands), and it
    is close to it: within a few bf16 steps of the output's scale."""
    sizes = [50, 64, 4]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, sizes[0])).astype(np.float32)
    bf = fastmlp.Network(sizes, activation="relu", seed=1, precision="bf16").forward(X)
    fp = fastmlp.Network(sizes, activation="relu", seed=1).forward(X)
    assert not np.array_equal(bf, fp)
    scale = np.abs(fp).max()
    assert np.abs(bf - fp).max() <= 8 * 2.0**-8 * scale * np.sqrt(sizes[0])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_epoch_against_reference(bf16_kernel, optimizer):
    """An epoch of mini-batch steps equals the reference's bf16 epoch (same order, same steps)."""
    sizes = [12, 32, 16, 3]
    net = fastmlp.Network(sizes, activation="relu", output_activation="softmax", seed=5, precision="bf16")
    rng = np.random.default_rng(7)
    X, Y = make_data(rng, 96, sizes[0], sizes[-1], "log_loss", "float32")
    W, b = copy_params(net)
    opt = fastmlp.SGD(lr=0.1, momentum=0.9) if optimizer == "sgd" else fastmlp.Adam(lr=1e-2)
    ref_opt = ref.SGD(lr=0.1, momentum=0.9) if optimizer == "sgd" else ref.Adam(lr=1e-2)
    loss = net.train_epoch(X, Y, loss="log_loss", optimizer=opt, batch_size=16, shuffle=False)
    ref_loss = ref.train_epoch(W, b, X, Y, "log_loss", ref_opt, 16, np.arange(96), "relu", "softmax", precision="bf16")
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-3)
    for got, want in zip(net.weights + net.biases, W + b):
        _assert_close_bf16(got, want)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_training_curve_follows_float32():
    """bf16 training tracks float32 training: same data, seed and steps, the loss curves agree
    to a few percent and the accuracy to a point."""
    rng = np.random.default_rng(0)
    n, d, k = 2000, 30, 4
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = np.argmax(X[:, :k] + 0.5 * X[:, k : 2 * k] ** 2, axis=1)
    curves, accs = {}, {}
    for precision in ("fp32", "bf16"):
        clf = fastmlp.MLPClassifier((64, 32), max_iter=15, random_state=0, precision=precision, tol=0)
        clf.fit(X, y)
        curves[precision], accs[precision] = np.array(clf.loss_curve_), clf.score(X, y)
    assert curves["bf16"][-1] < 0.5 * curves["bf16"][0]  # it learns
    np.testing.assert_allclose(curves["bf16"], curves["fp32"], rtol=0.05)
    assert abs(accs["bf16"] - accs["fp32"]) <= 0.01


# --------------------------------------------------------------------------- the setting


def test_precision_round_trips(tmp_path):
    net = fastmlp.Network([6, 9, 2], seed=0, precision="bf16")
    X = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    out = net.forward(X)
    for copy in (pickle.loads(pickle.dumps(net)), _saved(net, tmp_path)):
        assert copy.precision == "bf16"
        np.testing.assert_array_equal(copy.forward(X), out)
    assert "precision='bf16'" in repr(net)
    assert fastmlp.Network([6, 9, 2]).precision == "fp32"
    assert fastmlp.Network([6, 9, 2], dtype="float64").precision == "fp64"


def _saved(net, tmp_path):
    net.save(tmp_path / "net.npz")
    return fastmlp.Network.load(tmp_path / "net.npz")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_precision_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 5))
    y = (X[:, 0] > 0).astype(int)
    clf = fastmlp.MLPClassifier((8,), max_iter=5, random_state=0, precision="bf16").fit(X, y)
    assert clf.coefs_[0].dtype == np.float32
    proba = clf.predict_proba(X)
    clf.save(tmp_path / "m.npz")
    for copy in (pickle.loads(pickle.dumps(clf)), fastmlp.load(tmp_path / "m.npz")):
        assert copy.precision == "bf16"
        np.testing.assert_array_equal(copy.predict_proba(X), proba)
    # the setting decides predictions: switched off, the float32 products
    clf.set_params(precision="fp32")
    assert not np.array_equal(clf.predict_proba(X), proba)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(dtype="float64", precision="bf16"), ValueError, "needs dtype='float32'"),
        (dict(precision="fp16"), ValueError, r"precision must be one of \['fp32', 'bf16'\]"),
        (dict(precision=16), TypeError, "precision must be a str"),
        (dict(dtype="float64", precision="fp32"), ValueError, r"one of \['fp64', 'bf16'\]"),
    ],
)
def test_network_refuses_bad_precisions(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastmlp.Network([3, 4, 1], **kwargs)


def test_sparse_input_is_refused_and_changes_nothing():
    sp = pytest.importorskip("scipy.sparse")
    net = fastmlp.Network([6, 8, 2], output_activation="softmax", seed=0, precision="bf16")
    X = sp.random(20, 6, density=0.3, format="csr", dtype=np.float32, random_state=0)
    Y = np.eye(2, dtype=np.float32)[np.arange(20) % 2]
    before = net.params.copy()
    with pytest.raises(ValueError, match="dense X only"):
        net.forward(X)
    with pytest.raises(ValueError, match="dense X only"):
        net.train_epoch(X, Y, loss="log_loss", optimizer=fastmlp.SGD(lr=0.1), batch_size=8)
    np.testing.assert_array_equal(net.params, before)
    with pytest.raises(ValueError, match="dense X only"):
        fastmlp.MLPClassifier((4,), max_iter=2, precision="bf16").fit(X, np.arange(20) % 2)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_refuses_bf16_with_float64_and_changes_nothing():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match="needs dtype=None or 'float32'"):
        fastmlp.MLPClassifier((4,), precision="bf16", dtype="float64").fit(X, y)
    clf = fastmlp.MLPClassifier((4,), max_iter=3, random_state=0).fit(X, y)  # float64 data: a float64 model
    coefs = [c.copy() for c in clf.coefs_]
    clf.set_params(warm_start=True, precision="bf16")
    with pytest.raises(ValueError, match="continues a float32 model only"):
        clf.fit(X, y)
    for got, want in zip(clf.coefs_, coefs):
        np.testing.assert_array_equal(got, want)


def test_unaligned_arrays_give_the_aligned_results():
    """As test_gemm.py's check, in bf16: an unaligned X (copied by the binding) changes nothing."""
    net = fastmlp.Network([9, 40, 3], activation="tanh", output_activation="softmax", seed=0, precision="bf16")
    rng = np.random.default_rng(0)
    X, Y = make_data(rng, 50, 9, 3, "log_loss", "float32")
    raw = bytearray(X.nbytes + 1)
    unaligned = np.frombuffer(raw, dtype=np.float32, offset=1).reshape(X.shape)
    unaligned[...] = X
    assert not unaligned.flags.aligned
    np.testing.assert_array_equal(net.forward(unaligned), net.forward(X))
    assert net.loss_and_grad(unaligned, Y, "log_loss") == net.loss_and_grad(X, Y, "log_loss")
