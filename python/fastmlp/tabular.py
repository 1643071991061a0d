"""Tabular data: a table in (a pandas DataFrame or a NumPy array, as it comes), a tuned MLP recipe inside.

:class:`TabularPreprocessor` turns the columns of a table into network inputs, fitted on the training data only:

- **numeric** columns (int, float; an object column whose values are all numbers): robust scaling with smooth
  clipping (RealMLP, Holzmüller et al. 2024), :math:`z = (x - \\mathrm{median}) / s`, then
  :math:`z \\leftarrow z / \\sqrt{1 + (z/3)^2}` (values stay in (−3, 3), a far outlier cannot dominate), where
  :math:`s = q_{75} - q_{25}` (the IQR), or :math:`(\\max - \\min)/2` when the IQR is 0, or 1 for a constant
  column. A missing value (NaN, None, ``pd.NA``) becomes the median (0 after scaling); when the training data had
  missing values in a column, a 0/1 indicator column follows it.
- **categorical** columns (``category``, ``object``/string, bool, or named in ``categorical_features``): levels seen
  in training, most frequent first. A column with at most ``max_onehot_levels`` levels is one-hot encoded; a larger
  one gets the ``max_onehot_levels − 1`` most frequent levels and an "other" column for the rest. A level never seen
  in training (or, in a large column, a rare one) goes to "other" (all zeros in a small column), never an error; a
  missing value gets its own column when training had missing values in the column, else it is treated as unseen.
- the **integer codes** of every categorical column are kept beside the matrix (:meth:`TabularPreprocessor.encode`):
  code 0 is missing/unseen, 1..L the training levels in the order above, ``cardinalities`` = L + 1 — the input of
  an ``Embedding`` layer (issue 23), which will take over the large columns.

:class:`TabularClassifier` and :class:`TabularRegressor` are scikit-learn estimators: the preprocessing above, then
fastmlp's :class:`~fastmlp.MLPClassifier`/:class:`~fastmlp.MLPRegressor` trained with the recipe described in
``docs/tabular.md`` (GELU, Adam with β₂ = 0.95, cosine decay, label smoothing 0.1, standardized regression
targets, an internal validation split with the best epoch restored). pandas is optional: NumPy input works
without it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import _compat
from ._compat import BaseEstimator, ClassifierMixin, NotFittedError, RegressorMixin
from ._labels import type_of_labels
from .estimators import MLPClassifier, MLPRegressor

CLIP = 3.0  # smooth clipping: z / sqrt(1 + (z / CLIP)^2) ∈ (−CLIP, CLIP)
MISSING_CODE = 0  # the integer code of a missing or unseen category


# ---------------------------------------------------------------------------------------------------------------
# Reading a table: columns as 1-D arrays, whatever the container.


def _is_dataframe(X: Any) -> bool:
    return type(X).__module__.split(".")[0] == "pandas" and hasattr(X, "columns") and hasattr(X, "iloc")


def _is_missing_scalar(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (float, np.floating)):
        return bool(np.isnan(v))
    return type(v).__name__ in ("NAType", "NaTType")  # pandas' pd.NA and pd.NaT, without importing pandas


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


class _Column(NamedTuple):
    values: np.ndarray  # float64 (numeric) or object (categorical)
    numeric: bool


def _object_column(values: np.ndarray, name: str, categorical: bool) -> _Column:
    """An object column: numeric when every present value is a number (and not declared categorical)."""
    missing = np.fromiter((_is_missing_scalar(v) for v in values), dtype=bool, count=len(values))
    present = values[~missing]
    for v in present:
        if not isinstance(v, (str, bytes, numbers.Number, np.bool_)):
            try:
                hash(v)
            except TypeError:
                raise TypeError(
                    f"X column {name}: values must be numbers, strings, booleans or missing, got a "
                    f"{type(v).__name__} ({v!r:.40})"
                ) from None
    if not categorical and all(_is_number(v) for v in present):
        out = np.full(len(values), np.nan)
        out[~missing] = present.astype(np.float64)
        return _Column(out, True)
    out_obj = values.copy()
    out_obj[missing] = None
    return _Column(out_obj, False)


def _array_column(a: np.ndarray, name: str, categorical: bool) -> _Column:
    kind = a.dtype.kind
    if kind == "c":
        raise ValueError(f"Complex data not supported: X column {name} has dtype {a.dtype}")
    if kind in "mM":
        raise TypeError(f"X column {name} has dtype {a.dtype}: convert dates and durations to numbers first")
    if kind == "b":
        return _Column(a.astype(object), False)
    if kind in "iuf":
        if categorical:
            obj = a.astype(object)
            if kind == "f":
                obj[np.isnan(a)] = None
            return _Column(obj, False)
        return _Column(a.astype(np.float64), True)
    if kind in "USO":
        return _object_column(a.astype(object), name, categorical)
    raise TypeError(f"X column {name} has an unsupported dtype {a.dtype}")


def _pandas_column(s: Any, name: str, categorical: bool) -> _Column:
    import pandas as pd

    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        values = s.astype(object).to_numpy()
        return _object_column(values, name, True)
    if pd.api.types.is_bool_dtype(dtype):
        return _object_column(s.astype(object).to_numpy(), name, True)
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        if categorical:
            return _object_column(s.astype(object).to_numpy(), name, True)
        return _Column(s.to_numpy(dtype=np.float64, na_value=np.nan), True)
    return _array_column(s.to_numpy(), name, categorical)


def _as_2d_array(X: Any) -> np.ndarray:
    if _compat.is_sparse(X):
        raise TypeError(
            "X must be a dense table (a pandas DataFrame or a 2-D array); sparse matrices are not supported"
        )
    try:
        a = np.asarray(X)
    except Exception as e:  # noqa: BLE001 - ragged lists and the like: one clear message
        raise ValueError(f"X must be a 2-D table (a DataFrame or an array-like), could not convert it: {e}") from None
    if a.ndim != 2:
        raise ValueError(
            f"Expected 2D array, got {a.ndim}D array instead (shape {a.shape}). Reshape your data either using "
            "X.reshape(-1, 1) if your data has a single feature or X.reshape(1, -1) if it contains a single sample."
        )
    return a


def _column_names(X: Any) -> np.ndarray | None:
    """A DataFrame's column names when they are all strings (scikit-learn's ``feature_names_in_``), else None."""
    if not _is_dataframe(X):
        return None
    names = list(X.columns)
    if names and all(isinstance(c, str) for c in names):
        return np.asarray(names, dtype=object)
    return None


def _n_rows_cols(X: Any) -> tuple[int, int]:
    if _is_dataframe(X):
        return int(X.shape[0]), int(X.shape[1])
    a = _as_2d_array(X)
    return int(a.shape[0]), int(a.shape[1])


def _column_label(X: Any, j: int) -> str:
    """How messages name column j: its name (quoted) in a DataFrame, its index in an array."""
    return repr(X.columns[j]) if _is_dataframe(X) else str(j)


def _read_columns(X: Any, categorical: np.ndarray) -> list[_Column]:
    """The columns of X (a DataFrame or a 2-D array-like) as 1-D arrays; ``categorical`` forces columns."""
    if _is_dataframe(X):
        return [_pandas_column(X.iloc[:, j], _column_label(X, j), bool(categorical[j])) for j in range(X.shape[1])]
    a = _as_2d_array(X)
    return [_array_column(a[:, j], str(j), bool(categorical[j])) for j in range(a.shape[1])]


def _check_shape(X: Any) -> tuple[int, int]:
    n, d = _n_rows_cols(X)
    if n == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape=({n}, {d})) while a minimum of 1 is required.")
    if d == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape=({n}, {d})) while a minimum of 1 is required.")
    return n, d


# ---------------------------------------------------------------------------------------------------------------
# The preprocessor


@dataclass
class NumericPlan:
    """A numeric column: z = (x − median) / scale, smooth-clipped; ``indicator``: training had missing values."""

    median: float
    scale: float
    indicator: bool


@dataclass
class CategoricalPlan:
    """A categorical column: its training levels, most frequent first (code k + 1 for ``levels[k]``)."""

    levels: list[Any]
    onehot: int  # how many levels get their own column (the first ones)
    other: bool  # an "other" column for the levels past ``onehot`` and unseen ones
    missing: bool  # a column for missing values (training had them)
    index: dict[Any, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {_key(v): k + 1 for k, v in enumerate(self.levels)}

    @property
    def width(self) -> int:
        return self.onehot + int(self.other) + int(self.missing)


def _key(v: Any) -> Any:
    """The dictionary key of a level: NumPy scalars as Python ones (Python's equality: 1 and 1.0 are one level, the
    string "1" is another)."""
    return v.item() if isinstance(v, np.generic) else v


class Encoded(NamedTuple):
    """The preprocessor's output: the network's input matrix, and the integer codes of the categorical columns
    (for an ``Embedding`` layer: ``codes[:, j]`` in [0, ``cardinalities[j]``), 0 = missing or unseen)."""

    X: np.ndarray  # (n, n_features_out) float
    codes: np.ndarray  # (n, n_categorical) int64
    cardinalities: tuple[int, ...]
    categorical_columns: tuple[int, ...]  # the input columns the codes belong to


def _categorical_mask(categorical_features: Any, n_cols: int, names: np.ndarray | None) -> np.ndarray:
    """``categorical_features`` (None, a boolean mask, column indices or column names) as a boolean mask."""
    mask = np.zeros(n_cols, dtype=bool)
    if categorical_features is None:
        return mask
    spec = np.asarray(categorical_features)
    if spec.ndim != 1:
        raise ValueError(
            f"categorical_features must be None, a boolean mask, column indices or column names, got shape {spec.shape}"
        )
    if spec.size == 0:
        return mask
    if spec.dtype.kind == "b":
        if len(spec) != n_cols:
            raise ValueError(
                f"categorical_features: a boolean mask needs {n_cols} entries (X's columns), got {len(spec)}"
            )
        return spec.copy()
    if spec.dtype.kind in "iu":
        if spec.min() < -n_cols or spec.max() >= n_cols:
            raise ValueError(f"categorical_features: column indices must be in [0, {n_cols}), got {spec.tolist()}")
        mask[spec] = True
        return mask
    if spec.dtype.kind in "UO":
        if names is None:
            raise ValueError("categorical_features: column names need X to be a DataFrame with string column names")
        unknown = [s for s in spec.tolist() if s not in set(names.tolist())]
        if unknown:
            raise ValueError(f"categorical_features: {unknown} are not columns of X (it has {names.tolist()})")
        return np.isin(names, spec)
    raise TypeError(
        f"categorical_features must be None, a boolean mask, column indices or column names, got dtype {spec.dtype}"
    )


class TabularPreprocessor(BaseEstimator):
    """Numeric, boolean, categorical and missing values → one float matrix (and the categorical codes).

    Parameters
    ----------
    max_onehot_levels : int, default=32
        A categorical column with at most this many training levels is one-hot encoded; a larger one gets its
        ``max_onehot_levels − 1`` most frequent levels and an "other" column.
    categorical_features : None, bool mask, column indices or names, default=None
        Columns to treat as categorical whatever their dtype (integer codes in a NumPy array, say). Without it,
        ``category``, ``object``/string and bool columns are categorical, numbers are numeric.

    Attributes
    ----------
    plans_ : list of NumericPlan or CategoricalPlan, one per input column
    feature_names_out_ : ndarray of str, the output columns
    n_features_in_ : int
    feature_names_in_ : ndarray of str (DataFrames with string column names only)
    """

    def __init__(self, max_onehot_levels: int = 32, categorical_features: Any = None) -> None:
        self.max_onehot_levels = max_onehot_levels
        self.categorical_features = categorical_features

    def fit(self, X: Any, y: Any = None) -> TabularPreprocessor:
        """Learns each column's plan from X (the training data)."""
        _check_int_param("max_onehot_levels", self.max_onehot_levels, 2)
        _, d = _check_shape(X)
        names = _column_names(X)
        mask = _categorical_mask(self.categorical_features, d, names)
        columns = _read_columns(X, mask)
        labels = names.tolist() if names is not None else [f"x{j}" for j in range(d)]  # output names: scikit-learn's
        plans: list[NumericPlan | CategoricalPlan] = []
        out_names: list[str] = []
        for j, col in enumerate(columns):
            label, where = labels[j], _column_label(X, j)
            if col.numeric:
                plan_n = _fit_numeric(col.values, where)
                plans.append(plan_n)
                out_names += [label] + ([f"{label}_missing"] if plan_n.indicator else [])
            else:
                plan_c = _fit_categorical(col.values, where, int(self.max_onehot_levels))
                plans.append(plan_c)
                out_names += [f"{label}={v}" for v in plan_c.levels[: plan_c.onehot]]
                out_names += [f"{label}=<other>"] * plan_c.other + [f"{label}=<missing>"] * plan_c.missing
        # commit (nothing above changed self)
        self.plans_ = plans
        self.feature_names_out_ = np.asarray(out_names, dtype=object)
        self.n_features_in_ = d
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._categorical_mask = mask
        return self

    def transform(self, X: Any) -> np.ndarray:
        """The float matrix (n, len(feature_names_out_))."""
        return self.encode(X).X

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X).transform(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        self._check_fitted()
        return self.feature_names_out_.copy()

    def _check_fitted(self) -> None:
        if not hasattr(self, "plans_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
                "before using this estimator."
            )

    def encode(self, X: Any, dtype: Any = np.float64) -> Encoded:
        """The matrix and the categorical codes of X; missing values and unseen levels are handled, never an
        error. X must have the training data's columns (same count; a DataFrame's names checked)."""
        self._check_fitted()
        n, d = _n_rows_cols(X)
        if d != self.n_features_in_:
            raise ValueError(
                f"X has {d} features, but {type(self).__name__} is expecting {self.n_features_in_} features as input."
            )
        columns = _read_columns(X, self._categorical_mask)
        out = np.zeros((n, len(self.feature_names_out_)), dtype=dtype)
        codes = np.zeros((n, sum(isinstance(p, CategoricalPlan) for p in self.plans_)), dtype=np.int64)
        cards: list[int] = []
        cat_cols: list[int] = []
        at = 0
        for j, (plan, col) in enumerate(zip(self.plans_, columns)):
            if isinstance(plan, NumericPlan):
                # a column that was numeric in training and holds text now: what is not a number is missing
                x = col.values if col.numeric else np.array([float(v) if _is_number(v) else np.nan for v in col.values])
                z, miss = _transform_numeric(x, plan, j)
                out[:, at] = z
                at += 1
                if plan.indicator:
                    out[:, at] = miss
                    at += 1
            else:
                c = _codes(col.values, plan)
                k = len(cat_cols)
                codes[:, k] = c
                cards.append(len(plan.levels) + 1)
                cat_cols.append(j)
                rows = np.arange(n)
                level = c - 1  # −1: missing or unseen
                hot = (level >= 0) & (level < plan.onehot)
                out[rows[hot], at + level[hot]] = 1.0
                if plan.other:
                    is_other = level >= plan.onehot
                    is_other |= c == MISSING_CODE  # unseen (and missing when training had none)
                    if plan.missing:
                        is_other &= ~_missing_mask(col.values)
                    out[is_other, at + plan.onehot] = 1.0
                if plan.missing:
                    out[_missing_mask(col.values), at + plan.onehot + int(plan.other)] = 1.0
                at += plan.width
        return Encoded(out, codes, tuple(cards), tuple(cat_cols))


def _check_int_param(name: str, value: Any, minimum: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _fit_numeric(x: np.ndarray, label: str) -> NumericPlan:
    if np.isinf(x).any():
        raise ValueError(f"X column {label} has infinite values; replace them (by NaN, if they mean missing)")
    miss = np.isnan(x)
    if miss.all():
        raise ValueError(f"X column {label} is empty: every training value is missing")
    present = x[~miss]
    median = float(np.median(present))
    q25, q75 = np.quantile(present, [0.25, 0.75])
    scale = float(q75 - q25)
    if not scale > 0:
        scale = float(present.max() - present.min()) / 2.0
    if not scale > 0:
        scale = 1.0  # constant: every value maps to 0
    return NumericPlan(median, scale, bool(miss.any()))


def smooth_clip(z: np.ndarray) -> np.ndarray:
    """z / sqrt(1 + (z / 3)^2): the identity near 0, ±3 at ±infinity."""
    return np.asarray(z / np.sqrt(1.0 + (z / CLIP) ** 2))


def _transform_numeric(x: np.ndarray, plan: NumericPlan, j: int) -> tuple[np.ndarray, np.ndarray]:
    miss = np.isnan(x)
    z = np.zeros_like(x)
    with np.errstate(over="ignore", invalid="ignore"):
        z[~miss] = (x[~miss] - plan.median) / plan.scale
        z = smooth_clip(z)
    z[np.isposinf(x)] = CLIP  # the limit of the clip; infinite values are refused in training, tolerated here
    z[np.isneginf(x)] = -CLIP
    z[miss] = 0.0  # the median
    return z, miss.astype(np.float64)


def _missing_mask(values: np.ndarray) -> np.ndarray:
    return np.fromiter((_is_missing_scalar(v) for v in values), dtype=bool, count=len(values))


def _fit_categorical(values: np.ndarray, label: str, max_onehot: int) -> CategoricalPlan:
    miss = _missing_mask(values)
    if miss.all():
        raise ValueError(f"X column {label} is empty: every training value is missing")
    counts: dict[Any, int] = {}
    first: dict[Any, Any] = {}
    for v in values[~miss]:
        k = _key(v)
        counts[k] = counts.get(k, 0) + 1
        first.setdefault(k, k)
    # most frequent first; ties in a fixed order (the type's name, then the text of the value)
    levels = sorted(counts, key=lambda k: (-counts[k], type(k).__name__, str(k)))
    many = len(levels) > max_onehot
    return CategoricalPlan(
        levels=[first[k] for k in levels],
        onehot=max_onehot - 1 if many else len(levels),
        other=many,
        missing=bool(miss.any()),
    )


def _codes(values: np.ndarray, plan: CategoricalPlan) -> np.ndarray:
    get = plan.index.get
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        try:
            out[i] = MISSING_CODE if _is_missing_scalar(v) else get(_key(v), MISSING_CODE)
        except TypeError:  # an unhashable value at predict time: unseen
            out[i] = MISSING_CODE
    return out


# ---------------------------------------------------------------------------------------------------------------
# The estimators


def _validation_split(
    y: np.ndarray, classify: bool, fraction: float, rs: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices. Classification: stratified, each class of n ≥ 2 rows gives
    max(1, round(fraction × n)) rows (at most n − 1) to validation; a single-row class stays in training."""
    n = len(y)
    if not classify:
        order = rs.permutation(n)
        k = min(max(round(fraction * n), 1), n - 1)
        return np.sort(order[k:]), np.sort(order[:k])
    val = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) >= 2:
            k = min(max(round(fraction * len(rows)), 1), len(rows) - 1)
            val.append(rs.permutation(rows)[:k])
    val_idx = np.sort(np.concatenate(val)) if val else np.array([], dtype=np.int64)
    keep = np.ones(n, dtype=bool)
    keep[val_idx] = False
    return np.flatnonzero(keep), val_idx


MIN_VALIDATION_ROWS = 50  # below this many training rows: no validation split, max_iter epochs on everything


class _TabularBase(BaseEstimator):
    """What the two estimators share: parameters, the preprocessing, the split, the inner MLP's settings."""

    _classify = False

    def _check_params(self) -> None:
        hls = self.hidden_layer_sizes
        sizes = [hls] if isinstance(hls, numbers.Integral) else list(hls) if isinstance(hls, (list, tuple)) else None
        if sizes is None or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes):
            raise TypeError(f"hidden_layer_sizes must be an int or a tuple of ints, got {hls!r}")
        if any(s < 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive, got {hls!r}")
        _check_int_param("max_iter", self.max_iter, 1)
        _check_int_param("n_iter_no_change", self.n_iter_no_change, 1)
        if self.batch_size != "auto":
            _check_int_param("batch_size", self.batch_size, 1)
        for name, lo, hi in (("validation_fraction", 0.0, 1.0), ("learning_rate_init", 0.0, math.inf)):
            v = getattr(self, name)
            if not _is_number(v) or not (lo < float(v) < hi):
                raise ValueError(f"{name} must be a number in ({lo}, {hi}), got {v!r}")
        if not _is_number(self.alpha) or not float(self.alpha) >= 0 or not math.isfinite(float(self.alpha)):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not _is_number(self.dropout) or not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")

    def _inner_params(self, seed: int, validate: bool, n_train: int) -> dict[str, Any]:
        hls = self.hidden_layer_sizes
        sizes = (int(hls),) if isinstance(hls, numbers.Integral) else tuple(int(s) for s in hls)
        batch = self.batch_size if self.batch_size != "auto" else min(256, n_train)
        return dict(
            hidden_layer_sizes=sizes,
            activation=self.activation,
            solver="adam",
            alpha=float(self.alpha),
            batch_size=batch,
            learning_rate="cosine",
            learning_rate_init=float(self.learning_rate_init),
            max_iter=int(self.max_iter),
            random_state=seed,
            tol=0.0,
            early_stopping=validate,
            n_iter_no_change=int(self.n_iter_no_change),
            beta_2=0.95,
            dtype=self.dtype,
            n_threads=self.n_threads,
            dropout=[0.0] + [float(self.dropout)] * len(sizes) if self.dropout else 0.0,
            verbose=bool(self.verbose),
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
                "before using this estimator."
            )

    def _check_names(self, X: Any) -> None:
        """scikit-learn's feature-name rules: warn on a mismatch of having names, raise on different names."""
        names = _column_names(X)
        fitted = getattr(self, "feature_names_in_", None)
        if names is None and fitted is not None:
            warnings.warn(
                f"X does not have valid feature names, but {type(self).__name__} was fitted with feature names",
                UserWarning,
                stacklevel=3,
            )
        elif names is not None and fitted is None:
            warnings.warn(
                f"X has feature names, but {type(self).__name__} was fitted without feature names",
                UserWarning,
                stacklevel=3,
            )
        elif names is not None and fitted is not None and not np.array_equal(names, fitted):
            raise ValueError(
                "The feature names should match those that were passed during fit.\n"
                f"Fitted with: {fitted.tolist()}\nGot: {names.tolist()}"
            )

    def _encode(self, X: Any) -> np.ndarray:
        self._check_fitted()
        self._check_names(X)
        _, d = _check_shape(X)
        if d != self.n_features_in_:
            raise ValueError(
                f"X has {d} features, but {type(self).__name__} is expecting {self.n_features_in_} features as input."
            )
        return self.preprocessor_.encode(X, dtype=self.model_.coefs_[0].dtype).X

    def _fit_common(self, X: Any, y: Any) -> None:
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
        n, _ = _check_shape(X)
        y_arr = np.asarray(y)
        if y_arr.ndim == 2 and y_arr.shape[1] == 1:
            y_arr = _compat.column_or_1d_warn(y_arr)
        if y_arr.ndim != 1:
            raise ValueError(f"y must be 1-D (n_samples,), got shape {y_arr.shape}")
        if len(y_arr) != n:
            raise ValueError(f"X and y must have the same number of samples, got {n} and {len(y_arr)}")
        if n < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples, got n_samples = {n}")
        y_fit, extra = self._prepare_targets(y_arr)
        rs = _compat.check_random_state(self.random_state)
        seed = int(rs.randint(np.iinfo(np.int32).max))
        pre = TabularPreprocessor(self.max_onehot_levels, self.categorical_features).fit(X)
        Xe = pre.encode(X, dtype=np.dtype(self.dtype)).X
        validate = n >= MIN_VALIDATION_ROWS
        train, val = (
            _validation_split(y_fit, self._classify, float(self.validation_fraction), rs)
            if validate
            else (np.arange(n), None)
        )
        inner = self._make_inner(seed, validate, len(train))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _compat.ConvergenceWarning)  # max_iter is the cosine's plan, not a failure
            if val is not None:
                inner.fit(Xe[train], y_fit[train], validation_data=(Xe[val], y_fit[val]))
            else:
                inner.fit(Xe, y_fit)
        # commit: nothing above changed self
        for k, v in extra.items():
            setattr(self, k, v)
        self.preprocessor_ = pre
        self.model_ = inner
        self.n_features_in_ = pre.n_features_in_
        if hasattr(pre, "feature_names_in_"):
            self.feature_names_in_ = pre.feature_names_in_
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.n_iter_ = int(inner.n_iter_)
        self.best_validation_score_ = float(inner.best_validation_score_) if validate else None

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.non_deterministic = False
        return tags


_DOC_PARAMS = """
    hidden_layer_sizes : int or tuple of int, default=(256, 256, 256)
    activation : str, default="gelu"
        Any hidden activation of fastmlp ("selu", "mish", "gelu", "silu", "relu", ...).
    learning_rate_init : float, default=1e-3
        Adam's rate (β₁ = 0.9, β₂ = 0.95), decayed to 0 by a cosine over ``max_iter`` epochs.
    batch_size : int or "auto", default="auto"
        "auto": min(256, training rows) (RealMLP's 256; the defaults sweep found no gain in smaller batches for
        small tables).
    max_iter : int, default=100
        Epochs of the cosine schedule.
    n_iter_no_change : int, default=20
        Stop when the validation score has not improved for this many epochs; the best epoch is restored.
    validation_fraction : float, default=0.2
        Share of the training rows held out (stratified for classification) to pick the best epoch; with fewer
        than 50 rows there is no split and all ``max_iter`` epochs run on everything.
    alpha : float, default=0.0
        L2 penalty (scikit-learn's ``alpha``).
    dropout : float, default=0.0
        Dropout rate after each hidden layer.
    max_onehot_levels : int, default=32
        See :class:`TabularPreprocessor`.
    categorical_features : None, bool mask, column indices or names, default=None
        Columns to treat as categorical whatever their dtype; see :class:`TabularPreprocessor`.
    dtype : "float32" or "float64", default="float32"
        The network's floating-point type. float32 trains about twice as fast; its predictions of a row can differ
        in the last bits with the number of rows predicted together (the products' blocking), float64's do not.
    random_state : None, int or numpy.random.RandomState, default=None
        The validation split and the network's initialization and shuffles: an int gives the same model each fit.
    n_threads : int or None, default=None
        Threads of the training and prediction (None: fastmlp's setting).
    verbose : bool, default=False
"""


class TabularClassifier(ClassifierMixin, _TabularBase):
    __doc__ = (
        """A classifier for tables: a DataFrame (numeric, bool, category and string columns, missing values) or a
    NumPy array in, the tabular MLP recipe inside (label smoothing ``label_smoothing``, GELU, Adam β₂ = 0.95,
    cosine decay, best epoch on a stratified validation split).

    Parameters
    ----------"""
        + _DOC_PARAMS
        + """    label_smoothing : float, default=0.1
        Cross-entropy against (1 − ε)·one-hot + ε/k.

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_ (DataFrames), preprocessor_ (:class:`TabularPreprocessor`),
    model_ (the fitted :class:`fastmlp.MLPClassifier`), n_iter_, best_validation_score_ (accuracy; None without a
    split)
    """
    )

    _classify = True

    def __init__(
        self,
        hidden_layer_sizes: Any = (256, 256, 256),
        activation: str = "gelu",
        *,
        learning_rate_init: float = 1e-3,
        batch_size: int | str = "auto",
        max_iter: int = 100,
        n_iter_no_change: int = 20,
        validation_fraction: float = 0.2,
        alpha: float = 0.0,
        dropout: float = 0.0,
        label_smoothing: float = 0.1,
        max_onehot_levels: int = 32,
        categorical_features: Any = None,
        dtype: str = "float32",
        random_state: Any = None,
        n_threads: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction
        self.alpha = alpha
        self.dropout = dropout
        self.label_smoothing = label_smoothing
        self.max_onehot_levels = max_onehot_levels
        self.categorical_features = categorical_features
        self.dtype = dtype
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def _prepare_targets(self, y: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        if y.dtype.kind == "O" and any(_is_missing_scalar(v) for v in y):
            raise ValueError("y has missing values (None or NaN): every training row needs a class label")
        type_of_labels(y)  # "Unknown label type: continuous", mixed types: scikit-learn's errors
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"y has a single class ({classes[0]!r}): a classifier needs at least 2 classes in the data"
            )
        return codes.astype(np.int64), {"classes_": classes}

    def _make_inner(self, seed: int, validate: bool, n: int) -> Any:
        ls = self.label_smoothing
        if not _is_number(ls) or not 0.0 <= float(ls) < 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {ls!r}")
        return MLPClassifier(**self._inner_params(seed, validate, n), label_smoothing=float(ls))

    def fit(self, X: Any, y: Any) -> TabularClassifier:
        """Fits the preprocessing and the network to X (DataFrame or 2-D array) and the class labels y."""
        self._fit_common(X, y)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n, len(classes_)), columns in the order of ``classes_``."""
        Xe = self._encode(X)
        return np.asarray(self.model_.predict_proba(Xe), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row."""
        proba = self.predict_proba(X)
        return np.asarray(self.classes_[np.argmax(proba, axis=1)])

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (weighted by ``sample_weight``)."""
        pred = self.predict(X)
        hit = (pred == np.asarray(y).ravel()).astype(np.float64)
        return float(np.average(hit, weights=sample_weight))


class TabularRegressor(RegressorMixin, _TabularBase):
    __doc__ = (
        """A regressor for tables: a DataFrame (numeric, bool, category and string columns, missing values) or a
    NumPy array in, the tabular MLP recipe inside (standardized target, GELU, Adam β₂ = 0.95, cosine decay, best
    epoch on a validation split).

    Parameters
    ----------"""
        + _DOC_PARAMS
        + """
    Attributes
    ----------
    n_features_in_, feature_names_in_ (DataFrames), preprocessor_ (:class:`TabularPreprocessor`), model_ (the
    fitted :class:`fastmlp.MLPRegressor`, on the standardized target), y_mean_, y_scale_, n_iter_,
    best_validation_score_ (R²; None without a split)
    """
    )

    def __init__(
        self,
        hidden_layer_sizes: Any = (256, 256, 256),
        activation: str = "gelu",
        *,
        learning_rate_init: float = 1e-3,
        batch_size: int | str = "auto",
        max_iter: int = 100,
        n_iter_no_change: int = 20,
        validation_fraction: float = 0.2,
        alpha: float = 0.0,
        dropout: float = 0.0,
        max_onehot_levels: int = 32,
        categorical_features: Any = None,
        dtype: str = "float32",
        random_state: Any = None,
        n_threads: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction
        self.alpha = alpha
        self.dropout = dropout
        self.max_onehot_levels = max_onehot_levels
        self.categorical_features = categorical_features
        self.dtype = dtype
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def _prepare_targets(self, y: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        if y.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: y has dtype {y.dtype}")
        try:
            yf = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"y must hold numbers for a regressor, got dtype {y.dtype}") from None
        if not np.isfinite(yf).all():
            raise ValueError("y must be finite, got NaN or infinity")
        mean, scale = float(yf.mean()), float(yf.std())
        if not scale > 0:
            raise ValueError(f"y is constant (every value is {yf[0]!r}): there is nothing to learn")
        return (yf - mean) / scale, {"y_mean_": mean, "y_scale_": scale}

    def _make_inner(self, seed: int, validate: bool, n: int) -> Any:
        return MLPRegressor(**self._inner_params(seed, validate, n))

    def fit(self, X: Any, y: Any) -> TabularRegressor:
        """Fits the preprocessing and the network to X (DataFrame or 2-D array) and the numeric target y."""
        self._fit_common(X, y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets (n,)."""
        Xe = self._encode(X)
        return np.asarray(self.model_.predict(Xe), dtype=np.float64).reshape(-1) * self.y_scale_ + self.y_mean_

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² (weighted by ``sample_weight``)."""
        pred = self.predict(X)
        yt = np.asarray(y, dtype=np.float64).ravel()
        w = np.ones_like(yt) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        sse = float(np.sum(w * (yt - pred) ** 2))
        sst = float(np.sum(w * (yt - np.average(yt, weights=w)) ** 2))
        return 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0)
