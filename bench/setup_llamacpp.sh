#!/usr/bin/env bash
# Builds llama-cpp-python (pinned) with its OpenAI-compatible server into its own virtualenv,
# bench/.venv-llamacpp, for bench/bench_gguf.py's side-by-side with llama.cpp. It compiles
# llama.cpp from source (about 5 minutes on 2 cores) and is not part of `make test`.
#
#     bash bench/setup_llamacpp.sh            # needs cmake and a C++ compiler (apt-get install cmake g++)
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="$HERE/.venv-llamacpp"
PY="${PYTHON:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
    echo "llama-cpp-python $VERSION already in $VENV"
    exit 0
fi
command -v cmake >/dev/null || { echo "cmake is missing: apt-get install cmake g++" >&2; exit 1; }
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# Native CPU build (AVX2/AVX-512 as the machine has), like a user's `pip install` on their machine.
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$VENV/bin/pip" install --no-cache-dir "llama-cpp-python[server]==$VERSION"
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'in $VENV')"
