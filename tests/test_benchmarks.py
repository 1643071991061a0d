"""benchmarks/compare.py: its tables and ratios on made-up timings, and its quick mode run end to end
(the output is checked, never the speed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"


@pytest.fixture(scope="module")
def compare():
    yield load_script(SCRIPT, "fastmlp_bench_compare")
    del sys.modules["fastmlp_bench_compare"]


def row(compare, workload, peer, seconds, samples=1000, status="ok", reason="", ok=True, threads=2):
    """A Row with one repetition of `samples` in `seconds` (None: a failed row)."""
    r = compare.Row(workload, threads, peer, status=status, reason=reason)
    if seconds is not None:
        r.reps = [{"seconds": seconds, "cpu_seconds": seconds, "samples": samples, "steps": samples}]
        r.check = {"kind": "loss", "value": 0.5, "ok": ok}
    return r


def test_best_peer_is_the_fastest_float32_peer_that_counts(compare):
    rates = {"fastmlp": 300.0, "fastmlp-est": 900.0, "torch": 100.0, "jax": 250.0, "openvino": None}
    # fastmlp's own estimator is not a peer; a peer without a rate (n/a) neither
    assert compare.best_peer(rates) == ("jax", 250.0)
    assert compare.ratio_to_best(rates) == ("jax", pytest.approx(1.2))
    # a peer excluded (its check failed, or it was not forced under --cpu) does not count
    assert compare.ratio_to_best(rates, {"jax"}) == ("torch", pytest.approx(3.0))
    # nothing to compare with: no best peer, no ratio
    assert compare.ratio_to_best({"fastmlp": 300.0, "torch": None}) == (None, None)
    assert compare.ratio_to_best({"fastmlp": None, "torch": 5.0}) == ("torch", None)


def test_summary_table_ratios_marks_and_footnotes(compare):
    rows = [
        row(compare, "mnist-sgd", "fastmlp", 2.0),  # 500 samples/s
        row(compare, "mnist-sgd", "torch", 4.0),  # 250
        row(compare, "mnist-sgd", "jax", 1.0, ok=False),  # 1000 but a different result: marked, not the best
        row(compare, "mnist-sgd", "openvino", None, status="n/a", reason="openvino is not installed"),
        row(compare, "latency", "fastmlp", 0.02),  # 1000 calls in 20 ms: 20 µs per call
        row(compare, "latency", "onnxruntime", 0.01),  # 10 µs per call: faster
    ]
    lines = compare.summary_table(rows)
    header = next(x for x in lines if x.startswith("| workload"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols == ["workload", "threads", "fastmlp", "torch", "jax", "onnxruntime", "openvino", "best peer",
                    "fastmlp ÷ best"]  # fmt: skip
    table = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == len(cols) and cells[0] in ("mnist-sgd", "latency"):
            table[cells[0]] = dict(zip(cols, cells))
    sgd, lat = table["mnist-sgd"], table["latency"]
    assert sgd["fastmlp"] == "500" and sgd["torch"] == "250" and sgd["jax"] == "1,000 ✗"
    assert sgd["best peer"] == "torch" and sgd["fastmlp ÷ best"] == "**2.00×**"
    assert sgd["onnxruntime"] == "–"  # does not apply
    mark = sgd["openvino"]
    assert mark == "¹"  # blank but for its footnote mark
    assert any(x.startswith(f"{mark} openvino: n/a: openvino is not installed") for x in lines)
    assert lat["fastmlp"] == "20" and lat["onnxruntime"] == "10"  # µs per call
    assert lat["best peer"] == "onnxruntime" and lat["fastmlp ÷ best"] == "**0.50×**"
    assert any("✗" in x and "not counted as the best peer" in x for x in lines)


def test_summary_table_under_forcing_leaves_native_only_peers_out_of_the_best(compare):
    rows = [
        row(compare, "inference", "fastmlp", 2.0),
        row(compare, "inference", "torch", 4.0),
        row(compare, "inference", "onnxruntime", 1.0),
    ]
    native = compare.summary_table(rows)
    forced = compare.summary_table(rows, "avx2")
    assert "| inference | 2 | 500 | 250 | 1,000 | onnxruntime | **0.50×** |" in native
    assert "| inference | 2 | 500 | 250 | 1,000 | torch | **2.00×** |" in forced
    assert any("onnxruntime (native)" in x for x in forced)


def test_check_result_compares_with_fastmlp(compare):
    train, infer = compare.WORKLOADS["mnist-sgd"], compare.WORKLOADS["inference"]
    ours = {"check_loss": 2.0, "check_output": [0.1, 0.9]}
    assert compare.check_result(train, {"check_loss": 2.001}, ours)["ok"] is True  # 5e-4 relative
    assert compare.check_result(train, {"check_loss": 2.01}, ours)["ok"] is False
    assert compare.check_result(train, {"check_loss": 2.01}, None)["ok"] is None  # no fastmlp row
    near = compare.check_result(infer, {"check_output": [0.10001, 0.9]}, ours)
    assert near["ok"] is True and near["value"] == pytest.approx(1e-5)
    assert compare.check_result(infer, {"check_output": [0.2, 0.8]}, ours)["ok"] is False
    assert compare.check_cell({"kind": "loss", "value": 2.01, "ok": False}) == "2.01 ✗"


def test_check_loss_is_fastmlps_definition(compare):
    small, mnist = compare.WORKLOADS["small"], compare.WORKLOADS["mnist-sgd"]
    # squared error: sum((a - y)²) / (2 n k)
    assert compare.check_loss(small, np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]])) == pytest.approx(1.25)
    p = np.array([[0.25, 0.75], [0.5, 0.5]])
    assert compare.check_loss(mnist, p, np.array([1, 0])) == pytest.approx(-(np.log(0.75) + np.log(0.5)) / 2)


def test_peers_in_process_train_the_same_multi_output_regression(compare):
    """The check epoch from the common initial weights gives fastmlp's loss for every peer here (it
    did not for the scikit-learn-API estimators, whose squared-error gradient is k times fastmlp's)."""
    fastmlp = pytest.importorskip("fastmlp")
    pytest.importorskip("sklearn")
    w = compare.Workload("multi", (8, 16, 4), "tanh", "identity", compare.SGD, 16, 256, 256, check_samples=256)
    threads = fastmlp.get_num_threads()
    try:
        losses = {p: compare.Bench(p, w, 1, False, 0.0).check()["check_loss"] for p in
                  ("fastmlp", "fastmlp-est", "sklearn", "numpy")}  # fmt: skip
    finally:
        fastmlp.set_num_threads(threads)
    X, y = compare.make_data(w, 256)
    start = compare.check_loss(w, initial_output(compare, w, X), y)
    assert losses["fastmlp"] < 0.9 * start  # the epoch trained
    for peer, loss in losses.items():
        assert loss == pytest.approx(losses["fastmlp"], rel=1e-5), (peer, losses)


