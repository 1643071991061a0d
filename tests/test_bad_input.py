"""Bad input to every Network method and the optimizers: a clear exception
(TypeError or ValueError naming the argument, what was expected and what
came), and nothing changed — parameters, gradients, optimizer state and the
shuffling generator bit-identical to an untouched twin."""

from __future__ import annotations

import datetime
import re

import numpy as np
import pytest

import fastmlp
from fastmlp import reference as ref

N_IN, N_OUT = 4, 3
rng0 = np.random.default_rng(0)
X_OK = rng0.standard_normal((6, N_IN))
LABELS_OK = np.array([0, 1, 2, 0, 1, 2])


class Model:
    """A trained network with a stateful optimizer, and an identical twin."""

    def __init__(self, output="softmax", dtype="float64", opt="adam"):
        self.loss = "log_loss" if output == "softmax" else "squared_error"
        self.y = LABELS_OK if output == "softmax" else rng0.standard_normal((6, N_OUT))
        self.pairs = []
        for _ in range(2):
            net = fastmlp.Network([N_IN, 5, N_OUT], activation="tanh", output_activation=output, dtype=dtype, seed=1)
            o = fastmlp.Adam(0.01) if opt == "adam" else fastmlp.SGD(0.01, momentum=0.9)
            net.train_epoch(X_OK, self.y, self.loss, o, batch_size=4)
            net.loss_and_grad(X_OK[:3], self.y[:3], self.loss)
            self.pairs.append((net, o))
        self.net, self.opt = self.pairs[0]

    @staticmethod
    def state(net, opt):
        impl = opt._impl
        parts = [net.params, net.grads, np.array(net._seed)]
        for name in ("velocity", "m", "v", "t"):
            if hasattr(impl, name):
                parts.append(np.array(getattr(impl, name)))
        return [np.ascontiguousarray(p).view(np.uint8) for p in parts]

    def assert_unchanged(self):
        """Bit-identical to the twin, now and after one more shuffled epoch (so the generator too)."""
        (a, oa), (b, ob) = self.pairs
        for x, y in zip(self.state(a, oa), self.state(b, ob)):
            np.testing.assert_array_equal(x, y)
        for net, opt in self.pairs:
            net.train_epoch(X_OK, self.y, self.loss, opt, batch_size=2, shuffle=True)
        np.testing.assert_array_equal(a.params.view(np.uint8), b.params.view(np.uint8))


def assert_clear(excinfo, name):
    """The message names the argument and says what came."""
    msg = str(excinfo.value)
    assert re.search(name, msg), f"message does not name {name!r}: {msg}"
    assert re.search(r"\bgot\b|\bhas\b", msg), f"message does not say what came: {msg}"


class Weird:
    pass


# (label, value, exception, name in the message) — an X for a 4-input network.
BAD_X = [
    ("wrong_n_features", np.zeros((3, 5)), ValueError, "X"),
    ("too_few_features", np.zeros((3, 3)), ValueError, "X"),
    ("1-D", np.zeros(N_IN), ValueError, "X.*2-D"),
    ("3-D", np.zeros((2, 2, N_IN)), ValueError, "X.*2-D"),
    ("0-D", np.float64(1.0), ValueError, "X.*2-D"),
    ("zero_samples", np.zeros((0, N_IN)), ValueError, "X.*at least one sample"),
    ("zero_features", np.zeros((3, 0)), ValueError, "X"),
    ("nan", np.where(np.eye(3, N_IN) > 0, np.nan, 0.0), ValueError, "X.*NaN"),
    ("+inf", np.full((2, N_IN), np.inf), ValueError, "X.*infinity"),
    ("-inf", np.full((2, N_IN), -np.inf), ValueError, "X.*infinity"),
    ("nan_float16", np.full((2, N_IN), np.nan, np.float16), ValueError, "X.*NaN"),
    ("object", np.array([[1, 2, 3, 4]], dtype=object), TypeError, "X.*object"),
    ("object_mixed", np.array([[1, "a", None, 4]], dtype=object), TypeError, "X"),
    ("strings", np.array([["1", "2", "3", "4"]]), TypeError, "X.*<U1"),
    ("bytes", np.array([[b"1", b"2", b"3", b"4"]]), TypeError, "X.*S1"),
    ("complex", np.ones((2, N_IN), np.complex128), TypeError, "X.*complex"),
    ("datetime", np.full((2, N_IN), np.datetime64("2020-01-01")), TypeError, "X.*datetime64"),
    ("timedelta", np.full((2, N_IN), np.timedelta64(1, "s")), TypeError, "X.*timedelta64"),
    ("void", np.zeros((2, N_IN), dtype="V8"), TypeError, "X.*V8"),
    ("structured", np.zeros((2, N_IN), dtype=[("a", "f8")]), TypeError, "X"),
    ("ragged", [[1, 2, 3, 4], [1, 2]], ValueError, "X"),
    ("none", None, TypeError, "X"),
    ("dict", {"a": 1}, TypeError, "X"),
    ("object_instance", Weird(), TypeError, "X"),
    ("python_date", [[datetime.date(2020, 1, 1)] * N_IN], TypeError, "X"),
    ("huge_int_list", [[10**400] * N_IN], TypeError, "X"),
]


