"""The collective timeout (fastmlp.distributed.set_collective_timeout): with it, every collective is
non-blocking and waited for with a deadline; healthy ranks train exactly as without it, and a
rank's error still reaches the others. (A rank that hangs or dies: tests/test_mpi_faults.py.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp import data, distributed
from fastmlp.estimators import ConvergenceWarning


@pytest.fixture
def timeout():
    distributed.set_collective_timeout(30)
    yield
    distributed.set_collective_timeout(None)


def _fit(comm):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30 * comm.Get_size(), 4)), rng.integers(0, 3, 30 * comm.Get_size())
    X, y = distributed.shard(X, y, comm)
    net = fastmlp.Network([4, 6, 3], "relu", "softmax", dtype="float64", seed=1)
    opt = fastmlp.SGD(0.1, momentum=0.9)
    curve = [net.train_epoch(X, y, "log_loss", opt, 7, comm=comm) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = fastmlp.MLPClassifier(
            (5,), max_iter=3, batch_size=7, early_stopping=True, random_state=0, distributed="mpi"
        )
        est.fit(X, y)
        lbfgs = fastmlp.MLPClassifier((5,), solver="lbfgs", max_iter=5, random_state=0, distributed="mpi")
        lbfgs.fit(X, y)
    return np.array(net.params), curve, est.coefs_[0], lbfgs.coefs_[0]


def test_healthy_ranks_train_as_without_a_timeout(comm):
    want = _fit(comm)
    distributed.set_collective_timeout(30)
    try:
        assert distributed.get_collective_timeout() == 30.0
        got = _fit(comm)
    finally:
        distributed.set_collective_timeout(None)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


class _FailingRows(data.ArrayRows):
    """Rows whose second read fails (on the rank that makes it with `fail`)."""

    def __init__(self, X, fail):
        self.fail, self.reads = fail, -1  # -1: the check's read
        super().__init__(X)

    def take(self, index, out):
        self.reads += 1
        if self.fail and self.reads == 2:
            raise OSError("disk read failed")
        super().take(index, out)


def test_an_error_reaches_the_others_with_a_timeout(comm, timeout):
    size, rank = comm.Get_size(), comm.Get_rank()
    net = fastmlp.Network([4, 3], output_activation="softmax", seed=0)
    source = _FailingRows(np.ones((16, 4)), fail=rank == size - 1)
    try:
        net.train_epoch(source, np.zeros(16, dtype=int), "log_loss", fastmlp.SGD(0.1), 4, comm=comm)
        error = None
    except (OSError, distributed.RankFailed) as e:
        error = f"{type(e).__name__}: {e}"
    errors = comm.allgather(error)
    assert errors[-1] == "OSError: disk read failed"
    for e in errors[:-1]:
        assert e.startswith(f"RankFailed: data-parallel training stopped: rank {size - 1} failed with OSError")


def test_bad_timeout():
    with pytest.raises(ValueError, match="seconds must be a number > 0 or None"):
        distributed.set_collective_timeout(0)
    with pytest.raises(ValueError, match="seconds must be a number > 0 or None"):
        distributed.set_collective_timeout(float("nan"))
    with pytest.raises(ValueError, match="seconds must be a number > 0 or None"):
        distributed.set_collective_timeout(True)  # type: ignore[arg-type]
    assert distributed.get_collective_timeout() is None
