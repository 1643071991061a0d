"""What the installed package carries: version, show_config(), type stubs."""

from __future__ import annotations

import ast
import importlib.metadata
import io
import subprocess
import sys
from pathlib import Path

import pytest

import fastmlp
from fastmlp import _core, _cpu

PACKAGE_DIR = Path(fastmlp.__file__).parent


def test_version_is_the_distributions_and_the_cores():
    assert fastmlp.__version__ == importlib.metadata.version("fastmlp")
    assert _core.build_info()["version"] == fastmlp.__version__


def test_build_info_describes_the_loaded_core():
    info = _core.build_info()
    assert set(info) >= {
        "version",
        "variant",
        "compiler",
        "cxx_flags",
        "eigen",
        "eigen_simd",
        "eigen_max_align_bytes",
        "openmp",
    }
    assert info["eigen"].startswith("3.4.")
    assert info["openmp"] >= 201107
    simd = set(info["eigen_simd"].split(", "))
    expected = {
        "baseline": {"SSE4.2", "SSE2"},
        "avx2": {"AVX2", "FMA", "AVX", "SSE4.2", "SSE2"},
        "avx512": {"AVX512", "AVX2", "FMA", "AVX", "SSE4.2", "SSE2"},
    }
    if info["variant"] in expected:
        assert simd == expected[info["variant"]]


def test_show_config_names_version_variant_reason_build_threads_and_extras():
    buf = io.StringIO()
    fastmlp.show_config(file=buf)
    text = buf.getvalue()
    sel = fastmlp._selection
    for needle in (
        f"fastmlp {fastmlp.__version__}",
        f"variant:      {sel.variant} ({sel.module})",
        f"why:        {sel.reason}",
        f"compiler:     {_core.build_info()['compiler']}",
        "cxx flags:",
        "eigen:        3.4.",
        "openmp:       OpenMP",
        f"gemm:         {_core.build_info()['gemm_kernel']} (",
        f"threads:      {fastmlp.get_num_threads()} ",
    ):
        assert needle in text, f"{needle!r} not in:\n{text}"
    for extra in ("sklearn", "scipy", "torch", "mpi4py", "matplotlib"):
        assert f"    {extra}:" in text
    # scikit-learn is a test requirement, so it must be reported as importable.
    import sklearn

    assert f"sklearn:    {sklearn.__version__}" in text


def test_show_config_reports_a_missing_extra(monkeypatch):
    from fastmlp import _config

    monkeypatch.setitem(_config.EXTRAS, "torch", "no-such-distribution-fastmlp-test")
    assert _config._extra("torch") == "not installed"


HEAVY = ("sklearn", "scipy", "pandas", "matplotlib", "tqdm", "mpi4py", "torch", "onnx", "onnxruntime")


def _modules_after(code: str) -> set[str]:
    """The top-level packages imported, in a fresh interpreter, by `code`."""
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_import_fastmlp_imports_no_heavy_optional_package():
    # Network, optimizers, show_config() and `python -m fastmlp info` need none of them.
    loaded = _modules_after("import fastmlp; fastmlp.Network([2, 3, 1]); fastmlp.show_config()")
    assert "fastmlp" in loaded and "numpy" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.slow
def test_the_estimators_are_imported_on_first_use_and_are_sklearn_estimators():
    loaded = _modules_after("import fastmlp; fastmlp.MLPClassifier")
    assert "sklearn" in loaded  # a test requirement: the estimators then subclass its BaseEstimator
    from sklearn.base import BaseEstimator

    assert issubclass(fastmlp.MLPClassifier, BaseEstimator)
    assert fastmlp.MLPRegressor.__module__ == "fastmlp.estimators"
    assert {"MLPClassifier", "MLPRegressor", "ConvergenceWarning"} <= set(dir(fastmlp))
    with pytest.raises(AttributeError, match="no attribute 'MLPClassifer'"):
        fastmlp.MLPClassifer  # noqa: B018


