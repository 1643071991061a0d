"""Networks of layers (issue 23): the C++ core's layers against finite differences, the
shorthand, PyTorch's modules, threads, saving and bad input. The NumPy reference of each kind is
checked in test_layers_spec.py; here the core is checked against that reference too."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest

import fastmlp
from fastmlp import layers as L

RNG = np.random.default_rng(23)

# One network per kind (and mixtures), each on 6 inputs, 3 outputs.
SPECS = {
    "dense": [L.Dense(7), L.Activation("tanh"), L.Dense(3)],
    "batch_norm": [L.Dense(7), L.BatchNorm(), L.Activation("gelu"), L.Dense(3)],
    "batch_norm_first": [L.BatchNorm(momentum=0.3, eps=1e-3), L.Dense(5), L.Activation("elu"), L.Dense(3)],
    "layer_norm": [L.Dense(7), L.LayerNorm(), L.Activation("silu"), L.Dense(3)],
    "residual": [
        L.Dense(7),
        L.Residual([L.LayerNorm(), L.Dense(9), L.Activation("relu"), L.Dense(7)]),
        L.Activation("mish"),
        L.Dense(3),
    ],
    "residual_first": [L.Residual([L.Dense(6), L.Activation("tanh")]), L.Dense(3)],
    "nested": [
        L.Dense(4),
        L.Residual([L.Residual([L.Activation("softplus")]), L.BatchNorm()]),
        L.Residual([L.Activation("tanh")]),
        L.Dense(3),
    ],
    "embedding": [L.Embedding([1, 4], [5, 3], [2, 3]), L.Dense(7), L.Activation("selu"), L.Dense(3)],
}


def make_x(name: str, n: int, rng=RNG) -> np.ndarray:
    X = rng.normal(size=(n, 6))
    if name == "embedding":
        X[:, 1] = rng.integers(0, 5, n)
        X[:, 4] = rng.integers(0, 3, n)
    return X


def build(name: str, dtype="float64", seed=0, **kw) -> fastmlp.Network:
    return fastmlp.Network(6, layers=SPECS[name], dtype=dtype, seed=seed, **kw)


def randomize(net: fastmlp.Network, rng=RNG) -> None:
    net.params[:] = rng.normal(size=net.n_params) * 0.5
    for kind, views in net.layer_params():  # embedding codes index tables: keep them, the rest random
        if kind == "batch_norm":
            views["running_mean"][:] = rng.normal(size=views["running_mean"].shape)
            views["running_var"][:] = rng.uniform(0.5, 2.0, size=views["running_var"].shape)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_gradients_equal_finite_differences(name):
    net = build(name)
    randomize(net)
    X, Y = make_x(name, 11), RNG.normal(size=(11, 3))
    net.loss_and_grad(X, Y, "squared_error")
    grads = np.array(net.grads)
    p = net.params
    h, numeric = 1e-6, np.zeros_like(grads)
    for i in range(net.n_params):
        old = p[i]
        p[i] = old + h
        up = net.loss_and_grad(X, Y, "squared_error")
        p[i] = old - h
        down = net.loss_and_grad(X, Y, "squared_error")
        p[i] = old
        numeric[i] = (up - down) / (2 * h)
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_float32_agrees_with_float64(name):
    n64, n32 = build(name), build(name, dtype="float32")
    randomize(n64)
    n32.params[:] = n64.params
    n32.state[:] = n64.state
    X, Y = make_x(name, 40), RNG.normal(size=(40, 3))
    np.testing.assert_allclose(n32.forward(X), n64.forward(X), rtol=1e-4, atol=1e-4)
    l64, l32 = n64.loss_and_grad(X, Y, "squared_error"), n32.loss_and_grad(X, Y, "squared_error")
    assert l32 == pytest.approx(l64, rel=1e-4)
    np.testing.assert_allclose(n32.grads, n64.grads, rtol=1e-3, atol=1e-4)


def test_the_shorthand_is_its_layers_bit_for_bit():
    sizes = [6, 16, 8, 3]
    short = fastmlp.Network(sizes, activation=["tanh", "relu"], seed=4)
    long = fastmlp.Network(
        6, layers=[L.Dense(16), L.Activation("tanh"), L.Dense(8), L.Activation("relu"), L.Dense(3)], seed=4
    )
    long.params[:] = short.params
    X, y = RNG.normal(size=(50, 6)), RNG.normal(size=(50, 3))
    assert np.array_equal(short.forward(X), long.forward(X))
    for net in (short, long):
        net.train_epoch(X, y, "squared_error", fastmlp.Adam(lr=0.01), batch_size=16)
    assert np.array_equal(short.params, long.params)


def test_a_dropout_layer_draws_the_shorthands_masks():
    """Dropout(p) after hidden layer l has the shorthand's site l + 1: the same masks, the same step."""
    short = fastmlp.Network([6, 16, 8, 3], activation="relu", dropout=[0.0, 0.3, 0.2], seed=4)
    long = fastmlp.Network(
        6,
        layers=[
            L.Dense(16),
            L.Activation("relu"),
            L.Dropout(0.3),
            L.Dense(8),
            L.Activation("relu"),
            L.Dropout(0.2),
            L.Dense(3),
        ],
        seed=4,
    )
    long.params[:] = short.params
    X, y = RNG.normal(size=(40, 6)), RNG.normal(size=(40, 3))
    for net in (short, long):
        net.train_epoch(X, y, "squared_error", fastmlp.SGD(lr=0.1), batch_size=8)
    assert np.array_equal(short.params, long.params)
    assert [m is None for m in long.draws(5, 0)[1]] == [False, False]


