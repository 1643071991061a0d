#!/usr/bin/env bash
# Tests a built wheel as a user gets it: installs it (with its [test] extra, read
# from the wheel's own metadata) into a fresh venv outside the source tree, then
# from a scratch folder, where `import fastmlp` can only find the installed one
# (FASTMLP_TEST_INSTALLED=1 makes the suite fail otherwise):
#   1. show_config(), and mypy --strict on examples/typed_usage.py;
#   2. the full test suite on the variant the wheel picks for this CPU;
#   3. for each variant this CPU runs, FASTMLP_CPU=<variant> and the tests that
#      compare the compiled kernels with the NumPy reference plus the dispatch
#      tests (FASTMLP_FULL_VARIANT_TESTS=1: the full suite for each instead).
#
#   tools/test_wheel.sh dist/fastmlp-*.whl
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
wheel=$(realpath "$1")
python=${PYTHON:-python3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check "$wheel[test]" mypy
cd "$work"
export FASTMLP_TEST_INSTALLED=1
unset FASTMLP_CPU

echo "=== wheel: show_config"
"$py" -m fastmlp info
echo "=== wheel: mypy --strict examples/typed_usage.py"
cp "$repo/examples/typed_usage.py" "$work/"
"$py" -m mypy --strict --no-incremental typed_usage.py
"$py" typed_usage.py

pytest=("$py" -m pytest -p no:cacheprovider)
echo "=== wheel: full test suite, variant chosen automatically"
"${pytest[@]}" "$repo/tests"

level=$("$py" -c "from fastmlp import _cpu; print(_cpu.level())")
declare -A needs=([baseline]=2 [avx2]=3 [avx512]=4)
for variant in baseline avx2 avx512; do
  if (( level < needs[$variant] )); then
    echo "=== wheel: FASTMLP_CPU=$variant skipped: this CPU is x86-64 level $level"
    continue
  fi
  echo "=== wheel: FASTMLP_CPU=$variant"
  if [[ "${FASTMLP_FULL_VARIANT_TESTS:-0}" == 1 ]]; then
    FASTMLP_CPU=$variant "${pytest[@]}" "$repo/tests"
  else
    FASTMLP_CPU=$variant "${pytest[@]}" "$repo/tests/test_network.py" "$repo/tests/test_dispatch.py" \
      "$repo/tests/test_packaging.py" -k "reference or finite_differences or dispatch or variant or chosen or build_info or stubs"
  fi
done
