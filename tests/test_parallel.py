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


@pytest.fixture(autouse=True)
def _fresh_loky_workers():
    """Each test starts loky workers of its own. joblib reuses one executor across calls, and loky
    restarts a worker whose memory grew by 300 MB since its first task: under AddressSanitizer,
    importing scikit-learn and SciPy into a worker that first ran a Network (which imports
    neither) grows it by ~400 MB, and the restart raced with the next test's queued tasks (a hang)."""
    yield
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


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
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = None
    return dict(
        lr=lr,
        loss=loss,
        params=np.array(net.params),
        pid=os.getpid(),
        thread=threading.get_ident(),
        fastmlp_threads=fastmlp.get_num_threads(),
        worker=worker,
    )


LRS = [0.001, 0.01, 0.03, 0.1]


@pytest.mark.slow
def test_loky_workers_share_the_cores():
    """n_jobs workers × fastmlp threads each <= cores, and the results are the sequential ones."""
    cores = os.cpu_count() or 1
    n_jobs = min(2, cores) if cores > 1 else 1
    got = joblib.Parallel(n_jobs=n_jobs, backend="loky")(joblib.delayed(_fit)(lr) for lr in LRS)
    per_worker = max(r["fastmlp_threads"] for r in got)
    if "OMP_NUM_THREADS" in os.environ:  # the user's own setting: loky passes it on unchanged
        assert per_worker == fastmlp.get_num_threads()
    else:
        assert n_jobs * per_worker <= cores, f"{n_jobs} workers x {per_worker} threads > {cores} cores"
    assert len({r["pid"] for r in got} - {os.getpid()}) >= 1  # really in other processes
    for r in got:
        want = _fit(r["lr"], r["fastmlp_threads"])
        np.testing.assert_array_equal(r["params"], want["params"])


def test_search_on_a_dask_cluster():
    """The same search on dask.distributed.LocalCluster through joblib.parallel_backend("dask")."""
    distributed = _require("distributed")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster),
    ):
        with joblib.parallel_backend("dask"):
            got = joblib.Parallel()(joblib.delayed(_fit)(lr, threads=1) for lr in LRS)
    assert all(r["worker"] is not None for r in got), "a task did not run on a Dask worker"
    assert all(r["fastmlp_threads"] == 1 for r in got)
    losses = {r["lr"]: r["loss"] for r in got}
    assert sorted(losses) == LRS
    for r in got:
        np.testing.assert_array_equal(r["params"], _fit(r["lr"], threads=1)["params"])


# --------------------------------------------------------------------------- estimators


class ThreadProbe:
    """A fit callback that records, from inside the fit, the process and its OpenMP threads.

    Picklable (joblib ships it to the workers inside the estimator); it writes
    one line per epoch to a file in `folder`, since a worker's memory does not
    come back.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, metrics: dict) -> None:
        # omp_get_max_threads() of fastmlp's OpenMP runtime in this thread: the
        # thread count fastmlp's parallel regions use. (threadpoolctl may list
        # other runtimes here too, e.g. scikit-learn's own libgomp.)
        path = os.path.join(self.folder, f"{os.getpid()}-{threading.get_ident()}.txt")
        with open(path, "a") as f:
            f.write(f"{fastmlp.get_num_threads()}\n")


def _probe_records(folder) -> dict[str, list[int]]:
    """{"<pid>-<thread>.txt": [threads seen at each epoch]}."""
    out = {}
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as f:
            out[name] = [int(line) for line in f]
    return out


def _grid(n_threads, probe, n_jobs):
    sklearn_ms = _require("sklearn.model_selection")
    X, y = _data()
    est = fastmlp.MLPClassifier(
        hidden_layer_sizes=(16,), max_iter=5, random_state=0, n_threads=n_threads, callbacks=[probe]
    )
    search = sklearn_ms.GridSearchCV(
        est, {"alpha": [1e-4, 1e-2], "learning_rate_init": [1e-3, 1e-2]}, cv=2, n_jobs=n_jobs, refit=False
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=fastmlp.estimators.ConvergenceWarning)
        search.fit(X, y)
    return search


def test_grid_search_with_joblib_does_not_oversubscribe(tmp_path):
    """GridSearchCV(n_jobs=k): k workers × each fit's OpenMP threads <= cores, seen from inside the fits."""
    cores = os.cpu_count() or 1
    n_jobs = min(2, cores)
    search = _grid(None, ThreadProbe(str(tmp_path)), n_jobs)
    records = _probe_records(tmp_path)
    pids = {name.split("-")[0] for name in records}
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= n_jobs  # the fits ran in the workers
    assert sum(len(recs) for recs in records.values()) == 4 * 2 * 5  # 4 candidates x 2 folds x 5 epochs
    per_fit = max(max(recs) for recs in records.values())
    if "OMP_NUM_THREADS" in os.environ:  # the user's own setting: joblib passes it on unchanged
        assert per_fit == fastmlp.get_num_threads()
    else:
        assert per_fit >= 1 and n_jobs * per_fit <= cores, f"{n_jobs} workers x {per_fit} threads > {cores} cores"
    # The search's result does not depend on where it ran: as a sequential search with those threads.
    seq_dir = tmp_path / "seq"
    seq_dir.mkdir()
    sequential = _grid(per_fit, ThreadProbe(str(seq_dir)), 1)
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"])


def test_grid_search_honours_n_threads_in_workers(tmp_path):
    """An explicit n_threads overrides joblib's per-worker limit (cores // n_jobs) inside the fits."""
    cores = os.cpu_count() or 1
    _grid(cores, ThreadProbe(str(tmp_path)), 2)  # above the limit on purpose: the user's explicit choice
    records = _probe_records(tmp_path)
    assert str(os.getpid()) not in {name.split("-")[0] for name in records}
    assert records and all(r == cores for recs in records.values() for r in recs)


def test_grid_search_on_a_dask_cluster(tmp_path):
    """GridSearchCV under joblib.parallel_backend("dask") on a LocalCluster: the same scores as sequentially."""
    distributed = _require("distributed")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster),
    ):
        with joblib.parallel_backend("dask"):
            search = _grid(1, ThreadProbe(str(tmp_path)), -1)
    records = _probe_records(tmp_path)
    threads = {name.split("-")[1] for name in records}
    assert str(threading.get_ident()) not in threads  # the fits ran in Dask's worker threads
    assert all(r == 1 for recs in records.values() for r in recs)
    seq_dir = tmp_path / "seq"
    seq_dir.mkdir()
    sequential = _grid(1, ThreadProbe(str(seq_dir)), 1)
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"])
