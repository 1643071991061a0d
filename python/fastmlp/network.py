"""The Network: a thin Python face on the C++ engine.

Parameters and gradients are NumPy views of C++ memory: writing to
``net.weights[0]`` changes the network, nothing is copied, and the views keep
the memory alive after the Network object is gone.
"""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, TextIO

import numpy as np

from . import _core, data as _data, layers as _layers

# The core's names (HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, LOSSES, INITS stay importable from here).
from ._names import (
    HIDDEN_ACTIVATIONS as HIDDEN_ACTIVATIONS,
    INITS as INITS,
    LOSS_OUTPUT,
    LOSSES as LOSSES,
    OUTPUT_ACTIVATIONS as OUTPUT_ACTIVATIONS,
    canonical_activation,
    core_loss,
    loss_spec,
)
from ._validation import (
    as_matrix,
    as_sample_weight,
    as_targets,
    check_activations,
    check_choice,
    check_dropout,
    check_dtype,
    check_float,
    check_int,
    check_layer_sizes,
    check_seed,
    is_sparse as _is_sparse,
)
from .epoch import EpochRequest, as_csr, epoch_options, make_regularization

if TYPE_CHECKING:  # annotations only: neither module imports the optimizers at run time
    from .optim import Optimizer

__all__ = ["EpochRequest", "Network", "as_csr", "epoch_options", "make_regularization"]


def _ready(X: Any, dtype: np.dtype, n_inputs: int) -> bool:
    """Whether `X` can go to the core as it is: an aligned, C-contiguous ``numpy.ndarray`` (not a
    subclass such as a memmap) of `dtype` and shape ``(n >= 1, n_inputs)``. The core checks that
    its values are finite (one pass in C++, cheaper than any NumPy reduction on a small batch)."""
    return (
        type(X) is np.ndarray
        and X.dtype == dtype
        and X.ndim == 2
        and X.shape[0] >= 1
        and X.shape[1] == n_inputs
        and X.flags.c_contiguous
        and X.flags.aligned
    )