def initial_output(compare, w, X):
    """The network's output from the common initial weights (tanh hidden layers, identity output)."""
    params = compare.initial_params(w)
    for W, b in params[:-1]:
        X = np.tanh(X @ W + b)
    W, b = params[-1]
    return X @ W + b


@pytest.mark.slow  # subprocesses that run the benchmark script
def test_compare_quick_run_reports_consistent_numbers(tmp_path):
    out = tmp_path / "run.json"
    run = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--peers",
            "fastmlp,numpy,torch,jax,onnxruntime",
            "--workloads",
            "small,inference,latency",
            "--threads",
            "1",
            "--reps",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr + run.stdout
    data = json.loads(out.read_text())
    assert data["meta"]["quick"] is True and data["meta"]["threads"] == [1]
    assert data["meta"]["complete"] is True and data["meta"]["interleave"] is False  # written per row, then final
    assert data["meta"]["fastmlp"]["variant"]  # which fastmlp ran
    rows = {(r["workload"], r["peer"]): r for r in data["results"]}
    # onnxruntime is an inference peer only
    want = {(w, p) for w in ("small", "inference", "latency") for p in ("fastmlp", "numpy", "torch", "jax")}
    assert set(rows) == want | {("inference", "onnxruntime"), ("latency", "onnxruntime")}
    batch = {"small": 32, "inference": 1024, "latency": 1}
    for (workload, peer), r in rows.items():
        if peer in ("torch", "jax", "onnxruntime") and r["status"] == "n/a":  # optional peers (the bench extra)
            assert "not installed" in r["reason"]
            continue
        assert r["status"] == "ok", r
        seconds = [rep["seconds"] for rep in r["reps"]]
        samples = r["reps"][0]["samples"]
        np.testing.assert_allclose(r["samples_per_s"], samples / np.median(seconds), rtol=1e-9)
        np.testing.assert_allclose(r["ms_per_step"], 1e3 * batch[workload] / r["samples_per_s"], rtol=1e-6)
        # the same initial weights and data: every peer computed what fastmlp computed
        assert r["check"]["ok"] is True, (workload, peer, r["check"])
        if peer == "fastmlp":
            assert r["check"]["value"] == (0 if workload != "small" else r["info"]["check_loss"])
    # The streamed markdown table: one row per result, the ratio column fastmlp / peer.
    table = {}
    for line in run.stdout.splitlines():
        m = re.match(r"\| (\w[\w-]*) \| 1 \| ([\w-]+) \| ([\d,]+) \|.*\| ([\d.]+)× \|$", line)
        if m:
            table[(m[1], m[2])] = (float(m[3].replace(",", "")), float(m[4]))
    assert set(table) == {k for k, r in rows.items() if r["status"] == "ok"}
    for (workload, peer), (rate, ratio) in table.items():
        assert abs(rate - rows[(workload, peer)]["samples_per_s"]) <= 1.0
        want_ratio = rows[(workload, "fastmlp")]["samples_per_s"] / rows[(workload, peer)]["samples_per_s"]
        assert abs(ratio - want_ratio) <= 0.01 * want_ratio + 0.01
    # The summary: one line per workload, fastmlp ÷ the best peer of that workload.
    summary = {}
    for line in run.stdout.splitlines():
        m = re.match(r"\| (small|inference|latency) \| 1 \| (.*) \| (\S*) \| \*\*([\d.]+)×\*\* \|$", line)
        if m:
            summary[m[1]] = (m[3], float(m[4]))
    assert set(summary) == {"small", "inference", "latency"}
    for workload, (best, ratio) in summary.items():
        peers = {p: r["samples_per_s"] for (w, p), r in rows.items() if w == workload and r["status"] == "ok"}
        name = max((p for p in peers if p != "fastmlp"), key=peers.get)
        assert best == name
        assert ratio == pytest.approx(peers["fastmlp"] / peers[name], rel=0.006, abs=0.006)


def test_bf16_rows_have_their_own_table_and_never_are_the_float32_best(compare):
    rows = [
        row(compare, "wide", "fastmlp", 2.0),  # 500 samples/s
        row(compare, "wide", "torch", 4.0),  # 250
        row(compare, "wide", "fastmlp-bf16", 1.0),  # 1000
        row(compare, "wide", "torch-bf16", 0.5),  # 2000: faster, but bf16
    ]
    summary = compare.summary_table(rows)
    assert "| wide | 2 | 500 | 250 | torch | **2.00×** |" in summary  # no bf16 column, torch the best
    assert compare.bf16_table([r for r in rows if r.peer in ("fastmlp", "torch")]) == []
    table = compare.bf16_table(rows)
    assert "| wide | 2 | 500 | 1,000 | 2,000 |  | 2.00× | torch-bf16 | **0.50×** |" in table
