"""Every estimator feature over MPI equals one process holding all the samples.

sample_weight and class_weight (each global batch's weighted mean), validation_data, early_stopping
(a split of each rank's shard; the score over every rank's validation samples), callbacks and
L-BFGS (the full-batch objective summed over the ranks). Run with 2 and 3 ranks (CI: both).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastmlp
from conftest import need_ranks
from fastmlp import _compat, distributed
from fastmlp.estimators import ConvergenceWarning
from helpers import TOL, make_data

M, B = 40, 8  # rows per rank, batch per rank


def _fit(est, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kw)


def _params(est):
    return np.concatenate([a.ravel() for a in est.coefs_ + est.intercepts_])


def _gather(comm, a):
    """The ranks' parts concatenated in rank order (what one process holds)."""
    parts = comm.allgather(a)
    return None if parts[0] is None else np.concatenate(parts)


def _weights(size, seed=5):
    """Weights in [0, 2) with zeros, and rank 0's first batch all zero (the others' not)."""
    w = np.random.default_rng(seed).uniform(0, 2, M * size)
    w[::7] = 0.0
    w[:B] = 0.0
    return w


def _sequential_order(size):
    return distributed.global_order([np.arange(M)] * size, B)


# --------------------------------------------------------------------------- Network level


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_network_sample_weight_is_the_global_weighted_mean(comm, dtype):
    """Each global batch is normalized by its total weight, not each rank's part by its own;
    a global batch whose weights are all zero is skipped on every rank."""
    size = comm.Get_size()
    X, Y = make_data(np.random.default_rng(42), M * size, 6, 4, "squared_error", dtype)
    w = _weights(size).astype(dtype)
    Xr, Yr = distributed.shard(X, Y, comm)
    wr = distributed.shard(w, w, comm)[0]
    wr[B : 2 * B] = 0.0  # the second global batch: every rank's part weighs 0 -> skipped everywhere
    net = fastmlp.Network([6, 9, 4], "tanh", dtype=dtype, seed=7)
    opt = fastmlp.SGD(0.05, momentum=0.9)
    curve = [
        net.train_epoch(Xr, Yr, "squared_error", opt, B, shuffle=False, l2=0.01, sample_weight=wr, comm=comm)
        for _ in range(3)
    ]
    params = comm.allgather(np.array(net.params))
    steps = comm.allgather(net.training_steps)
    w_all = _gather(comm, wr)

    order = _sequential_order(size)
    ref = fastmlp.Network([6, 9, 4], "tanh", dtype=dtype, seed=7)
    ref_opt = fastmlp.SGD(0.05, momentum=0.9)
    want = [
        ref.train_epoch(X, Y, "squared_error", ref_opt, B * size, l2=0.01, order=order, sample_weight=w_all)
        for _ in range(3)
    ]
    np.testing.assert_array_equal(params[-1], params[0])
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(params[0], ref.params, **tol)
    np.testing.assert_allclose(curve, want, **tol)
    assert steps == [ref.training_steps] * size == [3 * (M // B - 1)] * size  # the zero-weight global batch: no step
    unweighted = fastmlp.Network([6, 9, 4], "tanh", dtype=dtype, seed=7)
    unweighted.train_epoch(X, Y, "squared_error", fastmlp.SGD(0.05, momentum=0.9), B * size, order=order)
    assert not np.allclose(unweighted.params, ref.params, rtol=1e-3)  # the weights did act


class _Boom(Exception):
    pass


def test_a_rank_that_raises_mid_epoch_stops_the_others(comm, monkeypatch):
    """The last rank raises in its third step: the others raise RankFailed naming it (no hang),
    and the ranks are still in step afterwards."""
    need_ranks(comm, 2)
    last = comm.Get_rank() == comm.Get_size() - 1
    X, Y = make_data(np.random.default_rng(42), M * comm.Get_size(), 6, 4, "squared_error", "float64")
    Xr, Yr = distributed.shard(X, Y, comm)
    net = fastmlp.Network([6, 9, 4], "tanh", dtype="float64", seed=7)
    calls = {"n": 0}
    real = distributed.MPIEpoch.reduce

    def flaky(self, grads, loss, weight):
        calls["n"] += 1
        if last and calls["n"] == 3:
            raise _Boom("disk went away")
        return real(self, grads, loss, weight)

    monkeypatch.setattr(distributed.MPIEpoch, "reduce", flaky)
    expected = _Boom if last else distributed.RankFailed
    with pytest.raises(expected) as info:
        net.train_epoch(Xr, Yr, "squared_error", fastmlp.SGD(0.05), B, comm=comm)
    if not last:
        assert f"rank {comm.Get_size() - 1} failed with _Boom: disk went away" in str(info.value)
    monkeypatch.setattr(distributed.MPIEpoch, "reduce", real)
    loss = net.train_epoch(Xr, Yr, "squared_error", fastmlp.SGD(0.05), B, comm=comm)  # in step again
    assert len(set(comm.allgather(loss))) == 1
    params = comm.allgather(np.array(net.params))
    np.testing.assert_array_equal(params[-1], params[0])


# --------------------------------------------------------------------------- estimators

COMMON = dict(hidden_layer_sizes=(9,), max_iter=5, tol=0.0, random_state=0, dtype="float64", alpha=1e-3)


def _classification(size, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((M * size, 5))
    y = np.where(X[:, 0] + 0.3 * rng.standard_normal(len(X)) > 0.4, "b", "a").astype(object)
    y[X[:, 1] > 1.2] = "c"
    return X, y


def _regression(size):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((M * size, 4))
    Y = np.c_[X[:, 0] - X[:, 1], np.tanh(X[:, 2])] + 0.1 * rng.standard_normal((M * size, 2))
    return X, Y


@pytest.mark.parametrize("class_weight", [None, "balanced", {"a": 2.0, "c": 0.5}])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_classifier_weights_equal_one_process(comm, solver, class_weight):
    size = comm.Get_size()
    X, y = _classification(size)
    w = _weights(size)
    Xr, yr = distributed.shard(X, y, comm)
    wr = distributed.shard(w, w, comm)[0]
    kw = dict(COMMON, solver=solver, shuffle=False, class_weight=class_weight)
    est = _fit(fastmlp.MLPClassifier(batch_size=B, distributed="mpi", **kw), Xr, yr, sample_weight=wr)
    params = comm.allgather(_params(est))
    order = _sequential_order(size)
    ref = _fit(fastmlp.MLPClassifier(batch_size=B * size, **kw), X[order], y[order], sample_weight=w[order])
    np.testing.assert_array_equal(params[-1], params[0])
    np.testing.assert_allclose(params[0], _params(ref), **TOL["float64"])
    np.testing.assert_allclose(est.loss_curve_, ref.loss_curve_, **TOL["float64"])
    plain = _fit(fastmlp.MLPClassifier(batch_size=B * size, **dict(kw, class_weight=None)), X[order], y[order])
    assert not np.allclose(_params(plain), _params(ref), rtol=1e-3)


def test_regressor_weights_and_validation_data_equal_one_process(comm):
    size = comm.Get_size()
    X, Y = _regression(size)
    w = _weights(size)
    rng = np.random.default_rng(9)
    X_val, Y_val, w_val = rng.standard_normal((7 * size, 4)), rng.standard_normal((7 * size, 2)), rng.random(7 * size)
    Xr, Yr = distributed.shard(X, Y, comm)
    wr = distributed.shard(w, w, comm)[0]
    Xv, Yv = distributed.shard(X_val, Y_val, comm)
    wv = distributed.shard(w_val, w_val, comm)[0]
    kw = dict(COMMON, solver="sgd", learning_rate="invscaling", learning_rate_init=0.05, shuffle=False)
    est = _fit(
        fastmlp.MLPRegressor(batch_size=B, distributed="mpi", **kw),
        Xr,
        Yr,
        sample_weight=wr,
        validation_data=(Xv, Yv, wv),
    )
    curves = comm.allgather(est.validation_loss_curve_)
    order = _sequential_order(size)
    ref = _fit(
        fastmlp.MLPRegressor(batch_size=B * size, **kw),
        X[order],
        Y[order],
        sample_weight=w[order],
        validation_data=(X_val, Y_val, w_val),
    )
    assert all(c == curves[0] for c in curves)
    np.testing.assert_allclose(_params(est), _params(ref), **TOL["float64"])
    np.testing.assert_allclose(est.validation_loss_curve_, ref.validation_loss_curve_, **TOL["float64"])


def _record_splits(monkeypatch):
    """Records the (train, validation) indices each fit's early-stopping split takes."""
    splits = []
    real = _compat.train_test_split_indices

    def recording(*args, **kw):
        splits.append(real(*args, **kw))
        return splits[-1]

    monkeypatch.setattr(_compat, "train_test_split_indices", recording)
    return splits


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_early_stopping_equals_one_process(comm, monkeypatch, kind):
    """Each rank holds out validation_fraction of its shard; every rank sees the score over all ranks'
    validation samples, stops at the same epoch and keeps the same best weights: one process given
    the union of the ranks' validation parts as validation_data."""
    size = comm.Get_size()
    if kind == "classifier":
        X, y = _classification(size)
        est_class, kw = fastmlp.MLPClassifier, dict(learning_rate_init=0.05)
    else:
        X, y = _regression(size)
        est_class, kw = fastmlp.MLPRegressor, dict(learning_rate_init=0.02)
    kw = dict(COMMON, **kw, solver="adam", shuffle=False, max_iter=60, tol=1e-3, n_iter_no_change=3)
    Xr, yr = distributed.shard(X, y, comm)
    splits = _record_splits(monkeypatch)
    est = _fit(est_class(batch_size=B, distributed="mpi", early_stopping=True, **kw), Xr, yr)
    assert len(splits) == 1
    train, val = splits[0]
    base = comm.Get_rank() * M
    train_all, val_all = _gather(comm, train + base), _gather(comm, val + base)
    n_iter = comm.allgather(est.n_iter_)
    scores = comm.allgather(est.validation_scores_)

    m_train = len(train)
    order = distributed.global_order([np.arange(m_train)] * size, B)
    ref = _fit(
        est_class(batch_size=B * size, early_stopping=True, **kw),
        X[train_all][order],
        y[train_all][order],
        validation_data=(X[val_all], y[val_all]),
    )
    assert n_iter == [ref.n_iter_] * size and ref.n_iter_ < kw["max_iter"]  # stopped early, on every rank
    assert all(s == scores[0] for s in scores)
    np.testing.assert_allclose(est.validation_scores_, ref.validation_scores_, **TOL["float64"])
    assert est.best_validation_score_ == pytest.approx(ref.best_validation_score_, rel=1e-10)
    np.testing.assert_allclose(_params(est), _params(ref), **TOL["float64"])  # the best epoch's weights
    np.testing.assert_allclose(est.loss_curve_, ref.loss_curve_, **TOL["float64"])


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_lbfgs_equals_one_process(comm, kind):
    """The full-batch objective and gradient summed over the ranks: SciPy's iterates are one
    process's, on every rank."""
    size = comm.Get_size()
    X, y = _classification(size) if kind == "classifier" else _regression(size)
    w = _weights(size)
    est_class = fastmlp.MLPClassifier if kind == "classifier" else fastmlp.MLPRegressor
    kw = dict(COMMON, solver="lbfgs", max_iter=25, alpha=0.01, random_state=3)
    Xr, yr = distributed.shard(X, y, comm)
    wr = distributed.shard(w, w, comm)[0]
    est = _fit(est_class(distributed="mpi", **kw), Xr, yr, sample_weight=wr)
    params = comm.allgather(_params(est))
    ref = _fit(est_class(**kw), X, y, sample_weight=w)
    np.testing.assert_array_equal(params[-1], params[0])
    assert est.n_iter_ == ref.n_iter_ == 25
    assert est.loss_ == pytest.approx(ref.loss_, rel=1e-9)
    np.testing.assert_allclose(params[0], _params(ref), rtol=1e-7, atol=1e-9)


def test_callbacks_see_the_same_metrics_on_every_rank(comm):
    """Callbacks run on every rank with the global loss and validation metrics (the timings are each
    rank's own); one that raises on one rank raises RankFailed on the others."""
    rank, size = comm.Get_rank(), comm.Get_size()
    X, y = _classification(size)
    Xr, yr = distributed.shard(X, y, comm)
    seen = []
    kw = dict(COMMON, shuffle=True, early_stopping=True, n_iter_no_change=100)
    _fit(fastmlp.MLPClassifier(batch_size=B, distributed="mpi", callbacks=[seen.append], **kw), Xr, yr)
    keys = ("epoch", "loss", "learning_rate", "validation_loss", "validation_score")
    mine = [{k: m[k] for k in keys} for m in seen]
    everyone = comm.allgather(mine)
    assert len(mine) == COMMON["max_iter"] and all(e == mine for e in everyone)

    def explode(metrics):
        if rank == size - 1 and metrics["epoch"] == 2:
            raise _Boom("callback failed")

    expected = _Boom if rank == size - 1 else distributed.RankFailed
    with pytest.raises(expected, match="callback failed"):
        _fit(fastmlp.MLPClassifier(batch_size=B, distributed="mpi", callbacks=[explode], **kw), Xr, yr)
    est = _fit(fastmlp.MLPClassifier(batch_size=B, distributed="mpi", **kw), Xr, yr)  # in step again
    assert comm.allgather(est.n_iter_) == [COMMON["max_iter"]] * size
