"""scikit-learn's own tests of its MLP estimators, run against fastmlp's.

The installed scikit-learn's ``sklearn/neural_network/tests/test_mlp.py`` is copied with its
import line changed to fastmlp's estimators and run by pytest in a child process. Deselected
are only the tests that read scikit-learn's private internals, which fastmlp does not have
(each with its reason below); every other test must pass.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

SKLEARN_IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor\n"
FASTMLP_IMPORT = "from fastmlp import MLPClassifier, MLPRegressor\n"

DESELECTED = {
    "test_gradient": "calls the private mlp._loss_grad_lbfgs (scikit-learn's packed-parameter objective); "
    "fastmlp's gradients are checked against finite differences in test_network.py",
    "test_learning_rate_warmstart": "reads the private mlp._optimizer.learning_rate (scikit-learn's optimizer "
    "object); fastmlp's invscaling rate is compared with scikit-learn's in "
    "test_sklearn_parity.py",
    "test_adaptive_learning_rate": "reads the private clf._optimizer.learning_rate; fastmlp's adaptive schedule "
    "is compared with scikit-learn's in test_sklearn_parity.py",
}

# scikit-learn's conftest gives its tests this fixture (42 unless SKLEARN_TESTS_GLOBAL_RANDOM_SEED says more).
CONFTEST = """
import pytest


@pytest.fixture
def global_random_seed():
    return 42
"""


def _sklearn_test_file() -> pathlib.Path:
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None and spec.origin, "scikit-learn is part of the test extra"
    path = pathlib.Path(spec.origin).parent / "neural_network" / "tests" / "test_mlp.py"
    assert path.is_file(), f"scikit-learn's tests are not installed: {path} is missing"
    return path


@pytest.mark.slow  # scikit-learn's whole test_mlp.py, in a child pytest
def test_scikit_learns_test_mlp_passes_against_fastmlp(tmp_path):
    source = _sklearn_test_file().read_text()
    assert source.count(SKLEARN_IMPORT) == 1, "scikit-learn's test file no longer imports the estimators in one line"
    (tmp_path / "test_mlp_fastmlp.py").write_text(source.replace(SKLEARN_IMPORT, FASTMLP_IMPORT))
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not this project's settings: scikit-learn's file as it is
    for name in DESELECTED:
        assert re.search(rf"^def {name}\(", source, re.M), f"{name} is no longer in scikit-learn's file"
    deselect = [arg for name in DESELECTED for arg in ("--deselect", f"test_mlp_fastmlp.py::{name}")]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--rootdir",
            str(tmp_path),
            "-c",
            str(tmp_path / "pytest.ini"),
            "test_mlp_fastmlp.py",
            *deselect,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(rf"\b{len(DESELECTED)} deselected\b", summary), summary
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 40 and "skipped" not in summary and "xfail" not in summary, summary
