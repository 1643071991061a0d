"""A small typed program against fastmlp's public API; CI runs `mypy --strict` on it
(against the installed wheel, whose py.typed and .pyi stubs give mypy the types).

    python examples/typed_usage.py
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

import fastmlp
from fastmlp import _core
from fastmlp.datasets import make_spiral


def accuracy(net: fastmlp.Network, X: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> float:
    proba: npt.NDArray[np.float32] = net.forward(X)
    return float((proba.argmax(axis=1) == y).mean())


def train(epochs: int, seed: int = 0) -> tuple[fastmlp.Network, list[float]]:
    X, y = make_spiral(1000, n_classes=2, noise=0.1, seed=seed, dtype="float32")
    net = fastmlp.Network([2, 64, 64, 2], activation="relu", output_activation="softmax", dtype="float32", seed=seed)
    opt = fastmlp.Adam(lr=0.01)
    losses = [net.train_epoch(X, y, "log_loss", opt, batch_size=64) for _ in range(epochs)]
    return net, losses


def main() -> None:
    fastmlp.set_num_threads(2)
    net, losses = train(epochs=50)
    first_layer: npt.NDArray[np.float32] = net.weights[0]
    n_threads: int = fastmlp.get_num_threads()
    # The compiled module's stubs: a mistyped call here fails mypy.
    info: dict[str, object] = _core.build_info()
    raw = _core.Network_float32([2, 4, 1], "tanh", "identity", 0.01, 0, "glorot")
    params: npt.NDArray[np.float32] = raw.params
    X, y = make_spiral(200, seed=1, dtype="float32")
    print(
        f"fastmlp {fastmlp.__version__} ({info['variant']}), {n_threads} threads: loss {losses[0]:.3f} -> "
        f"{losses[-1]:.3f}, accuracy {accuracy(net, X, y):.3f}, W0 {first_layer.shape}, "
        f"{params.size} raw params"
    )


if __name__ == "__main__":
    main()
