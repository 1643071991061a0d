"""The names the compiled core accepts, read from its tables — the one list of each.

Activations (and their initialization factors) come from
``kActivations``/``kActivationAliases`` (``cpp/include/fastmlp/activation.hpp``),
losses, the output activation each needs and the parameter each reads from
``kLosses`` and ``kLossParams`` (``loss.hpp``), initializations from ``kInits``
(``network.hpp``), schedules from ``kSchedules`` (``schedule.hpp``) and the
optimizers (hyperparameters, defaults, ranges, state arrays) from ``kOptimizers``
(``optimizer.hpp``). Every
list in the package is made from these, so a new row there reaches Network,
the estimators, the exporters and the tests without another edit.
``fastmlp.reference`` keeps its own lists (it is NumPy only);
``tests/test_reference.py`` checks that they equal these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple

from . import _core
from ._validation import check_choice, check_float

_ACTIVATIONS: list[tuple[str, bool]] = [(str(name), bool(hidden)) for name, hidden, _, _ in _core.activations()]
# activation -> its Glorot factor c (W ~ U(-s, s), s = sqrt(c / (n_in + n_out))) and He factor (s = sqrt(c / n_in))
GLOROT_FACTOR: dict[str, float] = {str(name): float(glorot) for name, _, glorot, _ in _core.activations()}
HE_FACTOR: dict[str, float] = {str(name): float(he) for name, _, _, he in _core.activations()}
_ALIASES: dict[str, str] = {str(alias): str(name) for alias, name in _core.activation_aliases()}


def _with_aliases(names: Iterable[str]) -> tuple[str, ...]:
    """Each name followed by its aliases, in the core's order."""
    return tuple(n for name in names for n in (name, *[a for a, c in _ALIASES.items() if c == name]))


# Canonical names (no aliases): what a hidden layer may use, and what only an output layer may.
HIDDEN: tuple[str, ...] = tuple(name for name, hidden in _ACTIVATIONS if hidden)
OUTPUT_ONLY: tuple[str, ...] = tuple(name for name, hidden in _ACTIVATIONS if not hidden)
# Every accepted name, aliases included (e.g. 'sigmoid' after 'logistic').
HIDDEN_ACTIVATIONS: tuple[str, ...] = _with_aliases(HIDDEN)
OUTPUT_ACTIVATIONS: tuple[str, ...] = HIDDEN_ACTIVATIONS + _with_aliases(OUTPUT_ONLY)

# loss -> the output activation it is fused with (None: any).
LOSS_OUTPUT: dict[str, str | None] = {str(loss): None if out is None else str(out) for loss, out, _ in _core.losses()}
LOSSES: tuple[str, ...] = tuple(LOSS_OUTPUT)
# loss -> the name of the one parameter it reads (None: none)
LOSS_PARAM: dict[str, str | None] = {str(loss): None if p is None else str(p) for loss, _, p in _core.losses()}
# parameter -> (default, lo, hi, lo_open, hi_open): its default and range
LOSS_PARAM_RANGE: dict[str, tuple[float, float, float, bool, bool]] = {
    str(name): (float(default), float(lo), float(hi), bool(lo_open), bool(hi_open))
    for name, default, lo, hi, lo_open, hi_open in _core.loss_params()
}


class OptimizerParam(NamedTuple):
    """One hyperparameter of an optimizer: its default and range (a flag is a bool)."""

    name: str
    default: float
    lo: float
    hi: float
    lo_open: bool
    hi_open: bool
    is_flag: bool


class OptimizerInfo(NamedTuple):
    """One row of the core's ``kOptimizers``."""

    params: tuple[OptimizerParam, ...]  # the constructor's arguments, in order, lr first
    state: tuple[str, ...]  # the state arrays' names (get_state, the files' optimizer_<name>)
    counts_steps: bool  # whether the state also holds the step count t


# optimizer class name ('Adam') -> its row; its solver= name is the class name in lower case
OPTIMIZERS: dict[str, OptimizerInfo] = {
    str(name): OptimizerInfo(
        tuple(
            OptimizerParam(str(p), float(d), float(lo), float(hi), bool(lo_o), bool(hi_o), bool(flag))
            for p, d, lo, hi, lo_o, hi_o, flag in params
        ),
        tuple(str(s) for s in state),
        bool(counts_steps),
    )
    for name, params, state, counts_steps in _core.optimizers()
}
# every state array name, each once, in the table's order: ('velocity', 'm', 'v', 'G')
OPTIMIZER_STATE: tuple[str, ...] = tuple(dict.fromkeys(s for row in OPTIMIZERS.values() for s in row.state))
INITS: tuple[str, ...] = tuple(str(n) for n in _core.inits())
SCHEDULES: tuple[str, ...] = tuple(str(n) for n in _core.schedules())


def canonical_activation(name: str) -> str:
    """The activation's own name for an alias ('sigmoid' -> 'logistic'); other names unchanged."""
    return _ALIASES.get(name, name)


def check_hyperparameter(param: OptimizerParam, value: Any) -> Any:
    """`value` checked against the range of `param` (a bool for a flag); ``ValueError``/``TypeError`` naming it."""
    if param.is_flag:
        if not isinstance(value, bool):
            raise TypeError(f"{param.name} must be a bool, got {type(value).__name__}")
        return value
    hi = None if math.isinf(param.hi) else param.hi
    return check_float(param.name, value, param.lo, hi, open_min=param.lo_open, open_max=param.hi_open)


def loss_spec(loss: Any, argument: str = "loss", *, style: Literal["plain", "sklearn"] = "plain") -> dict[str, Any]:
    """The loss as a checked, JSON-able spec: ``{"name": name}`` plus its parameter, if it reads one.

    `loss` is a name of :data:`LOSSES` (its parameter at the default) or a mapping
    ``{"name": "huber", "delta": 2.0}`` (a parameter left out takes its default). An
    unknown name, a parameter the loss does not read or one out of range raises
    ``ValueError`` (a wrong type ``TypeError``) naming `argument`.
    """
    if isinstance(loss, Mapping):
        if "name" not in loss:
            raise ValueError(
                f"{argument} as a mapping needs a 'name' (one of {', '.join(map(repr, LOSSES))}); got {loss!r}"
            )
        name, given = loss["name"], {k: v for k, v in loss.items() if k != "name"}
    elif isinstance(loss, str):
        name, given = loss, {}
    else:
        raise TypeError(
            f"{argument} must be a loss name (str) or a mapping such as {{'name': 'huber', 'delta': 1.0}}; "
            f"got {type(loss).__name__}"
        )
    check_choice(argument, name, LOSSES, style=style)
    param = LOSS_PARAM[name]
    unknown = sorted(k for k in given if k != param)
    if unknown:
        takes = f"takes only {param!r}" if param else "takes no parameters"
        raise ValueError(f"{argument} {name!r} {takes}; got {', '.join(map(repr, unknown))}")
    spec: dict[str, Any] = {"name": name}
    if param is not None:
        default, lo, hi, lo_open, hi_open = LOSS_PARAM_RANGE[param]
        hi_or_none = None if math.isinf(hi) else hi
        value = given.get(param, default)
        spec[param] = check_float(
            f"{argument}[{param!r}]", value, lo, hi_or_none, open_min=lo_open, open_max=hi_open, style=style
        )
    return spec


def core_loss(spec: Mapping[str, Any]) -> Any:
    """The compiled core's ``Loss`` of a spec made by :func:`loss_spec`."""
    return _core.Loss(**spec)
