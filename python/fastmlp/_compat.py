"""scikit-learn when it is installed, small stand-ins when it is not.

The estimators import their base classes, warnings and input validation from
here, so that they are real scikit-learn estimators (clone, pipelines, grid
search, estimator checks) with scikit-learn present and still import and
train without it.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from typing import Any

import numpy as np

from ._validation import is_sparse as is_sparse  # re-exported: the estimators' name for it

try:  # pragma: no branch - one of the two is taken per environment
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning, DataConversionWarning, NotFittedError

    HAVE_SKLEARN = True
except ImportError:
    HAVE_SKLEARN = False

    class NotFittedError(ValueError, AttributeError):  # type: ignore[no-redef]
        """The estimator is used before fit (scikit-learn's type: a ValueError and an AttributeError)."""

    class ConvergenceWarning(UserWarning):  # type: ignore[no-redef]
        """The optimizer stopped before the convergence criterion was met."""

    class DataConversionWarning(UserWarning):  # type: ignore[no-redef]
        """Input data was converted (e.g. a column vector y raveled)."""

    class BaseEstimator:  # type: ignore[no-redef]
        """get_params/set_params/repr from the constructor's signature (scikit-learn's protocol)."""

        @classmethod
        def _get_param_names(cls) -> list[str]:
            sig = inspect.signature(cls.__init__)
            return sorted(p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD)

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params: Any) -> BaseEstimator:
            valid = self._get_param_names()
            for key, value in params.items():
                if key not in valid:
                    raise ValueError(
                        f"Invalid parameter {key!r} for estimator {type(self).__name__}; valid parameters are {valid}"
                    )
                setattr(self, key, value)
            return self

        def __repr__(self) -> str:
            sig = inspect.signature(type(self).__init__)
            changed = [
                f"{name}={getattr(self, name)!r}"
                for name, p in sig.parameters.items()
                if name != "self" and not _same(getattr(self, name, p.default), p.default)
            ]
            return f"{type(self).__name__}({', '.join(changed)})"

    class ClassifierMixin:  # type: ignore[no-redef]
        _estimator_type = "classifier"

    class RegressorMixin:  # type: ignore[no-redef]
        _estimator_type = "regressor"


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) if not isinstance(a, np.ndarray) else False
    except Exception:  # noqa: BLE001 - any failed comparison means "changed"
        return False


def check_random_state(seed: Any) -> np.random.RandomState:
    """scikit-learn's rule: None → NumPy's global RandomState, int → a new one, RandomState → itself."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"random_state must be None, an int or a numpy.random.RandomState, got {seed!r}")


def _num_features_message(est: Any, got: int) -> str:
    return f"X has {got} features, but {type(est).__name__} is expecting {est.n_features_in_} features as input."


def validate_X(est: Any, X: Any, *, reset: bool, dtype: Any) -> Any:
    """X as a 2-D float array (or CSR/CSC matrix) of `dtype`; sets or checks n_features_in_."""
    if HAVE_SKLEARN:
        return _sk_validate(est, X, None, reset=reset, dtype=dtype, y_numeric=False)
    return _own_validate_X(est, X, reset=reset, dtype=dtype)


def validate_Xy(est: Any, X: Any, y: Any, *, reset: bool, dtype: Any, y_numeric: bool) -> tuple[Any, np.ndarray]:
    """(X, y) checked together: y 1-D or 2-D with one row per sample of X."""
    if HAVE_SKLEARN:
        return _sk_validate(est, X, y, reset=reset, dtype=dtype, y_numeric=y_numeric)
    X = _own_validate_X(est, X, reset=reset, dtype=dtype)
    y = np.asarray(y)
    if y.ndim == 0 or y.ndim > 2:
        raise ValueError(f"y must be 1-D or 2-D (n_samples,) or (n_samples, n_outputs), got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X and y must have the same number of samples, got {X.shape[0]} and {y.shape[0]}")
    if y_numeric:
        if y.dtype.kind not in "biuf":
            raise ValueError(f"y must hold numbers for a regressor, got dtype {y.dtype}")
        y = y.astype(np.float64, copy=False)
        if not np.isfinite(y).all():
            raise ValueError("y must be finite, got NaN or infinity")
    elif y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y must be finite, got NaN or infinity")
    return X, y


def _named_checks(est: Any, name: str, a: Any, two_d: bool, numeric: bool) -> None:
    """The errors of scikit-learn's check_array that do not say which argument failed, saying so
    (their wording kept, which scikit-learn's estimator checks match)."""
    if not isinstance(a, (np.ndarray, list, tuple)):
        return  # sparse matrices, DataFrames: scikit-learn's own messages
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError):
        return
    if arr.dtype.kind == "c":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}: Complex data not supported")
    if numeric and arr.dtype.kind in "OUS":
        try:
            arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name} must hold numbers: {exc}") from None
    if not two_d:
        return
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features), got a {arr.ndim}-D array of shape "
            f"{arr.shape}. Expected 2D array, got {arr.ndim}D array instead. Reshape your data "
            "either using array.reshape(-1, 1) if your data has a single feature or "
            "array.reshape(1, -1) if it contains a single sample."
        )
    for axis, what in ((0, "sample"), (1, "feature")):
        if arr.shape[axis] == 0:
            raise ValueError(
                f"{name} must have at least one {what}: Found array with 0 {what}(s) "
                f"(shape={arr.shape}) while a minimum of 1 is required by {type(est).__name__}."
            )


