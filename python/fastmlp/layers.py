"""The layers a :class:`fastmlp.Network` is made of, and their JSON-able spec.

A network is a list of layers applied in order; its parameters live in one flat buffer and
its non-trainable state (batch norm's running statistics) in a second one, laid out layer
after layer in list order, depth-first through :class:`Residual`:

==================================  ===========================================  ===============================
layer                               parameters (in this order)                   state
==================================  ===========================================  ===============================
``Dense(units)``                    ``W`` (n_in × units, row-major), ``b``       —
``Activation(name)``                —                                            —
``Dropout(rate)``                   —                                            —
``BatchNorm(momentum, eps)``        ``weight`` γ (n), ``bias`` β (n)             ``running_mean``, ``running_var``
``LayerNorm(eps)``                  ``weight`` γ (n), ``bias`` β (n)             —
``Residual(layers)``                its layers', in order                        its layers'
``Embedding(columns, card., dims)`` ``table0``, ``table1``, … (card_j × dim_j)   —
==================================  ===========================================  ===============================

The math of each kind is :mod:`fastmlp.reference`'s (``layers_forward``); every layer is
immutable, compares by value and has a JSON form (:meth:`Layer.to_dict`, :func:`to_spec`,
:func:`from_spec`) from which it is rebuilt exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from ._names import HIDDEN_ACTIVATIONS, canonical_activation
from ._validation import check_activations, check_choice, check_dropout, check_float, check_int, check_layer_sizes

__all__ = [
    "Activation",
    "BatchNorm",
    "Dense",
    "Dropout",
    "Embedding",
    "Layer",
    "LayerNorm",
    "LayerShape",
    "Residual",
    "Shapes",
    "dense_shorthand",
    "from_spec",
    "shapes",
    "to_spec",
]

# The site of a Dropout layer (the key of its masks, dropout.hpp):
#   site = (Dense layers before it, depth-first) + SITE_STRIDE × (its index among the Dropouts since that Dense)
SITE_STRIDE = 65536


class Layer:
    """The base of every layer: immutable, compared by value, with a JSON form."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The layer's JSON form: ``{"kind": ..., argument: value, ...}`` (see :func:`to_spec`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Dense(Layer):
    """``Z = A W + b``: `units` outputs, ``W`` of shape ``(n_in, units)``."""

    units: int
    kind: ClassVar[str] = "dense"

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", check_int("units", self.units, minimum=1))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "units": self.units}


@dataclass(frozen=True)
class Activation(Layer):
    """``A = f(Z)`` element-wise, `name` any hidden activation (an alias becomes its own name:
    ``'sigmoid'`` is ``'logistic'``); formulas in :func:`fastmlp.reference.activation_forward`."""

    name: str
    kind: ClassVar[str] = "activation"

    def __post_init__(self) -> None:
        name = check_choice("name", self.name, HIDDEN_ACTIVATIONS)
        object.__setattr__(self, "name", canonical_activation(name))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name}


@dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout with rate `rate` in [0, 1) while training; identity in evaluation."""

    rate: float
    kind: ClassVar[str] = "dropout"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", check_float("rate", self.rate, minimum=0.0, maximum=1.0, open_max=True))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rate": self.rate}


@dataclass(frozen=True)
class BatchNorm(Layer):
    """PyTorch's ``BatchNorm1d``: ``y = γ (x − μ) / sqrt(σ² + eps) + β`` per column, with the
    batch's mean and biased variance while training and the running statistics in evaluation;
    each training step updates ``running ← (1 − momentum) running + momentum · batch statistic``
    (the variance's unbiased, ``σ² n / (n − 1)``)."""

    momentum: float = 0.1
    eps: float = 1e-5
    kind: ClassVar[str] = "batch_norm"

    def __post_init__(self) -> None:
        object.__setattr__(self, "momentum", check_float("momentum", self.momentum, minimum=0.0, maximum=1.0))
        object.__setattr__(self, "eps", check_float("eps", self.eps, minimum=0.0, open_min=True))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "momentum": self.momentum, "eps": self.eps}


