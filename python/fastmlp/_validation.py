"""Input checks shared by the public API.

Every check raises ``TypeError`` or ``ValueError`` whose message names the
argument, what was expected and what came, before anything is modified.

Arrays: any array-like of real numbers is accepted and read correctly —
float32/float64 as they are; float16, longdouble, integers and booleans
(as 0/1) converted to the network's dtype; big-endian, non-contiguous,
negatively strided, read-only and memory-mapped arrays read correctly (copied
only where needed). Rejected with ``TypeError``: object, string, bytes, void,
datetime and complex arrays. Rejected with ``ValueError``: NaN or ±inf
(including float64 values that overflow the network's float32), wrong shapes,
zero samples.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

DTYPES = ("float32", "float64")


def check_dtype(dtype: Any) -> np.dtype:
    """'float32' or 'float64' (or their NumPy types) as a native-byte-order dtype."""
    try:
        dt = None if dtype is None else np.dtype(dtype)  # np.dtype(None) would be float64
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return np.dtype(dt.name)


# One set of argument checks for the whole package, in two voices: "plain" (Network, the
# optimizers, schedules: "lr must be ...") and "sklearn" (the estimators' parameters, in
# scikit-learn's words, which its users' code and tests match: "The 'alpha' parameter must
# be ..."). The bounds are the C++ check()s' (trainer.cpp, optimizer.cpp, network.cpp), which
# stay as the last line of defence; a check here is never looser than the one there.
Style = Literal["plain", "sklearn"]


def is_sparse(x: Any) -> bool:
    """Whether `x` is a scipy.sparse matrix or array.

    SciPy is imported only when `x`'s type (or a base of it) comes from SciPy: a NumPy
    array, a list or a pandas frame never imports it (``import fastmlp`` and a first
    prediction stay free of SciPy, scikit-learn and pandas).
    """
    if not any(getattr(c, "__module__", "").startswith("scipy.") for c in type(x).__mro__):
        return False
    import scipy.sparse as sp

    return bool(sp.issparse(x))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_choice(name: str, value: Any, choices: Sequence[str], *, style: Style = "plain") -> str:
    if style == "sklearn":
        if not isinstance(value, str) or value not in choices:
            kind = ValueError if isinstance(value, str) else TypeError
            raise kind(f"The '{name}' parameter must be one of {list(choices)}; got {value!r}.")
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {list(choices)}; got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_bool(name: str, value: Any, *, style: Style = "plain") -> bool:
    if not isinstance(value, (bool, np.bool_)):
        if style == "sklearn":
            raise TypeError(f"The '{name}' parameter must be a bool; got {value!r} of type {type(value).__name__}.")
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


INT64_MAX = 2**63 - 1


def check_int(
    name: str, value: Any, minimum: int | None = None, maximum: int | None = INT64_MAX, *, style: Style = "plain"
) -> int:
    if style == "sklearn":  # scikit-learn's parameters have a lower bound only
        if not _is_int(value):
            raise TypeError(
                f"The '{name}' parameter must be an int >= {minimum}; got {value!r} of type {type(value).__name__}."
            )
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ValueError(f"The '{name}' parameter must be an int >= {minimum}; got {value!r}.")
        return operator.index(value)
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    open_min: bool = False,
    open_max: bool = False,
    allow_inf: bool = False,
    style: Style = "plain",
) -> float:
    """A real number in the interval (open or closed at each end; None: unbounded), finite unless
    `allow_inf` (+inf accepted then: scikit-learn's tol)."""
    if not _is_real(value):
        if style == "sklearn":
            raise TypeError(
                f"The '{name}' parameter must be a real number; got {value!r} of type {type(value).__name__}."
            )
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    overflow = False
    try:
        x = float(value)
    except OverflowError:  # an int beyond float's range
        x, overflow = math.inf, True
    ok = math.isfinite(x) or (allow_inf and x == math.inf)
    ok = ok and (minimum is None or (x > minimum if open_min else x >= minimum))
    ok = ok and (maximum is None or (x < maximum if open_max else x <= maximum))
    if ok:
        return x
    if overflow and style == "plain":
        raise ValueError(f"{name} must be a finite number, got {value!r}")

    def bound(b: float | None, unbounded: str) -> str:  # the plain voice prints 0 and 1 as %g, scikit-learn's as given
        return unbounded if b is None else f"{b:g}" if style == "plain" else f"{b}"

    interval = (
        f"{'(' if open_min or minimum is None else '['}{bound(minimum, '-inf')}, "
        f"{bound(maximum, 'inf')}{')' if open_max or maximum is None else ']'}"
    )
    if style == "sklearn":
        finite = "" if allow_inf else " and finite"
        raise ValueError(f"The '{name}' parameter must be a real number in {interval}{finite}; got {value!r}.")
    raise ValueError(f"{name} must be a finite number in {interval}, got {x!r}")


def check_layer_sizes(layer_sizes: Iterable[Any]) -> tuple[int, ...]:
    if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__iter__"):
        raise TypeError(f"layer_sizes must be a sequence of ints, got {type(layer_sizes).__name__}")
    sizes = tuple(layer_sizes)
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes must have at least 2 entries (inputs, outputs), got {list(sizes)}")
    return tuple(check_int(f"layer_sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes))


def check_seed(seed: Any) -> int:
    """A 64-bit seed; None draws one from the operating system."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    return check_int("seed", seed, minimum=0, maximum=2**64 - 1)


def _check_numeric(name: str, a: np.ndarray) -> None:
    kind = a.dtype.kind
    if kind in "OUSV":
        raise TypeError(f"{name} must hold numbers, got an array of dtype {a.dtype}")
    if kind == "c":
        raise TypeError(f"{name} must be real, got an array of complex dtype {a.dtype}")
    if kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got an array of dtype {a.dtype}")


def as_array(name: str, x: Any, dtype: np.dtype) -> np.ndarray:
    """Any array-like as an ndarray of real numbers, before any conversion of dtype."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{name} must be array-like of numbers: {exc}") from None
    _check_numeric(name, a)
    return a


def _convert(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """C-contiguous copy (or `a` itself) in `dtype`; overflow becomes inf, caught by check_finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(a, dtype=dtype)


def check_finite(name: str, a: np.ndarray) -> None:
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = "NaN" if np.isnan(a).any() else "infinity"
        at = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise ValueError(f"{name} must be finite, got {bad} at index {at}")


def as_matrix(name: str, x: Any, n_cols: int, dtype: np.dtype, what: str = "features") -> np.ndarray:
    """x as a C-contiguous (n, n_cols) array of `dtype` with n >= 1, all finite.

    Integers, booleans (0/1) and float16 are converted; big-endian, strided and
    read-only arrays are read correctly (copied only where needed).
    """
    a = as_array(name, x, dtype)
    if a.ndim != 2:
        hint = f"; reshape a single sample with {name}.reshape(1, -1)" if a.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_samples, {n_cols}), got a {a.ndim}-D array of shape {a.shape}{hint}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} must have at least one sample, got shape {a.shape}")
    if a.shape[1] != n_cols:
        raise ValueError(f"{name} must have {n_cols} {what} (columns), got shape {a.shape}")
    check_finite(name, a)
    out = _convert(a, dtype)
    check_finite(name, out)  # a float64 beyond float32's range overflows here
    return out


def as_targets(name: str, y: Any, loss: str, n_samples: int, n_outputs: int, dtype: np.dtype) -> np.ndarray:
    """Targets as a C-contiguous (n_samples, n_outputs) array of `dtype`.

    For ``log_loss`` a 1-D array of integer class indices in [0, n_outputs) is
    one-hot encoded; otherwise a 1-D y is taken as one output column.
    """
    a = as_array(name, y, dtype)
    if a.ndim == 1 and loss == "log_loss":
        if a.dtype.kind not in "biu":  # booleans: class indices 0/1, as everywhere else
            raise TypeError(
                f"{name} for log_loss must be integer class indices (1-D) or one-hot (2-D); "
                f"got a 1-D array of dtype {a.dtype}"
            )
        a = a.astype(np.int64) if a.dtype.kind == "b" else a
        if a.shape[0] != n_samples:
            raise ValueError(f"{name} must have {n_samples} entries (one per sample of X), got {a.shape[0]}")
        if a.size and (a.min() < 0 or a.max() >= n_outputs):
            bad = a[(a < 0) | (a >= n_outputs)][0]
            raise ValueError(
                f"{name} must hold class indices in [0, {n_outputs}) for {n_outputs} outputs, got {int(bad)}"
            )
        onehot = np.zeros((n_samples, n_outputs), dtype=dtype)
        onehot[np.arange(n_samples), a] = 1
        return onehot
    if a.ndim == 1:
        if n_outputs != 1:
            raise ValueError(
                f"{name} must be 2-D (n_samples, {n_outputs}) for a network with {n_outputs} outputs, "
                f"got a 1-D array of shape {a.shape}"
            )
        a = a.reshape(-1, 1)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, {n_outputs}), got a {a.ndim}-D array of shape {a.shape}")
    if a.shape != (n_samples, n_outputs):
        raise ValueError(
            f"{name} must have shape ({n_samples}, {n_outputs}) to match X and the network's outputs, got {a.shape}"
        )
    check_finite(name, a)
    out = _convert(a, dtype)
    check_finite(name, out)
    return out


def as_sample_weight(sample_weight: Any, n_samples: int, dtype: np.dtype) -> np.ndarray | None:
    """None, or `sample_weight` as a C-contiguous (n_samples,) array of finite values >= 0 with a positive sum.

    A scalar is broadcast to every sample.
    """
    if sample_weight is None:
        return None
    a = as_array("sample_weight", sample_weight, dtype)
    if a.ndim == 0:
        a = np.full(n_samples, a, dtype=dtype)
    if a.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), one weight per sample, got {a.shape}")
    out = np.ascontiguousarray(a, dtype=dtype)
    check_finite("sample_weight", out)
    if (out < 0).any():
        raise ValueError(f"sample_weight must be >= 0, got {out[out < 0][0]!r} at index {int(np.argmax(out < 0))}")
    if not out.sum() > 0:
        raise ValueError("sample_weight must have a positive sum, got all zeros")
    return out


def check_activations(name: str, value: Any, n_hidden: int, choices: Sequence[str]) -> list[str]:
    """One activation name for every hidden layer (a str), or one per hidden layer (a sequence of str)."""
    if isinstance(value, str):
        return [check_choice(name, value, choices)] * max(n_hidden, 1)
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a str or a list of str (one per hidden layer), got {type(value).__name__}")
    if len(value) != n_hidden:
        raise ValueError(f"{name} must name one activation per hidden layer ({n_hidden}), got {len(value)}")
    # No hidden layer ([]): the core still takes one activation, for the Glorot bound ('relu''s, as
    # scikit-learn's for every activation but 'logistic').
    return [check_choice(f"{name}[{i}]", v, choices) for i, v in enumerate(value)] or ["relu"]


def check_dropout(value: Any, n_layers: int) -> list[float]:
    """Dropout rates per layer input, ``[p_inputs, p_hidden_1, ...]`` (n_layers values), each in [0, 1).

    A single number is the rate of every hidden layer (the inputs are kept); a sequence gives
    the inputs' rate first, then one per hidden layer.
    """
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != n_layers:
            raise ValueError(
                f"dropout must be a number or a list of {n_layers} rates (the inputs', then one per "
                f"hidden layer), got {len(value)} values"
            )
        return [check_float(f"dropout[{i}]", p, minimum=0.0, maximum=1.0, open_max=True) for i, p in enumerate(value)]
    p = check_float("dropout", value, minimum=0.0, maximum=1.0, open_max=True)
    return [0.0] + [p] * (n_layers - 1)
