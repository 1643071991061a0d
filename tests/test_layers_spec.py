"""The layer spec (fastmlp.layers), the reference's layers (fastmlp.reference.layers_*) and their
exports (fastmlp.export.to_torch_layers / to_onnx_layers).

The reference is checked three ways: against an independent PyTorch statement of the same
network (torch.nn.functional's batch_norm, layer_norm, embedding ... over the flat buffers, with
autograd for the gradients; written here from the contract's layout), against central finite
differences in float64, and on dense-only networks against the reference's own dense path
(forward, loss_and_grad, train_epoch), bit for bit."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import numpy as np
import pytest

import fastmlp
from fastmlp import export, layers as L, reference as ref
from helpers import HIDDEN
from test_export import need

# ----------------------------------------------------------------------------------- the spec

EVERY_KIND = [
    L.Embedding([0, 3], [4, 3], [3, 2]),
    L.Dense(6),
    L.Activation("sigmoid"),
    L.Dropout(0.25),
    L.Residual([L.Dense(6), L.LayerNorm(eps=1e-3), L.Activation("gelu"), L.Dropout(0.5)]),
    L.BatchNorm(momentum=0.3, eps=1e-4),
    L.Dense(4),
    L.Activation("silu"),
    L.Dense(2),
]


def test_spec_round_trip_is_exact():
    spec = L.to_spec(EVERY_KIND)
    assert json.loads(json.dumps(spec)) == spec  # JSON-able as it is
    back = L.from_spec(json.loads(json.dumps(spec)))
    assert back == EVERY_KIND
    assert L.to_spec(back) == spec
    assert spec[0] == {"kind": "embedding", "columns": [0, 3], "cardinalities": [4, 3], "dims": [3, 2]}
    assert spec[4]["layers"][1] == {"kind": "layer_norm", "eps": 1e-3}
    assert spec[5] == {"kind": "batch_norm", "momentum": 0.3, "eps": 1e-4}
    # from_spec takes Layers too, and keys with a default may be left out
    assert L.from_spec([L.Dense(3), {"kind": "batch_norm"}]) == [L.Dense(3), L.BatchNorm()]


def test_layers_are_values():
    for layer in EVERY_KIND:
        assert eval(repr(layer), vars(L)) == layer  # the repr is the constructor call
        assert hash(layer) == hash(L.from_spec([layer.to_dict()])[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        L.Dense(3).units = 4  # type: ignore[misc]
    assert L.Dense(3) != L.Dense(4) and L.Dense(3) != L.LayerNorm()
    assert L.Activation("sigmoid") == L.Activation("logistic")  # aliases canonicalised
    assert L.Activation("swish").to_dict() == {"kind": "activation", "name": "silu"}
    assert L.Residual([L.Dense(2)]).layers == (L.Dense(2),)  # a list becomes a tuple
    assert L.Embedding(np.array([1]), (5,), [2]) == L.Embedding([1], [5], [2])
    assert pickle.loads(pickle.dumps(EVERY_KIND)) == EVERY_KIND
    assert copy.deepcopy(EVERY_KIND) == EVERY_KIND


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: L.Dense(0), ValueError, "units must be >= 1"),
        (lambda: L.Dense(2.0), TypeError, "units must be an int"),
        (lambda: L.Dense(True), TypeError, "units must be an int"),
        (lambda: L.Activation("softmax"), ValueError, "name must be one of"),
        (lambda: L.Activation("nope"), ValueError, "name must be one of"),
        (lambda: L.Activation(3), TypeError, "name must be a str"),
        (lambda: L.Dropout(1.0), ValueError, r"rate must be a finite number in \[0, 1\)"),
        (lambda: L.Dropout(-0.1), ValueError, "rate must be"),
        (lambda: L.Dropout("0.1"), TypeError, "rate must be a real number"),
        (lambda: L.BatchNorm(momentum=1.5), ValueError, "momentum must be"),
        (lambda: L.BatchNorm(momentum=float("nan")), ValueError, "momentum must be"),
        (lambda: L.BatchNorm(eps=0.0), ValueError, r"eps must be a finite number in \(0, inf\)"),
        (lambda: L.LayerNorm(eps=-1.0), ValueError, "eps must be"),
        (lambda: L.LayerNorm(eps=None), TypeError, "eps must be a real number"),
        (lambda: L.Residual([]), ValueError, "layers must hold at least one layer"),
        (lambda: L.Residual(L.Dense(2)), TypeError, "layers must be a list"),
        (lambda: L.Residual([L.Dense(2), {"kind": "dense"}]), TypeError, r"layers\[1\] must be a fastmlp.layers"),
        (lambda: L.Residual([L.Embedding([0], [2], [2])]), ValueError, "Embedding can only be"),
        (lambda: L.Embedding([], [], []), ValueError, "columns must name at least one"),
        (lambda: L.Embedding([0, 1], [2], [2, 2]), ValueError, "one entry per embedded column"),
        (lambda: L.Embedding([0, 0], [2, 2], [2, 2]), ValueError, r"columns\[1\]: column 0 is given twice"),
        (lambda: L.Embedding([-1], [2], [2]), ValueError, r"columns\[0\] must be >= 0"),
        (lambda: L.Embedding([0], [0], [2]), ValueError, r"cardinalities\[0\] must be >= 1"),
        (lambda: L.Embedding([0], [2], [0]), ValueError, r"dims\[0\] must be >= 1"),
        (lambda: L.Embedding([0.5], [2], [1]), TypeError, r"columns\[0\] must be an int"),
        (lambda: L.Embedding(0, [2], [1]), TypeError, "columns must be a list of ints"),
    ],
)
def test_bad_arguments_are_refused_by_name(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ({"kind": "dense", "units": 2}, TypeError, "spec must be a list"),
        ("dense", TypeError, "spec must be a list"),
        ([3], TypeError, r"spec\[0\] must be a dict"),
        ([{"units": 2}], ValueError, r"spec\[0\]\['kind'\] must be one of"),
        ([{"kind": "conv", "units": 2}], ValueError, r"spec\[0\]\['kind'\] must be one of"),
        ([{"kind": "dense"}], ValueError, r"spec\[0\]: a 'dense' layer needs \['units'\]"),
        ([{"kind": "dense", "units": 2, "bias": False}], ValueError, r"unknown keys \['bias'\]"),
        ([{"kind": "dense", "units": -2}], ValueError, r"spec\[0\]: units must be >= 1"),
        ([{"kind": "residual", "layers": {"kind": "dense"}}], TypeError, r"spec\[0\]\['layers'\] must be a list"),
        (
            [{"kind": "residual", "layers": [{"kind": "dense", "units": 2}, {"kind": "dropout", "rate": 2}]}],
            ValueError,
            r"spec\[0\]\['layers'\]\[1\]: rate must be",
        ),
    ],
)
def test_bad_specs_are_refused_where_they_are(spec, error, match):
    with pytest.raises(error, match=match):
        L.from_spec(spec)


def test_shapes_lay_the_buffers_out_as_the_contract_says():
    s = L.shapes(EVERY_KIND, 6)
    by_path = {x.path: x for x in s.layers}
    assert [x.path for x in s.layers] == [(0,), (1,), (2,), (3,), (4,), (4, 0), (4, 1), (4, 2), (4, 3)] + [
        (5,),
        (6,),
        (7,),
        (8,),
    ]
    emb = by_path[(0,)]
    assert (emb.n_in, emb.n_out) == (6, 6 - 2 + 3 + 2)
    assert emb.params == (("table0", (4, 3)), ("table1", (3, 2)))
    assert emb.penalized == ("table0", "table1")
    dense = by_path[(1,)]
    assert dense.params == (("W", (9, 6)), ("b", (6,))) and dense.param_offset == 12 + 6
    assert dense.penalized == ("W",)
    assert by_path[(4, 0)].param_offset == 18 + 9 * 6 + 6
    assert by_path[(4, 1)].params == (("weight", (6,)), ("bias", (6,)))
    bn = by_path[(5,)]
    assert bn.params == (("weight", (6,)), ("bias", (6,))) and bn.penalized == ()
    assert bn.state == (("running_mean", (6,)), ("running_var", (6,))) and bn.state_offset == 0
    assert by_path[(8,)].n_out == 2 and s.n_outputs == 2
    n_params = 12 + 6 + 9 * 6 + 6 + 6 * 6 + 6 + 12 + 12 + 6 * 4 + 4 + 4 * 2 + 2
    assert (s.n_params, s.n_state, s.n_inputs) == (n_params, 12, 6)
    # offsets are contiguous in depth-first order
    end = 0
    for x in s.layers:
        assert x.param_offset == end
        end += sum(int(np.prod(shape)) for _, shape in x.params)
    assert end == n_params


def test_dropout_sites():
    spec = [
        L.Dropout(0.1),  # no Dense before: site 0
        L.Dense(4),
        L.Dropout(0.1),  # site 1
        L.Dropout(0.2),  # the second since that Dense: 1 + 65536
        L.Residual([L.Dense(4), L.Dropout(0.1)]),  # 2
        L.Dropout(0.1),  # 2 + 65536
        L.Dense(1),
    ]
    sites = [x.site for x in L.shapes(spec, 3).layers if x.kind == "dropout"]
    assert sites == [0, 1, 1 + 65536, 2, 2 + 65536]


@pytest.mark.parametrize(
    "spec, n_inputs, match",
    [
        (
            [L.Dense(3), L.Residual([L.Dense(4)])],
            2,
            r"layers\[1\]: a Residual's layers must keep the width of its input",
        ),
        ([L.Residual([L.Dense(3)]), L.Dense(1)], 2, "must keep the width of its input .2., but they output 3"),
        ([L.Dense(3), L.Embedding([0], [2], [2])], 2, r"layers\[1\]: an Embedding can only be the network's first"),
        ([L.Embedding([4], [2], [2]), L.Dense(1)], 4, r"Embedding columns\[0\] = 4 is outside the input's 4 columns"),
        ([L.Activation("relu"), L.LayerNorm()], 3, "at least one Dense layer"),
        ([], 3, "at least one Dense layer"),
    ],
)
def test_shapes_refuse_networks_that_do_not_fit(spec, n_inputs, match):
    with pytest.raises(ValueError, match=match):
        L.shapes(spec, n_inputs)


def test_shapes_check_n_inputs():
    with pytest.raises(ValueError, match="n_inputs must be >= 1"):
        L.shapes([L.Dense(1)], 0)
    with pytest.raises(TypeError, match="n_inputs must be an int"):
        L.shapes([L.Dense(1)], 2.0)


def test_dense_shorthand():
    assert L.dense_shorthand([5, 3]) == [L.Dense(3)]
    assert L.dense_shorthand([5, 7, 6, 3], "tanh") == [
        L.Dense(7),
        L.Activation("tanh"),
        L.Dense(6),
        L.Activation("tanh"),
        L.Dense(3),
    ]
    # a number: every hidden layer's output; the inputs' rate is no layer; aliases canonicalised
    assert L.dense_shorthand([5, 7, 6, 3], ["sigmoid", "relu"], [0.5, 0.0, 0.2]) == [
        L.Dense(7),
        L.Activation("logistic"),
        L.Dense(6),
        L.Activation("relu"),
        L.Dropout(0.2),
        L.Dense(3),
    ]
    assert L.dense_shorthand([5, 7, 3], "relu", 0.1) == [L.Dense(7), L.Activation("relu"), L.Dropout(0.1), L.Dense(3)]
    with pytest.raises(ValueError, match="layer_sizes must have at least 2 entries"):
        L.dense_shorthand([5])
    with pytest.raises(ValueError, match="activation must name one activation per hidden layer"):
        L.dense_shorthand([5, 7, 6, 3], ["relu"])
    with pytest.raises(ValueError, match="dropout must be a number or a list of 3 rates"):
        L.dense_shorthand([5, 7, 6, 3], "relu", [0.1, 0.1])


def test_dense_shorthand_matches_the_network_layout():
    """The shorthand's layers lay their parameters out as Network(sizes) does today: [W0, b0, W1, b1, ...]."""
    net = fastmlp.Network([5, 7, 6, 3], activation="tanh", dtype="float64", seed=3)
    s = L.shapes(L.dense_shorthand([5, 7, 6, 3], "tanh"), 5)
    assert s.n_params == net.n_params
    dense = [x for x in s.layers if x.kind == "dense"]
    for x, W, b in zip(dense, net.weights, net.biases):
        assert x.params == (("W", W.shape), ("b", b.shape))
        np.testing.assert_array_equal(net.params[x.param_offset : x.param_offset + W.size].reshape(W.shape), W)


