"""Hyperparameter search on a Dask cluster through joblib (docs/distributed.md), as a script.

    python examples/dask_search.py                      # a LocalCluster of 2 worker processes
    python examples/dask_search.py tcp://scheduler:8786 # a running cluster's scheduler

Dask starts its worker processes by spawning a fresh interpreter that imports this file: the
cluster must be created under ``if __name__ == "__main__":`` (without the guard every worker
would start a cluster of its own, and Dask stops with "Nanny failed to start").
"""

from __future__ import annotations

import sys

import joblib
import numpy as np

import fastmlp
from fastmlp.datasets import make_spiral


def fit(lr: float, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """One candidate: a small network trained for 20 epochs; returns (lr, training accuracy)."""
    fastmlp.set_num_threads(1)  # one core per worker process (Dask's workers start with OMP_NUM_THREADS=1)
    net = fastmlp.Network([2, 32, 32, 2], "relu", "softmax", dtype="float32", seed=0)
    opt = fastmlp.SGD(lr, momentum=0.9)
    for _ in range(20):
        net.train_epoch(X, y, "log_loss", opt, 32)
    return lr, float((net.forward(X).argmax(1) == y).mean())


def main(address: str | None) -> None:
    from dask.distributed import Client, LocalCluster

    X, y = make_spiral(600, noise=0.1, seed=0, dtype="float32")
    rates = [1e-3, 1e-2, 1e-1]
    if address is None:
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
            with joblib.parallel_backend("dask"):
                results = joblib.Parallel()(joblib.delayed(fit)(lr, X, y) for lr in rates)
    else:
        with Client(address), joblib.parallel_backend("dask"):
            results = joblib.Parallel()(joblib.delayed(fit)(lr, X, y) for lr in rates)
    for lr, accuracy in results:
        print(f"lr={lr:g}: training accuracy {accuracy:.3f}")
    best = max(results, key=lambda r: r[1])
    print(f"best lr={best[0]:g}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