def test_python_m_fastmlp_info_prints_show_config(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fastmlp", "info"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"fastmlp {fastmlp.__version__}" in result.stdout
    assert "variant:" in result.stdout and "why:" in result.stdout


def test_py_typed_ships_with_the_package():
    assert (PACKAGE_DIR / "py.typed").is_file()


def _stub_names(tree: ast.Module) -> dict[str, set[str] | None]:
    """Top-level names in a stub: classes map to their member names, functions to None."""
    out: dict[str, set[str] | None] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = None
        elif isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            out[node.name] = members
    return out


def _module_names(module) -> dict[str, set[str] | None]:
    out: dict[str, set[str] | None] = {}
    for name in dir(module):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if isinstance(obj, type):
            # own members, as the stub lists them (__init__ only where the class defines one)
            members = {k for k in vars(obj) if not k.startswith("_")}
            init = vars(obj).get("__init__")
            if init is not None and "Initialize self" not in (init.__doc__ or ""):
                members.add("__init__")
            out[name] = members
        else:
            out[name] = None
    return out


def _runtime_signatures(func) -> list[list[str]]:
    """Parameter names of each of pybind11's signature lines (one, or one per overload: ``1. name(...)``)."""
    lines = (func.__doc__ or "").lstrip().splitlines()
    if len(lines) > 1 and lines[1].strip() == "Overloaded function.":
        return [_params_of(line.split(". ", 1)[1]) for line in lines if line[:1].isdigit() and ". " in line]
    return [_params_of(lines[0])]


def _params_of(line: str) -> list[str]:
    """Parameter names from a signature line, ``name(self: T, a: U[V, W], b: X) -> R``."""
    inside = line[line.index("(") + 1 : line.rindex(") ->")]
    names, depth, start = [], 0, 0
    for i, ch in enumerate(inside + ","):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            names.append(inside[start:i].split(":")[0].strip())
            start = i + 1
    return [n for n in names if n and n != "self"]


def _stub_functions(tree: ast.Module) -> dict[str, list[list[str]]]:
    """'name' or 'Class.name' -> parameter names (without self) of every stubbed function, one list per
    overload (in order)."""

    def params(f: ast.FunctionDef) -> list[str]:
        return [a.arg for a in f.args.args if a.arg != "self"] + ([f"**{f.args.kwarg.arg}"] if f.args.kwarg else [])

    out: dict[str, list[list[str]]] = {}
    for n in tree.body:
        if isinstance(n, ast.FunctionDef):
            out.setdefault(n.name, []).append(params(n))
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for f in cls.body:
            if isinstance(f, ast.FunctionDef) and not any(  # properties and their setters
                (isinstance(d, ast.Name) and d.id == "property")
                or (isinstance(d, ast.Attribute) and d.attr == "setter")
                for d in f.decorator_list
            ):
                out.setdefault(f"{cls.name}.{f.name}", []).append(params(f))
    return out


@pytest.mark.parametrize("module, stub_name", [(_core, "_core.pyi"), (_cpu, "_cpu.pyi")], ids=["_core", "_cpu"])
def test_stubs_match_the_compiled_module(module, stub_name):
    stub = PACKAGE_DIR / stub_name
    assert stub.is_file(), f"{stub} is not installed"
    tree = ast.parse(stub.read_text())
    assert _stub_names(tree) == _module_names(module)
    checked = 0
    for qualname, stub_params in _stub_functions(tree).items():
        obj = module
        for part in qualname.split("."):
            obj = getattr(obj, part)
        assert _runtime_signatures(obj) == stub_params, qualname
        checked += 1
    assert checked >= 2


def test_distribution_metadata_is_complete():
    meta = importlib.metadata.metadata("fastmlp")
    assert meta["Name"] == "fastmlp" and meta["Version"] == fastmlp.__version__
    assert meta["Summary"] and meta["Requires-Python"] == ">=3.9"
    assert "MIT" in (meta["License"] or meta["License-Expression"] or "")
    assert "# fastmlp" in (meta.get_payload() or meta["Description"] or "")  # the README
    assert meta["Description-Content-Type"] == "text/markdown"
    extras = {"sklearn", "test", "bench", "bench-tabular", "mpi", "parquet", "progress", "onnx", "torch", "dev"}
    assert set(meta.get_all("Provides-Extra")) == extras
    runtime = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert [r.split(">")[0].split("=")[0].split(";")[0].strip() for r in runtime] == ["numpy"]
    assert any(c.startswith("License :: OSI Approved") for c in meta.get_all("Classifier"))


def test_demo_plot_without_matplotlib_says_so_before_training(monkeypatch, capsys, tmp_path):
    from fastmlp.__main__ import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    assert main(["demo", "--plot", str(tmp_path / "x.png")]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "--plot needs matplotlib: pip install matplotlib"
    assert captured.out == ""  # nothing trained