@pytest.mark.parametrize("label,X,exc,name", BAD_X, ids=[c[0] for c in BAD_X])
@pytest.mark.parametrize("method", ["forward", "loss_and_grad", "train_epoch"])
def test_bad_X(method, label, X, exc, name):
    m = Model()
    with pytest.raises(exc) as excinfo:
        if method == "forward":
            m.net.forward(X)
        elif method == "loss_and_grad":
            m.net.loss_and_grad(X, LABELS_OK[:3], "log_loss")
        else:
            m.net.train_epoch(X, LABELS_OK[:3], "log_loss", m.opt)
    assert_clear(excinfo, name)
    m.assert_unchanged()


def test_float64_beyond_float32_range_is_rejected_not_overflowed():
    m = Model(dtype="float32")
    for X in (np.full((2, N_IN), 1e300), np.full((2, N_IN), -1e39)):
        with pytest.raises(ValueError, match="X must be finite, got infinity"):
            m.net.forward(X)
        with pytest.raises(ValueError, match="X must be finite"):
            m.net.train_epoch(X, LABELS_OK[:2], "log_loss", m.opt)
    with pytest.raises(ValueError, match="y must be finite"):
        m.net.loss_and_grad(X_OK[:2], np.full((2, N_OUT), 1e300), "log_loss")
    m.assert_unchanged()


# y for a 3-output network, X_OK's 6 rows.
BAD_Y = [
    ("label_too_big", "softmax", np.array([0, 1, 2, 3, 0, 1]), ValueError, r"y.*class indices in \[0, 3\).*got 3"),
    ("label_negative", "softmax", np.array([0, -1, 2, 0, 1, 2]), ValueError, "y.*class indices.*got -1"),
    ("float_labels", "softmax", np.array([0.0, 1, 2, 0, 1, 2]), TypeError, "y.*integer class indices"),
    ("labels_wrong_count", "softmax", np.array([0, 1, 2]), ValueError, "y.*6 entries"),
    ("onehot_wrong_width", "softmax", np.eye(2)[[0, 1, 0, 1, 0, 1]], ValueError, "y.*shape"),
    ("onehot_nan", "softmax", np.where(np.eye(3)[LABELS_OK] > 0, np.nan, 0), ValueError, "y.*NaN"),
    ("object_labels", "softmax", np.array(["a", "b", "c", "a", "b", "c"], dtype=object), TypeError, "y.*object"),
    ("string_labels", "softmax", np.array(["a", "b", "c", "a", "b", "c"]), TypeError, "y.*<U1"),
    ("3-D", "softmax", np.zeros((6, 3, 1)), ValueError, "y.*2-D"),
    ("wrong_rows", "identity", np.zeros((5, N_OUT)), ValueError, "y.*shape"),
    ("wrong_cols", "identity", np.zeros((6, N_OUT + 1)), ValueError, "y.*shape"),
    ("1-D_for_3_outputs", "identity", np.zeros(6), ValueError, "y.*2-D"),
    ("nan", "identity", np.full((6, N_OUT), np.nan), ValueError, "y.*NaN"),
    ("inf", "identity", np.full((6, N_OUT), -np.inf), ValueError, "y.*infinity"),
    ("complex", "identity", np.zeros((6, N_OUT), complex), TypeError, "y.*complex"),
    ("none", "identity", None, TypeError, "y"),
]


