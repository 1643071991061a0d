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

# With dropout, a batch's masks follow its rows: a sample repeated twice is not the sample weighted 2.
NOT_APPLICABLE_WITH_DROPOUT = {
    "check_sample_weight_equivalence_on_dense_data": "dropout masks follow the rows: repeating is not weighting",
    # input noise / input dropout refuse sparse X (their sparse tag is False); scikit-learn
    # versions before the tag-aware checks (Python 3.9's) still run this one on sparse X
    "check_sample_weight_equivalence_on_sparse_data": "input noise refuses sparse X (sparse tag False)",
}

ESTIMATORS = [
    fastmlp.MLPClassifier(max_iter=50, random_state=0),
    fastmlp.MLPRegressor(max_iter=50, random_state=0),
    # Dropout and input noise: the draws restart at fit (check_fit_idempotent), and with input
    # noise or input dropout the estimator does not claim sparse input (check_estimator_sparse_tag).
    fastmlp.MLPClassifier(max_iter=50, random_state=0, dropout=[0.1, 0.2], input_noise=0.05),
    fastmlp.MLPRegressor(max_iter=50, random_state=0, dropout=[0.1, 0.2], input_noise=0.05),
]


def _name(check) -> str:
    return check.func.__name__ if isinstance(check, functools.partial) else check.__name__


CASES = [
    (est, check)
    for e in ESTIMATORS
    for est, check in estimator_checks_generator(e)
    if _name(check) not in NOT_APPLICABLE
    and not (e.get_params()["dropout"] != 0.0 and _name(check) in NOT_APPLICABLE_WITH_DROPOUT)
]


def test_not_applicable_checks_exist():
    """The exclusions name real checks (a renamed check would otherwise run unnoticed... or not at all)."""
    names = {_name(c) for e in ESTIMATORS for _, c in estimator_checks_generator(e)}
    assert set(NOT_APPLICABLE) | set(NOT_APPLICABLE_WITH_DROPOUT) <= names
    assert len(CASES) > 100


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator,check", CASES, ids=[f"{type(e).__name__}-{_name(c)}" for e, c in CASES])
def test_sklearn_estimator_check(estimator, check):
    check(estimator)
