"""The NumPy oracle: the exact math of fastmlp, written plainly.

Every C++ kernel is tested against the functions in this module, and the
module doubles as the specification of the math. It needs only NumPy, and it
works in the dtype of its inputs (``float32`` stays ``float32``).

Notation
--------
A network has layers ``l = 0 .. L-1``. Layer ``l`` maps the batch ``A_{l-1}``
of shape ``(n, n_in)`` (``A_{-1} = X``) to

    Z_l = A_{l-1} W_l + b_l,        A_l = f_l(Z_l),

with ``W_l`` of shape ``(n_in, n_out)`` and ``b_l`` of shape ``(n_out,)`` (the
layout of scikit-learn's ``coefs_`` and ``intercepts_``). Hidden layers use
the ``activation``; the last layer uses the ``output_activation``. Losses are
means over the ``n`` rows of a batch, with scikit-learn's definitions.

Parameters are ordered ``[W_0, b_0, W_1, b_1, ...]`` wherever a flat list of
them is needed (optimizers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "LayersForward",
    "RMSprop",
    "activation_backward",
    "activation_forward",
    "apply_dropout",
    "bf16_round",
    "forward",
    "glorot_bound",
    "he_bound",
    "layers_backward",
    "layers_forward",
    "layers_loss_and_grad",
    "layers_max_norm",
    "layers_objective",
    "layers_running_stats",
    "layers_train_epoch",
    "loss_and_grad",
    "matmul",
    "max_norm",
    "objective",
    "output_loss_and_grad",
    "predict",
    "to_targets",
    "train_epoch",
]

LOSSES = ("squared_error", "log_loss", "binary_log_loss", "poisson", "huber", "absolute_error", "quantile")
# The one parameter a loss reads: (name, default, check). A loss is given as its name (the default)
# or as a mapping {"name": ..., parameter: value}.
_LOSS_PARAMS: dict[str, tuple[str, float, Callable[[float], bool], str]] = {
    "huber": ("delta", 1.0, lambda v: v > 0, "> 0"),
    "quantile": ("alpha", 0.5, lambda v: 0 < v < 1, "in (0, 1)"),
    "log_loss": ("label_smoothing", 0.0, lambda v: 0 <= v < 1, "in [0, 1)"),
    "binary_log_loss": ("label_smoothing", 0.0, lambda v: 0 <= v < 1, "in [0, 1)"),
}
# ACTIVATIONS (every name, aliases included) and HIDDEN_ACTIVATIONS are made from
# _ACTIVATION_FUNCTIONS below. These lists are the reference's own (it imports nothing
# of the compiled core); tests/test_reference.py checks they equal the core's.


def _as_float_array(x) -> np.ndarray:
    """Return ``x`` as an array, keeping float32/float64 and making anything else float64."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return x


def bf16_round(x) -> np.ndarray:
    """``x`` (float32) rounded to bfloat16, returned as float32: round to nearest,
    ties to even, on the upper 16 bits of the float32 pattern; a denormal becomes a
    zero of its sign and a NaN stays a (quiet) NaN: the rule of the CPU's
    ``vcvtneps2bf16``, which fastmlp's kernels use."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"bf16_round takes float32 values, got {x.dtype}")
    u = np.ascontiguousarray(x).view(np.uint32)
    wide = u.astype(np.uint64)
    r = (((wide + 0x7FFF + ((wide >> 16) & 1)) >> 16) << 16).astype(np.uint32)
    r = np.where((u & 0x7F800000) == 0, u & 0x80000000, r)  # zero or denormal
    r = np.where((u & 0x7FFFFFFF) > 0x7F800000, (u | 0x00400000) & 0xFFFF0000, r)  # NaN
    return r.astype(np.uint32).view(np.float32).reshape(x.shape)


PRECISIONS = ("fp32", "fp64", "bf16")


def matmul(a: np.ndarray, b: np.ndarray, precision: str | None = None) -> np.ndarray:
    """``a @ b`` in `precision`: None (or the dtype's own, ``"fp32"``/``"fp64"``)
    as NumPy computes it; ``"bf16"`` (float32 only) the product of the operands
    rounded by :func:`bf16_round`, accumulated in float32 — every matrix product
    of a ``precision="bf16"`` network (forward, and both products of backward)."""
    if precision is None or precision in ("fp32", "fp64"):
        return a @ b
    if precision != "bf16":
        raise ValueError(f"precision must be one of {list(PRECISIONS)} or None, got {precision!r}")
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"precision 'bf16' takes float32 arrays, got {a.dtype} and {b.dtype}")
    return bf16_round(a) @ bf16_round(b)


def _check_name(kind: str, name: str, valid: Sequence[str]) -> None:
    if name not in valid:
        raise ValueError(f"{kind} must be one of {', '.join(map(repr, valid))}; got {name!r}")


def _loss_spec(loss) -> tuple[str, float]:
    """(name, its parameter's value; 0 when it takes none) of a loss name or ``{"name": ..., parameter: value}``."""
    if isinstance(loss, Mapping):
        given = dict(loss)
        name = given.pop("name", None)
    else:
        name, given = loss, {}
    _check_name("loss", name, LOSSES)
    if name not in _LOSS_PARAMS:
        if given:
            raise ValueError(f"loss {name!r} takes no parameters; got {sorted(given)}")
        return name, 0.0
    param, default, ok, bounds = _LOSS_PARAMS[name]
    if set(given) - {param}:
        raise ValueError(f"loss {name!r} takes only {param!r}; got {sorted(given)}")
    value = float(given.get(param, default))
    if not ok(value):
        raise ValueError(f"loss {name!r}: {param} must be {bounds}; got {value}")
    return name, value


# ---------------------------------------------------------------------------
# Activations: each forward sits beside its derivative.
#
# A backward function receives the upstream gradient dA = dL/dA, the
# pre-activation z and the activation a = f(z), and returns dZ = dL/dZ.
# ---------------------------------------------------------------------------


def _identity(z, slope):
    return z.copy()


def _identity_backward(dA, z, a, slope):
    return dA


def _logistic(z, slope):
    # With e = exp(-|z|) <= 1 nothing overflows:
    #   z >= 0: 1 / (1 + exp(-z)) = 1 / (1 + e)
    #   z <  0: exp(z) / (1 + exp(z)) = e / (1 + e)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _logistic_backward(dA, z, a, slope):
    return dA * a * (1 - a)


def _tanh(z, slope):
    return np.tanh(z)


def _tanh_backward(dA, z, a, slope):
    return dA * (1 - a * a)


def _relu(z, slope):
    return np.maximum(z, 0)


def _relu_backward(dA, z, a, slope):
    # The slope depends on z, not on a: a == 0 does not tell z < 0 from z == 0.
    return np.where(z > 0, dA, 0)


def _leaky_relu(z, slope):
    return np.where(z > 0, z, z.dtype.type(slope) * z)


def _leaky_relu_backward(dA, z, a, slope):
    return dA * np.where(z > 0, 1, z.dtype.type(slope))


def _softmax(z, slope):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _softmax_backward(dA, z, a, slope):
    # Row-wise Jacobian-vector product: J = diag(a) - a a^T, so
    # dZ = J dA = a * (dA - <dA, a>).
    return a * (dA - np.sum(dA * a, axis=-1, keepdims=True))


def _exp(z, slope):
    return np.exp(z)


def _exp_backward(dA, z, a, slope):
    return dA * a


# The smooth activations: each derivative needs z (the output alone does not determine it).
_SELU_LAMBDA = 1.0507009873554804934193349852946  # Klambauer et al. 2017 (PyTorch's and ONNX's values)
_SELU_ALPHA = 1.6732632423543772848170429916717


def _erf(z: np.ndarray) -> np.ndarray:
    """erf element-wise (NumPy has none): math.erf in float64, rounded to z's dtype."""
    return np.vectorize(math.erf, otypes=[np.float64])(z).astype(z.dtype, copy=False)


def _gelu(z, slope):
    # z Phi(z), Phi the standard normal CDF (1 + erf(z / sqrt(2))) / 2: the exact form, not tanh's approximation
    return z * (1 + _erf(z * z.dtype.type(math.sqrt(0.5)))) / 2


def _gelu_backward(dA, z, a, slope):
    # Phi(z) + z phi(z),  phi(z) = exp(-z^2 / 2) / sqrt(2 pi)
    pdf = np.exp(-(z * z) / 2) * z.dtype.type(1 / math.sqrt(2 * math.pi))
    return dA * ((1 + _erf(z * z.dtype.type(math.sqrt(0.5)))) / 2 + z * pdf)


def _silu(z, slope):
    return z * _logistic(z, slope)


def _silu_backward(dA, z, a, slope):
    s = _logistic(z, slope)
    return dA * s * (1 + z * (1 - s))


def _selu(z, slope):
    t = z.dtype.type
    return np.where(z > 0, t(_SELU_LAMBDA) * z, t(_SELU_LAMBDA * _SELU_ALPHA) * np.expm1(np.minimum(z, 0)))


def _selu_backward(dA, z, a, slope):
    # the kink at 0 takes the z <= 0 side (PyTorch's)
    t = z.dtype.type
    return dA * np.where(z > 0, t(_SELU_LAMBDA), t(_SELU_LAMBDA * _SELU_ALPHA) * np.exp(np.minimum(z, 0)))


def _softplus(z, slope):
    # log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)): never overflows
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def _softplus_backward(dA, z, a, slope):
    return dA * _logistic(z, slope)


def _mish(z, slope):
    return z * np.tanh(_softplus(z, slope))


def _mish_backward(dA, z, a, slope):
    # t + z (1 - t^2) sigmoid(z),  t = tanh(softplus(z))
    t = np.tanh(_softplus(z, slope))
    return dA * (t + z * (1 - t * t) * _logistic(z, slope))


def _elu(z, slope):
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


def _elu_backward(dA, z, a, slope):
    return dA * np.where(z > 0, 1, np.exp(np.minimum(z, 0))).astype(z.dtype, copy=False)


_ACTIVATION_FUNCTIONS: dict[str, tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]] = {
    "identity": (_identity, _identity_backward),
    "logistic": (_logistic, _logistic_backward),
    "sigmoid": (_logistic, _logistic_backward),
    "tanh": (_tanh, _tanh_backward),
    "relu": (_relu, _relu_backward),
    "leaky_relu": (_leaky_relu, _leaky_relu_backward),
    "gelu": (_gelu, _gelu_backward),
    "silu": (_silu, _silu_backward),
    "swish": (_silu, _silu_backward),
    "selu": (_selu, _selu_backward),
    "mish": (_mish, _mish_backward),
    "softplus": (_softplus, _softplus_backward),
    "elu": (_elu, _elu_backward),
    "softmax": (_softmax, _softmax_backward),
    "exp": (_exp, _exp_backward),
}
ACTIVATIONS = tuple(_ACTIVATION_FUNCTIONS)
_OUTPUT_ONLY = ("softmax", "exp")  # not allowed in hidden layers
HIDDEN_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a not in _OUTPUT_ONLY)