@pytest.mark.parametrize("label,output,y,exc,name", BAD_Y, ids=[c[0] for c in BAD_Y])
@pytest.mark.parametrize("method", ["loss_and_grad", "train_epoch"])
def test_bad_y(method, label, output, y, exc, name):
    m = Model(output=output)
    with pytest.raises(exc) as excinfo:
        if method == "loss_and_grad":
            m.net.loss_and_grad(X_OK, y, m.loss)
        else:
            m.net.train_epoch(X_OK, y, m.loss, m.opt)
    assert_clear(excinfo, name)
    m.assert_unchanged()


BAD_LOSS = [
    (
        "unknown",
        "cross_entropy",
        ValueError,
        r"loss.*\['squared_error', 'log_loss', 'binary_log_loss', 'poisson', 'huber', 'absolute_error', "
        r"'quantile'\].*cross_entropy",
    ),
    ("not_a_str", 3, TypeError, "loss.*str.*int"),
    ("none", None, TypeError, "loss"),
    ("binary_on_softmax", "binary_log_loss", ValueError, "binary_log_loss.*logistic.*this network has 'softmax'"),
    # a loss spec: {"name": ..., its parameter: value}
    ("huber_delta_0", {"name": "huber", "delta": 0.0}, ValueError, r"loss\['delta'\].*\(0, inf\).*got 0"),
    ("huber_delta_neg", {"name": "huber", "delta": -1}, ValueError, r"loss\['delta'\].*\(0, inf\).*got -1"),
    ("huber_delta_nan", {"name": "huber", "delta": float("nan")}, ValueError, r"loss\['delta'\].*finite.*nan"),
    ("huber_delta_str", {"name": "huber", "delta": "1"}, TypeError, r"loss\['delta'\].*real number.*str"),
    ("quantile_alpha_0", {"name": "quantile", "alpha": 0}, ValueError, r"loss\['alpha'\].*\(0, 1\).*got 0"),
    ("quantile_alpha_1", {"name": "quantile", "alpha": 1}, ValueError, r"loss\['alpha'\].*\(0, 1\).*got 1"),
    ("smoothing_1", {"name": "log_loss", "label_smoothing": 1.0}, ValueError, r"label_smoothing.*\[0, 1\).*got 1"),
    ("smoothing_neg", {"name": "log_loss", "label_smoothing": -0.1}, ValueError, r"label_smoothing.*\[0, 1\).*-0.1"),
    ("foreign_param", {"name": "squared_error", "delta": 1.0}, ValueError, "squared_error.*takes no param.*delta"),
    ("wrong_param", {"name": "huber", "alpha": 0.5}, ValueError, "huber.*takes only 'delta'.*alpha"),
    ("no_name", {"delta": 1.0}, ValueError, "loss.*needs a 'name'"),
    ("spec_unknown", {"name": "hinge"}, ValueError, "loss.*must be one of.*hinge"),
]


@pytest.mark.parametrize("label,loss,exc,name", BAD_LOSS, ids=[c[0] for c in BAD_LOSS])
@pytest.mark.parametrize("method", ["loss_and_grad", "train_epoch"])
def test_bad_loss(method, label, loss, exc, name):
    m = Model()
    with pytest.raises(exc) as excinfo:
        if method == "loss_and_grad":
            m.net.loss_and_grad(X_OK, LABELS_OK, loss)
        else:
            m.net.train_epoch(X_OK, LABELS_OK, loss, m.opt)
    assert_clear(excinfo, name)
    m.assert_unchanged()


def test_log_loss_on_identity_output_names_both():
    m = Model(output="identity")
    with pytest.raises(ValueError) as excinfo:
        m.net.loss_and_grad(X_OK, LABELS_OK, "log_loss")
    assert_clear(excinfo, "log_loss.*softmax.*'identity'")
    m.assert_unchanged()


