# Sourced by bin/*: make ./.venv with Kynsey and the given extras installed, at the versions in constraints.txt
# (pip reads PIP_CONSTRAINT; bin/lock refreshes the file).
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
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "installing kynsey[$extras] into .venv" >&2
    case ",$extras," in
      *,local,*) pin="$(sed -n 's/^llama[-_]cpp[-_]python==//Ip' constraints.txt)"
                 if ! .venv/bin/python -m pip cache list "llama_cpp_python-${pin:-*}-" 2>/dev/null | grep -qi llama; then
                   echo "compiling llama.cpp for the 'local' extra (no build of it in pip's cache yet): about 8 minutes" \
                        "on 2 cores, and it may take longer than 8 minutes on a busy machine; this happens once" >&2
                 fi ;;
    esac
    export PIP_CONSTRAINT="$ROOT/constraints.txt"
    # GGML_NATIVE=OFF: a portable AVX2 build. A native build on a VM whose CPU lists AMX crashed in ggml's AMX kernels.
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" .venv/bin/python -m pip install -q -e ".[$extras]"
    touch "$stamp"
  fi
}
