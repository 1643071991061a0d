"""One epoch's request, by field name: the records that :meth:`fastmlp.Network.prepare_epoch`
builds and :meth:`fastmlp.Network.run_epoch` runs.

- :func:`make_regularization`: penalties and clipping (C++ ``Regularization``);
- :func:`epoch_options`: batch size, shuffling, regularization, schedule, clock, world size
  (C++ ``EpochOptions``);
- the rows (C++ ``Rows_<dtype>``: dense ``x`` or the CSR arrays of :func:`as_csr`, ``y``,
  ``sample_weight``, ``order``) come from :meth:`fastmlp.Network.prepare_rows`;
- :class:`EpochRequest`: all of it plus the loss, the bound optimizer and a gradient hook.

Every record is filled by keyword, so two swapped values cannot pass unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _core
from ._validation import _check_numeric, check_bool, check_float, check_int
from .schedules import Schedule


def make_regularization(
    l2: float = 0.0,
    l1: float = 0.0,
    clip_value: float | None = None,
    clip_norm: float | None = None,
    grad_scale: float = 1.0,
) -> Any:
    """The C++ Regularization record, each value checked (None: no clipping)."""
    return _core.Regularization(
        l2=check_float("l2", l2, minimum=0.0),
        l1=check_float("l1", l1, minimum=0.0),
        clip_value=0.0 if clip_value is None else check_float("clip_value", clip_value, minimum=0.0, open_min=True),
        clip_norm=0.0 if clip_norm is None else check_float("clip_norm", clip_norm, minimum=0.0, open_min=True),
        grad_scale=check_float("grad_scale", grad_scale, minimum=0.0, open_min=True),
    )


def as_csr(name: str, X: Any, n_cols: int, dtype: np.dtype) -> tuple[Any, ...]:
    """A scipy.sparse matrix as the arguments of the C++ CSR calls: (data, indices, indptr, rows, cols).

    CSC (or any other format) is converted to CSR; the values are never densified. Values are
    checked as a dense array's are: complex, object or string values are a ``TypeError``.
    """
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"{name} must be a 2-D sparse matrix with at least one row, got shape {X.shape}")
    if X.shape[1] != n_cols:
        raise ValueError(f"{name} must have {n_cols} features (columns), got shape {X.shape}")
    X = X.tocsr()
    _check_numeric(name, X.data)
    data = np.ascontiguousarray(X.data, dtype=dtype)
    if not np.isfinite(data).all():
        raise ValueError(f"{name} must be finite, got NaN or infinity")
    return (
        data,
        np.ascontiguousarray(X.indices, dtype=np.int64),
        np.ascontiguousarray(X.indptr, dtype=np.int64),
        int(X.shape[0]),
        int(X.shape[1]),
    )


def epoch_options(
    batch_size: int = 200,
    shuffle: bool = True,
    *,
    regularization: Any = None,
    schedule: Any = None,
    epoch: float = 0.0,
    world_size: int = 1,
) -> Any:
    """The C++ EpochOptions record, each field checked and filled by name.

    `regularization` is a :func:`make_regularization` record (None: none), `schedule` a
    :class:`fastmlp.schedules.Schedule` or None; see :meth:`Network.train_epoch` for the rest.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    shuffle = check_bool("shuffle", shuffle)
    epoch = check_float("epoch", epoch, minimum=0.0)
    world_size = check_int("world_size", world_size, minimum=1)
    if schedule is not None and not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a fastmlp.schedules.Schedule, got {type(schedule).__name__}")
    return _core.EpochOptions(
        batch_size=batch_size,
        shuffle=bool(shuffle),
        regularization=make_regularization() if regularization is None else regularization,
        schedule=None if schedule is None else schedule.record,
        epoch=epoch,
        world_size=world_size,
    )


@dataclass
class EpochRequest:
    """One epoch's work, checked and converted (:meth:`Network.prepare_epoch`); what
    :meth:`Network.run_epoch` runs. Its fields may be changed between epochs (the estimators
    set ``rows.order``, ``options.epoch`` and ``options.schedule`` before each one)."""

    rows: Any  # _core.Rows_<dtype>: dense x or CSR arrays, y, sample_weight, order
    loss: Any  # _core.Loss: the loss and its parameter (a name is read as its default)
    optimizer: Any  # the C++ optimizer, bound to the network
    options: Any  # _core.EpochOptions
    gradient_hook: Callable[[np.ndarray, float], float] | None = None
    source: Any = None  # X read batch by batch (fastmlp.data.RowSource); rows.x is then None

    @property
    def n_samples(self) -> int:
        if self.source is not None:
            return int(self.source.shape[0])
        return int(self.rows.x.shape[0]) if self.rows.x is not None else int(self.rows.n_rows)