# Keyword arguments of train_epoch.
BAD_EPOCH = [
    ("batch_size_0", dict(batch_size=0), ValueError, "batch_size.*>= 1.*got 0"),
    ("batch_size_negative", dict(batch_size=-5), ValueError, "batch_size.*got -5"),
    ("batch_size_float", dict(batch_size=2.5), TypeError, "batch_size.*int.*float"),
    ("batch_size_bool", dict(batch_size=True), TypeError, "batch_size.*int.*bool"),
    ("batch_size_str", dict(batch_size="8"), TypeError, "batch_size.*int.*str"),
    ("batch_size_2**64", dict(batch_size=2**64), ValueError, "batch_size.*<=.*got"),
    ("batch_size_nan", dict(batch_size=float("nan")), TypeError, "batch_size"),
    ("shuffle_str", dict(shuffle="yes"), TypeError, "shuffle.*bool.*str"),
    ("l2_negative", dict(l2=-1e-3), ValueError, "l2.*got -0.001"),
    ("l2_nan", dict(l2=float("nan")), ValueError, "l2.*finite.*nan"),
    ("l2_inf", dict(l2=float("inf")), ValueError, "l2.*finite.*inf"),
    ("l2_str", dict(l2="0.1"), TypeError, "l2.*real number.*str"),
    ("l2_huge_int", dict(l2=10**400), ValueError, "l2.*finite"),
    ("optimizer_none", dict(optimizer=None), TypeError, "optimizer.*NoneType"),
    ("optimizer_reference", dict(optimizer=ref.SGD(0.1)), TypeError, "optimizer.*SGD"),
    ("order_short", dict(order=np.arange(5)), ValueError, "order.*6.*shape"),
    ("order_float", dict(order=np.arange(6.0)), ValueError, "order.*integer.*float64"),
    ("order_2d", dict(order=np.arange(6).reshape(2, 3)), ValueError, "order.*shape"),
    ("order_out_of_range", dict(order=np.array([0, 1, 2, 3, 4, 6])), ValueError, r"order.*\[0, 6\).*got 6"),
    ("order_negative", dict(order=np.array([0, 1, 2, 3, 4, -1])), ValueError, "order.*got -1"),
    ("order_uint64_wrap", dict(order=np.array([0, 1, 2, 3, 4, 2**64 - 1], np.uint64)), ValueError, "order.*got"),
    ("order_strings", dict(order=np.array(list("abcdef"))), ValueError, "order.*<U1"),
    ("hook_not_callable", dict(gradient_hook=3), TypeError, "gradient_hook.*callable.*int"),
    ("world_size_0", dict(gradient_hook=lambda g, v: v, world_size=0), ValueError, "world_size.*got 0"),
    ("world_size_float", dict(world_size=1.5), TypeError, "world_size.*int"),
]


@pytest.mark.parametrize("label,kw,exc,name", BAD_EPOCH, ids=[c[0] for c in BAD_EPOCH])
def test_bad_train_epoch_argument(label, kw, exc, name):
    m = Model()
    kw = dict(kw)
    opt = kw.pop("optimizer", m.opt)
    with pytest.raises(exc) as excinfo:
        m.net.train_epoch(X_OK, LABELS_OK, "log_loss", opt, **kw)
    assert_clear(excinfo, name)
    m.assert_unchanged()


def test_gradient_hook_returning_garbage_is_a_clear_error():
    m = Model()
    with pytest.raises(TypeError, match="gradient_hook must return the batch loss as a float, got 'oops'"):
        m.net.train_epoch(X_OK, LABELS_OK, "log_loss", m.opt, gradient_hook=lambda g, v: "oops")
    # The hook runs after backward, before the update: the parameters are untouched.
    np.testing.assert_array_equal(m.net.params, m.pairs[1][0].params)


