r"""MLPClassifier and MLPRegressor: scikit-learn's estimators, trained in C++.

Every constructor parameter, fitted attribute and formula of scikit-learn's
``sklearn.neural_network`` estimators (version 1.9) carries over, so that
``from fastmlp import MLPClassifier`` replaces
``from sklearn.neural_network import MLPClassifier`` with no other change.
With the same ``random_state`` both draw the same initial weights, the same
shuffles and the same validation split (NumPy's ``RandomState``, consumed in
scikit-learn's order).

The objective of a mini-batch :math:`B` with sample weights :math:`w_i`
(all 1 by default) and :math:`W_B = \sum_{i\in B} w_i` is

.. math::
    L_B = \frac{1}{W_B}\Big(\sum_{i\in B} w_i\,\ell_i
          + \tfrac{\alpha}{2}\sum_l \|W_l\|^2 + l_1 \sum_l |W_l|\Big)

with :math:`\ell_i` the cross-entropy (softmax output for multiclass,
logistic for binary and multilabel), half the squared error averaged over
the :math:`k` outputs (identity output), or half the Poisson deviance (exp
output). As in scikit-learn, multi-output squared error is trained on the
gradient of the *sum* over outputs while ``loss_`` reports the mean (a
factor :math:`k` apart).

Beyond scikit-learn (all off by default): ``dtype``, ``precision`` (``"bf16"``
mixed precision), ``n_threads``, the
``leaky_relu`` activation, ``l1``, ``clip_norm``/``clip_value``, the solvers
``adamw``, ``rmsprop``, ``adagrad``, the schedules ``step``, ``exponential``,
``cosine`` with ``warmup_epochs``, ``class_weight``, ``validation_data`` in
:meth:`fit` with ``validation_loss_curve_``, ``callbacks``, ``verbose=2``
(progress bar), :meth:`save` / :func:`fastmlp.load`, :meth:`to_sklearn`,
``distributed='mpi'`` (data-parallel training over MPI, :mod:`fastmlp.distributed`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import operator
import os
import pickle
import threading
import types
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Callable, ClassVar

import numpy as np

from . import _compat, data as _data, layers as _layers, optim
from ._compat import BaseEstimator, ClassifierMixin, ConvergenceWarning, RegressorMixin, check_random_state
from ._labels import LabelCoder
from ._names import GLOROT_FACTOR, HIDDEN, LOSS_OUTPUT, OPTIMIZERS, loss_spec
from ._training import (
    Callbacks,
    DataParallelEpochs,
    EarlyStopping,
    EpochLoop,
    EpochStrategy,
    FitProgress,
    LearningRatePolicy,
    LocalEpochs,
    ProgressBar,
)
from ._validation import _is_int, _is_real, check_bool, check_choice, check_dropout, check_float, check_int
from .epoch import EpochRequest, epoch_options, make_regularization
from .network import Network
from .optim import Optimizer
from .schedules import Schedule

# solver= name -> its row of the core's kOptimizers, and fastmlp.optim's class of that name: "sgd" -> "SGD"
_SOLVER_ROW: dict[str, str] = {name.lower(): name for name in OPTIMIZERS}
STOCHASTIC_SOLVERS = tuple(_SOLVER_ROW)
# The estimator's parameter for an optimizer hyperparameter where scikit-learn names it otherwise
# (any other, e.g. rho, weight_decay, is the estimator parameter of the same name).
_SOLVER_PARAMS = {
    "lr": "learning_rate_init",
    "beta1": "beta_1",
    "beta2": "beta_2",
    "eps": "epsilon",
    "nesterov": "nesterovs_momentum",
}
SOLVERS = STOCHASTIC_SOLVERS + ("lbfgs",)
ACTIVATIONS = HIDDEN  # the core's hidden-layer activations, without aliases (scikit-learn's list, extended)
# MLPRegressor's losses: the core's that take any output activation (the regressor's is then
# identity) or need exp (poisson), i.e. all but the classifier's two cross-entropies.
REGRESSION_LOSSES = tuple(name for name, out in LOSS_OUTPUT.items() if out in (None, "exp"))
LEARNING_RATES = ("constant", "invscaling", "adaptive", "step", "exponential", "cosine")
IN_EPOCH_SCHEDULES = ("step", "exponential", "cosine")
NORMALIZATIONS = ("batch", "layer")  # normalization= (None: none): BatchNorm / LayerNorm after each hidden Dense
# scikit-learn's sentence, which its users' code and tests match; details follow it.
NON_FINITE = (
    "Solver produced non-finite parameter weights. The input data may contain large values and need to be preprocessed."
)

# ---------------------------------------------------------------------------
# Parameter checks: run at fit time (scikit-learn's convention), each naming
# the parameter, what it must be and what it is.
# ---------------------------------------------------------------------------


# The checks are _validation's, in scikit-learn's voice (style="sklearn"); these factories
# give the table below one callable per parameter.
def _real_check(
    lo: float,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_inf: bool = False,
    optional: bool = False,
) -> Callable[[str, Any], None]:
    """A real number in the interval (hi None: unbounded), finite unless `allow_inf` (the engine
    takes no infinite rates or sizes)."""

    def check(name: str, v: Any) -> None:
        if not (optional and v is None):
            check_float(name, v, lo, hi, open_min=lo_open, open_max=hi_open, allow_inf=allow_inf, style="sklearn")

    return check


def _int_check(lo: int, *, optional: bool = False, inf_ok: bool = False) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        if not ((optional and v is None) or (inf_ok and _is_real(v) and v == np.inf)):
            check_int(name, v, lo, None, style="sklearn")

    return check


def _choice_check(options: Sequence[str], *, optional: bool = False) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        if not (optional and v is None):
            check_choice(name, v, options, style="sklearn")

    return check


def _bool(name: str, v: Any) -> None:
    check_bool(name, v, style="sklearn")


def _check_batch_size(name: str, v: Any) -> None:
    if not (isinstance(v, str) and v == "auto"):
        if isinstance(v, str):
            raise ValueError(f"The '{name}' parameter must be 'auto' or an int >= 1; got {v!r}.")
        check_int(name, v, 1, None, style="sklearn")


def _check_verbose(name: str, v: Any) -> None:
    if not isinstance(v, (bool, np.bool_, numbers.Integral)):
        raise TypeError(f"The '{name}' parameter must be a bool or an int; got {v!r}.")


def _check_dtype(name: str, v: Any) -> None:
    if v is not None and (not isinstance(v, (str, type, np.dtype)) or np.dtype(v).name not in ("float32", "float64")):
        raise ValueError(f"The '{name}' parameter must be None, 'float32' or 'float64'; got {v!r}.")


def _check_activation(name: str, v: Any) -> None:
    """One of ACTIVATIONS, or (fastmlp's extension) a list of them, one per hidden layer."""
    if isinstance(v, (list, tuple)):
        for a in v:
            check_choice(name, a, ACTIVATIONS, style="sklearn")
    else:
        check_choice(name, v, ACTIVATIONS, style="sklearn")


def _check_dropout(name: str, v: Any) -> None:
    """A rate in [0, 1), or a list of them (the inputs', then one per hidden layer)."""
    for p in v if isinstance(v, (list, tuple)) else [v]:
        check_float(name, p, 0, 1, open_max=True, style="sklearn")


def _check_layers(name: str, v: Any) -> None:
    """None, or a list of fastmlp.layers layers (or their dicts): the hidden part of the network."""
    if v is None:
        return
    if isinstance(v, (str, bytes, dict)) or not isinstance(v, (list, tuple)):
        raise TypeError(
            f"The '{name}' parameter must be None or a list of fastmlp.layers layers (Dense, BatchNorm, ...); "
            f"got {type(v).__name__}."
        )
    try:
        _layers.from_spec(list(v))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"The '{name}' parameter: {exc}") from None


def _check_random_state(name: str, v: Any) -> None:
    check_random_state(v)  # scikit-learn's own message


def _check_callbacks(name: str, v: Any) -> None:
    if v is not None and not callable(v) and (not isinstance(v, (list, tuple)) or not all(callable(c) for c in v)):
        raise TypeError(f"The '{name}' parameter must be None, a callable or a list of callables; got {v!r}.")


# Every estimator parameter (but hidden_layer_sizes) and what it must be, checked in this order by
# _BaseMLP._check_params: adding a parameter is one line here. Names of activations and solvers
# are the module's ACTIVATIONS / SOLVERS; `class_weight` is the classifier's own.
PARAMETER_CONSTRAINTS: dict[str, Callable[[str, Any], None]] = {
    "activation": _check_activation,
    "solver": _choice_check(SOLVERS),
    "alpha": _real_check(0),
    "batch_size": _check_batch_size,
    "learning_rate": _choice_check(LEARNING_RATES),
    "learning_rate_init": _real_check(0, lo_open=True),
    "power_t": _real_check(0),
    "max_iter": _int_check(1),
    "shuffle": _bool,
    "random_state": _check_random_state,
    "tol": _real_check(0, allow_inf=True),
    "verbose": _check_verbose,
    "warm_start": _bool,
    "momentum": _real_check(0, 1, hi_open=True),
    "nesterovs_momentum": _bool,
    "early_stopping": _bool,
    "validation_fraction": _real_check(0, 1, hi_open=True),
    "beta_1": _real_check(0, 1, hi_open=True),
    "beta_2": _real_check(0, 1, hi_open=True),
    "epsilon": _real_check(0, lo_open=True),
    "n_iter_no_change": _int_check(1, inf_ok=True),
    "max_fun": _int_check(1),
    "dtype": _check_dtype,
    "n_threads": _int_check(1, optional=True),
    "distributed": _choice_check(("mpi",), optional=True),
    "leaky_relu_slope": _real_check(0),
    "l1": _real_check(0),
    "clip_norm": _real_check(0, lo_open=True, optional=True),
    "clip_value": _real_check(0, lo_open=True, optional=True),
    "weight_decay": _real_check(0),
    "rho": _real_check(0, 1, hi_open=True),
    "lr_gamma": _real_check(0),
    "lr_step_size": _real_check(0, lo_open=True),
    "lr_min": _real_check(0),
    "warmup_epochs": _real_check(0),
    "callbacks": _check_callbacks,
    # fastmlp's extensions; the lengths of the lists are checked against hidden_layer_sizes afterwards
    "dropout": _check_dropout,
    "input_noise": _real_check(0),
    "max_norm": _real_check(0, lo_open=True, optional=True),
    "precision": _choice_check(("fp32", "bf16"), optional=True),
    # networks of layers (fastmlp.layers): see _BaseMLP._architecture
    "normalization": _choice_check(NORMALIZATIONS, optional=True),
    "residual": _bool,
    "layers": _check_layers,
}


# The parameters a fitted model's prediction reads (the network's activations; the threads):
# checked when a model is loaded. The others act at the next fit, and are checked there.
_PREDICTION_PARAMS = ("activation", "leaky_relu_slope", "n_threads")


def _hidden_sizes(h: Any) -> list[int]:
    sizes = list(h) if hasattr(h, "__iter__") and not isinstance(h, str) else [h]
    for s in sizes:
        if not _is_int(s):
            raise TypeError(f"The 'hidden_layer_sizes' parameter must be an int or a sequence of ints; got {h!r}.")
    if any(s <= 0 for s in sizes):
        raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
    return [int(s) for s in sizes]


def _dense_shapes(spec: list[dict[str, Any]], n_features: int) -> list[tuple[int, int]]:
    """(n_in, n_out) of each Dense layer of a network of layers, in order (coefs_' shapes)."""
    return [(s.n_in, s.n_out) for s in _layers.shapes(spec, n_features).layers if s.kind == "dense"]


