"""fastmlp: fast multilayer perceptrons for multicore CPUs.

The math runs in C++17 (Eigen, OpenMP) behind this thin Python API and is
tested against :mod:`fastmlp.reference`, a NumPy implementation of the same
formulas.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version
from typing import TYPE_CHECKING, Any

# First of all: choose the compiled core this CPU can run and register it as
# fastmlp._core, before any submodule does `from . import _core`.
from ._dispatch import load as _load_core

_selection = _load_core()

from . import _core  # noqa: E402  (the variant just chosen; typed by _core.pyi)
from ._config import show_config  # noqa: E402
from .io import load  # noqa: E402
from .network import Network  # noqa: E402
from .optim import *  # noqa: E402, F403  (SGD, Adam, ...: every optimizer of the core's table)
from .optim import __all__ as _optimizers  # noqa: E402
from .schedules import Schedule  # noqa: E402

if TYPE_CHECKING:  # for type checkers; at run time, __getattr__ below imports them on first use
    from ._compat import ConvergenceWarning
    from .estimators import MLPClassifier, MLPRegressor
    from .tabular import TabularClassifier, TabularRegressor

# `import fastmlp` stays light (NumPy and the compiled core): the estimators, and
# with them scikit-learn (when installed), are imported on first use of these names.
_LAZY = {
    "MLPClassifier": "estimators",
    "MLPRegressor": "estimators",
    "ConvergenceWarning": "_compat",
    "TabularClassifier": "tabular",
    "TabularRegressor": "tabular",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


try:
    __version__: str = _version("fastmlp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = str(_core.build_info()["version"])


def _warn_if_omp_num_threads_is_capped() -> None:
    """OMP_NUM_THREADS above fastmlp's limit is capped (never passed to OpenMP's thread creation); say so."""
    import os

    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if first.isdigit() and int(first) > _core.thread_limit():
        import warnings

        warnings.warn(
            f"OMP_NUM_THREADS={first} is above fastmlp's limit of {_core.thread_limit()} threads; "
            f"fastmlp uses {_core.get_num_threads()}",
            RuntimeWarning,
            stacklevel=2,
        )


_warn_if_omp_num_threads_is_capped()


def set_num_threads(n: int) -> None:
    """Sets the number of threads for fastmlp (the OpenMP setting of this thread), 1 to 256."""
    from ._validation import check_int

    _core.set_num_threads(check_int("n", n, minimum=1))


def get_num_threads() -> int:
    """The number of threads fastmlp will use."""
    return int(_core.get_num_threads())


__all__ = [
    *_optimizers,
    "ConvergenceWarning",
    "MLPClassifier",
    "MLPRegressor",
    "Network",
    "Schedule",
    "TabularClassifier",
    "TabularRegressor",
    "__version__",
    "get_num_threads",
    "load",
    "set_num_threads",
    "show_config",
]
