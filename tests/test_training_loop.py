"""fastmlp._training.EpochLoop: its hooks run in the documented order, and what ends the loop."""

from __future__ import annotations

import types

import numpy as np
import pytest

from fastmlp._compat import ConvergenceWarning
from fastmlp._training import Callbacks, EarlyStopping, EpochLoop, FitProgress, LearningRatePolicy

PER_EPOCH = [
    "order",
    "lr.before_epoch",
    "run",
    "record",
    "score",
    "lr.after_epoch",
    "progress",
    "callback",
    "any_stop",
    "check",
]


def _loop(
    calls,
    *,
    losses=(1.0, 1.0, 1.0),
    max_iter=3,
    one_epoch=False,
    callback_stops=False,
    check_stops=False,
    other_rank_stops=False,
):
    net = types.SimpleNamespace(params=np.zeros(3), training_steps=0)
    request = types.SimpleNamespace(
        rows=types.SimpleNamespace(order=None), n_samples=10, optimizer=types.SimpleNamespace(lr=0.1)
    )
    losses = iter(losses)

    class Strategy:
        world_size = 2

        def order(self):
            calls.append("order")
            return np.arange(10)

        def run(self, net, request):
            calls.append("run")
            net.training_steps += 5  # its steps
            loss = next(losses)
            net.params += 1.0 if np.isfinite(loss) else np.nan
            return loss

        def any_stop(self, stop, error=None):
            calls.append("any_stop")
            if error is not None:
                raise error
            return stop or other_rank_stops

    class Bar:
        def update(self, metrics):
            calls.append("progress")

        def close(self):
            calls.append("close")

    def callback(metrics):
        calls.append("callback")
        return not callback_stops

    progress = FitProgress()
    loop = EpochLoop(
        net,
        request,
        strategy=Strategy(),
        learning_rate=LearningRatePolicy(
            before_epoch=lambda r: calls.append("lr.before_epoch"), after_epoch=lambda: calls.append("lr.after_epoch")
        ),
        early_stopping=EarlyStopping(
            score=lambda: calls.append("score") or {"validation_score": 0.5},
            check=lambda: calls.append("check") or check_stops,
        ),
        record=lambda loss, n: calls.append("record"),
        callbacks=Callbacks([callback]),
        progress=Bar(),
        progress_of_fit=progress,
        max_iter=max_iter,
        one_epoch=one_epoch,
        verbose=False,
    )
    return loop, net, progress


def test_hooks_run_in_the_documented_order_and_max_iter_warns():
    calls = []
    loop, _, progress = _loop(calls)
    assert not progress.epochs_started
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        assert loop.run() is None
    assert progress.epochs_started
    assert calls == PER_EPOCH * 3 + ["close"]
    assert loop.epochs == 3


@pytest.mark.parametrize(
    "kw", [dict(callback_stops=True), dict(other_rank_stops=True), dict(check_stops=True), dict(one_epoch=True)]
)
def test_each_stop_ends_the_loop_after_one_epoch(kw):
    calls = []
    loop, _, _ = _loop(calls, **kw)
    assert loop.run() is None
    assert calls == PER_EPOCH + ["close"]


def test_divergence_returns_the_loss_and_rolls_back_that_epoch():
    calls = []
    loop, net, progress = _loop(calls, losses=(1.0, np.inf))
    assert loop.run() == np.inf  # before max_iter: no warning (warnings are errors in the tests)
    assert calls == PER_EPOCH + ["order", "lr.before_epoch", "run", "close"]
    np.testing.assert_array_equal(net.params, np.ones(3))  # the first epoch's parameters
    assert progress.epochs_started and loop.epochs == 1


def test_keyboard_interrupt_ends_the_loop_with_a_warning():
    calls = []
    loop, _, progress = _loop(calls)

    def interrupted(net, request):
        raise KeyboardInterrupt

    loop.strategy.run = interrupted
    with pytest.warns(UserWarning, match="interrupted by user"):
        assert loop.run() is None
    assert calls == ["order", "lr.before_epoch", "close"]
    assert not progress.epochs_started  # interrupted before its first step: nothing to keep


def test_a_failure_before_the_first_step_is_not_an_epoch_started():
    """A check that fails inside the first epoch, before any step (e.g. input noise on a sparse X):
    the fit's transaction must undo the call, so the loop reports no epoch started; after a step, it does."""
    for steps_before_failure in (0, 1):
        loop, _, progress = _loop([])

        def failing(net, request, steps=steps_before_failure):
            net.training_steps += steps
            raise ValueError("a check inside the epoch")

        loop.strategy.run = failing
        with pytest.raises(ValueError, match="inside the epoch"):
            loop.run()
        assert progress.epochs_started == bool(steps_before_failure)