def _torch_module(name, net):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    acts = {
        "tanh": nn.Tanh,
        "gelu": nn.GELU,
        "elu": nn.ELU,
        "silu": nn.SiLU,
        "relu": nn.ReLU,
        "mish": nn.Mish,
        "softplus": nn.Softplus,
        "selu": nn.SELU,
    }
    views = iter(net.layer_params())

    class Residual(nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return x + self.body(x)

    def make(layers, width):
        mods = []
        for layer in layers:
            if isinstance(layer, L.Dense):
                _, v = next(views)
                lin = nn.Linear(width, layer.units, dtype=torch.float64)
                lin.weight.data[:] = torch.from_numpy(v["W"].T.copy())
                lin.bias.data[:] = torch.from_numpy(v["b"].copy())
                mods.append(lin)
                width = layer.units
            elif isinstance(layer, L.Activation):
                mods.append(acts[layer.name]())
            elif isinstance(layer, (L.BatchNorm, L.LayerNorm)):
                _, v = next(views)
                if isinstance(layer, L.BatchNorm):
                    m = nn.BatchNorm1d(width, momentum=layer.momentum, eps=layer.eps, dtype=torch.float64)
                    m.running_mean[:] = torch.from_numpy(v["running_mean"].copy())
                    m.running_var[:] = torch.from_numpy(v["running_var"].copy())
                else:
                    m = nn.LayerNorm(width, eps=layer.eps, dtype=torch.float64)
                m.weight.data[:] = torch.from_numpy(v["weight"].copy())
                m.bias.data[:] = torch.from_numpy(v["bias"].copy())
                mods.append(m)
            elif isinstance(layer, L.Residual):
                mods.append(Residual(make(layer.layers, width)))
        return nn.Sequential(*mods)

    return make(SPECS[name], 6)


@pytest.mark.parametrize("name", ["batch_norm", "batch_norm_first", "layer_norm", "residual", "nested"])
def test_train_and_eval_mode_equal_pytorch(name):
    """forward (eval: running statistics), the gradients (train mode: batch statistics) and the
    running statistics after SGD steps, against the same module built with torch.nn."""
    torch = pytest.importorskip("torch")
    net = build(name, seed=2)
    randomize(net)
    module = _torch_module(name, net)
    X, Y = make_x(name, 32), RNG.normal(size=(32, 3))
    module.eval()
    np.testing.assert_allclose(net.forward(X), module(torch.from_numpy(X)).detach().numpy(), rtol=1e-10, atol=1e-10)
    module.train()
    probe = copy.deepcopy(module)  # its train-mode forward moves its running statistics: a copy's
    out = probe(torch.from_numpy(X))
    loss = ((out - torch.from_numpy(Y)) ** 2).mean() / 2  # squared_error: ½ mean of (p − y)²
    loss.backward()
    value = net.loss_and_grad(X, Y, "squared_error")
    assert value == pytest.approx(loss.item(), rel=1e-12)
    dense_grads = [v["W"] for kind, v in net.layer_params(grads=True) if kind == "dense"]
    torch_dense = [m.weight.grad.numpy().T for m in probe.modules() if isinstance(m, torch.nn.Linear)]
    for ours, theirs in zip(dense_grads, torch_dense):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    # Three SGD steps of full batches: the parameters and the running statistics move alike.
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        loss = ((module(torch.from_numpy(X)) - torch.from_numpy(Y)) ** 2).mean() / 2
        loss.backward()
        opt.step()
        net.train_epoch(X, Y, "squared_error", fastmlp.SGD(lr=0.1, momentum=0.0), batch_size=32, shuffle=False)
    module.eval()
    np.testing.assert_allclose(net.forward(X), module(torch.from_numpy(X)).detach().numpy(), rtol=1e-9, atol=1e-9)
    bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    ours = [v for kind, v in net.layer_params() if kind == "batch_norm"]
    for m, v in zip(bns, ours):
        np.testing.assert_allclose(v["running_mean"], m.running_mean.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(v["running_var"], m.running_var.numpy(), rtol=1e-10, atol=1e-12)


def _widened(layers):
    """The same layers with every width of 7 made 200 (enough work for two threads)."""
    out = []
    for layer in layers:
        if isinstance(layer, L.Dense) and layer.units == 7:
            layer = L.Dense(200)
        elif isinstance(layer, L.Residual):
            layer = L.Residual(_widened(layer.layers))
        out.append(layer)
    return out


@pytest.mark.parametrize("name", sorted(SPECS))
def test_results_do_not_depend_on_the_thread_count(name):
    X, Y = make_x(name, 300), RNG.normal(size=(300, 3))
    runs = []
    threads_before = fastmlp.get_num_threads()
    for threads in (1, 2):
        fastmlp.set_num_threads(threads)
        try:
            wide = [L.Dense(200), L.Activation("relu"), L.Dropout(0.2), L.Dense(200), L.Activation("relu"), L.Dense(3)]
            layers = _widened(SPECS[name]) + wide
            net = fastmlp.Network(6, layers=layers, dtype="float64", seed=5)
            assert 150 * net.n_params > 4e6  # parallel.hpp's kMinStepWork: two threads share each step
            net.train_epoch(X, Y, "squared_error", fastmlp.Adam(lr=1e-3), batch_size=150)
            runs.append((np.array(net.params), np.array(net.state), net.forward(X)))
        finally:
            fastmlp.set_num_threads(threads_before)
    # Row slices sum their gradients in another order than one pass, and a shared pass's column
    # blocks may round a sum differently (test_engine_parallel's tolerance); a race or a missing
    # barrier would differ by far more.
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["batch_norm", "embedding", "residual"])
def test_save_load_and_pickle_continue_training_bit_identically(name, tmp_path):
    X, Y = make_x(name, 60), RNG.normal(size=(60, 3))
    net = build(name, seed=7)
    net.train_epoch(X, Y, "squared_error", fastmlp.SGD(lr=0.05), batch_size=16, shuffle=False)
    net.save(tmp_path / "net.npz")
    copies = [fastmlp.Network.load(tmp_path / "net.npz"), pickle.loads(pickle.dumps(net))]
    for other in copies:
        assert other.spec == net.spec
        assert np.array_equal(other.params, net.params) and np.array_equal(other.state, net.state)
        assert np.array_equal(other.forward(X), net.forward(X))
    for other in [net, *copies]:
        other.train_epoch(X, Y, "squared_error", fastmlp.SGD(lr=0.05), batch_size=16, shuffle=False)
    for other in copies:
        assert np.array_equal(other.params, net.params) and np.array_equal(other.state, net.state)


def test_batch_norm_needs_two_rows_and_a_last_row_alone_joins_the_batch_before():
    net = build("batch_norm")
    X, Y = make_x("batch_norm", 9), RNG.normal(size=(9, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        net.train_epoch(X[:1], Y[:1], "squared_error", fastmlp.SGD(lr=0.1))
    before = np.array(net.params)
    net.train_epoch(X, Y, "squared_error", fastmlp.SGD(lr=0.1), batch_size=4)  # 4 + 5, not 4 + 4 + 1
    assert net.training_steps == 2
    assert np.all(np.isfinite(net.params)) and not np.array_equal(before, net.params)


def test_running_statistics_change_in_training_steps_only():
    net = build("batch_norm")
    X, Y = make_x("batch_norm", 20), RNG.normal(size=(20, 3))
    state = np.array(net.state)
    net.loss_and_grad(X, Y, "squared_error")
    net.forward(X)
    assert np.array_equal(net.state, state)
    net.train_epoch(X, Y, "squared_error", fastmlp.SGD(lr=0.1), batch_size=20)
    assert not np.array_equal(net.state, state)


def test_embedding_codes_are_checked():
    net = build("embedding")
    X = make_x("embedding", 5)
    for bad in (5.0, -1.0, 1.5, np.nan):
        Z = X.copy()
        Z[2, 1] = bad
        with pytest.raises(ValueError, match=r"X\[:, 1\]|finite|NaN"):
            net.forward(Z)
    Z = X.copy()
    Z[3, 4] = 3
    before = np.array(net.params)
    with pytest.raises(ValueError, match=r"X\[:, 4\]"):
        net.train_epoch(Z, RNG.normal(size=(5, 3)), "squared_error", fastmlp.SGD(lr=0.1))
    assert np.array_equal(net.params, before)


@pytest.mark.parametrize(
    "layers, match",
    [
        ([L.Activation("relu")], "Dense"),
        ([L.Dense(4), L.Residual([L.Dense(5)]), L.Dense(2)], "width"),
        ([L.Dense(4), L.Embedding([0], [3], [2]), L.Dense(2)], "first"),
        ([L.Embedding([6], [3], [2]), L.Dense(2)], "column"),
    ],
)
def test_bad_networks_are_refused(layers, match):
    with pytest.raises(ValueError, match=match):
        fastmlp.Network(6, layers=layers)


def test_shorthand_arguments_are_refused_beside_layers():
    with pytest.raises(ValueError, match="activation"):
        fastmlp.Network(6, layers=[L.Dense(2)], activation="tanh")
    with pytest.raises(ValueError, match="dropout"):
        fastmlp.Network(6, layers=[L.Dense(2)], dropout=0.5)


def test_a_sparse_x_needs_a_dense_first_layer():
    sparse = pytest.importorskip("scipy.sparse")
    X = sparse.random(10, 6, density=0.3, format="csr", random_state=0)
    ok = build("dense")
    assert np.allclose(ok.forward(X), ok.forward(X.toarray()))
    with pytest.raises(ValueError, match="first layer is Dense"):
        build("batch_norm_first").forward(X)


def test_summary_and_repr_name_the_layers():
    net = build("residual")
    buf = io.StringIO()
    net.summary(file=buf)
    text = buf.getvalue()
    assert "layer_norm" in text and "residual" in text and f"{net.n_params:,}" in text
    assert "Residual" in repr(net)


WITH_DROPOUT = [L.Dense(8), L.Activation("relu"), L.Dropout(0.3), L.BatchNorm(), L.Dropout(0.2), L.Dense(3)]


def _masks(net: fastmlp.Network, spec, rows: int, step: int) -> dict[int, np.ndarray]:
    """The core's draws of a training step, keyed by the dropout layers' sites (the reference's form)."""
    sites = [s.site for s in L.shapes(spec, net.n_inputs).layers if s.kind == "dropout"]
    _, masks = net.draws(rows, step)
    return {site: m for site, m in zip(sites, masks) if m is not None}


@pytest.mark.parametrize("name", [*sorted(SPECS), "dropout"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_core_equals_the_reference(name, dtype):
    """forward (eval), the training-mode loss and gradients (dropout's draws given), and the
    running statistics after a training step, against fastmlp.reference's layers."""
    from fastmlp import reference as ref

    layers = WITH_DROPOUT if name == "dropout" else SPECS[name]
    net = fastmlp.Network(6, layers=layers, dtype=dtype, seed=3, output_activation="softmax")
    randomize(net)
    spec = L.to_spec(layers)
    tight = dtype == "float64"
    tol = dict(rtol=1e-10, atol=1e-12) if tight else dict(rtol=2e-4, atol=2e-5)
    X = make_x(name, 30).astype(dtype)
    Y = np.eye(3)[RNG.integers(0, 3, 30)].astype(dtype)
    params, state = np.array(net.params), np.array(net.state)
    expect = ref.layers_forward(spec, params, state, X, train=False, output_activation="softmax").output
    np.testing.assert_allclose(net.forward(X), expect, **tol)
    step = 4
    value = net.loss_and_grad(X, Y, "log_loss", training_step=step)
    ref_value, ref_grad = ref.layers_loss_and_grad(
        spec, params, state, X, Y, "log_loss", output_activation="softmax", masks=_masks(net, spec, 30, step)
    )
    assert value == pytest.approx(ref_value, rel=1e-10 if tight else 1e-4)
    np.testing.assert_allclose(net.grads, ref_grad, **tol)
    fwd = ref.layers_forward(
        spec, params, state, X, train=True, output_activation="softmax", masks=_masks(net, spec, 30, 0)
    )
    net.train_epoch(X, Y, "log_loss", fastmlp.SGD(lr=0.1), batch_size=30, shuffle=False)
    np.testing.assert_allclose(net.state, ref.layers_running_stats(state, fwd), **tol)


def test_a_network_of_layers_exports_to_torch_and_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from fastmlp.export import to_onnx, to_torch

    net = build("residual", dtype="float32")
    randomize(net)
    X = make_x("residual", 20).astype(np.float32)
    expect = net.forward(X)
    module = to_torch(net)
    np.testing.assert_allclose(module(torch.from_numpy(X)).detach().numpy(), expect, rtol=1e-5, atol=1e-5)
    to_onnx(net, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(tmp_path / "net.onnx"))
    np.testing.assert_allclose(session.run(None, {"X": X})[0], expect, rtol=1e-5, atol=1e-5)


def test_two_dropout_layers_after_one_dense_draw_different_masks():
    """Sites s and s + 65536 (dropout.hpp's row_key once kept only the low 16 bits: the same mask twice)."""
    net = fastmlp.Network(6, layers=[L.Dense(64), L.Dropout(0.5), L.Dropout(0.5), L.Dense(3)], seed=1)
    _, (first, second) = net.draws(50, 3)
    assert first.shape == second.shape == (50, 64)
    assert 0.3 < first.mean() < 0.7 and 0.3 < second.mean() < 0.7
    assert np.mean(first == second) < 0.7  # independent: about half agree
    short = fastmlp.Network([6, 64, 3], dropout=[0.0, 0.5], seed=1)  # site 1 as before
    assert np.array_equal(short.draws(50, 3)[1][1], first)


def test_input_noise_and_input_dropout_are_refused_where_they_would_corrupt():
    with pytest.raises(ValueError, match="Embedding"):
        fastmlp.Network(6, layers=SPECS["embedding"], input_noise=0.1)
    fastmlp.Network(6, layers=SPECS["batch_norm"], input_noise=0.1)  # numbers only: fine


def test_batch_norm_streamed_from_a_memmap_equals_the_in_memory_epoch(tmp_path):
    X, Y = make_x("batch_norm", 41), RNG.normal(size=(41, 3))  # 41 = 2 × 20 + 1: the last row joins
    np.save(tmp_path / "x.npy", X)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    nets = [build("batch_norm", seed=3) for _ in range(2)]
    for net, data in zip(nets, (X, mapped)):
        net.train_epoch(data, Y, "squared_error", fastmlp.SGD(lr=0.05), batch_size=20, shuffle=True)
    assert nets[0].training_steps == nets[1].training_steps == 2
    np.testing.assert_array_equal(nets[0].params, nets[1].params)
    np.testing.assert_array_equal(nets[0].state, nets[1].state)


@pytest.mark.parametrize(
    "n_inputs, layers",
    [
        (2**62, [L.LayerNorm(), L.Dense(2)]),
        (2**40, [L.Dense(2**40), L.Dense(2)]),
        (4, [L.Embedding([0], [2**40], [2**40]), L.Dense(2)]),
    ],
    ids=["norm", "dense", "embedding"],
)
def test_huge_layers_are_refused_before_any_size_product_wraps(n_inputs, layers):
    """Counted in floating point first (UBSan aborted on the signed overflow of W's size before)."""
    with pytest.raises(ValueError, match=r"parameters needs .* GiB"):
        fastmlp.Network(n_inputs, layers=layers)
