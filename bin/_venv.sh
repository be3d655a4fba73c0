# Sourced by bin/*: make ./.venv with Kynsey and the given extras installed.
# pip keeps built wheels in its cache, so llama.cpp (the `local` extra) compiles once per machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ensure_venv() {
  local extras="$1" stamp=".venv/.installed-$1"
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing kynsey[$extras] into .venv (the first install of the 'local' extra compiles llama.cpp: ~8 min)" >&2
    # GGML_NATIVE=OFF: a portable AVX2 build. A native build on a VM whose CPU lists AMX crashed in ggml's AMX kernels.
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" .venv/bin/python -m pip install -q -e ".[$extras]"
    touch "$stamp"
  fi
}
