"""R ranks with batch b == one process with batch R·b over the same samples in the same order."""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
import fastmlp.schedules
from conftest import need_ranks
from fastmlp import distributed
from helpers import TOL, make_data

M, B, EPOCHS = 45, 8, 3  # per-rank shard of 45 rows: 6 batches, the last one of 5 rows


def make_opt(kind: str):
    return fastmlp.SGD(0.05, momentum=0.9, nesterov=True) if kind == "sgd" else fastmlp.Adam(0.01)


def global_data(size: int, loss: str, dtype: str):
    """The same data on every rank: R shards of M rows, concatenated."""
    return make_data(np.random.default_rng(42), M * size, 6, 4, loss, dtype)


def one_process(size, X, Y, loss, out, dtype, opt, orders, l2):
    """The single-process run: batch R·B, orders[e] the global order of epoch e."""
    net = fastmlp.Network([6, 9, 4], "tanh", out, dtype=dtype, seed=7)
    optimizer = make_opt(opt)
    curve = [net.train_epoch(X, Y, loss, optimizer, B * size, l2=l2, order=o) for o in orders]
    return np.array(net.params), curve


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("loss,out", [("squared_error", "identity"), ("log_loss", "softmax")])
def test_ranks_equal_one_process_with_global_batch(comm, dtype, opt, loss, out):
    rank, size = comm.Get_rank(), comm.Get_size()
    X, Y = global_data(size, loss, dtype)
    Xr, Yr = distributed.shard(X, Y, comm)
    # Rank 0's seed and weights are broadcast: other ranks start elsewhere.
    net = fastmlp.Network([6, 9, 4], "tanh", out, dtype=dtype, seed=7 + 100 * rank)
    optimizer = make_opt(opt)
    curve = [net.train_epoch(Xr, Yr, loss, optimizer, B, l2=0.01, comm=comm) for _ in range(EPOCHS)]
    params = comm.allgather(np.array(net.params))
    curves = comm.allgather(curve)

    # The documented order: rank r's e-th permutation of default_rng([seed, r]).
    gens = [np.random.default_rng([7, r]) for r in range(size)]
    orders = [distributed.global_order([g.permutation(M) for g in gens], B) for _ in range(EPOCHS)]
    want, want_curve = one_process(size, X, Y, loss, out, dtype, opt, orders, 0.01)

    for r in range(1, size):  # the replicas are identical, bit for bit
        np.testing.assert_array_equal(params[r], params[0], err_msg=f"rank {r} differs from rank 0")
        assert curves[r] == curves[0]
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(params[0], want, **tol)
    np.testing.assert_allclose(curves[0], want_curve, **tol)
    assert not np.allclose(params[0], fastmlp.Network([6, 9, 4], "tanh", out, dtype=dtype, seed=7).params)


@pytest.mark.parametrize("shuffle", [True, False])
def test_explicit_local_orders_and_sequential(comm, shuffle):
    """order= is this rank's local order; shuffle=False visits the shard in sequence."""
    rank, size = comm.Get_rank(), comm.Get_size()
    X, Y = global_data(size, "squared_error", "float64")
    Xr, Yr = distributed.shard(X, Y, comm)
    rng = np.random.default_rng(3)
    local = [[rng.permutation(M) for _ in range(size)] for _ in range(2)]  # the same on every rank
    net = fastmlp.Network([6, 9, 4], "tanh", dtype="float64", seed=7)
    opt = make_opt("sgd")
    for e in range(2):
        order = local[e][rank] if shuffle else None
        net.train_epoch(Xr, Yr, "squared_error", opt, B, shuffle=False, l2=0.01, order=order, comm=comm)
    params = comm.allgather(np.array(net.params))

    seq = [np.arange(M)] * size
    orders = [distributed.global_order(local[e] if shuffle else seq, B) for e in range(2)]
    want, _ = one_process(size, X, Y, "squared_error", "identity", "float64", "sgd", orders, 0.01)
    np.testing.assert_allclose(params[0], want, **TOL["float64"])
    np.testing.assert_array_equal(params[-1], params[0])


def test_penalties_clipping_and_schedule_act_on_the_global_batch(comm):
    """L1 and L2 divide by R·b, clipping and the schedule see the averaged gradient: as one process."""
    size = comm.Get_size()
    X, Y = global_data(size, "squared_error", "float64")
    Xr, Yr = distributed.shard(X, Y, comm)
    sched = fastmlp.schedules.Schedule("cosine", 0.05, total_epochs=EPOCHS, warmup_epochs=1.0)
    extras = dict(l2=0.01, l1=0.002, clip_norm=0.05, schedule=sched)
    net = fastmlp.Network([6, 9, 4], "tanh", dtype="float64", seed=7)
    opt = make_opt("sgd")
    for e in range(EPOCHS):
        net.train_epoch(Xr, Yr, "squared_error", opt, B, epoch=float(e), comm=comm, **extras)
    params = comm.allgather(np.array(net.params))

    gens = [np.random.default_rng([7, r]) for r in range(size)]
    ref = fastmlp.Network([6, 9, 4], "tanh", dtype="float64", seed=7)
    ref_opt = make_opt("sgd")
    for e in range(EPOCHS):
        order = distributed.global_order([g.permutation(M) for g in gens], B)
        ref.train_epoch(X, Y, "squared_error", ref_opt, B * size, order=order, epoch=float(e), **extras)
    np.testing.assert_array_equal(params[-1], params[0])
    np.testing.assert_allclose(params[0], ref.params, **TOL["float64"])
    plain = fastmlp.Network([6, 9, 4], "tanh", dtype="float64", seed=7)
    plain.train_epoch(X, Y, "squared_error", make_opt("sgd"), B * size, order=order)
    assert not np.allclose(ref.params, plain.params, rtol=1e-3)  # the extras did act


