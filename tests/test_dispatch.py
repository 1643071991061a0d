"""The choice of the compiled core: the selection logic with a faked CPU level,
the CPU probe against /proc/cpuinfo, and the real variants against each other.

Tests that import fastmlp under another CPU level or FASTMLP_CPU run in a
subprocess: a process loads one variant, and importing a variant the CPU
cannot run would kill it (SIGILL), so a fake level is never above the real one
unless the import is expected to be refused before it happens.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import _cpu
from fastmlp._dispatch import LEVEL, MARCH, VARIANTS, choose

ALL = ("baseline", "avx2", "avx512")
REAL_LEVEL = _cpu.level()
DISPATCH = fastmlp._selection.variant in VARIANTS  # the wheel's layout, not a one-machine build
needs_dispatch = pytest.mark.skipif(
    not DISPATCH,
    reason="a one-machine build (fastmlp._core) has no variants; "
    "build with -C cmake.define.FASTMLP_DISPATCH=ON or install the wheel",
)


# --- the decision, with a faked CPU level ----------------------------------
@pytest.mark.parametrize("level, expected", [(2, "baseline"), (3, "avx2"), (4, "avx512")])
@pytest.mark.parametrize("forced", [None, "", "auto", " AUTO "])
def test_auto_picks_the_best_variant_the_cpu_runs(level, expected, forced):
    variant, reason = choose(level, ALL, forced)
    assert variant == expected
    assert reason.startswith("auto")


def test_auto_picks_among_the_variants_that_exist():
    assert choose(4, ("baseline", "avx2"), None)[0] == "avx2"
    assert choose(3, ("avx512", "baseline"), None)[0] == "baseline"
    assert choose(4, ("avx512", "avx2", "baseline"), None)[0] == "avx512"


@pytest.mark.parametrize("level", [2, 3, 4])
@pytest.mark.parametrize("variant", ALL)
def test_a_forced_variant_the_cpu_runs_is_taken(level, variant):
    if LEVEL[variant] > level:
        with pytest.raises(ImportError, match=rf"FASTMLP_CPU={variant} needs a {MARCH[variant]} CPU"):
            choose(level, ALL, variant)
    else:
        assert choose(level, ALL, variant) == (variant, f"forced by FASTMLP_CPU={variant}")
        assert choose(level, ALL, f" {variant.upper()} ")[0] == variant


def test_forcing_avx512_on_an_avx2_cpu_says_what_the_cpu_is():
    with pytest.raises(ImportError, match=r"needs a x86-64-v4 CPU, but this CPU is x86-64-v3 .*unset FASTMLP_CPU"):
        choose(3, ALL, "avx512")


def test_an_unknown_variant_names_the_choices():
    with pytest.raises(
        ImportError,
        match=r"FASTMLP_CPU='sse9' is not a CPU variant: use one of "
        r"baseline, avx2, avx512 or auto",
    ):
        choose(4, ALL, "sse9")


def test_a_forced_variant_missing_from_the_installation():
    with pytest.raises(ImportError, match=r"lacks \(it has baseline\)"):
        choose(4, ("baseline",), "avx512")


@pytest.mark.parametrize("level", [0, 1])
def test_a_cpu_below_x86_64_v2_is_refused(level):
    with pytest.raises(ImportError, match="needs at least x86-64-v2"):
        choose(level, ALL, None)


def test_no_compiled_core_at_all():
    with pytest.raises(ImportError, match="no compiled core"):
        choose(4, (), None)


# --- the CPU probe ---------------------------------------------------------
def _level_from_cpuinfo() -> int:
    """The x86-64 level from the kernel's flags (psABI definitions of the levels)."""
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    v2 = {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}
    v3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
    v4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    level = 1
    for needs in (v2, v3, v4):
        if not needs <= flags:
            break
        level += 1
    return level


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists(),
    reason="the probe's levels are x86-64 levels; /proc/cpuinfo is Linux's",
)
def test_cpu_probe_agrees_with_proc_cpuinfo():
    assert _level_from_cpuinfo() == REAL_LEVEL
    features = _cpu.features()
    assert features["avx2"] == (REAL_LEVEL >= 3)
    assert features["avx512f"] == (REAL_LEVEL >= 4)


# --- the real import -------------------------------------------------------
def test_the_chosen_core_is_fastmlp_core():
    core = sys.modules["fastmlp._core"]
    assert fastmlp._core is core
    assert fastmlp.network._core is core and fastmlp.optim._core is core
    assert core.build_info()["variant"] == fastmlp._selection.variant
    forced = os.environ.get("FASTMLP_CPU", "").strip().lower()
    if DISPATCH:
        # CI runs this suite once per FASTMLP_CPU: it must really run on that variant.
        expected = forced if forced in LEVEL else choose(REAL_LEVEL, VARIANTS, None)[0]
        assert fastmlp._selection.variant == expected
        assert core.__name__ == f"fastmlp._core_{expected}"
        assert f"-march={MARCH[expected]}" in core.build_info()["cxx_flags"]


