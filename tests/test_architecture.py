"""The package's structure: every module imports alone, no import cycles, no private reach-ins.

Rules checked here (see CONTRIBUTING.md):

1. Each ``fastmlp`` module imports on its own in a fresh interpreter.
2. The graph of *module-level* imports among the package's modules is acyclic. An import
   inside a function (a "lazy" import) runs only when called; each one between package
   modules must be listed in ``LAZY_IMPORTS`` with its reason, and only those may close a
   cycle. Imports under ``if TYPE_CHECKING:`` are not executed and are ignored. The package
   itself (``fastmlp/__init__.py``) is not a node: it runs before any of its modules, so
   ``from . import __version__`` is not an edge.
3. No module reaches a private name (``_x``, not a dunder) of another fastmlp module:
   ``from .module import _x`` is an error unless ``module`` is itself a private helper module
   (its name starts with ``_``: ``_validation``, ``_core``, ``_compat``, ``_labels``, ...
   exist to be shared inside the package); ``obj._x`` is an error unless ``obj`` is ``self``,
   ``cls``, a private helper module, or in ``THIRD_PARTY_PRIVATE`` (another library's
   internals that fastmlp must touch for compatibility).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fastmlp

PACKAGE_DIR = Path(fastmlp.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem not in ("__init__", "__main__"))

# (importer, imported): why the import is deferred to call time.
LAZY_IMPORTS = {
    ("network", "distributed"): "Network.train_epoch(comm=) kept for compatibility: runs distributed.train_epoch",
    ("network", "io"): "Network.save/load write and read the .npz format",
    ("estimators", "distributed"): "distributed='mpi' only (mpi4py is an optional extra)",
    ("estimators", "io"): "save() and to_sklearn(): the file format and scikit-learn conversion",
    ("estimators", "_validation"): "helpers used by score() and fit() only",
    ("io", "estimators"): "load(): the estimator classes (and scikit-learn) only when a model is read",
    ("export", "network"): "isinstance check; export is imported without the engine's Python layer",
    ("export", "estimators"): "the fastmlp estimators inside a pipeline, registered with skl2onnx on demand",
    ("io", "network"): "load(): a Network's file is read by Network.load (which imports io lazily itself)",
    ("_config", "_dispatch"): "show_config: which core variant was chosen",
}

# (module, expression): another library's private attribute, touched for compatibility.
THIRD_PARTY_PRIVATE = {
    ("_compat", "np.random.mtrand._rand"): "NumPy's global RandomState (scikit-learn's check_random_state(None))",
    ("_compat", "est._validate_data"): "scikit-learn < 1.6's BaseEstimator._validate_data",
    ("io", "sk._label_binarizer"): "scikit-learn's MLPClassifier keeps its label binarizer there",
}


def _source(name: str) -> ast.Module:
    return ast.parse((PACKAGE_DIR / f"{name}.py").read_text(encoding="utf-8"))


def _targets(node: ast.AST, name: str) -> list[str]:
    """The package modules an import statement in module `name` loads (submodules only)."""
    found = []
    if isinstance(node, ast.ImportFrom):
        if node.level == 0 and (node.module or "").startswith("fastmlp"):
            parts = node.module.split(".")[1:]
        elif node.level == 1:
            parts = node.module.split(".") if node.module else []
        else:
            return []
        if parts:
            found.append(parts[0])
        else:  # from . import x, y: submodules, or names of the package itself
            found += [a.name for a in node.names]
    elif isinstance(node, ast.Import):
        found += [a.name.split(".")[1] for a in node.names if a.name.startswith("fastmlp.")]
    return [m for m in found if m in MODULES and m != name]


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(module-level, function-local) package imports of module `name`."""
    top: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (lazy if in_function else top).update(_targets(child, name))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(_source(name), False)
    return top, lazy


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


@pytest.mark.parametrize("name", MODULES + ["__main__"])
def test_each_module_imports_alone_in_a_fresh_interpreter(name):
    code = (
        f"import fastmlp.{name}"
        if name != "__main__"
        else "import importlib; importlib.import_module('fastmlp.__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_module_level_imports_are_acyclic():
    graph = {name: _imports(name)[0] for name in MODULES}
    assert _cycle(graph) is None, f"import cycle among fastmlp's modules: {' -> '.join(_cycle(graph))}"


def test_function_local_imports_between_modules_are_declared():
    lazy = {(name, target) for name in MODULES for target in _imports(name)[1]}
    undeclared = sorted(lazy - set(LAZY_IMPORTS))
    assert not undeclared, (
        f"function-local imports not in LAZY_IMPORTS (import at module level, or declare why not): {undeclared}"
    )
    stale = sorted(set(LAZY_IMPORTS) - lazy)
    assert not stale, f"LAZY_IMPORTS lists imports that no longer exist: {stale}"


def test_no_module_reaches_a_private_name_of_another():
    private_modules = {m for m in MODULES if m.startswith("_")} | {"_core", "_cpu"}
    found = []
    for name in MODULES:
        tree = _source(name)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level >= 1
                and node.module
                and not node.module.split(".")[0].startswith("_")
            ):
                found += [
                    f"{name}: from .{node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ({"self", "cls"} | private_modules):
                    continue
                expr = ast.unparse(node)
                if (name, expr) not in THIRD_PARTY_PRIVATE:
                    found.append(f"{name}:{node.lineno}: {expr}")
    assert not found, "private reach-ins (make the name public, or pass what is needed):\n" + "\n".join(found)


def test_third_party_allowlist_is_current():
    for module, expr in THIRD_PARTY_PRIVATE:
        assert expr in (PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8"), (module, expr)
