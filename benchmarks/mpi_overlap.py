"""What the gradient allreduce costs in a data-parallel step, and whether it can hide behind compute.

    OMP_NUM_THREADS=1 mpiexec -n 2 python benchmarks/mpi_overlap.py
    OMP_NUM_THREADS=1 MPIR_CVAR_ASYNC_PROGRESS=1 mpiexec -n 2 python benchmarks/mpi_overlap.py  # + a progress thread

Measures, on every rank (rank 0 prints the medians):

1. **latency**: ``Allreduce`` of one float64 (1,000 calls);
2. **bandwidth**: ``Allreduce`` (in place, sum) of float32 buffers of 1 MB to the wide network's
   100.7 MB of gradients; "bus bandwidth" is the ring's ``2(R-1)/R × bytes / time``;
3. **the step**: the wide network 1024-4096-4096-1024 (relu, squared error, SGD momentum 0.9),
   `--batch` rows per rank, one step of ``train_epoch`` without a communicator (compute only) and
   with one (compute + the allreduce of the gradients, as trained);
4. **overlap**: an ``Iallreduce`` of the gradient buffer started, then a forward/backward of a
   second network (C++, GIL released), then ``Wait``: its time against the two one after the
   other. This is the most that DDP-style bucketing could hide: it starts the reduction of the
   last layers' gradients while the earlier layers' backward still runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from mpi4py import MPI

import fastmlp

WIDE = [1024, 4096, 4096, 1024]


def timed(fn, reps: int) -> float:
    """Median seconds of `reps` calls of fn, the ranks started together."""
    comm = MPI.COMM_WORLD
    times = []
    for _ in range(reps):
        comm.Barrier()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256, help="rows per rank")
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    ring = 2 * (size - 1) / size
    out: list[str] = []

    one = np.ones(1)
    lat = timed(lambda: [comm.Allreduce(MPI.IN_PLACE, one) for _ in range(1000)], 3) / 1000
    out.append(f"latency: Allreduce of 8 bytes {lat * 1e6:.1f} µs")

    rng = np.random.default_rng(comm.Get_rank())
    net = fastmlp.Network(WIDE, "relu", "identity", seed=0)
    other = fastmlp.Network(WIDE, "relu", "identity", seed=1)
    n_grad = net.grads.size
    out.append("| buffer | Allreduce (ms) | bus bandwidth (GB/s) |")
    out.append("|---:|---:|---:|")
    for n in (250_000, 2_500_000, n_grad):
        buf = np.ones(n, dtype=np.float32)
        t = timed(lambda buf=buf: comm.Allreduce(MPI.IN_PLACE, buf), a.reps + 2)
        out.append(f"| {buf.nbytes / 1e6:.1f} MB | {t * 1e3:.1f} | {ring * buf.nbytes / t / 1e9:.2f} |")

    X = rng.standard_normal((a.batch, WIDE[0]), dtype=np.float32)
    Y = rng.standard_normal((a.batch, WIDE[-1]), dtype=np.float32)
    opt_local, opt_mpi = fastmlp.SGD(1e-4, momentum=0.9), fastmlp.SGD(1e-4, momentum=0.9)
    net.train_epoch(X, Y, "squared_error", opt_local, a.batch)  # warm-up: workspaces
    t_local = timed(lambda: net.train_epoch(X, Y, "squared_error", opt_local, a.batch, shuffle=False), a.reps)
    net.train_epoch(X, Y, "squared_error", opt_mpi, a.batch, comm=comm)
    t_mpi = timed(lambda: net.train_epoch(X, Y, "squared_error", opt_mpi, a.batch, shuffle=False, comm=comm), a.reps)
    grads = net.grads
    t_reduce = timed(lambda: comm.Allreduce(MPI.IN_PLACE, grads), a.reps)
    t_ireduce = timed(lambda: comm.Iallreduce(MPI.IN_PLACE, grads).Wait(), a.reps)
    t_fb = timed(lambda: other.loss_and_grad(X, Y, "squared_error"), a.reps)

    def overlapped() -> None:
        req = comm.Iallreduce(MPI.IN_PLACE, grads)
        other.loss_and_grad(X, Y, "squared_error")
        req.Wait()

    t_overlap = timed(overlapped, a.reps)
    out.append("")
    out.append(f"| wide, {size} ranks × batch {a.batch} | ms |")
    out.append("|---|---:|")
    out.append(f"| step without a communicator (compute: forward, backward, update) | {t_local * 1e3:.0f} |")
    out.append(f"| step with comm= (compute + allreduce of {grads.nbytes / 1e6:.1f} MB) | {t_mpi * 1e3:.0f} |")
    out.append(f"| allreduce alone | {t_reduce * 1e3:.0f} |")
    out.append(f"| allreduce share of the step, (with − without) / with | {100 * (t_mpi - t_local) / t_mpi:.0f} % |")
    out.append(f"| Iallreduce + Wait alone | {t_ireduce * 1e3:.0f} |")
    out.append(f"| forward + backward of a second network alone | {t_fb * 1e3:.0f} |")
    out.append(f"| Iallreduce started, that forward + backward, Wait | {t_overlap * 1e3:.0f} |")
    hidden = (t_fb + t_ireduce - t_overlap) / t_ireduce
    out.append(
        f"| share of the Iallreduce hidden, (fb + Iallreduce − overlapped) / Iallreduce | {100 * hidden:.0f} % |"
    )
    if comm.Get_rank() == 0:
        print(f"{size} ranks, OMP_NUM_THREADS threads each: {fastmlp.get_num_threads()}")
        print("\n".join(out), flush=True)


if __name__ == "__main__":
    main()
