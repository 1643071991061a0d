#!/usr/bin/env python
"""Samples/s of each CPU variant of fastmlp's compiled core on the mnist workload.

784-256-128-10, relu, softmax + log_loss, float32, batch 128, SGD 0.01 with
momentum 0.9, one epoch on 60,000 random samples; the median of --reps epochs.
Each variant runs in its own worker process (FASTMLP_CPU=<variant>; a process
loads one variant); the repetitions are interleaved across the variants, since
a shared machine's speed drifts. Beside samples/s (wall clock) it reports
samples per CPU-second (process time, all threads), which other load on the
machine disturbs less. Needs the wheel (or a build with
-C cmake.define.FASTMLP_DISPATCH=ON); a one-machine build has one core only,
which is then timed alone.

    python benchmarks/variants.py                 # threads=2, 3 repetitions
    python benchmarks/variants.py --threads 1 --reps 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

N_SAMPLES, LAYERS, BATCH = 60_000, [784, 256, 128, 10], 128


def worker(threads: int) -> None:
    """Prints a JSON line when ready, then times one epoch per line read from stdin."""
    import numpy as np

    import fastmlp

    fastmlp.set_num_threads(threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_SAMPLES, LAYERS[0]), dtype=np.float32)
    y = rng.integers(0, LAYERS[-1], N_SAMPLES)
    net = fastmlp.Network(LAYERS, activation="relu", output_activation="softmax", dtype="float32", seed=0)
    opt = fastmlp.SGD(0.01, momentum=0.9)
    net.train_epoch(X[:4096], y[:4096], "log_loss", opt, BATCH)  # warm-up: buffers, threads, pages
    sel = fastmlp._selection
    print(
        json.dumps(
            {
                "variant": sel.variant,
                "module": sel.module,
                "flags": fastmlp._core.build_info()["cxx_flags"],
                "threads": fastmlp.get_num_threads(),
            }
        ),
        flush=True,
    )
    for _ in sys.stdin:
        t0, c0 = time.perf_counter(), time.process_time()
        net.train_epoch(X, y, "log_loss", opt, BATCH)
        print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}), flush=True)


def runnable_variants() -> list[str]:
    import fastmlp
    from fastmlp import _cpu
    from fastmlp._dispatch import LEVEL, VARIANTS, _exists

    if fastmlp._selection.variant not in VARIANTS:
        return [""]  # a one-machine build: its only core, FASTMLP_CPU unset
    return [v for v in reversed(VARIANTS) if LEVEL[v] <= _cpu.level() and _exists(f"_core_{v}")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.threads)
        return 0

    env = {k: v for k, v in os.environ.items() if k != "FASTMLP_CPU"}
    workers = {}
    for variant in runnable_variants():
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--threads", str(args.threads)],
            env=dict(env, **({"FASTMLP_CPU": variant} if variant else {})),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        workers[variant] = (proc, json.loads(proc.stdout.readline()))
    times: dict[str, list[float]] = {v: [] for v in workers}
    cpu_times: dict[str, list[float]] = {v: [] for v in workers}
    for _ in range(args.reps):
        for variant, (proc, _info) in workers.items():
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            result = json.loads(proc.stdout.readline())
            times[variant].append(result["seconds"])
            cpu_times[variant].append(result["cpu_seconds"])
    for proc, _info in workers.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)

    rows = []
    for variant, (_proc, info) in workers.items():
        rate = N_SAMPLES / statistics.median(times[variant])
        march = next((f for f in info["flags"].split() if f.startswith("-march=")), "")
        cpu_rate = N_SAMPLES / statistics.median(cpu_times[variant])
        rows.append(
            dict(
                info, rate=rate, cpu_rate=cpu_rate, march=march, seconds=times[variant], cpu_seconds=cpu_times[variant]
            )
        )
    base = rows[0]["rate"]
    print(
        f"mnist workload {'-'.join(map(str, LAYERS))}, batch {BATCH}, float32, SGD momentum 0.9, "
        f"{N_SAMPLES:,} samples, {args.threads} threads, median of {args.reps}\n"
    )
    print(f"| variant | -march | samples/s | vs {rows[0]['variant']} | samples per CPU-second |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['march'].removeprefix('-march=')} | {r['rate']:,.0f} | "
            f"{r['rate'] / base:.2f}x | {r['cpu_rate']:,.0f} |"
        )
    print(
        "\n(samples per CPU-second: the epoch's samples over the process's CPU time, all threads; "
        "less sensitive than samples/s to other load on the machine)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
