#!/usr/bin/env bash
# Applies the project's formatters to the whole tree, in place:
#   ruff format    python/ tests/ benchmarks/ examples/ tools/  (settings: [tool.ruff] in pyproject.toml)
#   clang-format   cpp/ and examples/cpp                        (settings: .clang-format)
# then sorts imports (ruff's isort rule, the one lint finding a formatter may leave).
# .ci/run checks the same with `ruff format --check` and `clang-format --dry-run --Werror`.
# The tools are the versions pinned in pyproject.toml's "dev" extra:
#   pip install ruff==... clang-format==...   (or: pip install -e ".[dev]")
# RUFF=... / CLANG_FORMAT=... choose other executables.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff=${RUFF:-ruff}
clang_format=${CLANG_FORMAT:-clang-format}

python_paths=(python tests benchmarks examples tools)
"$ruff" check --fix --select I --quiet "${python_paths[@]}"
"$ruff" format "${python_paths[@]}"

mapfile -t cxx < <(find cpp examples/cpp -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' \) | sort)
"$clang_format" -i --style=file "${cxx[@]}"
echo "formatted ${#cxx[@]} C++ files with $("$clang_format" --version | grep -o 'version [0-9.]*')"