def activation_forward(name: str, z, slope: float = 0.01) -> np.ndarray:
    """Apply an activation function element-wise (softmax: row-wise).

    ====================  ==============================================
    name                  a = f(z)
    ====================  ==============================================
    identity              z
    logistic (sigmoid)    1 / (1 + exp(-z))
    tanh                  tanh(z)
    relu                  max(z, 0)
    leaky_relu            z if z > 0 else slope * z
    softmax               exp(z_j - max_i z_i) / sum_k exp(z_k - max_i z_i)
    exp                   exp(z)   (the output of Poisson regression)
    gelu                  z Phi(z) = z (1 + erf(z / sqrt(2))) / 2   (exact)
    silu (swish)          z sigmoid(z)
    selu                  lambda z if z > 0 else lambda alpha (exp(z) - 1),
                          lambda = 1.0507009873554805, alpha = 1.6732632423543772
    mish                  z tanh(softplus(z))
    softplus              log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|))
    elu                   z if z > 0 else exp(z) - 1   (alpha = 1)
    ====================  ==============================================

    The logistic function is evaluated as ``1 / (1 + e)`` for ``z >= 0`` and
    ``e / (1 + e)`` for ``z < 0`` with ``e = exp(-|z|)``, so it never
    overflows; for very negative ``z`` it underflows to the correctly rounded
    value 0. Softmax subtracts each row's maximum before exponentiating.

    Parameters
    ----------
    name : str
        One of :data:`ACTIVATIONS`.
    z : array_like
        Pre-activations. Softmax works along the last axis (rows of a 2-D
        batch).
    slope : float, default=0.01
        Slope of ``leaky_relu`` for ``z <= 0``; ignored by the others.

    Returns
    -------
    a : ndarray
        Same shape and floating dtype as ``z``.
    """
    _check_name("activation", name, ACTIVATIONS)
    f, _ = _ACTIVATION_FUNCTIONS[name]
    return f(_as_float_array(z), slope)


def activation_backward(name: str, dA, z, a, slope: float = 0.01) -> np.ndarray:
    """Backpropagate through an activation: ``dZ = dL/dZ`` from ``dA = dL/dA``.

    ====================  ==============================================
    name                  dZ
    ====================  ==============================================
    identity              dA
    logistic (sigmoid)    dA * a * (1 - a)
    tanh                  dA * (1 - a**2)
    relu                  dA * (z > 0)
    leaky_relu            dA * (1 if z > 0 else slope)
    softmax               a * (dA - sum_j dA_j a_j)   (row-wise)
    exp                   dA * a
    gelu                  dA * (Phi(z) + z exp(-z**2 / 2) / sqrt(2 pi))
    silu (swish)          dA * s (1 + z (1 - s)),  s = sigmoid(z)
    selu                  dA * (lambda if z > 0 else lambda alpha exp(z))
    mish                  dA * (t + z (1 - t**2) sigmoid(z)),  t = tanh(softplus(z))
    softplus              dA * sigmoid(z)
    elu                   dA * (1 if z > 0 else exp(z))
    ====================  ==============================================

    For softmax this is the product of the row's Jacobian
    ``diag(a) - a a^T`` with ``dA``. The derivative of relu, leaky_relu, selu
    and elu at ``z = 0`` is taken as that of the ``z < 0`` side.

    Parameters
    ----------
    name : str
        One of :data:`ACTIVATIONS`.
    dA : array_like
        Gradient of the loss with respect to the activations ``a``.
    z : array_like
        The pre-activations that produced ``a``.
    a : array_like
        ``activation_forward(name, z, slope)``.
    slope : float, default=0.01
        Slope of ``leaky_relu`` for ``z <= 0``; ignored by the others.

    Returns
    -------
    dZ : ndarray
        Same shape as ``z``.
    """
    _check_name("activation", name, ACTIVATIONS)
    _, f_backward = _ACTIVATION_FUNCTIONS[name]
    return f_backward(_as_float_array(dA), _as_float_array(z), _as_float_array(a), slope)


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def _logsumexp(z: np.ndarray) -> np.ndarray:
    """``log(sum(exp(z), axis=1, keepdims=True))`` without overflow."""
    m = np.max(z, axis=1, keepdims=True)
    return m + np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))


