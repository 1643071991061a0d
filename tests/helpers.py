"""Small helpers shared by the tests (imported as ``from helpers import ...``)."""

from __future__ import annotations

import os

import numpy as np

from fastmlp import _names

# float64: the C++ result equals the reference's to rounding; float32: loosely.
TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-6)}

# The core's names (its tables in activation.hpp and loss.hpp): a new activation or loss is
# tested by every test parametrized with these, with no edit here.
HIDDEN = _names.HIDDEN  # every hidden-layer activation (no aliases)
OUTPUTS = _names.HIDDEN + _names.OUTPUT_ONLY  # every output activation
# Every valid (loss, output activation) pair: a loss fused with one output takes only that one.
LOSS_OUTPUT = [(loss, f) for loss, need in _names.LOSS_OUTPUT.items() for f in (OUTPUTS if need is None else (need,))]


def make_data(rng: np.random.Generator, n: int, n_in: int, n_out: int, loss: str, dtype: str):
    """Inputs and 2-D targets of the kind `loss` expects."""
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if loss == "log_loss":
        Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, n)]
    elif loss == "binary_log_loss":
        Y = (rng.random((n, n_out)) < 0.5).astype(dtype)
    elif loss == "poisson":
        Y = rng.poisson(1.0, (n, n_out)).astype(dtype)
    else:
        Y = rng.standard_normal((n, n_out)).astype(dtype)
    return X, Y


def copy_params(net):
    """The network's weights and biases as fresh arrays (for the reference to mutate)."""
    return [w.copy() for w in net.weights], [b.copy() for b in net.biases]


def load_script(path, name: str):
    """The benchmark script at `path` imported as module `name` (registered in sys.modules while
    it is used: dataclasses look their module up while a class is built; the caller removes it)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def rss_bytes() -> int:
    """This process's resident memory (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def asan_allowance() -> int:
    """Under AddressSanitizer freed memory waits in a quarantine before reuse: that much growth is not a leak."""
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        return 0
    opts = dict(o.split("=", 1) for o in os.environ.get("ASAN_OPTIONS", "").split(":") if "=" in o)
    return int(opts.get("quarantine_size_mb", 256)) * 2**20