# ----------------------------------------------------------- an independent statement in PyTorch


def torch_forward(torch, spec, x, p, state, *, train, masks=None, slope=0.01):
    """The layers of `spec` (dicts) in torch.nn.functional, on x, with the flat parameter tensor p
    and the flat state tensor `state` (its running statistics updated in place in training, by
    F.batch_norm), laid out as the contract says. Written independently of fastmlp.reference."""
    F = torch.nn.functional
    acts = {
        "identity": lambda z: z,
        "relu": F.relu,
        "tanh": torch.tanh,
        "logistic": torch.sigmoid,
        "leaky_relu": lambda z: F.leaky_relu(z, slope),
        "gelu": lambda z: F.gelu(z, approximate="none"),
        "silu": F.silu,
        "selu": F.selu,
        "mish": F.mish,
        "softplus": F.softplus,
        "elu": F.elu,
    }
    pos = {"p": 0, "s": 0, "dense": 0, "since": 0}

    def take(*shape):
        n = int(np.prod(shape))
        out = p[pos["p"] : pos["p"] + n].reshape(shape)
        pos["p"] += n
        return out

    def run(layers, x):
        for d in layers:
            k = d["kind"]
            if k == "dense":
                W = take(x.shape[1], d["units"])
                x = x @ W + take(d["units"])
                pos["dense"] += 1
                pos["since"] = 0
            elif k == "activation":
                x = acts[d["name"]](x)
            elif k == "dropout":
                site = pos["dense"] + 65536 * pos["since"]
                pos["since"] += 1
                if train and masks is not None and d["rate"] > 0:
                    x = x * torch.as_tensor(masks[site], dtype=x.dtype) / (1 - d["rate"])
            elif k == "batch_norm":
                w = x.shape[1]
                gamma, beta = take(w), take(w)
                s0 = pos["s"]
                pos["s"] += 2 * w
                rm, rv = state[s0 : s0 + w], state[s0 + w : s0 + 2 * w]  # views: updated in place
                x = F.batch_norm(x, rm, rv, gamma, beta, training=train, momentum=d["momentum"], eps=d["eps"])
            elif k == "layer_norm":
                w = x.shape[1]
                gamma, beta = take(w), take(w)
                x = F.layer_norm(x, (w,), gamma, beta, d["eps"])
            elif k == "residual":
                x = x + run(d["layers"], x)
            else:
                others = [c for c in range(x.shape[1]) if c not in d["columns"]]
                parts = [x[:, others]]
                for c, card, dim in zip(d["columns"], d["cardinalities"], d["dims"]):
                    parts.append(F.embedding(x[:, c].detach().long(), take(card, dim)))
                x = torch.cat(parts, dim=1)
        return x

    return run(spec, x)


