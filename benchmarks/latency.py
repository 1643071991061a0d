"""Prediction latency: one row and a batch, through each way a fitted model can be served.

    python benchmarks/latency.py [--features 20] [--hidden 64] [--repeats 2000]

Rows: the estimator's predict_proba (its fast path for a ready NumPy array), Network.forward,
an ONNX Runtime session of fastmlp.export.to_onnx (float32 in, as ONNX consumers feed it; when
onnx and onnxruntime are installed) and scikit-learn's MLPClassifier with the same weights
(to_sklearn). (fastmlp::load_network's network in C++ runs Network.forward's kernel without
Python's call overhead.) Each time is the median over --repeats calls (one row) or
fewer (1,024 rows), after a warm-up, on one thread for every framework (ONNX Runtime's
intra-op threads and fastmlp's set to 1) so that the ratios compare the per-call overhead and
the kernels alike. Prints a markdown table: microseconds, and the ratio to Network.forward.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from typing import Any, Callable

import numpy as np

import fastmlp


def median_us(fn: Callable[[], Any], repeats: int) -> float:
    for _ in range(min(50, repeats)):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    fastmlp.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, args.features))
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, len(X))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.ConvergenceWarning)
        clf = fastmlp.MLPClassifier(hidden_layer_sizes=(args.hidden,), max_iter=3, random_state=0).fit(X, y)
    net = clf.fitted_network()
    batches = {"1 row": np.ascontiguousarray(X[:1]), "1,024 rows": np.ascontiguousarray(X[:1024])}
    rows: dict[str, dict[str, float]] = {}

    def timed(name: str, make: Callable[[np.ndarray], Callable[[], Any]]) -> None:
        rows[name] = {
            label: median_us(make(x), args.repeats if len(x) == 1 else max(20, args.repeats // 50))
            for label, x in batches.items()
        }

    timed("MLPClassifier.predict_proba", lambda x: lambda: clf.predict_proba(x))
    timed("Network.forward", lambda x: lambda: net.forward(x))
    try:
        import onnxruntime as ort

        from fastmlp.export import to_onnx
    except ImportError:
        print("(onnx/onnxruntime not installed: no ONNX Runtime row)")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            to_onnx(clf, path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        timed(
            "ONNX Runtime session.run",
            lambda x: (lambda x32: lambda: session.run(None, {"X": x32}))(x.astype(np.float32)),
        )
    try:
        from threadpoolctl import threadpool_limits

        sk = clf.to_sklearn()
        with threadpool_limits(1):
            timed("scikit-learn predict_proba", lambda x: lambda: sk.predict_proba(x))
    except ImportError:
        print("(scikit-learn or threadpoolctl not installed: no scikit-learn row)")

    base = rows["Network.forward"]
    print(f"\n{args.features} features, {args.hidden} hidden units, 3 classes, float64, 1 thread; median µs")
    print("\n| path | 1 row (µs) | × forward | 1,024 rows (µs) | × forward |")
    print("|---|---:|---:|---:|---:|")
    for name, t in rows.items():
        one, many = t["1 row"], t["1,024 rows"]
        print(f"| {name} | {one:.1f} | {one / base['1 row']:.2f} | {many:.0f} | {many / base['1,024 rows']:.2f} |")


if __name__ == "__main__":
    main()