def output_loss_and_grad(
    loss: str | Mapping[str, Any],
    output_activation: str,
    z,
    y,
    slope: float = 0.01,
    sample_weight=None,
    grad_scale: float = 1.0,
) -> tuple[float, np.ndarray]:
    """Weighted mean loss of a batch and its gradient with respect to the output pre-activations.

    With ``n`` rows, ``k`` outputs, ``a = f(z)`` the output activation, ``y``
    the targets, sample weights ``w`` (all 1 by default) and ``W = sum(w)``:

    ``squared_error`` (any output activation)
        L = sum_i w_i sum_j (a - y)_ij**2 / (2 W k),  dL/da_i = w_i (a_i - y_i) / (W k),
        dZ = activation_backward(output_activation, dL/da, z, a).
    ``log_loss`` (softmax output only)
        log p = z - logsumexp(z, axis=1),  L = -sum_i w_i y_i . log p_i / W,
        dZ_i = w_i (softmax(z_i) - y_i) / W   (for rows of y that sum to 1, e.g. one-hot).
    ``binary_log_loss`` (logistic output only)
        L = sum_i w_i sum_j (log(1 + exp(z)) - y z)_ij / W,  dZ_i = w_i (sigmoid(z_i) - y_i) / W,
        which is ``-sum(y log p + (1 - y) log(1 - p))`` for ``p = sigmoid(z)``,
        summed over the ``k`` independent outputs.
    ``poisson`` (exp output only; half the Poisson deviance, scikit-learn's)
        L = sum_i w_i sum_j (exp(z) - y z + xlogy(y, y) - y)_ij / W,  dZ_i = w_i (exp(z_i) - y_i) / W.
    ``huber`` (any output activation; parameter ``delta`` > 0, default 1: PyTorch's HuberLoss)
        with d = a - y:  h(d) = d**2 / 2 if |d| <= delta else delta (|d| - delta / 2),
        L = sum_i w_i sum_j h(d)_ij / (W k),  dL/da_i = w_i clip(d_i, -delta, delta) / (W k).
    ``absolute_error`` (any output activation)
        L = sum_i w_i sum_j |d|_ij / (W k),  dL/da_i = w_i sign(d_i) / (W k)   (0 at d = 0).
    ``quantile`` (any output activation; parameter ``alpha`` in (0, 1), default 0.5: the pinball loss)
        rho(r) = alpha r if r >= 0 else (alpha - 1) r,  L = sum_i w_i sum_j rho(y - a)_ij / (W k),
        dL/da_i = w_i ((1 - alpha) [d_i > 0] - alpha [d_i < 0]) / (W k).
    For the last three, dZ = activation_backward(output_activation, dL/da, z, a) as for squared_error.

    Label smoothing ``eps`` (``log_loss`` and ``binary_log_loss``, parameter ``label_smoothing`` in
    [0, 1), default 0) replaces y by ``(1 - eps) y + eps / K`` in the formulas above, K the number
    of classes: k for ``log_loss``, 2 for each output of ``binary_log_loss`` (PyTorch's convention).

    ``grad_scale`` multiplies dZ only: scikit-learn trains multi-output
    ``squared_error`` on ``k`` times this gradient (the sum over outputs)
    while it reports the mean.

    The cross-entropies are computed from the logits ``z`` (log-sum-exp,
    ``logaddexp``), so they stay finite and exact for any finite ``z``.
    scikit-learn computes them from probabilities clipped to the machine
    epsilon; both agree unless a probability is within epsilon of 0 or 1.

    Parameters
    ----------
    loss : str or mapping
        One of :data:`LOSSES`, or ``{"name": name, parameter: value}`` (``delta``,
        ``alpha`` or ``label_smoothing``, as above).
    output_activation : str
        The output layer's activation, one of :data:`ACTIVATIONS`.
    z : array_like of shape (n, k)
        Output-layer pre-activations (logits).
    y : array_like of shape (n, k)
        Targets: real values, one-hot rows (``log_loss``) or 0/1 indicators
        (``binary_log_loss``). Converted to the dtype of ``z``.
    slope : float, default=0.01
        Slope of a ``leaky_relu`` output for ``z <= 0``.
    sample_weight : array_like of shape (n,), default=None
    grad_scale : float, default=1.0

    Returns
    -------
    value : float
        The weighted mean loss.
    dZ : ndarray of shape (n, k)
        ``dL/dz`` (times ``grad_scale``), in the dtype of ``z``.
    """
    loss, param = _loss_spec(loss)
    _check_name("output_activation", output_activation, ACTIVATIONS)
    z = _as_float_array(z)
    y = np.asarray(y, dtype=z.dtype)
    if z.ndim != 2 or y.shape != z.shape:
        raise ValueError(f"z and y must be 2-D arrays of the same shape (n, k); got z {z.shape} and y {y.shape}")
    n, k = z.shape
    w = np.ones(n, dtype=z.dtype) if sample_weight is None else np.asarray(sample_weight, dtype=z.dtype)
    W = float(np.sum(w, dtype=np.float64))
    wc = w[:, None]

    t = z.dtype.type
    if loss in ("log_loss", "binary_log_loss") and param:  # label smoothing over K classes
        n_classes = k if loss == "log_loss" else 2
        y = t(1 - param) * y + t(param / n_classes)
    if loss == "squared_error":
        a = activation_forward(output_activation, z, slope)
        diff = a - y
        value = np.sum(wc * diff * diff) / (2 * W * k)
        dZ = activation_backward(output_activation, wc * diff * z.dtype.type(grad_scale / (W * k)), z, a, slope)
    elif loss in ("huber", "absolute_error", "quantile"):
        a = activation_forward(output_activation, z, slope)
        d = a - y
        d64 = d.astype(np.float64)
        if loss == "huber":
            small = np.abs(d64) <= param
            ell = np.where(small, d64 * d64 / 2, param * (np.abs(d64) - param / 2))
            dA = np.clip(d, -t(param), t(param))
        elif loss == "absolute_error":
            ell = np.abs(d64)
            dA = np.sign(d)
        else:
            ell = np.where(d64 < 0, -param * d64, (1 - param) * d64)
            dA = np.where(d < 0, t(-param), np.where(d > 0, t(1 - param), t(0)))
        value = np.sum(w.astype(np.float64)[:, None] * ell) / (W * k)
        dZ = activation_backward(output_activation, wc * dA.astype(z.dtype) * t(grad_scale / (W * k)), z, a, slope)
    elif loss == "log_loss":
        if output_activation != "softmax":
            raise ValueError(f"loss 'log_loss' needs output_activation 'softmax'; got {output_activation!r}")
        log_p = z - _logsumexp(z)
        value = -np.sum(wc * y * log_p) / W
        dZ = wc * (np.exp(log_p) - y) * z.dtype.type(grad_scale / W)
    elif loss == "binary_log_loss":
        if output_activation not in ("logistic", "sigmoid"):
            raise ValueError(f"loss 'binary_log_loss' needs output_activation 'logistic'; got {output_activation!r}")
        value = np.sum(wc * (np.logaddexp(0, z) - y * z)) / W
        dZ = wc * (_logistic(z, None) - y) * z.dtype.type(grad_scale / W)
    else:  # poisson
        if output_activation != "exp":
            raise ValueError(f"loss 'poisson' needs output_activation 'exp'; got {output_activation!r}")
        yl = np.where(y > 0, y * np.log(np.where(y > 0, y, 1)), 0)
        value = np.sum(wc * (np.exp(z) - y * z + yl - y)) / W
        dZ = wc * (np.exp(z) - y) * z.dtype.type(grad_scale / W)
    return float(value), dZ


# ---------------------------------------------------------------------------
# Network: forward pass and backpropagation
# ---------------------------------------------------------------------------


def _check_network(
    weights: Sequence[np.ndarray], biases: Sequence[np.ndarray], activation: str | Sequence[str], output_activation: str
) -> list[str]:
    """Checks the network's description; returns the activation of each hidden layer."""
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(
            "weights and biases must be non-empty lists of the same length; "
            f"got {len(weights)} weights and {len(biases)} biases"
        )
    n_hidden = len(weights) - 1
    names = [activation] * n_hidden if isinstance(activation, str) else list(activation)
    if len(names) != n_hidden and not isinstance(activation, str):
        raise ValueError(f"activation must be a name or one name per hidden layer ({n_hidden}); got {len(names)}")
    for name in names:
        _check_name("activation", name, HIDDEN_ACTIVATIONS)
    _check_name("output_activation", output_activation, ACTIVATIONS)
    return names


def apply_dropout(A: np.ndarray, mask: np.ndarray, rate: float) -> np.ndarray:
    """Inverted dropout with the keep mask given: ``A * mask / (1 - rate)`` (0 where dropped),
    the scale rounded to A's dtype first."""
    A = np.asarray(A)
    scale = A.dtype.type(1.0 / (1.0 - rate))
    return np.where(np.asarray(mask) != 0, A * scale, A.dtype.type(0))


def _layer_input(A: np.ndarray, l: int, rates, masks, noise=None) -> np.ndarray:
    """Layer l's input during training: A (X at l = 0) with noise added (l = 0) and dropout at site l."""
    if l == 0 and noise is not None:
        A = A + np.asarray(noise, dtype=A.dtype)
    if masks is not None and masks[l] is not None:
        A = apply_dropout(A, masks[l], rates[l])
    return A


def max_norm(weights: Sequence[np.ndarray], limit: float) -> None:
    """In place: each hidden unit's incoming weights (a column of ``W_l``, every layer but the last)
    scaled to L2 norm at most `limit`: ``W[:, j] *= min(1, limit / ||W[:, j]||)`` (norm in float64)."""
    for W in weights[:-1]:
        norms = np.sqrt(np.sum(W.astype(np.float64) ** 2, axis=0))
        over = norms > limit
        W[:, over] *= (limit / norms[over]).astype(W.dtype)