BAD_NETWORK = [
    ("sizes_one_entry", dict(layer_sizes=[4]), ValueError, "layer_sizes.*at least 2.*got"),
    ("sizes_empty", dict(layer_sizes=[]), ValueError, "layer_sizes.*at least 2"),
    ("sizes_zero", dict(layer_sizes=[4, 0, 2]), ValueError, r"layer_sizes\[1\].*>= 1.*got 0"),
    ("sizes_negative", dict(layer_sizes=[4, -3]), ValueError, r"layer_sizes\[1\].*got -3"),
    ("sizes_float", dict(layer_sizes=[4, 2.5]), TypeError, r"layer_sizes\[1\].*int.*float"),
    ("sizes_bool", dict(layer_sizes=[4, True]), TypeError, r"layer_sizes\[1\].*int.*bool"),
    ("sizes_str", dict(layer_sizes="42"), TypeError, "layer_sizes.*sequence.*str"),
    ("sizes_none", dict(layer_sizes=None), TypeError, "layer_sizes.*sequence.*NoneType"),
    ("sizes_int", dict(layer_sizes=4), TypeError, "layer_sizes.*sequence.*int"),
    ("sizes_2**64", dict(layer_sizes=[4, 2**64]), ValueError, r"layer_sizes\[1\].*got"),
    ("sizes_10**12", dict(layer_sizes=[4, 10**12]), ValueError, "layer_sizes.*GiB"),
    ("sizes_2**62_squared", dict(layer_sizes=[2**62, 2**62]), ValueError, "layer_sizes.*GiB"),
    (
        "activation_unknown",
        dict(activation="hardswish"),
        ValueError,
        r"activation.*\['identity', 'logistic', 'sigmoid', 'tanh', 'relu', 'leaky_relu', 'gelu', 'silu', 'swish', "
        r"'selu', 'mish', 'softplus', 'elu'\].*hardswish",
    ),
    ("activation_softmax_hidden", dict(activation="softmax"), ValueError, "activation.*got 'softmax'"),
    ("activation_int", dict(activation=3), TypeError, "activation.*str.*int"),
    ("activation_case", dict(activation="ReLU"), ValueError, "activation.*ReLU"),
    ("output_unknown", dict(output_activation="sigmoidal"), ValueError, "output_activation.*softmax.*sigmoidal"),
    ("dtype_float16", dict(dtype="float16"), ValueError, "dtype.*float32.*float64.*float16"),
    ("dtype_int", dict(dtype=np.int32), ValueError, "dtype.*int32"),
    ("dtype_none", dict(dtype=None), ValueError, "dtype.*None"),
    ("dtype_garbage", dict(dtype="banana"), ValueError, "dtype.*banana"),
    ("dtype_complex", dict(dtype=complex), ValueError, "dtype.*complex"),
    ("seed_negative", dict(seed=-1), ValueError, "seed.*>= 0.*got -1"),
    ("seed_2**64", dict(seed=2**64), ValueError, "seed.*<=.*got"),
    ("seed_float", dict(seed=1.5), TypeError, "seed.*int.*float"),
    ("seed_str", dict(seed="1"), TypeError, "seed.*int.*str"),
    ("slope_nan", dict(leaky_relu_slope=float("nan")), ValueError, "leaky_relu_slope.*nan"),
    ("slope_negative", dict(leaky_relu_slope=-0.1), ValueError, "leaky_relu_slope.*-0.1"),
    ("init_unknown", dict(init="xavier"), ValueError, r"init.*\['glorot', 'he'\].*xavier"),
]


@pytest.mark.parametrize("label,kw,exc,name", BAD_NETWORK, ids=[c[0] for c in BAD_NETWORK])
def test_bad_network_argument(label, kw, exc, name):
    kw = dict(kw)
    sizes = kw.pop("layer_sizes", [N_IN, 5, N_OUT])
    with pytest.raises(exc) as excinfo:
        fastmlp.Network(sizes, **kw)
    assert_clear(excinfo, name)


BAD_OPTIMIZER = [
    ("sgd_lr_negative", lambda: fastmlp.SGD(lr=-0.1), ValueError, "lr.*-0.1"),
    ("sgd_lr_nan", lambda: fastmlp.SGD(lr=float("nan")), ValueError, "lr.*nan"),
    ("sgd_lr_inf", lambda: fastmlp.SGD(lr=float("inf")), ValueError, "lr.*inf"),
    ("sgd_lr_str", lambda: fastmlp.SGD(lr="0.1"), TypeError, "lr.*real number.*str"),
    ("sgd_lr_none", lambda: fastmlp.SGD(lr=None), TypeError, "lr.*NoneType"),
    ("sgd_lr_complex", lambda: fastmlp.SGD(lr=1j), TypeError, "lr.*complex"),
    ("sgd_momentum_1", lambda: fastmlp.SGD(momentum=1.0), ValueError, r"momentum.*\[0, 1\).*1.0"),
    ("sgd_momentum_negative", lambda: fastmlp.SGD(momentum=-0.5), ValueError, "momentum.*-0.5"),
    ("sgd_momentum_nan", lambda: fastmlp.SGD(momentum=float("nan")), ValueError, "momentum.*nan"),
    ("sgd_nesterov_str", lambda: fastmlp.SGD(nesterov="yes"), TypeError, "nesterov.*bool.*str"),
    ("adam_lr_negative", lambda: fastmlp.Adam(lr=-1), ValueError, "lr.*-1"),
    ("adam_beta1_1", lambda: fastmlp.Adam(beta1=1.0), ValueError, "beta1.*1.0"),
    ("adam_beta2_negative", lambda: fastmlp.Adam(beta2=-0.1), ValueError, "beta2.*-0.1"),
    ("adam_beta1_nan", lambda: fastmlp.Adam(beta1=float("nan")), ValueError, "beta1.*nan"),
    ("adam_eps_0", lambda: fastmlp.Adam(eps=0.0), ValueError, r"eps.*\(0, inf\).*0.0"),
    ("adam_eps_inf", lambda: fastmlp.Adam(eps=float("inf")), ValueError, "eps.*inf"),
]


