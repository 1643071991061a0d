"""Command line: ``python -m fastmlp demo [--plot FILE.png]`` and ``python -m fastmlp info``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

import fastmlp
from fastmlp import reference as ref
from fastmlp.datasets import make_blobs_classification, make_spiral


def _train(
    name: str,
    epoch: Callable[[], float],
    predict: Callable[[], np.ndarray],
    y: np.ndarray,
    epochs: int,
    n: int,
    every: int,
) -> tuple[list[float], float]:
    losses, seconds = [], 0.0
    for e in range(1, epochs + 1):
        t0 = time.perf_counter()
        losses.append(epoch())
        seconds += time.perf_counter() - t0
        if e % every == 0 or e == epochs:
            print(f"  {name:<9} epoch {e:4d}  loss {losses[-1]:.5f}")
    accuracy = float((predict().argmax(1) == y).mean())
    rate = epochs * n / seconds
    print(f"  {name:<9} accuracy {accuracy:.4f}   {rate:,.0f} samples/s")
    return losses, rate


def _problem(
    title: str,
    X: np.ndarray,
    y: np.ndarray,
    sizes: Sequence[int],
    make_opt: Callable[[], fastmlp.Optimizer],
    make_ref_opt: Callable[[], Any],
    epochs: int,
    batch: int,
    every: int,
) -> tuple[fastmlp.Network, list[float]]:
    print(f"\n{title}: {X.shape[0]} samples, network {list(sizes)}, relu, softmax + log_loss, batch {batch}")
    net = fastmlp.Network(sizes, activation="relu", output_activation="softmax", dtype="float32", seed=0)
    W, b = [w.copy() for w in net.weights], [c.copy() for c in net.biases]
    opt, ref_opt = make_opt(), make_ref_opt()
    Y = ref.to_targets(y, "log_loss", sizes[-1], "float32")
    rng = np.random.default_rng(0)
    curve, fast = _train(
        "fastmlp",
        lambda: net.train_epoch(X, y, "log_loss", opt, batch),
        lambda: net.forward(X),
        y,
        epochs,
        len(X),
        every,
    )

    def ref_epoch() -> float:
        return ref.train_epoch(W, b, X, Y, "log_loss", ref_opt, batch, rng.permutation(len(X)), "relu", "softmax")

    _, slow = _train("reference", ref_epoch, lambda: ref.predict(W, b, X, "relu", "softmax"), y, epochs, len(X), every)
    print(f"  fastmlp is {fast / slow:.1f}x the NumPy reference's samples/s")
    return net, curve


def demo(plot: str | None) -> int:
    if plot:  # before minutes of training, not after
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("--plot needs matplotlib: pip install matplotlib", file=sys.stderr)
            return 1
    print(f"fastmlp {fastmlp.__version__}, {fastmlp.get_num_threads()} threads")
    Xs, ys = make_spiral(2000, n_classes=2, noise=0.1, seed=0, dtype="float32")
    spiral, spiral_curve = _problem(
        "Two-class spiral",
        Xs,
        ys,
        [2, 64, 64, 2],
        lambda: fastmlp.Adam(0.01),
        lambda: ref.Adam(0.01),
        epochs=100,
        batch=64,
        every=20,
    )
    Xc, yc = make_blobs_classification(20000, n_features=20, n_classes=10, seed=0, dtype="float32")
    _, blob_curve = _problem(
        "Ten-class problem",
        Xc,
        yc,
        [20, 128, 64, 10],
        lambda: fastmlp.SGD(0.05, momentum=0.9, nesterov=True),
        lambda: ref.SGD(0.05, momentum=0.9, nesterov=True),
        epochs=10,
        batch=128,
        every=1,
    )
    if plot:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
        grid = np.linspace(-1.1, 1.1, 300, dtype=np.float32)
        gx, gy = np.meshgrid(grid, grid)
        proba = spiral.forward(np.column_stack([gx.ravel(), gy.ravel()]))[:, 1].reshape(gx.shape)
        left.contourf(gx, gy, proba, levels=20, cmap="RdBu", alpha=0.7)
        left.scatter(Xs[:, 0], Xs[:, 1], c=ys, cmap="RdBu", s=6, edgecolors="k", linewidths=0.2)
        left.set_title("spiral: decision boundary")
        right.plot(range(1, len(spiral_curve) + 1), spiral_curve, label="spiral")
        right.plot(range(1, len(blob_curve) + 1), blob_curve, label="ten classes")
        right.set_yscale("log")
        right.set_xlabel("epoch")
        right.set_ylabel("training loss")
        right.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"\nwrote {plot}")
    return 0


def info() -> int:
    fastmlp.show_config()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmlp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train on a spiral and a ten-class problem, beside the NumPy reference")
    d.add_argument("--plot", metavar="FILE.png", help="draw the decision boundary and the loss curves")
    sub.add_parser("info", help="version, CPU variant, build, threads and extras (fastmlp.show_config())")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.plot)
    return info()


if __name__ == "__main__":
    sys.exit(main())