@dataclass(frozen=True)
class LayerNorm(Layer):
    """PyTorch's ``LayerNorm(width)``: ``y = γ (x − μ) / sqrt(σ² + eps) + β`` with each row's
    mean and biased variance over its columns."""

    eps: float = 1e-5
    kind: ClassVar[str] = "layer_norm"

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", check_float("eps", self.eps, minimum=0.0, open_min=True))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "eps": self.eps}


def _layer_list(name: str, layers: Any) -> tuple[Layer, ...]:
    if isinstance(layers, (str, bytes, Mapping, Layer)) or not isinstance(layers, Iterable):
        raise TypeError(f"{name} must be a list of fastmlp.layers layers, got {type(layers).__name__}")
    out = tuple(layers)
    for i, layer in enumerate(out):
        if not isinstance(layer, Layer) or type(layer) is Layer:
            raise TypeError(f"{name}[{i}] must be a fastmlp.layers layer (Dense, ...), got {type(layer).__name__}")
    return out


@dataclass(frozen=True)
class Residual(Layer):
    """``y = x + f(x)``, `f` the `layers` applied in order (their output as wide as x)."""

    layers: tuple[Layer, ...]
    kind: ClassVar[str] = "residual"

    def __post_init__(self) -> None:
        layers = _layer_list("layers", self.layers)
        if not layers:
            raise ValueError("layers must hold at least one layer (Residual(layers): y = x + f(x))")
        for i, layer in enumerate(layers):
            if isinstance(layer, Embedding):
                raise ValueError(f"layers[{i}]: an Embedding can only be a network's first layer, not in a Residual")
        object.__setattr__(self, "layers", layers)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "layers": [layer.to_dict() for layer in self.layers]}


def _int_tuple(name: str, values: Any, minimum: int) -> tuple[int, ...]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of ints, got {type(values).__name__}")
    return tuple(check_int(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(values))


@dataclass(frozen=True)
class Embedding(Layer):
    """Learned vectors for integer-coded categorical input columns (the network's first layer only).

    Column ``columns[j]`` of the input holds codes (integers, as floats) in
    ``[0, cardinalities[j])``; the output is the input's other columns, in order, followed by
    ``table_j[code_j]`` (``dims[j]`` values) for each j in order.
    """

    columns: tuple[int, ...]
    cardinalities: tuple[int, ...]
    dims: tuple[int, ...]
    kind: ClassVar[str] = "embedding"

    def __post_init__(self) -> None:
        columns = _int_tuple("columns", self.columns, 0)
        cardinalities = _int_tuple("cardinalities", self.cardinalities, 1)
        dims = _int_tuple("dims", self.dims, 1)
        if not columns:
            raise ValueError("columns must name at least one input column")
        if len(cardinalities) != len(columns) or len(dims) != len(columns):
            raise ValueError(
                f"columns, cardinalities and dims must have one entry per embedded column; got "
                f"{len(columns)} columns, {len(cardinalities)} cardinalities and {len(dims)} dims"
            )
        seen: set[int] = set()
        for i, c in enumerate(columns):
            if c in seen:
                raise ValueError(f"columns[{i}]: column {c} is given twice")
            seen.add(c)
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "cardinalities", cardinalities)
        object.__setattr__(self, "dims", dims)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "columns": list(self.columns),
            "cardinalities": list(self.cardinalities),
            "dims": list(self.dims),
        }


_KINDS: dict[str, type[Layer]] = {
    cls.kind: cls for cls in (Dense, Activation, Dropout, BatchNorm, LayerNorm, Residual, Embedding)
}
# each kind's arguments: (name, required)
_ARGUMENTS: dict[str, tuple[tuple[str, bool], ...]] = {
    "dense": (("units", True),),
    "activation": (("name", True),),
    "dropout": (("rate", True),),
    "batch_norm": (("momentum", False), ("eps", False)),
    "layer_norm": (("eps", False),),
    "residual": (("layers", True),),
    "embedding": (("columns", True), ("cardinalities", True), ("dims", True)),
}


def to_spec(layers: Any) -> list[dict[str, Any]]:
    """The layers' JSON form: one dict per layer (:meth:`Layer.to_dict`), e.g.
    ``[{"kind": "dense", "units": 64}, {"kind": "activation", "name": "relu"}]``;
    ``from_spec(to_spec(layers)) == list(layers)``."""
    return [layer.to_dict() for layer in _layer_list("layers", layers)]


