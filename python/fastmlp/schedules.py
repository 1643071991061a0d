r"""Learning-rate schedules evaluated in C++ before every optimizer step.

The clock :math:`p` counts epochs fractionally: before batch :math:`b`
(0-based) of :math:`n_b` batches in epoch :math:`e`, :math:`p = e + b/n_b`,
and :math:`\delta = 1/n_b`. With base rate :math:`\eta_0`, warmup length
:math:`w` epochs and :math:`q = \max(0, p - w)`:

=============  ==============================================================================
warmup         :math:`\omega = \min(1, (p + \delta)/w)` (:math:`\omega = 1` when :math:`w = 0`)
constant       :math:`\eta = \omega\,\eta_0`
step           :math:`\eta = \omega\,\eta_0\,\gamma^{\lfloor q/s \rfloor}`
exponential    :math:`\eta = \omega\,\eta_0\,\gamma^{q}` (per epoch, applied smoothly)
cosine         :math:`\eta = \omega\,(\eta_{min} + (\eta_0-\eta_{min})(1+\cos(\pi \min(q,T)/T))/2)`,
               :math:`T = \text{total\_epochs} - w`
=============  ==============================================================================
"""

from __future__ import annotations

import math

from . import _core
from ._names import SCHEDULES
from ._validation import check_choice, check_float

KINDS = SCHEDULES  # the core's schedules (schedule.hpp's kSchedules)


class Schedule:
    """A learning-rate schedule (see the module docstring for the formulas).

    Parameters
    ----------
    kind : {"constant", "step", "exponential", "cosine"}
    base_lr : float
        :math:`\\eta_0 > 0`.
    gamma : float
        :math:`\\gamma \\ge 0`: the factor every `step_size` epochs (step) or per epoch (exponential).
    step_size : float
        :math:`s > 0` epochs between two decays of ``step``.
    total_epochs : float
        Length of the ``cosine`` schedule, warmup included.
    min_lr : float
        :math:`\\eta_{min}`, the floor of ``cosine``.
    warmup_epochs : float
        :math:`w \\ge 0`: a linear ramp from :math:`\\eta_0\\delta/w` to :math:`\\eta_0`.
    """

    def __init__(
        self,
        kind: str,
        base_lr: float,
        *,
        gamma: float = 0.1,
        step_size: float = 10.0,
        total_epochs: float = 200.0,
        min_lr: float = 0.0,
        warmup_epochs: float = 0.0,
    ) -> None:
        self.kind = check_choice("kind", kind, KINDS)
        self.base_lr = check_float("base_lr", base_lr, minimum=0.0, open_min=True)
        self.gamma = check_float("gamma", gamma, minimum=0.0)
        self.step_size = check_float("step_size", step_size, minimum=0.0, open_min=True)
        self.total_epochs = check_float("total_epochs", total_epochs, minimum=0.0, open_min=True)
        self.min_lr = check_float("min_lr", min_lr, minimum=0.0)
        self.warmup_epochs = check_float("warmup_epochs", warmup_epochs, minimum=0.0)
        self._impl = _core.LearningRateSchedule(
            kind=self.kind,
            base_lr=self.base_lr,
            gamma=self.gamma,
            step_size=self.step_size,
            total_epochs=self.total_epochs,
            min_lr=self.min_lr,
            warmup_epochs=self.warmup_epochs,
        )

    @property
    def record(self) -> _core.LearningRateSchedule:
        """The C++ schedule record that the training loop reads (:func:`fastmlp.network.epoch_options`)."""
        return self._impl

    def at(self, p: float, delta: float = 0.0) -> float:
        """The rate of the step that starts at clock `p` (``delta`` = 1 / batches per epoch), from C++."""
        return float(self._impl.at(float(p), float(delta)))

    def __repr__(self) -> str:
        return (
            f"Schedule({self.kind!r}, base_lr={self.base_lr!r}, gamma={self.gamma!r}, "
            f"step_size={self.step_size!r}, total_epochs={self.total_epochs!r}, min_lr={self.min_lr!r}, "
            f"warmup_epochs={self.warmup_epochs!r})"
        )


def schedule_lr(
    kind: str,
    base_lr: float,
    p: float,
    delta: float,
    *,
    gamma: float = 0.1,
    step_size: float = 10.0,
    total_epochs: float = 200.0,
    min_lr: float = 0.0,
    warmup_epochs: float = 0.0,
) -> float:
    """The same formulas in Python (used by :mod:`fastmlp.reference`)."""
    w = warmup_epochs
    warm = min(1.0, (p + delta) / w) if w > 0 else 1.0
    q = max(0.0, p - w)
    if kind == "constant":
        return warm * base_lr
    if kind == "step":
        return warm * base_lr * gamma ** math.floor(q / step_size)
    if kind == "exponential":
        return warm * base_lr * gamma**q
    T = max(total_epochs - w, 1e-12)
    return warm * (min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(q, T) / T)))
