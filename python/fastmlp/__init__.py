"""fastmlp: fast multilayer perceptrons for multicore CPUs.

The math runs in C++17 (Eigen, OpenMP) behind this thin Python API and is
tested against :mod:`fastmlp.reference`, a NumPy implementation of the same
formulas.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from . import _core
from .network import Network
from .optim import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .schedules import Schedule
from ._compat import ConvergenceWarning
from .estimators import MLPClassifier, MLPRegressor
from .io import load

try:
    __version__ = _version("fastmlp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = _core.build_info()["version"]


def set_num_threads(n: int) -> None:
    """Sets the number of threads for fastmlp (the OpenMP setting of this thread)."""
    from ._validation import check_int
    _core.set_num_threads(check_int("n", n, minimum=1))


def get_num_threads() -> int:
    """The number of threads fastmlp will use."""
    return int(_core.get_num_threads())


__all__ = ["MLPClassifier", "MLPRegressor", "load", "ConvergenceWarning", "Network", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Optimizer", "Schedule", "set_num_threads", "get_num_threads", "__version__"]
