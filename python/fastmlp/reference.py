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
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "RMSprop",
    "activation_backward",
    "activation_forward",
    "apply_dropout",
    "bf16_round",
    "forward",
    "glorot_bound",
    "loss_and_grad",
    "matmul",
    "max_norm",
    "objective",
    "output_loss_and_grad",
    "predict",
    "to_targets",
    "train_epoch",
]

LOSSES = ("squared_error", "log_loss", "binary_log_loss", "poisson")
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


_ACTIVATION_FUNCTIONS: dict[str, tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]] = {
    "identity": (_identity, _identity_backward),
    "logistic": (_logistic, _logistic_backward),
    "sigmoid": (_logistic, _logistic_backward),
    "tanh": (_tanh, _tanh_backward),
    "relu": (_relu, _relu_backward),
    "leaky_relu": (_leaky_relu, _leaky_relu_backward),
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
    ====================  ==============================================

    For softmax this is the product of the row's Jacobian
    ``diag(a) - a a^T`` with ``dA``. The derivative of relu and leaky_relu at
    ``z = 0`` is taken as that of the ``z < 0`` side.

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
    loss: str, output_activation: str, z, y, slope: float = 0.01, sample_weight=None, grad_scale: float = 1.0
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

    ``grad_scale`` multiplies dZ only: scikit-learn trains multi-output
    ``squared_error`` on ``k`` times this gradient (the sum over outputs)
    while it reports the mean.

    The cross-entropies are computed from the logits ``z`` (log-sum-exp,
    ``logaddexp``), so they stay finite and exact for any finite ``z``.
    scikit-learn computes them from probabilities clipped to the machine
    epsilon; both agree unless a probability is within epsilon of 0 or 1.

    Parameters
    ----------
    loss : str
        One of :data:`LOSSES`.
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
    _check_name("loss", loss, LOSSES)
    _check_name("output_activation", output_activation, ACTIVATIONS)
    z = _as_float_array(z)
    y = np.asarray(y, dtype=z.dtype)
    if z.ndim != 2 or y.shape != z.shape:
        raise ValueError(f"z and y must be 2-D arrays of the same shape (n, k); got z {z.shape} and y {y.shape}")
    n, k = z.shape
    w = np.ones(n, dtype=z.dtype) if sample_weight is None else np.asarray(sample_weight, dtype=z.dtype)
    W = float(np.sum(w, dtype=np.float64))
    wc = w[:, None]

    if loss == "squared_error":
        a = activation_forward(output_activation, z, slope)
        diff = a - y
        value = np.sum(wc * diff * diff) / (2 * W * k)
        dZ = activation_backward(output_activation, wc * diff * z.dtype.type(grad_scale / (W * k)), z, a, slope)
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
    loss: str,
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
    loss : str
        One of :data:`LOSSES`.
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


def to_targets(y, loss: str, n_outputs: int, dtype="float64") -> np.ndarray:
    """Turn labels or target values into the 2-D targets the losses expect.

    - ``log_loss`` with a 1-D array of integer class indices in
      ``[0, n_outputs)``: one-hot rows, shape ``(n, n_outputs)``.
    - any loss with a 2-D array: the array as it is, shape ``(n, n_outputs)``.
    - ``squared_error`` or ``binary_log_loss`` with a 1-D array: one column,
      shape ``(n, 1)`` (``n_outputs`` must be 1).

    Parameters
    ----------
    y : array_like of shape (n,) or (n, n_outputs)
    loss : str
        One of :data:`LOSSES`.
    n_outputs : int
        Width of the network's output layer.
    dtype : dtype, default="float64"

    Returns
    -------
    Y : ndarray of shape (n, n_outputs) and the given dtype
    """
    _check_name("loss", loss, LOSSES)
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
    loss: str,
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
    loss: str,
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
    loss : str
        One of :data:`LOSSES`.
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


def glorot_bound(fan_in: int, fan_out: int, activation: str) -> float:
    """Half-width of scikit-learn's uniform Glorot initialization.

    Weights are drawn from ``U(-bound, bound)`` with
    ``bound = sqrt(factor / (fan_in + fan_out))``, where ``factor`` is 2 for
    the logistic activation and 6 otherwise. As in scikit-learn,
    ``activation`` is the network's hidden activation, used for every layer.
    """
    _check_name("activation", activation, ACTIVATIONS)
    factor = 2.0 if activation in ("logistic", "sigmoid") else 6.0
    return math.sqrt(factor / (fan_in + fan_out))