def _flatten_spec(spec: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A spec's layer dicts, depth-first through residual blocks."""
    for d in spec:
        yield d
        if d["kind"] == "residual":
            yield from _flatten_spec(d["layers"])


def _spec_activations(spec: list[dict[str, Any]]) -> list[str]:
    """The names of a spec's Activation layers, depth-first."""
    return [d["name"] for d in _flatten_spec(spec) if d["kind"] == "activation"]


def _without_dropout(spec: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spec without its Dropout layers (which hold no parameter): the layout of the parameters and state."""
    out = []
    for d in spec:
        if d["kind"] == "dropout":
            continue
        out.append({**d, "layers": _without_dropout(d["layers"])} if d["kind"] == "residual" else d)
    return out


# ---------------------------------------------------------------------------
# The shared estimator
# ---------------------------------------------------------------------------


class _AvailableIf:
    """A method that exists only while check(instance) holds (scikit-learn's available_if)."""

    def __init__(self, fn: Callable[..., Any], check: Callable[[Any], bool]) -> None:
        self.fn, self.check = fn, check
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self.fn
        if not self.check(obj):
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers; {obj.solver!r} is not stochastic."
            )
        return types.MethodType(self.fn, obj)


def _stochastic(est: Any) -> bool:
    return est.solver in STOCHASTIC_SOLVERS


_FITTING: set[int] = set()  # id() of the estimators inside fit/partial_fit
_FITTING_LOCK = threading.Lock()


@contextlib.contextmanager
def _exclusive(est: Any) -> Iterator[None]:
    """Refuses (RuntimeError, before anything changes) a second fit of `est` while one runs."""
    with _FITTING_LOCK:
        if id(est) in _FITTING:
            raise RuntimeError(
                f"this {type(est).__name__} is already being fitted (by another thread, or by a "
                "callback of its own fit); fit one estimator from one thread at a time"
            )
        _FITTING.add(id(est))
    try:
        yield
    finally:
        with _FITTING_LOCK:
            _FITTING.discard(id(est))


def _check_fits_in_memory(layer_units: list[int], dtype: np.dtype) -> None:
    """ValueError before allocating weights larger than physical memory (e.g. sparse X with 1e9 columns)."""
    count = sum(float(a) * b + b for a, b in zip(layer_units[:-1], layer_units[1:]))
    need = count * (8 + 2 * np.dtype(dtype).itemsize)  # float64 draws, then parameters and gradients
    try:
        have = float(os.sysconf("SC_PHYS_PAGES")) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        have = float("inf")
    if need > have:
        raise ValueError(
            f"layer sizes {layer_units} (n_features_in_, hidden_layer_sizes, n_outputs_) give "
            f"{count:.4g} parameters, which need {need / 2**30:.4g} GiB; this machine has "
            f"{have / 2**30:.4g} GiB (reduce the number of features or hidden units)"
        )


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    from . import get_num_threads, set_num_threads

    before = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(before)


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share; not for direct use."""

    _loss_name: str  # set per fit: the C++ loss
    # Fitted state, set by fit/partial_fit (declared for type checkers; absent before a fit).
    # As in scikit-learn, the last four are None in the mode that does not use them
    # (_init_state); each is read only in the mode that does, hence not Optional here.
    coefs_: list[np.ndarray]
    intercepts_: list[np.ndarray]
    loss_curve_: list[float]
    validation_scores_: list[float]
    validation_loss_curve_: list[float]
    best_loss_: float
    best_validation_score_: float
    _optimizer: Optimizer | None
    _best_params: np.ndarray | None
    _best_state: np.ndarray | None  # batch norm's running statistics of the best epoch (early stopping)
    _layers_spec: list[dict[str, Any]] | None  # the fitted network of layers' spec; None: a plain network
    _mpi: types.SimpleNamespace | None

    # --- checks ------------------------------------------------------------
    # The parameters of one estimator only (the loss's), checked after PARAMETER_CONSTRAINTS.
    _OWN_CONSTRAINTS: ClassVar[dict[str, Callable[[str, Any], None]]] = {}

    def _check_params(self) -> list[int]:
        """Checks every constructor parameter against PARAMETER_CONSTRAINTS, then _OWN_CONSTRAINTS (in
        their order); returns the hidden sizes."""
        hidden = _hidden_sizes(self.hidden_layer_sizes)
        for name, check in (PARAMETER_CONSTRAINTS | self._OWN_CONSTRAINTS).items():
            check(name, getattr(self, name))
        self._check_training_extensions(hidden)
        return hidden

    def _check_training_extensions(self, hidden: list[int]) -> None:
        """What the table cannot see: the lengths of list-valued activation and dropout, the solver, and
        precision with dtype."""
        if self.precision is not None and self.dtype is not None and np.dtype(self.dtype) != np.float32:
            raise ValueError(
                f"precision={self.precision!r} computes in float32: it needs dtype=None or 'float32', "
                f"got dtype={np.dtype(self.dtype).name!r}"
            )
        if isinstance(self.activation, (list, tuple)) and len(self.activation) != len(hidden):
            raise ValueError(
                f"The 'activation' parameter must be a str or a list of one activation per hidden "
                f"layer ({len(hidden)}); got {self.activation!r}."
            )
        if isinstance(self.dropout, (list, tuple)) and len(self.dropout) != len(hidden) + 1:
            raise ValueError(
                f"The 'dropout' parameter must be a real number in [0, 1) or a list of "
                f"{len(hidden) + 1} (the inputs' rate, then one per hidden layer); got {self.dropout!r}."
            )
        if self.solver == "lbfgs" and self._perturbs():
            raise ValueError(
                "dropout, input_noise and max_norm act on mini-batch updates: they need a stochastic "
                f"solver ({', '.join(STOCHASTIC_SOLVERS)}), got solver='lbfgs'"
            )
        self._check_layer_parameters()

    def _check_layer_parameters(self) -> None:
        """normalization, residual and layers together, and with dropout and the solver (checked values)."""
        if self.layers is not None:
            given = [
                f"{k}={getattr(self, k)!r}"
                for k, off in (("normalization", None), ("residual", False))
                if getattr(self, k) != off
            ]
            if given:
                raise ValueError(
                    f"layers= gives the hidden layers in full: put the normalization and residual blocks in the "
                    f"list (fastmlp.layers.BatchNorm, LayerNorm, Residual) and leave {', '.join(given)} at the default"
                )
            if isinstance(self.dropout, (list, tuple)) or self.dropout != 0:
                raise ValueError(
                    f"layers= gives the hidden layers in full: put fastmlp.layers.Dropout layers in the list "
                    f"and leave dropout at 0, got dropout={self.dropout!r}"
                )
        elif self._layered() and isinstance(self.dropout, (list, tuple)) and self.dropout[0] > 0:
            raise ValueError(
                f"dropout[0] (the inputs' rate) is not available with normalization or residual blocks, got "
                f"dropout={self.dropout!r} (use input_noise, or dropout on the hidden layers only)"
            )
        if self.solver == "lbfgs" and "dropout" in self._given_kinds():
            raise ValueError(
                "a Dropout layer in layers= acts on mini-batch updates: it needs a stochastic "
                f"solver ({', '.join(STOCHASTIC_SOLVERS)}), got solver='lbfgs'"
            )
        if self.solver == "lbfgs" and (self.normalization == "batch" or "batch_norm" in self._given_kinds()):
            raise ValueError(
                "solver='lbfgs' cannot train batch normalization (normalization='batch' or a BatchNorm in layers): "
                "its full-batch objective uses batch statistics and never updates the running statistics that "
                f"predict uses; use a stochastic solver ({', '.join(STOCHASTIC_SOLVERS)}) or normalization='layer'"
            )

    def _layered(self) -> bool:
        """Whether the parameters ask for a network of layers (normalization, residual or layers set)."""
        return self.layers is not None or self.normalization is not None or bool(self.residual)

    def _given_kinds(self) -> set[str]:
        """The kinds of the layers in the layers parameter, residual blocks' included (checked value)."""

        def kinds(layers: Sequence[Any]) -> set[str]:
            out: set[str] = set()
            for x in layers:
                out.add(x.kind)
                if isinstance(x, _layers.Residual):
                    out |= kinds(x.layers)
            return out

        return set() if self.layers is None else kinds(_layers.from_spec(list(self.layers)))

    def _architecture(self, n_features: int, n_outputs: int) -> list[dict[str, Any]] | None:
        """The spec (fastmlp.layers.to_spec) of the network the parameters ask for, the output Dense
        included; None for the plain network of hidden_layer_sizes (checked parameters).

        ``layers`` given: those layers, then ``Dense(n_outputs)``. Else, for each hidden width h_l of
        hidden_layer_sizes: ``Dense(h_l)``, then ``BatchNorm()``/``LayerNorm()`` with
        normalization='batch'/'layer', then ``Activation(activation_l)``, then ``Dropout(p_l)`` where
        dropout gives the layer a rate above 0; with ``residual=True`` every hidden layer but the first
        whose width equals its input's (h_l == h_{l-1}) is that list wrapped in ``Residual``:
        ``x + Dropout(act(norm(x W + b)))``. The widths of ``Embedding``/``Residual`` are checked
        here (ValueError naming the layer).
        """
        if not self._layered():
            return None
        hidden: list[_layers.Layer]
        if self.layers is not None:
            hidden = _layers.from_spec(list(self.layers))
        else:
            sizes = _hidden_sizes(self.hidden_layer_sizes)
            acts = self._hidden_activations(len(sizes))
            rates = check_dropout(self.dropout, len(sizes) + 1)
            norm = {"batch": _layers.BatchNorm, "layer": _layers.LayerNorm}.get(self.normalization or "")
            hidden, width = [], n_features
            for l, h in enumerate(sizes):
                block: list[_layers.Layer] = [_layers.Dense(h)]
                block += [norm()] if norm is not None else []
                block.append(_layers.Activation(acts[l]))
                block += [_layers.Dropout(rates[l + 1])] if rates[l + 1] > 0 else []
                if self.residual and l > 0 and h == width:
                    hidden.append(_layers.Residual(tuple(block)))
                else:
                    hidden += block
                width = h
        spec = _layers.to_spec([*hidden, _layers.Dense(n_outputs)])
        try:
            _layers.shapes(spec, n_features)
        except ValueError as exc:
            raise ValueError(f"{exc} (for X of {n_features} features; layers= is the hidden part)") from None
        return spec

    def _perturbs(self) -> bool:
        """Whether dropout, input noise or max-norm is on (checked values)."""
        rates = self.dropout if isinstance(self.dropout, (list, tuple)) else [self.dropout]
        return any(p > 0 for p in rates) or self.input_noise > 0 or self.max_norm is not None

    def _loss_parameters(self) -> dict[str, float]:
        """The parameter the fit's loss (_loss_name) reads, from this estimator's checked parameters."""
        return {}

    def _loss(self) -> dict[str, Any]:
        """The fit's loss as the spec Network takes: ``{"name": _loss_name}`` and its parameter."""
        return loss_spec({"name": self._loss_name, **self._loss_parameters()}, style="sklearn")

    def _hidden_activations(self, n_hidden: int) -> list[str]:
        return list(self.activation) if isinstance(self.activation, (list, tuple)) else [self.activation] * n_hidden

    def _data_dtype(self) -> Any:
        if self.dtype is None:  # precision 'fp32' or 'bf16': a float32 network
            return (np.float64, np.float32) if self.precision is None else np.float32
        return np.dtype(self.dtype)

    def _precision(self, dtype: np.dtype) -> str | None:
        """The network's precision: 'bf16' for a float32 network when asked, else its dtype's own (None)."""
        return "bf16" if self.precision == "bf16" and dtype == np.float32 else None

    # --- the network behind coefs_ and intercepts_ --------------------------
    def _network(self, training: bool = False) -> Network:
        """The C++ network whose views coefs_ and intercepts_ are.

        coefs_/intercepts_ stay user-settable (scikit-learn's warm-start
        idiom): arrays that are not this network's views are copied in.
        The training-only settings (dropout, input_noise, max_norm), which do
        not change the network's outputs, are applied for `training` only
        (after fit's checks): prediction, saving and summaries of a fitted
        model use its network as it is, whatever set_params put there for the
        next fit. A network built anew keeps the training step count (the key
        of the dropout draws) of the one it replaces.
        """
        if getattr(self, "_layers_spec", None) is not None:
            return self._layered_network(training)
        coefs, intercepts = self.coefs_, self.intercepts_
        sizes = [coefs[0].shape[0]] + [c.shape[1] for c in coefs] if len(coefs) else []
        if len(coefs) == 0 or len(coefs) != len(intercepts):
            raise ValueError(
                f"coefs_ and intercepts_ must be lists of the same non-zero length, got "
                f"{len(coefs)} and {len(intercepts)}"
            )
        for i, (c, b) in enumerate(zip(coefs, intercepts)):
            c, b = np.asarray(c), np.asarray(b)
            if c.ndim != 2 or (i and c.shape[0] != sizes[i]) or b.shape != (c.shape[1],):
                raise ValueError(
                    f"coefs_[{i}] of shape {c.shape} and intercepts_[{i}] of shape {b.shape} do not "
                    f"chain into layer sizes {sizes}"
                )
        old: Network | None = getattr(self, "_net", None)
        dtype = np.dtype(getattr(self, "_fit_dtype", None) or np.asarray(coefs[0]).dtype)
        if dtype.name not in ("float32", "float64"):
            dtype = np.dtype(np.float64)
        activation = self.activation if isinstance(self.activation, str) else list(self.activation)

        def build(noise: dict[str, Any]) -> Network:
            # The network's seed keys the dropout and noise draws only (its weights are replaced).
            return Network(
                sizes,
                activation=activation,
                output_activation=self.out_activation_,
                dtype=dtype,
                leaky_relu_slope=float(self.leaky_relu_slope),
                precision=self._precision(dtype),
                **noise,
            )

        if (
            old is not None
            and list(old.layer_sizes) == sizes
            and old.dtype == dtype
            and old.activation == activation
            and old.output_activation == self.out_activation_
            and old.leaky_relu_slope == float(self.leaky_relu_slope)
            and old.precision == (self._precision(dtype) or ("fp32" if dtype == np.float32 else "fp64"))
            and (not training or self._has_noise(old))
        ):
            net = old
        else:
            if training:
                net = build(self._noise())
            else:
                try:  # the parameters' training settings where valid (summary shows them), else none
                    net = build(self._noise())
                except (TypeError, ValueError):
                    net = build(dict(seed=getattr(self, "_noise_seed", 0)))
            net.training_steps = getattr(self, "_training_steps", 0) if old is None else old.training_steps
            self._net = net
        views_w, views_b = net.weights, net.biases
        for i in range(len(coefs)):
            if coefs[i] is not views_w[i]:
                views_w[i][...] = coefs[i]
            if intercepts[i] is not views_b[i]:
                views_b[i][...] = intercepts[i]
        self.coefs_, self.intercepts_ = list(views_w), list(views_b)
        self._fast = (net, tuple(views_w), tuple(views_b), self._inference_key())  # see _fast_network
        return net

    def _layered_network(self, training: bool) -> Network:
        """_network for a network of layers (the fitted spec ``_layers_spec``): coefs_/intercepts_ are
        its Dense layers' views; its other parameters and its state come from the network it replaces
        (the same layers but for Dropout), else from ``_layer_values`` (a pickle's or a file's), else
        are the new network's initial values (a new fit)."""
        spec = self._layers_spec
        assert spec is not None  # (_network's test)
        n_in = int(self.n_features_in_)
        dense = _dense_shapes(spec, n_in)
        coefs, intercepts = self.coefs_, self.intercepts_
        if len(coefs) != len(dense) or len(intercepts) != len(dense):
            raise ValueError(
                f"coefs_ and intercepts_ must be lists of {len(dense)} arrays (one per Dense layer), "
                f"got {len(coefs)} and {len(intercepts)}"
            )
        for i, ((a, b), c, v) in enumerate(zip(dense, coefs, intercepts)):
            if np.shape(c) != (a, b) or np.shape(v) != (b,):
                raise ValueError(
                    f"coefs_[{i}] of shape {np.shape(c)} and intercepts_[{i}] of shape {np.shape(v)} do not "
                    f"fit the network's Dense layer {i}: ({a}, {b}) and ({b},)"
                )
        old: Network | None = getattr(self, "_net", None)
        dtype = np.dtype(getattr(self, "_fit_dtype", None) or np.asarray(coefs[0]).dtype)
        precision = self._precision(dtype)
        common = dict(
            layers=spec,
            output_activation=self.out_activation_,
            dtype=dtype,
            leaky_relu_slope=float(self.leaky_relu_slope),
            precision=precision,
        )

        def noise() -> dict[str, Any]:
            return dict(
                input_noise=float(self.input_noise),
                max_norm=None if self.max_norm is None else float(self.max_norm),
                seed=getattr(self, "_noise_seed", 0),
            )

        def same(net: Network) -> bool:
            return (
                not net.shorthand  # a network of layers
                and net.spec == spec
                and net.dtype == dtype
                and net.output_activation == self.out_activation_
                and net.leaky_relu_slope == float(self.leaky_relu_slope)
                and net.precision == (precision or ("fp32" if dtype == np.float32 else "fp64"))
            )

        def noise_of(net: Network) -> dict[str, Any]:
            return dict(input_noise=net.input_noise, max_norm=net.max_norm, seed=net.seed)

        if old is not None and same(old) and (not training or noise_of(old) == noise()):
            net = old
        else:
            try:  # the parameters' training settings where valid (summary shows them), else none
                net = Network(n_in, **common, **noise())
            except (TypeError, ValueError):
                if training:
                    raise
                net = Network(n_in, **common, seed=getattr(self, "_noise_seed", 0))
            kept = self.__dict__.get("_layer_values")
            if old is not None and not old.shorthand and _without_dropout(old.spec) == _without_dropout(spec):
                kept = (old.params, old.state)
            if kept is not None:
                net.params[...] = kept[0]
                net.state[...] = kept[1]
            net.training_steps = getattr(self, "_training_steps", 0) if old is None else old.training_steps
            self._net = net
            self.__dict__.pop("_layer_values", None)  # the network holds them now
        views_w, views_b = net.weights, net.biases
        for i in range(len(coefs)):
            if coefs[i] is not views_w[i]:
                views_w[i][...] = coefs[i]
            if intercepts[i] is not views_b[i]:
                views_b[i][...] = intercepts[i]
        self.coefs_, self.intercepts_ = list(views_w), list(views_b)
        self._fast = (net, tuple(views_w), tuple(views_b), self._inference_key())  # see _fast_network
        return net

    def _noise(self) -> dict[str, Any]:
        """The training-only settings of the parameters, as Network's keywords (unchecked)."""
        return dict(
            dropout=list(self.dropout) if isinstance(self.dropout, (list, tuple)) else float(self.dropout),
            input_noise=float(self.input_noise),
            max_norm=None if self.max_norm is None else float(self.max_norm),
            seed=getattr(self, "_noise_seed", 0),
        )

    def _has_noise(self, net: Network) -> bool:
        """Whether `net` trains with the (checked) parameters' dropout, input noise, max-norm and noise seed."""
        noise = self._noise()
        return (
            net.dropout == tuple(check_dropout(noise["dropout"], len(net.layer_sizes) - 1))
            and net.input_noise == noise["input_noise"]
            and net.max_norm == noise["max_norm"]
            and net.seed == noise["seed"]
        )

    def _perturbs_inputs(self) -> bool:
        """Whether input noise or input dropout is set (they need a dense X); False for unreadable values."""
        try:
            first = self.dropout[0] if isinstance(self.dropout, (list, tuple)) and len(self.dropout) else 0.0
            return bool(self.input_noise > 0 or first > 0)
        except TypeError:
            return False

    def _initialize(
        self,
        n_outputs: int,
        layer_units: list[int],
        dtype: np.dtype,
        rs: np.random.RandomState,
        spec: list[dict[str, Any]] | None = None,
    ) -> None:
        """Fresh weights and bookkeeping (scikit-learn's _initialize, same random draws).

        A network of layers (`spec`): the same draws for its Dense layers (each with the factor of
        the Activation layers' l-th activation, the last one's beyond them; 6, relu's, without any),
        then its other parameters and state are the new network's initial values (γ = 1, β = 0,
        running mean 0 and variance 1, embedding tables drawn from the noise seed drawn here)."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = n_outputs
        if spec is None:
            dense = list(zip(layer_units[:-1], layer_units[1:]))
            # scikit-learn's factor follows the activation; with one per hidden layer, layer l's own
            # (the output layer: the last hidden layer's), as fastmlp.Network draws them.
            acts = self._hidden_activations(max(len(layer_units) - 2, 1))
        else:
            dense = _dense_shapes(spec, layer_units[0])
            acts = _spec_activations(spec)
        self.n_layers_ = len(dense) + 1
        coefs, intercepts = [], []
        for l, (fan_in, fan_out) in enumerate(dense):
            factor = GLOROT_FACTOR[acts[min(l, len(acts) - 1)]] if acts else 6.0
            bound = np.sqrt(factor / (fan_in + fan_out))
            coefs.append(rs.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype, copy=False))
            intercepts.append(rs.uniform(-bound, bound, fan_out).astype(dtype, copy=False))
        self.coefs_, self.intercepts_ = coefs, intercepts
        # The key of the dropout and noise draws, drawn after the weights (and only when used:
        # without them the random stream is scikit-learn's).
        # A network of layers draws it too where it has dropout or embedding tables (drawn from it).
        drawn = {d["kind"] for d in _flatten_spec(spec or [])} & {"dropout", "embedding"}
        self._noise_seed = int(rs.randint(np.iinfo(np.int32).max)) if self._perturbs() or drawn else 0
        self._layers_spec = spec
        if spec is not None:  # a new network: initial γ, β, tables and running statistics
            self.__dict__.pop("_net", None)
            self.__dict__.pop("_layer_values", None)
        self._reset_bookkeeping()

    def _reset_bookkeeping(self) -> None:
        self._optimizer = None
        self._best_params = None
        self._best_state = None
        self._epoch_clock = 0
        self.validation_loss_curve_ = None  # type: ignore[assignment]  # (see the declarations)
        if self.solver in STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None  # type: ignore[assignment]
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None  # type: ignore[assignment]
                self.best_validation_score_ = None  # type: ignore[assignment]

    # --- fitting -----------------------------------------------------------
    def _transaction(self, call: Callable[[FitProgress], Any]) -> Any:
        """Runs one fit/partial_fit call: refused while another runs, undone if it fails before its first step.

        The refusal (RuntimeError) comes before anything is read or changed.
        On failure the attributes are restored from a shallow copy and the
        parameters and the training step count from copies (the checks may
        already have re-initialized a reused network). Once a training step
        was taken (`call` is given the FitProgress that the epoch loop marks),
        a failure keeps what the epochs did: KeyboardInterrupt is caught
        between epochs, divergence keeps the last finite epoch (see
        fastmlp._training.EpochLoop); L-BFGS keeps its last iterate on
        KeyboardInterrupt (see _fit_lbfgs).
        """
        with _exclusive(self):
            state = self.__dict__.copy()
            net = state.get("_net")
            params = None if net is None else np.array(net.params)
            running = None if net is None else np.array(net.state)  # batch norm's running statistics
            steps = None if net is None else net.training_steps
            progress = FitProgress()  # the epoch loop (or L-BFGS) reports here that epochs started
            try:
                return call(progress)
            except BaseException:
                if not progress.epochs_started:
                    self.__dict__.clear()
                    self.__dict__.update(state)
                    if net is not None and params is not None and running is not None and steps is not None:
                        net.params[...] = params
                        net.state[...] = running
                        net.training_steps = steps
                raise

    def _fit(
        self,
        X: Any,
        y: Any,
        progress: FitProgress,
        sample_weight: Any = None,
        incremental: bool = False,
        validation_data: Any = None,
    ) -> _BaseMLP:
        if self.distributed is not None:
            return self._fit_distributed(X, y, sample_weight, incremental, validation_data, progress)
        return self._fit_checked(X, y, sample_weight, incremental, validation_data, progress)

    def _fit_checked(
        self, X: Any, y: Any, sample_weight: Any, incremental: bool, validation_data: Any, progress: FitProgress
    ) -> _BaseMLP:
        hidden = self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        fitted_dtype = str(getattr(self, "_fit_dtype", "float32"))
        if not first_pass and self.precision is not None and fitted_dtype != "float32":
            raise ValueError(
                f"precision={self.precision!r} continues a float32 model only; this one is "
                f"{fitted_dtype} (fit anew, or leave precision=None)"
            )
        source = _data.as_source(X, check=False) if _data.is_out_of_core(X) else None
        if source is not None:
            # checked once in the dtype the fit will use (a made source, or a given one of a wider float type)
            target = self._source_dtype(source)
            if source is not X or (source.dtype.kind == "f" and source.dtype.itemsize > target.itemsize):
                source.check("X", target)
            X = self._source_stub(source)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        if self._perturbs_inputs() and _compat.is_sparse(X):
            raise ValueError(
                "input_noise and input dropout (dropout[0]) need a dense X, got a sparse X "
                "(densify X, or set them to 0)"
            )
        n_features = X.shape[1]
        dtype = np.dtype(X.dtype)
        sw = self._sample_weight(sample_weight, X, y, dtype)
        layer_units = [n_features] + hidden + [Y.shape[1]]
        spec = self._architecture(n_features, Y.shape[1])
        dense = list(zip(layer_units[:-1], layer_units[1:])) if spec is None else _dense_shapes(spec, n_features)
        if spec is not None:
            if spec[0]["kind"] != "dense" and _compat.is_sparse(X):
                raise ValueError(
                    f"a sparse X needs a network whose first layer is Dense, got layers[0] = {spec[0]!r} (densify X)"
                )
            layer_units = [a for a, _ in dense] + [dense[-1][1]]
        if spec is not None and X.shape[0] < 2 and any(d["kind"] == "batch_norm" for d in _flatten_spec(spec)):
            raise ValueError(
                f"batch normalization needs at least 2 samples per training batch; got n_samples={X.shape[0]}"
            )
        rs = check_random_state(self.random_state)
        self._random_state = rs
        if first_pass:
            _check_fits_in_memory(layer_units, dtype)
            self._fit_dtype = dtype.name
            self._initialize(Y.shape[1], [n_features, *layer_units[1:]], dtype, rs, spec)
        else:
            if not hasattr(self, "_epoch_clock"):  # coefs_ (and maybe t_) set by hand before any fit
                self.n_iter_, self.t_, self.n_layers_ = 0, getattr(self, "t_", 0), len(dense) + 1
                self._fit_dtype = dtype.name
                self._layers_spec = spec
                self._reset_bookkeeping()
            fitted = getattr(self, "_layers_spec", None)
            if (fitted is None) != (spec is None) or (
                spec is not None and fitted is not None and _without_dropout(spec) != _without_dropout(fitted)
            ):
                raise ValueError(
                    "warm_start/partial_fit continues the fitted network, whose layers "
                    f"({'the plain hidden_layer_sizes' if fitted is None else fitted}) differ from those that "
                    "normalization, residual and layers now give "
                    f"({'the plain hidden_layer_sizes' if spec is None else spec}): fit anew (warm_start=False)"
                )
            if [c.shape for c in self.coefs_] != dense:
                raise ValueError(
                    f"warm_start/partial_fit needs coefs_ of shapes {dense} for this data and "
                    f"hidden_layer_sizes, got {[c.shape for c in self.coefs_]}"
                )
            self._layers_spec = spec  # (its dropout rates may have changed)
            self.n_outputs_ = Y.shape[1]
        net = self._network(training=True)
        if first_pass:  # a new fit draws dropout anew: the same random_state, the same fit
            net.training_steps = 0
        if net.dtype != dtype:  # continuing a model of the other precision
            if source is None:
                X = X.astype(net.dtype)
            Y = Y.astype(net.dtype)
            sw = None if sw is None else sw.astype(net.dtype)
        if source is not None:
            X = source  # read batch by batch, converted to the network's dtype as it is read
        with _threads(self.n_threads):
            if self.solver == "lbfgs":
                if validation_data is not None:
                    raise ValueError("validation_data is only used by the stochastic solvers, not by 'lbfgs'")
                self._agree_on_shapes(net, X.shape[0], 0)
                self._fit_lbfgs(net, X, Y, sw, progress)
            else:
                self._fit_stochastic(net, X, Y, sw, incremental, validation_data, progress)
        if not all(np.isfinite(p).all() for p in self.coefs_ + self.intercepts_):
            raise ValueError(NON_FINITE)
        return self

    def _source_stub(self, source: _data.RowSource) -> np.ndarray:
        """What the input checks see of an out-of-core X: an array of its shape and of the dtype the
        fit will use, all zeros, in no memory (one row broadcast); the values were checked when
        the source was made."""
        return np.broadcast_to(np.zeros((1, source.shape[1]), dtype=self._source_dtype(source)), source.shape)

    def _source_dtype(self, source: _data.RowSource) -> np.dtype:
        """The dtype a fit on an out-of-core X uses: dtype's (precision's), else the file's float32 or float64."""
        dtype = self._data_dtype()
        if isinstance(dtype, tuple):
            return np.dtype(source.dtype if source.dtype in dtype else dtype[0])
        return np.dtype(dtype)

    def _fit_distributed(
        self, X: Any, y: Any, sample_weight: Any, incremental: bool, validation_data: Any, progress: FitProgress
    ) -> _BaseMLP:
        """fit with ``distributed='mpi'``: every rank fits its shard; see :mod:`fastmlp.distributed`.

        Two agreements keep the ranks in step: here, on the parameters and
        the labels (``classes_`` is the union of the ranks' labels); then, in
        :meth:`_fit_stochastic`, on the shapes. A rank that fails in between
        reports its error to the second agreement, so every rank raises.
        """
        check_choice("distributed", self.distributed, ("mpi",), style="sklearn")
        from . import distributed as dist

        comm = dist.check_comm(dist.world())

        def check() -> dict[str, Any]:
            self._check_params()
            labels = None
            if isinstance(self, ClassifierMixin) and y is not None:
                y_arr = np.asarray(y)
                if y_arr.ndim == 1 or (y_arr.ndim == 2 and y_arr.shape[1] == 1):
                    labels = np.unique(y_arr.ravel())
            # May differ between ranks: per-rank threads, printing, callbacks, and random_state
            # (rank 0's weights and shuffling seed are broadcast).
            local = ("n_threads", "verbose", "callbacks", "random_state")
            params = sorted((k, repr(v)) for k, v in self.get_params(deep=False).items() if k not in local)
            return {
                "params": params,
                "_labels": labels,
                "validation_data": validation_data is not None,
                "sample_weight": sample_weight is not None,
            }

        reports = dist.agree(
            comm,
            check,
            explain={
                "params": "the estimator's parameters must be the same on every rank (all but n_threads, verbose, "
                "callbacks, random_state)",
                "validation_data": "validation_data must be given on every rank (its own part) or on none",
                "sample_weight": "sample_weight must be given on every rank (its own samples' weights) or on none",
            },
        )
        labels = [r["_labels"] for r in reports if r["_labels"] is not None]
        seed = int(check_random_state(self.random_state).randint(2**31 - 1)) if comm.Get_rank() == 0 else None
        seed = comm.bcast(seed, root=0)
        self._mpi = types.SimpleNamespace(
            comm=comm,
            classes=np.unique(np.concatenate(labels)) if labels else None,
            rng=np.random.default_rng([seed, comm.Get_rank()]),
            agreed=False,
        )
        try:
            return self._fit_checked(X, y, sample_weight, incremental, validation_data, progress)
        except Exception as e:
            if not self._mpi.agreed:  # the other ranks wait in the second agreement: let them raise too
                dist.agree(comm, error=e)
            raise
        finally:
            self._mpi = None

    def _sum_over_ranks(self, a: np.ndarray) -> np.ndarray:
        """`a` summed over the MPI ranks (``Allreduce``, float64) with distributed='mpi'; else `a`."""
        mpi = getattr(self, "_mpi", None)
        a = np.ascontiguousarray(a, dtype=np.float64)
        if mpi is None:
            return a
        from .distributed import allreduce

        out = np.empty_like(a)
        allreduce(mpi.comm, a, out, "a sum over the ranks")
        return out

    def _sample_weight(self, sample_weight: Any, X: Any, y: Any, dtype: np.dtype) -> np.ndarray | None:
        sw = None
        if sample_weight is not None:
            from ._validation import as_sample_weight

            sw = as_sample_weight(sample_weight, X.shape[0], np.dtype(np.float64))
        cw = self._class_weight_factors(y)
        if cw is not None:
            sw = cw if sw is None else sw * cw
            if not self._sum_over_ranks(np.array([sw.sum()]))[0] > 0:
                raise ValueError("class_weight and sample_weight give every sample a weight of 0")
        return None if sw is None else np.ascontiguousarray(sw, dtype=dtype)

    def _class_weight_factors(self, y: Any) -> np.ndarray | None:
        return None

    def _batch_size(self, n_samples: int) -> int:
        if isinstance(self.batch_size, str):
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                UserWarning,
                stacklevel=4,
            )
        return int(np.clip(self.batch_size, 1, n_samples))

    def _regularization(self) -> Any:
        scale = self.n_outputs_ if self._loss_name == "squared_error" else 1
        return make_regularization(
            l2=float(self.alpha),
            l1=float(self.l1),
            clip_value=self.clip_value,
            clip_norm=self.clip_norm,
            grad_scale=float(scale),
        )

    def _make_optimizer(self) -> Optimizer:
        """The solver's optimizer, each hyperparameter read from this estimator's parameter for it."""
        row = _SOLVER_ROW[self.solver]
        kwargs: dict[str, Any] = {}
        for p in OPTIMIZERS[row].params:
            value = getattr(self, _SOLVER_PARAMS.get(p.name, p.name))
            kwargs[p.name] = bool(value) if p.is_flag else float(value)
        optimizer: Optimizer = getattr(optim, row)(**kwargs)
        return optimizer

    def _fit_stochastic(
        self,
        net: Network,
        X: Any,
        Y: np.ndarray,
        sw: np.ndarray | None,
        incremental: bool,
        validation_data: Any,
        progress: FitProgress,
    ) -> None:
        if not incremental or getattr(self, "_optimizer", None) is None:
            self._optimizer = self._make_optimizer()
            self._sgd_lr = float(self.learning_rate_init)  # scikit-learn's optimizer.learning_rate
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        # early_stopping switched since the last fit (warm_start): the other criterion's bookkeeping
        if self.early_stopping and getattr(self, "validation_scores_", None) is None:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
        if not self.early_stopping and getattr(self, "best_loss_", None) is None:
            self.best_loss_ = np.inf
        X, Y, sw, (X_val, y_val, sw_val, Y_val) = self._split_validation(net, X, Y, sw, validation_data)
        n_samples = X.shape[0]
        batch_size = self._batch_size(n_samples)
        request = net.prepare_epoch(
            X,
            Y,
            self._loss(),
            self._optimizer,
            epoch_options(batch_size, False, regularization=self._regularization()),
            sample_weight=sw,
        )
        strategy = self._epoch_strategy(net, n_samples, batch_size, X_val is not None)
        bar = ProgressBar(self.max_iter, incremental) if self._progress_bar() else None
        if X_val is not None and getattr(self, "validation_loss_curve_", None) is None:
            self.validation_loss_curve_ = []
        loop = EpochLoop(
            net,
            request,
            strategy=strategy,
            learning_rate=LearningRatePolicy(before_epoch=self._lr_before_epoch, after_epoch=self._lr_after_epoch),
            early_stopping=EarlyStopping(
                score=lambda: self._score_epoch(net, X_val, y_val, sw_val, Y_val), check=self._check_no_improvement
            ),
            record=self._record_finite_epoch,
            callbacks=Callbacks(self.callbacks),
            progress=bar,
            progress_of_fit=progress,
            max_iter=self.max_iter,
            one_epoch=incremental,
            verbose=bool(self.verbose),
            planned=self._planned_schedule(),
        )
        self.n_iter_ = 0
        diverged = loop.run()
        if diverged is not None:
            self._after_divergence(diverged, n_samples)
        if self.early_stopping and getattr(self, "_best_params", None) is not None:
            net.params[:] = self._best_params
            best_state = getattr(self, "_best_state", None)
            if best_state is not None:  # batch norm's running statistics of the best epoch
                net.state[:] = best_state

    def _split_validation(
        self, net: Network, X: Any, Y: np.ndarray, sw: np.ndarray | None, validation_data: Any
    ) -> tuple[Any, np.ndarray, np.ndarray | None, tuple[Any, ...]]:
        """(X, Y, sw) to train on and (X_val, y_val, sw_val, Y_val): `validation_data`, or with
        early_stopping scikit-learn's split of validation_fraction of X, or all None."""
        if validation_data is not None:
            return X, Y, sw, self._validation_set(validation_data, net.dtype)
        if not self.early_stopping:
            return X, Y, sw, (None, None, None, None)
        # binary labels only, as booleans: scikit-learn's split, and its error naming the class ['True']
        stratify = Y.astype(bool) if (isinstance(self, ClassifierMixin) and self.n_outputs_ == 1) else None
        train, val = _compat.train_test_split_indices(
            X.shape[0], self.validation_fraction, self._random_state, stratify
        )
        if len(val) < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
            )
        # An out-of-core X (fastmlp.data): the training rows stay on disk, the validation rows are read.
        X_val = X.read(val, net.dtype) if isinstance(X, _data.RowSource) else X[val]
        X, Y, Y_val = X[train], Y[train], Y[val]
        sw_val = None
        if sw is not None:
            sw, sw_val = sw[train], sw[val]
        return X, Y, sw, (X_val, self._targets_to_y(Y_val), sw_val, Y_val)

    def _after_divergence(self, diverged: float, n_samples: int) -> None:
        """The epoch loop rolled the diverged epoch back: scikit-learn's error, or with early_stopping its record."""
        self._optimizer = None  # its moments saw the non-finite step: the next call starts afresh
        if not self.early_stopping:
            what = (
                f"the training loss became {diverged}" if not np.isfinite(diverged) else "a parameter became non-finite"
            )
            raise ValueError(
                f"{NON_FINITE} Here {what} in epoch {self.n_iter_ + 1} of this call, so training stopped there. "
                f"The model keeps the weights of the last finite epoch ({self.n_iter_} epoch(s) of this call). "
                f"Lower learning_rate_init (now {self.learning_rate_init!r}) or scale the input data."
            )
        # scikit-learn (its issue 29504): the diverged epoch is recorded, its validation score is nan,
        # and the best weights are kept without an error; here training also stops at that epoch.
        self._record_epoch(float(diverged), n_samples)
        self.validation_scores_.append(np.nan)
        warnings.warn(
            f"Training diverged in epoch {self.n_iter_} (loss {diverged}); stopped there, with "
            "the weights of the best validation score. Lower learning_rate_init "
            f"(now {self.learning_rate_init!r}) or scale the input data.",
            ConvergenceWarning,
            stacklevel=4,
        )

    def _agree_on_shapes(self, net: Network, n_samples: int, batch_size: int, **more: Any) -> None:
        """distributed='mpi': the second agreement (see _fit_distributed) on the shapes; else nothing."""
        mpi = getattr(self, "_mpi", None)
        if mpi is None:
            return
        from . import distributed as dist

        mpi.agreed = True
        # Full-batch L-BFGS sums shards of any size; the epochs pair the ranks' batches: equal shards.
        signature: dict[str, Any] = {} if self.solver == "lbfgs" else {"X": n_samples}
        signature.update(batch_size=batch_size, dtype=net.dtype.name, network=tuple(net.layer_sizes), **more)
        dist.agree(mpi.comm, lambda: signature)

    def _epoch_strategy(self, net: Network, n_samples: int, batch_size: int, validation: bool) -> EpochStrategy:
        """How the epochs run: locally, or (distributed='mpi') data-parallel after the second agreement."""
        mpi = getattr(self, "_mpi", None)
        if mpi is None:
            return LocalEpochs(n_samples, bool(self.shuffle), self._random_state)
        from . import distributed as dist

        mpi_epoch = dist.MPIEpoch(mpi.comm)
        self._agree_on_shapes(net, n_samples, batch_size, validation=validation)
        # rank r's shard in its own seeded order; gradients averaged over the ranks
        return DataParallelEpochs(mpi_epoch, n_samples, bool(self.shuffle), mpi.rng)

    # --- the epoch loop's hooks (fastmlp._training.EpochLoop calls them in its order) ---
    def _lr_before_epoch(self, request: EpochRequest) -> None:
        """The rate the epoch starts with, the in-C++ schedule and its clock."""
        request.optimizer.lr = self._current_lr()
        schedule = self._schedule()
        request.options.schedule = None if schedule is None else schedule.record
        request.options.epoch = float(self._epoch_clock)

    def _lr_after_epoch(self) -> None:
        """scikit-learn's invscaling: the SGD rate after t_ samples."""
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            self._sgd_lr = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t

    def _score_epoch(self, net: Network, X_val: Any, y_val: Any, sw_val: Any, Y_val: Any) -> dict[str, Any]:
        """The validation loss and score after an epoch, the no-improvement count; the metrics to report."""
        metrics: dict[str, Any] = {}
        if X_val is not None:
            val_loss = net.objective(X_val, Y_val, self._loss(), sample_weight=sw_val)
            if getattr(self, "_mpi", None) is not None:  # the mean over all ranks' validation samples
                w = float(X_val.shape[0]) if sw_val is None else float(np.sum(sw_val, dtype=np.float64))
                total = self._sum_over_ranks(np.array([val_loss * w, w]))
                val_loss = float(total[0] / total[1])
            self.validation_loss_curve_.append(val_loss)
            metrics["validation_loss"] = val_loss
        self._update_no_improvement_count(X_val if self.early_stopping else None, y_val, sw_val)
        if self.validation_scores_:
            metrics["validation_score"] = self.validation_scores_[-1]
        return metrics

    def _planned_schedule(self) -> bool:
        """learning_rate='cosine' anneals over max_iter epochs: running them all is the plan, so the
        training-loss `tol` criterion does not cut it short and reaching max_iter is no ConvergenceWarning
        (early_stopping's validation criterion still stops it)."""
        return self.learning_rate == "cosine"

    def _check_no_improvement(self) -> bool:
        """n_iter_no_change exceeded: True to stop (scikit-learn's messages), or a lower adaptive rate."""
        if self._no_improvement_count <= self.n_iter_no_change:
            return False
        if self._planned_schedule() and not self.early_stopping:
            return False
        if self.early_stopping:
            msg = "Validation score did not improve more than tol=%f for %d consecutive epochs." % (
                self.tol,
                self.n_iter_no_change,
            )
        else:
            msg = "Training loss did not improve more than tol=%f for %d consecutive epochs." % (
                self.tol,
                self.n_iter_no_change,
            )
        if self._trigger_stopping(msg):
            return True
        self._no_improvement_count = 0
        return False

    def _record_epoch(self, loss: float, n_samples: int) -> None:
        self.loss_ = loss
        self._epoch_clock += 1
        self.n_iter_ += 1
        self.t_ += n_samples
        self.loss_curve_.append(loss)

    def _record_finite_epoch(self, loss: float, n_samples: int) -> None:
        """The loop's record hook: the epoch's bookkeeping and scikit-learn's verbose line."""
        self._record_epoch(loss, n_samples)
        if self.verbose and not self._progress_bar():
            print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))

    def _progress_bar(self) -> bool:
        """verbose=2 (exactly) draws a progress bar; any other true verbose prints scikit-learn's lines."""
        return not isinstance(self.verbose, (bool, np.bool_)) and self.verbose == 2

    def _current_lr(self) -> float:
        return self._sgd_lr if self.solver == "sgd" else float(self.learning_rate_init)

    def _schedule(self) -> Schedule | None:
        kind = self.learning_rate if self.learning_rate in IN_EPOCH_SCHEDULES else "constant"
        if kind == "constant" and not self.warmup_epochs:
            return None
        return Schedule(
            kind,
            self._current_lr(),
            gamma=float(self.lr_gamma),
            step_size=float(self.lr_step_size),
            total_epochs=float(self.max_iter),
            min_lr=float(self.lr_min),
            warmup_epochs=float(self.warmup_epochs),
        )

    def _trigger_stopping(self, msg: str) -> bool:
        if not (self.solver == "sgd" and self.learning_rate == "adaptive"):
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._sgd_lr <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._sgd_lr /= 5.0
        if self.verbose:
            print(msg + " Setting learning rate to %f" % self._sgd_lr)
        return False

    def _update_no_improvement_count(self, X_val: Any, y_val: Any, sw_val: Any) -> None:
        if X_val is not None:
            mpi = getattr(self, "_mpi", None)
            score = self._score_on(X_val, y_val, sw_val, reduce=None if mpi is None else self._sum_over_ranks)
            self.validation_scores_.append(score)
            if self.verbose and not self._progress_bar():
                print("Validation score: %f" % self.validation_scores_[-1])
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = np.array(self._net.params)
                self._best_state = np.array(self._net.state) if self._net.state.size else None
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _fit_lbfgs(self, net: Network, X: Any, Y: np.ndarray, sw: np.ndarray | None, progress: FitProgress) -> None:
        try:
            import scipy.optimize
        except ImportError:
            raise ImportError("solver='lbfgs' needs SciPy: pip install scipy") from None
        reg = self._regularization()
        params, grads, loss = net.params, net.grads, self._loss()
        if isinstance(X, _data.RowSource):  # out of core: the objective summed over chunks of rows
            objective = _data.objective_streamed(net, X, Y, sw, loss)
        else:
            rows = net.prepare_rows(X, Y, loss, sample_weight=sw)
            objective = functools.partial(net.run_objective, rows, loss)

        def local(p: np.ndarray) -> tuple[float, np.ndarray]:
            params[:] = p  # the one copy: scipy owns its iterate
            value = objective(reg)
            return value, grads.astype(np.float64)  # scipy keeps the gradient it is given

        fun: Callable[[np.ndarray], tuple[float, np.ndarray]] = local
        mpi = getattr(self, "_mpi", None)
        if mpi is not None:
            weight = X.shape[0] if sw is None else float(np.sum(sw, dtype=np.float64))
            fun = self._mpi_objective(net, objective, weight)

        last: dict[str, Any] = {"x": None, "nit": 0}

        def iterate_done(intermediate_result: Any) -> None:  # scipy < 1.11 passes the iterate itself
            last["x"] = np.array(getattr(intermediate_result, "x", intermediate_result))
            last["nit"] += 1

        try:
            res = scipy.optimize.minimize(
                fun,
                params.astype(np.float64),
                method="L-BFGS-B",
                jac=True,
                callback=iterate_done,
                options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
            )
        except KeyboardInterrupt:
            # As the stochastic solvers do (and unlike scikit-learn's lbfgs, which loses the fit): keep the
            # last completed iteration, warn, return. Before the first one there is nothing to keep: undone.
            if last["x"] is None:
                raise
            params[:] = last["x"]
            self.n_iter_ = last["nit"]
            self.loss_ = objective(reg)
            progress.epochs_started = True  # the kept iterate is not undone
            warnings.warn("Training interrupted by user.", stacklevel=3)
            return
        if res.status != 0:
            msg = res.message.decode("latin1") if isinstance(res.message, bytes) else str(res.message)
            warnings.warn(
                f"lbfgs failed to converge after {res.nit} iteration(s) (status={res.status}):\n{msg}.\n\n"
                "Increase the number of iterations to improve the convergence "
                f"(max_iter={self.max_iter}).\nYou might also want to scale the data as shown in:\n"
                "    https://scikit-learn.org/stable/modules/preprocessing.html",
                ConvergenceWarning,
                stacklevel=3,
            )
        self.n_iter_ = min(int(res.nit), self.max_iter)
        self.loss_ = float(res.fun)
        params[:] = res.x

    def _mpi_objective(
        self, net: Network, objective: Callable[[Any], float], weight: float
    ) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
        r"""distributed='mpi' L-BFGS: the full-batch objective over every rank's samples.

        Rank r computes its shard's objective with the penalties divided by R,
        :math:`f_r = L_r + \Omega/(R W_r)` (:math:`L_r` its weighted mean loss, :math:`W_r` its
        weight sum), and one ``Allreduce`` sums :math:`(W_r/W)(f_r, \nabla f_r)` with
        :math:`W = \sum_r W_r`: :math:`\sum_r W_r L_r / W + \Omega / W`, the objective of one
        process holding all the samples, and its gradient. Every rank then runs SciPy's L-BFGS
        on the same numbers, so the iterates are the same on every rank (rank 0's start is broadcast).
        """
        mpi = self._mpi
        assert mpi is not None
        size = mpi.comm.Get_size()
        reg = make_regularization(  # Ω/R on each rank: Σ_r Ω/R = Ω (clipping: not in the objective)
            l2=float(self.alpha) / size,
            l1=float(self.l1) / size,
            grad_scale=float(self.n_outputs_ if self._loss_name == "squared_error" else 1),
        )
        total = float(self._sum_over_ranks(np.array([weight]))[0])
        params, grads = net.params, net.grads
        from .distributed import broadcast_parameters

        broadcast_parameters(net, mpi.comm)
        buf = np.empty(params.shape[0] + 1, dtype=np.float64)

        def fun(p: np.ndarray) -> tuple[float, np.ndarray]:
            params[:] = p
            value = objective(reg)
            scale = weight / total
            np.multiply(grads, scale, out=buf[:-1])
            buf[-1] = value * scale
            out = self._sum_over_ranks(buf)
            return float(out[-1]), out[:-1]

        return fun

    def _validation_set(self, validation_data: Any, dtype: np.dtype) -> tuple[Any, ...]:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise TypeError(
                "validation_data must be a tuple (X_val, y_val) or (X_val, y_val, sample_weight_val); "
                f"got {type(validation_data).__name__}"
            )
        X_val, y_val = validation_data[0], validation_data[1]
        if _data.is_out_of_core(X_val):  # read into memory, as early_stopping's validation rows are
            source = _data.as_source(X_val, "X_val", check=False)
            X_val = source.read(np.arange(source.shape[0]), dtype)
        X_val = _compat.validate_X(self, X_val, reset=False, dtype=dtype)
        Y_val = self._encode_validation(y_val, X_val.shape[0], dtype)
        sw_val = None
        if len(validation_data) == 3 and validation_data[2] is not None:
            from ._validation import as_sample_weight

            sw_val = as_sample_weight(validation_data[2], X_val.shape[0], np.dtype(dtype))
        X_val = X_val.astype(dtype) if _compat.is_sparse(X_val) else np.ascontiguousarray(X_val, dtype=dtype)
        return X_val, np.asarray(y_val), sw_val, Y_val

    # --- prediction --------------------------------------------------------
    def _inference_key(self) -> tuple[Any, ...]:
        """What, beside the weights, decides the fitted network's output."""
        activation = self.activation if isinstance(self.activation, str) else tuple(self.activation)
        return (
            activation,
            self.out_activation_,
            self.leaky_relu_slope,
            getattr(self, "n_features_in_", None),
            self.precision,
            repr(getattr(self, "_layers_spec", None)),
        )

    def _fast_network(self, X: Any) -> Network | None:
        """The network to run `X` through without scikit-learn's validation, or None for the full path.

        Taken when `X` is an aligned, C-contiguous ``numpy.ndarray`` of the network's dtype, 2-D with
        ``n_features_in_`` columns and at least one row, and finite (its sum is: NaN and ±inf
        propagate; an overflowing sum only sends X the full way), and when the network that the last
        ``_network()`` call checked is still the one ``coefs_``, ``intercepts_`` and the parameters
        describe (no ``n_threads``, no feature names to compare). Anything else takes the full path,
        whose checks raise their usual errors: this path changes speed, never a result or a message.
        """
        fast = self.__dict__.get("_fast")
        if fast is None or type(X) is not np.ndarray or X.ndim != 2 or self.n_threads is not None:
            return None
        net, coefs, intercepts, key = fast
        if (
            X.dtype != net.dtype
            or X.shape[0] < 1
            or X.shape[1] != net.n_inputs
            or not (X.flags.c_contiguous and X.flags.aligned)
            or "feature_names_in_" in self.__dict__
            or len(self.coefs_) != len(coefs)
            or not all(map(operator.is_, self.coefs_, coefs))
            or not all(map(operator.is_, self.intercepts_, intercepts))
            or key != self._inference_key()
            or not math.isfinite(X.sum())
        ):
            return None
        return net

    def _forward(self, X: Any) -> np.ndarray:
        net = self._fast_network(X)
        if net is not None:
            return net.forward(X)
        self._check_fitted()
        net = self._network()
        if _data.is_out_of_core(X):  # read in chunks (fastmlp.data.forward_streamed); checked as in memory
            source = _data.as_source(X, check=False)
            stub = np.broadcast_to(np.zeros((1, source.shape[1]), dtype=net.dtype), source.shape)
            _compat.validate_X(self, stub, reset=False, dtype=(np.float64, np.float32))
            with _threads(self.n_threads):
                return net.forward(source)
        # float32 or float64 as they come (the network converts to its fitted dtype): prediction
        # does not read the dtype parameter, which is the next fit's
        X = _compat.validate_X(self, X, reset=False, dtype=(np.float64, np.float32))
        with _threads(self.n_threads):
            return net.forward(X)

    @staticmethod
    def _score_targets(y: Any, sample_weight: Any, n: int, numeric: bool) -> tuple[np.ndarray, Any]:
        """score's y and sample_weight checked against the n samples of X (as fit checks them)."""
        from ._validation import as_sample_weight

        try:
            y = np.asarray(y)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"y must be array-like: {exc}") from None
        if y.dtype.kind == "c":
            raise ValueError(f"y must hold real numbers, got complex dtype {y.dtype} (Complex data not supported)")
        if numeric and y.dtype.kind not in "biuf":
            raise ValueError(f"y must hold numbers for a regressor, got dtype {y.dtype}")
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise ValueError(
                f"y must have shape ({n},) or ({n}, n_outputs), one row per sample of X; got shape {y.shape}"
            )
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y must be finite, got NaN or infinity")
        if sample_weight is not None:
            sample_weight = as_sample_weight(sample_weight, n, np.dtype(np.float64))
        return y, sample_weight

    def _check_fitted(self) -> None:
        if not hasattr(self, "coefs_"):
            msg = (
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
                "before using this estimator."
            )
            raise _compat.NotFittedError(msg)

    # --- the saved state (fastmlp.io lays it out in a file; the names are the file format's) ---
    _STATE_SCALARS = (
        "n_iter_",
        "t_",
        "n_layers_",
        "n_outputs_",
        "out_activation_",
        "n_features_in_",
        "loss_",
        "best_loss_",
        "best_validation_score_",
        "_fit_dtype",
        "_loss_name",
        "_epoch_clock",
        "_no_improvement_count",
        "_sgd_lr",
        "_noise_seed",
    )
    _STATE_ARRAYS = ("loss_curve_", "validation_scores_", "validation_loss_curve_", "feature_names_in_")

    def get_model_state(self) -> dict[str, Any]:
        """The fitted model as data: ``params`` (:meth:`get_params`), ``attributes`` (scalars, the label
        type, the optimizer's kind and step count) and ``arrays`` (weights, curves, classes, the
        optimizer's moments), under the names of :mod:`fastmlp.io`'s format; see :meth:`set_model_state`."""
        net = self._network()  # coefs_ set by hand are checked here
        attributes = {name: getattr(self, name) for name in self._STATE_SCALARS if hasattr(self, name)}
        attributes["_training_steps"] = net.training_steps  # the key of the next step's dropout
        arrays: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            arrays[f"coefs_{i}"] = np.array(w)
            arrays[f"intercepts_{i}"] = np.array(b)
        if getattr(self, "_layers_spec", None) is not None:  # a network of layers: all its parameters, its state
            attributes["layers"] = self._layers_spec
            arrays["layer_params"] = np.array(net.params)
            arrays["layer_state"] = np.array(net.state)
        for name in self._STATE_ARRAYS:
            value = getattr(self, name, None)
            if value is not None:
                arrays[name] = np.asarray(value, dtype=str if name == "feature_names_in_" else None)
        if hasattr(self, "classes_"):
            classes = np.asarray(self.classes_)
            if classes.dtype.kind == "O":
                if not all(isinstance(c, str) for c in classes):
                    raise ValueError("cannot save classes_ of mixed or non-string Python objects")
                classes = classes.astype(str)
            arrays["classes_"] = classes
            attributes["y_type"] = self._label_coder.y_type_
            attributes["classes_dtype"] = str(np.asarray(self.classes_).dtype)
        opt = getattr(self, "_optimizer", None)
        opt_state = None if opt is None else opt.state_dict()
        if opt_state is not None:  # the stochastic optimizer, once it has stepped
            meta = {"kind": type(opt).__name__, "dtype": opt_state.pop("dtype")}
            if "t" in opt_state:
                meta["t"] = int(opt_state.pop("t"))
            attributes["optimizer"] = meta
            arrays.update({f"optimizer_{k}": np.asarray(v) for k, v in opt_state.items()})
        return {"params": self.get_params(deep=False), "attributes": attributes, "arrays": arrays}

    def set_model_state(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`get_model_state` returned (``attributes`` and ``arrays``; the
        parameters are the constructor's) onto this estimator; a file's damage raises
        ``KeyError``, ``TypeError`` or ``ValueError``.

        Of the parameters, only those prediction reads (:data:`_PREDICTION_PARAMS`) are checked
        here; the others are the next fit's, checked there (they may be invalid when saved:
        set_params after the fit changes them for the next one)."""
        for name in _PREDICTION_PARAMS:
            PARAMETER_CONSTRAINTS[name](name, getattr(self, name))
        attrs, data = state["attributes"], state["arrays"]
        for name in self._STATE_SCALARS:
            if name in attrs:
                setattr(self, name, attrs[name])
        n = sum(1 for k in data if k.startswith("coefs_"))
        self._layers_spec = attrs.get("layers")
        if self._layers_spec is not None:
            self._layers_spec = _layers.to_spec(_layers.from_spec(self._layers_spec))
            self._layer_values = (data["layer_params"], data["layer_state"])
        self.coefs_ = [data[f"coefs_{i}"] for i in range(n)]
        self.intercepts_ = [data[f"intercepts_{i}"] for i in range(n)]
        for name in ("loss_curve_", "validation_scores_", "validation_loss_curve_"):
            setattr(self, name, data[name].tolist() if name in data else None)
        if "feature_names_in_" in data:
            self.feature_names_in_ = data["feature_names_in_"].astype(object)
        if "classes_" in data:
            cls = data["classes_"]
            if attrs.get("classes_dtype") == "object":
                cls = cls.astype(object)
            self._label_coder = LabelCoder(cls, attrs["y_type"])
            self.classes_ = self._label_coder.classes_
        if self.solver not in ("lbfgs",) and getattr(self, "loss_curve_", None) is None:
            self.loss_curve_ = []
        net = self._network()  # checks that the weights chain
        net.training_steps = attrs.get("_training_steps", 0)
        opt = attrs.get("optimizer")
        if opt is not None and self.solver != "lbfgs":
            optimizer = self._make_optimizer()
            if type(optimizer).__name__ == opt["kind"]:  # else the next partial_fit starts a fresh one
                kept = {k[len("optimizer_") :]: v for k, v in data.items() if k.startswith("optimizer_")}
                optimizer.load_state_dict({"dtype": opt["dtype"], **kept, **({"t": opt["t"]} if "t" in opt else {})})
                optimizer.bind(net)
                self._optimizer = optimizer

    # --- pickling: the C++ network is rebuilt on demand; the optimizer pickles its state ---
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        net = state.pop("_net", None)
        if net is not None:  # rebuilt on demand, with this step count (the key of the next dropout draws)
            state["_training_steps"] = net.training_steps
            if state.get("_layers_spec") is not None:  # and a network of layers' other parameters and state
                state["_layer_values"] = (np.array(net.params), np.array(net.state))
        state.pop("_fast", None)
        if "coefs_" in state and state.get("callbacks") is not None:
            # A fitted model's callbacks served its training; one that pickle cannot write (a lambda,
            # a local function) is dropped, as save() drops them all, so the model itself pickles.
            try:
                pickle.dumps(state["callbacks"])
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                warnings.warn(
                    f"callbacks={state['callbacks']!r} cannot be pickled ({type(exc).__name__}: {exc}); the pickled "
                    "model has callbacks=None (as save() writes it): set them again before training it further",
                    UserWarning,
                    stacklevel=2,
                )
                state["callbacks"] = None
        if "coefs_" in state:
            state["coefs_"] = [np.array(c) for c in state["coefs_"]]
            state["intercepts_"] = [np.array(b) for b in state["intercepts_"]]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = not self._perturbs_inputs()  # input noise and input dropout need a dense X
        return tags

    # --- extras --------------------------------------------------------------
    def save(self, path: Any) -> None:
        """Writes the fitted model to `path` (a ``.npz`` readable by NumPy alone; see :func:`fastmlp.load`)."""
        from .io import save

        save(self, path)

    def fitted_network(self) -> Network:
        """The fitted :class:`fastmlp.Network` whose views ``coefs_`` and ``intercepts_`` are
        (``NotFittedError`` before fit)."""
        self._check_fitted()
        return self._network()

    def summary(self, file: Any = None) -> None:
        """Prints the fitted network's layers: shapes, parameters, activations (:meth:`Network.summary`)."""
        self._check_fitted()
        self._network().summary(file=file, title=f"{type(self).__name__} (fitted, dtype {self._network().dtype})")

    def to_sklearn(self) -> Any:
        """A fitted scikit-learn estimator with the same parameters and weights (needs scikit-learn)."""
        from .io import to_sklearn

        return to_sklearn(self)


# ---------------------------------------------------------------------------
# The two estimators
# ---------------------------------------------------------------------------

_SHARED_DOC = """
    Parameters
    ----------
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate, learning_rate_init, power_t,
    max_iter, shuffle, random_state, tol, verbose, warm_start, momentum, nesterovs_momentum, early_stopping,
    validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, max_fun
        scikit-learn's, same names, defaults and meaning. ``activation`` also
        takes ``'leaky_relu'``, ``'gelu'``, ``'silu'``, ``'selu'``, ``'mish'``, ``'softplus'``,
        ``'elu'`` (formulas in :func:`fastmlp.reference.activation_forward`), or a list with one
        name per hidden layer; ``solver`` also ``'adamw'``, ``'rmsprop'``,
        ``'adagrad'``; ``learning_rate`` also ``'step'``, ``'exponential'``,
        ``'cosine'`` (see :mod:`fastmlp.schedules`; these act on every
        stochastic solver, while ``'invscaling'`` and ``'adaptive'`` act on
        ``'sgd'`` only, as in scikit-learn). ``verbose=2`` shows a progress bar.
    dtype : {None, 'float32', 'float64'}, default=None
        Precision of training; None: float32 for float32 X, else float64 (scikit-learn's rule).
    n_threads : int or None, default=None
        Threads for this estimator's C++ calls; None: fastmlp's current setting.
    leaky_relu_slope : float, default=0.01
        Slope of ``leaky_relu`` for negative inputs.
    l1 : float, default=0.0
        L1 penalty :math:`l_1 \\sum|W| / W_B` on the weights (biases excluded), beside ``alpha``'s L2.
    clip_norm, clip_value : float or None, default=None
        Clip each mini-batch gradient to a global L2 norm, or each value to :math:`[-c, c]`.
    weight_decay : float, default=0.01
        Decoupled weight decay :math:`\\lambda` of ``solver='adamw'``.
    rho : float, default=0.9
        Decay of the squared-gradient average of ``solver='rmsprop'``.
    lr_gamma, lr_step_size, lr_min, warmup_epochs
        Schedule parameters: :math:`\\gamma` (``step``, ``exponential``), :math:`s` epochs (``step``),
        :math:`\\eta_{min}` (``cosine``, over ``max_iter`` epochs), linear warmup length (any schedule).
        ``cosine`` runs its ``max_iter`` epochs: the training-loss ``tol`` criterion does not stop it
        and reaching ``max_iter`` is no ``ConvergenceWarning`` (``early_stopping=True`` still stops it).
    callbacks : callable, list of callables or None, default=None
        Each is called after every epoch with a dict (``epoch``, ``loss``, ``learning_rate``, ``seconds``,
        ``samples_per_second``, and ``validation_loss``/``validation_score`` when available); returning
        ``False`` stops training. ``epoch`` counts from 1 within the current call (after it, ``n_iter_``
        equals it for ``fit``; ``partial_fit``'s one epoch is 1). A fitted model pickles with callbacks
        that pickle can write; others (lambdas) are dropped with a ``UserWarning``; ``save`` drops all.
    distributed : None or 'mpi', default=None
        ``'mpi'``: data-parallel training over ``MPI.COMM_WORLD`` (needs the
        ``mpi`` extra; run under ``mpiexec``). Every rank calls :meth:`fit`
        with its own shard of X, y (the same number of rows everywhere) and
        the same parameters; ``batch_size`` is per rank, so the global batch
        is ``R × batch_size``; each step's gradients are averaged over the
        ranks (see ``docs/distributed.md``), and every rank ends with the same
        model. ``classes_`` are the union of all ranks' labels. Stochastic
        solvers only; no ``sample_weight``, ``class_weight``,
        ``early_stopping`` or ``validation_data`` yet.
    dropout : float or list of float, default=0.0
        Inverted dropout during training (stochastic solvers): a number is the
        rate of every hidden layer's output; a list gives the inputs' rate,
        then one per hidden layer. Each in [0, 1); predictions use the whole
        network. The masks depend on ``random_state``, never on the thread count.
    input_noise : float, default=0.0
        Standard deviation of Gaussian noise added to the inputs during training.
    max_norm : float or None, default=None
        After every update, each hidden unit's incoming weight vector is scaled
        to L2 norm at most ``max_norm``.
    precision : {None, 'fp32', 'bf16'}, default=None
        None: the precision of ``dtype`` (float64 or float32 data as given).
        ``'fp32'``: a float32 network. ``'bf16'``: a float32 network whose matrix
        products take bfloat16 operands and accumulate in float32 (training and
        prediction; weights, optimizer state and the loss stay float32) — on the
        CPU's AVX512-BF16 unit where it has one (``fastmlp.show_config()``).
        Dense X only.
    normalization : {None, 'batch', 'layer'}, default=None
        A ``fastmlp.layers.BatchNorm()`` or ``LayerNorm()`` after each hidden layer's affine map,
        before its activation (see ``docs/layers.md``). ``'batch'`` needs a stochastic solver;
        ``predict`` uses the running statistics.
    residual : bool, default=False
        Each hidden layer but the first whose width equals its input's (``hidden_layer_sizes[l] ==
        hidden_layer_sizes[l-1]``) becomes a residual block ``x + f(x)``, f that layer's
        ``Dense``, normalization, activation and dropout.
    layers : list of fastmlp.layers layers or None, default=None
        The hidden part of the network in full (``Dense``, ``Activation``, ``Dropout``,
        ``BatchNorm``, ``LayerNorm``, ``Residual``, ``Embedding``); the estimator appends the output
        ``Dense(n_outputs_)`` and its output activation. ``hidden_layer_sizes`` and ``activation``
        are then not read; ``normalization``, ``residual`` and ``dropout`` must stay at their
        defaults. ``coefs_``/``intercepts_`` are the Dense layers' weights; the other parameters
        and the running statistics live in :meth:`fitted_network` (``layer_params()``, ``state``)
        and are kept by pickling, :meth:`save`, ``warm_start`` and ``partial_fit``.
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = (
        """Multi-layer perceptron classifier: scikit-learn's MLPClassifier, trained in C++.

    Softmax output and cross-entropy for multiclass targets; a logistic output
    and binary cross-entropy per label for binary and multilabel targets.
    """
        + _SHARED_DOC
        + """    class_weight : None, 'balanced' or dict, default=None
        Multiplies each sample's weight by its class's weight; ``'balanced'``:
        :math:`n / (n_{classes} \\cdot n_c)`.
    label_smoothing : float in [0, 1), default=0.0
        Trains (and reports ``loss_``) on the targets :math:`(1 - \\varepsilon)\\,\\mathrm{onehot} +
        \\varepsilon / K` (PyTorch's convention), :math:`K` the number of classes; binary and
        multilabel outputs (one logistic output per label) use :math:`K = 2`.

    Attributes
    ----------
    classes_, coefs_, intercepts_, loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_,
    n_iter_, t_, n_layers_, n_outputs_, out_activation_, n_features_in_, feature_names_in_
        scikit-learn's. ``coefs_``/``intercepts_`` are views of the C++
        parameters; assigning new arrays to them is honoured by the next call.
    validation_loss_curve_ : list of float or None
        The loss (without penalties) on the validation set after each epoch.
    """
    )

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool | int = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        max_fun: int = 15000,
        dtype: Any = None,
        n_threads: int | None = None,
        leaky_relu_slope: float = 0.01,
        l1: float = 0.0,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        weight_decay: float = 0.01,
        rho: float = 0.9,
        lr_gamma: float = 0.1,
        lr_step_size: int = 10,
        lr_min: float = 0.0,
        warmup_epochs: float = 0.0,
        callbacks: Sequence[Callable[..., Any]] | None = None,
        class_weight: Any = None,
        distributed: str | None = None,
        dropout: Any = 0.0,
        input_noise: float = 0.0,
        max_norm: float | None = None,
        precision: str | None = None,
        normalization: str | None = None,
        residual: bool = False,
        layers: Sequence[Any] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads
        self.distributed = distributed
        self.leaky_relu_slope = leaky_relu_slope
        self.l1 = l1
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.weight_decay = weight_decay
        self.rho = rho
        self.lr_gamma = lr_gamma
        self.lr_step_size = lr_step_size
        self.lr_min = lr_min
        self.warmup_epochs = warmup_epochs
        self.callbacks = callbacks
        self.class_weight = class_weight
        self.dropout = dropout
        self.input_noise = input_noise
        self.max_norm = max_norm
        self.precision = precision
        self.normalization = normalization
        self.residual = residual
        self.layers = layers
        self.label_smoothing = label_smoothing

    _OWN_CONSTRAINTS: ClassVar[dict[str, Callable[[str, Any], None]]] = {
        "label_smoothing": _real_check(0, 1, hi_open=True)
    }

    def _loss_parameters(self) -> dict[str, float]:
        return {"label_smoothing": float(self.label_smoothing)}

    # --- labels --------------------------------------------------------------
    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple[Any, np.ndarray]:
        X, y = _compat.validate_Xy(self, X, y, reset=reset, dtype=self._data_dtype(), y_numeric=False)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = _compat.column_or_1d_warn(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            mpi_classes = getattr(getattr(self, "_mpi", None), "classes", None)  # all ranks' labels
            self._label_coder = LabelCoder.from_y(y) if mpi_classes is None else LabelCoder.from_classes(mpi_classes)
            self.classes_ = self._label_coder.classes_
        elif self.warm_start and not incremental:
            classes = LabelCoder.from_y(y).classes_
            if set(classes.tolist()) != set(self.classes_.tolist()):
                raise ValueError(
                    "warm_start can only be used where `y` has the same classes as in the previous "
                    f"call to fit. Previously got {self.classes_}, `y` has {classes}"
                )
        else:
            self._label_coder.check_known(y)
        self.out_activation_ = self._label_coder.output_activation
        self._loss_name = "log_loss" if self.out_activation_ == "softmax" else "binary_log_loss"
        self._y_fit = y
        return X, self._label_coder.encode(y, np.dtype(X.dtype))

    def _class_weight_factors(self, y: Any) -> np.ndarray | None:
        if self.class_weight is None:
            return None
        mpi = getattr(self, "_mpi", None)  # 'balanced': the counts over every rank's labels
        reduce = None if mpi is None else self._sum_over_ranks
        return self._label_coder.class_weights(self.class_weight, np.asarray(self._y_fit), reduce)

    def _encode_validation(self, y_val: Any, n: int, dtype: np.dtype) -> np.ndarray:
        y_val = np.asarray(y_val)
        if y_val.shape[0] != n:
            raise ValueError(
                f"validation_data: X_val and y_val must have the same number of samples, got {n} and {y_val.shape[0]}"
            )
        self._label_coder.check_known(y_val)
        return self._label_coder.encode(y_val, np.dtype(dtype))

    def _targets_to_y(self, Y: np.ndarray) -> np.ndarray:
        return self._label_coder.decode(Y)

    # --- API -------------------------------------------------------------------
    def fit(self, X: Any, y: Any, sample_weight: Any = None, *, validation_data: Any = None) -> MLPClassifier:
        """Fits the model to X and the labels y (1-D labels or a 0/1 multilabel matrix).

        Parameters
        ----------
        X : array-like or scipy.sparse CSR/CSC matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
        sample_weight : array-like of shape (n_samples,), default=None
            Each mini-batch's loss is :math:`\\sum w_i \\ell_i / \\sum w_i` (scikit-learn's normalization).
        validation_data : tuple (X_val, y_val[, sample_weight_val]), default=None
            Scored after each epoch instead of a split of ``validation_fraction`` of X; its loss goes to
            ``validation_loss_curve_``.
        """
        return self._transaction(
            lambda progress: self._fit(
                X, y, progress, sample_weight=sample_weight, incremental=False, validation_data=validation_data
            )
        )

    def _partial_fit(self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None) -> MLPClassifier:
        """One epoch over X, y. ``classes`` (all labels) is required on the first call."""
        return self._transaction(lambda progress: self._partial_fit_classes(X, y, sample_weight, classes, progress))

    def _partial_fit_classes(
        self, X: Any, y: Any, sample_weight: Any, classes: Any, progress: FitProgress
    ) -> MLPClassifier:
        first = not hasattr(self, "classes_")
        if first:
            if classes is None:
                y_arr = np.asarray(y)
                if not (y_arr.ndim == 2 and y_arr.shape[1] > 1):
                    raise ValueError("classes must be passed on the first call to partial_fit.")
            if isinstance(self.class_weight, str):
                raise ValueError(
                    "class_weight='balanced' is not supported by partial_fit: the class counts of "
                    "the whole data are unknown; pass a dict"
                )
            y_arr = np.asarray(y)
            self._label_coder = (
                LabelCoder.from_y(y_arr) if y_arr.ndim == 2 and y_arr.shape[1] > 1 else LabelCoder.from_classes(classes)
            )
            self.classes_ = self._label_coder.classes_
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(
                f"`classes={np.asarray(classes)!r}` is not the same as on last call to partial_fit, "
                f"was: {self.classes_!r}"
            )
        return self._fit(X, y, progress, sample_weight=sample_weight, incremental=True)

    partial_fit = _AvailableIf(_partial_fit, _stochastic)

    def predict(self, X: Any) -> np.ndarray:
        """The predicted class of each sample (rows of 0/1 for multilabel)."""
        out = self._forward(X)
        return self._label_coder.decode(out)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_`` (binary: ``[1 − p, p]``)."""
        out = self._forward(X)
        if self.n_outputs_ == 1:
            p = out.ravel()
            return np.vstack([1 - p, p]).T
        return out

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """``log(predict_proba(X))``."""
        p = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(p, out=p)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy (subset accuracy for multilabel), weighted by sample_weight."""
        return self._score_on(X, y, sample_weight, validate=True)

    def _score_on(
        self,
        X: Any,
        y: Any,
        sample_weight: Any,
        validate: bool = False,
        reduce: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> float:
        """Accuracy; with `reduce` (the sum over MPI ranks) over every rank's samples:
        Σ_r Σ_i w_i·correct_i / Σ_r Σ_i w_i (nan on every rank if any rank's output is not finite)."""
        out = self._forward(X) if validate else self._net.forward(X)
        if validate:
            y, sample_weight = self._score_targets(y, sample_weight, out.shape[0], numeric=False)
        finite = bool(np.isfinite(out).all())
        if reduce is None and not finite:
            return np.nan
        correct = np.zeros(0)
        if finite:
            pred = self._label_coder.decode(out)
            y = np.asarray(y)
            correct = (pred == y).all(axis=1) if pred.ndim == 2 else (pred == y.ravel())
        if reduce is None:
            return float(np.average(correct, weights=sample_weight))
        w = np.ones(len(correct)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        total = reduce(np.array([w @ correct if finite else 0.0, w.sum() if finite else 0.0, not finite]))
        return np.nan if total[2] > 0 else float(total[0] / total[1])

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = (
        """Multi-layer perceptron regressor: scikit-learn's MLPRegressor, trained in C++.

    ``loss='squared_error'`` (identity output) or ``'poisson'`` (exp output,
    half the Poisson deviance), or fastmlp's robust losses (identity output;
    formulas in :meth:`fastmlp.Network.loss_and_grad`): ``'huber'`` (PyTorch's
    ``HuberLoss`` with threshold ``delta``), ``'absolute_error'`` (the mean
    absolute error) or ``'quantile'`` (the pinball loss of the ``quantile``
    level: ``predict`` estimates that conditional quantile).
    For ``'squared_error'`` the gradient of multi-output training is
    scikit-learn's (the sum over outputs, while ``loss_`` is the mean); the
    other losses train on the gradient of the reported loss.
    """
        + _SHARED_DOC
        + """    loss : {'squared_error', 'poisson', 'huber', 'absolute_error', 'quantile'}, default='squared_error'
    delta : float > 0, default=1.0
        The threshold of ``loss='huber'`` (read by that loss only).
    quantile : float in (0, 1), default=0.5
        The level of ``loss='quantile'`` (read by that loss only; 0.5 is half the absolute error).

    Attributes
    ----------
    coefs_, intercepts_, loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_,
    n_iter_, t_, n_layers_, n_outputs_, out_activation_, n_features_in_, feature_names_in_
        scikit-learn's.
    validation_loss_curve_ : list of float or None
        The loss (without penalties) on the validation set after each epoch.
    """
    )

    def __init__(
        self,
        loss: str = "squared_error",
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool | int = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        max_fun: int = 15000,
        dtype: Any = None,
        n_threads: int | None = None,
        leaky_relu_slope: float = 0.01,
        l1: float = 0.0,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        weight_decay: float = 0.01,
        rho: float = 0.9,
        lr_gamma: float = 0.1,
        lr_step_size: int = 10,
        lr_min: float = 0.0,
        warmup_epochs: float = 0.0,
        callbacks: Sequence[Callable[..., Any]] | None = None,
        distributed: str | None = None,
        dropout: Any = 0.0,
        input_noise: float = 0.0,
        max_norm: float | None = None,
        precision: str | None = None,
        normalization: str | None = None,
        residual: bool = False,
        layers: Sequence[Any] | None = None,
        delta: float = 1.0,
        quantile: float = 0.5,
    ) -> None:
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads
        self.distributed = distributed
        self.leaky_relu_slope = leaky_relu_slope
        self.l1 = l1
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.weight_decay = weight_decay
        self.rho = rho
        self.lr_gamma = lr_gamma
        self.lr_step_size = lr_step_size
        self.lr_min = lr_min
        self.warmup_epochs = warmup_epochs
        self.callbacks = callbacks
        self.dropout = dropout
        self.input_noise = input_noise
        self.max_norm = max_norm
        self.precision = precision
        self.normalization = normalization
        self.residual = residual
        self.layers = layers
        self.delta = delta
        self.quantile = quantile

    _OWN_CONSTRAINTS: ClassVar[dict[str, Callable[[str, Any], None]]] = {
        "loss": _choice_check(REGRESSION_LOSSES),
        "delta": _real_check(0, lo_open=True),
        "quantile": _real_check(0, 1, lo_open=True, hi_open=True),
    }

    def _loss_parameters(self) -> dict[str, float]:
        if self._loss_name == "huber":
            return {"delta": float(self.delta)}
        if self._loss_name == "quantile":
            return {"alpha": float(self.quantile)}
        return {}

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple[Any, np.ndarray]:
        check_choice("loss", self.loss, REGRESSION_LOSSES, style="sklearn")
        X, y = _compat.validate_Xy(self, X, y, reset=reset, dtype=self._data_dtype(), y_numeric=True)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = _compat.column_or_1d_warn(y)
        if self.loss == "poisson" and (y < 0).any():
            raise ValueError("loss='poisson' needs targets y >= 0, got a negative value")
        self.out_activation_ = LOSS_OUTPUT[self.loss] or "identity"
        self._loss_name = self.loss
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        return X, np.ascontiguousarray(Y, dtype=X.dtype)

    def _encode_validation(self, y_val: Any, n: int, dtype: np.dtype) -> np.ndarray:
        from ._validation import as_targets

        return as_targets("validation_data y_val", y_val, self._loss_name, n, self.n_outputs_, np.dtype(dtype))

    def _targets_to_y(self, Y: np.ndarray) -> np.ndarray:
        return Y.ravel() if Y.shape[1] == 1 else Y

    def fit(self, X: Any, y: Any, sample_weight: Any = None, *, validation_data: Any = None) -> MLPRegressor:
        """Fits the model to X and the targets y ((n_samples,) or (n_samples, n_outputs)).

        See :meth:`MLPClassifier.fit` for `sample_weight` and `validation_data`.
        """
        return self._transaction(
            lambda progress: self._fit(
                X, y, progress, sample_weight=sample_weight, incremental=False, validation_data=validation_data
            )
        )

    def _partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over X, y."""
        return self._transaction(
            lambda progress: self._fit(X, y, progress, sample_weight=sample_weight, incremental=True)
        )

    partial_fit = _AvailableIf(_partial_fit, _stochastic)

    def predict(self, X: Any) -> np.ndarray:
        """The predicted targets, shape (n_samples,) or (n_samples, n_outputs)."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² (uniform average over outputs), weighted by sample_weight: scikit-learn's r2_score."""
        return self._score_on(X, y, sample_weight, validate=True)

    def _score_on(
        self,
        X: Any,
        y: Any,
        sample_weight: Any,
        validate: bool = False,
        reduce: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> float:
        """R²; with `reduce` (the sum over MPI ranks) over every rank's samples, in two passes as
        one process computes it: the weighted mean of y, then the weighted squared sums."""
        pred = self._forward(X) if validate else self._net.forward(X)
        if validate:
            y, sample_weight = self._score_targets(y, sample_weight, pred.shape[0], numeric=True)
        finite = bool(np.isfinite(pred).all())
        if reduce is None and not finite:
            return np.nan
        y = np.asarray(y, dtype=np.float64)
        y = y.reshape(len(y), -1)
        pred = np.asarray(pred, dtype=np.float64).reshape(len(y), -1)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging model's score is nan, silently
            if reduce is None:
                num = np.average((y - pred) ** 2, axis=0, weights=w)
                den = np.average((y - np.average(y, axis=0, weights=w)) ** 2, axis=0, weights=w)
            else:
                w = np.ones(len(y)) if w is None else w
                first = reduce(np.r_[w.sum(), w @ y, 0.0 if finite else 1.0])
                if first[-1] > 0:
                    return np.nan
                k, total = y.shape[1], first[0]
                mean = first[1 : 1 + k] / total
                second = reduce(np.r_[w @ (y - pred) ** 2, w @ (y - mean) ** 2])
                num, den = second[:k] / total, second[k:] / total
        if not np.isfinite(num).all():
            return np.nan
        ok = den != 0
        r2 = np.ones(y.shape[1])
        r2[ok] = 1 - num[ok] / den[ok]
        r2[~ok & (num != 0)] = 0.0
        return float(np.mean(r2))
