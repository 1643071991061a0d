"""The estimators' epoch loop: one object that runs the epochs and calls named hooks in a fixed order.

scikit-learn splits its optimizers from its estimator; here the estimator
(:mod:`fastmlp.estimators`) assembles the hooks from its parameters and
:class:`EpochLoop` owns the loop over the epochs. Each epoch, in this order:

1. ``strategy.order()``: the epoch's order of the samples (:class:`LocalEpochs`: shuffled with the
   estimator's ``RandomState``; :class:`DataParallelEpochs`: the rank's own generator);
2. ``learning_rate.before_epoch(request)``: the optimizer's rate, the in-C++ schedule, the epoch clock;
3. ``guard.snapshot()``: the parameters a diverged epoch is rolled back to;
4. ``strategy.run(net, request)``: the epoch in C++ (under MPI with :class:`fastmlp.distributed.MPIEpoch`);
5. ``guard.diverged(loss)``: a non-finite loss or parameter ends the loop (the estimator raises);
6. ``record(loss, samples)``: ``n_iter_``, ``t_``, ``loss_curve_``, scikit-learn's "Iteration" line;
7. ``early_stopping.score()``: validation loss and score, the no-improvement count; extra metrics;
8. ``learning_rate.after_epoch()``: scikit-learn's ``invscaling``;
9. ``progress.update(metrics)``: the ``verbose=2`` bar;
10. ``callbacks(metrics)``, then ``strategy.any_stop``: a callback returning False on any rank stops all,
    one that raises on any rank raises on all (:class:`fastmlp.distributed.RankFailed` on the others);
11. ``early_stopping.check()``: ``n_iter_no_change`` exceeded: stop, or (``adaptive``) a lower rate;
12. the callbacks' stop; then one epoch only (``partial_fit``); then, at ``max_iter``, the
    ``ConvergenceWarning``.

``KeyboardInterrupt`` between batches ends the loop with a warning (a non-finite interrupted epoch
is rolled back); the bar is closed in every case. :attr:`FitProgress.epochs_started` tells the
estimator's transaction that a training step was taken, so that a later failure keeps what the
epochs did (a failure before the first step is undone whole).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from ._compat import ConvergenceWarning
from .epoch import EpochRequest

Metrics = dict[str, Any]


@dataclass
class FitProgress:
    """What one fit/partial_fit call has done, as its rollback needs it: before its first
    training step a failure undoes the call; after, it keeps what the epochs did."""

    epochs_started: bool = False


class EpochStrategy(Protocol):
    """How an epoch runs: on one process, or data-parallel (:class:`DataParallelEpochs`)."""

    world_size: int

    def order(self) -> np.ndarray | None: ...
    def run(self, net: Any, request: EpochRequest) -> float: ...
    def any_stop(self, stop: bool, error: BaseException | None = None) -> bool: ...


class LocalEpochs:
    """One process: each epoch's order is the last one shuffled again with `random_state`
    (scikit-learn's draws), or None (the given order) without shuffling."""

    world_size = 1

    def __init__(self, n_samples: int, shuffle: bool, random_state: np.random.RandomState) -> None:
        self.shuffle, self.random_state = shuffle, random_state
        self.sample_idx = np.arange(n_samples, dtype=np.int64)

    def order(self) -> np.ndarray | None:
        if not self.shuffle:
            return None
        perm = np.arange(self.sample_idx.shape[0])
        self.random_state.shuffle(perm)
        self.sample_idx = self.sample_idx[perm]
        return self.sample_idx

    def run(self, net: Any, request: EpochRequest) -> float:
        return float(net.run_epoch(request))

    def any_stop(self, stop: bool, error: BaseException | None = None) -> bool:
        if error is not None:
            raise error
        return stop


class DataParallelEpochs:
    """MPI, with what :mod:`fastmlp.distributed` supplies: `mpi_epoch` (an ``MPIEpoch``) runs each
    epoch's broadcast and gradient averaging and ORs the ranks' stop flags; each rank visits its
    shard in its own order from `rng`."""

    def __init__(self, mpi_epoch: Any, n_samples: int, shuffle: bool, rng: np.random.Generator) -> None:
        self.mpi_epoch, self.n_samples, self.shuffle, self.rng = mpi_epoch, n_samples, shuffle, rng
        self.world_size = int(mpi_epoch.size)

    def order(self) -> np.ndarray | None:
        return self.rng.permutation(self.n_samples).astype(np.int64) if self.shuffle else None

    def run(self, net: Any, request: EpochRequest) -> float:
        return float(net.run_epoch(request, hook=self.mpi_epoch))

    def any_stop(self, stop: bool, error: BaseException | None = None) -> bool:
        return bool(self.mpi_epoch.any_stop(stop, error))


class DivergenceGuard:
    """Keeps the parameters from before the current epoch: what a diverged epoch is rolled back to."""

    def __init__(self, params: np.ndarray) -> None:
        self.params = params
        self.before_epoch = np.empty_like(params)

    def snapshot(self) -> None:
        np.copyto(self.before_epoch, self.params)

    def diverged(self, loss: float) -> bool:
        return not (np.isfinite(loss) and np.isfinite(self.params).all())

    def restore(self) -> None:
        self.params[...] = self.before_epoch

    def restore_if_nonfinite(self) -> None:
        if not np.isfinite(self.params).all():
            self.restore()


@dataclass(frozen=True)
class LearningRatePolicy:
    """The estimator's learning-rate hooks: `before_epoch(request)` sets the rate the epoch starts
    with, the in-C++ schedule and the epoch clock; `after_epoch()` updates scikit-learn's
    ``invscaling`` rate. (``adaptive`` acts in :attr:`EarlyStopping.check`, as scikit-learn's.)"""

    before_epoch: Callable[[EpochRequest], None]
    after_epoch: Callable[[], None]


@dataclass(frozen=True)
class EarlyStopping:
    """The estimator's validation and no-improvement hooks: `score()` computes the validation
    loss and score and counts epochs without improvement, returning the metrics to report;
    `check()` is True when training must stop (scikit-learn's messages, or a lowered rate)."""

    score: Callable[[], Metrics]
    check: Callable[[], bool]


class Callbacks:
    """The user's callbacks: each gets the epoch's metrics; the first that returns False stops
    training (the rest are not called that epoch)."""

    def __init__(self, callbacks: Sequence[Callable[[Metrics], Any]] | Callable[[Metrics], Any] | None) -> None:
        self.callbacks = [callbacks] if callable(callbacks) else list(callbacks or [])

    def __call__(self, metrics: Metrics) -> bool:
        return any(cb(metrics) is False for cb in self.callbacks)


class ProgressBar:
    """verbose=2 on stderr: on a terminal, tqdm over the epochs (the ``fastmlp[progress]``
    extra) or else one rewritten line; otherwise (a log file, a pipe, a notebook's
    captured stream) one plain line per epoch."""

    def __init__(self, total: int, incremental: bool) -> None:
        self._bar = None
        self._total = total
        self._live = sys.stderr.isatty()
        if self._live:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=1 if incremental else total, unit="epoch")

    def update(self, m: dict[str, Any]) -> None:
        text = f"loss={m['loss']:.5g} samples/s={m['samples_per_second']:.3g}"
        if "validation_loss" in m:
            text += f" val_loss={m['validation_loss']:.5g}"
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(1)
        else:
            line = f"epoch {m['epoch']}/{self._total} {text}"
            sys.stderr.write(f"\r{line}" if self._live else f"{line}\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._live:
            sys.stderr.write("\n")


class EpochLoop:
    """Runs up to `max_iter` epochs of `request` on `net`, calling the hooks in the order of this
    module's docstring; `one_epoch` (``partial_fit``) stops after the first. Reaching `max_iter`
    warns ``ConvergenceWarning`` unless `planned` (a schedule over `max_iter` epochs).

    :meth:`run` returns the loss of a diverged epoch (its parameters already rolled back) or None.
    """

    def __init__(
        self,
        net: Any,
        request: EpochRequest,
        *,
        strategy: EpochStrategy,
        learning_rate: LearningRatePolicy,
        early_stopping: EarlyStopping,
        record: Callable[[float, int], None],
        callbacks: Callbacks,
        progress: Any,
        progress_of_fit: FitProgress,
        max_iter: int,
        one_epoch: bool,
        verbose: bool,
        planned: bool = False,
    ) -> None:
        self.net, self.request, self.strategy = net, request, strategy
        self.learning_rate, self.early_stopping, self.record = learning_rate, early_stopping, record
        self.callbacks, self.progress, self.fit_progress = callbacks, progress, progress_of_fit
        self.max_iter, self.one_epoch, self.verbose = max_iter, one_epoch, verbose
        self.planned = planned  # max_iter epochs are the plan (a cosine schedule): no ConvergenceWarning at the end
        self.guard = DivergenceGuard(net.params)
        self.epochs = 0

    def run(self) -> float | None:
        steps = self.net.training_steps
        try:
            for _ in range(self.max_iter):
                loss, seconds = self._epoch()
                if self.guard.diverged(loss):
                    self.guard.restore()
                    return loss
                if self._after_epoch(loss, seconds):
                    break
        except KeyboardInterrupt:
            # Between batches: the interrupted epoch's batches so far are kept, as in scikit-learn.
            self.guard.restore_if_nonfinite()
            warnings.warn("Training interrupted by user.", stacklevel=4)
        finally:
            # Epochs started once a step was taken: a failure before (a check inside the first
            # epoch) has changed no parameter, and the fit's transaction undoes the whole call.
            if self.net.training_steps != steps:
                self.fit_progress.epochs_started = True
            if self.progress is not None:
                self.progress.close()
        return None

    def _epoch(self) -> tuple[float, float]:
        """Steps 1-4: the order, the learning rate, the snapshot, the epoch; (loss, seconds)."""
        self.request.rows.order = self.strategy.order()
        self.learning_rate.before_epoch(self.request)
        start = time.perf_counter()
        self.guard.snapshot()
        loss = self.strategy.run(self.net, self.request)
        return loss, time.perf_counter() - start

    def _after_epoch(self, loss: float, seconds: float) -> bool:
        """Steps 6-12 after a finite epoch; True ends the loop."""
        n_samples = self.request.n_samples
        self.record(loss, n_samples * self.strategy.world_size)
        self.epochs += 1
        metrics: Metrics = dict(
            epoch=self.epochs,
            loss=loss,
            learning_rate=float(self.request.optimizer.lr),
            seconds=seconds,
            samples_per_second=n_samples * self.strategy.world_size / max(seconds, 1e-12),
        )
        metrics.update(self.early_stopping.score())
        self.learning_rate.after_epoch()
        if self.progress is not None:
            self.progress.update(metrics)
        try:
            stop, error = self.callbacks(metrics), None
        except Exception as e:  # noqa: BLE001 - re-raised by any_stop; under MPI every rank must hear of it before this one raises
            stop, error = True, e
        stop = self.strategy.any_stop(stop, error)
        if self.early_stopping.check():
            return True
        if stop:
            if self.verbose:
                print("A callback returned False. Stopping.")
            return True
        if self.one_epoch:
            return True
        if self.epochs == self.max_iter and not self.planned:
            warnings.warn(
                "Stochastic Optimizer: Maximum iterations (%d) reached and the optimization "
                "hasn't converged yet." % self.max_iter,
                ConvergenceWarning,
                stacklevel=5,
            )
        return False
