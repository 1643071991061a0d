#!/usr/bin/env python
"""Test accuracy and wall time on MNIST and Fashion-MNIST: fastmlp beside scikit-learn.

Each configuration trains fastmlp's estimator and, where scikit-learn has the
configuration, scikit-learn's MLPClassifier with the same parameters and
random_state in the same run (so the wall times are comparable), on the
60,000 training images, and scores both on the 10,000 test images. Pixels
are scaled to [0, 1] (float32). The result is a markdown table on stdout.

    python benchmarks/accuracy.py                  # both data sets, 10 epochs each
    python benchmarks/accuracy.py --epochs 3 --datasets fashion-mnist --no-sklearn
    FASTMLP_DATA=/path/to/data python benchmarks/accuracy.py

Published anchors: the Fashion-MNIST paper's scikit-learn MLPClassifier
(relu, 100 hidden units) scores 0.871; an MLP 784-800-10 scores 98.4% on MNIST
(LeCun et al.'s table).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np

import fastmlp
from fastmlp.datasets import load_mnist

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# name → (parameters shared with scikit-learn, fastmlp-only extras or None)
CONFIGS = {
    # The estimator target of the engine issue: scikit-learn's defaults (Adam 1e-3,
    # batch 200, alpha 1e-4) with two hidden layers; run it with --epochs 20.
    "relu256-128-adam": (dict(hidden_layer_sizes=(256, 128)), None),
    "relu800-adam": (dict(hidden_layer_sizes=(800,), solver="adam", learning_rate_init=1e-3, batch_size=128,
                            alpha=1e-4), None),
    "relu800-adamw-cosine-warmup": (
        dict(hidden_layer_sizes=(800,), batch_size=128, alpha=0.0),
        dict(solver="adamw", learning_rate_init=2e-3, weight_decay=1e-2, learning_rate="cosine", warmup_epochs=1)),
}


def run(estimator, X, y, X_test, y_test) -> tuple[float, float]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter epochs on purpose: no ConvergenceWarning
        estimator.fit(X, y)
    seconds = time.perf_counter() - start
    return seconds, float(np.mean(estimator.predict(X_test) == y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--datasets", default="mnist,fashion-mnist")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names from CONFIGS")
    parser.add_argument("--no-sklearn", action="store_true", help="fastmlp only")
    parser.add_argument("--samples", type=int, default=60000, help="training images used (for a quick look)")
    args = parser.parse_args()
    root = Path(os.environ.get("FASTMLP_DATA") or DEFAULT_DATA)
    sklearn = None
    if not args.no_sklearn:
        try:
            from sklearn.neural_network import MLPClassifier as sklearn
        except ImportError:
            print("scikit-learn is not installed: fastmlp only")
    rows = []
    for name in args.datasets.split(","):
        X, y = load_mnist(name, "train", root / name)
        X_test, y_test = load_mnist(name, "test", root / name)
        X, y = X[: args.samples], y[: args.samples]
        for config in args.configs.split(","):
            shared, extras = CONFIGS[config]
            params = dict(shared, max_iter=args.epochs, random_state=0, shuffle=True)
            seconds, acc = run(fastmlp.MLPClassifier(**params, **(extras or {})), X, y, X_test, y_test)
            rows.append((name, config, "fastmlp", args.epochs, seconds, acc))
            print(f"# {name} {config} fastmlp: {seconds:.1f} s, accuracy {acc:.4f}", flush=True)
            if sklearn is not None and extras is None:
                seconds, acc = run(sklearn(**params), X, y, X_test, y_test)
                rows.append((name, config, "scikit-learn", args.epochs, seconds, acc))
                print(f"# {name} {config} scikit-learn: {seconds:.1f} s, accuracy {acc:.4f}", flush=True)
    print(f"\nfastmlp {fastmlp.__version__}, {fastmlp.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"float32, {args.samples} training images, test on 10,000\n")
    print("| data set | configuration | library | epochs | wall time (s) | test accuracy |")
    print("|---|---|---|---:|---:|---:|")
    for name, config, lib, epochs, seconds, acc in rows:
        print(f"| {name} | {config} | {lib} | {epochs} | {seconds:.1f} | {acc:.4f} |")


if __name__ == "__main__":
    main()
