"""MPI tests: run them as ``mpiexec -n 2 python -m pytest tests/mpi -p no:cacheprovider``.

Every rank runs every test. A test makes all its collective calls first and
asserts afterwards on data that every rank has (allgathered), so a failure
fails on every rank and no rank is left waiting in a collective. Run without
mpiexec, the tests run with one rank (those that need two fail under
``CI=true`` and are skipped otherwise).
"""

from __future__ import annotations

import os

import pytest

MPI = pytest.importorskip("mpi4py.MPI")  # tests/conftest.py ignores this folder without mpi4py


@pytest.fixture
def comm():
    """A duplicate of COMM_WORLD per test, so one test's messages cannot match another's."""
    c = MPI.COMM_WORLD.Dup()
    yield c
    c.Free()


def need_ranks(comm, n: int) -> None:
    if comm.Get_size() < n:
        reason = f"needs {n} MPI ranks (run under mpiexec -n {n}), this run has {comm.Get_size()}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
