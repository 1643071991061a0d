"""A trained model, handed to the tools that serve models: ONNX and PyTorch.

Both take a :class:`fastmlp.Network` or a fitted :class:`fastmlp.MLPClassifier`
/ :class:`fastmlp.MLPRegressor` and write out the same math: per layer
``Z = A W + b`` (an ONNX ``Gemm``, a ``torch.nn.Linear``) and its activation.
A Network's output is :meth:`Network.forward`'s; a classifier's is its
``predict_proba`` (a binary classifier's one logistic output becomes the two
columns ``[1 - p, p]``); a regressor's is ``predict`` as a 2-D
``(n_samples, n_outputs)`` array.

Needs the extra ``onnx`` (onnx, skl2onnx for pipelines; onnxruntime to run the file) or
``torch``: ``pip install ".[onnx]"`` in fastmlp's clone, or ``pip install onnx onnxruntime skl2onnx``;
none is imported before these functions are called.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable, NamedTuple

import numpy as np

from ._names import OUTPUT_ACTIVATIONS, canonical_activation
from ._validation import check_choice, check_float
from .layers import from_spec as layers_from_spec, shapes as layer_shapes

__all__ = ["register_skl2onnx", "to_onnx", "to_onnx_layers", "to_torch", "to_torch_layers"]

# The ONNX operator set written: every operator used exists unchanged since 13;
# 17 is read by every onnxruntime since 1.11 (the newest onnx package's opset can be
# newer than the onnxruntime installed beside it).
ONNX_OPSET = 17
_ONNX_IR_VERSION = 8  # the IR version of opset 17


class _Layers(NamedTuple):
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activations: list[str]  # one per layer, the last one the output's
    leaky_relu_slope: float
    binary_proba: bool  # append [1 - p, p]
    dtype: np.dtype
    network: Any = None  # a network of layers (fastmlp.layers): exported from its spec; else None


def _layers(model: Any) -> _Layers:
    from .network import Network

    binary = False
    if isinstance(model, Network):
        net = model
    elif hasattr(model, "get_model_state") and hasattr(model, "fitted_network"):  # an estimator
        net = model.fitted_network()
        binary = model.get_model_state()["attributes"].get("y_type") == "binary"
    else:
        raise TypeError(
            f"model must be a fastmlp.Network or a fitted MLPClassifier/MLPRegressor, got {type(model).__name__}"
        )
    n = len(net.weights)
    out = canonical_activation(net.output_activation)
    if not net.shorthand:  # a network of layers: its weights for the shapes, its spec for the graph
        return _Layers(
            [np.array(w) for w in net.weights], [np.array(b) for b in net.biases], [], 0.0, binary, net.dtype, net
        )
    hidden = [canonical_activation(a) for a in net.activations]  # dropout and noise: training only
    assert len(hidden) == n - 1
    return _Layers(
        [np.array(w) for w in net.weights],
        [np.array(b) for b in net.biases],
        [*hidden, out],
        float(net.leaky_relu_slope),
        binary,
        net.dtype,
    )


# Each activation's ONNX operator (None: identity, no node), or a function that writes the nodes
# computing it: build(x, node, const, double) -> the output's name, with node(op, inputs, **attrs)
# adding a node, const(prefix, value) a scalar initializer of the graph's dtype, and `double` true
# for a float64 graph. The functions use the operators onnxruntime runs in both dtypes: its CPU
# kernels of Selu, Elu, Softplus and Erf are float32 only, and Gelu and Mish are operators only
# from opsets 20 and 18 (ONNX_OPSET is 17). An activation of the core without an entry here (or in
# to_torch's table) cannot be exported: _mapped says so with a ValueError.
_Node_ = Callable[..., str]
_Const = Callable[[str, float], str]
_Build = Callable[[str, _Node_, _Const, bool], str]
_SELU_ALPHA, _SELU_GAMMA = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _softplus_nodes(x: str, node: _Node_, const: _Const, double: bool) -> str:
    """Softplus; float64: max(x, 0) + log(1 + exp(-|x|)), which never overflows."""
    if not double:
        return node("Softplus", [x])
    tail = node("Log", [node("Add", [const("one", 1.0), node("Exp", [node("Neg", [node("Abs", [x])])])])])
    return node("Add", [node("Max", [x, const("zero", 0.0)]), tail])


def _elu_like(x: str, node: _Node_, const: _Const, alpha: float, gamma: float) -> str:
    """gamma * (x if x > 0 else alpha * (exp(min(x, 0)) - 1))."""
    negative = node(
        "Mul",
        [const("alpha", alpha), node("Sub", [node("Exp", [node("Min", [x, const("zero", 0.0)])]), const("one", 1.0)])],
    )
    out = node("Where", [node("Greater", [x, const("zero", 0.0)]), x, negative])
    return out if gamma == 1.0 else node("Mul", [const("gamma", gamma), out])


def _selu_nodes(x: str, node: _Node_, const: _Const, double: bool) -> str:
    if not double:
        return node("Selu", [x], alpha=_SELU_ALPHA, gamma=_SELU_GAMMA)  # ONNX's defaults are float32 roundings
    return _elu_like(x, node, const, _SELU_ALPHA, _SELU_GAMMA)


def _elu_nodes(x: str, node: _Node_, const: _Const, double: bool) -> str:
    return _elu_like(x, node, const, 1.0, 1.0) if double else node("Elu", [x], alpha=1.0)


def _gelu_nodes(x: str, node: _Node_, const: _Const, double: bool) -> str:
    """x (1 + erf(x / sqrt 2)) / 2, the exact GELU; float64: erf evaluated in float32 (about 1e-7)."""
    u = node("Mul", [x, const("inv_sqrt2", math.sqrt(0.5))])
    erf = node("Cast", [node("Erf", [node("Cast", [u], to=1)])], to=11) if double else node("Erf", [u])  # 1: FLOAT
    return node("Mul", [node("Mul", [x, const("half", 0.5)]), node("Add", [erf, const("one", 1.0)])])


def _silu_nodes(x: str, node: _Node_, const: _Const, double: bool) -> str:
    return node("Mul", [x, node("Sigmoid", [x])])


def _mish_nodes(x: str, node: _Node_, const: _Const, double: bool) -> str:
    return node("Mul", [x, node("Tanh", [_softplus_nodes(x, node, const, double)])])


_ONNX_OPS: dict[str, str | _Build | None] = {
    "identity": None,
    "relu": "Relu",
    "tanh": "Tanh",
    "logistic": "Sigmoid",
    "leaky_relu": "LeakyRelu",
    "softmax": "Softmax",
    "exp": "Exp",
    "gelu": _gelu_nodes,
    "silu": _silu_nodes,
    "selu": _selu_nodes,
    "mish": _mish_nodes,
    "softplus": _softplus_nodes,
    "elu": _elu_nodes,
}


def _mapped(table: dict[str, Any], activation: str, what: str) -> Any:
    if activation not in table:
        raise ValueError(
            f"activation {activation!r} has no {what} in fastmlp.export yet; this model cannot be exported"
        )
    return table[activation]


def _activation_nodes(x: str, act: str, slope: float, node: _Node_, const: Callable[..., str], dtype: np.dtype) -> str:
    """The nodes of activation `act` on `x` (none for identity); returns the output's name."""
    op = _mapped(_ONNX_OPS, act, "ONNX operator")
    if callable(op):
        return op(x, node, lambda prefix, v: const(prefix, np.array(v, dtype=dtype)), dtype == np.float64)
    if op is None:
        return x
    attrs = {"alpha": slope} if op == "LeakyRelu" else {"axis": 1} if op == "Softmax" else {}
    return node(op, [x], **attrs)


