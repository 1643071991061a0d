"""Type stubs for fastmlp._cpu, the CPU probe (compiled for plain x86-64)."""

def level() -> int:
    """0: not x86-64, 1: x86-64, 2: x86-64-v2, 3: x86-64-v3 (AVX2, FMA), 4: x86-64-v4 (AVX-512)."""

def features() -> dict[str, bool]: ...
