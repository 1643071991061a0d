#!/usr/bin/env python
"""Per-phase times of one training step on one thread, and what they imply for T threads.

Where no many-core machine is at hand, the three phases of a data-parallel
training step can still be timed on one thread, and the step time at T threads
modelled from them:

(a) products: ``net.loss_and_grad(X, Y, loss)`` on a slice of batch/T rows
    (forward, loss, backward: one thread's share of the products when the
    batch is split into T row slices);
(b) reduction: summing the T-1 other threads' gradient buffers of n_params
    floats into one. Timed as NumPy ``np.add(g, part, out=g)``, a fair proxy
    of the engine's ``#pragma omp simd`` loop (one streaming add per buffer);
    split by parameter chunks, each thread adds T-1 chunks of n_params/T;
(c) update: ``opt.step(net)`` over the n_params parameters; split by
    parameter chunks, n_params/T per thread.

Two designs are modelled from these times (perfect memory bandwidth scaling
and no other load assumed: a lower bound on the real step time):

* row slices — every thread runs (a) on batch/T rows into its own gradient
  buffer, then the buffers are reduced (b) and the update (c) runs in chunks:
  step(T) = products(batch/T) + reduction per thread + update/T;
* column split — the products themselves are split across the T threads
  (column blocks of each layer's output, 16 columns a block; no gradient
  copies): step(T) = Σ_layers products(batch)·share_l / min(T, blocks_l)
  + barriers + update/T, with share_l a layer's fraction of the weights and
  ``--barriers-per-layer`` (forward 1, backward 2) barriers of
  ``--barrier-us`` microseconds each (an assumed cost: one thread cannot
  measure a barrier).

    python benchmarks/phases.py                  # mnist and wide, T = 1,2,4,8,16; about a minute
    python benchmarks/phases.py --nets mnist --json phases.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy loads its BLAS: every phase is timed on one thread

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from itertools import pairwise  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from compare import cpu_model  # noqa: E402  (benchmarks/compare.py, this script's folder)

COLUMN_BLOCK = 16  # float32 columns per block in the column-split model (one AVX-512 register)


@dataclass(frozen=True)
class Net:
    name: str
    sizes: tuple[int, ...]
    output: str
    loss: str
    batch: int


NETS = {
    n.name: n
    for n in (
        Net("mnist", (784, 256, 128, 10), "softmax", "log_loss", 128),
        Net("wide", (1024, 4096, 4096, 1024), "identity", "squared_error", 512),
    )
}


def median_time(fn, budget_s: float, min_reps: int = 3, max_reps: int = 200) -> float:
    """Median seconds of fn() after one warm-up call; as many calls as fit in budget_s."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    reps = max(min_reps, min(max_reps, int(budget_s / max(first, 1e-6))))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(fastmlp, spec: Net, threads: list[int], budget_s: float) -> dict:
    """The three phases' times (seconds) on one thread."""
    rng = np.random.default_rng(0)
    net = fastmlp.Network(list(spec.sizes), activation="relu", output_activation=spec.output, dtype="float32", seed=0)
    opt = fastmlp.SGD(0.01, momentum=0.9)
    X = rng.standard_normal((spec.batch, spec.sizes[0]), dtype=np.float32)
    if spec.loss == "log_loss":
        Y = rng.integers(0, spec.sizes[-1], spec.batch)
    else:
        Y = rng.standard_normal((spec.batch, spec.sizes[-1]), dtype=np.float32)
    P = int(net.n_params)

    products = {}
    for T in threads:
        rows = max(1, spec.batch // T)
        Xs, Ys = np.ascontiguousarray(X[:rows]), np.ascontiguousarray(Y[:rows])
        products[T] = median_time(lambda Xs=Xs, Ys=Ys: net.loss_and_grad(Xs, Ys, spec.loss), budget_s / len(threads))

    # One thread's share of a chunked reduction: T-1 chunks of P/T floats (each from another
    # thread's buffer, i.e. distinct memory) added into its own chunk. A pool of P floats holds
    # exactly the memory one thread touches: its chunk and the T-1 others.
    pool = rng.standard_normal(P, dtype=np.float32)
    reduction = {}
    for T in threads:
        if T == 1:
            reduction[T] = 0.0
            continue
        c = P // T
        mine, parts = pool[:c], [pool[k * c : (k + 1) * c] for k in range(1, T)]

        def reduce_chunk(mine=mine, parts=parts):
            for part in parts:
                np.add(mine, part, out=mine)

        reduction[T] = median_time(reduce_chunk, budget_s / (2 * len(threads)))

    net.loss_and_grad(X, Y, spec.loss)
    update = median_time(lambda: opt.step(net), budget_s / 4)
    return {"n_params": P, "products": products, "reduction_per_thread": reduction, "update": update}


def model(spec: Net, m: dict, threads: list[int], barrier_s: float, barriers_per_layer: int) -> list:
    """Modelled step times (seconds) of both designs for each T."""
    weights = [a * b for a, b in pairwise(spec.sizes)]
    shares = [w / sum(weights) for w in weights]
    blocks = [math.ceil(n_out / COLUMN_BLOCK) for n_out in spec.sizes[1:]]
    n_layers = len(weights)
    full = m["products"][1]  # the whole batch's products on one thread
    out = []
    for T in threads:
        red = m["reduction_per_thread"][T]
        rows = m["products"][T] + red + m["update"] / T
        cols = (
            sum(full * s / min(T, b) for s, b in zip(shares, blocks, strict=True))
            + (barrier_s * barriers_per_layer * n_layers if T > 1 else 0.0)
            + m["update"] / T
        )
        out.append(
            {
                "T": T,
                "rows_per_slice": max(1, spec.batch // T),
                "products_per_slice": m["products"][T],
                "reduction_total": red * T,
                "reduction_per_thread": red,
                "update_per_thread": m["update"] / T,
                "row_slices_step": rows,
                "column_split_step": cols,
            }
        )
    for r in out:
        r["row_slices_speedup"] = out[0]["row_slices_step"] / r["row_slices_step"]
        r["column_split_speedup"] = out[0]["row_slices_step"] / r["column_split_step"]
    return out


def ms(seconds: float) -> str:
    x = 1e3 * seconds
    return "0" if x == 0 else f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


def table(spec: Net, m: dict, rows: list) -> list[str]:
    lines = [
        f"### {spec.name}: {'-'.join(map(str, spec.sizes))}, batch {spec.batch}, float32, "
        f"{m['n_params']:,} parameters; update (SGD momentum) {ms(m['update'])} ms on 1 thread",
        "",
        "| T | rows/slice | products per slice (ms) | reduction total (ms) "
        "| reduction per thread (ms) | update per thread (ms) | row slices: step (ms) "
        "| speed-up | column split: step (ms) | speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['T']} | {r['rows_per_slice']} | {ms(r['products_per_slice'])} | "
            f"{ms(r['reduction_total'])} | {ms(r['reduction_per_thread'])} | "
            f"{ms(r['update_per_thread'])} | {ms(r['row_slices_step'])} | "
            f"{r['row_slices_speedup']:.2f}× | {ms(r['column_split_step'])} | "
            f"{r['column_split_speedup']:.2f}× |"
        )
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    p.add_argument("--nets", default="mnist,wide", help="comma-separated: mnist, wide")
    p.add_argument("--threads", default="1,2,4,8,16", help="thread counts T to model")
    p.add_argument(
        "--seconds", type=float, default=15.0, help="time budget per net for the timed repetitions (default 15)"
    )
    p.add_argument(
        "--barrier-us",
        type=float,
        default=2.0,
        help="assumed cost of one barrier in the column-split model (default 2 µs)",
    )
    p.add_argument(
        "--barriers-per-layer",
        type=int,
        default=3,
        help="barriers per layer and step in the column-split model (default 3)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the measurements and the model")
    args = p.parse_args(argv)
    nets = [NETS[n.strip()] for n in args.nets.split(",") if n.strip()]
    threads = sorted({int(t) for t in args.threads.split(",")} | {1})

    import fastmlp

    fastmlp.set_num_threads(1)
    sel = getattr(fastmlp, "_selection", None)
    variant = getattr(sel, "variant", "?")
    start = time.perf_counter()
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "fastmlp": getattr(fastmlp, "__version__", "?"),
        "variant": variant,
        "numpy": np.__version__,
        "threads": threads,
        "barrier_us": args.barrier_us,
        "barriers_per_layer": args.barriers_per_layer,
        "load_average": os.getloadavg()[0],
    }
    print(
        f"fastmlp training-step phases — {meta['date']} — {meta['cpu']} ({meta['cpus']} CPUs) — "
        f"fastmlp {meta['fastmlp']} ({variant}), numpy {np.__version__} — every phase timed on "
        f"1 thread (median, after a warm-up); load average {meta['load_average']:.1f}",
        flush=True,
    )
    print(
        "\nproducts: `net.loss_and_grad` on batch/T rows. reduction: NumPy `np.add(g, part, "
        "out=g)` (a fair proxy of the engine's `#pragma omp simd` loop) over T−1 chunks of "
        "n_params/T floats, one thread's share when split by parameter chunks; total = T × that. "
        "update: `opt.step(net)`, /T per thread. Row slices: products(batch/T) + reduction per "
        "thread + update/T. Column split: each layer's products(batch)·share / min(T, its "
        f"{COLUMN_BLOCK}-column blocks) + {args.barriers_per_layer} barriers per layer × "
        f"{args.barrier_us:g} µs (assumed) + update/T. Both assume memory bandwidth scales with "
        "T and nothing else runs: lower bounds. Speed-ups are against row slices at T = 1.",
        flush=True,
    )
    results = {}
    for spec in nets:
        m = measure(fastmlp, spec, threads, args.seconds)
        rows = model(spec, m, threads, args.barrier_us * 1e-6, args.barriers_per_layer)
        results[spec.name] = {"sizes": spec.sizes, "batch": spec.batch, "measured": m, "model": rows}
        print("", *table(spec, m, rows), sep="\n", flush=True)
    meta["wall_s"] = time.perf_counter() - start
    print(f"\n({meta['wall_s']:.0f} s)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "nets": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