class _Node(NamedTuple):
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    domain: str = ""


class _Graph(NamedTuple):
    """The inference graph as plain data: nodes and initializers (numpy arrays), written out by
    :func:`to_onnx` directly or by the skl2onnx converter into skl2onnx's container."""

    nodes: list[_Node]
    initializers: dict[str, np.ndarray]


def _classes_tensor(classes: np.ndarray) -> np.ndarray:
    """classes_ as an ONNX-typed array: integers and booleans as int64, floats as float64,
    text as str (an ONNX string tensor)."""
    classes = np.asarray(classes)
    if classes.dtype.kind in "biu":
        return classes.astype(np.int64)
    if classes.dtype.kind == "f":
        return classes.astype(np.float64)
    if classes.dtype.kind in "US" or (classes.dtype.kind == "O" and all(isinstance(c, str) for c in classes)):
        return classes.astype(str)
    raise TypeError(f"classes_ of dtype {classes.dtype} (mixed objects) have no ONNX tensor type")


def _graph(model: Any, x: str, outputs: list[str], dtype: np.dtype, fresh: Any) -> _Graph:
    """`model`'s inference from input `x` to `outputs` (a Network: ``[Y]``; a classifier:
    ``[label, probabilities]``; a regressor: ``[variable]``), computed in `dtype`;
    ``fresh(prefix)`` names every intermediate value and initializer."""
    layers = _layers(model)
    nodes: list[_Node] = []
    inits: dict[str, np.ndarray] = {}

    def const(prefix: str, value: np.ndarray) -> str:
        name = fresh(prefix)
        inits[name] = value
        return name

    def node(op: str, inputs: list[str], out: str | None = None, domain: str = "", **attrs: Any) -> str:
        out = out or fresh(op.lower())
        nodes.append(_Node(op, inputs, [out], attrs, domain))
        return out

    net = layers.network
    if net is not None:  # a network of layers, its output activation included
        x = _layer_nodes(
            x,
            net.spec,
            net.n_inputs,
            net.params,
            net.state,
            net.output_activation,
            float(net.leaky_relu_slope),
            dtype,
            node,
            const,
        )
    for i, (w, b, act) in enumerate(zip(layers.weights, layers.biases, layers.activations)):
        x = node("Gemm", [x, const(f"W{i}", w.astype(dtype)), const(f"b{i}", b.astype(dtype))])
        x = _activation_nodes(x, act, layers.leaky_relu_slope, node, const, dtype)
    y_type = model.get_model_state()["attributes"].get("y_type") if hasattr(model, "get_model_state") else None
    if y_type is None:  # a Network or a regressor: the output as it is
        node("Identity", [x], outputs[0])
        return _Graph(nodes, inits)
    label, proba = outputs
    if y_type == "multilabel-indicator":  # predict: p > 0.5 per label, as 0/1
        node("Identity", [x], proba)
        node("Cast", [node("Greater", [x, const("half", np.array(0.5, dtype=dtype))])], label, to=7)  # 7: INT64
        return _Graph(nodes, inits)
    if len(model.classes_) < 2:
        raise ValueError("a classifier fitted on one class has no ONNX export (its label is constant)")
    if layers.binary_proba:
        x = node("Concat", [node("Sub", [const("one", np.ones((), dtype=dtype)), x]), x], axis=1)
    node("Identity", [x], proba)
    index = node("ArgMax", [proba], axis=1, keepdims=0)  # ties: the first class, as predict
    node("Gather", [const("classes", _classes_tensor(model.classes_)), index], label, axis=0)
    return _Graph(nodes, inits)