def test_allreduce_hook_is_the_same_as_comm(comm):
    """The public hook with world_size=R, given explicit orders, equals comm=."""
    rank, size = comm.Get_rank(), comm.Get_size()
    X, Y = global_data(size, "squared_error", "float64")
    Xr, Yr = distributed.shard(X, Y, comm)
    order = np.random.default_rng(rank).permutation(M)
    a = fastmlp.Network([6, 9, 4], "tanh", dtype="float64", seed=7)
    b = fastmlp.Network([6, 9, 4], "tanh", dtype="float64", seed=7)
    la = a.train_epoch(Xr, Yr, "squared_error", make_opt("sgd"), B, l2=0.01, order=order, comm=comm)
    lb = b.train_epoch(
        Xr,
        Yr,
        "squared_error",
        make_opt("sgd"),
        B,
        l2=0.01,
        order=order,
        gradient_hook=distributed.allreduce_hook(comm),
        world_size=size,
    )
    lb = comm.allreduce(lb) / size
    # comm= sums W_r/W · g_r (weighted), the hook Σ g_r / R: equal up to rounding (bit for bit when R is 2).
    same = comm.allgather(bool(np.allclose(a.params, b.params, rtol=1e-13, atol=1e-15)))
    assert all(same)
    assert la == pytest.approx(lb, rel=1e-12)


def test_shards_are_equal_disjoint_and_reseedable(comm):
    rank, size = comm.Get_rank(), comm.Get_size()
    n = 10 * size + (size - 1)  # a remainder that cannot be shared equally
    X = np.arange(n, dtype=np.float64)[:, None] * np.ones((1, 3))
    y = np.arange(n)
    mine = distributed.shard(X, y, comm)
    views = comm.allgather(np.shares_memory(mine[0], X) and np.shares_memory(mine[1], y))
    parts = comm.allgather(mine)
    reseeded = comm.allgather(distributed.shard(X, y, comm, seed=5)[1])
    assert all(p[0].shape == (10, 3) and np.array_equal(p[0][:, 0], p[1]) for p in parts)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), np.arange(10 * size))
    assert np.unique(np.concatenate(reseeded)).size == 10 * size
    assert all(views)  # contiguous shards are views, not copies
    pd = pytest.importorskip("pandas")  # in the "test" extra
    frame_part = distributed.shard(pd.DataFrame(X), pd.Series(y), comm, seed=5)  # rows by position, not labels
    np.testing.assert_array_equal(frame_part[0].to_numpy(), distributed.shard(X, y, comm, seed=5)[0])
    np.testing.assert_array_equal(frame_part[1].to_numpy(), reseeded[rank])
    np.testing.assert_array_equal(parts[rank][1], mine[1])


def test_broadcast_parameters(comm):
    rank = comm.Get_rank()
    net = fastmlp.Network([3, 4, 2], dtype="float32", seed=rank)
    distributed.broadcast_parameters(net, comm, root=comm.Get_size() - 1)
    got = comm.allgather(np.array(net.params))
    want = fastmlp.Network([3, 4, 2], dtype="float32", seed=comm.Get_size() - 1).params
    assert all(np.array_equal(p, want) for p in got)


# --------------------------------------------------------------------------- bad input


def _train(net, Xr, Yr, comm, **kw):
    args = dict(loss="squared_error", optimizer=make_opt("sgd"), batch_size=B, comm=comm)
    args.update(kw)
    return net.train_epoch(Xr, Yr, **args)


def _setup(comm):
    X, Y = global_data(comm.Get_size(), "squared_error", "float64")
    Xr, Yr = distributed.shard(X, Y, comm)
    return fastmlp.Network([6, 9, 4], "tanh", dtype="float64", seed=7), Xr, Yr


