"""Samples/s of data-parallel training over MPI, 1 and R ranks, one thread each.

    python benchmarks/mpi_scaling.py                      # the table of docs/distributed.md
    python benchmarks/mpi_scaling.py --ranks 1 2 4 --rounds 5

Runs ``mpiexec -n R python benchmarks/mpi_scaling.py --worker ...`` for each
configuration, several rounds interleaved (the machine may be shared: the
median of the rounds is reported, with the spread). Workloads are those of
benchmarks/compare.py: ``mnist`` (784-256-128-10 relu, softmax + log_loss,
SGD momentum 0.9, float32) and ``wide`` (1024-4096-4096-1024 relu, squared
error, float32, a few steps). Two conventions for R ranks:

- ``global``: the global batch is kept (each rank gets batch/R rows) — the
  same training as one process, done R ways;
- ``per-rank``: each rank keeps the batch (the global batch is R × batch) —
  the usual weak scaling of data-parallel training.

Each worker also times the allreduce alone (Allreduce of the gradient buffer
plus the division by R), so compute and communication can be told apart.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np

WORKLOADS = {
    # name: (layer sizes, output, loss, batch, steps per timed epoch at 1 rank)
    "mnist": ((784, 256, 128, 10), "softmax", "log_loss", 128, 128),
    "wide": ((1024, 4096, 4096, 1024), "identity", "squared_error", 512, 3),
}


def make_data(sizes, loss, n):
    """benchmarks/compare.py's data: Gaussian inputs, targets from a fixed random projection."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    proj = rng.standard_normal((sizes[0], sizes[-1]), dtype=np.float32)
    T = X @ (proj / np.float32(math.sqrt(sizes[0])))
    return (X, T.argmax(axis=1).astype(np.int64)) if loss == "log_loss" else (X, np.tanh(T))


def worker(args) -> None:
    from mpi4py import MPI

    import fastmlp
    from fastmlp.distributed import allreduce_hook, shard

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    sizes, out, loss, batch, steps = WORKLOADS[args.workload]
    local_batch = batch // size if args.convention == "global" else batch
    global_batch = local_batch * size
    X, y = make_data(sizes, loss, steps * global_batch)
    Xr, yr = shard(X, y, comm)
    net = fastmlp.Network(list(sizes), "relu", out, dtype="float32", seed=0)
    opt = fastmlp.SGD(0.01, momentum=0.9)
    use_comm = comm if size > 1 or args.with_comm else None

    def timed_epoch(Xs, ys) -> float:
        comm.Barrier()
        t0 = time.perf_counter()
        net.train_epoch(Xs, ys, loss, opt, local_batch, comm=use_comm)
        comm.Barrier()
        return time.perf_counter() - t0

    timed_epoch(Xr[:local_batch], yr[:local_batch])  # warm-up step: allocations, first allreduce
    seconds = [timed_epoch(Xr, yr) for _ in range(args.repeats)]

    hook = allreduce_hook(comm)
    grads = net.grads
    reduce_s = []
    for _ in range(max(3, args.repeats)):
        comm.Barrier()
        t0 = time.perf_counter()
        hook(grads, 0.0)
        reduce_s.append(time.perf_counter() - t0)
    if rank == 0:
        best = statistics.median(seconds)
        print(
            json.dumps(
                dict(
                    workload=args.workload,
                    convention=args.convention,
                    ranks=size,
                    local_batch=local_batch,
                    global_batch=global_batch,
                    steps=steps,
                    n_params=net.n_params,
                    seconds=seconds,
                    samples_per_s=steps * global_batch / best,
                    step_s=best / steps,
                    allreduce_s=statistics.median(reduce_s),
                    threads=fastmlp.get_num_threads(),
                )
            ),
            flush=True,
        )


def run(workload, convention, ranks, repeats) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    cmd = [
        mpiexec if os.path.exists(mpiexec) else "mpiexec",
        "-n",
        str(ranks),
        sys.executable,
        __file__,
        "--worker",
        "--workload",
        workload,
        "--convention",
        convention,
        "--repeats",
        str(repeats),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workload", choices=list(WORKLOADS), default="mnist")
    p.add_argument("--convention", choices=["global", "per-rank"], default="per-rank")
    p.add_argument("--with-comm", action="store_true", help="pass comm= even with one rank")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per process (median)")
    p.add_argument("--rounds", type=int, default=3, help="processes per configuration (median)")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    args = p.parse_args()
    if args.worker:
        return worker(args)

    results: dict[tuple, list[dict]] = {}
    for _ in range(args.rounds):  # interleaved, so a burst of load hits every configuration alike
        for w in args.workloads:
            for r in args.ranks:
                for c in ["per-rank"] if r == 1 else ["global", "per-rank"]:
                    res = run(w, c, r, args.repeats)
                    results.setdefault((w, c, r), []).append(res)
                    print(json.dumps(res), file=sys.stderr, flush=True)
    print(
        f"| workload | ranks | batch per rank | global batch | samples/s (median of {args.rounds}) "
        "| range | speed-up | step (ms) | allreduce alone (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for w in args.workloads:
        base = statistics.median(x["samples_per_s"] for x in results[(w, "per-rank", 1)])
        for (w2, _c, r), runs in results.items():
            if w2 != w:
                continue
            rates = [x["samples_per_s"] for x in runs]
            med = statistics.median(rates)
            x = runs[0]
            step = statistics.median(y["step_s"] for y in runs) * 1e3
            red = statistics.median(y["allreduce_s"] for y in runs) * 1e3
            print(
                f"| {w} ({x['n_params']:,} params) | {r} | {x['local_batch']} | {x['global_batch']} | "
                f"{med:,.0f} | {min(rates):,.0f}–{max(rates):,.0f} | {med / base:.2f}× | {step:.1f} | "
                f"{red:.2f} |"
            )


if __name__ == "__main__":
    main()
