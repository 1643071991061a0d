"""A trained model on its way out: ONNX (run by onnxruntime), PyTorch, Network.save/load, summary()."""

from __future__ import annotations

import importlib.util
import io
import os
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp import export
from helpers import HIDDEN, OUTPUTS


def need(module: str):
    """pytest.importorskip, except under CI=true, where a missing optional package fails the
    test: .ci/run installs onnx, onnxruntime and torch, so these tests must really run there."""
    if os.environ.get("CI", "").lower() == "true" and importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed; under CI=true the export tests must run (.ci/run installs it)")
    return pytest.importorskip(module)


def fit(est, X, y):
    with warnings.catch_warnings():  # a few iterations are enough here
        warnings.simplefilter("ignore", fastmlp.ConvergenceWarning)
        return est.fit(X, y)


def network(hidden: str, output: str, dtype: str = "float32") -> fastmlp.Network:
    net = fastmlp.Network(
        [5, 7, 6, 3], activation=hidden, output_activation=output, dtype=dtype, seed=1, leaky_relu_slope=0.1
    )
    rng = np.random.default_rng(2)
    for b in net.biases:  # non-zero biases, so that a dropped bias would show
        b[:] = rng.standard_normal(b.shape)
    return net


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)


def run_onnx(model, X, tmp_path):
    ort = need("onnxruntime")
    path = tmp_path / "model.onnx"
    export.to_onnx(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": X})[0]


def unmapped_is_refused(to, net) -> bool:
    """True when every activation of net has an export mapping; otherwise checks that `to` refuses it by name."""
    missing = [a for a in (*net.activations, net.output_activation) if a not in export._ONNX_OPS]
    if missing:
        with pytest.raises(ValueError, match=f"activation {missing[0]!r} has no"):
            to(net)
    return not missing


# ------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output", OUTPUTS)
def test_onnx_equals_forward(hidden, output, X, tmp_path):
    need("onnx")
    net = network(hidden, output)
    if not unmapped_is_refused(export.to_onnx, net):
        return
    got = run_onnx(net, X, tmp_path)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, net.forward(X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("classes", [2, 3])
def test_onnx_equals_predict_proba_and_predict(classes, X, tmp_path):
    need("onnx")
    y = np.arange(len(X)) % classes
    clf = fastmlp.MLPClassifier(
        hidden_layer_sizes=(8,), activation="tanh", max_iter=30, dtype="float32", random_state=0
    )
    fit(clf, X, y)
    got = run_onnx(clf, X, tmp_path)
    assert got.shape == (len(X), classes)  # binary: the two columns [1 - p, p]
    np.testing.assert_allclose(got, clf.predict_proba(X), rtol=1e-5, atol=1e-6)
    reg = fastmlp.MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, dtype="float32", random_state=0)
    fit(reg, X, X[:, :2])
    np.testing.assert_allclose(run_onnx(reg, X, tmp_path), reg.predict(X), rtol=1e-5, atol=1e-6)


def test_onnx_graph_is_gemm_and_activations():
    need("onnx")
    proto = export.to_onnx(network("relu", "softmax"))
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax", "Identity"]
    assert proto.opset_import[0].version == export.ONNX_OPSET


# ------------------------------------------------------------------------ torch
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_equals_forward(hidden, output, dtype, X):
    torch = need("torch")
    net = network(hidden, output, dtype)
    if not unmapped_is_refused(export.to_torch, net):
        return
    module = export.to_torch(net)
    assert isinstance(module, torch.nn.Sequential)
    Xd = X.astype(dtype)
    with torch.no_grad():
        got = module(torch.from_numpy(Xd)).numpy()
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, net.forward(Xd), rtol=1e-6, atol=1e-6)


def test_torch_equals_predict_proba_of_a_binary_classifier(X):
    torch = need("torch")
    y = (X[:, 0] > 0).astype(int)
    clf = fit(fastmlp.MLPClassifier(hidden_layer_sizes=(6,), max_iter=50, random_state=0), X.astype(np.float64), y)
    with torch.no_grad():
        got = export.to_torch(clf)(torch.from_numpy(X.astype(np.float64))).numpy()
    np.testing.assert_allclose(got, clf.predict_proba(X.astype(np.float64)), rtol=1e-6, atol=1e-12)


