"""Peak memory of prediction on X larger than memory (fastmlp.data.forward_streamed): not a timed test.

    export OMP_NUM_THREADS=1 MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=1048576   # see docs/distributed.md
    python benchmarks/predict_memory.py --kind parquet --rows 500000 --limit-mib 1200   # 1.5 GB of X, 1.2 GiB limit
    python benchmarks/predict_memory.py --kind npy --rows 500000                        # a memmap (no limit: see below)
    python benchmarks/predict_memory.py --kind memory --rows 500000 --limit-mib 1200    # X loaded whole: fails

Writes ``rows × features`` float32 standard-normal values (in chunks of 16,384 rows, never
held whole) as a ``.npy`` file or a Parquet file (one column a feature, row groups of 16,384
rows), fits ``MLPClassifier((256, 128), max_iter=1)`` on 2,000 in-memory rows, then — with
the address space limited to ``--limit-mib`` (``resource.setrlimit(RLIMIT_AS)``) when given —
calls ``predict_proba`` on the whole file: a ``fastmlp.data.ParquetRows``, a memmap
(``np.load(mmap_mode="r")``), or (``--kind memory``) the array loaded whole. It prints the
peak resident set (``VmHWM``, reset just before the call), the address space in use, the
output's size and rows/s. A memmap reserves the file's whole size of address space whatever is
read, so ``--limit-mib`` below the file's size refuses it at ``np.load``: the memmap row is
measured without a limit (its peak RSS is the bound). glibc's arenas (64 MiB of address space a
thread) and its growing mmap threshold (freed buffers reused from a fragmenting heap) are what
the two MALLOC_ variables above tame; pyarrow is set to the system allocator here.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

# pyarrow's default allocator (jemalloc or mimalloc) reserves 1 GB of address space up front, which
# RLIMIT_AS would count; the system allocator reserves only what it uses.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import fastmlp
from fastmlp import data

MiB = 1 << 20
CHUNK = 16_384


def status() -> dict[str, int]:
    """VmHWM, VmRSS, VmSize in bytes (Linux)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "VmSize"):
            out[key] = int(value.split()[0]) * 1024
    return out


def chunks(rows: int, features: int):
    rng = np.random.default_rng(0)
    for start in range(0, rows, CHUNK):
        yield rng.standard_normal((min(CHUNK, rows - start), features), dtype=np.float32)


def write(path: Path, kind: str, rows: int, features: int) -> None:
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(f"f{j}", pa.float32()) for j in range(features)])
        with pq.ParquetWriter(path, schema, compression="none") as w:
            for part in chunks(rows, features):
                w.write_table(pa.table({f"f{j}": part[:, j] for j in range(features)}, schema=schema))
    else:
        header = {"descr": "<f4", "fortran_order": False, "shape": (rows, features)}
        with open(path, "wb") as f:
            np.lib.format.write_array_header_2_0(f, header)
            for part in chunks(rows, features):
                f.write(part.tobytes())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["parquet", "npy", "memory"], default="parquet")
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--features", type=int, default=784)
    p.add_argument("--limit-mib", type=int, default=None, help="RLIMIT_AS for the prediction")
    p.add_argument("--dir", default=tempfile.gettempdir())
    p.add_argument("--keep", action="store_true", help="keep the data file")
    a = p.parse_args()

    suffix = "parquet" if a.kind == "parquet" else "npy"
    path = Path(a.dir) / f"fastmlp-predict-{a.rows}x{a.features}.{suffix}"
    if not path.exists():
        write(path, a.kind if a.kind == "parquet" else "npy", a.rows, a.features)
    rng = np.random.default_rng(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.ConvergenceWarning)
        clf = fastmlp.MLPClassifier((256, 128), max_iter=1, random_state=0, dtype="float32")
        clf.fit(rng.standard_normal((2000, a.features), dtype=np.float32), rng.integers(0, 10, 2000))
    if a.kind == "parquet":
        X = data.ParquetRows(path, [f"f{j}" for j in range(a.features)], check=False)
    if a.limit_mib is not None:
        resource.setrlimit(resource.RLIMIT_AS, (a.limit_mib * MiB, a.limit_mib * MiB))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    before = status()
    t0 = time.perf_counter()
    try:
        if a.kind == "npy":
            X = np.load(path, mmap_mode="r")
        elif a.kind == "memory":
            X = np.load(path)
        proba = clf.predict_proba(X)
    except MemoryError as e:
        print(f"{a.kind}: MemoryError under the {a.limit_mib} MiB limit ({e})")
        return 1
    seconds = time.perf_counter() - t0
    after = status()
    size = path.stat().st_size
    limit = "none" if a.limit_mib is None else f"{a.limit_mib} MiB"
    print(
        f"{a.kind}: X {a.rows:,} x {a.features} float32, file {size / MiB:,.0f} MiB; address-space limit {limit}; "
        f"RSS before {before['VmRSS'] / MiB:.0f} MiB, peak {after['VmHWM'] / MiB:.0f} MiB "
        f"(+{(after['VmHWM'] - before['VmRSS']) / MiB:.0f}); address space {after['VmSize'] / MiB:.0f} MiB; "
        f"output {proba.nbytes / MiB:.1f} MiB; {a.rows / seconds:,.0f} rows/s"
    )
    if not a.keep:
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
