"""MLPClassifier/MLPRegressor(distributed="mpi"): R ranks == one process with batch R·b."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastmlp
from conftest import need_ranks
from fastmlp import distributed
from fastmlp.estimators import ConvergenceWarning
from helpers import TOL

M, B = 40, 8  # rows per rank, batch per rank


def _fit(est, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kw)


def _params(est):
    return np.concatenate([a.ravel() for a in est.coefs_ + est.intercepts_])


def _classification(size):
    """R·M samples, 3 classes, class 2 only in the last shard: a rank alone may not see every class."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((M * size, 5))
    y = np.where(X[:, 0] > 0, "b", "a").astype(object)
    y[-5:] = "c"
    return X, y


COMMON = dict(hidden_layer_sizes=(9,), max_iter=4, tol=0.0, random_state=0, dtype="float64", alpha=1e-3)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_classifier_ranks_equal_one_process(comm, solver):
    size = comm.Get_size()
    X, y = _classification(size)
    Xr, yr = distributed.shard(X, y, comm)
    est = _fit(fastmlp.MLPClassifier(solver=solver, batch_size=B, shuffle=False, distributed="mpi", **COMMON), Xr, yr)
    params = comm.allgather(_params(est))
    curves = comm.allgather(est.loss_curve_)

    order = distributed.global_order([np.arange(M)] * size, B)
    ref = _fit(fastmlp.MLPClassifier(solver=solver, batch_size=B * size, shuffle=False, **COMMON), X[order], y[order])
    assert list(est.classes_) == ["a", "b", "c"]  # the union, though rank 0 has no "c"
    np.testing.assert_array_equal(params[-1], params[0])
    assert curves[-1] == curves[0]
    np.testing.assert_allclose(params[0], _params(ref), **TOL["float64"])
    np.testing.assert_allclose(est.loss_curve_, ref.loss_curve_, **TOL["float64"])
    assert est.n_iter_ == ref.n_iter_ == 4 and est.t_ == ref.t_ == 4 * M * size
    np.testing.assert_array_equal(est.predict(X), ref.predict(X))


def test_regressor_ranks_equal_one_process(comm):
    """Multi-output squared error: the gradient scale k and the invscaling clock t_ are global too."""
    size = comm.Get_size()
    rng = np.random.default_rng(2)
    X = rng.standard_normal((M * size, 4))
    Y = np.c_[X[:, 0] - X[:, 1], np.tanh(X[:, 2])]
    Xr, Yr = distributed.shard(X, Y, comm)
    kw = dict(COMMON, solver="sgd", learning_rate="invscaling", learning_rate_init=0.05, shuffle=False)
    est = _fit(fastmlp.MLPRegressor(batch_size=B, distributed="mpi", **kw), Xr, Yr)
    order = distributed.global_order([np.arange(M)] * size, B)
    ref = _fit(fastmlp.MLPRegressor(batch_size=B * size, **kw), X[order], Y[order])
    np.testing.assert_allclose(_params(est), _params(ref), **TOL["float64"])
    np.testing.assert_allclose(est.loss_curve_, ref.loss_curve_, **TOL["float64"])


def test_shuffled_fit_gives_one_model_and_learns(comm):
    rank, size = comm.Get_rank(), comm.Get_size()
    X, y = _classification(size)
    Xr, yr = distributed.shard(X, y, comm)
    # random_state may differ: rank 0's weights and shuffling seed are used
    kw = dict(COMMON, random_state=rank, max_iter=60, learning_rate_init=0.01)
    est = _fit(fastmlp.MLPClassifier(batch_size=B, distributed="mpi", **kw), Xr, yr)
    params = comm.allgather(_params(est))
    np.testing.assert_array_equal(params[-1], params[0])
    assert est.score(X, y) > 0.85
    again = _fit(fastmlp.MLPClassifier(batch_size=B, distributed="mpi", **kw), Xr, yr)
    np.testing.assert_array_equal(_params(again), params[0])  # reproducible


def test_a_callback_on_one_rank_stops_every_rank(comm):
    rank = comm.Get_rank()
    X, y = _classification(comm.Get_size())
    Xr, yr = distributed.shard(X, y, comm)
    stop_at_2 = [lambda metrics: metrics["epoch"] < 2] if rank == 0 else None
    est = _fit(fastmlp.MLPClassifier(batch_size=B, distributed="mpi", callbacks=stop_at_2, **COMMON), Xr, yr)
    assert comm.allgather(est.n_iter_) == [2] * comm.Get_size()


def test_bad_input_raises_on_every_rank(comm):
    last = comm.Get_rank() == comm.Get_size() - 1
    X, y = _classification(comm.Get_size())
    Xr, yr = distributed.shard(X, y, comm)
    with pytest.raises(ValueError, match="sample_weight"):  # one rank's negative weights
        sw = -np.ones(len(yr)) if last else np.ones(len(yr))
        _fit(fastmlp.MLPClassifier(distributed="mpi", **COMMON), Xr, yr, sample_weight=sw)
    with pytest.raises(ValueError, match="sample_weight must be given on every rank"):
        _fit(
            fastmlp.MLPClassifier(distributed="mpi", **COMMON), Xr, yr, sample_weight=None if last else np.ones(len(yr))
        )
    with pytest.raises(ValueError, match="validation_data must be given on every rank"):
        _fit(fastmlp.MLPClassifier(distributed="mpi", **COMMON), Xr, yr, validation_data=None if last else (Xr, yr))
    with pytest.raises(ValueError, match="The 'distributed' parameter must be one of"):
        _fit(fastmlp.MLPClassifier(distributed="nccl", **COMMON), Xr, yr)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):  # one rank's bad parameter
        _fit(
            fastmlp.MLPClassifier(distributed="mpi", **dict(COMMON, hidden_layer_sizes=(0,) if last else (9,))), Xr, yr
        )
    # One rank's bad data, found between the two agreements: every rank raises.
    X_bad = Xr.copy()
    X_bad[0, 0] = np.nan if last else X_bad[0, 0]
    with pytest.raises(ValueError, match=r"NaN|nan|infinity"):
        _fit(fastmlp.MLPClassifier(distributed="mpi", **COMMON), X_bad, yr)
    est = _fit(fastmlp.MLPClassifier(distributed="mpi", batch_size=B, **COMMON), Xr, yr)  # still in step
    assert est.n_iter_ == 4


def test_ranks_must_agree(comm):
    need_ranks(comm, 2)
    last = comm.Get_rank() == comm.Get_size() - 1
    X, y = _classification(comm.Get_size())
    Xr, yr = distributed.shard(X, y, comm)
    with pytest.raises(ValueError, match="params: the estimator's parameters must be the same on every rank"):
        _fit(fastmlp.MLPClassifier(distributed="mpi", **dict(COMMON, alpha=0.5 if last else 1e-3)), Xr, yr)
    with pytest.raises(ValueError, match="X: every rank must hold the same number of samples"):
        _fit(fastmlp.MLPClassifier(distributed="mpi", **COMMON), Xr[:-1] if last else Xr, yr[:-1] if last else yr)
