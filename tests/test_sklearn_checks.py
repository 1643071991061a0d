"""scikit-learn's own estimator checks, run on fastmlp's estimators.

Every check runs except the two below, which cannot apply (each would only
report "skipped"); an unexpected failure fails the test.
"""

from __future__ import annotations

import functools

import pytest
from sklearn.utils.estimator_checks import estimator_checks_generator

import fastmlp

NOT_APPLICABLE = {
    # The estimators compute with NumPy and C++ buffers; like scikit-learn's
    # MLP they do not claim Array API support (the check needs SCIPY_ARRAY_API).
    "check_array_api_input": "no Array API support, as scikit-learn's MLP",
    # scikit-learn's MLPClassifier has no decision_function either.
    "check_classifiers_multilabel_output_format_decision_function": "no decision_function, as scikit-learn's MLP",
}

ESTIMATORS = [fastmlp.MLPClassifier(max_iter=50, random_state=0), fastmlp.MLPRegressor(max_iter=50, random_state=0)]


def _name(check) -> str:
    return check.func.__name__ if isinstance(check, functools.partial) else check.__name__


CASES = [
    (est, check)
    for e in ESTIMATORS
    for est, check in estimator_checks_generator(e)
    if _name(check) not in NOT_APPLICABLE
]


def test_not_applicable_checks_exist():
    """The exclusions name real checks (a renamed check would otherwise run unnoticed... or not at all)."""
    names = {_name(c) for e in ESTIMATORS for _, c in estimator_checks_generator(e)}
    assert set(NOT_APPLICABLE) <= names
    assert len(CASES) > 100


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator,check", CASES, ids=[f"{type(e).__name__}-{_name(c)}" for e, c in CASES])
def test_sklearn_estimator_check(estimator, check):
    check(estimator)
