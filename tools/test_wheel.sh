#!/usr/bin/env bash
# Tests built wheels as a user gets them: each is installed (with its [test]
# extra, read from the wheel's own metadata) into a fresh venv of its own
# interpreter (cpXY in the wheel's name -> pythonX.Y, see tools/pythons.sh),
# outside the source tree, and tested from a scratch folder, where
# `import fastmlp` can only find the installed one (FASTMLP_TEST_INSTALLED=1
# makes the suite fail otherwise).
#
# On the interpreter $FULL_SUITE_PYTHON (X.Y, default: python3's), with the
# extras onnx and progress and $FULL_SUITE_PACKAGES (e.g. torch==2.13.0):
#   1. show_config(), and mypy --strict on examples/typed_usage.py;
#   2. the full test suite on the variant the wheel picks for this CPU;
#   3. for each variant this CPU runs, FASTMLP_CPU=<variant> and the tests that
#      compare the compiled kernels with the NumPy reference (or finite
#      differences, scikit-learn parity, sparse vs dense) plus the dispatch tests
#      (FASTMLP_FULL_VARIANT_TESTS=1: the full suite for each instead).
# On every other interpreter: `import fastmlp` time, then the kernel-vs-reference
# and dispatch tests (not scikit-learn parity) on the variant it picks.
#
#   tools/test_wheel.sh dist/fastmlp-*.whl
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/tools/pythons.sh"
full=${FULL_SUITE_PYTHON:-$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
# (torch and onnxruntime are installed beside the full suite's interpreter only: their tests run there.)
subset="(reference or finite_differences or sparse or dispatch or variant or chosen or build_info or stubs) and not torch and not onnx and not export"
# scikit-learn parity needs scikit-learn >= 1.7 (MLP sample_weight, loss='poisson'),
# which no longer supports Python 3.9: it runs with the full suite.
full_subset="$subset or parity"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export FASTMLP_TEST_INSTALLED=1
unset FASTMLP_CPU

# import_time TAG PYTHON: `import fastmlp`'s cumulative time, by python -X importtime (best of 3).
import_time() {
  local us best=
  for _ in 1 2 3; do
    us=$("$2" -X importtime -c 'import fastmlp' 2>&1 | tail -n 1 | cut -d'|' -f2 | tr -d ' ')
    if [ -z "$best" ] || (( us < best )); then best=$us; fi
  done
  echo "=== $1: import fastmlp: $((best / 1000)) ms"
}

wheels=()
for whl in "$@"; do wheels+=("$(realpath "$whl")"); done  # before any cd
for wheel in "${wheels[@]}"; do
  tag=$(basename "$wheel" | cut -d- -f3)  # cp311
  version="${tag:2:1}.${tag:3}"
  python=$(find_python "$version")
  [ -n "$python" ] || { echo "no python$version for $(basename "$wheel")"; exit 1; }
  start=$SECONDS
  venv="$work/$tag"
  "$python" -m venv "$venv"
  py="$venv/bin/python"
  pip=("$py" -m pip install --quiet --disable-pip-version-check)
  "${pip[@]}" --upgrade pip
  cd "$work"
  pytest=("$py" -m pytest -p no:cacheprovider -q)
  if [[ "$version" != "$full" ]]; then
    "${pip[@]}" "$wheel[test]"
    import_time "$tag" "$py"
    echo "=== $tag: kernel-vs-reference and dispatch tests"
    "${pytest[@]}" "$repo/tests" -k "$subset"
    echo "=== $tag: tested in $((SECONDS - start)) s"
    continue
  fi
  # shellcheck disable=SC2086  # a list of requirements
  "${pip[@]}" "$wheel[test,onnx,progress]" mypy ${FULL_SUITE_PACKAGES:-}
  import_time "$tag" "$py"
  echo "=== $tag: show_config"
  "$py" -m fastmlp info
  echo "=== $tag: mypy --strict examples/typed_usage.py"
  cp "$repo/examples/typed_usage.py" "$work/"
  "$py" -m mypy --strict --no-incremental typed_usage.py
  "$py" typed_usage.py
  echo "=== $tag: full test suite, variant chosen automatically"
  "${pytest[@]}" "$repo/tests"
  level=$("$py" -c "from fastmlp import _cpu; print(_cpu.level())")
  declare -A needs=([baseline]=2 [avx2]=3 [avx512]=4)
  for variant in baseline avx2 avx512; do
    if (( level < needs[$variant] )); then
      echo "=== $tag: FASTMLP_CPU=$variant skipped: this CPU is x86-64 level $level"
      continue
    fi
    echo "=== $tag: FASTMLP_CPU=$variant"
    if [[ "${FASTMLP_FULL_VARIANT_TESTS:-0}" == 1 ]]; then
      FASTMLP_CPU=$variant "${pytest[@]}" "$repo/tests"
    else
      FASTMLP_CPU=$variant "${pytest[@]}" "$repo/tests" -k "$full_subset"
    fi
  done
  echo "=== $tag: tested in $((SECONDS - start)) s"
done