def problem(spec, n_inputs=6, n=12, seed=0, dtype="float64"):
    """Random parameters and running statistics for `spec`, and a batch X (embedded columns: codes)."""
    rng = np.random.default_rng(seed)
    s = L.shapes(spec, n_inputs)
    params = rng.standard_normal(s.n_params).astype(dtype) * 0.7
    state = np.zeros(s.n_state, dtype=dtype)
    for x in s.layers:
        if x.kind == "batch_norm":
            w = x.n_in
            state[x.state_offset : x.state_offset + w] = rng.standard_normal(w)
            state[x.state_offset + w : x.state_offset + 2 * w] = rng.uniform(0.5, 2.0, w)
    X = rng.standard_normal((n, n_inputs)).astype(dtype)
    for emb in (x for x in s.layers if x.kind == "embedding"):
        layer = L.from_spec(spec)[0]
        for c, card in zip(layer.columns, layer.cardinalities):
            X[:, c] = rng.integers(0, card, n)
        del emb
    masks = {}
    for x in s.layers:
        if x.kind == "dropout":
            masks[x.site] = (rng.random((n, x.n_in)) > 0.3).astype(dtype)
    return s, params, state, X, masks


CASES = {
    "dense": [L.Dense(3)],
    "activations": [L.Dense(5), L.Activation("tanh"), L.Dense(4), L.Activation("leaky_relu"), L.Dense(2)],
    "dropout": [L.Dropout(0.2), L.Dense(5), L.Activation("elu"), L.Dropout(0.4), L.Dropout(0.1), L.Dense(2)],
    "batch_norm": [L.Dense(5), L.BatchNorm(momentum=0.2, eps=1e-3), L.Activation("mish"), L.Dense(2)],
    "layer_norm": [L.Dense(5), L.LayerNorm(eps=1e-4), L.Activation("selu"), L.Dense(2)],
    "residual": [L.Dense(5), L.Residual([L.Dense(3), L.Activation("softplus"), L.Dense(5)]), L.Dense(2)],
    "embedding": [L.Embedding([1, 4], [3, 5], [2, 3]), L.Dense(4), L.Activation("silu"), L.Dense(2)],
    "every kind": EVERY_KIND,
    "nested residual": [
        L.BatchNorm(),
        L.Residual([L.LayerNorm(), L.Residual([L.Dense(6), L.Activation("gelu")]), L.Dropout(0.3)]),
        L.Dense(1),
    ],
}


