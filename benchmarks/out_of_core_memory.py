"""Peak resident memory of training on X larger than memory (fastmlp.data): not a timed test.

    OMP_NUM_THREADS=1 mpiexec -n 2 python benchmarks/out_of_core_memory.py --rows 800000   # 2.5 GB of float32
    python benchmarks/out_of_core_memory.py --rows 800000                                  # one process
    ... --in-memory                                                                         # the shard loaded whole

Rank 0 writes a float32 ``.npy`` file of ``rows × 784`` standard-normal values (in 64 MiB
chunks, never held whole), every rank memory-maps it, takes its shard with
``fastmlp.distributed.shard`` (a memmap slice: nothing read) and trains one epoch of the mnist
network 784-256-128-10 (batch 128 per rank, SGD) with ``Network.train_epoch(source, ...,
comm=)`` (``--estimator``: ``MLPClassifier((256, 128), max_iter=1).fit``, with
``distributed="mpi"`` under mpiexec; fit checks the values itself). Each rank then
prints, from ``/proc/self/status``, its peak resident set (``VmHWM``,
reset just before the epoch), and the resident anonymous and file-backed memory at the end,
beside the size of its shard and of the file. The file is deleted at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import fastmlp
from fastmlp import data

MiB = 1 << 20


def status() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile in bytes (Linux)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak() -> None:
    """Resets VmHWM to the current RSS (Linux >= 4.0: writing 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def write_file(path: Path, rows: int, features: int) -> None:
    rng = np.random.default_rng(0)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
    header["shape"] = (rows, features)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, header)
        step = max(1, (64 * MiB) // (4 * features))
        for start in range(0, rows, step):
            f.write(rng.standard_normal((min(step, rows - start), features), dtype=np.float32).tobytes())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=800_000)
    p.add_argument("--features", type=int, default=784)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dir", default=tempfile.gettempdir())
    p.add_argument("--in-memory", action="store_true", help="load the shard whole (np.array) to compare")
    p.add_argument("--keep", action="store_true", help="keep the data file")
    p.add_argument("--no-shuffle", action="store_true", help="visit the rows in file order (sequential reads)")
    p.add_argument("--estimator", action="store_true", help="MLPClassifier.fit instead of Network.train_epoch")
    a = p.parse_args()

    try:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None
    except ImportError:
        comm = None
    rank, size = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    path = Path(a.dir) / f"fastmlp-ooc-{a.rows}x{a.features}.npy"
    if rank == 0 and not path.exists():
        write_file(path, a.rows, a.features)
    if comm is not None:
        comm.Barrier()
    y = np.random.default_rng(1).integers(0, 10, a.rows)
    X = np.load(path, mmap_mode="r")
    if comm is not None:
        from fastmlp.distributed import shard

        X, y = shard(X, y, comm)
    shard_bytes = X.nbytes
    if a.in_memory:
        X = np.array(X)
    elif not a.estimator:
        X = data.as_source(X)  # the source checks its rows once (streamed); fit does it itself
    if a.estimator:
        import warnings

        clf = fastmlp.MLPClassifier(
            (256, 128),
            batch_size=a.batch,
            max_iter=1,
            shuffle=not a.no_shuffle,
            random_state=0,
            distributed=None if comm is None else "mpi",
        )
        reset_peak()
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one epoch: ConvergenceWarning
            loss = clf.fit(X, y).loss_curve_[-1]
    else:
        net = fastmlp.Network([a.features, 256, 128, 10], "relu", "softmax", seed=0)
        opt = fastmlp.SGD(0.01, momentum=0.9)
        reset_peak()
        t = time.perf_counter()
        loss = net.train_epoch(X, y, "log_loss", opt, a.batch, shuffle=not a.no_shuffle, comm=comm)
    seconds = time.perf_counter() - t
    s = status()
    line = (
        f"rank {rank}/{size}: {'MLPClassifier.fit, ' if a.estimator else ''}"
        f"{'in memory' if a.in_memory else 'out of core'}"
        f"{', in file order' if a.no_shuffle else ', shuffled'}, file {path.stat().st_size / MiB:,.0f} MiB, "
        f"shard {shard_bytes / MiB:,.0f} MiB ({len(y):,} rows); epoch {seconds:.1f} s, "
        f"{len(y) * size / seconds:,.0f} samples/s, loss {loss:.4f}; peak RSS during the epoch (VmHWM) "
        f"{s['VmHWM'] / MiB:,.0f} MiB; at the end RSS {s['VmRSS'] / MiB:,.0f} MiB = anonymous "
        f"{s['RssAnon'] / MiB:,.0f} + file {s['RssFile'] / MiB:,.0f}"
    )
    lines = [line] if comm is None else comm.gather(line, root=0)
    if rank == 0:
        print("\n".join(lines or []), flush=True)
    if comm is not None:
        comm.Barrier()
    if rank == 0 and not a.keep:
        path.unlink()


if __name__ == "__main__":
    main()
