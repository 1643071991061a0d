"""Shared fixtures."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Property tests: no deadline (the sanitizer build is 2-3x slower); under CI a
# fixed, derandomized run with no example database, so CI is reproducible.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")

# <repo>/../shared/data, the layout of the development checkout.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The files a complete data folder holds (see shared/data/README.md).
DATA_FILES = tuple(
    f"{name}/{stem}-ubyte.gz"
    for name in ("mnist", "fashion-mnist")
    for stem in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding ``mnist/`` and ``fashion-mnist/`` (IDX, gzip).

    ``$FASTMLP_DATA`` if set, else ``<repo>/../shared/data``. When a file is
    missing, the test is skipped, except under ``CI=true``, where it fails:
    CI must never pass by skipping the tests on real data.
    """
    folder = Path(os.environ.get("FASTMLP_DATA") or DEFAULT_DATA_DIR)
    missing = [name for name in DATA_FILES if not (folder / name).is_file()]
    if missing:
        reason = (
            f"data folder {folder} lacks {', '.join(missing)}; "
            "set FASTMLP_DATA to the folder holding mnist/ and fashion-mnist/"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        _MISSING_DATA.append(reason)  # said once, at the end of the run (pytest_terminal_summary)
        pytest.skip("no MNIST/Fashion-MNIST data (what is missing and the fix: the 'note:' line of this run)")
    return folder


_MISSING_DATA: list[str] = []


def pytest_terminal_summary(terminalreporter):
    """The missing data's long explanation, once, however many tests it skipped."""
    if _MISSING_DATA:
        terminalreporter.write_line(f"note: {_MISSING_DATA[0]}")


@pytest.fixture
def ctrl_c():
    """Python's Ctrl-C handler on SIGINT for the test (restored after): a process started in the
    background by a non-interactive shell (``cmd &``, as CI scripts do) inherits SIGINT ignored,
    and then ``_thread.interrupt_main()`` — the tests' Ctrl-C — does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded generator, so that every test is reproducible on its own."""
    return np.random.default_rng(0)


def pytest_report_header(config):
    """Which fastmlp is under test: where it was imported from and which compiled core it runs."""
    import fastmlp

    sel = fastmlp._selection
    return [
        f"fastmlp {fastmlp.__version__} from {Path(fastmlp.__file__).parent}",
        f"fastmlp core: {sel.module} ({sel.variant}; {sel.reason})",
    ]


def pytest_configure(config):
    """``FASTMLP_TEST_INSTALLED=1`` (CI's run against the wheel): fail unless fastmlp comes
    from the environment's site-packages, never from this source tree."""
    if os.environ.get("FASTMLP_TEST_INSTALLED") != "1":
        return
    import sysconfig

    import fastmlp

    where = Path(fastmlp.__file__).resolve().parent
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    source = Path(__file__).resolve().parents[1] / "python"
    if where.parent not in site or source in where.parents:
        raise pytest.UsageError(
            f"FASTMLP_TEST_INSTALLED=1 but fastmlp was imported from {where}, "
            f"not from site-packages ({', '.join(map(str, site))})"
        )


# tests/mpi runs only under an MPI launcher (mpiexec -n 2 python -m pytest tests/mpi), which CI
# does as its own step; a plain `pytest` leaves it out (it needs mpi4py, the "mpi" extra, and ranks).
_LAUNCHED = any(v in os.environ for v in ("PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE"))
try:
    import mpi4py  # noqa: F401
except ImportError:
    _LAUNCHED = False
if not _LAUNCHED:
    collect_ignore = ["mpi"]
