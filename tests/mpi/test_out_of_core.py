"""Out-of-core X over MPI: each rank reads only its rows of a memmap or of .npy files, batch by
batch, and trains exactly as the same shards held in memory (which tests/mpi/test_parity.py and
test_data_parallel.py show equal one process with the global batch)."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import data, distributed
from fastmlp.estimators import ConvergenceWarning

M = 37  # rows per rank (batch 8: a partial last batch)


@pytest.fixture
def shared_dir(comm):
    """A directory every rank sees (rank 0 makes it, and removes it after the test)."""
    path = comm.bcast(tempfile.mkdtemp(prefix="fastmlp-ooc-") if comm.Get_rank() == 0 else None, root=0)
    yield Path(path)
    comm.Barrier()
    if comm.Get_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)


def _save(comm, path: Path, a: np.ndarray) -> None:
    if comm.Get_rank() == 0:
        np.save(path, a)
    comm.Barrier()


def _problem(comm):
    size = comm.Get_size()
    rng = np.random.default_rng(11)
    X = rng.standard_normal((M * size + 2, 6))  # + 2: rows no shard uses
    y = rng.integers(0, 3, M * size + 2)
    w = rng.uniform(0, 2, M * size + 2)
    return X, y, w


def _train(comm, X, y, w, epochs=3):
    net = fastmlp.Network([6, 10, 3], "relu", "softmax", dtype="float64", seed=4, dropout=0.2)
    opt = fastmlp.Adam(0.01)
    curve = [net.train_epoch(X, y, "log_loss", opt, 8, sample_weight=w, l2=0.01, comm=comm) for _ in range(epochs)]
    return np.array(net.params), curve


@pytest.mark.parametrize("seed", [None, 3])
def test_memmap_shards_train_as_in_memory(comm, shared_dir, seed):
    X, y, w = _problem(comm)
    _save(comm, shared_dir / "X.npy", X)
    Xm = np.load(shared_dir / "X.npy", mmap_mode="r")
    X_mine, y_mine = distributed.shard(Xm, y, comm, seed=seed)
    w_mine = distributed.shard(w, w, comm, seed=seed)[0]
    assert data.is_out_of_core(X_mine)  # a memmap slice, or a source of this rank's rows: nothing read
    got = _train(comm, X_mine, y_mine, w_mine)
    want = _train(comm, *distributed.shard(X, y, comm, seed=seed), w_mine)
    results = comm.allgather((got, want))
    for (p, c), (p_ref, c_ref) in results:
        np.testing.assert_allclose(c, c_ref, rtol=1e-12)
        np.testing.assert_allclose(p, p_ref, rtol=1e-11, atol=1e-13)
    np.testing.assert_array_equal(results[0][0][0], results[-1][0][0])  # the replicas agree


def test_npy_files_sharded_over_ranks(comm, shared_dir):
    X, y, w = _problem(comm)
    parts = [(0, 10), (10, 50), (50, X.shape[0])]
    for i, (a, b) in enumerate(parts):
        _save(comm, shared_dir / f"part{i}.npy", X[a:b])
    paths = [shared_dir / f"part{i}.npy" for i in range(len(parts))]
    X_mine, y_mine = distributed.shard(paths, y, comm)
    w_mine = distributed.shard(w, w, comm)[0]
    got = _train(comm, X_mine, y_mine, w_mine, epochs=2)
    want = _train(comm, *distributed.shard(X, y, comm), w_mine, epochs=2)
    for (p, c), (p_ref, c_ref) in comm.allgather((got, want)):
        np.testing.assert_allclose(c, c_ref, rtol=1e-12)
        np.testing.assert_allclose(p, p_ref, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_estimator_fit_on_memmap_shards(comm, shared_dir, early_stopping):
    X, y, w = _problem(comm)
    _save(comm, shared_dir / "X.npy", X)
    Xm = np.load(shared_dir / "X.npy", mmap_mode="r")
    X_mine, y_mine = distributed.shard(Xm, y, comm)
    w_mine = distributed.shard(w, w, comm)[0]
    params = dict(
        hidden_layer_sizes=(9,),
        batch_size=8,
        max_iter=4,
        random_state=comm.Get_rank(),  # rank 0's is used
        early_stopping=early_stopping,
        validation_fraction=0.25,
        distributed="mpi",
        solver="adam",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        got = fastmlp.MLPClassifier(**params).fit(X_mine, y_mine, sample_weight=w_mine)
        want = fastmlp.MLPClassifier(**params).fit(np.array(X_mine), y_mine, sample_weight=w_mine)
    results = comm.allgather(
        [(e.loss_curve_, np.concatenate([c.ravel() for c in e.coefs_]), e.n_iter_) for e in (got, want)]
    )
    for (c, p, n), (c_ref, p_ref, n_ref) in results:
        assert n == n_ref
        np.testing.assert_allclose(c, c_ref, rtol=1e-12)
        np.testing.assert_allclose(p, p_ref, rtol=1e-11, atol=1e-13)


def _parquet(comm, shared_dir, X, y):
    """X's columns x0..x5 and y in two Parquet files of row groups of 5 rows (rank 0 writes them)."""
    if comm.Get_rank() == 0:
        pa = pytest.importorskip("pyarrow")  # the test extra installs it; a failure here fails every rank below
        import pyarrow.parquet as pq

        half = X.shape[0] // 2
        for i, rows in enumerate((slice(0, half), slice(half, None))):
            table = pa.table({**{f"x{j}": X[rows, j] for j in range(X.shape[1])}, "y": y[rows]})
            pq.write_table(table, shared_dir / f"part{i}.parquet", row_group_size=5)
    comm.Barrier()
    # check=False: shard() checks this rank's rows; checking here would read every row on every rank
    return data.ParquetRows(shared_dir, [f"x{j}" for j in range(X.shape[1])], check=False)


