"""The optimizers are one table, the core's kOptimizers (optimizer.hpp): every list of them in the
package, and the reference's twins, equal its rows."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import fastmlp
from fastmlp import _core, _names, io, optim, reference as ref
from fastmlp.estimators import _SOLVER_PARAMS, SOLVERS, STOCHASTIC_SOLVERS, MLPClassifier, MLPRegressor

ROWS = [row[0] for row in _core.optimizers()]


def test_the_table_is_what_the_package_lists():
    assert ROWS == ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]
    assert list(_names.OPTIMIZERS) == ROWS
    assert tuple(name.lower() for name in ROWS) == STOCHASTIC_SOLVERS
    assert (*STOCHASTIC_SOLVERS, "lbfgs") == SOLVERS
    # the state arrays the estimators' files may hold: each state name of the table, once
    assert io._OPTIMIZER_ARRAYS == ("velocity", "m", "v", "G")
    assert set(io._OPTIMIZER_ARRAYS) == {s for _, _, state, _ in _core.optimizers() for s in state}
    for name in ROWS:
        assert name in optim.__all__ and name in fastmlp.__all__ and getattr(fastmlp, name) is getattr(optim, name)
        assert name in ref.__all__


@pytest.mark.parametrize("name", ROWS)
def test_each_class_matches_its_row(name):
    row = _names.OPTIMIZERS[name]
    assert row.params[0].name == "lr" and (row.params[0].lo, row.params[0].hi) == (0.0, math.inf)
    assert not row.params[0].lo_open and not row.params[0].is_flag
    cls = getattr(optim, name)
    assert cls._row == name
    sig = inspect.signature(cls.__init__).parameters
    assert list(sig)[1:] == [p.name for p in row.params]
    for p in row.params:  # the Python signature's defaults are the table's
        assert sig[p.name].default == (bool(p.default) if p.is_flag else p.default), p.name
    # the reference's twin takes the same hyperparameters, by the same names
    assert list(inspect.signature(getattr(ref, name).__init__).parameters)[1:] == [p.name for p in row.params]
    # every hyperparameter is an estimator parameter
    for p in row.params:
        assert _SOLVER_PARAMS.get(p.name, p.name) in MLPRegressor().get_params()
        assert _SOLVER_PARAMS.get(p.name, p.name) in MLPClassifier().get_params()


@pytest.mark.parametrize("name", ROWS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_is_the_rows_arrays(name, dtype):
    row = _names.OPTIMIZERS[name]
    opt = getattr(optim, name)()
    net = fastmlp.Network([3, 4, 2], dtype=dtype, seed=0)
    X = np.random.default_rng(0).normal(size=(8, 3))
    net.loss_and_grad(X, X[:, :2], "squared_error")
    opt.step(net)
    state = opt.state_dict()
    want = {"dtype", *row.state, *(["t"] if row.counts_steps else [])}
    if name == "SGD":  # momentum 0 keeps no velocity: its array is empty
        assert state["velocity"].shape == (0,)
    assert set(state) == want
    assert hasattr(opt, "t") == row.counts_steps
    if row.counts_steps:
        assert opt.t == state["t"] == 1
    twin = getattr(optim, name)()
    twin.load_state_dict(state)
    for key in row.state:
        np.testing.assert_array_equal(twin.state_dict()[key], state[key])


def test_core_rejects_unknown_names_and_counts():
    with pytest.raises(ValueError, match=r"unknown optimizer 'Lion'.*'SGD', 'Adam'"):
        _core.Optimizer_float64("Lion", [0.1])
    with pytest.raises(ValueError, match="Adam takes 4 hyperparameters, got 2"):
        _core.Optimizer_float64("Adam", [0.1, 0.9])
    with pytest.raises(ValueError, match="beta1"):
        _core.Optimizer_float32("Adam", [0.1, 1.5, 0.9, 1e-8])


def test_checks_follow_the_rows_ranges():
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD(0.1, momentum=1.0)
    with pytest.raises(TypeError, match="nesterov must be a bool"):
        optim.SGD(0.1, nesterov=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps"):
        optim.Adagrad(0.1, eps=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.AdamW(weight_decay=-1.0)
    with pytest.raises(ValueError, match="lr"):
        optim.RMSprop(lr=-1.0)


@pytest.mark.parametrize("name", ROWS)
def test_core_checks_agree_with_the_rows_ranges(name):
    """The C++ check()s and the row's ranges (which Python checks by) accept and refuse alike."""
    params = _names.OPTIMIZERS[name].params
    defaults = [p.default for p in params]
    _core.Optimizer_float64(name, defaults)  # the defaults are accepted
    typed = {p.name: bool(p.default) if p.is_flag else p.default for p in params}
    for i, p in enumerate(params):
        if p.is_flag:
            continue
        outside = [p.lo if p.lo_open else p.lo - 1.0]
        if math.isfinite(p.hi):
            outside.append(p.hi if p.hi_open else p.hi + 1.0)
        for value in outside:
            with pytest.raises(ValueError, match=p.name):
                _core.Optimizer_float64(name, [*defaults[:i], value, *defaults[i + 1 :]])
            with pytest.raises(ValueError, match=p.name):
                getattr(optim, name)(**{**typed, p.name: value})
