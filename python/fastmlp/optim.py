"""Optimizers over a Network's flat parameter buffer (the update runs in C++).

An optimizer keeps state (velocity, moments) for one network: its first
``step`` or ``train_epoch`` ties it to that network's parameter count and
dtype; use one optimizer per network, or call :meth:`reset`. The state is
read out with :meth:`Optimizer.state_dict`, restored with
:meth:`Optimizer.load_state_dict`, and kept by pickling.

Each class is one row of the compiled core's table ``kOptimizers``
(``cpp/include/fastmlp/optimizer.hpp``, read through
:data:`fastmlp._names.OPTIMIZERS`): the row gives its hyperparameters (checked
here against the row's ranges), its state arrays and the core's constructor;
a class here declares only its signature (the row's defaults) and its
documentation.
"""

from __future__ import annotations

from typing import Any, ClassVar

from . import _core
from ._names import OPTIMIZERS, check_hyperparameter
from ._validation import check_float

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop"]


class Optimizer:
    """Base class: holds the hyperparameters and the C++ state.

    A subclass names its row of the core's table in ``_row`` and passes its
    hyperparameters (the row's, after ``lr``) by keyword to ``__init__``,
    which checks them against the row's ranges and keeps each as an attribute.
    """

    _row: ClassVar[str | None] = None  # the name of its row of kOptimizers

    def __init__(self, lr: float, **hyperparameters: Any) -> None:
        self._lr = check_float("lr", lr, minimum=0.0)
        params = OPTIMIZERS[self._row].params[1:] if self._row is not None else ()
        if [p.name for p in params] != list(hyperparameters):  # the class disagrees with its row
            raise TypeError(f"{type(self).__name__} takes lr and {[p.name for p in params]}, got {hyperparameters}")
        for param in params:
            setattr(self, param.name, check_hyperparameter(param, hyperparameters[param.name]))
        self._impl: Any = None
        self._dtype: str | None = None

    @property
    def lr(self) -> float:
        """The learning rate, read at every step (a schedule may change it)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_float("lr", value, minimum=0.0)
        if self._impl is not None:
            self._impl.lr = self._lr

    @property
    def t(self) -> int:
        """Steps taken so far (only an optimizer that counts them, such as Adam)."""
        if self._row is None or not OPTIMIZERS[self._row].counts_steps:
            raise AttributeError(f"{type(self).__name__} keeps no step count")
        return 0 if self._impl is None else int(self._impl.t)

    def _make(self, suffix: str) -> Any:
        """The core's optimizer of this dtype (``suffix``: ``'_float32'``/``'_float64'``), state empty."""
        if self._row is None:
            raise NotImplementedError("an Optimizer subclass names its row of the core's table in _row")
        values = [float(self._lr), *(float(getattr(self, p.name)) for p in OPTIMIZERS[self._row].params[1:])]
        return getattr(_core, "Optimizer" + suffix)(self._row, values)

    def __repr__(self) -> str:
        if self._row is None:
            return f"{type(self).__name__}(lr={self._lr!r})"
        rest = "".join(f", {p.name}={getattr(self, p.name)!r}" for p in OPTIMIZERS[self._row].params[1:])
        return f"{type(self).__name__}(lr={self._lr!r}{rest})"

    def bind(self, net: Any) -> Any:
        """The C++ optimizer for `net`'s dtype (a :class:`fastmlp.Network`), created on first use;
        ``ValueError`` if this optimizer holds state of another dtype."""
        dtype = net.dtype.name
        if self._impl is None:
            self._impl = self._make("_" + dtype)
            self._dtype = dtype
        elif dtype != self._dtype:
            raise ValueError(
                f"this optimizer holds {self._dtype} state; got a {dtype} network "
                "(use one optimizer per network, or call reset())"
            )
        return self._impl

    def step(self, net: Any) -> None:
        """Updates ``net.params`` in place from ``net.grads``.

        Raises ``TypeError`` for anything but a :class:`fastmlp.Network`,
        ``ValueError`` for a network other than the one this optimizer's state
        was made for (another size or dtype), ``RuntimeError`` while another
        thread trains `net` or uses this optimizer; a failed step changes
        neither the parameters nor the optimizer's state.
        """
        apply_step = getattr(net, "apply_step", None)  # duck-typed: optim does not import network
        if not callable(apply_step):
            raise TypeError(f"net must be a fastmlp.Network, got {type(net).__name__}")
        apply_step(self)

    def reset(self) -> None:
        """Forgets all state (velocity, moments, step count) and the bound network."""
        self._impl = None
        self._dtype = None

    # --- state: kept by pickling and by the estimators' save/load -------------
    def state_dict(self) -> dict[str, Any] | None:
        """A copy of the state: ``dtype`` and the arrays (and Adam's step count ``t``); None before the first step."""
        if self._impl is None:
            return None
        return {"dtype": self._dtype, **self._impl.get_state()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restores what :meth:`state_dict` returned (None: :meth:`reset`); a bad state changes nothing."""
        if state is None:
            self.reset()
            return
        if not isinstance(state, dict) or state.get("dtype") not in ("float32", "float64"):
            raise ValueError(f"state must be a dict from state_dict() with dtype 'float32' or 'float64', got {state!r}")
        impl = self._make("_" + state["dtype"])
        impl.set_state({k: v for k, v in state.items() if k != "dtype"})
        self._impl, self._dtype = impl, state["dtype"]

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_impl"] = None
        d["_state"] = self.state_dict()
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        d = dict(d)
        state = d.pop("_state", None)
        self.__dict__.update(d)
        self.load_state_dict(state)


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, in scikit-learn's form.

    .. math::
        v \leftarrow \mu v - \eta g, \qquad
        p \leftarrow p + v \quad\text{or, with Nesterov,}\quad p \leftarrow p + \mu v - \eta g

    Parameters
    ----------
    lr : float
        Learning rate :math:`\eta \ge 0`.
    momentum : float
        :math:`\mu \in [0, 1)`; 0 is plain SGD, :math:`p \leftarrow p - \eta g`.
    nesterov : bool
        Nesterov's accelerated gradient.
    """

    _row = "SGD"
    momentum: float
    nesterov: bool

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(lr, momentum=momentum, nesterov=nesterov)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba), with the bias correction folded into the step size.

    .. math::
        t \leftarrow t + 1,\quad
        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2,\\
        p \leftarrow p - \eta \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \frac{m}{\sqrt{v} + \epsilon}

    This is the form scikit-learn uses, so results carry over.
    """

    _row = "Adam"
    beta1: float
    beta2: float
    eps: float

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        super().__init__(lr, beta1=beta1, beta2=beta2, eps=eps)


class AdamW(Optimizer):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter).

    .. math::
        p \leftarrow p - \eta\lambda p, \quad\text{then the Adam step of } :class:`Adam`.

    The decay acts on every parameter (biases too), as PyTorch's ``AdamW`` by default.
    """

    _row = "AdamW"
    beta1: float
    beta2: float
    eps: float
    weight_decay: float

    def __init__(
        self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01
    ) -> None:
        super().__init__(lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)


class RMSprop(Optimizer):
    r"""RMSprop: :math:`v \leftarrow \rho v + (1-\rho) g^2`, :math:`p \leftarrow p - \eta g / (\sqrt v + \epsilon)`."""

    _row = "RMSprop"
    rho: float
    eps: float

    def __init__(self, lr: float = 0.001, rho: float = 0.9, eps: float = 1e-8) -> None:
        super().__init__(lr, rho=rho, eps=eps)


class Adagrad(Optimizer):
    r"""Adagrad: :math:`G \leftarrow G + g^2`, :math:`p \leftarrow p - \eta g / (\sqrt G + \epsilon)`."""

    _row = "Adagrad"
    eps: float

    def __init__(self, lr: float = 0.01, eps: float = 1e-10) -> None:
        super().__init__(lr, eps=eps)