class Network:
    r"""A multilayer perceptron whose math runs in C++.

    Layer :math:`l` computes :math:`Z_l = A_{l-1} W_l + b_l`, :math:`A_l = f_l(Z_l)`,
    with :math:`W_l` of shape ``(n_in, n_out)``; hidden layers use `activation`,
    the last layer `output_activation`.

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_inputs, hidden..., n_outputs]``, each >= 1.
    activation : str or sequence of str
        Hidden activation: ``identity``, ``logistic`` (alias ``sigmoid``),
        ``tanh``, ``relu``, ``leaky_relu``, ``gelu``, ``silu`` (alias ``swish``),
        ``selu``, ``mish``, ``softplus``, ``elu`` (formulas in
        :func:`fastmlp.reference.activation_forward`); one name for every hidden
        layer or a list with one per hidden layer.
    output_activation : str
        One of the above, ``softmax`` or ``exp`` (for the ``poisson`` loss).
    dtype : {"float32", "float64"}
    seed : int or None
        Seeds the initial weights and the shuffling of :meth:`train_epoch`;
        the same seed gives the same weights on every machine.
    leaky_relu_slope : float
        Slope of ``leaky_relu`` for negative inputs (default 0.01).
    init : {"glorot", "he"}
        ``glorot``: :math:`W, b \sim U(-s, s)`, :math:`s=\sqrt{6/(n_{in}+n_{out})}`
        (2 instead of 6 for a logistic activation), scikit-learn's bounds;
        ``he``: :math:`W \sim U(-\sqrt{6/n_{in}}, \sqrt{6/n_{in}})`, :math:`b = 0` (3 instead
        of 6 for ``selu``: :math:`\mathrm{Var}\,W = 1/n_{in}`, LeCun's, which SELU assumes).
        With one activation per hidden layer, layer :math:`l`'s Glorot factor
        follows its own activation (the output layer's: the last hidden one).
    dropout : float or sequence of float
        Inverted dropout during training (:meth:`train_epoch`): each value
        of a layer's input is kept with probability :math:`1-p` and scaled
        by :math:`1/(1-p)`; inference is untouched. A number is the rate of
        every hidden layer's output; a list gives ``[p_inputs, p_hidden_1,
        ...]`` (one per layer). Each in ``[0, 1)``; 0 is off. The masks are
        a function of (seed, training step, row in the batch, layer, unit)
        only: the same seed trains the same weights on any thread count.
    input_noise : float
        Standard deviation :math:`\sigma` of Gaussian noise added to the
        inputs during training (before input dropout); 0 is off.
    max_norm : float or None
        After every update, each hidden unit's incoming weights (a column of
        :math:`W_l`, hidden layers only) are scaled to L2 norm at most
        `max_norm` (Srivastava et al. 2014); None is off.
    precision : {None, "fp32", "fp64", "bf16"}
        The precision of the matrix products. None (the default) is the
        dtype's own (``"fp32"`` for float32, ``"fp64"`` for float64).
        ``"bf16"`` (float32 networks only) is mixed precision: every matrix
        product (forward, and both of the backward pass) takes its operands
        rounded to bfloat16 and accumulates in float32; the weights, the
        gradients, the optimizer's state, biases, activations and the loss
        stay float32. It runs on the CPU's bfloat16 instructions where it has
        them (AVX512-BF16: AMD Zen 4 and later, Intel Cooper Lake and later;
        ``fastmlp.show_config()`` says which kernel), else rounds and
        multiplies in float32 (slower, the same result). Dense X only.
        :mod:`fastmlp.export` writes float32 models (their products unrounded).
    """

    def __init__(
        self,
        layer_sizes: Any,
        activation: Any = "relu",
        output_activation: str = "identity",
        dtype: Any = "float32",
        seed: int | None = None,
        *,
        leaky_relu_slope: float = 0.01,
        init: str = "glorot",
        dropout: Any = 0.0,
        input_noise: float = 0.0,
        max_norm: float | None = None,
        precision: str | None = None,
        layers: Any = None,
    ) -> None:
        spec = None
        if layers is not None:  # Network(input_size, layers=[...])
            input_size = check_int("input_size", layer_sizes, minimum=1)
            if not (isinstance(activation, str) and activation == "relu"):
                raise ValueError(
                    "activation is for the layer_sizes shorthand; with layers=, put Activation layers in the list"
                )
            if not (isinstance(dropout, (int, float)) and dropout == 0):
                raise ValueError(
                    "dropout is for the layer_sizes shorthand; with layers=, put Dropout layers in the list"
                )
            spec = _layers.to_spec(_layers.from_spec(layers))  # Layers or their dicts
            shapes = _layers.shapes(spec, input_size)  # checks the widths before the core allocates
            sizes = (input_size, *(s.n_out for s in shapes.layers if s.kind == "dense"))
        else:
            sizes = check_layer_sizes(layer_sizes)
        n_layers = len(sizes) - 1
        activations = (
            check_activations("activation", activation, n_layers - 1, HIDDEN_ACTIVATIONS) if spec is None else []
        )
        check_choice("output_activation", output_activation, OUTPUT_ACTIVATIONS)
        check_choice("init", init, INITS)
        self._dtype = check_dtype(dtype)
        slope = check_float("leaky_relu_slope", leaky_relu_slope, minimum=0.0)
        rates = check_dropout(dropout, n_layers)
        input_noise = check_float("input_noise", input_noise, minimum=0.0)
        if max_norm is not None:
            max_norm = check_float("max_norm", max_norm, minimum=0.0, open_min=True)
        self._seed = check_seed(seed)
        full = "fp32" if self._dtype == np.float32 else "fp64"
        if precision is not None:
            check_choice("precision", precision, (full, "bf16"))
            if precision == "bf16" and self._dtype != np.float32:
                raise ValueError("precision='bf16' needs dtype='float32', got dtype='float64'")
        cls = getattr(_core, "Network_" + self._dtype.name)
        if spec is None:
            self._net = cls(list(sizes), activations, output_activation, slope, self._seed, init)
        else:
            self._net = cls(sizes[0], spec, output_activation, slope, self._seed, init)
        self._net.set_noise(rates, input_noise, max_norm or 0.0)
        self._net.precision = precision or full
        self._config: dict[str, Any] = dict(
            activation=activation if isinstance(activation, str) else list(activation),
            output_activation=output_activation,
            leaky_relu_slope=slope,
            init=init,
        )
        if spec is not None:
            del self._config["activation"]
            self._config["layers"] = spec
        # Stored only when used: files and pickles of networks without them stay as they were.
        if any(rates):
            self._config["dropout"] = dropout if isinstance(dropout, (int, float)) else rates
        if input_noise:
            self._config["input_noise"] = input_noise
        if max_norm is not None:
            self._config["max_norm"] = max_norm
        if precision == "bf16":
            self._config["precision"] = precision
        self._make_views()

    def _make_views(self) -> None:
        self._param_views = self._net.layer_views(False)
        self._grad_views = self._net.layer_views(True)

    # --- layers ----------------------------------------------------------------
    @property
    def layers(self) -> list[Any]:
        """The network's layers (:mod:`fastmlp.layers`); for the shorthand, the layers it means."""
        if "layers" in self._config:
            return _layers.from_spec(self._config["layers"])
        return _layers.dense_shorthand(self.layer_sizes, self._config["activation"], list(self.dropout))

    @property
    def shorthand(self) -> bool:
        """Whether the network was built from layer_sizes (the shorthand), not from a list of layers."""
        return "layers" not in self._config

    @property
    def spec(self) -> list[dict[str, Any]]:
        """The layers' JSON form (:func:`fastmlp.layers.to_spec`)."""
        return _layers.to_spec(self.layers)

    @property
    def state(self) -> np.ndarray:
        """The non-trainable state, flat (batch normalization's running mean and variance, layer
        after layer; empty without batch normalization): a writable view."""
        return self._net.state

    def layer_params(self, grads: bool = False) -> list[tuple[str, dict[str, np.ndarray]]]:
        """For each layer with parameters or state, in order (depth-first through residual blocks):
        its kind and its arrays by name — ``W``/``b`` (dense), ``weight``/``bias`` and, for batch
        normalization, ``running_mean``/``running_var`` (norms), ``table0``... (embedding) —
        writable views of :attr:`params` (of :attr:`grads` with ``grads=True``, without the state)."""
        return [(kind, dict(views)) for kind, views in self._net.param_views(bool(grads))]

    # --- description -------------------------------------------------------
    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return tuple(self._net.layer_sizes)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def seed(self) -> int:
        """The seed of the initial weights and of the shuffling (:meth:`initialize` changes it)."""
        return self._seed

    @property
    def n_params(self) -> int:
        return int(self._net.n_params)

    @property
    def activation(self) -> str | list[str] | None:
        """As given: one name, or a list with one per hidden layer (None for a network of layers)."""
        return self._config.get("activation")

    @property
    def activations(self) -> tuple[str, ...]:
        """The activation of each hidden layer (of each Activation layer, in order, for a network of layers)."""
        names = tuple(self._net.activations)
        return names if "layers" in self._config else names[: len(self.layer_sizes) - 2]

    @property
    def dropout(self) -> tuple[float, ...]:
        """The dropout rate of each layer's input: ``(p_inputs, p_hidden_1, ...)``."""
        return tuple(self._net.dropout)

    @property
    def input_noise(self) -> float:
        return float(self._net.input_noise)

    @property
    def max_norm(self) -> float | None:
        return float(self._net.max_norm) or None

    @property
    def precision(self) -> str:
        """The matrix products' precision: ``"fp32"``, ``"fp64"`` or ``"bf16"``."""
        return str(self._net.precision)

    @property
    def training_steps(self) -> int:
        """Training steps (mini-batches) taken since the parameters were drawn: the
        ``step`` of the dropout and noise draws (see :meth:`draws`)."""
        return int(self._net.steps)

    @training_steps.setter
    def training_steps(self, steps: int) -> None:
        """Sets the step count (the key of the next step's draws), e.g. to resume a run."""
        self._net.steps = check_int("training_steps", steps, minimum=0, maximum=2**64 - 1)

    def draws(self, rows: int, step: int) -> tuple[np.ndarray | None, list[np.ndarray | None]]:
        r"""What training step `step` draws for a batch of `rows` rows: the input noise
        :math:`\sigma\varepsilon` (``(rows, n_inputs)``, or None) and, per layer input,
        the keep mask (0/1, ``(rows, width)``; None where its rate is 0) — the arguments
        :func:`fastmlp.reference.loss_and_grad` takes to give the same gradients. For a
        network of layers, one mask per Dropout layer in order (depth-first), each drawn
        at the layer's site (:func:`fastmlp.layers.shapes`), as
        :func:`fastmlp.reference.layers_loss_and_grad` takes them (keyed by site)."""
        rows = check_int("rows", rows, minimum=1)
        step = check_int("step", step, minimum=0, maximum=2**64 - 1)
        noise, masks = self._net.draws(rows, step)
        return noise, list(masks)

    @property
    def output_activation(self) -> str:
        return self._config["output_activation"]

    @property
    def leaky_relu_slope(self) -> float:
        return self._config["leaky_relu_slope"]

    @property
    def init(self) -> str:
        return self._config["init"]

    @property
    def n_inputs(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]

    # --- views of C++ memory -----------------------------------------------
    @property
    def params(self) -> np.ndarray:
        """All parameters, flat: W_0, b_0, W_1, b_1, ... (a writable view)."""
        return self._net.params

    @property
    def grads(self) -> np.ndarray:
        """All gradients, same layout as :attr:`params` (a writable view)."""
        return self._net.grads

    @property
    def weights(self) -> list[np.ndarray]:
        """``W_l`` of shape ``(n_in, n_out)``, writable views."""
        return [w for w, _ in self._param_views]

    @property
    def biases(self) -> list[np.ndarray]:
        return [b for _, b in self._param_views]

    @property
    def weight_grads(self) -> list[np.ndarray]:
        return [w for w, _ in self._grad_views]

    @property
    def bias_grads(self) -> list[np.ndarray]:
        return [b for _, b in self._grad_views]

    # --- computation -------------------------------------------------------
    def forward(self, X: Any, out: np.ndarray | None = None) -> np.ndarray:
        """The network's output (after the output activation) for X of shape (n, n_inputs).

        X may be any real array-like (see :mod:`fastmlp._validation`): integers
        and booleans (as 0/1) and float16 are converted to :attr:`dtype`;
        strided, big-endian, read-only and memory-mapped arrays are read
        correctly. Object, string and complex arrays raise ``TypeError``; NaN,
        ±inf, a wrong shape or zero samples raise ``ValueError``. Safe to call
        from several threads at once. X may also be a scipy.sparse matrix: the
        first layer then multiplies sparse × dense in C++.

        ``out``, when given, receives the result in place and is returned: a
        C-contiguous, writable array of :attr:`dtype` and shape
        (n, n_outputs) that does not overlap X (dense X only). The result is
        bit-identical whatever the arrays' memory addresses.

        X larger than memory — a memmap, a list of ``.npy`` paths or a
        :class:`fastmlp.data.RowSource` (``ParquetRows``...) — is read in
        chunks of rows into one buffer (:func:`fastmlp.data.forward_streamed`):
        the output is the only allocation that grows with the rows.
        """
        finite_checked = False  # a ready X goes as it is (its values are checked in C++)
        if not _ready(X, self._dtype, self._net.n_inputs):
            if _data.is_out_of_core(X):
                return _data.forward_streamed(self, X, out)
            if _is_sparse(X):
                if out is not None:
                    raise TypeError("out is supported for dense X only, got a scipy.sparse X")
                return self._net.forward_csr(*as_csr("X", X, self.n_inputs, self._dtype))
            X, finite_checked = as_matrix("X", X, self.n_inputs, self._dtype), True
        if out is None:
            return self._net.forward(X, None, finite_checked)
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}")
        if out.dtype != self._dtype:
            raise TypeError(f"out must have dtype {self.dtype}, got {out.dtype}")
        if out.shape != (X.shape[0], self.n_outputs):
            raise ValueError(f"out must have shape {(X.shape[0], self.n_outputs)}, got {out.shape}")
        if not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
            raise ValueError("out must be C-contiguous, aligned and writable")
        if np.may_share_memory(X, out):
            raise ValueError("out must not overlap X")
        return self._net.forward(X, out, finite_checked)

    def _targets(self, y: Any, loss: str, n: int) -> np.ndarray:
        return as_targets("y", y, loss, n, self.n_outputs, self._dtype)

    def _check_loss(self, loss: Any) -> dict[str, Any]:
        """The checked spec of `loss` (:func:`fastmlp._names.loss_spec`) for this network's output."""
        spec = loss_spec(loss)
        need = LOSS_OUTPUT[spec["name"]]
        out = canonical_activation(self.output_activation)
        if need is not None and out != need:
            raise ValueError(f"loss {spec['name']!r} needs output_activation {need!r}, this network has {out!r}")
        return spec

    def loss_and_grad(
        self, X: Any, y: Any, loss: Any, sample_weight: Any = None, *, training_step: int | None = None
    ) -> float:
        r"""Mean loss over the batch (no regularization); fills the gradient views.

        With sample weights :math:`w_i` (all 1 by default), :math:`W=\sum_i w_i`
        and :math:`k` outputs:

        ``squared_error``: :math:`\sum_i w_i \|\hat y_i - y_i\|^2 / (2Wk)`;
        ``log_loss``: :math:`-\sum_i w_i\, y_i \cdot \log \mathrm{softmax}(z_i) / W`;
        ``binary_log_loss``: :math:`\sum_i w_i \sum_j (\mathrm{softplus}(z) - y z)_{ij} / W`;
        ``poisson`` (``exp`` output): :math:`\sum_i w_i \sum_j (e^{z} - y z + y\log y - y)_{ij} / W`;
        with :math:`d = \hat y - y` (any output activation):
        ``huber``: :math:`\sum_i w_i \sum_j h_\delta(d_{ij}) / (Wk)`, :math:`h_\delta(d) = d^2/2` for
        :math:`|d| \le \delta`, else :math:`\delta(|d| - \delta/2)` (PyTorch's ``HuberLoss``);
        ``absolute_error``: :math:`\sum_i w_i \sum_j |d_{ij}| / (Wk)`;
        ``quantile``: :math:`\sum_i w_i \sum_j \rho_\alpha(-d_{ij}) / (Wk)`,
        :math:`\rho_\alpha(r) = \max(\alpha r, (\alpha - 1) r)` (the pinball loss).
        The subgradient of a kink at :math:`d = 0` is 0.

        `loss` is a name (its parameter at the default) or a JSON-able mapping with the parameter:
        ``{"name": "huber", "delta": 1.0}`` (:math:`\delta > 0`), ``{"name": "quantile", "alpha": 0.5}``
        (:math:`0 < \alpha < 1`), ``{"name": "log_loss", "label_smoothing": 0.1}`` (also
        ``binary_log_loss``; :math:`0 \le \varepsilon < 1`): the targets become
        :math:`(1 - \varepsilon) y + \varepsilon / K`, :math:`K` the number of classes (PyTorch's
        convention; ``binary_log_loss``: :math:`K = 2` for each output).
        For ``log_loss`` y may be integer (or boolean) class indices (1-D) or
        one-hot (2-D). X and y are accepted as in :meth:`forward`. A failed
        call (bad input, or another thread training this network:
        ``RuntimeError``) changes nothing. X may be a scipy.sparse matrix.

        ``training_step``, when given, evaluates the batch as training step
        number `training_step` sees it: with this network's dropout and
        input noise drawn for that step (:meth:`draws`); nothing else
        changes (dense X only).
        """
        spec = self._check_loss(loss)
        if training_step is not None:
            training_step = check_int("training_step", training_step, minimum=0, maximum=2**64 - 1)
            if _is_sparse(X):
                raise TypeError("training_step needs a dense X, got a scipy.sparse X")
        elif _is_sparse(X):  # the objective without penalties is this loss
            return self.objective(X, y, loss, sample_weight=sample_weight)
        X = as_matrix("X", X, self.n_inputs, self._dtype)
        Y = self._targets(y, spec["name"], X.shape[0])
        w = as_sample_weight(sample_weight, X.shape[0], self._dtype)
        return float(self._net.loss_and_grad(X, Y, core_loss(spec), w, training_step))

    def train_epoch(
        self,
        X: Any,
        y: Any,
        loss: Any,
        optimizer: Optimizer,
        batch_size: int = 200,
        shuffle: bool = True,
        *,
        l2: float = 0.0,
        l1: float = 0.0,
        clip_value: float | None = None,
        clip_norm: float | None = None,
        order: Any = None,
        sample_weight: Any = None,
        schedule: Any = None,
        epoch: float = 0.0,
        gradient_hook: Callable[[np.ndarray, float], float] | None = None,
        world_size: int = 1,
        comm: Any = None,
    ) -> float:
        r"""One epoch of mini-batch gradient descent, entirely in C++ (GIL released).

        The samples are visited in `order` if given, else shuffled with the
        network's seeded generator (``shuffle=True``) or in sequence. Each
        mini-batch :math:`B` of `batch_size` rows (the last one may be
        smaller; a `batch_size` >= n is full-batch descent), with weight sum
        :math:`W_B` (its row count without `sample_weight`):

        1. forward, backward: the weighted mean loss of :meth:`loss_and_grad`;
        2. penalties on the weights (biases excluded):
           :math:`(\tfrac12 l_2 \sum\|W_l\|^2 + l_1 \sum |W_l|) / W_B`;
        3. clipping of the whole gradient: each value to
           :math:`[-c_v, c_v]` (`clip_value`), then its global L2 norm to at
           most `clip_norm`;
        4. the learning rate from `schedule` (a
           :class:`fastmlp.schedules.Schedule`), at clock
           ``epoch + b / n_batches`` for batch ``b``;
        5. one optimizer step.

        A batch whose weights sum to 0 is skipped.

        For data-parallel training, ``gradient_hook(grads, loss) -> loss`` is
        called once per batch (GIL held) with a view of the gradient buffer,
        after backward and before step 2 — e.g. an allreduce that averages
        both over `world_size` processes in place; the penalties then divide
        by ``world_size × W_B``.

        ``comm`` (an ``mpi4py`` communicator) does all of that over MPI: X, y
        are this rank's shard (every rank the same number of rows), each rank's
        batch of `batch_size` rows is one slice of a global batch of
        ``comm.size × batch_size`` rows, and every rank ends the epoch with the
        same parameters. See :func:`fastmlp.distributed.train_epoch`.

        X larger than memory: a NumPy memmap (``np.load(path, mmap_mode="r")``), a list of
        ``.npy`` paths (their rows concatenated) or a :class:`fastmlp.data.RowSource` is read
        batch by batch into one reusable buffer, never whole; the epoch is the in-memory one
        (the same batches, order, steps and loss). See :mod:`fastmlp.data`.

        Returns
        -------
        float
            :math:`\frac1n\sum_B |B| L_B`, each batch's loss (with its
            penalties) taken before its update (scikit-learn's ``loss_curve_``
            value); with `comm`, over all ranks' samples.

        Raises
        ------
        TypeError, ValueError
            Bad arguments (X and y as in :meth:`loss_and_grad`), before
            anything changes; a batch whose workspace exceeds the machine's
            memory raises ``ValueError`` before any allocation.
        RuntimeError
            Another thread is training this network or using this optimizer.
        KeyboardInterrupt
            Ctrl-C, seen between batches: the parameters are those after the
            last complete batch.
        """
        if comm is not None:  # the MPI strategy lives in fastmlp.distributed, which uses prepare/run_epoch
            from .distributed import train_epoch as train_epoch_mpi

            return train_epoch_mpi(
                self,
                X,
                y,
                loss,
                optimizer,
                batch_size,
                shuffle,
                comm=comm,
                l2=l2,
                l1=l1,
                clip_value=clip_value,
                clip_norm=clip_norm,
                order=order,
                sample_weight=sample_weight,
                schedule=schedule,
                epoch=epoch,
                gradient_hook=gradient_hook,
                world_size=world_size,
            )
        self._check_loss(loss)
        self._check_optimizer(optimizer)
        options = epoch_options(
            batch_size,
            shuffle,
            epoch=epoch,
            world_size=world_size,
            schedule=schedule,
            regularization=make_regularization(l2=l2, l1=l1, clip_value=clip_value, clip_norm=clip_norm),
        )
        request = self.prepare_epoch(
            X, y, loss, optimizer, options, sample_weight=sample_weight, order=order, gradient_hook=gradient_hook
        )
        return self.run_epoch(request)

    @staticmethod
    def _check_optimizer(optimizer: Any) -> None:
        if not callable(getattr(optimizer, "bind", None)):  # duck-typed: fastmlp.optim's optimizers
            raise TypeError(f"optimizer must be a fastmlp optimizer (SGD, Adam, ...), got {type(optimizer).__name__}")

    def prepare_rows(self, X: Any, y: Any, loss: Any, *, sample_weight: Any = None, order: Any = None) -> Any:
        """X, y (and sample weights, visiting order) checked and converted as :meth:`train_epoch`
        checks them: the C++ Rows record of this network's dtype (dense ``x`` or CSR arrays)."""
        name = self._check_loss(loss)["name"]
        rows = getattr(_core, "Rows_" + self._dtype.name)()
        if isinstance(X, _data.RowSource):  # read batch by batch (run_epoch): only its shape here
            if X.shape[1] != self.n_inputs:
                raise ValueError(f"X must have {self.n_inputs} features (columns), got shape {X.shape}")
            n = X.shape[0]
        elif _is_sparse(X):
            rows.data, rows.indices, rows.indptr, rows.n_rows, rows.n_cols = as_csr("X", X, self.n_inputs, self._dtype)
            n = rows.n_rows
        else:
            rows.x = as_matrix("X", X, self.n_inputs, self._dtype)
            n = rows.x.shape[0]
        rows.y = self._targets(y, name, n)
        rows.sample_weight = as_sample_weight(sample_weight, n, self._dtype)
        if order is not None:
            order = np.asarray(order)
            if order.dtype.kind not in "iu" or order.shape != (n,):
                raise ValueError(
                    f"order must be a 1-D integer array of {n} sample indices, "
                    f"got dtype {order.dtype} and shape {order.shape}"
                )
            if order.size and (order.min() < 0 or order.max() >= n):
                bad = int(order[(order < 0) | (order >= n)][0])
                raise ValueError(f"order must hold sample indices in [0, {n}), got {bad}")
            rows.order = np.ascontiguousarray(order, dtype=np.int64)
        return rows

    def prepare_epoch(
        self,
        X: Any,
        y: Any,
        loss: Any,
        optimizer: Any,
        options: Any = None,
        *,
        sample_weight: Any = None,
        order: Any = None,
        gradient_hook: Callable[[np.ndarray, float], float] | None = None,
    ) -> EpochRequest:
        """One epoch's work checked and converted, for :meth:`run_epoch` (which may run it many times).

        `options` is an :func:`epoch_options` record (None: the defaults); X, y, `sample_weight`,
        `order` and `gradient_hook` are as in :meth:`train_epoch`. Raises as :meth:`train_epoch` does,
        before anything changes.
        """
        spec = self._check_loss(loss)
        self._check_optimizer(optimizer)
        source = _data.as_source(X, dtype=self._dtype) if _data.is_out_of_core(X) else None
        rows = self.prepare_rows(X if source is None else source, y, spec, sample_weight=sample_weight, order=order)
        if gradient_hook is not None and not callable(gradient_hook):
            raise TypeError(f"gradient_hook must be callable or None, got {type(gradient_hook).__name__}")
        return EpochRequest(
            rows=rows,
            loss=core_loss(spec),
            optimizer=optimizer.bind(self),
            options=epoch_options() if options is None else options,
            gradient_hook=gradient_hook,
            source=source,
        )

    def run_epoch(self, request: EpochRequest, hook: Any = None) -> float:
        """Runs one epoch of `request` (see :meth:`train_epoch`); returns its loss.

        `hook`, if given, is an epoch strategy: ``hook.before_epoch(net, request)`` runs first (it may
        change the request: e.g. :class:`fastmlp.distributed.MPIEpoch` broadcasts the parameters and
        sets the gradient allreduce), then the epoch, then ``hook.after_epoch(net, request, loss)``
        returns the loss to report. If the epoch raises, ``hook.failed(error)`` (when the strategy has
        one) runs before the error propagates.
        """
        if hook is not None:
            hook.before_epoch(self, request)
        try:
            if request.source is not None:
                value = _data.run_streamed(self._net, request, request.source)
            else:
                value = float(
                    self._net.train_epoch(
                        request.rows, request.loss, request.optimizer, request.options, request.gradient_hook
                    )
                )
        except BaseException as e:
            if hook is not None and hasattr(hook, "failed"):
                hook.failed(e)  # e.g. MPIEpoch: the other ranks must not wait for this one
            raise
        return value if hook is None else float(hook.after_epoch(self, request, value))

    def objective(
        self, X: Any, y: Any, loss: Any, *, l2: float = 0.0, l1: float = 0.0, sample_weight: Any = None
    ) -> float:
        r"""The full-batch training objective and its gradient (in :attr:`grads`).

        :meth:`loss_and_grad` plus the penalties
        :math:`(\tfrac12 l_2 \sum\|W_l\|^2 + l_1 \sum |W_l|) / W` of
        :meth:`train_epoch`: what L-BFGS minimizes.
        """
        reg = make_regularization(l2=l2, l1=l1)
        return self.run_objective(self.prepare_rows(X, y, loss, sample_weight=sample_weight), loss, reg)

    def run_objective(self, rows: Any, loss: Any, regularization: Any) -> float:
        """:meth:`objective` on rows from :meth:`prepare_rows` and a :func:`make_regularization`
        record (what L-BFGS calls at every iteration, the conversion done once)."""
        return float(self._net.objective(rows, core_loss(self._check_loss(loss)), regularization))

    def apply_step(self, optimizer: Any) -> None:
        """One update of :attr:`params` from :attr:`grads` by `optimizer` (what ``optimizer.step(net)`` does)."""
        self._check_optimizer(optimizer)
        optimizer.bind(self).step(self._net)

    def initialize(self, seed: int | None = None) -> None:
        """Draws new parameters (and reseeds the shuffling) from `seed`."""
        seed = check_seed(seed)
        self._net.initialize(seed, self._config["init"])  # raises if another thread is training
        self._seed = seed

    # --- describing, saving, loading ----------------------------------------
    def summary(self, file: TextIO | None = None, *, title: str | None = None) -> None:
        """Prints one line per layer: its shape ``n_in -> n_out``, its parameters
        (``n_in * n_out + n_out``), its activation and the dropout rate of its input
        (when any layer has one); then the total and the training-only settings. A network of
        layers: one line per layer (a residual block's layers indented under it)."""
        if "layers" in self._config:
            self._summary_of_layers(file, title)
            return
        sizes = self.layer_sizes
        acts = (*self.activations, self.output_activation)
        rows = [
            (f"dense {i}", f"{a} -> {b}", f"{a * b + b:,}", acts[i], f"{self.dropout[i]:g}")
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
        ]
        head = ("layer", "shape", "parameters", "activation", "input dropout")
        k = 5 if any(self.dropout) else 4
        widths = [max(len(r[c]) for r in [head, *rows]) for c in range(k)]
        fmt = "  ".join(f"{{:<{w}}}" if c != 2 else f"{{:>{w}}}" for c, w in enumerate(widths))
        extras = [
            f"{name}={value:g}"
            for name, value in (("input_noise", self.input_noise), ("max_norm", self.max_norm or 0.0))
            if value
        ]
        lines = [
            title or f"Network ({self._dtype.name}" + (", bf16 products)" if self.precision == "bf16" else ")"),
            fmt.format(*head[:k]),
            *(fmt.format(*r[:k]) for r in rows),
            f"total: {self.n_params:,} parameters ({self.n_params * self._dtype.itemsize:,} bytes)"
            + (f"; training: {', '.join(extras)}" if extras else ""),
        ]
        print("\n".join(line.rstrip() for line in lines), file=sys.stdout if file is None else file)

    def _summary_of_layers(self, file: TextIO | None, title: str | None) -> None:
        shapes = _layers.shapes(self._config["layers"], self.n_inputs)
        flat: list[Any] = []

        def walk(layers: list[Any]) -> None:
            for layer in layers:
                flat.append(layer)
                if isinstance(layer, _layers.Residual):
                    walk(list(layer.layers))

        walk(self.layers)
        head = ("layer", "shape", "parameters", "detail")
        rows = []
        for layer, shape in zip(flat, shapes.layers):
            count = sum(math.prod(s) for _, s in shape.params)
            detail = {k: v for k, v in layer.to_dict().items() if k not in ("kind", "units", "layers")}
            rows.append(
                (
                    "  " * (len(shape.path) - 1) + shape.kind,
                    f"{shape.n_in} -> {shape.n_out}",
                    f"{count:,}",
                    ", ".join(f"{k}={v}" for k, v in detail.items()),
                )
            )
        widths = [max(len(r[c]) for r in [head, *rows]) for c in range(4)]
        fmt = "  ".join(f"{{:<{w}}}" if c != 2 else f"{{:>{w}}}" for c, w in enumerate(widths))
        lines = [
            title or f"Network ({self._dtype.name}" + (", bf16 products)" if self.precision == "bf16" else ")"),
            fmt.format(*head),
            *(fmt.format(*r) for r in rows),
            f"output: {self.output_activation}",
            f"total: {self.n_params:,} parameters ({self.n_params * self._dtype.itemsize:,} bytes)"
            + (f", {self.state.size:,} state values" if self.state.size else ""),
        ]
        print("\n".join(line.rstrip() for line in lines), file=sys.stdout if file is None else file)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the network to `path`: a NumPy ``.npz`` archive in the format of the
        estimators' files (:mod:`fastmlp.io`), ``format`` ``"fastmlp.network"``: JSON metadata
        (layer sizes, dtype, activations, seed) and the flat ``params``; written atomically."""
        from .io import save_network

        save_network(
            path,
            {
                "layer_sizes": list(self.layer_sizes) if "layers" not in self._config else self.n_inputs,
                "dtype": self._dtype.name,
                "seed": self._seed,
                "config": dict(self._config),
                "training_steps": self.training_steps,
            },
            self.params,
            self.state,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Network:
        """Reads a network written by :meth:`save`; never unpickles. The metadata is checked
        (format, version, a valid network) and ``params``' header against it before any array
        is read: a damaged or forged file raises ``ValueError``."""
        from .io import load_network

        def build(meta: dict[str, Any]) -> Network:
            net = cls(meta["layer_sizes"], dtype=meta["dtype"], seed=meta["seed"], **meta["config"])
            net.training_steps = meta.get("training_steps", 0)
            return net

        return load_network(path, build)

    # --- copying and pickling ----------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(
            layer_sizes=self.layer_sizes if "layers" not in self._config else self.n_inputs,
            dtype=self._dtype.name,
            seed=self._seed,
            config=dict(self._config),
            params=np.array(self.params),
            training_steps=self.training_steps,
        )
        if self.state.size:
            state["state"] = np.array(self.state)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        init = self.__init__  # type: ignore[misc]  # a subclass's own __init__, as pickle's protocol means
        init(state["layer_sizes"], dtype=state["dtype"], seed=state["seed"], **state["config"])
        for name, view in (("params", self.params), ("state", self.state)):
            values = np.asarray(state.get(name, np.zeros(0)), dtype=self._dtype)
            if values.shape != view.shape:
                raise ValueError(f"pickled {name} must have shape {view.shape}, got {values.shape}")
            view[:] = values
        self.training_steps = state.get("training_steps", 0)

    def __repr__(self) -> str:
        extras = "".join(
            f", {k}={self._config[k]!r}"
            for k in ("dropout", "input_noise", "max_norm", "precision")
            if k in self._config
        )
        if "layers" in self._config:
            return (
                f"Network({self.n_inputs}, layers={self.layers!r}, "
                f"output_activation={self.output_activation!r}, dtype={self._dtype.name!r}{extras})"
            )
        return (
            f"Network({list(self.layer_sizes)}, activation={self.activation!r}, "
            f"output_activation={self.output_activation!r}, dtype={self._dtype.name!r}{extras})"
        )
