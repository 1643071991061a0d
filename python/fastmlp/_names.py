"""The names the compiled core accepts, read from its tables — the one list of each.

Activations come from ``kActivations``/``kActivationAliases``
(``cpp/include/fastmlp/activation.hpp``), losses and the output activation each
needs from ``kLosses`` (``loss.hpp``), initializations from ``kInits``
(``network.hpp``) and schedules from ``kSchedules`` (``schedule.hpp``). Every
list in the package is made from these, so a new row there reaches Network,
the estimators, the exporters and the tests without another edit.
``fastmlp.reference`` keeps its own lists (it is NumPy only);
``tests/test_reference.py`` checks that they equal these.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import _core

_ACTIVATIONS: list[tuple[str, bool]] = [(str(name), bool(hidden)) for name, hidden in _core.activations()]
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
LOSS_OUTPUT: dict[str, str | None] = {str(loss): None if out is None else str(out) for loss, out in _core.losses()}
LOSSES: tuple[str, ...] = tuple(LOSS_OUTPUT)
INITS: tuple[str, ...] = tuple(str(n) for n in _core.inits())
SCHEDULES: tuple[str, ...] = tuple(str(n) for n in _core.schedules())


def canonical_activation(name: str) -> str:
    """The activation's own name for an alias ('sigmoid' -> 'logistic'); other names unchanged."""
    return _ALIASES.get(name, name)
