"""Hyperparameter search with joblib, locally (loky) and on a Dask cluster.

A search trains many independent networks. joblib runs them in worker
processes (loky) or on a Dask cluster (``joblib.parallel_backend("dask")``);
fastmlp's OpenMP threads in each worker must then share the cores, not
multiply them.
"""
from __future__ import annotations

import importlib
import os
import threading

import numpy as np
import pytest

import fastmlp



def _require(module: str):
    """Imports `module` (in the "test" extra); skips without it, but fails under CI=true."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{module} is missing: pip install '.[test]' ({e})")
        pytest.skip(f"{module} is not installed")


joblib = _require("joblib")


def _data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8))
    y = (X[:, :3].sum(1) > 0).astype(np.int64)
    return X, y


def _fit(lr: float, threads: int | None = None) -> dict:
    """Trains one network (the unit of work of a search) and reports where and how it ran."""
    before = fastmlp.get_num_threads()
    if threads is not None:
        fastmlp.set_num_threads(threads)
    try:
        return _train_and_report(lr)
    finally:
        fastmlp.set_num_threads(before)


def _train_and_report(lr: float) -> dict:
    X, y = _data()
    net = fastmlp.Network([8, 16, 2], "relu", "softmax", dtype="float64", seed=1)
    opt = fastmlp.SGD(lr, momentum=0.9)
    for _ in range(3):
        loss = net.train_epoch(X, y, "log_loss", opt, 32)
    from threadpoolctl import threadpool_info
    openmp = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]
    try:
        from distributed import get_worker
        worker = get_worker().address
    except (ImportError, ValueError):
        worker = None
    return dict(lr=lr, loss=loss, params=np.array(net.params), pid=os.getpid(), thread=threading.get_ident(),
                fastmlp_threads=fastmlp.get_num_threads(), openmp_threads=openmp, worker=worker)


LRS = [0.001, 0.01, 0.03, 0.1]


def test_loky_workers_share_the_cores():
    """n_jobs workers × fastmlp threads each <= cores, and the results are the sequential ones."""
    cores = os.cpu_count() or 1
    n_jobs = min(2, cores) if cores > 1 else 1
    got = joblib.Parallel(n_jobs=n_jobs, backend="loky")(joblib.delayed(_fit)(lr) for lr in LRS)
    per_worker = max(r["fastmlp_threads"] for r in got)
    assert n_jobs * per_worker <= cores, f"{n_jobs} workers x {per_worker} threads > {cores} cores"
    assert all(max(r["openmp_threads"], default=per_worker) <= per_worker for r in got)
    assert len({r["pid"] for r in got} - {os.getpid()}) >= 1  # really in other processes
    for r in got:
        want = _fit(r["lr"], r["fastmlp_threads"])
        np.testing.assert_array_equal(r["params"], want["params"])


def test_search_on_a_dask_cluster():
    """The same search on dask.distributed.LocalCluster through joblib.parallel_backend("dask")."""
    distributed = _require("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        with joblib.parallel_backend("dask"):
            got = joblib.Parallel()(joblib.delayed(_fit)(lr, threads=1) for lr in LRS)
    assert all(r["worker"] is not None for r in got), "a task did not run on a Dask worker"
    assert all(r["fastmlp_threads"] == 1 for r in got)
    losses = {r["lr"]: r["loss"] for r in got}
    assert sorted(losses) == LRS
    for r in got:
        np.testing.assert_array_equal(r["params"], _fit(r["lr"], threads=1)["params"])