def _from_dict(name: str, d: Any) -> Layer:
    if isinstance(d, Layer):
        return d
    if not isinstance(d, Mapping):
        raise TypeError(f"{name} must be a dict such as {{'kind': 'dense', 'units': 8}}, got {type(d).__name__}")
    kind = d.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{name}['kind'] must be one of {list(_KINDS)}, got {kind!r}")
    arguments = _ARGUMENTS[kind]
    unknown = sorted(str(k) for k in d if k != "kind" and k not in dict(arguments))
    if unknown:
        raise ValueError(f"{name}: a {kind!r} layer takes {[a for a, _ in arguments]}; got unknown keys {unknown}")
    missing = [a for a, required in arguments if required and a not in d]
    if missing:
        raise ValueError(f"{name}: a {kind!r} layer needs {missing}")
    kwargs = {a: d[a] for a, _ in arguments if a in d}
    if kind == "residual":
        inner = kwargs["layers"]
        if isinstance(inner, (str, bytes, Mapping)) or not isinstance(inner, Sequence):
            raise TypeError(f"{name}['layers'] must be a list of layer dicts, got {type(inner).__name__}")
        kwargs["layers"] = [_from_dict(f"{name}['layers'][{i}]", x) for i, x in enumerate(inner)]
    try:
        return _KINDS[kind](**kwargs)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


def from_spec(spec: Any) -> list[Layer]:
    """The layers of a JSON form made by :func:`to_spec` (a list of dicts; keys with a default may
    be left out). Every value is checked as the layer's constructor checks it; the error names
    the entry (``spec[2]['units']: ...``)."""
    if isinstance(spec, (str, bytes, Mapping)) or not isinstance(spec, Sequence):
        raise TypeError(f"spec must be a list of layer dicts, got {type(spec).__name__}")
    return [_from_dict(f"spec[{i}]", d) for i, d in enumerate(spec)]


class LayerShape(NamedTuple):
    """One layer of :func:`shapes`, in depth-first order (a Residual before its layers)."""

    path: tuple[int, ...]  # its position: (i,) at the top level, (i, j) for layer j of Residual i, ...
    kind: str
    n_in: int  # the width of its input
    n_out: int  # the width of its output
    params: tuple[tuple[str, tuple[int, ...]], ...]  # (name, shape) of each parameter, in buffer order
    state: tuple[tuple[str, tuple[int, ...]], ...]  # (name, shape) of each state array, in buffer order
    param_offset: int  # where its first parameter starts in the flat parameter buffer
    state_offset: int  # where its first state array starts in the flat state buffer
    penalized: tuple[str, ...]  # the parameters the L2/L1 penalties take (Dense W, embedding tables)
    site: int | None  # a Dropout's mask site; None for the other kinds


class Shapes(NamedTuple):
    """What :func:`shapes` finds: every layer's widths and arrays, and the totals."""

    layers: tuple[LayerShape, ...]
    n_inputs: int
    n_outputs: int
    n_params: int
    n_state: int