def test_export_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match=r"fastmlp.Network or a fitted MLPClassifier"):
        export._layers(object())
    with pytest.raises(Exception, match="not fitted"):
        export._layers(fastmlp.MLPRegressor())


# ------------------------------------------------------- Network.save / load
def test_network_save_load_round_trip(tmp_path, X):
    net = network("leaky_relu", "softmax", "float64")
    net.save(tmp_path / "net.npz")
    back = fastmlp.Network.load(tmp_path / "net.npz")
    assert repr(back) == repr(net) and back._config == net._config
    np.testing.assert_array_equal(back.params, net.params)
    np.testing.assert_array_equal(back.forward(X), net.forward(X))
    with np.load(tmp_path / "net.npz", allow_pickle=False) as z:  # NumPy alone reads it
        assert sorted(z.files) == ["__fastmlp__", "params"]


def test_network_load_rejects_other_and_damaged_files(tmp_path):
    net = network("relu", "identity")
    net.save(tmp_path / "net.npz")
    clf_path = tmp_path / "clf.npz"
    X = np.random.default_rng(0).standard_normal((20, 3))
    fit(fastmlp.MLPRegressor(hidden_layer_sizes=(3,), solver="lbfgs", max_iter=5), X, X[:, 0]).save(clf_path)
    with pytest.raises(ValueError, match="not a fastmlp network file"):
        fastmlp.Network.load(clf_path)
    raw = (tmp_path / "net.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable fastmlp network file"):
        fastmlp.Network.load(tmp_path / "cut.npz")
    # params of another shape than the layer sizes imply
    other = fastmlp.Network([5, 7, 6, 2], dtype="float32")
    arrays = dict(np.load(tmp_path / "net.npz", allow_pickle=False))
    arrays["params"] = np.array(other.params)
    np.savez(tmp_path / "forged.npz", **arrays)
    with pytest.raises(ValueError, match="params is"):
        fastmlp.Network.load(tmp_path / "forged.npz")


# ------------------------------------------------------------------- summary
def test_summary_of_a_network_and_of_a_fitted_estimator():
    buf = io.StringIO()
    fastmlp.Network([784, 256, 10], output_activation="softmax").summary(file=buf)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "Network (float32)"
    assert lines[2].split() == ["dense", "0", "784", "->", "256", "200,960", "relu"]
    assert lines[3].split() == ["dense", "1", "256", "->", "10", "2,570", "softmax"]
    assert lines[4] == "total: 203,530 parameters (814,120 bytes)"

    X = np.random.default_rng(0).standard_normal((30, 4))
    clf = fit(fastmlp.MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=5), X, np.arange(30) % 3)
    buf = io.StringIO()
    clf.summary(file=buf)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "MLPClassifier (fitted, dtype float64)"
    assert [line.split()[-1] for line in lines[2:4]] == ["relu", "softmax"]
    assert lines[-1].startswith(f"total: {4 * 5 + 5 + 5 * 3 + 3} parameters")


def test_an_activation_without_an_export_mapping_is_a_clear_error():
    """A new activation of the core that export does not map yet: a ValueError naming it, not a KeyError."""
    with pytest.raises(ValueError, match="activation 'gelu' has no ONNX operator"):
        export._mapped(export._ONNX_OPS, "gelu", "ONNX operator")


def test_exports_carry_per_layer_activations_and_drop_nothing(tmp_path):
    rng = np.random.default_rng(0)
    net = fastmlp.Network(
        [6, 9, 7, 8, 4],
        activation=["tanh", "leaky_relu", "logistic"],
        output_activation="softmax",
        seed=4,
        dropout=[0.2, 0.5, 0.5, 0.5],
        input_noise=0.5,
    )
    X = rng.standard_normal((25, 6)).astype(np.float32)
    need("torch")
    import torch

    model = fastmlp.export.to_torch(net)
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(X)).numpy(), net.forward(X), rtol=1e-5, atol=1e-6)
    need("onnx")
    need("onnxruntime")
    np.testing.assert_allclose(run_onnx(net, X, tmp_path), net.forward(X), rtol=1e-5, atol=1e-6)