def torch_grads(torch, spec, params, state, X, Y, masks, *, train, output_activation="identity"):
    """torch's output, loss (squared error, the reference's: sum (a - y)² / (2 n k)), gradients of p
    and X, and the running statistics after the pass."""
    p = torch.tensor(params, requires_grad=True)
    x = torch.tensor(X, requires_grad=True)
    st = torch.tensor(state)
    z = torch_forward(torch, L.to_spec(spec), x, p, st, train=train, masks=masks)
    a = torch.tanh(z) if output_activation == "tanh" else z
    loss = ((a - torch.tensor(Y)) ** 2).sum() / (2 * Y.size)
    loss.backward()
    return a.detach().numpy(), loss.item(), p.grad.numpy(), x.grad.numpy(), st.numpy()


def code_columns(spec):
    first = L.from_spec(spec)[0]
    return list(first.columns) if isinstance(first, L.Embedding) else []


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", list(CASES))
def test_reference_equals_torch(case, train):
    torch = need("torch")
    spec = CASES[case]
    s, params, state, X, masks = problem(spec)
    Y = np.random.default_rng(1).standard_normal((len(X), s.n_outputs))
    fwd = ref.layers_forward(spec, params, state, X, train=train, output_activation="tanh", masks=masks)
    value, grad = ref.layers_loss_and_grad(
        spec, params, state, X, Y, "squared_error", output_activation="tanh", train=train, masks=masks
    )
    _, dX = ref.layers_backward(fwd, ref.output_loss_and_grad("squared_error", "tanh", fwd.logits, Y)[1])
    out, t_value, t_grad, t_dX, t_state = torch_grads(
        torch, spec, params, state, X, Y, masks, train=train, output_activation="tanh"
    )
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fwd.output, out, **tol)
    assert value == pytest.approx(t_value, rel=1e-12)
    np.testing.assert_allclose(grad, t_grad, **tol)
    keep = [c for c in range(X.shape[1]) if c not in code_columns(spec)]
    np.testing.assert_allclose(dX[:, keep], t_dX[:, keep], **tol)
    assert not dX[:, code_columns(spec)].any()  # codes have no gradient
    np.testing.assert_allclose(ref.layers_running_stats(state, fwd) if train else state, t_state, **tol)