def test_parquet_shards_train_as_in_memory(comm, shared_dir):
    """Each rank reads only the row groups of its shard of a Parquet data set, batch by batch."""
    X, y, w = _problem(comm)
    source = _parquet(comm, shared_dir, X, y)
    y_all = source.column("y")
    X_mine, y_mine = distributed.shard(source, y_all, comm)
    w_mine = distributed.shard(w, w, comm)[0]
    assert isinstance(X_mine, data.Rows)
    got = _train(comm, X_mine, y_mine, w_mine)
    groups_read = sorted(source._cache)  # the row groups this rank decoded (the cache holds them all)
    want = _train(comm, *distributed.shard(X, y, comm), w_mine)
    results = comm.allgather((got, want))
    for (p, c), (p_ref, c_ref) in results:
        np.testing.assert_allclose(c, c_ref, rtol=1e-12)
        np.testing.assert_allclose(p, p_ref, rtol=1e-11, atol=1e-13)
    rank = comm.Get_rank()
    m = len(y_mine)
    mine = {int(np.searchsorted(source._starts, r, side="right") - 1) for r in range(rank * m, (rank + 1) * m)}
    assert set(groups_read) == mine  # shard's check and the epochs read this rank's row groups, no other


def test_estimator_fit_and_predict_on_parquet_shards(comm, shared_dir):
    X, y, w = _problem(comm)
    source = _parquet(comm, shared_dir, X, y)
    X_mine, y_mine = distributed.shard(source, source.column("y"), comm)
    w_mine = distributed.shard(w, w, comm)[0]
    params = dict(hidden_layer_sizes=(9,), batch_size=8, max_iter=3, random_state=0, distributed="mpi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        got = fastmlp.MLPClassifier(**params).fit(X_mine, y_mine, sample_weight=w_mine)
        want = fastmlp.MLPClassifier(**params).fit(X_mine.read(np.arange(len(y_mine))), y_mine, sample_weight=w_mine)
    proba = got.predict_proba(X_mine)  # predicted in chunks from the Parquet shard
    results = comm.allgather((got.loss_curve_, got.coefs_[0], want.loss_curve_, want.coefs_[0], proba))
    mine = distributed.shard(X, y, comm)[0]
    for c, p, c_ref, p_ref, _ in results:
        np.testing.assert_allclose(c, c_ref, rtol=1e-12)
        np.testing.assert_allclose(p, p_ref, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(proba, want.predict_proba(mine), rtol=1e-12, atol=1e-15)


def test_lbfgs_on_memmap_shards_equals_one_process(comm, shared_dir, monkeypatch):
    """distributed='mpi' L-BFGS on out-of-core shards: each rank sums its chunks' objectives (chunks
    of 64 rows here), the ranks sum theirs; the iterates are one process's with all rows in memory."""
    monkeypatch.setattr(data, "_FORWARD_BYTES", 1)  # the least chunk: 64 rows
    size = comm.Get_size()
    rng = np.random.default_rng(5)
    X = rng.standard_normal((150 * size, 6))
    y = np.where(X[:, 0] + X[:, 1] > 0, "p", "q").astype(object)
    w = rng.uniform(0, 2, 150 * size)
    _save(comm, shared_dir / "X.npy", X)
    X_mine, y_mine = distributed.shard(np.load(shared_dir / "X.npy", mmap_mode="r"), y, comm)
    w_mine = distributed.shard(w, w, comm)[0]
    params = dict(hidden_layer_sizes=(7,), solver="lbfgs", max_iter=20, alpha=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        got = fastmlp.MLPClassifier(**params, distributed="mpi").fit(X_mine, y_mine, sample_weight=w_mine)
        want = fastmlp.MLPClassifier(**params).fit(X, y, sample_weight=w)
    results = comm.allgather((np.concatenate([c.ravel() for c in got.coefs_]), got.n_iter_, got.loss_))
    p_ref = np.concatenate([c.ravel() for c in want.coefs_])
    for p, n, loss in results:
        assert n == want.n_iter_ == 20
        assert loss == pytest.approx(want.loss_, rel=1e-9)
        np.testing.assert_allclose(p, p_ref, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(results[0][0], results[-1][0])
