"""benchmarks/compare.py in quick mode: its output is checked, never its speed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a subprocess that runs the benchmark script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"


def test_compare_quick_run_reports_consistent_numbers(tmp_path):
    out = tmp_path / "run.json"
    run = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--peers",
            "fastmlp,numpy",
            "--workloads",
            "small,inference",
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
    rows = {(r["workload"], r["peer"]): r for r in data["results"]}
    assert set(rows) == {(w, p) for w in ("small", "inference") for p in ("fastmlp", "numpy")}
    batch = {"small": 32, "inference": 1024}
    for (workload, _peer), r in rows.items():
        assert r["status"] == "ok", r
        seconds = [rep["seconds"] for rep in r["reps"]]
        samples = r["reps"][0]["samples"]
        np.testing.assert_allclose(r["samples_per_s"], samples / np.median(seconds), rtol=1e-9)
        np.testing.assert_allclose(r["ms_per_step"], 1e3 * batch[workload] / r["samples_per_s"], rtol=1e-6)
    # The markdown table: one row per result, the ratio column fastmlp / peer.
    table = {}
    for line in run.stdout.splitlines():
        m = re.match(r"\| (\w[\w-]*) \| 1 \| ([\w-]+) \| ([\d,]+) \|.*\| ([\d.]+)× \|$", line)
        if m:
            table[(m[1], m[2])] = (float(m[3].replace(",", "")), float(m[4]))
    assert set(table) == set(rows)
    for (workload, peer), (rate, ratio) in table.items():
        assert abs(rate - rows[(workload, peer)]["samples_per_s"]) <= 1.0
        want = rows[(workload, "fastmlp")]["samples_per_s"] / rows[(workload, peer)]["samples_per_s"]
        assert abs(ratio - want) <= 0.01 * want + 0.01