def forward(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    X,
    activation: str | Sequence[str] = "relu",
    output_activation: str = "identity",
    slope: float = 0.01,
    *,
    precision: str | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Forward pass, keeping every layer's pre-activations and activations.

    For ``l = 0 .. L-1``:  ``Z_l = A_{l-1} W_l + b_l``,  ``A_l = f_l(Z_l)``,
    with ``A_{-1} = X``, ``f_l = activation`` for hidden layers and
    ``f_{L-1} = output_activation``.

    Parameters
    ----------
    weights : list of ndarray of shape (n_in, n_out)
    biases : list of ndarray of shape (n_out,)
    X : array_like of shape (n, n_features)
    activation : str or sequence of str, default="relu"
        Hidden-layer activation (any of :data:`ACTIVATIONS` but softmax), or
        one per hidden layer.
    output_activation : str, default="identity"
    slope : float, default=0.01
        Slope of ``leaky_relu`` for ``z <= 0``.
    precision : {None, "fp32", "fp64", "bf16"}, optional
        The products' precision (:func:`matmul`).

    Returns
    -------
    Zs : list of ndarray
        ``L`` pre-activations, ``Zs[l]`` of shape ``(n, n_out_l)``.
    As : list of ndarray
        ``L + 1`` activations: ``As[0]`` is ``X`` and ``As[l + 1] = f_l(Zs[l])``;
        ``As[-1]`` is the network's output.
    """
    hidden = _check_network(weights, biases, activation, output_activation)
    As = [_as_float_array(X)]
    Zs = []
    n_layers = len(weights)
    for l, (W, b) in enumerate(zip(weights, biases)):
        Z = matmul(As[-1], W, precision) + b
        f = hidden[l] if l < n_layers - 1 else output_activation
        Zs.append(Z)
        As.append(activation_forward(f, Z, slope))
    return Zs, As


def predict(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    X,
    activation: str | Sequence[str] = "relu",
    output_activation: str = "identity",
    slope: float = 0.01,
    *,
    precision: str | None = None,
) -> np.ndarray:
    """The network's output ``A_{L-1}`` for the batch ``X``; see :func:`forward`."""
    _, As = forward(weights, biases, X, activation, output_activation, slope, precision=precision)
    return As[-1]


def loss_and_grad(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    X,
    Y,
    loss: str | Mapping[str, Any],
    activation: str | Sequence[str] = "relu",
    output_activation: str = "identity",
    slope: float = 0.01,
    sample_weight=None,
    grad_scale: float = 1.0,
    *,
    dropout: Sequence[float] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    noise: np.ndarray | None = None,
    precision: str | None = None,
) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
    """(Weighted) mean loss over a batch and its gradients, by backpropagation.

    Layer ``l``'s input is ``I_l``: ``I_0 = X``, ``I_l = A_{l-1}``; during
    training (``masks`` given) ``I_0 = apply_dropout(X + noise, m_0, p_0)`` and
    ``I_l = apply_dropout(A_{l-1}, m_l, p_l)`` (:func:`apply_dropout`; a ``None`` mask
    is no dropout there). Starting from ``dZ_{L-1}`` given by
    :func:`output_loss_and_grad`, for ``l = L-1 .. 0``::

        dW_l     = I_l^T dZ_l
        db_l     = sum over rows of dZ_l
        dI_l     = dZ_l W_l^T
        dA_{l-1} = apply_dropout(dI_l, m_l, p_l)   (dI_l when no mask)
        dZ_{l-1} = activation_backward(f_{l-1}, dA_{l-1}, Z_{l-1}, A_{l-1})

    No regularization term is included (see :func:`train_epoch`).

    Parameters
    ----------
    weights, biases, X, activation, output_activation, slope
        As in :func:`forward`.
    Y : array_like of shape (n, n_outputs)
        Targets, as made by :func:`to_targets`.
    loss : str or mapping
        One of :data:`LOSSES`, or its spec (see :func:`output_loss_and_grad`).
    sample_weight, grad_scale
        As in :func:`output_loss_and_grad`.
    dropout : sequence of float, optional
        The rate ``p_l`` of each layer's input (``L`` values).
    masks : sequence of (ndarray or None), optional
        The keep mask ``m_l`` (0/1, shaped like ``I_l``) of each layer's input.
    noise : ndarray of shape (n, n_features), optional
        Added to X before input dropout (``sigma * epsilon``).
    precision : {None, "fp32", "fp64", "bf16"}, optional
        The precision of the three products (:func:`matmul`): ``I_l W_l``,
        ``I_l^T dZ_l`` and ``dZ_l W_l^T``.

    Returns
    -------
    value : float
        The (weighted) mean loss over the ``n`` rows.
    weight_grads : list of ndarray
        ``dL/dW_l``, shaped like ``weights``.
    bias_grads : list of ndarray
        ``dL/db_l``, shaped like ``biases``.
    """
    hidden = _check_network(weights, biases, activation, output_activation)
    if masks is not None and (dropout is None or len(masks) != len(weights) or len(dropout) != len(weights)):
        raise ValueError(f"masks and dropout must have one entry per layer ({len(weights)})")
    inputs, Zs, As = [], [], []
    A = _as_float_array(X)
    L = len(weights)
    for l, (W, b) in enumerate(zip(weights, biases)):
        inputs.append(_layer_input(A, l, dropout, masks, noise))
        Z = matmul(inputs[l], W, precision) + b
        A = activation_forward(hidden[l] if l < L - 1 else output_activation, Z, slope)
        Zs.append(Z)
        As.append(A)
    value, dZ = output_loss_and_grad(loss, output_activation, Zs[-1], Y, slope, sample_weight, grad_scale)
    weight_grads, bias_grads = [], []
    for l in reversed(range(L)):
        weight_grads.append(matmul(inputs[l].T, dZ, precision))
        bias_grads.append(np.sum(dZ, axis=0))
        if l > 0:
            dA = matmul(dZ, weights[l].T, precision)
            mask = None if masks is None else masks[l]
            if mask is not None and dropout is not None:
                dA = apply_dropout(dA, mask, dropout[l])
            dZ = activation_backward(hidden[l - 1], dA, Zs[l - 1], As[l - 1], slope)
    return value, weight_grads[::-1], bias_grads[::-1]


def to_targets(y, loss: str | Mapping[str, Any], n_outputs: int, dtype="float64") -> np.ndarray:
    """Turn labels or target values into the 2-D targets the losses expect.

    - ``log_loss`` with a 1-D array of integer class indices in
      ``[0, n_outputs)``: one-hot rows, shape ``(n, n_outputs)``.
    - any loss with a 2-D array: the array as it is, shape ``(n, n_outputs)``.
    - ``squared_error`` or ``binary_log_loss`` with a 1-D array: one column,
      shape ``(n, 1)`` (``n_outputs`` must be 1).

    Parameters
    ----------
    y : array_like of shape (n,) or (n, n_outputs)
    loss : str or mapping
        One of :data:`LOSSES` (or its spec, as in :func:`output_loss_and_grad`).
    n_outputs : int
        Width of the network's output layer.
    dtype : dtype, default="float64"

    Returns
    -------
    Y : ndarray of shape (n, n_outputs) and the given dtype
    """
    loss, _ = _loss_spec(loss)
    y = np.asarray(y)
    dtype = np.dtype(dtype)
    if y.ndim == 2:
        if y.shape[1] != n_outputs:
            raise ValueError(f"y has {y.shape[1]} columns; expected n_outputs={n_outputs}")
        return np.ascontiguousarray(y, dtype=dtype)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D or 2-D; got shape {y.shape}")
    if loss == "log_loss":
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"1-D y for log_loss must hold integer class indices; got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= n_outputs):
            raise ValueError(f"class indices must lie in [0, {n_outputs}); got [{y.min()}, {y.max()}]")
        Y = np.zeros((y.shape[0], n_outputs), dtype=dtype)
        Y[np.arange(y.shape[0]), y] = 1
        return Y
    if n_outputs != 1:
        raise ValueError(f"1-D y for {loss} gives one output; got n_outputs={n_outputs}")
    return np.ascontiguousarray(y.reshape(-1, 1), dtype=dtype)


# ---------------------------------------------------------------------------
# Optimizers: each updates a list of arrays in place.
# ---------------------------------------------------------------------------


def _check_params_and_grads(params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
    if len(params) != len(grads):
        raise ValueError(f"got {len(params)} params but {len(grads)} grads")
    for i, (p, g) in enumerate(zip(params, grads)):
        if np.shape(p) != np.shape(g):
            raise ValueError(f"params[{i}] has shape {np.shape(p)} but grads[{i}] {np.shape(g)}")


def _check_state(name: str, state: list[np.ndarray], params: Sequence[np.ndarray]) -> None:
    if len(state) != len(params) or any(s.shape != p.shape for s, p in zip(state, params)):
        raise ValueError(f"params do not match the shapes this optimizer's {name} were made for")


class SGD:
    """Stochastic gradient descent with (Nesterov) momentum, scikit-learn's form.

    With learning rate ``lr``, momentum ``mu`` and velocity ``v`` (zero at
    first), each step does, for every parameter ``p`` with gradient ``g``::

        v <- mu * v - lr * g
        p <- p + mu * v - lr * g      if nesterov
        p <- p + v                    otherwise

    Parameters
    ----------
    lr : float
        Learning rate.
    momentum : float, default=0.0
    nesterov : bool, default=False

    Attributes
    ----------
    velocities : list of ndarray or None
        One per parameter; ``None`` before the first step.
    """

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False) -> None:
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.velocities: list[np.ndarray] | None = None

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """Update ``params`` in place from ``grads`` (same order, same shapes)."""
        _check_params_and_grads(params, grads)
        if self.velocities is None:
            self.velocities = [np.zeros_like(p) for p in params]
        _check_state("velocities", self.velocities, params)
        for p, g, v in zip(params, grads, self.velocities):
            v *= self.momentum
            v -= self.lr * g
            if self.nesterov:
                p += self.momentum * v - self.lr * g
            else:
                p += v


class Adam:
    """Adam (Kingma & Ba, 2015), in the efficient form scikit-learn uses.

    With first and second moments ``m``, ``v`` (zero at first) and step count
    ``t`` (0 at first), each step does, for every parameter ``p`` with
    gradient ``g``::

        t    <- t + 1
        m    <- beta1 * m + (1 - beta1) * g
        v    <- beta2 * v + (1 - beta2) * g**2
        lr_t  = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
        p    <- p - lr_t * m / (sqrt(v) + eps)

    Parameters
    ----------
    lr : float, default=0.001
    beta1 : float, default=0.9
    beta2 : float, default=0.999
    eps : float, default=1e-8

    Attributes
    ----------
    t : int
        Number of steps taken.
    ms, vs : list of ndarray or None
        First and second moments, one per parameter; ``None`` before the
        first step.
    """

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.t = 0
        self.ms: list[np.ndarray] | None = None
        self.vs: list[np.ndarray] | None = None

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """Update ``params`` in place from ``grads`` (same order, same shapes)."""
        _check_params_and_grads(params, grads)
        if self.ms is None:
            self.ms = [np.zeros_like(p) for p in params]
            self.vs = [np.zeros_like(p) for p in params]
        _check_state("moments", self.ms, params)
        self.t += 1
        lr_t = self.lr * math.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        assert self.vs is not None  # made with self.ms
        for p, g, m, v in zip(params, grads, self.ms, self.vs):
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * (g * g)
            p -= lr_t * m / (np.sqrt(v) + self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay ``wd`` (Loshchilov & Hutter)::

    p <- p - lr * wd * p        (every parameter, biases included)
    then the Adam step of :class:`Adam`.
    """

    def __init__(
        self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01
    ) -> None:
        super().__init__(lr, beta1, beta2, eps)
        self.weight_decay = weight_decay

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        _check_params_and_grads(params, grads)
        for p in params:
            p *= p.dtype.type(1 - self.lr * self.weight_decay)
        super().step(params, grads)


class RMSprop:
    """RMSprop::

    v <- rho * v + (1 - rho) * g**2
    p <- p - lr * g / (sqrt(v) + eps)
    """

    def __init__(self, lr: float = 0.001, rho: float = 0.9, eps: float = 1e-8) -> None:
        self.lr, self.rho, self.eps = lr, rho, eps
        self.vs: list[np.ndarray] | None = None

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        _check_params_and_grads(params, grads)
        if self.vs is None:
            self.vs = [np.zeros_like(p) for p in params]
        for p, g, v in zip(params, grads, self.vs):
            v *= self.rho
            v += (1 - self.rho) * (g * g)
            p -= self.lr * g / (np.sqrt(v) + self.eps)


class Adagrad:
    """Adagrad::

    G <- G + g**2
    p <- p - lr * g / (sqrt(G) + eps)
    """

    def __init__(self, lr: float = 0.01, eps: float = 1e-10) -> None:
        self.lr, self.eps = lr, eps
        self.Gs: list[np.ndarray] | None = None

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        _check_params_and_grads(params, grads)
        if self.Gs is None:
            self.Gs = [np.zeros_like(p) for p in params]
        for p, g, G in zip(params, grads, self.Gs):
            G += g * g
            p -= self.lr * g / (np.sqrt(G) + self.eps)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def objective(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    X,
    Y,
    loss: str | Mapping[str, Any],
    activation: str = "relu",
    output_activation: str = "identity",
    slope: float = 0.01,
    l2: float = 0.0,
    l1: float = 0.0,
    sample_weight=None,
    grad_scale: float = 1.0,
    *,
    dropout: Sequence[float] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    noise: np.ndarray | None = None,
    precision: str | None = None,
) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
    """The regularized batch objective, scikit-learn's form extended by an L1 term
    (``dropout``, ``masks``, ``noise``: as in :func:`loss_and_grad`).

    With ``W = sum(sample_weight)`` (the row count without weights)::

        L   = loss_and_grad(...) value + (l2/2 * sum_l ||W_l||^2 + l1 * sum_l |W_l|) / W
        dW_l = dW_l(loss) + (l2 * W_l + l1 * sign(W_l)) / W       (biases: no penalty)
    """
    value, gW, gb = loss_and_grad(
        weights,
        biases,
        X,
        Y,
        loss,
        activation,
        output_activation,
        slope,
        sample_weight,
        grad_scale,
        dropout=dropout,
        masks=masks,
        noise=noise,
        precision=precision,
    )
    W = float(len(X) if sample_weight is None else np.sum(sample_weight, dtype=np.float64))
    if l2 or l1:
        value += (
            0.5 * l2 * sum(float(np.sum(Wl.astype(np.float64) ** 2)) for Wl in weights)
            + l1 * sum(float(np.sum(np.abs(Wl.astype(np.float64)))) for Wl in weights)
        ) / W
        for g, Wl in zip(gW, weights):
            g += Wl.dtype.type(l2 / W) * Wl + Wl.dtype.type(l1 / W) * np.sign(Wl)
    return value, gW, gb


def clip_gradients(
    grads: Sequence[np.ndarray], clip_value: float | None = None, clip_norm: float | None = None
) -> None:
    """In place: each value to ``[-clip_value, clip_value]``, then the global L2 norm
    ``sqrt(sum over all arrays of g**2)`` to at most ``clip_norm``."""
    if clip_value:
        for g in grads:
            np.clip(g, -clip_value, clip_value, out=g)
    if clip_norm:
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
        if norm > clip_norm:
            for g in grads:
                g *= g.dtype.type(clip_norm / norm)


def train_epoch(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    X,
    Y,
    loss: str | Mapping[str, Any],
    optimizer,
    batch_size: int,
    order,
    activation: str = "relu",
    output_activation: str = "identity",
    slope: float = 0.01,
    l2: float = 0.0,
    l1: float = 0.0,
    clip_value: float | None = None,
    clip_norm: float | None = None,
    sample_weight=None,
    grad_scale: float = 1.0,
    schedule: Callable[[float, float], float] | None = None,
    epoch: float = 0.0,
    *,
    dropout: Sequence[float] | None = None,
    draws: Callable[[int, int], tuple[np.ndarray | None, Sequence[np.ndarray | None]]] | None = None,
    max_norm_limit: float | None = None,
    precision: str | None = None,
) -> float:
    """One pass over the data in mini-batches; updates the parameters in place.

    The rows are visited in the given ``order``, ``batch_size`` at a time (the
    last batch may be smaller; ``batch_size >= n`` is full-batch). For batch
    ``b`` of ``n_b`` batches, rows ``B``:

    1. ``L_B, grads = objective(...)`` on the rows of ``B`` (with their
       sample weights, normalized by the batch's weight sum; a batch whose
       weights sum to 0 counts 0 and takes no step);
    2. :func:`clip_gradients`;
    3. ``optimizer.lr = schedule(epoch + b / n_b, 1 / n_b)`` when a schedule is given;
    4. ``optimizer.step([W_0, b_0, W_1, b_1, ...], [dW_0, db_0, ...])``;
    5. :func:`max_norm` when `max_norm_limit` is given.

    With `draws`, step 1 sees batch ``b``'s ``noise, masks = draws(b, |B|)``
    (as :func:`loss_and_grad` takes them, with the rates `dropout`).

    Parameters
    ----------
    weights, biases : list of ndarray
        Updated in place.
    X : ndarray of shape (n, n_features)
    Y : ndarray of shape (n, n_outputs)
        Targets, as made by :func:`to_targets`.
    loss : str or mapping
        One of :data:`LOSSES`, or its spec (see :func:`output_loss_and_grad`).
    optimizer : SGD, Adam, AdamW, RMSprop or Adagrad
    batch_size : int
    order : array_like of int of shape (n,)
        The order in which rows are visited (e.g. a permutation).
    activation, output_activation, slope
        As in :func:`forward`.
    l2, l1, sample_weight, grad_scale
        As in :func:`objective`.
    clip_value, clip_norm
        As in :func:`clip_gradients`.
    schedule : callable (p, delta) -> lr, optional
    epoch : float
        The schedule's clock at the start of the epoch.
    precision : {None, "fp32", "fp64", "bf16"}, optional
        As in :func:`loss_and_grad`.

    Returns
    -------
    mean_loss : float
        ``sum_B L_B * |B| / n``, scikit-learn's ``loss_curve_`` entry.
    """
    n = len(X)
    order = np.asarray(order)
    if len(order) != n:
        raise ValueError(f"order must have one entry per row of X ({n}); got {len(order)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    n_batches = -(-n // batch_size)
    total = 0.0
    for b, start in enumerate(range(0, n, batch_size)):
        idx = order[start : start + batch_size]
        w = None if sample_weight is None else np.asarray(sample_weight)[idx]
        if w is not None and not np.sum(w, dtype=np.float64) > 0:
            continue
        noise, masks = draws(b, len(idx)) if draws is not None else (None, None)
        value, weight_grads, bias_grads = objective(
            weights,
            biases,
            X[idx],
            Y[idx],
            loss,
            activation,
            output_activation,
            slope,
            l2,
            l1,
            w,
            grad_scale,
            dropout=dropout,
            masks=masks,
            noise=noise,
            precision=precision,
        )
        total += value * len(idx)
        grads = [g for gW, gb in zip(weight_grads, bias_grads) for g in (gW, gb)]
        clip_gradients(grads, clip_value, clip_norm)
        if schedule is not None:
            optimizer.lr = schedule(epoch + b / n_batches, 1 / n_batches)
        params = [p for W, bias in zip(weights, biases) for p in (W, bias)]
        optimizer.step(params, grads)
        if max_norm_limit:
            max_norm(weights, max_norm_limit)
    return total / n


# The initializations' factors where they are not 6 (see glorot_bound and he_bound).
_GLOROT_FACTOR = {"logistic": 2.0, "sigmoid": 2.0}
_HE_FACTOR = {"selu": 3.0}


def glorot_bound(fan_in: int, fan_out: int, activation: str) -> float:
    """Half-width of scikit-learn's uniform Glorot initialization.

    Weights are drawn from ``U(-bound, bound)`` with
    ``bound = sqrt(factor / (fan_in + fan_out))``, where ``factor`` is 2 for
    the logistic activation and 6 otherwise. As in scikit-learn,
    ``activation`` is the network's hidden activation, used for every layer.
    """
    _check_name("activation", activation, ACTIVATIONS)
    return math.sqrt(_GLOROT_FACTOR.get(activation, 6.0) / (fan_in + fan_out))


def he_bound(fan_in: int, activation: str) -> float:
    """Half-width of the uniform He initialization: ``bound = sqrt(factor / fan_in)``.

    ``factor`` is 6 (variance ``2 / fan_in``, He's for ReLU-like units), and 3
    for selu (variance ``1 / fan_in``: LeCun's, which SELU's self-normalization
    assumes).
    """
    _check_name("activation", activation, ACTIVATIONS)
    return math.sqrt(_HE_FACTOR.get(activation, 6.0) / fan_in)


# ---------------------------------------------------------------------------
# Layers: a network as a list of layers over one flat parameter buffer and one
# flat state buffer (fastmlp.layers; the spec is their JSON form, to_spec).
#
# Parameters and state are laid out layer after layer in list order,
# depth-first through residual blocks:
#   dense        W (n_in x units, row-major), b (units)
#   batch_norm   weight (n), bias (n);  state: running_mean (n), running_var (n)
#   layer_norm   weight (n), bias (n)
#   embedding    table_j (cardinalities[j] x dims[j], row-major) for each column j, in order
# The walk below reads them in that order: it is the reference's own statement of
# the layout (it does not use fastmlp.layers.shapes), so that a test comparing
# the two checks both.
# ---------------------------------------------------------------------------

_SITE_STRIDE = 65536  # a Dropout's site: Dense layers before it + 65536 x its index among the Dropouts since


class LayersForward(NamedTuple):
    """What :func:`layers_forward` computes and :func:`layers_backward` needs.

    ``output`` is ``f_out(logits)``; ``logits`` the last layer's output ``Z``. ``batch_stats``
    holds, for each batch norm in depth-first order (train mode only), ``(state offset,
    momentum, batch mean, biased batch variance)``; ``penalized`` the ``(start, stop)`` ranges of
    the flat parameters the L2/L1 penalties take (Dense W, embedding tables); ``dense_weights``
    each Dense's ``(offset, n_in, units)``.
    """

    output: np.ndarray
    logits: np.ndarray
    tape: list[tuple[Any, ...]]
    batch_stats: list[tuple[int, float, np.ndarray, np.ndarray]]
    penalized: list[tuple[int, int]]
    dense_weights: list[tuple[int, int, int]]
    n_params: int
    n_inputs: int
    slope: float
    precision: str | None


def _as_spec(spec) -> list[dict[str, Any]]:
    """The spec as a list of dicts (fastmlp.layers' Layer objects become their to_dict())."""
    if isinstance(spec, (str, bytes, Mapping)) or not isinstance(spec, Sequence):
        raise TypeError(f"spec must be a list of layer dicts, got {type(spec).__name__}")
    out = [d.to_dict() if hasattr(d, "to_dict") else d for d in spec]
    for i, d in enumerate(out):
        if not isinstance(d, Mapping) or "kind" not in d:
            raise TypeError(f"spec[{i}] must be a layer dict with a 'kind', got {d!r}")
    return out


class _Walk:
    """The state of one forward pass: where the next parameter and state array start, the Dense
    and Dropout counts that give a Dropout its site, and what the pass records."""

    def __init__(self, params, state, train, slope, masks, precision, dtype):
        self.params, self.state = params, state
        self.p = self.s = 0
        self.train, self.slope, self.masks, self.precision, self.dtype = train, slope, masks, precision, dtype
        self.n_dense = self.n_dropout_since = 0
        self.batch_stats: list[tuple[int, float, np.ndarray, np.ndarray]] = []
        self.penalized: list[tuple[int, int]] = []
        self.dense_weights: list[tuple[int, int, int]] = []

    def take(self, shape: tuple[int, ...]) -> tuple[int, np.ndarray]:
        """The next parameter array of `shape` (and its offset)."""
        size = math.prod(shape)
        start, self.p = self.p, self.p + size
        if self.p > len(self.params):
            raise ValueError(f"params has {len(self.params)} values; the layers need more")
        return start, self.params[start : self.p].astype(self.dtype, copy=False).reshape(shape)

    def take_state(self, size: int) -> tuple[int, np.ndarray]:
        start, self.s = self.s, self.s + size
        if self.s > len(self.state):
            raise ValueError(f"state has {len(self.state)} values; the layers need more")
        return start, self.state[start : self.s].astype(self.dtype, copy=False)


def _normalize(A: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(x_hat = (A - mean) / sqrt(var + eps), 1 / sqrt(var + eps))."""
    inv = 1 / np.sqrt(var + A.dtype.type(eps))
    return (A - mean) * inv, inv


def _embed(d: Mapping[str, Any], A: np.ndarray, walk: _Walk) -> tuple[np.ndarray, tuple[Any, ...]]:
    n_in = A.shape[1]
    columns = [int(c) for c in d["columns"]]
    others = [c for c in range(n_in) if c not in set(columns)]
    if any(c >= n_in for c in columns):
        raise ValueError(f"embedding columns {columns} lie outside the input's {n_in} columns")
    blocks, tables = [A[:, others]], []
    for j, (c, card, dim) in enumerate(zip(columns, d["cardinalities"], d["dims"])):
        offset, table = walk.take((int(card), int(dim)))
        walk.penalized.append((offset, walk.p))
        x = A[:, c]
        bad = (x != np.floor(x)) | (x < 0) | (x >= card)
        if bad.any():
            raise ValueError(
                f"X column {c} (embedding columns[{j}]) must hold integer codes in [0, {card}); "
                f"got {float(x[bad][0])!r} in row {int(np.argmax(bad))}"
            )
        codes = x.astype(np.int64)
        tables.append((offset, codes, int(card), int(dim)))
        blocks.append(table[codes])
    return np.concatenate(blocks, axis=1), ("embedding", n_in, others, tables)


def _forward_layers(
    spec: Sequence[Mapping[str, Any]], A: np.ndarray, walk: _Walk, top: bool
) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    tape: list[tuple[Any, ...]] = []
    for i, d in enumerate(spec):
        kind = d["kind"]
        n, width = A.shape
        if kind == "dense":
            units = int(d["units"])
            offset, W = walk.take((width, units))
            _, b = walk.take((units,))
            walk.penalized.append((offset, offset + W.size))
            walk.dense_weights.append((offset, width, units))
            walk.n_dense += 1
            walk.n_dropout_since = 0
            tape.append(("dense", offset, A, W))
            A = matmul(A, W, walk.precision) + b
        elif kind == "activation":
            _check_name("activation", d["name"], HIDDEN_ACTIVATIONS)
            Z, A = A, activation_forward(d["name"], A, walk.slope)
            tape.append(("activation", d["name"], Z, A))
        elif kind == "dropout":
            site = walk.n_dense + _SITE_STRIDE * walk.n_dropout_since
            walk.n_dropout_since += 1
            rate = float(d["rate"])
            mask = None
            if walk.train and walk.masks is not None and rate > 0:
                if site not in walk.masks:
                    raise ValueError(f"masks has no mask for the dropout at site {site} (spec entry {i})")
                mask = np.asarray(walk.masks[site])
                if mask.shape != A.shape:
                    raise ValueError(f"masks[{site}] must have shape {A.shape}, got {mask.shape}")
                A = apply_dropout(A, mask, rate)
            tape.append(("dropout", mask, rate))
        elif kind in ("batch_norm", "layer_norm"):
            offset, gamma = walk.take((width,))
            _, beta = walk.take((width,))
            eps = float(d.get("eps", 1e-5))
            if kind == "layer_norm":
                xhat, inv = _normalize(A, A.mean(axis=1, keepdims=True), A.var(axis=1, keepdims=True), eps)
                batch = True  # the statistics depend on the input: backward goes through them
            else:
                s_offset, running = walk.take_state(2 * width)
                batch = walk.train
                if walk.train:
                    if n < 2:
                        raise ValueError(f"batch norm needs at least 2 rows of a batch in training, got {n}")
                    mean, var = A.mean(axis=0), A.var(axis=0)
                    walk.batch_stats.append((s_offset, float(d.get("momentum", 0.1)), mean, var))
                else:
                    mean, var = running[:width], running[width:]
                xhat, inv = _normalize(A, mean, var, eps)
            tape.append((kind, offset, xhat, inv, gamma, batch))
            A = gamma * xhat + beta
        elif kind == "residual":
            F, inner = _forward_layers(d["layers"], A, walk, top=False)
            if F.shape != A.shape:
                raise ValueError(f"a residual block's layers must keep the width {width}; they output {F.shape[1]}")
            tape.append(("residual", inner))
            A = A + F
        elif kind == "embedding":
            if not top or i != 0:
                raise ValueError("an embedding can only be the network's first layer")
            A, record = _embed(d, A, walk)
            tape.append(record)
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    return A, tape


def layers_forward(
    spec,
    params,
    state,
    X,
    *,
    train: bool,
    output_activation: str = "identity",
    slope: float = 0.01,
    masks: Mapping[int, np.ndarray] | None = None,
    precision: str | None = None,
) -> LayersForward:
    """A network of layers on the batch ``X``: each layer in order, then `output_activation`.

    ==============  ==============================================================================
    kind            y (x the layer's input, n rows)
    ==============  ==============================================================================
    dense           x W + b
    activation      f(x)                                        (slope: leaky_relu's)
    dropout         train, with a mask: apply_dropout(x, masks[site], rate); otherwise x
    batch_norm      γ (x − μ) / sqrt(σ² + eps) + β per column: train μ, σ² the batch's mean
                    and biased variance (n >= 2); eval the running statistics of `state`
    layer_norm      γ (x − μ) / sqrt(σ² + eps) + β, μ, σ² each row's mean and biased variance
    residual        x + f(x), f its layers in order
    embedding       [x's other columns] ++ [table_j[x[:, columns[j]]] for each j]  (first layer only)
    ==============  ==============================================================================

    A Dropout's site is the number of Dense layers before it (depth-first) plus
    ``65536 ×`` its index among the Dropouts since that Dense.

    Parameters
    ----------
    spec : list of dict (or of fastmlp.layers layers)
        The layers' JSON form (:func:`fastmlp.layers.to_spec`).
    params, state : array_like, 1-D
        The flat parameter and state buffers (layout above); used in X's dtype.
    X : array_like of shape (n, n_inputs)
    train : bool
        Training mode (batch statistics, dropout) or evaluation mode.
    output_activation, slope
        As in :func:`forward`.
    masks : mapping site -> ndarray, optional
        The keep masks (0/1, shaped like the Dropout's input) of training mode; None: no dropout.
    precision : {None, "fp32", "fp64", "bf16"}, optional
        The Dense products' precision (:func:`matmul`).
    """
    A = _as_float_array(X)
    if A.ndim != 2:
        raise ValueError(f"X must be 2-D (n, n_inputs), got shape {A.shape}")
    params, state = np.asarray(params).ravel(), np.asarray(state).ravel()
    walk = _Walk(params, state, bool(train), slope, masks, precision, A.dtype)
    Z, tape = _forward_layers(_as_spec(spec), A, walk, top=True)
    if walk.p != len(params) or walk.s != len(state):
        raise ValueError(
            f"params and state must have {walk.p} and {walk.s} values for these layers, "
            f"got {len(params)} and {len(state)}"
        )
    if walk.n_dense == 0:
        raise ValueError("the layers must hold at least one dense layer")
    _check_name("output_activation", output_activation, ACTIVATIONS)
    out = activation_forward(output_activation, Z, slope)
    return LayersForward(
        out, Z, tape, walk.batch_stats, walk.penalized, walk.dense_weights, len(params), A.shape[1], slope, precision
    )


def _backward_layers(tape: list[tuple[Any, ...]], dY: np.ndarray, grad: np.ndarray, fwd: LayersForward) -> np.ndarray:
    for record in reversed(tape):
        kind = record[0]
        if kind == "dense":
            _, offset, A, W = record
            grad[offset : offset + W.size] = matmul(A.T, dY, fwd.precision).ravel()
            grad[offset + W.size : offset + W.size + W.shape[1]] = dY.sum(axis=0)
            dY = matmul(dY, W.T, fwd.precision)
        elif kind == "activation":
            _, name, Z, A = record
            dY = activation_backward(name, dY, Z, A, fwd.slope)
        elif kind == "dropout":
            _, mask, rate = record
            dY = dY if mask is None else apply_dropout(dY, mask, rate)
        elif kind in ("batch_norm", "layer_norm"):
            # y = γ x_hat + β:  dγ = Σ_rows dy x_hat, dβ = Σ_rows dy, dx_hat = γ dy; through batch statistics
            # over m values (the rows of a column, or the columns of a row):
            #   dx = inv (dx_hat − mean(dx_hat) − x_hat mean(dx_hat x_hat))
            _, offset, xhat, inv, gamma, batch = record
            w = len(gamma)
            grad[offset : offset + w] = np.sum(dY * xhat, axis=0)
            grad[offset + w : offset + 2 * w] = dY.sum(axis=0)
            dxhat = dY * gamma
            if batch:
                axis = 0 if kind == "batch_norm" else 1
                g_mean = dxhat.mean(axis=axis, keepdims=True)
                gx_mean = (dxhat * xhat).mean(axis=axis, keepdims=True)
                dY = inv * (dxhat - g_mean - xhat * gx_mean)
            else:
                dY = dxhat * inv
        elif kind == "residual":
            dY = dY + _backward_layers(record[1], dY, grad, fwd)
        else:  # embedding: the tables gather their rows' gradients; the codes have none (0)
            _, n_in, others, tables = record
            dX = np.zeros((len(dY), n_in), dtype=dY.dtype)
            dX[:, others] = dY[:, : len(others)]
            col = len(others)
            for offset, codes, card, dim in tables:
                G = np.zeros((card, dim), dtype=dY.dtype)
                np.add.at(G, codes, dY[:, col : col + dim])
                grad[offset : offset + G.size] = G.ravel()
                col += dim
            dY = dX
    return dY


def layers_backward(fwd: LayersForward, dZ) -> tuple[np.ndarray, np.ndarray]:
    """Backpropagation through the layers of :func:`layers_forward`'s pass `fwd`, from
    ``dZ = dL/dlogits``: returns ``(grad, dX)``, the gradient of the flat parameters (their
    layout) and of the input (0 at an embedding's code columns).

    ==============  ==============================================================================
    kind            gradients (dy = dL/dy)
    ==============  ==============================================================================
    dense           dW = xᵀ dy, db = Σ_rows dy, dx = dy Wᵀ
    activation      dx = activation_backward(f, dy, x, y)
    dropout         dx = apply_dropout(dy, mask, rate) (dy without a mask)
    batch_norm,     dγ = Σ_rows dy x̂, dβ = Σ_rows dy, g = γ dy; batch statistics (over the m
    layer_norm      values of a column, resp. a row): dx = (g − mean(g) − x̂ mean(g x̂)) / sqrt(σ² + eps);
                    running statistics: dx = g / sqrt(σ² + eps)
    residual        dx = dy + df(x)
    embedding       dtable_j[k] = Σ over rows with code k of dy's block j
    ==============  ==============================================================================
    """
    dZ = np.asarray(dZ, dtype=fwd.logits.dtype)
    if dZ.shape != fwd.logits.shape:
        raise ValueError(f"dZ must have the logits' shape {fwd.logits.shape}, got {dZ.shape}")
    grad = np.zeros(fwd.n_params, dtype=fwd.logits.dtype)
    dX = _backward_layers(fwd.tape, dZ, grad, fwd)
    return grad, dX


def _perturbed_inputs(X, noise, input_dropout: float, input_mask) -> np.ndarray:
    """The network's input perturbation while training: apply_dropout(X + noise, input_mask, input_dropout)."""
    A = _as_float_array(X)
    if noise is not None:
        A = A + np.asarray(noise, dtype=A.dtype)
    if input_mask is not None and input_dropout > 0:
        A = apply_dropout(A, input_mask, input_dropout)
    return A


def layers_loss_and_grad(
    spec,
    params,
    state,
    X,
    Y,
    loss: str | Mapping[str, Any],
    *,
    output_activation: str = "identity",
    slope: float = 0.01,
    sample_weight=None,
    grad_scale: float = 1.0,
    train: bool = True,
    masks: Mapping[int, np.ndarray] | None = None,
    noise: np.ndarray | None = None,
    input_dropout: float = 0.0,
    input_mask: np.ndarray | None = None,
    precision: str | None = None,
) -> tuple[float, np.ndarray]:
    """(Weighted) mean loss over a batch and the gradient of the flat parameters: :func:`layers_forward`
    (training mode by default: batch statistics; `masks` for dropout), the loss and ``dL/dlogits`` of
    :func:`output_loss_and_grad`, then :func:`layers_backward`. No penalty (:func:`layers_objective`).

    The input perturbation of training (the network's, not a layer's): ``X`` becomes
    ``apply_dropout(X + noise, input_mask, input_dropout)`` (each part only when given).
    Returns ``(value, grad)``.
    """
    A = _perturbed_inputs(X, noise, input_dropout, input_mask)
    fwd = layers_forward(
        spec,
        params,
        state,
        A,
        train=train,
        output_activation=output_activation,
        slope=slope,
        masks=masks,
        precision=precision,
    )
    value, dZ = output_loss_and_grad(loss, output_activation, fwd.logits, Y, slope, sample_weight, grad_scale)
    grad, _ = layers_backward(fwd, dZ)
    return value, grad


def layers_running_stats(state, fwd: LayersForward) -> np.ndarray:
    """The state after a training step whose forward pass was `fwd` (train mode): for each batch
    norm, with momentum m, the batch's mean μ and biased variance σ² over its n rows::

        running_mean <- (1 - m) running_mean + m μ
        running_var  <- (1 - m) running_var  + m σ² n / (n - 1)

    Returns a new array (`state` unchanged)."""
    new = np.array(state, copy=True)
    n = len(fwd.logits)
    for offset, m, mean, var in fwd.batch_stats:
        w = len(mean)
        t = new.dtype.type
        new[offset : offset + w] = t(1 - m) * new[offset : offset + w] + t(m) * mean.astype(new.dtype)
        unbiased = (var * var.dtype.type(n / (n - 1))).astype(new.dtype)
        new[offset + w : offset + 2 * w] = t(1 - m) * new[offset + w : offset + 2 * w] + t(m) * unbiased
    return new


def _penalty(params: np.ndarray, fwd: LayersForward, l2: float, l1: float, W: float) -> tuple[float, np.ndarray]:
    """(l2/2 Σ w² + l1 Σ |w|) / W over the penalized parameters, and its gradient."""
    value, grad = 0.0, np.zeros_like(params)
    for start, stop in fwd.penalized:
        w = params[start:stop]
        value += (
            0.5 * l2 * float(np.sum(w.astype(np.float64) ** 2)) + l1 * float(np.sum(np.abs(w), dtype=np.float64))
        ) / W
        grad[start:stop] = w.dtype.type(l2 / W) * w + w.dtype.type(l1 / W) * np.sign(w)
    return value, grad


def layers_objective(
    spec,
    params,
    state,
    X,
    Y,
    loss: str | Mapping[str, Any],
    *,
    l2: float = 0.0,
    l1: float = 0.0,
    output_activation: str = "identity",
    slope: float = 0.01,
    sample_weight=None,
    grad_scale: float = 1.0,
    masks: Mapping[int, np.ndarray] | None = None,
    noise: np.ndarray | None = None,
    input_dropout: float = 0.0,
    input_mask: np.ndarray | None = None,
    precision: str | None = None,
) -> tuple[float, np.ndarray, LayersForward]:
    """The regularized batch objective in training mode, as :func:`objective`: the loss of
    :func:`layers_loss_and_grad` plus ``(l2/2 Σ w² + l1 Σ |w|) / W`` over the Dense W and the
    embedding tables (not biases, γ or β), ``W`` the sample weights' sum (the row count).
    Returns ``(value, grad, fwd)``, `fwd` the pass (for :func:`layers_running_stats`)."""
    A = _perturbed_inputs(X, noise, input_dropout, input_mask)
    params = np.asarray(params).ravel()
    fwd = layers_forward(
        spec,
        params,
        state,
        A,
        train=True,
        output_activation=output_activation,
        slope=slope,
        masks=masks,
        precision=precision,
    )
    value, dZ = output_loss_and_grad(loss, output_activation, fwd.logits, Y, slope, sample_weight, grad_scale)
    grad, _ = layers_backward(fwd, dZ)
    if l2 or l1:
        W = float(len(A) if sample_weight is None else np.sum(sample_weight, dtype=np.float64))
        extra, g = _penalty(params.astype(grad.dtype, copy=False), fwd, l2, l1, W)
        value += extra
        grad += g
    return value, grad, fwd


def layers_max_norm(params: np.ndarray, fwd: LayersForward, limit: float) -> None:
    """In place on the flat `params`: :func:`max_norm` on every Dense W but the last Dense's."""
    for offset, n_in, units in fwd.dense_weights[:-1]:
        W = params[offset : offset + n_in * units].reshape(n_in, units)  # a view
        max_norm([W, W[:, :0]], limit)  # max_norm skips its last array


def layers_train_epoch(
    spec,
    params: np.ndarray,
    state: np.ndarray,
    X,
    Y,
    loss: str | Mapping[str, Any],
    optimizer,
    batch_size: int,
    order,
    *,
    output_activation: str = "identity",
    slope: float = 0.01,
    l2: float = 0.0,
    l1: float = 0.0,
    clip_value: float | None = None,
    clip_norm: float | None = None,
    sample_weight=None,
    grad_scale: float = 1.0,
    schedule: Callable[[float, float], float] | None = None,
    epoch: float = 0.0,
    draws: Callable[[int, int], tuple[np.ndarray | None, np.ndarray | None, Mapping[int, np.ndarray] | None]]
    | None = None,
    input_dropout: float = 0.0,
    max_norm_limit: float | None = None,
    precision: str | None = None,
) -> float:
    """One pass over the data in mini-batches, as :func:`train_epoch`, for a network of layers;
    updates the flat `params` and `state` in place. For batch ``b`` (rows ``B``):

    1. ``noise, input_mask, masks = draws(b, |B|)`` when `draws` is given;
    2. ``value, grad, fwd = layers_objective(...)`` on the rows of ``B`` (a batch whose sample
       weights sum to 0 counts 0 and takes no step);
    3. ``state[:] = layers_running_stats(state, fwd)`` (batch norms' running statistics);
    4. :func:`clip_gradients`, the schedule, ``optimizer.step([params], [grad])``;
    5. :func:`layers_max_norm` when `max_norm_limit` is given.

    Returns the mean loss ``sum_B L_B |B| / n``.
    """
    n = len(X)
    order = np.asarray(order)
    if len(order) != n:
        raise ValueError(f"order must have one entry per row of X ({n}); got {len(order)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    n_batches = -(-n // batch_size)
    total = 0.0
    for b, start in enumerate(range(0, n, batch_size)):
        idx = order[start : start + batch_size]
        w = None if sample_weight is None else np.asarray(sample_weight)[idx]
        if w is not None and not np.sum(w, dtype=np.float64) > 0:
            continue
        noise, input_mask, masks = draws(b, len(idx)) if draws is not None else (None, None, None)
        value, grad, fwd = layers_objective(
            spec,
            params,
            state,
            X[idx],
            Y[idx],
            loss,
            l2=l2,
            l1=l1,
            output_activation=output_activation,
            slope=slope,
            sample_weight=w,
            grad_scale=grad_scale,
            masks=masks,
            noise=noise,
            input_dropout=input_dropout,
            input_mask=input_mask,
            precision=precision,
        )
        total += value * len(idx)
        state[:] = layers_running_stats(state, fwd)
        grad = grad.astype(params.dtype, copy=False)
        clip_gradients([grad], clip_value, clip_norm)
        if schedule is not None:
            optimizer.lr = schedule(epoch + b / n_batches, 1 / n_batches)
        optimizer.step([params], [grad])
        if max_norm_limit:
            layers_max_norm(params, fwd, max_norm_limit)
    return total / n
