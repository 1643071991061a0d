"""``fastmlp.show_config()``: what a bug report should start with."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any, TextIO

# Optional packages that fastmlp works with: import name -> distribution (pip) name.
EXTRAS = {
    "sklearn": "scikit-learn",
    "scipy": "scipy",
    "torch": "torch",
    "mpi4py": "mpi4py",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
}


def _openmp_version(date: int) -> str:
    names = {201107: "3.1", 201307: "4.0", 201511: "4.5", 201811: "5.0", 202011: "5.1", 202111: "5.2"}
    return f"OpenMP {names[date]} ({date})" if date in names else f"_OPENMP {date}"


def _extra(module: str) -> str:
    """The installed version of an optional package, read from its distribution's metadata:
    never imported (importing PyTorch alone takes seconds)."""
    try:
        return importlib.metadata.version(EXTRAS[module])
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def config() -> dict[str, Any]:
    """The facts :func:`show_config` prints, as a dict."""
    import numpy

    import fastmlp
    from fastmlp import _core, _cpu, _dispatch
    from fastmlp._dispatch import LEVEL_NAMES

    sel = _dispatch.selected
    assert sel is not None  # importing fastmlp loaded the core
    info = dict(_core.build_info())
    features = _cpu.features()
    return {
        "fastmlp": fastmlp.__version__,
        "location": os.path.dirname(fastmlp.__file__),
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "cpu": LEVEL_NAMES.get(sel.cpu_level, str(sel.cpu_level)),
        "cpu_features": " ".join(name for name, has in features.items() if has) or "none reported",
        "variant": sel.variant,
        "variant_reason": sel.reason,
        "module": sel.module,
        "FASTMLP_CPU": os.environ.get("FASTMLP_CPU", "unset"),
        "compiler": info.get("compiler", "unknown"),
        "cxx_flags": info.get("cxx_flags", ""),
        "eigen": f"{info['eigen']} (SIMD: {info['eigen_simd']}; alignment {info['eigen_max_align_bytes']} bytes)",
        "openmp": _openmp_version(int(info["openmp"])),
        # Which GEMM kernel runs the float32 products (cpp/include/fastmlp/gemm.hpp: "packed",
        # fastmlp's own, or Eigen's; float64 always Eigen's), why, and how a step shares them.
        "gemm": f"{info['gemm_kernel']} ({info['gemm_why']}; this build has: "
        f"{', '.join(info['gemm_kernels'])}; float64: eigen), one product per thread's share: "
        f"row slices or columns (FASTMLP_STEP_SPLIT={os.environ.get('FASTMLP_STEP_SPLIT', 'unset')})",
        # Which kernel runs precision="bf16" products (gemm.hpp: "avx512bf16" or "fallback").
        "bf16": f"{info['bf16_kernel']} ({info['bf16_why']}; available: {', '.join(info['bf16_kernels'])})",
        "FASTMLP_GEMM": os.environ.get("FASTMLP_GEMM", "unset"),
        "threads": fastmlp.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "cpu_count": os.cpu_count(),
        "extras": {name: _extra(name) for name in EXTRAS},
    }


def show_config(file: TextIO | None = None) -> None:
    """Prints fastmlp's version, CPU variant (and why), build and environment.

    The version; the CPU's x86-64 level and the variant of the compiled core
    in use, with the reason (``auto``, forced by ``FASTMLP_CPU``, or a build
    for one machine); compiler and flags; Eigen's version and SIMD level;
    which GEMM runs the products and how a training step splits them;
    OpenMP's version and the thread count; and which optional packages
    (scikit-learn, SciPy, PyTorch, mpi4py, Matplotlib, tqdm, ONNX) are installed,
    from their metadata, without importing them. Paste it into
    every bug report.
    """
    out = sys.stdout if file is None else file
    c = config()
    lines = [
        f"fastmlp {c['fastmlp']}  ({c['location']})",
        f"  python:       {c['python']}",
        f"  platform:     {c['platform']}",
        f"  numpy:        {c['numpy']}",
        f"  cpu:          {c['cpu']}",
        f"  cpu features: {c['cpu_features']}",
        f"  variant:      {c['variant']} ({c['module']})",
        f"    why:        {c['variant_reason']}",
        f"    FASTMLP_CPU: {c['FASTMLP_CPU']}",
        f"  compiler:     {c['compiler']}",
        f"  cxx flags:    {c['cxx_flags']}",
        f"  eigen:        {c['eigen']}",
        f"  openmp:       {c['openmp']}",
        f"  gemm:         {c['gemm']}",
        f"  bf16:         {c['bf16']}",
        f"    FASTMLP_GEMM: {c['FASTMLP_GEMM']}",
        f"  threads:      {c['threads']} (OMP_NUM_THREADS={c['OMP_NUM_THREADS']}, {c['cpu_count']} CPUs)",
        "  extras:",
    ]
    lines += [f"    {name + ':':<11} {status}" for name, status in c["extras"].items()]
    print("\n".join(lines), file=out)
