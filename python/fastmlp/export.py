"""A trained model, handed to the tools that serve models: ONNX and PyTorch.

Both take a :class:`fastmlp.Network` or a fitted :class:`fastmlp.MLPClassifier`
/ :class:`fastmlp.MLPRegressor` and write out the same math: per layer
``Z = A W + b`` (an ONNX ``Gemm``, a ``torch.nn.Linear``) and its activation.
A Network's output is :meth:`Network.forward`'s; a classifier's is its
``predict_proba`` (a binary classifier's one logistic output becomes the two
columns ``[1 - p, p]``); a regressor's is ``predict`` as a 2-D
``(n_samples, n_outputs)`` array.

Needs the extras ``fastmlp[onnx]`` (onnx; onnxruntime to run the file) or
``fastmlp[torch]``; neither is imported before these functions are called.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from ._names import canonical_activation

__all__ = ["to_onnx", "to_torch"]

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


# Each activation's ONNX operator (None: identity, no node). An activation of the core without an
# entry here (or in to_torch's table) cannot be exported: _mapped says so with a ValueError.
_ONNX_OPS: dict[str, str | None] = {
    "identity": None,
    "relu": "Relu",
    "tanh": "Tanh",
    "logistic": "Sigmoid",
    "leaky_relu": "LeakyRelu",
    "softmax": "Softmax",
    "exp": "Exp",
}


def _mapped(table: dict[str, Any], activation: str, what: str) -> Any:
    if activation not in table:
        raise ValueError(
            f"activation {activation!r} has no {what} in fastmlp.export yet; this model cannot be exported"
        )
    return table[activation]


def to_onnx(model: Any, path: str | os.PathLike[str] | None = None) -> Any:
    """The model as an ONNX graph; written to `path` when given.

    Input ``X`` of shape ``(N, n_features)``, output ``Y`` of shape ``(N, n_outputs)``
    (a binary classifier: ``(N, 2)``), in the model's dtype (float32 or float64).
    Operators: ``Gemm`` per layer, then ``Relu``, ``Tanh``, ``Sigmoid``,
    ``LeakyRelu(alpha=leaky_relu_slope)``, ``Softmax(axis=1)`` or ``Exp``
    (identity: none); opset :data:`ONNX_OPSET`.

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker``; run it with ``onnxruntime.InferenceSession(path)``.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError("to_onnx needs the onnx package: pip install 'fastmlp[onnx]'") from None
    layers = _layers(model)
    elem = TensorProto.FLOAT if layers.dtype == np.float32 else TensorProto.DOUBLE
    nodes, inits = [], []
    x = "X"
    for i, (w, b, act) in enumerate(zip(layers.weights, layers.biases, layers.activations)):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"b{i}"], [f"Z{i}"], name=f"dense{i}"))
        x = f"Z{i}"
        op = _mapped(_ONNX_OPS, act, "ONNX operator")
        if op is not None:
            attrs = {"alpha": layers.leaky_relu_slope} if op == "LeakyRelu" else {"axis": 1} if op == "Softmax" else {}
            nodes.append(helper.make_node(op, [x], [f"A{i}"], name=f"{act}{i}", **attrs))
            x = f"A{i}"
    if layers.binary_proba:
        inits.append(numpy_helper.from_array(np.ones((), dtype=layers.dtype), "one"))
        nodes += [
            helper.make_node("Sub", ["one", x], ["not_p"], name="one_minus_p"),
            helper.make_node("Concat", ["not_p", x], ["proba"], name="proba", axis=1),
        ]
        x = "proba"
    nodes.append(helper.make_node("Identity", [x], ["Y"], name="output"))
    n_out = 2 if layers.binary_proba else layers.weights[-1].shape[1]
    n_in = layers.weights[0].shape[0]
    graph = helper.make_graph(
        nodes,
        "fastmlp",
        [helper.make_tensor_value_info("X", elem, ["N", n_in])],
        [helper.make_tensor_value_info("Y", elem, ["N", n_out])],
        initializer=inits,
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="fastmlp", ir_version=_ONNX_IR_VERSION
    )
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


def to_torch(model: Any) -> Any:
    """The model as a ``torch.nn.Sequential`` of ``Linear`` layers and activations, with the
    same weights (``Linear.weight`` is ``W.T``) and dtype, in evaluation mode."""
    try:
        import torch
        from torch import nn
    except ImportError:
        raise ImportError("to_torch needs PyTorch: pip install 'fastmlp[torch]'") from None

    class Exp(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.exp(z)

    class BinaryProba(nn.Module):
        """[1 - p, p] from one logistic output: predict_proba's columns."""

        def forward(self, p: torch.Tensor) -> torch.Tensor:
            return torch.cat([1 - p, p], dim=1)

    layers = _layers(model)
    dtype = torch.float32 if layers.dtype == np.float32 else torch.float64
    modules: list[Any] = []
    for w, b, act in zip(layers.weights, layers.biases, layers.activations):
        linear = nn.Linear(w.shape[0], w.shape[1], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        modules.append(linear)
        activation = _mapped(
            {
                "identity": None,
                "relu": nn.ReLU,
                "tanh": nn.Tanh,
                "logistic": nn.Sigmoid,
                "leaky_relu": lambda: nn.LeakyReLU(layers.leaky_relu_slope),
                "softmax": lambda: nn.Softmax(dim=1),
                "exp": Exp,
            },
            act,
            "torch.nn module",
        )
        if activation is not None:
            modules.append(activation())
    if layers.binary_proba:
        modules.append(BinaryProba())
    return nn.Sequential(*modules).eval()