@pytest.mark.parametrize("label,make,exc,name", BAD_OPTIMIZER, ids=[c[0] for c in BAD_OPTIMIZER])
def test_bad_optimizer_hyperparameter(label, make, exc, name):
    with pytest.raises(exc) as excinfo:
        make()
    assert_clear(excinfo, name)


@pytest.mark.parametrize("value,exc", [(-0.1, ValueError), (float("nan"), ValueError), ("1", TypeError)])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_bad_lr_assignment_changes_nothing(opt, value, exc):
    m = Model(opt=opt)
    with pytest.raises(exc, match="lr"):
        m.opt.lr = value
    assert m.opt.lr == 0.01 and m.opt._impl.lr == 0.01
    m.assert_unchanged()


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_step_on_the_wrong_network_changes_nothing(opt):
    m = Model(opt=opt)
    other_size = fastmlp.Network([N_IN, 6, N_OUT], output_activation="softmax", dtype="float64", seed=0)
    other_dtype = fastmlp.Network([N_IN, 5, N_OUT], output_activation="softmax", dtype="float32", seed=0)
    before = other_size.params.copy(), other_dtype.params.copy()
    with pytest.raises(ValueError) as excinfo:
        m.opt.step(other_size)
    assert_clear(excinfo, "optimizer's state.*parameters")
    with pytest.raises(ValueError) as excinfo:
        m.opt.step(other_dtype)
    assert_clear(excinfo, "optimizer.*float64.*float32")
    with pytest.raises(ValueError, match="optimizer"):
        other_size.train_epoch(X_OK, LABELS_OK, "log_loss", m.opt)
    with pytest.raises(TypeError) as excinfo:
        m.opt.step("net")
    assert_clear(excinfo, "net.*Network.*str")
    with pytest.raises(TypeError, match=r"net must be a fastmlp.Network, got Network_float64"):
        m.opt.step(m.net._net)
    np.testing.assert_array_equal(other_size.params, before[0])
    np.testing.assert_array_equal(other_dtype.params, before[1])
    m.assert_unchanged()


@pytest.mark.parametrize("seed,exc", [(-1, ValueError), (2**64, ValueError), ("7", TypeError), (1.0, TypeError)])
def test_bad_initialize_changes_nothing(seed, exc):
    m = Model()
    with pytest.raises(exc) as excinfo:
        m.net.initialize(seed)
    assert_clear(excinfo, "seed")
    m.assert_unchanged()


@pytest.mark.parametrize(
    "n,exc",
    [(0, ValueError), (-1, ValueError), (10**6, ValueError), ("2", TypeError), (2.0, TypeError), (2**70, ValueError)],
)
def test_bad_set_num_threads(n, exc):
    before = fastmlp.get_num_threads()
    with pytest.raises(exc) as excinfo:
        fastmlp.set_num_threads(n)
    assert_clear(excinfo, "n")
    assert fastmlp.get_num_threads() == before


# --- accepted inputs: read correctly ---------------------------------------


