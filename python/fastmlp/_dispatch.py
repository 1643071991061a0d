"""Choosing the compiled core that this CPU can run, before importing it.

A source build (``pip install .``) has one module, ``fastmlp._core``,
optimized for the machine that built it. The wheel has one module per x86-64
level instead: ``_core_baseline`` (x86-64-v2), ``_core_avx2`` (x86-64-v3:
AVX2, FMA) and ``_core_avx512`` (x86-64-v4: AVX-512). Importing a variant that
the CPU cannot run kills the process with SIGILL, which no ``try``/``except``
can catch, so the CPU's level is read first, from ``fastmlp._cpu`` (compiled
for plain x86-64), and only a variant at or below it is ever imported.

``FASTMLP_CPU=baseline|avx2|avx512`` forces a variant (``auto`` or unset: the
best one); asking for one that the CPU cannot run is an ImportError that says
so, not a crash.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

# Best first. Each variant's x86-64 level and the -march it was compiled with.
VARIANTS = ("avx512", "avx2", "baseline")
LEVEL = {"baseline": 2, "avx2": 3, "avx512": 4}
MARCH = {"baseline": "x86-64-v2", "avx2": "x86-64-v3", "avx512": "x86-64-v4"}
LEVEL_NAMES = {
    0: "not x86-64",
    1: "x86-64 (no SSE4.2)",
    2: "x86-64-v2 (SSE4.2, no AVX2)",
    3: "x86-64-v3 (AVX2, FMA, no AVX-512)",
    4: "x86-64-v4 (AVX-512)",
}
ENV = "FASTMLP_CPU"


class Selection(NamedTuple):
    variant: str  # "native" (a one-machine build) or one of VARIANTS
    module: str  # the module imported as fastmlp._core
    reason: str  # why, in words (show_config prints it)
    cpu_level: int


def choose(cpu_level: int, available: Sequence[str], forced: str | None) -> tuple[str, str]:
    """The variant to import and why, or ImportError: the whole decision, without side effects.

    Parameters
    ----------
    cpu_level : int
        The CPU's x86-64 level (``fastmlp._cpu.level()``; 4 means AVX-512).
    available : sequence of str
        The variants this installation has (a subset of :data:`VARIANTS`).
    forced : str or None
        The value of ``FASTMLP_CPU`` (None, ``""`` or ``"auto"``: choose the best).
    """
    have = [v for v in VARIANTS if v in available]
    if not have:
        raise ImportError(
            "this fastmlp installation has no compiled core (no fastmlp._core nor any "
            "fastmlp._core_<variant> module): reinstall fastmlp"
        )
    forced = (forced or "").strip().lower()
    if forced and forced != "auto":
        if forced not in LEVEL:
            raise ImportError(
                f"{ENV}={forced!r} is not a CPU variant: use one of "
                f"{', '.join(reversed(VARIANTS))} or auto (or unset it)"
            )
        if forced not in have:
            raise ImportError(
                f"{ENV}={forced} asks for a variant that this fastmlp installation lacks (it has {', '.join(have)})"
            )
        if LEVEL[forced] > cpu_level:
            raise ImportError(
                f"{ENV}={forced} needs a {MARCH[forced]} CPU, but this CPU is "
                f"{LEVEL_NAMES.get(cpu_level, cpu_level)}: unset {ENV} to use the best "
                "variant this CPU runs"
            )
        return forced, f"forced by {ENV}={forced}"
    for variant in have:
        if LEVEL[variant] <= cpu_level:
            return variant, (
                f"auto: the best of this installation's variants ({', '.join(have)}) "
                f"that this CPU ({LEVEL_NAMES.get(cpu_level, cpu_level)}) runs"
            )
    raise ImportError(
        f"this CPU is {LEVEL_NAMES.get(cpu_level, cpu_level)}; fastmlp needs at least "
        f"x86-64-v2 (SSE4.2, POPCNT; any x86-64 CPU since about 2009)"
    )


def _exists(name: str) -> bool:
    return importlib.util.find_spec(f"{__package__}.{name}") is not None


selected: Selection | None = None  # what load() chose (show_config reports it)


def load() -> Selection:
    """Imports the right core, registers it as ``fastmlp._core`` and says which and why.

    Called by ``fastmlp/__init__.py`` before any module does ``from . import _core``.
    """
    global selected
    selected = _load()
    return selected


def _load() -> Selection:
    from . import _cpu

    level = int(_cpu.level())
    forced = os.environ.get(ENV)
    if _exists("_core"):
        if forced and forced.strip().lower() not in ("", "auto", "native"):
            raise ImportError(
                f"{ENV}={forced} asks for a CPU variant, but this fastmlp is a build for one "
                "machine (fastmlp._core, the default of `pip install .`), which has none: "
                f"unset {ENV}, or install the wheel or a source build with "
                "-C cmake.define.FASTMLP_DISPATCH=ON"
            )
        module = importlib.import_module(f"{__package__}._core")
        variant = str(module.build_info().get("variant", "native"))
        reason = "the only core of this build (`pip install .` compiles one, optimized for the machine that built it)"
        return Selection(variant, module.__name__, reason, level)
    variant, reason = choose(level, [v for v in VARIANTS if _exists(f"_core_{v}")], forced)
    name = f"{__package__}._core_{variant}"
    module = importlib.import_module(name)
    sys.modules[f"{__package__}._core"] = module
    return Selection(variant, name, reason, level)
