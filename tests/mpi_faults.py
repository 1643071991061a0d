"""A data-parallel epoch in which the last rank fails at its third batch; run by
tests/test_mpi_faults.py as ``mpiexec -n R python tests/mpi_faults.py SCENARIO``.

SCENARIO: ``raise`` (its data source raises OSError), ``exit`` (the process dies: os._exit(3)),
``hang`` (it sleeps 120 s). The other ranks must stop with a clear error, never hang: ``raise`` ->
RankFailed naming the error; ``exit`` -> the launcher ends the job; ``hang`` -> CollectiveTimeout
after FASTMLP_MPI_TIMEOUT seconds.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from mpi4py import MPI

import fastmlp
from fastmlp import data, distributed


class FailingRows(data.ArrayRows):
    """This rank's rows; on the last rank, the third read fails as SCENARIO says."""

    def __init__(self, X: np.ndarray, scenario: str, failing: bool) -> None:
        self.scenario, self.failing, self.reads = scenario, failing, -1  # -1: the check's read
        super().__init__(X)

    def take(self, index: np.ndarray, out: np.ndarray) -> None:
        self.reads += 1
        if self.failing and self.reads == 3:
            if self.scenario == "exit":
                os._exit(3)
            if self.scenario == "hang":
                time.sleep(120)
            if self.scenario == "raise":
                raise OSError("disk read failed")
        super().take(index, out)


def main() -> None:
    scenario = sys.argv[1]
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40 * size, 5)), rng.integers(0, 3, 40 * size)
    X_mine, y_mine = distributed.shard(X, y, comm)
    source = FailingRows(np.ascontiguousarray(X_mine), scenario, rank == size - 1)
    net = fastmlp.Network([5, 8, 3], "relu", "softmax", seed=0)
    opt = fastmlp.SGD(0.1)
    start = time.monotonic()
    try:
        for _ in range(2):
            net.train_epoch(source, y_mine, "log_loss", opt, 8, comm=comm)
    except Exception as e:
        print(f"rank {rank} stopped after {time.monotonic() - start:.1f} s: {type(e).__name__}: {e}", flush=True)
        raise
    print(f"rank {rank} finished", flush=True)


if __name__ == "__main__":
    main()
