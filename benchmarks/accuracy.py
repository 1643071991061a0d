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

    # The dropout table (README): 3 seeds, 50 epochs, scikit-learn's best without dropout beside it
    python benchmarks/accuracy.py --epochs 50 --seeds 0,1,2 --baseline-seeds 0 --configs dropout-chosen,relu1024x2-adam

    # Model choice: the last 10,000 training images as the test set (the test set untouched)
    python benchmarks/accuracy.py --validation --epochs 50 --configs dropout-2x1024 --no-sklearn

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
from typing import Any

import numpy as np

import fastmlp
from fastmlp.datasets import load_mnist

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _dropout(shared: dict[str, Any] | None = None, **extras: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A dropout configuration: 784-1024-1024-10, batch 128, alpha 0, Adam 1e-3 with a cosine decay,
    dropout [0.2, 0.5, 0.5] and max-norm 3, with the given changes (`shared`: parameters scikit-learn
    also has; a name given there is left out of fastmlp's extras)."""
    shared = {**dict(hidden_layer_sizes=(1024, 1024), batch_size=128, alpha=0.0), **(shared or {})}
    base = dict(learning_rate_init=1e-3, learning_rate="cosine", dropout=[0.2, 0.5, 0.5], max_norm=3.0)
    return shared, {k: v for k, v in {**base, **extras}.items() if k not in shared}


# name → (parameters shared with scikit-learn, fastmlp-only extras or None)
CONFIGS = {
    # The estimator target of the engine issue: scikit-learn's defaults (Adam 1e-3,
    # batch 200, alpha 1e-4) with two hidden layers; run it with --epochs 20.
    "relu256-128-adam": (dict(hidden_layer_sizes=(256, 128)), None),
    # ... in bfloat16 mixed precision (issue 22's accuracy check: within 0.2 points of float32).
    "relu256-128-adam-bf16": (dict(hidden_layer_sizes=(256, 128)), dict(precision="bf16")),
    "relu800-adam": (
        dict(hidden_layer_sizes=(800,), solver="adam", learning_rate_init=1e-3, batch_size=128, alpha=1e-4),
        None,
    ),
    "relu800-adamw-cosine-warmup": (
        dict(hidden_layer_sizes=(800,), batch_size=128, alpha=0.0),
        dict(solver="adamw", learning_rate_init=2e-3, weight_decay=1e-2, learning_rate="cosine", warmup_epochs=1),
    ),
    # scikit-learn's strongest MLP here without dropout: two wide layers, Adam, its L2 (no schedule
    # beyond 'constant': scikit-learn's adaptive/invscaling act on SGD only).
    "relu1024x2-adam": (dict(hidden_layer_sizes=(1024, 1024), batch_size=128, alpha=1e-4), None),
    # Dropout (Srivastava et al. 2014): 20 % of the inputs, 50 % of each hidden layer, max-norm on
    # the hidden units, Adam with a cosine decay over the run. Settings chosen on a validation
    # split of the training set (--validation), never on the test set.
    "dropout-2x1024": _dropout(),
    # Variants tried on the validation split (see benchmarks/README.md for their scores).
    "dropout-2x1024-noise": _dropout(input_noise=0.2),
    "dropout-3x1024": _dropout(dict(hidden_layer_sizes=(1024, 1024, 1024)), dropout=[0.2, 0.5, 0.5, 0.5]),
    "dropout-2x2048": _dropout(dict(hidden_layer_sizes=(2048, 2048))),
    "dropout-2x1024-lr2e-3": _dropout(learning_rate_init=2e-3),
    "dropout-2x1024-batch64": _dropout(dict(batch_size=64)),
    "dropout-2x1024-light": _dropout(dropout=[0.1, 0.4, 0.4]),
    "dropout-2x1024-light-noise": _dropout(dropout=[0.1, 0.5, 0.5], input_noise=0.1),
    "dropout-2x1024-adamw": _dropout(solver="adamw", weight_decay=0.05),
    "dropout-2x1024-sgd": _dropout(dict(solver="sgd", momentum=0.95, nesterovs_momentum=True, learning_rate_init=0.05)),
    # The chosen dropout settings in bfloat16 mixed precision.
    "dropout-2x1024-bf16": _dropout(precision="bf16"),
    "dropout-2x1024-light-bf16": _dropout(dropout=[0.1, 0.4, 0.4], precision="bf16"),
}

# The settings chosen per data set on the validation split (--validation, seed 0, 50 epochs; the
# scores are in benchmarks/README.md): the configuration each data set's test score is reported for.
CHOSEN = {"dropout-chosen": {"mnist": "dropout-2x1024", "fashion-mnist": "dropout-2x1024-light"}}


def run(estimator: Any, X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> tuple[float, float]:
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
    parser.add_argument(
        "--configs",
        default="relu256-128-adam,relu800-adam,relu800-adamw-cosine-warmup",
        help=f"comma-separated names from {list(CONFIGS) + list(CHOSEN)}",
    )
    parser.add_argument(
        "--seeds",
        default="0",
        help="comma-separated random_state values; the table gives the mean and the spread (min-max) over them",
    )
    parser.add_argument(
        "--baseline-seeds",
        default=None,
        help="seeds for the configurations scikit-learn has (both libraries), when fewer than --seeds",
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="train on the first 50,000 training images and score on the last 10,000 (for "
        "choosing settings; the test set is not read)",
    )
    parser.add_argument("--no-sklearn", action="store_true", help="fastmlp only")
    parser.add_argument("--samples", type=int, default=60000, help="training images used (for a quick look)")
    args = parser.parse_args()
    root = Path(os.environ.get("FASTMLP_DATA") or DEFAULT_DATA)
    seeds = [int(s) for s in args.seeds.split(",")]
    baseline_seeds = [int(s) for s in (args.baseline_seeds or args.seeds).split(",")]
    sklearn = None
    if not args.no_sklearn:
        try:
            from sklearn.neural_network import MLPClassifier as sklearn
        except ImportError:
            print("scikit-learn is not installed: fastmlp only")
    results: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for name in args.datasets.split(","):
        X, y = load_mnist(name, "train", root / name)
        if args.validation:
            X, y, X_test, y_test = X[:50000], y[:50000], X[50000:], y[50000:]
        else:
            X_test, y_test = load_mnist(name, "test", root / name)
        X, y = X[: args.samples], y[: args.samples]
        for config in args.configs.split(","):
            label = config
            if config in CHOSEN:
                config = CHOSEN[config][name]
                label = f"{label} ({config})"
            shared, extras = CONFIGS[config]
            config_seeds = seeds if extras is not None or args.baseline_seeds is None else baseline_seeds
            for seed in config_seeds:
                params = dict(shared, max_iter=args.epochs, random_state=seed, shuffle=True)
                libs = [("fastmlp", lambda p=params, e=extras: fastmlp.MLPClassifier(**p, **(e or {})))]
                if sklearn is not None and extras is None:
                    libs.append(("scikit-learn", lambda p=params: sklearn(**p)))
                for lib, make in libs:
                    seconds, acc = run(make(), X, y, X_test, y_test)
                    results.setdefault((name, label, lib), []).append((seconds, acc))
                    print(f"# {name} {label} {lib} seed {seed}: {seconds:.1f} s, accuracy {acc:.4f}", flush=True)
    scored = "the last 10,000 training images (validation)" if args.validation else "the 10,000 test images"
    print(
        f"\nfastmlp {fastmlp.__version__}, {fastmlp.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"float32, {args.samples if not args.validation else 50000} training images, scored on {scored}, "
        f"seeds {args.seeds}"
        + (f" (configurations scikit-learn has: {args.baseline_seeds})" if args.baseline_seeds else "")
        + "\n"
    )
    print("| data set | configuration | library | epochs | wall time per run (s) | accuracy: mean | min | max |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for (name, config, lib), runs in results.items():
        secs = np.array([r[0] for r in runs])
        accs = np.array([r[1] for r in runs])
        print(
            f"| {name} | {config} | {lib} | {args.epochs} | {np.median(secs):.1f} | {accs.mean():.4f} | "
            f"{accs.min():.4f} | {accs.max():.4f} |"
        )


if __name__ == "__main__":
    main()
