r"""Data-parallel training over MPI (optional extra ``mpi``: ``mpi4py``, ``mpich``).

Each of the :math:`R` ranks (processes) holds a replica of the network and a
shard of :math:`m` samples, the same :math:`m` on every rank. An epoch on
rank :math:`r` visits its shard in a local order :math:`\pi_r` in batches of
:math:`b` rows; the :math:`k`-th batches of all ranks together form the
:math:`k`-th *global* batch :math:`B_k` of :math:`R b` rows. After each
batch's backward pass the flat gradient buffer (a NumPy view of C++ memory)
is averaged in place with one ``Allreduce``,

.. math::
    g \leftarrow \frac1R \sum_{r=0}^{R-1} g_r
      = \frac1R \sum_r \frac1{b} \sum_{i \in B_k^{(r)}} \nabla \ell_i
      = \frac1{R b} \sum_{i \in B_k} \nabla \ell_i ,

which is the gradient of the mean loss over the global batch; then every
rank adds the same L2 term :math:`l_2 W / (R b)` and takes the same optimizer
step, so the replicas stay identical. Training on :math:`R` ranks with batch
:math:`b` is therefore training on one process with batch :math:`R b` over the
concatenated shards in the order :func:`global_order` gives (to rounding: the
sums are added in a different order).

The local orders are a function of rank 0's Network seed alone: in its
:math:`e`-th epoch with a communicator, rank :math:`r` visits its shard in the
order of the :math:`e`-th ``permutation(m)`` drawn from
``numpy.random.default_rng([seed, r])``. Rank 0's parameters and seed are
broadcast at the start of every epoch (one ``Bcast`` of the parameter buffer;
the initial weights then need not agree).

Use it through ``Network.train_epoch(..., comm=MPI.COMM_WORLD)`` and run the
script with ``mpiexec -n 4 python script.py``; see ``docs/distributed.md``.
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from . import data as _data
from ._validation import check_int, check_seed
from .epoch import epoch_options, make_regularization

__all__ = [
    "CollectiveTimeout",
    "MPIEpoch",
    "RankFailed",
    "agree",
    "allreduce",
    "allreduce_hook",
    "broadcast_parameters",
    "check_comm",
    "get_collective_timeout",
    "global_order",
    "set_collective_timeout",
    "shard",
    "shard_indices",
    "train_epoch",
    "world",
]


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError(
            "fastmlp.distributed needs mpi4py and an MPI library: "
            "pip install mpi4py mpich (the mpich wheel, where no system MPI is installed)"
        ) from e
    return MPI


def check_comm(comm: Any) -> Any:
    """`comm` itself when it is an mpi4py intracommunicator; else TypeError."""
    MPI = _mpi()
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"comm must be an mpi4py intracommunicator (e.g. MPI.COMM_WORLD), got {type(comm).__name__}")
    return comm


def world() -> Any:
    """``MPI.COMM_WORLD`` (ImportError naming the ``mpi`` extra without mpi4py)."""
    return _mpi().COMM_WORLD


# --------------------------------------------------------------------------- data


def shard_indices(n_samples: int, rank: int, size: int, seed: int | None = None) -> np.ndarray:
    r"""The sample indices of rank `rank`'s shard among `size` equal shards.

    Each shard has :math:`m = \lfloor n / R \rfloor` samples; rank :math:`r`
    gets positions :math:`[r m, (r+1) m)` of ``arange(n)``, or of
    ``default_rng(seed).permutation(n)`` when a seed is given (the same on
    every rank, so the shards are disjoint). The :math:`n - R m < R` samples
    left over are not used (with a new seed each epoch, different ones).
    """
    n = check_int("n_samples", n_samples, minimum=1)
    size = check_int("size", size, minimum=1)
    rank = check_int("rank", rank, minimum=0, maximum=size - 1)
    if n < size:
        raise ValueError(f"n_samples ({n}) must be at least the number of ranks ({size})")
    m = n // size
    if seed is None:
        return np.arange(rank * m, (rank + 1) * m, dtype=np.int64)
    perm = np.random.default_rng(check_seed(seed)).permutation(n)
    return np.sort(perm[rank * m : (rank + 1) * m]).astype(np.int64)


def shard(X: Any, y: Any, comm: Any = None, *, seed: int | None = None) -> tuple[Any, Any]:
    """This rank's shard ``(X[idx], y[idx])`` of data that every rank holds.

    ``idx = shard_indices(n, comm.rank, comm.size, seed)``: equal,
    disjoint shards (contiguous blocks, views of X and y, when `seed` is
    None). X may be a NumPy array, a scipy.sparse matrix, a pandas object or
    a sequence. `comm` defaults to ``MPI.COMM_WORLD``. Calling it with a new seed
    every epoch re-deals the samples among the ranks: a global shuffle.

    X larger than memory (:mod:`fastmlp.data`) is never read whole: a memmap's shard is a
    memmap slice (seed None) or a :class:`fastmlp.data.Rows` source of its rows (a seed); a list of
    ``.npy`` paths or a source gives a ``Rows`` source. A source shard's values are checked
    here (one streamed pass over this rank's rows).
    """
    comm = check_comm(_mpi().COMM_WORLD if comm is None else comm)

    def n_rows(name: str, a: Any) -> int:
        shape = getattr(a, "shape", None)  # arrays, scipy.sparse matrices, DataFrames
        if shape is not None and len(shape) >= 1:
            return int(shape[0])
        if hasattr(a, "__len__") and hasattr(a, "__getitem__"):
            return len(a)
        raise TypeError(f"{name} must be an array-like with rows, got {type(a).__name__}")

    if _data.is_out_of_core(X) and not isinstance(X, np.ndarray):  # .npy paths: a source of their rows
        X = _data.as_source(X, check=False)
    n = n_rows("X", X)
    if n_rows("y", y) != n:
        raise ValueError(f"y must have one row per sample of X ({n}), got {n_rows('y', y)}")
    idx = shard_indices(n, comm.Get_rank(), comm.Get_size(), seed)
    if seed is None:
        rows = slice(int(idx[0]), int(idx[-1]) + 1)
        if isinstance(X, _data.RowSource):
            X_mine = X[rows]
            X_mine.check()
            return X_mine, y[rows]
        return X[rows], y[rows]  # a memmap's slice: a memmap, checked when it is trained on

    def take(a: Any) -> Any:
        if _data.is_out_of_core(a):  # a memmap or a source: this rank's rows, read once to check them
            mine = _data.as_source(a, check=False)[idx]
            mine.check()
            return mine
        if hasattr(a, "iloc"):  # pandas: rows by position
            return a.iloc[idx]
        return a[idx] if hasattr(a, "shape") else np.asarray(a)[idx]

    return take(X), take(y)


def global_order(local_orders: Sequence[Any], batch_size: int) -> np.ndarray:
    r"""The one-process visiting order equal to `R` ranks' local orders.

    Rank :math:`r`'s shard is taken to be rows :math:`[r m, (r+1) m)` of the
    concatenated data. Global batch :math:`k` is rank 0's :math:`k`-th local
    batch, then rank 1's, ...; so one process training with batch
    ``R * batch_size`` in this order takes the same steps as the `R` ranks
    with ``batch_size`` each.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    orders = [np.asarray(o) for o in local_orders]
    if not orders:
        raise ValueError("local_orders must hold one order per rank, got none")
    m = orders[0].shape[0] if orders[0].ndim == 1 else -1
    for r, o in enumerate(orders):
        if o.ndim != 1 or o.shape[0] != m or o.dtype.kind not in "iu":
            raise ValueError(
                f"local_orders[{r}] must be a 1-D integer array of {m} indices like "
                f"local_orders[0], got dtype {o.dtype} and shape {o.shape}"
            )
    shifted = [o.astype(np.int64) + r * m for r, o in enumerate(orders)]
    return np.concatenate([o[k : k + batch_size] for k in range(0, m, batch_size) for o in shifted])


# --------------------------------------------------------------------------- collectives


class RankFailed(RuntimeError):
    """Raised on every rank when another rank failed mid-epoch (its error is in the message)."""


class CollectiveTimeout(RankFailed):
    """A collective call that the other ranks did not join within the collective timeout
    (:func:`set_collective_timeout`): one of them died, hangs, or is slower than the timeout.
    The communicator cannot be used after it (a collective stays pending): end the program."""


def _timeout_from_env() -> float | None:
    value = os.environ.get("FASTMLP_MPI_TIMEOUT", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"FASTMLP_MPI_TIMEOUT must be a number of seconds > 0, got {value!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"FASTMLP_MPI_TIMEOUT must be a number of seconds > 0, got {value!r}")
    return seconds


_timeout: float | None = _timeout_from_env()


def set_collective_timeout(seconds: float | None) -> None:
    """How long a rank waits in a collective of data-parallel training before it raises
    :class:`CollectiveTimeout` (None: forever, the default; the environment variable
    ``FASTMLP_MPI_TIMEOUT`` sets it at import).

    With a timeout, every collective fastmlp calls (the parameters' broadcast, each step's
    allreduces, the agreements on arguments and on stopping, L-BFGS's sums) is non-blocking
    and waited for with a deadline, so a rank whose peer died or hangs stops with an error
    naming the collective instead of waiting forever. Set it to well above the slowest step
    (an allreduce waits for the slowest rank's compute). Set the same value on every rank.
    """
    global _timeout
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
            raise ValueError(f"seconds must be a number > 0 or None, got {seconds!r}")
        seconds = float(seconds)
    _timeout = seconds


def get_collective_timeout() -> float | None:
    """The collective timeout in seconds (None: none); see :func:`set_collective_timeout`."""
    return _timeout


def _wait(request: Any, what: str) -> None:
    """Waits for a non-blocking collective, at most the collective timeout."""
    if _timeout is None:
        request.Wait()
        return
    deadline = time.monotonic() + _timeout
    spins = 0
    while not request.Test():
        spins += 1
        if spins > 1000:  # past the first ~millisecond: leave the core to the other ranks
            time.sleep(1e-4)
        if time.monotonic() > deadline:
            _abort_at_exit()
            raise CollectiveTimeout(
                f"data-parallel training stopped: the other ranks did not join {what} within "
                f"{_timeout:g} s (the collective timeout, FASTMLP_MPI_TIMEOUT): a rank died, hangs, or is "
                "slower than the timeout; the communicator cannot be used any more (at exit, this process calls "
                "MPI_Abort, which ends the job)"
            )


_aborting = False


def _abort_at_exit() -> None:
    """After a timeout a collective stays pending, and MPI_Finalize (at the interpreter's exit)
    would wait for it forever: at exit, ``MPI_Abort`` instead, which ends every rank's process
    (the launcher cleans up the job). Registered once; Python's exit handlers run before mpi4py
    finalizes MPI."""
    global _aborting
    if not _aborting:
        _aborting = True
        atexit.register(lambda: _mpi().COMM_WORLD.Abort(1))


def _rendezvous(comm: Any, what: str) -> None:
    """With a collective timeout: every rank reaches this point within it (an ``Ibarrier``), so
    that the blocking collective after it cannot wait forever. Without one: nothing."""
    if _timeout is not None and comm.Get_size() > 1:
        _wait(comm.Ibarrier(), what)


def allreduce(comm: Any, send: Any, recv: Any, what: str = "an allreduce") -> None:
    """``comm.Allreduce(send, recv, op=SUM)`` (`send` may be ``MPI.IN_PLACE``), within the
    collective timeout when one is set."""
    MPI = _mpi()
    if _timeout is None or comm.Get_size() == 1:
        comm.Allreduce(send, recv, op=MPI.SUM)
    else:
        _wait(comm.Iallreduce(send, recv, op=MPI.SUM), what)


def _bcast_array(comm: Any, a: np.ndarray, what: str, root: int = 0) -> None:
    if _timeout is None or comm.Get_size() == 1:
        comm.Bcast(a, root=root)
    else:
        _wait(comm.Ibcast(a, root=root), what)


def broadcast_parameters(net: Any, comm: Any, root: int = 0) -> None:
    """Overwrites every rank's parameters with rank `root`'s, in place (one ``Bcast``)."""
    comm = check_comm(comm)
    root = check_int("root", root, minimum=0, maximum=comm.Get_size() - 1)
    _bcast_array(comm, net.params, f"the broadcast of rank {root}'s parameters", root)


def allreduce_hook(comm: Any) -> Callable[[np.ndarray, Any], Any]:
    r"""A ``gradient_hook`` for :meth:`fastmlp.Network.train_epoch` that averages the gradients.

    ``hook(grads, loss)`` sums `grads` over the ranks in place with one
    ``Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)`` and divides by :math:`R`:
    :math:`g \leftarrow \frac1R\sum_r g_r`. The loss is returned unchanged
    (:func:`train_epoch` averages the epoch's loss once at the end). Pass
    ``world_size=comm.size`` with it.
    """
    comm = check_comm(comm)
    MPI = _mpi()
    size = comm.Get_size()

    def hook(grads: np.ndarray, loss: Any) -> Any:
        allreduce(comm, MPI.IN_PLACE, grads, "a step's allreduce of the gradients")
        grads /= size
        return loss

    return hook


def _optimizer_config(optimizer: Any) -> tuple[Any, ...]:
    if not callable(getattr(optimizer, "bind", None)):  # not a fastmlp optimizer (duck-typed)
        return (type(optimizer).__name__,)
    public = sorted((k, v) for k, v in vars(optimizer).items() if not k.startswith("_"))
    return (type(optimizer).__name__, optimizer.lr, tuple(public))


_EXPLAIN = {
    "X": "every rank must hold the same number of samples (equal shards; see fastmlp.distributed.shard)",
    "order": "order must be given on every rank or on none",
    "network": "the network must have the same layer_sizes, dtype, activations, dropout, input_noise and max_norm "
    "on every rank (and, with dropout or input noise, the same seed: it keys the masks)",
    "optimizer": "the optimizer must be the same kind with the same hyperparameters on every rank",
}


def agree(
    comm: Any,
    check: Callable[[], dict[str, Any]] | None = None,
    *,
    error: Exception | None = None,
    explain: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Checks on every rank, then raises on every rank or on none (a collective call).

    ``check()`` runs here and returns this rank's signature (values that must
    be equal on every rank) or raises ``TypeError``/``ValueError``; `error`
    reports a failure that already happened. One ``allgather`` later, if any
    rank failed, every rank raises (its own error, else ``"on rank r: ..."``
    of the same type); if a signature value differs between ranks, every rank
    raises ``ValueError`` naming it (``explain[key]`` says why); keys that
    start with ``_`` are gathered without being compared. Returns all ranks'
    signatures.
    """
    signature: dict[str, Any] = {}
    if error is None and check is not None:
        try:
            signature = check()
        except (TypeError, ValueError) as e:
            error = e
    _rendezvous(comm, "the check of the arguments")
    reports = comm.allgather((None if error is None else (type(error).__name__, str(error)), signature))
    if error is not None:
        raise error
    failed = [(r, rep[0]) for r, rep in enumerate(reports) if rep[0] is not None]
    if failed:
        r, (kind, message) = failed[0]
        raise (TypeError if kind == "TypeError" else ValueError)(f"on rank {r}: {message}")
    why = {**_EXPLAIN, **(explain or {})}
    for key in (k for k in signature if not k.startswith("_")):  # "_key": gathered, not compared
        values = [rep[1].get(key) for rep in reports]
        if any(v != values[0] for v in values):
            reason = why.get(key, f"{key} must be the same on every rank")
            raise ValueError(f"{key}: {reason}; got {values} on ranks 0..{comm.Get_size() - 1}")
    return [rep[1] for rep in reports]


class MPIEpoch:
    r"""The MPI strategy of an epoch: ``net.run_epoch(request, hook=MPIEpoch(comm))``.

    On a request checked and agreed on (local ``rows.order``): before the epoch, rank 0's
    parameters are broadcast and each batch's gradients are set to be combined over the ranks
    by :meth:`reduce`; after it, the loss is averaged over the ranks. :meth:`any_stop` ORs a
    stop flag over the ranks (the estimators' epoch loop, :mod:`fastmlp._training`).

    **Errors.** Every collective of an epoch (:meth:`reduce`'s first ``Allreduce`` and
    :meth:`after_epoch`'s) carries a failure count. A rank whose epoch raises
    (:meth:`failed`, called by :meth:`fastmlp.Network.run_epoch`) sends a failure in the
    collective the others are waiting in, so every other rank raises :class:`RankFailed`
    naming it and its error instead of waiting forever.
    """

    def __init__(self, comm: Any) -> None:
        self.comm = check_comm(comm)
        self.size = comm.Get_size()
        self._sums = np.zeros(3, dtype=np.float64)  # [Σ loss·W, Σ W, failures]

    def before_epoch(self, net: Any, request: Any) -> None:
        if self.size > 1:
            _bcast_array(self.comm, net.params, "the broadcast of rank 0's parameters")
        request.options.shuffle = False
        request.options.world_size = self.size
        request.options.rank = self.comm.Get_rank()  # its rows' place in each global batch (dropout masks)
        request.options.weighted_hook = True
        request.gradient_hook = self.reduce

    def _allreduce_checked(self, a: float, b: float) -> tuple[float, float]:
        """``Allreduce`` of (a, b) with a failure count of 0; RankFailed if another rank failed."""
        sums = self._sums
        sums[0], sums[1], sums[2] = a, b, 0.0
        allreduce(self.comm, _mpi().IN_PLACE, sums, "a step's allreduce of the loss and weight")
        if sums[2] > 0:
            reports = self.comm.allgather(None)
            failed = [(r, m) for r, m in enumerate(reports) if m is not None]
            where = ", ".join(f"rank {r} failed with {m}" for r, m in failed)
            raise RankFailed(f"data-parallel training stopped: {where}; this rank stopped with it")
        return float(sums[0]), float(sums[1])

    def reduce(self, grads: np.ndarray, loss: float, weight: float) -> tuple[float, float]:
        r"""The gradient hook: this rank's batch (`grads` and `loss` its means over its weight
        sum :math:`W_r`, `weight` = :math:`W_r`) made the global batch's, in place:
        :math:`g \leftarrow \sum_r W_r g_r / W`, loss :math:`\sum_r W_r L_r / W` with
        :math:`W = \sum_r W_r` — the weighted mean over the global batch, as one process
        computes it. Two ``Allreduce``: (loss·W_r, W_r, failures), then the scaled gradients.
        Returns (loss, W); W = 0 (no weight anywhere) skips the step on every rank."""
        loss_sum, total = self._allreduce_checked(loss * weight, weight)
        if not total > 0.0:
            return 0.0, 0.0
        if self.size > 1:
            grads *= weight / total
            allreduce(self.comm, _mpi().IN_PLACE, grads, "a step's allreduce of the gradients")
        return loss_sum / total, total

    def after_epoch(self, net: Any, request: Any, loss: float) -> float:
        total, _ = self._allreduce_checked(loss, 0.0)
        return total / self.size

    def failed(self, error: BaseException) -> None:
        """This rank's epoch raised `error`: tell the others (in the collective they wait in)."""
        if isinstance(error, RankFailed) or self.size == 1:
            return
        sums = self._sums
        sums[0], sums[1], sums[2] = 0.0, 0.0, 1.0
        try:
            allreduce(self.comm, _mpi().IN_PLACE, sums, "the report of this rank's failure")
        except CollectiveTimeout as e:
            raise e from error
        self.comm.allgather(f"{type(error).__name__}: {error}")

    def any_stop(self, stop: bool, error: BaseException | None = None) -> bool:
        """Whether any rank asks to stop (a collective call): one rank's callback stops them all.
        With `error` (this rank's callbacks raised), every rank raises: this one `error`, the
        others :class:`RankFailed` naming it."""
        _rendezvous(self.comm, "the end-of-epoch agreement on stopping")
        reports = self.comm.allgather((bool(stop), None if error is None else f"{type(error).__name__}: {error}"))
        if error is not None:
            raise error
        failed = [(r, m) for r, (_, m) in enumerate(reports) if m is not None]
        if failed:
            where = ", ".join(f"rank {r} failed with {m}" for r, m in failed)
            raise RankFailed(f"data-parallel training stopped: {where}; this rank stopped with it")
        return any(s for s, _ in reports)


# Each network's shuffling generator for its ranks' local orders, keyed (seed, rank): kept here,
# not on the network, so that fastmlp.Network knows nothing of MPI.
_SHUFFLERS: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()


def _shuffled_order(net: Any, seed: int, rank: int, m: int) -> np.ndarray:
    """The next local order from rank `rank`'s generator ``default_rng([seed, rank])``."""
    key = (seed, rank)
    state = _SHUFFLERS.get(net)
    if state is None or state[0] != key:
        state = (key, np.random.default_rng([seed, rank]))
        _SHUFFLERS[net] = state
    return state[1].permutation(m).astype(np.int64)


def train_epoch(
    net: Any,
    X: Any,
    y: Any,
    loss: str,
    optimizer: Any,
    batch_size: int = 200,
    shuffle: bool = True,
    *,
    comm: Any,
    l2: float = 0.0,
    l1: float = 0.0,
    clip_value: float | None = None,
    clip_norm: float | None = None,
    order: Any = None,
    sample_weight: Any = None,
    schedule: Any = None,
    epoch: float = 0.0,
    gradient_hook: Any = None,
    world_size: int = 1,
) -> float:
    r"""One data-parallel epoch: :meth:`fastmlp.Network.train_epoch` with ``comm=``.

    A collective call: every rank of `comm` must call it, with its own shard
    X, y (the same number of rows :math:`m` everywhere) and the same
    `batch_size`, `loss`, penalties, clipping, schedule, `shuffle`, network
    shape and optimizer.

    1. The arguments are checked on every rank and compared across ranks
       (:func:`agree`); if any rank's are wrong, every rank raises (the same
       ``ValueError`` or ``TypeError``, naming the argument), so no rank is
       left waiting.
    2. Rank 0's parameters are broadcast.
    3. The shard is visited in `order` (this rank's local order, indices into
       its X) if given, else in a permutation from ``default_rng([seed, r])``
       (``shuffle=True``, `seed` being rank 0's Network seed), else in
       sequence; each batch's gradients are averaged over the ranks
       (:func:`allreduce_hook`), the penalties divide by :math:`R b`, clipping
       and the schedule act on the averaged gradient, and every rank takes the
       same step.

    With `sample_weight` (this rank's weights), each global batch is the
    weighted mean over all its rows, :math:`\sum_r W_r g_r / \sum_r W_r`
    (:meth:`MPIEpoch.reduce`), as one process computes it; `gradient_hook`
    must be None (the communicator is the hook).

    Returns
    -------
    float
        The epoch's loss over all :math:`R m` samples,
        :math:`\frac1R\sum_r \frac1m \sum_b n_b L_b^{(r)}` — the value one
        process with batch :math:`R b` would return.
    """
    comm = check_comm(comm)
    size = comm.Get_size()
    checked: dict[str, Any] = {}

    def check() -> dict[str, Any]:
        if gradient_hook is not None:
            raise ValueError("gradient_hook must be None when comm is given (comm's allreduce is the hook)")
        if check_int("world_size", world_size, minimum=1) not in (1, size):
            raise ValueError(
                f"world_size must be left at 1 or equal comm's size ({size}) when comm is given, got {world_size}"
            )
        options = epoch_options(
            batch_size,
            shuffle,
            epoch=epoch,
            schedule=schedule,
            regularization=make_regularization(l2=l2, l1=l1, clip_value=clip_value, clip_norm=clip_norm),
        )
        request = checked["request"] = net.prepare_epoch(
            X, y, loss, optimizer, options, order=order, sample_weight=sample_weight
        )
        return {
            "X": request.n_samples,
            "batch_size": options.batch_size,
            "loss": loss,
            "l2": l2,
            "l1": l1,
            "clip_value": clip_value,
            "clip_norm": clip_norm,
            "schedule": repr(schedule),
            "epoch": float(epoch),
            "shuffle": options.shuffle,
            "order": order is not None,
            "network": (
                net.layer_sizes,
                net.dtype.name,
                net.activation,
                net.output_activation,
                net.dropout,
                net.input_noise,
                net.max_norm,
                net.seed if any(net.dropout) or net.input_noise else None,
            ),
            "optimizer": _optimizer_config(optimizer),
        }

    agree(comm, check)
    seed = comm.bcast(net.seed, root=0)  # one seed: rank 0's
    request = checked["request"]
    if request.rows.order is None and request.options.shuffle:
        request.rows.order = _shuffled_order(net, seed, comm.Get_rank(), request.n_samples)
    return net.run_epoch(request, hook=MPIEpoch(comm))