@pytest.mark.parametrize("case", ["batch_norm", "every kind", "nested residual"])
def test_running_statistics_after_steps_equal_torch(case):
    """A few training steps (SGD on the parameters, the running statistics updated with momentum)
    through the reference and through torch: the same parameters and running statistics."""
    torch = need("torch")
    spec = CASES[case]
    s, params, state, X, masks = problem(spec, n=24, seed=5)
    Y = np.random.default_rng(2).standard_normal((len(X), s.n_outputs))
    p_ref, st_ref = params.copy(), state.copy()
    p_t, st_t = torch.tensor(params, requires_grad=True), torch.tensor(state)
    for step in range(4):
        rows = slice(6 * step, 6 * step + 6)
        batch_masks = {k: m[rows] for k, m in masks.items()}
        _, grad, fwd = ref.layers_objective(spec, p_ref, st_ref, X[rows], Y[rows], "squared_error", masks=batch_masks)
        st_ref = ref.layers_running_stats(st_ref, fwd)
        p_ref -= 0.1 * grad
        z = torch_forward(torch, L.to_spec(spec), torch.tensor(X[rows]), p_t, st_t, train=True, masks=batch_masks)
        loss = ((z - torch.tensor(Y[rows])) ** 2).sum() / (2 * z.numel())
        (g,) = torch.autograd.grad(loss, p_t)
        with torch.no_grad():
            p_t -= 0.1 * g
    assert not np.array_equal(st_ref, state)  # the statistics moved
    np.testing.assert_allclose(st_ref, st_t.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p_ref, p_t.detach().numpy(), rtol=1e-10, atol=1e-12)

    # the same four steps as one epoch of layers_train_epoch (rows in order, batches of 6)
    p_epoch, st_epoch = params.copy(), state.copy()

    def draws(b, rows):
        return None, None, {k: m[6 * b : 6 * b + rows] for k, m in masks.items()}

    ref.layers_train_epoch(spec, p_epoch, st_epoch, X, Y, "squared_error", ref.SGD(0.1), 6, np.arange(24), draws=draws)
    np.testing.assert_allclose(st_epoch, st_t.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p_epoch, p_t.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", HIDDEN)
def test_every_hidden_activation_as_a_layer_equals_torch(activation):
    torch = need("torch")
    spec = [L.Dense(5), L.Activation(activation), L.Dense(2)]
    _s, params, state, X, masks = problem(spec)
    Y = np.zeros((len(X), 2))
    value, grad = ref.layers_loss_and_grad(spec, params, state, X, Y, "squared_error", slope=0.01)
    _, t_value, t_grad, _, _ = torch_grads(torch, spec, params, state, X, Y, masks, train=True)
    assert value == pytest.approx(t_value, rel=1e-12)
    np.testing.assert_allclose(grad, t_grad, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------- finite differences

SMOOTH = {k: v for k, v in CASES.items() if k not in ("activations",)}  # leaky_relu's kink aside


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", list(SMOOTH))
def test_gradients_equal_finite_differences(case, train):
    spec = SMOOTH[case]
    s, params, state, X, masks = problem(spec, n=8, seed=3)
    Y = np.random.default_rng(4).standard_normal((len(X), s.n_outputs))

    def f(p, x):
        return ref.layers_loss_and_grad(
            spec, p, state, x, Y, "squared_error", output_activation="tanh", train=train, masks=masks
        )[0]

    _, grad = ref.layers_loss_and_grad(
        spec, params, state, X, Y, "squared_error", output_activation="tanh", train=train, masks=masks
    )
    h = 1e-6
    numeric = np.array([(f(params + h * e, X) - f(params - h * e, X)) / (2 * h) for e in np.eye(len(params))])
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    fwd = ref.layers_forward(spec, params, state, X, train=train, output_activation="tanh", masks=masks)
    _, dX = ref.layers_backward(fwd, ref.output_loss_and_grad("squared_error", "tanh", fwd.logits, Y)[1])
    for r, c in [(0, 2), (5, 5), (7, 0)]:
        if c in code_columns(spec):
            continue
        e = np.zeros_like(X)
        e[r, c] = h
        assert dX[r, c] == pytest.approx((f(params, X + e) - f(params, X - e)) / (2 * h), rel=1e-6, abs=1e-9)


def test_float32_follows_float64():
    spec = EVERY_KIND
    s, params, state, X, masks = problem(spec)
    Y = np.random.default_rng(1).standard_normal((len(X), s.n_outputs))
    v64, g64 = ref.layers_loss_and_grad(spec, params, state, X, Y, "squared_error", masks=masks)
    m32 = {k: m.astype(np.float32) for k, m in masks.items()}
    v32, g32 = ref.layers_loss_and_grad(
        spec, params.astype(np.float32), state.astype(np.float32), X.astype(np.float32), Y, "squared_error", masks=m32
    )
    assert g32.dtype == np.float32
    assert v32 == pytest.approx(v64, rel=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-5)


# -------------------------------------------- dense-only: the layers' path is the dense path, exactly


def test_dense_layers_equal_the_dense_reference_bit_for_bit():
    sizes, acts, rates = [5, 7, 6, 3], ["tanh", "gelu"], [0.0, 0.3, 0.2]
    spec = L.dense_shorthand(sizes, acts, rates)
    rng = np.random.default_rng(0)
    net = fastmlp.Network(sizes, activation=acts, dtype="float64", seed=1)
    weights, biases = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    params = np.array(net.params)
    X, Y = rng.standard_normal((9, 5)), rng.standard_normal((9, 3))
    mask_list = [None] + [(rng.random((9, n)) > 0.3).astype(float) for n in sizes[1:-1]]
    masks = {l: m for l, m in enumerate(mask_list) if m is not None}  # layer l's input: site l
    value, gW, gb = ref.loss_and_grad(weights, biases, X, Y, "squared_error", acts, dropout=rates, masks=mask_list)
    value2, grad = ref.layers_loss_and_grad(spec, params, [], X, Y, "squared_error", masks=masks)
    assert value2 == value
    np.testing.assert_array_equal(grad, np.concatenate([g.ravel() for pair in zip(gW, gb) for g in pair]))
    fwd = ref.layers_forward(spec, params, [], X, train=False, output_activation="softmax")
    np.testing.assert_array_equal(fwd.output, ref.predict(weights, biases, X, acts, "softmax"))

    # float32 in bfloat16 precision, sample weights, a fused loss
    w32, b32 = [w.astype(np.float32) for w in weights], [b.astype(np.float32) for b in biases]
    X32, sw = X.astype(np.float32), rng.random(9)
    Y01 = (Y > 0).astype(np.float32)
    kw = dict(sample_weight=sw, precision="bf16")
    value, gW, gb = ref.loss_and_grad(
        w32, b32, X32, Y01, "binary_log_loss", acts, "logistic", dropout=rates, masks=mask_list, **kw
    )
    value2, grad = ref.layers_loss_and_grad(
        spec,
        params.astype(np.float32),
        [],
        X32,
        Y01,
        "binary_log_loss",
        output_activation="logistic",
        masks=masks,
        **kw,
    )
    assert value2 == value and grad.dtype == np.float32
    np.testing.assert_array_equal(grad, np.concatenate([g.ravel() for pair in zip(gW, gb) for g in pair]))

    # an epoch with Adam, penalties and max-norm: the same parameters
    order = rng.permutation(9)
    ref.train_epoch(
        weights, biases, X, Y, "squared_error", ref.Adam(0.01), 4, order, acts, l2=0.1, l1=0.01, max_norm_limit=0.5
    )
    ref.layers_train_epoch(
        spec, params, np.zeros(0), X, Y, "squared_error", ref.Adam(0.01), 4, order, l2=0.1, l1=0.01, max_norm_limit=0.5
    )
    np.testing.assert_array_equal(params, np.concatenate([g.ravel() for pair in zip(weights, biases) for g in pair]))


def test_reference_layout_equals_shapes():
    """The reference reads the flat buffer in its own walk; fastmlp.layers.shapes states the layout:
    the penalized ranges and the dense weights each finds agree."""
    s, params, state, X, _ = problem(EVERY_KIND)
    fwd = ref.layers_forward(EVERY_KIND, params, state, X, train=True)
    ranges = []
    for x in s.layers:
        offset = x.param_offset
        for name, shape in x.params:
            size = int(np.prod(shape))
            if name in x.penalized:
                ranges.append((offset, offset + size))
            offset += size
    assert sorted(fwd.penalized) == ranges
    assert fwd.dense_weights == [(x.param_offset, x.n_in, x.n_out) for x in s.layers if x.kind == "dense"]
    assert [o for o, *_ in fwd.batch_stats] == [x.state_offset for x in s.layers if x.kind == "batch_norm"]


def test_penalties_take_dense_weights_and_tables_only():
    spec = EVERY_KIND
    s, params, state, X, masks = problem(spec)
    Y = np.zeros((len(X), s.n_outputs))
    v0, g0, _ = ref.layers_objective(spec, params, state, X, Y, "squared_error", masks=masks)
    v1, g1, _ = ref.layers_objective(spec, params, state, X, Y, "squared_error", masks=masks, l2=0.3, l1=0.2)
    penalized = np.zeros(len(params), dtype=bool)
    for x in s.layers:
        offset = x.param_offset
        for name, shape in x.params:
            size = int(np.prod(shape))
            penalized[offset : offset + size] = name in x.penalized
            offset += size
    w = params[penalized]
    assert v1 - v0 == pytest.approx((0.15 * np.sum(w**2) + 0.2 * np.sum(np.abs(w))) / len(X), rel=1e-12)
    np.testing.assert_allclose((g1 - g0)[penalized], (0.3 * w + 0.2 * np.sign(w)) / len(X), rtol=1e-12)
    assert not (g1 - g0)[~penalized].any()


# ------------------------------------------------------------------------------ refusals


def test_reference_refuses_bad_input():
    spec = CASES["embedding"]
    _s, params, state, X, _ = problem(spec)
    bad = X.copy()
    bad[3, 4] = 5  # cardinality 5: codes 0..4
    with pytest.raises(ValueError, match=r"X column 4 \(embedding columns\[1\]\) must hold integer codes in \[0, 5\)"):
        ref.layers_forward(spec, params, state, bad, train=False)
    bad[3, 4] = 1.5
    with pytest.raises(ValueError, match=r"X column 4 .* got 1\.5 in row 3"):
        ref.layers_forward(spec, params, state, bad, train=False)
    bad[3, 4] = -1
    with pytest.raises(ValueError, match="X column 4"):
        ref.layers_forward(spec, params, state, bad, train=False)
    with pytest.raises(ValueError, match="params and state must have 71 and 0 values for these layers, got 72 and 0"):
        ref.layers_forward(spec, np.append(params, 0.0), state, X, train=False)
    with pytest.raises(ValueError, match="params has"):
        ref.layers_forward(spec, params[:5], state, X, train=False)
    bn = CASES["batch_norm"]
    _s, params, state, X, _ = problem(bn)
    with pytest.raises(ValueError, match="batch norm needs at least 2 rows"):
        ref.layers_forward(bn, params, state, X[:1], train=True)
    ref.layers_forward(bn, params, state, X[:1], train=False)  # evaluation: one row is fine
    with pytest.raises(ValueError, match="a residual block's layers must keep the width 2"):
        ref.layers_forward(
            [{"kind": "residual", "layers": [{"kind": "dense", "units": 3}]}], np.zeros(9), [], X[:, :2], train=False
        )
    drop = CASES["dropout"]
    _s, params, state, X, masks = problem(drop)
    with pytest.raises(ValueError, match="masks has no mask for the dropout at site 65537"):
        ref.layers_forward(drop, params, state, X, train=True, masks={k: m for k, m in masks.items() if k != 65537})


# -------------------------------------------------------------------------------- exports

EXPORT_CASES = ["every kind", "nested residual", "embedding", "batch_norm", "residual"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", EXPORT_CASES)
def test_torch_export_equals_reference(case, dtype):
    torch = need("torch")
    spec = CASES[case]
    _s, params, state, X, _ = problem(spec, dtype=dtype)
    model = export.to_torch_layers(L.to_spec(spec), 6, params, state, "softmax", dtype)
    assert not model.training
    want = ref.layers_forward(spec, params, state, X, train=False, output_activation="softmax").output
    got = model(torch.from_numpy(X)).detach().numpy()
    assert got.dtype == dtype
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("case", ["batch_norm", "nested residual", "embedding", "layer_norm"])
def test_torch_export_in_training_mode_equals_reference(case):
    """.train(): batch statistics, gradients, and the running statistics' update (no dropout here:
    torch draws its own masks)."""
    torch = need("torch")
    spec = [layer for layer in CASES[case] if not isinstance(layer, L.Dropout)]
    if isinstance(spec[1], L.Residual):
        spec[1] = L.Residual([x for x in spec[1].layers if not isinstance(x, L.Dropout)])
    s, params, state, X, _ = problem(spec, seed=7)
    Y = np.random.default_rng(3).standard_normal((len(X), s.n_outputs))
    model = export.to_torch_layers(spec, 6, params, state, "identity", "float64").train()
    x = torch.tensor(X, requires_grad=True)
    z = model(x)
    ((z - torch.tensor(Y)) ** 2).sum().div(2 * Y.size).backward()
    _, grad, fwd = ref.layers_objective(spec, params, state, X, Y, "squared_error")
    np.testing.assert_allclose(z.detach().numpy(), fwd.output, rtol=1e-12, atol=1e-14)
    # the parameters' gradients, in torch's order: the same as the flat layout's (Linear's weight is W.T)
    flat = np.concatenate(
        [
            (p.grad.T if isinstance(m, torch.nn.Linear) and n == "weight" else p.grad).numpy().ravel()
            for m in model.modules()
            if not list(m.children())
            for n, p in m.named_parameters(recurse=False)
        ]
    )
    np.testing.assert_allclose(flat, grad, rtol=1e-10, atol=1e-12)
    new_state = ref.layers_running_stats(state, fwd)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    got = np.concatenate(
        [np.concatenate([m.running_mean.numpy(), m.running_var.numpy()]) for m in bns] or [np.zeros(0)]
    )
    np.testing.assert_allclose(got, new_state, rtol=1e-12, atol=1e-14)


def run_onnx_layers(spec, params, state, X, output_activation, dtype):
    ort = need("onnxruntime")
    need("onnx")
    proto = export.to_onnx_layers(L.to_spec(spec), X.shape[1], params, state, output_activation, dtype=dtype)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": X.astype(dtype)})[0]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", EXPORT_CASES)
def test_onnx_export_equals_reference(case, dtype):
    spec = CASES[case]
    _s, params, state, X, _ = problem(spec)
    got = run_onnx_layers(spec, params, state, X, "logistic", dtype)
    want = ref.layers_forward(spec, params, state, X, train=False, output_activation="logistic").output
    assert got.dtype == dtype
    # float64: gelu's Erf runs in float32 in onnxruntime (export.py), about 1e-7
    tol = (
        dict(rtol=1e-6, atol=1e-7)
        if "gelu" in json.dumps(L.to_spec(spec)) or dtype == "float32"
        else dict(rtol=1e-12, atol=1e-14)
    )
    np.testing.assert_allclose(got, want, **tol)


def test_exports_of_an_all_categorical_input():
    """Every input column embedded: no numeric columns to pass on."""
    torch, _ = need("torch"), need("onnxruntime")
    spec = [L.Embedding([1, 0], [3, 4], [2, 3]), L.Dense(2)]
    rng = np.random.default_rng(0)
    X = np.stack([rng.integers(0, 4, 7), rng.integers(0, 3, 7)], axis=1).astype(np.float64)
    params = rng.standard_normal(L.shapes(spec, 2).n_params)
    want = ref.layers_forward(spec, params, [], X, train=False).output
    got = export.to_torch_layers(spec, 2, params, [], dtype="float64")(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        run_onnx_layers(spec, params, [], X, "identity", "float64"), want, rtol=1e-12, atol=1e-14
    )


def test_onnx_export_uses_the_normalization_operators():
    need("onnx")
    _s, params, state, _X, _ = problem(EVERY_KIND)
    proto = export.to_onnx_layers(EVERY_KIND, 6, params, state)
    ops = [n.op_type for n in proto.graph.node]
    for op in ("BatchNormalization", "LayerNormalization", "Add", "Gather", "Concat", "Gemm"):
        assert op in ops
    assert "Dropout" not in ops
    assert proto.opset_import[0].version >= 17


def test_dense_spec_exports_as_the_dense_network_does():
    """A dense-only spec through the layers' exports gives the dense path's graph and module exactly."""
    onnx = need("onnx")
    torch = need("torch")
    net = fastmlp.Network(
        [5, 7, 6, 3], activation=["leaky_relu", "gelu"], output_activation="softmax", seed=1, leaky_relu_slope=0.1
    )
    spec = L.dense_shorthand([5, 7, 6, 3], ["leaky_relu", "gelu"])
    for dtype in (np.float32, np.float64):
        old = export.to_onnx(net, dtype=dtype)
        new = export.to_onnx_layers(spec, 5, net.params, [], "softmax", dtype=dtype, leaky_relu_slope=0.1)
        assert onnx.printer.to_text(old.graph) == onnx.printer.to_text(new.graph)
        for a, b in zip(old.graph.initializer, new.graph.initializer):
            assert a.name == b.name
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
    old, new = export.to_torch(net), export.to_torch_layers(spec, 5, net.params, [], "softmax", leaky_relu_slope=0.1)
    assert repr(old) == repr(new)
    X = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32))
    assert torch.equal(old(X), new(X))