def _run(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter, outside the source tree, with `env` added."""
    full = {k: v for k, v in os.environ.items() if k != "FASTMLP_CPU"}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


FAKE_CPU = """
    import sys, types
    fake = types.ModuleType("fastmlp._cpu")
    fake.level = lambda: {level}
    fake.features = lambda: {{}}
    sys.modules["fastmlp._cpu"] = fake
    try:
        import fastmlp
    except ImportError as exc:
        print("ImportError:", exc)
        sys.exit(3)
    print("variant:", fastmlp._selection.variant)
"""


@pytest.mark.parametrize("forced", ["avx2", "avx512"])
def test_forcing_a_variant_the_cpu_lacks_is_an_import_error_not_a_crash(forced, tmp_path):
    # The faked CPU is x86-64-v2, below the forced variant: the import must stop
    # before loading it (on a real v2 CPU, loading it would be SIGILL).
    result = _run(FAKE_CPU.format(level=2), tmp_path, FASTMLP_CPU=forced)
    assert result.returncode == 3, result.stdout + result.stderr
    if DISPATCH:
        assert f"FASTMLP_CPU={forced} needs a {MARCH[forced]} CPU, but this CPU is x86-64-v2" in result.stdout
    else:
        assert (
            f"FASTMLP_CPU={forced} asks for a CPU variant, but this fastmlp is a build for one machine" in result.stdout
        )


def test_a_bad_fastmlp_cpu_value_is_an_import_error(tmp_path):
    result = _run("import fastmlp", tmp_path, FASTMLP_CPU="sse9")
    assert result.returncode == 1
    assert "ImportError: FASTMLP_CPU=" in result.stderr and "sse9" in result.stderr


@needs_dispatch
@pytest.mark.parametrize("level", [2, 3, 4])
def test_auto_selection_follows_the_cpu_level(level, tmp_path):
    if level > REAL_LEVEL:
        pytest.skip(f"this CPU is level {REAL_LEVEL}; loading a level-{level} variant would be SIGILL")
    result = _run(FAKE_CPU.format(level=level), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"variant: {choose(level, ALL, None)[0]}" in result.stdout


# --- the variants compute the same numbers ----------------------------------
WORKLOAD = """
    import json, sys
    import numpy as np
    import fastmlp
    out = {"variant": fastmlp._selection.variant, "flags": fastmlp._core.build_info()["cxx_flags"]}
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 37))
    y = rng.integers(0, 7, 300)
    order = rng.permutation(300)
    for dtype in ("float32", "float64"):
        net = fastmlp.Network([37, 64, 33, 7], activation="tanh", output_activation="softmax", dtype=dtype, seed=1)
        out[dtype + "_forward"] = net.forward(X).tolist()
        out[dtype + "_loss"] = net.loss_and_grad(X, y, "log_loss")
        out[dtype + "_grads"] = net.grads.tolist()
        opt = fastmlp.SGD(0.05, momentum=0.9)
        out[dtype + "_epoch_loss"] = [net.train_epoch(X, y, "log_loss", opt, 32, order=order) for _ in range(3)]
        out[dtype + "_params"] = net.params.tolist()
    json.dump(out, sys.stdout)
"""


@needs_dispatch
def test_forced_variants_agree_within_float_tolerance(tmp_path):
    results = {}
    for variant in ALL:
        if LEVEL[variant] > REAL_LEVEL:
            continue
        run = _run(WORKLOAD, tmp_path, FASTMLP_CPU=variant, OMP_NUM_THREADS="1")
        assert run.returncode == 0, run.stderr
        results[variant] = json.loads(run.stdout)
        assert results[variant]["variant"] == variant
        assert f"-march={MARCH[variant]}" in results[variant]["flags"]
    assert len(results) >= 2, "this CPU runs only one variant: nothing to compare"
    base = results.pop("baseline")
    tol = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-6)}
    for variant, res in results.items():
        for key, value in base.items():
            if key in ("variant", "flags"):
                continue
            dtype = key.split("_")[0]
            np.testing.assert_allclose(res[key], value, **tol[dtype], err_msg=f"{variant} vs baseline: {key}")


# --- what the variants contain ---------------------------------------------
def _vex_instructions(path: Path) -> int:
    """How many VEX/EVEX-encoded (AVX, AVX2, AVX-512) instructions `path` contains."""
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True, check=True
    ).stdout
    count = 0
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].split(" ", 1)[0].startswith("v"):
            count += 1
    return count


@needs_dispatch
@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_only_the_avx_variants_contain_avx_instructions():
    # The baseline and the CPU probe must run on a CPU without AVX: not one
    # AVX instruction may have slipped in (e.g. through link-time optimization).
    package = Path(fastmlp.__file__).parent
    module = {name: next(package.glob(f"{name}.*.so")) for name in ("_cpu", "_core_baseline", "_core_avx2")}
    assert _vex_instructions(module["_cpu"]) == 0
    assert _vex_instructions(module["_core_baseline"]) == 0
    assert _vex_instructions(module["_core_avx2"]) > 1000