def _accepted_variants(X):
    """(label, array) pairs that hold X's values (X: small integers, exact in every dtype)."""
    big = X.astype(">f8")
    F = np.asfortranarray(X)
    wide = np.zeros((X.shape[0] * 2, X.shape[1] * 3))
    wide[::2, ::3] = X
    ro = X.copy()
    ro.flags.writeable = False
    return [
        ("float64", X),
        ("float32", X.astype(np.float32)),
        ("float16", X.astype(np.float16)),
        ("longdouble", X.astype(np.longdouble)),
        ("int8", X.astype(np.int8)),
        ("int64", X.astype(np.int64)),
        ("big_endian_f8", big),
        ("big_endian_i4", X.astype(">i4")),
        ("fortran", F),
        ("strided", wide[::2, ::3]),
        ("negative_rows", X[::-1].copy()[::-1]),
        ("negative_cols", X[:, ::-1].copy()[:, ::-1]),
        ("negative_both", X[::-1, ::-1].copy()[::-1, ::-1]),
        ("read_only", ro),
        ("list", X.tolist()),
        ("tuple_rows", tuple(map(tuple, X.tolist()))),
        ("matrix_view_of_3d", X[None][0]),
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_accepted_layout_reads_the_same_values(dtype, tmp_path):
    X = np.random.default_rng(1).integers(-3, 4, (7, N_IN)).astype(np.float64)
    net = fastmlp.Network([N_IN, 5, N_OUT], activation="tanh", output_activation="softmax", dtype=dtype, seed=0)
    want = net.forward(X.astype(dtype))
    want_loss = net.loss_and_grad(X.astype(dtype), LABELS_OK.tolist() + [1], "log_loss")
    want_grads = net.grads.copy()
    mm = np.memmap(tmp_path / "X.bin", dtype=np.float64, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    variants = _accepted_variants(X) + [
        ("memmap_readonly", np.memmap(tmp_path / "X.bin", dtype=np.float64, mode="r", shape=X.shape))
    ]
    for label, V in variants:
        np.testing.assert_array_equal(net.forward(V), want, err_msg=label)
        assert net.loss_and_grad(V, LABELS_OK.tolist() + [1], "log_loss") == want_loss, label
        np.testing.assert_array_equal(net.grads, want_grads, err_msg=label)
    # Unsigned integers (non-negative values).
    np.testing.assert_array_equal(net.forward(np.abs(X).astype(np.uint64)), net.forward(np.abs(X)))
    np.testing.assert_array_equal(net.forward(np.abs(X).astype(">u2")), net.forward(np.abs(X)))
    # Negative strides for real (not copied back): the rows and columns reversed.
    # (a row's last bits may depend on its position in the GEMM's SIMD blocks)
    np.testing.assert_allclose(net.forward(X[::-1]), want[::-1], rtol=1e-6 if dtype == "float32" else 1e-14)
    np.testing.assert_array_equal(net.forward(X[:, ::-1][:, ::-1]), want)
    # memmap in the network's own dtype, read in place.
    mm32 = np.memmap(tmp_path / "X32.bin", dtype=dtype, mode="w+", shape=X.shape)
    mm32[:] = X
    np.testing.assert_array_equal(
        net.forward(np.memmap(tmp_path / "X32.bin", dtype=dtype, mode="r", shape=X.shape)), want
    )


def test_booleans_are_accepted_as_zero_and_one():
    net = fastmlp.Network([N_IN, 5, N_OUT], output_activation="softmax", dtype="float64", seed=0)
    B = np.random.default_rng(2).random((6, N_IN)) < 0.5
    np.testing.assert_array_equal(net.forward(B), net.forward(B.astype(np.float64)))
    labels = np.array([True, False, True, True, False, False])
    a = net.loss_and_grad(B, labels, "log_loss")
    g = net.grads.copy()
    assert a == net.loss_and_grad(B, labels.astype(int), "log_loss")
    np.testing.assert_array_equal(g, net.grads)
    yb = fastmlp.Network([N_IN, 1], output_activation="logistic", dtype="float64", seed=0)
    assert yb.loss_and_grad(B, labels, "binary_log_loss") == yb.loss_and_grad(
        B, labels.astype(float), "binary_log_loss"
    )


def test_network_dtype_is_native_whatever_the_spelling():
    for spelling in ("float32", np.float32, ">f4", "<f4", np.dtype(">f4")):
        net = fastmlp.Network([2, 2], dtype=spelling, seed=0)
        assert net.dtype == np.dtype("float32") and net.dtype.isnative
        assert net.forward(np.ones((1, 2))).dtype == np.float32