def test_exports_refuse_what_does_not_fit():
    need("onnx")
    need("torch")
    _s, params, state, _X, _ = problem(CASES["batch_norm"])
    with pytest.raises(ValueError, match="a Residual's layers must keep the width"):
        export.to_onnx_layers([L.Dense(3), L.Residual([L.Dense(2)])], 2, np.zeros(100), [])
    with pytest.raises(ValueError, match="params must have"):
        export.to_torch_layers(CASES["batch_norm"], 6, params[:-1], state)
    with pytest.raises(ValueError, match="state must have"):
        export.to_onnx_layers(CASES["batch_norm"], 6, params, state[:-1])
    for to in (export.to_onnx_layers, export.to_torch_layers):
        with pytest.raises(ValueError, match="output_activation must be one of"):
            to(CASES["batch_norm"], 6, params, state, "nope")
        with pytest.raises(ValueError, match="leaky_relu_slope must be"):
            to(CASES["batch_norm"], 6, params, state, leaky_relu_slope=-1.0)
        with pytest.raises(ValueError, match="dtype must be float32 or float64"):
            to(CASES["batch_norm"], 6, params, state, dtype="int32")
        with pytest.raises(ValueError, match="n_inputs must be >= 1"):
            to(CASES["batch_norm"], 0, params, state)
        with pytest.raises(TypeError, match=r"spec\[0\] must be a dict"):
            to([3], 6, params, state)