def _n_rows(a: Any) -> int | None:
    shape = getattr(a, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else None
    return len(a) if isinstance(a, (list, tuple)) else None


def _sk_validate(est: Any, X: Any, y: Any, *, reset: bool, dtype: Any, y_numeric: bool) -> Any:
    _named_checks(est, "X", X, two_d=True, numeric=True)
    if y is not None:
        _named_checks(est, "y", y, two_d=False, numeric=y_numeric)
        nx, ny = _n_rows(X), _n_rows(y)
        if nx is not None and ny is not None and nx != ny:
            raise ValueError(
                f"X and y must have the same number of samples, got {nx} and {ny}: Found input "
                f"variables with inconsistent numbers of samples: [{nx}, {ny}]"
            )
    kw = dict(accept_sparse=["csr", "csc"], dtype=dtype, reset=reset)
    if y is not None:
        kw.update(multi_output=True, y_numeric=y_numeric)
    try:
        from sklearn.utils.validation import validate_data
    except ImportError:  # scikit-learn < 1.6
        return est._validate_data(X, y, **kw) if y is not None else est._validate_data(X, **kw)
    return validate_data(est, X, y, **kw) if y is not None else validate_data(est, X, **kw)


def _own_validate_X(est: Any, X: Any, *, reset: bool, dtype: Any) -> Any:
    if is_sparse(X):
        X = X.tocsr() if X.format not in ("csr", "csc") else X
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"X must have at least one sample and one feature, got shape {X.shape}")
        want = _pick_dtype(X.dtype, dtype)
        X = X.astype(want, copy=False)
        if not np.isfinite(X.data).all():
            raise ValueError("X must be finite, got NaN or infinity")
    else:
        names = getattr(X, "columns", None)
        try:
            a = np.asarray(X)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"X must be array-like of numbers: {exc}") from None
        if a.dtype.kind not in "biuf":
            raise ValueError(f"X must hold real numbers, got an array of dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(
                f"X must be 2-D (n_samples, n_features), got shape {a.shape}; "
                "reshape a single sample with X.reshape(1, -1)"
            )
        if a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"X must have at least one sample and one feature, got shape {a.shape}")
        X = np.asarray(a, dtype=_pick_dtype(a.dtype, dtype))
        if not np.isfinite(X).all():
            raise ValueError("X must be finite, got NaN or infinity")
        if reset:
            if names is not None and all(isinstance(n, str) for n in names):
                est.feature_names_in_ = np.asarray(list(names), dtype=object)
            elif hasattr(est, "feature_names_in_"):
                del est.feature_names_in_
    if reset:
        est.n_features_in_ = X.shape[1]
    elif X.shape[1] != est.n_features_in_:
        raise ValueError(_num_features_message(est, X.shape[1]))
    return X


def _pick_dtype(have: np.dtype, want: Any) -> np.dtype:
    if isinstance(want, (list, tuple)):
        return have if have in [np.dtype(w) for w in want] else np.dtype(want[0])
    return np.dtype(want)


def column_or_1d_warn(y: np.ndarray) -> np.ndarray:
    """A (n, 1) column as (n,), with scikit-learn's DataConversionWarning."""
    warnings.warn(
        "A column-vector y was passed when a 1d array was expected. Please change the shape of y to "
        "(n_samples, ), for example using ravel().",
        DataConversionWarning,
        stacklevel=3,
    )
    return np.ravel(y)


def train_test_split_indices(
    n: int, test_fraction: float, rs: np.random.RandomState, stratify: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices: scikit-learn's train_test_split when installed; without it the
    same algorithm (ShuffleSplit / StratifiedShuffleSplit), so the same random_state draws the same split."""
    if HAVE_SKLEARN:
        from sklearn.model_selection import train_test_split

        idx = np.arange(n)
        train_idx, test_idx = train_test_split(idx, random_state=rs, test_size=test_fraction, stratify=stratify)
        return np.asarray(train_idx), np.asarray(test_idx)
    n_test = int(np.ceil(test_fraction * n))
    n_train = n - n_test
    if stratify is None:
        perm = rs.permutation(n)
        return perm[n_test:], perm[:n_test]
    y = np.asarray(stratify)
    if y.ndim == 2:  # each distinct row is a class, named as scikit-learn names it
        y = np.array([" ".join(row.astype("str")) for row in y])
    classes, y_indices, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError(
            "The least populated classes in y have only 1 member, which is too few. The minimum "
            "number of groups for any class cannot be less than 2. Classes with too few members are: "
            f"{classes[counts < 2].tolist()}"
        )
    for what, size in (("train_size", n_train), ("test_size", n_test)):
        if size < len(classes):
            raise ValueError(
                f"The {what} = {size} should be greater or equal to the number of classes = {len(classes)}"
            )
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(counts)[:-1])
    n_i = _approximate_mode(counts, n_train, rs)
    t_i = _approximate_mode(counts - n_i, n_test, rs)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        members = class_indices[i].take(rs.permutation(counts[i]), mode="clip")
        train.extend(members[: n_i[i]])
        test.extend(members[n_i[i] : n_i[i] + t_i[i]])
    return rs.permutation(train), rs.permutation(test)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rs: np.random.RandomState) -> np.ndarray:
    """Draws per class: proportional, floored, the rest to the largest remainders, ties broken by `rs`
    (scikit-learn's sklearn.utils.extmath._approximate_mode, which the same random draws depend on)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add = min(len(inds), need)
            floored[rs.choice(inds, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
    return floored.astype(int)


__all__ = [
    "HAVE_SKLEARN",
    "BaseEstimator",
    "ClassifierMixin",
    "ConvergenceWarning",
    "DataConversionWarning",
    "NotFittedError",
    "RegressorMixin",
    "check_random_state",
    "column_or_1d_warn",
    "is_sparse",
    "train_test_split_indices",
    "validate_X",
    "validate_Xy",
]