def _output_names(model: Any) -> list[str]:
    from .network import Network

    if isinstance(model, Network):
        return ["Y"]
    return ["label", "probabilities"] if hasattr(model, "classes_") else ["variable"]


def _onnx_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _fastmlp_estimators(model: Any) -> list[Any]:
    """The fastmlp estimators inside `model` (a pipeline, a column transformer, ...), found through
    scikit-learn's ``get_params(deep=True)``."""
    from .estimators import MLPClassifier, MLPRegressor

    found = [model] if isinstance(model, (MLPClassifier, MLPRegressor)) else []
    params = model.get_params(deep=True) if hasattr(model, "get_params") else {}
    found += [v for v in params.values() if isinstance(v, (MLPClassifier, MLPRegressor))]
    return found


def to_onnx(model: Any, path: str | os.PathLike[str] | None = None, dtype: Any = np.float32, *, X: Any = None) -> Any:
    """The model as an ONNX graph; written to `path` when given.

    `model`: a :class:`fastmlp.Network`, a fitted MLPClassifier/MLPRegressor, or any fitted
    scikit-learn model holding them (a ``Pipeline`` with a ``ColumnTransformer``, ...), which
    is converted by skl2onnx (:func:`register_skl2onnx`) from a sample `X` of its input.

    Inputs and outputs follow skl2onnx's conventions. A Network or estimator has one input
    ``X`` of shape ``(N, n_features)`` and type `dtype` (default float32, whatever the model
    was trained in: weights are cast; float64 keeps a float64 model's exact results).
    Outputs:

    - a Network: ``Y``, :meth:`Network.forward`'s ``(N, n_outputs)``;
    - a classifier: ``label`` (``predict``: int64 for integer or boolean classes, string for
      text, float64 for float classes; a multilabel classifier's ``(N, n_labels)`` 0/1 int64)
      and ``probabilities`` (``predict_proba``, ``(N, n_classes)``; binary: ``[1 - p, p]``);
    - a regressor: ``variable``, ``predict`` as ``(N, n_outputs)``.

    A scikit-learn model's inputs are skl2onnx's from `X` (a DataFrame: one input per column,
    named as the column); its fastmlp classifiers have ``zipmap`` off, so that
    ``probabilities`` is a plain tensor.

    Operators: ``Gemm`` per layer, then ``Relu``, ``Tanh``, ``Sigmoid``,
    ``LeakyRelu(alpha=leaky_relu_slope)``, ``Softmax(axis=1)``, ``Exp``, ``Selu``, ``Elu``,
    ``Softplus``, or for the activations that are no operator of opset 17: gelu as
    ``x * 0.5 * (1 + Erf(x / sqrt 2))``, silu as ``x * Sigmoid(x)``, mish as
    ``x * Tanh(Softplus(x))`` (identity: none). A float64 graph writes Selu, Elu and Softplus
    out of ``Exp``, ``Log``, ``Where`` … and evaluates gelu's ``Erf`` in float32 (about 1e-7
    relative), as onnxruntime has float32 kernels only for these;
    ``ArgMax`` and ``Gather`` on the classes for the label; opset :data:`ONNX_OPSET`.

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker``; run it with ``onnxruntime.InferenceSession(path)``.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError("to_onnx needs the onnx package: pip install onnx onnxruntime skl2onnx") from None
    from .network import Network

    if isinstance(model, Network) and not model.shorthand:  # a network of layers
        if X is not None:
            raise TypeError("X is for a scikit-learn model (a Pipeline); a fastmlp model's input is its n_features")
        return to_onnx_layers(
            model.spec,
            model.n_inputs,
            model.params,
            model.state,
            model.output_activation,
            path,
            dtype,
            leaky_relu_slope=model.leaky_relu_slope,
        )
    dt = _onnx_dtype(dtype)
    if not isinstance(model, Network) and not hasattr(model, "fitted_network"):
        if not hasattr(model, "get_params") or not hasattr(model, "fit"):
            raise TypeError(
                "model must be a fastmlp.Network, a fitted MLPClassifier/MLPRegressor or a fitted "
                f"scikit-learn model (a Pipeline, ...), got {type(model).__name__}"
            )
        proto = _skl2onnx_convert(model, X, dt)
    else:
        if X is not None:
            raise TypeError("X is for a scikit-learn model (a Pipeline); a fastmlp model's input is its n_features")
        used: set[str] = set()

        def fresh(prefix: str) -> str:
            name, k = prefix, 0
            while name in used:
                k += 1
                name = f"{prefix}_{k}"
            used.add(name)
            return name

        outputs = _output_names(model)
        used.update(["X", *outputs])
        graph = _graph(model, "X", outputs, dt, fresh)
        elem = TensorProto.FLOAT if dt == np.float32 else TensorProto.DOUBLE
        layers = _layers(model)
        n_in = layers.weights[0].shape[0] if layers.network is None else layers.network.n_inputs
        n_out = layers.weights[-1].shape[1]
        if outputs == ["label", "probabilities"]:
            n_proba = 2 if layers.binary_proba else n_out
            classes = _classes_tensor(model.classes_)
            label_elem = helper.np_dtype_to_tensor_dtype(classes.dtype) if classes.dtype.kind != "U" else 8
            multilabel = model.get_model_state()["attributes"].get("y_type") == "multilabel-indicator"
            outs = [
                helper.make_tensor_value_info(
                    "label", TensorProto.INT64 if multilabel else label_elem, ["N", n_out] if multilabel else ["N"]
                ),
                helper.make_tensor_value_info("probabilities", elem, ["N", n_proba]),
            ]
        else:
            outs = [helper.make_tensor_value_info(outputs[0], elem, ["N", n_out])]
        nodes = [
            helper.make_node(n.op, n.inputs, n.outputs, name=n.outputs[0] + "_node", domain=n.domain, **n.attrs)
            for n in graph.nodes
        ]
        inits = [numpy_helper.from_array(v, k) for k, v in graph.initializers.items()]
        proto = helper.make_model(
            helper.make_graph(
                nodes, "fastmlp", [helper.make_tensor_value_info("X", elem, ["N", n_in])], outs, initializer=inits
            ),
            opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
            producer_name="fastmlp",
            ir_version=_ONNX_IR_VERSION,
        )
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


def _skl2onnx_convert(model: Any, X: Any, dtype: np.dtype) -> Any:
    try:
        import skl2onnx
    except ImportError:
        raise ImportError(f"exporting a {type(model).__name__} needs skl2onnx: pip install skl2onnx") from None
    if X is None:
        raise TypeError(
            f"exporting a {type(model).__name__} needs X=, a sample of its input (a few rows), "
            "from which skl2onnx types the graph's inputs"
        )
    register_skl2onnx()
    from .estimators import MLPClassifier

    options = {id(m): {"zipmap": False} for m in _fastmlp_estimators(model) if isinstance(m, MLPClassifier)}
    return skl2onnx.to_onnx(
        model,
        initial_types=_initial_types(X, dtype),
        options=options,
        target_opset={"": ONNX_OPSET, "ai.onnx.ml": 3},
    )


def _numeric(dtype: Any) -> bool:
    """Whether a column's dtype (NumPy's, or a pandas extension dtype) holds numbers."""
    try:
        return np.dtype(getattr(dtype, "numpy_dtype", dtype)).kind in "biuf"
    except TypeError:  # pandas' StringDtype, CategoricalDtype, ...: not numbers
        return False


def _initial_types(X: Any, dtype: np.dtype) -> list[tuple[str, Any]]:
    """skl2onnx's inputs for a sample `X`: a DataFrame's columns one input each, ``(N, 1)``,
    named as the column (numbers as `dtype`, anything else as strings); an array one input ``X``
    ``(N, n_features)`` of `dtype`."""
    from skl2onnx.common.data_types import StringTensorType

    number = _skl2onnx_tensor_type(dtype)
    columns = getattr(X, "columns", None)
    if columns is not None and hasattr(X, "dtypes"):
        return [
            (str(c), number([None, 1]) if _numeric(t) else StringTensorType([None, 1])) for c, t in X.dtypes.items()
        ]
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (a sample of rows), got shape {X.shape}")
    return [("X", (number if X.dtype.kind in "biuf" else StringTensorType)([None, X.shape[1]]))]


def register_skl2onnx() -> None:
    """Registers fastmlp's MLPClassifier and MLPRegressor with skl2onnx (a shape calculator and
    a converter each), so that ``skl2onnx.to_onnx`` converts pipelines that hold them.

    A classifier's outputs are skl2onnx's ``label`` and ``probabilities``; pass
    ``options={id(clf): {"zipmap": False}}`` (or ``{MLPClassifier: {"zipmap": False}}``) for a
    probabilities tensor instead of skl2onnx's default list of dicts. The graph computes in
    the type of the estimator's input (float32 by default in skl2onnx, float64 on request).
    Calling it again is harmless.
    """
    try:
        from skl2onnx import update_registered_converter
    except ImportError:
        raise ImportError("register_skl2onnx needs skl2onnx: pip install skl2onnx") from None
    from .estimators import MLPClassifier, MLPRegressor

    update_registered_converter(
        MLPClassifier,
        "FastmlpMLPClassifier",
        _skl2onnx_shapes,
        _skl2onnx_converter,
        options={"zipmap": [True, False, "columns"]},
    )
    update_registered_converter(MLPRegressor, "FastmlpMLPRegressor", _skl2onnx_shapes, _skl2onnx_converter)


def _skl2onnx_tensor_type(dtype: np.dtype) -> Any:
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    return {"f4": FloatTensorType, "f8": DoubleTensorType, "i8": Int64TensorType}.get(
        f"{dtype.kind}{dtype.itemsize}", StringTensorType
    )


def _skl2onnx_shapes(operator: Any) -> None:
    """skl2onnx's shape calculator: outputs typed as :func:`to_onnx` types them."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, Int64TensorType

    model = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    compute = DoubleTensorType if isinstance(operator.inputs[0].type, DoubleTensorType) else FloatTensorType
    layers = _layers(model)
    n_out = layers.weights[-1].shape[1]
    if len(operator.outputs) == 1:  # a regressor
        operator.outputs[0].type = compute([n, n_out])
        return
    multilabel = model.get_model_state()["attributes"].get("y_type") == "multilabel-indicator"
    label_type = Int64TensorType if multilabel else _skl2onnx_tensor_type(_classes_tensor(model.classes_).dtype)
    operator.outputs[0].type = label_type([n, n_out] if multilabel else [n])
    operator.outputs[1].type = compute([n, 2 if layers.binary_proba else n_out])


