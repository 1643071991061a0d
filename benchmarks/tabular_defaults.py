#!/usr/bin/env python
"""How the defaults of ``fastmlp.TabularClassifier``/``TabularRegressor`` were chosen: a small sweep on development
data sets that are NOT the ten of the benchmark (scikit-learn's bundled sets and synthetic ones, no download), with
the benchmark's split function (80/20, split seed 0) and one model seed; the candidate with the best mean
normalized score (as in ``tabular.py``), fit time the tie-breaker, became the default.

    python benchmarks/tabular_defaults.py                  # every candidate on every development set
    python benchmarks/tabular_defaults.py --candidates base,wide
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tabular  # the protocol's split and scores

# name → TabularClassifier/TabularRegressor keyword arguments (changes from the estimator's defaults)
CANDIDATES: dict[str, dict[str, Any]] = {
    "base": {},  # the defaults (selu in the first run, gelu in the later ones)
    "256x3": {"hidden_layer_sizes": (256, 256, 256)},
    "128x3": {"hidden_layer_sizes": (128, 128, 128)},
    "256x2": {"hidden_layer_sizes": (256, 256)},
    "mish": {"activation": "mish"},
    "lr3e-3": {"learning_rate_init": 3e-3},
    "lr3e-4": {"learning_rate_init": 3e-4},
    "epochs50": {"max_iter": 50, "n_iter_no_change": 10},
    "dropout0.15": {"dropout": 0.15},
    # batches of ceil(n/16) rows in [32, 256] (n: the estimator's training rows after its 20 % hold-out): at least
    # 16 steps an epoch on a small table, where batch min(256, n) gives few (third run: not better, not taken)
    "steps16": {"batch_size": lambda n: int(min(n, max(32, min(256, -(-int(0.8 * n) // 16)))))},
    "relu": {"activation": "relu"},
    "silu": {"activation": "silu"},
    "gelu": {"activation": "gelu"},
    "elu": {"activation": "elu"},
}


def dev_sets() -> dict[str, tuple[str, Any, np.ndarray]]:
    """name → (task, X as a DataFrame, y): bundled and synthetic data, none of the benchmark's ten."""
    import pandas as pd
    from sklearn import datasets

    rng = np.random.default_rng(1)
    out: dict[str, tuple[str, Any, np.ndarray]] = {}
    for name, loader in (("breast_cancer", datasets.load_breast_cancer), ("digits", datasets.load_digits),
                         ("wine", datasets.load_wine)):  # fmt: skip
        d = loader()
        out[name] = ("classification", pd.DataFrame(d.data), d.target)
    d = datasets.load_diabetes()
    out["diabetes"] = ("regression", pd.DataFrame(d.data), d.target)
    X, y = datasets.make_friedman1(n_samples=2000, noise=1.0, random_state=0)
    out["friedman1"] = ("regression", pd.DataFrame(X), y)
    # a mixed table: numeric with missing values and outliers, a small and a large categorical column
    n = 3000
    num = rng.standard_t(3, size=(n, 4))
    small = rng.choice(list("abcd"), n)
    large = rng.integers(0, 60, n)
    effect = rng.normal(size=60)
    logit = num[:, 0] - 0.5 * num[:, 1] ** 2 / 3 + (small == "a") + effect[large] + rng.logistic(size=n) * 0.5
    frame = pd.DataFrame(num, columns=[f"n{i}" for i in range(4)])
    frame.loc[rng.random(n) < 0.1, "n2"] = np.nan
    frame["small"] = pd.Categorical(small)
    frame["large"] = pd.Categorical(large.astype(str))
    out["mixed"] = ("classification", frame, (logit > 0).astype(int))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import fastmlp

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", type=lambda s: s.split(","), default=list(CANDIDATES))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    results = []
    sets = dev_sets()
    for ds, (task, X, y) in sets.items():
        train, test = tabular.split_indices(y, task, 0)
        for cand in args.candidates:
            cls = fastmlp.TabularClassifier if task == "classification" else fastmlp.TabularRegressor
            kwargs = {k: v(len(train)) if callable(v) else v for k, v in CANDIDATES[cand].items()}
            model = cls(random_state=0, n_threads=args.threads, **kwargs)
            start = time.perf_counter()
            model.fit(X.iloc[train], y[train])
            seconds = time.perf_counter() - start
            s = tabular.score(task, y[test], model.predict(X.iloc[test]).astype(y.dtype))
            results.append(tabular.Result(ds, task, cand, 0, s, seconds))
            print(f"  {ds:14s} {cand:12s} {s} {seconds:.1f} s", file=sys.stderr, flush=True)
    summary = tabular.summarize(results)
    print("\n".join(tabular.render_markdown(summary, list(sets), args.candidates)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
