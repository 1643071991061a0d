"""Small helpers shared by the tests (imported as ``from helpers import ...``)."""
from __future__ import annotations

import numpy as np

# float64: the C++ result equals the reference's to rounding; float32: loosely.
TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-6)}

HIDDEN = ("identity", "logistic", "tanh", "relu", "leaky_relu")
# Every valid (loss, output activation) pair.
LOSS_OUTPUT = (
    [("squared_error", f) for f in HIDDEN + ("softmax",)]
    + [("log_loss", "softmax"), ("binary_log_loss", "logistic")]
)


def make_data(rng: np.random.Generator, n: int, n_in: int, n_out: int, loss: str, dtype: str):
    """Inputs and 2-D targets of the kind `loss` expects."""
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if loss == "log_loss":
        Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, n)]
    elif loss == "binary_log_loss":
        Y = (rng.random((n, n_out)) < 0.5).astype(dtype)
    else:
        Y = rng.standard_normal((n, n_out)).astype(dtype)
    return X, Y


def copy_params(net):
    """The network's weights and biases as fresh arrays (for the reference to mutate)."""
    return [w.copy() for w in net.weights], [b.copy() for b in net.biases]