def _skl2onnx_converter(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx's converter: :func:`_graph`'s nodes and initializers, added to its container."""
    from onnx import TensorProto, helper
    from skl2onnx.common.data_types import DoubleTensorType

    model = operator.raw_operator
    dtype = np.dtype(np.float64 if isinstance(operator.inputs[0].type, DoubleTensorType) else np.float32)
    x = scope.get_unique_variable_name("X")
    container.add_node(
        "Cast",
        [operator.inputs[0].full_name],
        [x],
        to=helper.np_dtype_to_tensor_dtype(dtype),
        name=scope.get_unique_operator_name("Cast"),
    )
    graph = _graph(model, x, list(operator.output_full_names), dtype, scope.get_unique_variable_name)
    for name, value in graph.initializers.items():
        if value.dtype.kind == "U":
            container.add_initializer(name, TensorProto.STRING, list(value.shape), [s.encode() for s in value])
        else:
            container.add_initializer(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape), value.ravel()
            )
    for n in graph.nodes:
        container.add_node(
            n.op, n.inputs, n.outputs, op_domain=n.domain, name=scope.get_unique_operator_name(n.op), **n.attrs
        )


def _import_torch() -> tuple[Any, Any]:
    try:
        import torch
        from torch import nn
    except ImportError:
        raise ImportError(
            "to_torch needs PyTorch: pip install torch (its CPU-only build, from PyTorch's CPU wheel "
            "index, is far smaller than the default CUDA one)"
        ) from None
    return torch, nn


@functools.cache
def _torch_modules() -> dict[str, Any]:
    """The small torch.nn modules the exports use beside torch's own (made once, on first use)."""
    _import_torch()  # a clear ImportError without torch
    import torch
    from torch import nn

    class Exp(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.exp(z)

    class BinaryProba(nn.Module):
        """[1 - p, p] from one logistic output: predict_proba's columns."""

        def forward(self, p: torch.Tensor) -> torch.Tensor:
            return torch.cat([1 - p, p], dim=1)

    class Residual(nn.Module):
        """y = x + body(x)."""

        def __init__(self, body: Any) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x)

    class Embedding(nn.Module):
        """[x's other columns] ++ [tables[j](x[:, columns[j]] as integer codes) for each j]."""

        def __init__(self, columns: list[int], others: list[int], tables: list[Any]) -> None:
            super().__init__()
            self.columns, self.others = columns, others
            self.tables = nn.ModuleList(tables)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            parts = [x[:, self.others]]
            parts += [table(x[:, c].long()) for c, table in zip(self.columns, self.tables)]
            return torch.cat(parts, dim=1)

    return {"Exp": Exp, "BinaryProba": BinaryProba, "Residual": Residual, "Embedding": Embedding}


def _torch_activation(act: str, slope: float) -> Any:
    """A torch.nn module computing activation `act` (None for identity)."""
    _, nn = _import_torch()
    activation = _mapped(
        {
            "identity": None,
            "relu": nn.ReLU,
            "tanh": nn.Tanh,
            "logistic": nn.Sigmoid,
            "leaky_relu": lambda: nn.LeakyReLU(slope),
            "softmax": lambda: nn.Softmax(dim=1),
            "exp": _torch_modules()["Exp"],
            "gelu": nn.GELU,  # approximate="none": the exact erf form
            "silu": nn.SiLU,
            "selu": nn.SELU,
            "mish": nn.Mish,
            "softplus": lambda: nn.Softplus(beta=1.0, threshold=20.0),  # z itself past 20 (within 2e-9)
            "elu": lambda: nn.ELU(alpha=1.0),
        },
        canonical_activation(act),
        "torch.nn module",
    )
    return None if activation is None else activation()


def to_torch(model: Any) -> Any:
    """The model as a ``torch.nn.Sequential`` of ``Linear`` layers and activations, with the
    same weights (``Linear.weight`` is ``W.T``) and dtype, in evaluation mode."""
    torch, nn = _import_torch()
    from .network import Network

    if isinstance(model, Network) and not model.shorthand:  # a network of layers
        return to_torch_layers(
            model.spec,
            model.n_inputs,
            model.params,
            model.state,
            model.output_activation,
            model.dtype,
            leaky_relu_slope=model.leaky_relu_slope,
        )
    layers = _layers(model)
    if layers.network is not None:  # an estimator's network of layers
        net = layers.network
        seq = to_torch_layers(
            net.spec,
            net.n_inputs,
            net.params,
            net.state,
            net.output_activation,
            net.dtype,
            leaky_relu_slope=net.leaky_relu_slope,
        )
        if layers.binary_proba:
            seq.append(_torch_modules()["BinaryProba"]())
        return seq.eval()
    dtype = torch.float32 if layers.dtype == np.float32 else torch.float64
    modules: list[Any] = []
    for w, b, act in zip(layers.weights, layers.biases, layers.activations):
        linear = nn.Linear(w.shape[0], w.shape[1], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        modules.append(linear)
        activation = _torch_activation(act, layers.leaky_relu_slope)
        if activation is not None:
            modules.append(activation)
    if layers.binary_proba:
        modules.append(_torch_modules()["BinaryProba"]())
    return nn.Sequential(*modules).eval()


# ---------------------------------------------------------------------------------------------
# A network of layers (fastmlp.layers): the same two exports from (spec, n_inputs, params, state).


class _LayerArrays(NamedTuple):
    """The layers' spec with each layer's shape (fastmlp.layers.shapes) and its arrays, by path."""

    layers: list[Any]  # fastmlp.layers.Layer
    shapes: Any  # fastmlp.layers.Shapes
    arrays: dict[tuple[int, ...], dict[str, np.ndarray]]  # path -> {name: array} (params and state)


def _check_head(output_activation: Any, leaky_relu_slope: Any) -> tuple[str, float]:
    """The output activation (its own name) and the slope, checked by name."""
    check_choice("output_activation", output_activation, OUTPUT_ACTIVATIONS)
    return canonical_activation(output_activation), check_float("leaky_relu_slope", leaky_relu_slope, minimum=0.0)


def _layer_arrays(spec: Any, n_inputs: int, params: Any, state: Any, dtype: np.dtype) -> _LayerArrays:
    layers = layers_from_spec(spec)
    shapes = layer_shapes(layers, n_inputs)
    params = np.asarray(params, dtype=dtype).ravel()
    state = np.asarray(state if state is not None else np.zeros(0), dtype=dtype).ravel()
    if params.size != shapes.n_params:
        raise ValueError(f"params must have {shapes.n_params} values for these layers, got {params.size}")
    if state.size != shapes.n_state:
        raise ValueError(f"state must have {shapes.n_state} values for these layers, got {state.size}")
    arrays: dict[tuple[int, ...], dict[str, np.ndarray]] = {}
    for shape in shapes.layers:
        found: dict[str, np.ndarray] = {}
        for buffer, offset, named in (
            (params, shape.param_offset, shape.params),
            (state, shape.state_offset, shape.state),
        ):
            for name, dims in named:
                size = math.prod(dims)
                found[name] = buffer[offset : offset + size].reshape(dims)
                offset += size
        arrays[shape.path] = found
    return _LayerArrays(layers, shapes, arrays)


def _layer_nodes(
    x: str,
    spec: Any,
    n_inputs: int,
    params: Any,
    state: Any,
    output_activation: str,
    slope: float,
    dtype: np.dtype,
    node: _Node_,
    const: Callable[[str, np.ndarray], str],
) -> str:
    """The evaluation-mode nodes of a network of layers on `x`, its output activation included;
    returns the output's name. ``node(op, inputs, **attrs)`` adds a node, ``const(prefix, array)``
    an initializer (both as in :func:`_graph`)."""
    found = _layer_arrays(spec, n_inputs, params, state, dtype)
    shape_of = {s.path: s for s in found.shapes.layers}
    n_dense = [0]
    double = dtype == np.float64

    def walk(layers: list[Any], x: str, prefix: tuple[int, ...]) -> str:
        for i, layer in enumerate(layers):
            path = (*prefix, i)
            a = found.arrays[path]
            kind = layer.kind
            if kind == "dense":
                k = n_dense[0]
                n_dense[0] += 1
                x = node("Gemm", [x, const(f"W{k}", a["W"]), const(f"b{k}", a["b"])])
            elif kind == "activation":
                x = _activation_nodes(x, layer.name, slope, node, const, dtype)
            elif kind == "dropout":
                pass  # evaluation: identity
            elif kind == "batch_norm":
                # ONNX's epsilon is a float32 attribute: a float64 graph adds what float32 rounding
                # took from eps to the variance, so that var + eps is the model's
                eps32 = float(np.float32(layer.eps))
                var = a["running_var"] + (layer.eps - eps32 if double else 0.0)
                inputs = [a["weight"], a["bias"], a["running_mean"], var]
                names = ["bn_scale", "bn_bias", "bn_mean", "bn_var"]
                x = node("BatchNormalization", [x, *map(const, names, inputs)], epsilon=eps32)
            elif kind == "layer_norm":
                scale, bias = const("ln_scale", a["weight"]), const("ln_bias", a["bias"])
                if double:  # float64: written out (epsilon's attribute is float32, and exact is the aim)
                    centred = node("Sub", [x, node("ReduceMean", [x], axes=[1], keepdims=1)])
                    var = node("ReduceMean", [node("Mul", [centred, centred])], axes=[1], keepdims=1)
                    std = node("Sqrt", [node("Add", [var, const("ln_eps", np.array(layer.eps, dtype=dtype))])])
                    x = node("Add", [node("Mul", [node("Div", [centred, std]), scale]), bias])
                else:
                    x = node("LayerNormalization", [x, scale, bias], axis=-1, epsilon=layer.eps)
            elif kind == "residual":
                x = node("Add", [x, walk(list(layer.layers), x, path)])
            else:  # embedding
                width = shape_of[path].n_in
                others = [c for c in range(width) if c not in set(layer.columns)]
                parts = [node("Gather", [x, const("other_columns", np.array(others, dtype=np.int64))], axis=1)]
                parts = parts if others else []
                for j, c in enumerate(layer.columns):
                    column = node("Gather", [x, const("code_column", np.array(c, dtype=np.int64))], axis=1)
                    codes = node("Cast", [column], to=7)  # 7: INT64
                    parts.append(node("Gather", [const(f"table{j}", a[f"table{j}"]), codes], axis=0))
                x = node("Concat", parts, axis=1)
        return x

    x = walk(found.layers, x, ())
    return _activation_nodes(x, canonical_activation(output_activation), slope, node, const, dtype)


def to_onnx_layers(
    spec: Any,
    n_inputs: int,
    params: Any,
    state: Any,
    output_activation: str = "identity",
    path: str | os.PathLike[str] | None = None,
    dtype: Any = np.float32,
    *,
    leaky_relu_slope: float = 0.01,
) -> Any:
    """A network of layers (its spec, :func:`fastmlp.layers.to_spec`; the flat `params` and
    `state`) as an ONNX graph in evaluation mode: input ``X`` ``(N, n_inputs)``, output ``Y``,
    computed in `dtype` (float32 or float64); written to `path` when given.

    Operators (opset :data:`ONNX_OPSET`): ``Gemm`` (Dense), the activations as in :func:`to_onnx`,
    ``BatchNormalization`` (the running statistics), ``LayerNormalization`` (axis -1; a float64
    graph writes it out of ``ReduceMean``, ``Sub``, ``Mul``, ``Sqrt``, ``Div``, as onnxruntime's
    kernel and the float32 ``epsilon`` attribute are about 1e-10 off), ``Add`` (residual),
    ``Gather`` + ``Cast`` + ``Concat`` (embedding: the other columns, then each table's rows of
    the codes); a Dropout is no node. ONNX's ``epsilon`` attributes are float32: a float64
    graph adds ``eps - float32(eps)`` to the batch norm's ``input_var``.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError("to_onnx needs the onnx package: pip install onnx onnxruntime skl2onnx") from None
    dt = _onnx_dtype(dtype)
    output_activation, leaky_relu_slope = _check_head(output_activation, leaky_relu_slope)
    used = {"X", "Y"}
    nodes: list[_Node] = []
    inits: dict[str, np.ndarray] = {}

    def fresh(prefix: str) -> str:
        name, k = prefix, 0
        while name in used:
            k += 1
            name = f"{prefix}_{k}"
        used.add(name)
        return name

    def const(prefix: str, value: np.ndarray) -> str:
        name = fresh(prefix)
        inits[name] = np.asarray(value)
        return name

    def node(op: str, inputs: list[str], out: str | None = None, domain: str = "", **attrs: Any) -> str:
        out = out or fresh(op.lower())
        nodes.append(_Node(op, inputs, [out], attrs, domain))
        return out

    y = _layer_nodes("X", spec, n_inputs, params, state, output_activation, leaky_relu_slope, dt, node, const)
    node("Identity", [y], "Y")
    n_out = layer_shapes(spec, n_inputs).n_outputs
    elem = TensorProto.FLOAT if dt == np.float32 else TensorProto.DOUBLE
    proto = helper.make_model(
        helper.make_graph(
            [helper.make_node(n.op, n.inputs, n.outputs, name=n.outputs[0] + "_node", **n.attrs) for n in nodes],
            "fastmlp",
            [helper.make_tensor_value_info("X", elem, ["N", n_inputs])],
            [helper.make_tensor_value_info("Y", elem, ["N", n_out])],
            initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
        ),
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="fastmlp",
        ir_version=_ONNX_IR_VERSION,
    )
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


def to_torch_layers(
    spec: Any,
    n_inputs: int,
    params: Any,
    state: Any,
    output_activation: str = "identity",
    dtype: Any = np.float32,
    *,
    leaky_relu_slope: float = 0.01,
) -> Any:
    """A network of layers as a ``torch.nn.Sequential`` in evaluation mode (``.train()`` switches
    it to training mode, which computes what fastmlp's training computes: batch statistics, the
    running statistics' update with the layers' momentum, dropout with torch's own masks).

    Modules: ``Linear`` (``weight`` is ``W.T``), the activations of :func:`to_torch`,
    ``Dropout(rate)``, ``BatchNorm1d(n, eps, momentum)`` with the running statistics of `state`,
    ``LayerNorm(n, eps)``, a residual block (``x + body(x)``, body a ``Sequential``) and an
    embedding module (``nn.Embedding`` per column), then the output activation; in `dtype`.
    """
    torch, nn = _import_torch()
    dt = _onnx_dtype(dtype)
    output_activation, leaky_relu_slope = _check_head(output_activation, leaky_relu_slope)
    tdtype = torch.float32 if dt == np.float32 else torch.float64
    found = _layer_arrays(spec, n_inputs, params, state, dt)
    shape_of = {s.path: s for s in found.shapes.layers}
    extra = _torch_modules()

    def tensor(a: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(a))

    def build(layers: list[Any], prefix: tuple[int, ...]) -> list[Any]:
        modules: list[Any] = []
        for i, layer in enumerate(layers):
            path = (*prefix, i)
            a, width = found.arrays[path], shape_of[path].n_in
            kind = layer.kind
            with torch.no_grad():
                if kind == "dense":
                    m = nn.Linear(width, layer.units, dtype=tdtype)
                    m.weight.copy_(tensor(a["W"].T))
                    m.bias.copy_(tensor(a["b"]))
                elif kind == "activation":
                    m = _torch_activation(layer.name, leaky_relu_slope)
                elif kind == "dropout":
                    m = nn.Dropout(layer.rate)
                elif kind in ("batch_norm", "layer_norm"):
                    if kind == "batch_norm":
                        m = nn.BatchNorm1d(width, eps=layer.eps, momentum=layer.momentum, dtype=tdtype)
                        m.running_mean.copy_(tensor(a["running_mean"]))
                        m.running_var.copy_(tensor(a["running_var"]))
                    else:
                        m = nn.LayerNorm(width, eps=layer.eps, dtype=tdtype)
                    m.weight.copy_(tensor(a["weight"]))
                    m.bias.copy_(tensor(a["bias"]))
                elif kind == "residual":
                    m = extra["Residual"](nn.Sequential(*build(list(layer.layers), path)))
                else:  # embedding
                    tables = []
                    for j, (card, dim) in enumerate(zip(layer.cardinalities, layer.dims)):
                        t = nn.Embedding(card, dim, dtype=tdtype)
                        t.weight.copy_(tensor(a[f"table{j}"]))
                        tables.append(t)
                    others = [c for c in range(width) if c not in set(layer.columns)]
                    m = extra["Embedding"](list(layer.columns), others, tables)
            if m is not None:
                modules.append(m)
        return modules

    modules = build(found.layers, ())
    out = _torch_activation(output_activation, leaky_relu_slope)
    if out is not None:
        modules.append(out)
    return nn.Sequential(*modules).eval()