def test_bad_input_on_one_rank_raises_on_every_rank(comm):
    """The last rank's mistake: every rank raises, nothing changes, the next call works."""
    net, Xr, Yr = _setup(comm)
    last = comm.Get_rank() == comm.Get_size() - 1
    before = np.array(net.params)
    with pytest.raises(ValueError, match="loss must be one of"):
        _train(net, Xr, Yr, comm, loss="hinge" if last else "squared_error")
    with pytest.raises(TypeError, match="batch_size must be an int"):
        _train(net, Xr, Yr, comm, batch_size=2.5 if last else B)
    with pytest.raises(ValueError, match=r"X must have 6 columns|X.*6"):
        _train(net, Xr[:, :5] if last else Xr, Yr, comm)
    np.testing.assert_array_equal(net.params, before)
    assert np.isfinite(_train(net, Xr, Yr, comm))  # still in step: no message was left over
    with pytest.raises(TypeError, match="comm must be an mpi4py intracommunicator"):
        _train(net, Xr, Yr, "COMM_WORLD")
    with pytest.raises(ValueError, match="gradient_hook must be None"):
        _train(net, Xr, Yr, comm, gradient_hook=lambda g, v: v)
    with pytest.raises(ValueError, match="world_size"):
        _train(net, Xr, Yr, comm, world_size=comm.Get_size() + 1)
    with pytest.raises(ValueError, match="sample_weight"):  # one rank's bad weights: every rank raises
        _train(net, Xr, Yr, comm, sample_weight=-np.ones(len(Xr)) if last else np.ones(len(Xr)))


def test_disagreement_between_ranks_is_named(comm):
    need_ranks(comm, 2)
    net, Xr, Yr = _setup(comm)
    last = comm.Get_rank() == comm.Get_size() - 1
    with pytest.raises(ValueError, match="X: every rank must hold the same number of samples"):
        _train(net, Xr[:-1] if last else Xr, Yr[:-1] if last else Yr, comm)
    with pytest.raises(ValueError, match=r"batch_size must be the same on every rank; got \[8, .*9\]"):
        _train(net, Xr, Yr, comm, batch_size=9 if last else B)
    with pytest.raises(ValueError, match="l2 must be the same"):
        _train(net, Xr, Yr, comm, l2=0.1 if last else 0.0)
    with pytest.raises(ValueError, match="clip_norm must be the same"):
        _train(net, Xr, Yr, comm, clip_norm=1.0 if last else None)
    with pytest.raises(ValueError, match="schedule must be the same"):
        _train(net, Xr, Yr, comm, schedule=fastmlp.schedules.Schedule("step", 0.1) if last else None)
    with pytest.raises(ValueError, match="optimizer: the optimizer must be the same"):
        _train(net, Xr, Yr, comm, optimizer=fastmlp.SGD(0.5) if last else make_opt("sgd"))
    other = fastmlp.Network([6, 5, 4], "tanh", dtype="float64", seed=7)
    with pytest.raises(ValueError, match="network: the network must have the same layer_sizes"):
        _train(other if last else net, Xr, Yr, comm)
    assert np.isfinite(_train(net, Xr, Yr, comm))


def test_sparse_shards_train_like_dense(comm):
    """CSR shards (the C++ sparse path, the same hook) give the dense shards' parameters."""
    sparse = pytest.importorskip("scipy.sparse")  # scipy is in the "test" extra
    size = comm.Get_size()
    X, Y = global_data(size, "squared_error", "float64")
    X[np.abs(X) < 0.8] = 0.0  # about 60 % zeros
    Xr, Yr = distributed.shard(X, Y, comm)
    Sr, _ = distributed.shard(sparse.csr_matrix(X), Y, comm)
    assert sparse.issparse(Sr) and Sr.shape == Xr.shape
    nets = []
    for data in (Xr, Sr):
        net = fastmlp.Network([6, 9, 4], "tanh", dtype="float64", seed=7)
        opt = make_opt("sgd")
        for _ in range(2):
            net.train_epoch(data, Yr, "squared_error", opt, B, l2=0.01, comm=comm)
        nets.append(np.array(net.params))
    params = comm.allgather(nets)
    np.testing.assert_allclose(params[0][1], params[0][0], **TOL["float64"])
    np.testing.assert_array_equal(params[-1][1], params[0][1])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dropout_ranks_draw_the_global_batch_rows(comm, dtype):
    """With dropout, input noise and max-norm, rank r's rows are rows [r·b, (r+1)·b) of each global
    batch, masks included: R ranks still equal one process with batch R·b, and no two ranks share
    a mask."""
    size = comm.Get_size()
    need_ranks(comm, 2)
    X, Y = global_data(size, "log_loss", dtype)
    Xr, Yr = distributed.shard(X, Y, comm)
    kw = dict(dtype=dtype, seed=7, dropout=[0.2, 0.5], input_noise=0.1, max_norm=1.0)
    net = fastmlp.Network([6, 9, 4], "relu", "softmax", **kw)
    opt = make_opt("adam")
    curve = [net.train_epoch(Xr, Yr, "log_loss", opt, B, comm=comm) for _ in range(2)]
    params = comm.allgather(np.array(net.params))
    curves = comm.allgather(curve)

    gens = [np.random.default_rng([7, r]) for r in range(size)]
    orders = [distributed.global_order([g.permutation(M) for g in gens], B) for _ in range(2)]
    one = fastmlp.Network([6, 9, 4], "relu", "softmax", **kw)
    one_opt = make_opt("adam")
    want_curve = [one.train_epoch(X, Y, "log_loss", one_opt, B * size, order=o) for o in orders]
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_array_equal(params[-1], params[0])
    np.testing.assert_allclose(params[0], np.array(one.params), **tol)
    np.testing.assert_allclose(curves[0], want_curve, **tol)
    assert net.training_steps == one.training_steps
