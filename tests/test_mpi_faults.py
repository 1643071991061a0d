"""A rank that raises, dies or hangs mid-epoch: the others stop with a clear error, never hang.

Each case launches ``mpiexec -n R python tests/mpi_faults.py SCENARIO`` (the last rank fails at its
third batch) under a wall-clock limit. Needs the ``mpi`` extra (CI's MPI stage runs this file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mpi4py")
pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("mpi_faults.py")


def _launch(scenario: str, ranks: int, **env: str) -> tuple[int, str, float]:
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        pytest.fail("mpi4py is installed but no mpiexec was found (pip install '.[mpi]' puts one in the venv)")
    start = time.monotonic()
    proc = subprocess.run(
        [mpiexec, "-n", str(ranks), sys.executable, str(SCRIPT), scenario],
        capture_output=True,
        text=True,
        timeout=90,  # a hang fails the test here instead of hanging CI
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


@pytest.mark.parametrize("ranks", [2, 3])
def test_a_rank_that_raises_stops_the_others_with_its_error(ranks):
    rc, out, _ = _launch("raise", ranks)
    assert rc != 0
    assert f"rank {ranks - 1} stopped after" in out and "OSError: disk read failed" in out
    for r in range(ranks - 1):
        assert f"rank {r} stopped after" in out
    assert out.count(f"RankFailed: data-parallel training stopped: rank {ranks - 1} failed with OSError") >= ranks - 1
    assert "finished" not in out


def test_a_rank_that_dies_ends_the_job():
    """os._exit on one rank: the launcher ends the whole job with that exit status at once."""
    rc, out, seconds = _launch("exit", 2)
    assert rc == 3, out
    assert "finished" not in out and seconds < 60


@pytest.mark.parametrize("ranks", [2, 3])
def test_a_rank_that_hangs_times_the_others_out(ranks):
    """The last rank sleeps 120 s: with FASTMLP_MPI_TIMEOUT=2 the others raise CollectiveTimeout
    naming the collective, and MPI_Abort at exit ends the job (MPI_Finalize would wait forever)."""
    rc, out, seconds = _launch("hang", ranks, FASTMLP_MPI_TIMEOUT="2")
    assert rc != 0
    assert "CollectiveTimeout: data-parallel training stopped: the other ranks did not join a step's allreduce" in out
    assert "within 2 s" in out and "MPI_Abort" in out
    assert seconds < 60, f"took {seconds:.0f} s"
    assert "finished" not in out
