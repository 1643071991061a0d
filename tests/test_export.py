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


def run_onnx_outputs(model, X, tmp_path, **kw):
    """Every output of the ONNX file of `model`, by name, for input X."""
    ort = need("onnxruntime")
    path = tmp_path / "model.onnx"
    export.to_onnx(model, path, **kw)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"X": X})))


@pytest.mark.parametrize("classes", [2, 3])
def test_onnx_equals_predict_proba_and_predict(classes, X, tmp_path):
    need("onnx")
    y = np.arange(len(X)) % classes
    clf = fastmlp.MLPClassifier(
        hidden_layer_sizes=(8,), activation="tanh", max_iter=30, dtype="float32", random_state=0
    )
    fit(clf, X, y)
    out = run_onnx_outputs(clf, X, tmp_path)
    assert sorted(out) == ["label", "probabilities"]
    assert out["probabilities"].shape == (len(X), classes)  # binary: the two columns [1 - p, p]
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X), rtol=1e-5, atol=1e-6)
    assert out["label"].dtype == np.int64
    np.testing.assert_array_equal(out["label"], clf.predict(X))
    reg = fastmlp.MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, dtype="float32", random_state=0)
    fit(reg, X, X[:, :2])
    out = run_onnx_outputs(reg, X, tmp_path)
    assert list(out) == ["variable"]
    np.testing.assert_allclose(out["variable"], reg.predict(X), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("labels", ["str", "int", "float", "bool", "multilabel"])
def test_onnx_of_a_float64_estimator_takes_float32_and_keeps_its_labels(labels, X, tmp_path):
    """A model trained on float64 data (NumPy's and pandas' default) exports with a float32 input
    by default (skl2onnx's convention), or float64 on request with float64's results; the label
    output is predict's, string classes included."""
    need("onnx")
    X64 = X.astype(np.float64)
    k = np.arange(len(X)) % 3
    y = {
        "str": np.array(["cat", "dog", "émeu"])[k],
        "int": k * 7 - 3,
        "float": k * 2.0 - 1.0,
        "bool": k == 1,
        "multilabel": np.stack([k == 1, k != 0], axis=1).astype(int),
    }[labels]
    clf = fit(fastmlp.MLPClassifier(hidden_layer_sizes=(6,), max_iter=40, random_state=0), X64, y)
    out = run_onnx_outputs(clf, X, tmp_path)  # float32 in: every ONNX consumer's type
    assert out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X64), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["label"], clf.predict(X64))
    out = run_onnx_outputs(clf, X64, tmp_path, dtype=np.float64)
    assert out["probabilities"].dtype == np.float64
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X64), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(out["label"], clf.predict(X64))


def test_onnx_dtype_and_X_are_checked(X):
    need("onnx")
    net = network("relu", "identity")
    with pytest.raises(ValueError, match="dtype must be float32 or float64, got int64"):
        export.to_onnx(net, dtype=np.int64)
    with pytest.raises(TypeError, match="X is for a scikit-learn model"):
        export.to_onnx(net, X=X)
    with pytest.raises(TypeError, match=r"fastmlp.Network, a fitted MLPClassifier/MLPRegressor or a fitted"):
        export.to_onnx(object())


def frame(n: int = 120):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "age": rng.uniform(18, 80, n),
            "income": rng.lognormal(10, 1, n),
            "visits": rng.integers(0, 20, n),
            "city": rng.choice(["Lyon", "Oslo", "Kyoto", "Lima"], n),
        }
    )


def pipeline(est):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer(
        [("num", StandardScaler(), ["age", "income", "visits"]), ("cat", OneHotEncoder(), ["city"])]
    )
    return Pipeline([("prep", prep), ("mlp", est)])


def feeds(df):
    return {
        c: (df[[c]].to_numpy(np.float32) if df[c].dtype.kind in "fi" else df[[c]].to_numpy(dtype=object))
        for c in df.columns
    }


@pytest.mark.parametrize("target", ["binary-str", "multiclass-str", "multiclass-int", "regression"])
@pytest.mark.parametrize("via", ["fastmlp", "skl2onnx"])
def test_a_whole_pipeline_exports_through_skl2onnx(target, via, tmp_path):
    """A Pipeline(ColumnTransformer(StandardScaler, OneHotEncoder), fastmlp estimator) on a pandas
    DataFrame with numeric and categorical columns: the ONNX graph's label and probabilities
    (or variable) equal the pipeline's predict and predict_proba (predict)."""
    need("onnx")
    ort = need("onnxruntime")
    skl2onnx = need("skl2onnx")
    df = frame()
    rng = np.random.default_rng(4)
    score = (df["age"] - 50) / 20 + (df["city"] == "Oslo") + 0.3 * rng.standard_normal(len(df))
    if target == "regression":
        y, est = score.to_numpy(), fastmlp.MLPRegressor(hidden_layer_sizes=(10,), max_iter=60, random_state=0)
    else:
        est = fastmlp.MLPClassifier(hidden_layer_sizes=(10,), max_iter=60, random_state=0)
        y = {
            "binary-str": np.where(score > 0, "churn", "stay"),
            "multiclass-str": np.array(["low", "mid", "high"])[np.digitize(score, [-0.5, 0.5])],
            "multiclass-int": np.array([10, 20, 30])[np.digitize(score, [-0.5, 0.5])],
        }[target]
    pipe = fit(pipeline(est), df, y)
    path = tmp_path / "pipe.onnx"
    if via == "fastmlp":
        export.to_onnx(pipe, path, X=df[:1])
    else:
        export.register_skl2onnx()
        options = {fastmlp.MLPClassifier: {"zipmap": False}} if target != "regression" else None
        proto = skl2onnx.to_onnx(pipe, df[:1], options=options)
        path.write_bytes(proto.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    x = feeds(df)
    if via == "skl2onnx":  # skl2onnx types a DataFrame's float64 columns as double, its ints as int64
        x = {c: (df[[c]].to_numpy() if df[c].dtype.kind in "fi" else v) for c, v in x.items()}
    out = dict(zip(names, session.run(None, x)))
    if target == "regression":
        assert names == ["variable"]
        np.testing.assert_allclose(out["variable"].ravel(), pipe.predict(df), rtol=1e-4, atol=1e-4)
        return
    assert names == ["label", "probabilities"]
    proba = pipe.predict_proba(df)
    np.testing.assert_allclose(out["probabilities"], proba, rtol=1e-4, atol=1e-5)
    sure = np.sort(proba, axis=1)[:, -1] - np.sort(proba, axis=1)[:, -2] > 1e-4  # float32 may flip a near-tie
    assert sure.mean() > 0.9
    np.testing.assert_array_equal(out["label"][sure], pipe.predict(df)[sure])


def test_exporting_a_pipeline_needs_a_sample_of_its_input():
    need("onnx")
    need("skl2onnx")
    df = frame(40)
    pipe = fit(pipeline(fastmlp.MLPRegressor(hidden_layer_sizes=(3,), max_iter=3)), df, df["age"].to_numpy())
    with pytest.raises(TypeError, match="needs X=, a sample of its input"):
        export.to_onnx(pipe)


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


def test_an_activation_without_an_export_mapping_is_a_clear_error(monkeypatch):
    """A new activation of the core that export does not map yet: a ValueError naming it, not a KeyError."""
    need("onnx")
    monkeypatch.delitem(export._ONNX_OPS, "gelu")  # (every activation of the core is mapped today)
    net = fastmlp.Network([3, 4, 2], activation="gelu", seed=0)
    with pytest.raises(ValueError, match="activation 'gelu' has no ONNX operator"):
        export.to_onnx(net)


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
