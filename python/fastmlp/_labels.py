"""Class labels ↔ network targets, with scikit-learn's LabelBinarizer conventions.

==================  ============  ===============================  ==================
type of y           classes_      targets (n, n_outputs)           output activation
==================  ============  ===============================  ==================
binary (≤ 2 labels) sorted labels  one column: y == classes_[1]     logistic
multiclass          sorted labels  one-hot                          softmax
multilabel          0 .. k-1       the 0/1 indicator matrix itself  logistic
==================  ============  ===============================  ==================
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def type_of_labels(y: np.ndarray) -> str:
    """'binary', 'multiclass' or 'multilabel-indicator'; ValueError for anything else."""
    if y.ndim == 2 and y.shape[1] > 1:
        if y.dtype.kind in "biuf" and np.isin(y, (0, 1)).all():
            return "multilabel-indicator"
        raise ValueError(
            "Unknown label type: multiclass-multioutput; a 2-D y must be a 0/1 "
            f"multilabel indicator matrix, got values {np.unique(y)[:5]!r}..."
        )
    y = y.ravel()
    if y.dtype.kind == "f" and (not np.isfinite(y).all() or np.any(y != np.round(y))):
        raise ValueError(
            "Unknown label type: continuous. A classifier needs class labels "
            "(integers or strings), not real-valued targets."
        )
    if y.dtype.kind == "O":
        kinds = {isinstance(v, str) for v in y}
        if len(kinds) > 1:
            raise ValueError("Mix of label input types (string and number)")
    return "multiclass" if len(np.unique(y)) > 2 else "binary"


class LabelCoder:
    """Fits the classes of y and maps labels to targets and outputs back to labels."""

    def __init__(self, classes: Any, y_type: str) -> None:
        self.classes_ = np.asarray(classes)
        self.y_type_ = y_type

    @classmethod
    def from_y(cls, y: np.ndarray) -> LabelCoder:
        y_type = type_of_labels(y)
        if y_type == "multilabel-indicator":
            return cls(np.arange(y.shape[1]), y_type)
        return cls(np.unique(y.ravel()), y_type)

    @classmethod
    def from_classes(cls, classes: Any) -> LabelCoder:
        classes = np.asarray(classes)
        if classes.ndim != 1 or classes.size == 0:
            raise ValueError(f"classes must be a non-empty 1-D array of labels, got shape {classes.shape}")
        type_of_labels(classes)
        return cls(np.unique(classes), "multiclass" if len(np.unique(classes)) > 2 else "binary")

    @property
    def n_outputs(self) -> int:
        return 1 if self.y_type_ == "binary" else len(self.classes_)

    @property
    def output_activation(self) -> str:
        return "softmax" if self.y_type_ == "multiclass" else "logistic"

    def check_known(self, y: np.ndarray) -> None:
        """ValueError when y holds a label that is not among classes_."""
        if self.y_type_ == "multilabel-indicator":
            if y.ndim != 2 or y.shape[1] != len(self.classes_) or type_of_labels(y) != "multilabel-indicator":
                raise ValueError(
                    f"y must be a 0/1 indicator matrix of {len(self.classes_)} columns, got shape {y.shape}"
                )
            return
        if y.ndim == 2 and y.shape[1] > 1:
            raise ValueError(f"y must be 1-D class labels like the ones this model was fitted on, got shape {y.shape}")
        type_of_labels(y)
        unknown = np.setdiff1d(np.unique(y.ravel()), self.classes_)
        if len(unknown):
            raise ValueError(
                f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. 'y' has {np.unique(y)}."
            )

    def encode(self, y: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Targets (n, n_outputs) in `dtype` (C order)."""
        if self.y_type_ == "multilabel-indicator":
            return np.ascontiguousarray(y, dtype=dtype)
        y = y.ravel()
        if self.y_type_ == "binary":
            if len(self.classes_) < 2:
                return np.zeros((len(y), 1), dtype=dtype)
            return (y == self.classes_[1]).astype(dtype).reshape(-1, 1)
        out = np.zeros((len(y), len(self.classes_)), dtype=dtype)
        out[np.arange(len(y)), np.searchsorted(self.classes_, y)] = 1
        return out

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Labels from network outputs (probabilities): argmax, or > 0.5 for logistic outputs."""
        if self.y_type_ == "multilabel-indicator":
            return (outputs > 0.5).astype(int)
        if self.y_type_ == "multiclass":
            return self.classes_[np.argmax(outputs, axis=1)]
        if len(self.classes_) == 1:
            return np.repeat(self.classes_[0], len(outputs))
        return self.classes_[(outputs.ravel() > 0.5).astype(int)]

    def class_weights(
        self, class_weight: Any, y: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> np.ndarray:
        """The weight of each sample's class: 'balanced' = n / (n_classes · count(class)), or a dict.

        `reduce` (data-parallel training: the sum over the ranks) makes n and the counts global."""
        if self.y_type_ == "multilabel-indicator":
            raise ValueError("class_weight is not supported for multilabel targets; pass sample_weight instead")
        y = y.ravel()
        idx = np.searchsorted(self.classes_, y)
        if isinstance(class_weight, str):
            if class_weight != "balanced":
                raise ValueError(f"class_weight must be None, 'balanced' or a dict, got {class_weight!r}")
            if reduce is not None:
                all_counts = reduce(np.bincount(idx, minlength=len(self.classes_)).astype(np.float64))
                present = np.flatnonzero(all_counts)
                counts, n = all_counts[present], float(all_counts.sum())
            else:
                present, counts = np.unique(idx, return_counts=True)
                n = len(y)
            per_class = np.ones(len(self.classes_))
            per_class[present] = n / (len(present) * counts)
            return per_class[idx]
        if not isinstance(class_weight, dict):
            raise TypeError(f"class_weight must be None, 'balanced' or a dict, got {type(class_weight).__name__}")
        unknown = [k for k in class_weight if k not in set(self.classes_.tolist())]
        if unknown:
            raise ValueError(f"class_weight has labels {unknown} that are not classes; classes_ is {self.classes_}")
        per_class = np.array([float(class_weight.get(c, 1.0)) for c in self.classes_.tolist()])
        if not np.isfinite(per_class).all() or (per_class < 0).any():
            raise ValueError(f"class_weight values must be finite and >= 0, got {class_weight}")
        return per_class[idx]