_Arrays = Sequence[tuple[str, tuple[int, ...]]]  # (name, shape) of each array


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def shapes(spec: Any, n_inputs: int) -> Shapes:
    """Each layer's input and output width, parameter and state arrays (names, shapes, offsets in
    the flat buffers) and the totals, for an input of `n_inputs` columns.

    Raises ``ValueError`` for a network without a Dense layer, a Residual whose layers change the
    width, and an Embedding that is not the first layer or whose columns lie outside the input.
    """
    n_inputs = check_int("n_inputs", n_inputs, minimum=1)
    layers = from_spec(spec)  # either form: Layers or their dicts
    out: list[LayerShape] = []
    offsets = [0, 0]  # params, state
    counts = {"dense": 0, "dropouts_since_dense": 0}

    def add(
        path: tuple[int, ...],
        kind: str,
        n_in: int,
        n_out: int,
        params: _Arrays = (),
        state: _Arrays = (),
        penalized: Sequence[str] = (),
        site: int | None = None,
    ) -> None:
        out.append(
            LayerShape(
                path, kind, n_in, n_out, tuple(params), tuple(state), offsets[0], offsets[1], tuple(penalized), site
            )
        )
        offsets[0] += sum(_size(s) for _, s in params)
        offsets[1] += sum(_size(s) for _, s in state)

    def walk(layers: Sequence[Layer], width: int, prefix: tuple[int, ...]) -> int:
        for i, layer in enumerate(layers):
            path = (*prefix, i)
            where = "layers" + "".join(f"[{k}]" for k in path)
            if isinstance(layer, Dense):
                add(
                    path,
                    layer.kind,
                    width,
                    layer.units,
                    [("W", (width, layer.units)), ("b", (layer.units,))],
                    (),
                    ["W"],
                )
                counts["dense"] += 1
                counts["dropouts_since_dense"] = 0
                width = layer.units
            elif isinstance(layer, Activation):
                add(path, layer.kind, width, width)
            elif isinstance(layer, Dropout):
                site = counts["dense"] + SITE_STRIDE * counts["dropouts_since_dense"]
                counts["dropouts_since_dense"] += 1
                add(path, layer.kind, width, width, site=site)
            elif isinstance(layer, (BatchNorm, LayerNorm)):
                affine = [("weight", (width,)), ("bias", (width,))]
                running = (
                    [("running_mean", (width,)), ("running_var", (width,))] if isinstance(layer, BatchNorm) else []
                )
                add(path, layer.kind, width, width, affine, running)
            elif isinstance(layer, Residual):
                add(path, layer.kind, width, width)
                inner = walk(layer.layers, width, path)
                if inner != width:
                    raise ValueError(
                        f"{where}: a Residual's layers must keep the width of its input ({width}), "
                        f"but they output {inner} (y = x + f(x) needs f(x) as wide as x)"
                    )
            elif isinstance(layer, Embedding):
                if path != (0,):
                    raise ValueError(f"{where}: an Embedding can only be the network's first layer")
                for j, c in enumerate(layer.columns):
                    if c >= width:
                        raise ValueError(
                            f"{where}: Embedding columns[{j}] = {c} is outside the input's {width} columns"
                        )
                tables = [(f"table{j}", (k, d)) for j, (k, d) in enumerate(zip(layer.cardinalities, layer.dims))]
                n_out = width - len(layer.columns) + sum(layer.dims)
                add(path, layer.kind, width, n_out, tables, (), [name for name, _ in tables])
                width = n_out
            else:  # pragma: no cover - from_spec makes only the kinds above
                raise TypeError(f"{where}: unknown layer {layer!r}")
        return width

    n_out = walk(layers, n_inputs, ())
    if counts["dense"] == 0:
        raise ValueError("layers must hold at least one Dense layer")
    return Shapes(tuple(out), n_inputs, n_out, offsets[0], offsets[1])


def dense_shorthand(layer_sizes: Any, activation: Any = "relu", dropout: Any = 0.0) -> list[Layer]:
    """The layers that ``Network(layer_sizes, activation, dropout=dropout)`` means:
    ``[Dense(h1), Activation(f1), (Dropout(p1)), Dense(h2), ..., Dense(n_outputs)]``.

    `layer_sizes` is ``[n_inputs, hidden..., n_outputs]``; `activation` one hidden activation or
    one per hidden layer; `dropout` a number (every hidden layer's output) or
    ``[p_inputs, p_hidden_1, ...]``. A Dropout is there only where its rate is above 0; the inputs'
    rate ``p_inputs`` is no layer (it stays the network's input perturbation, with input noise).
    """
    sizes = check_layer_sizes(layer_sizes)
    n_hidden = len(sizes) - 2
    names = check_activations("activation", activation, n_hidden, HIDDEN_ACTIVATIONS)[:n_hidden]
    rates = check_dropout(dropout, len(sizes) - 1)
    layers: list[Layer] = []
    for l, units in enumerate(sizes[1:]):
        layers.append(Dense(units))
        if l < n_hidden:
            layers.append(Activation(names[l]))
            if rates[l + 1] > 0:
                layers.append(Dropout(rates[l + 1]))
    return layers
