# Sourced by build_wheel.sh and test_wheel.sh: where the CPython interpreters are.
SUPPORTED_PYTHONS=(3.9 3.10 3.11 3.12 3.13)

# find_python X.Y: prints the path of a working pythonX.Y (PATH first, then
# $(pyenv root)/versions/X.Y.*), or nothing.
find_python() {
  local p root
  p=$(command -v "python$1" 2>/dev/null || true)
  if [ -n "$p" ] && "$p" -c pass 2>/dev/null; then echo "$p"; return; fi
  root=$(pyenv root 2>/dev/null || true)
  [ -n "$root" ] && ls -d "$root"/versions/"$1".*/bin/"python$1" 2>/dev/null | sort -V | tail -n 1 || true
}
