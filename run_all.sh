#!/usr/bin/env bash
# The study through its notebooks: `./run_all.sh --help` for the options (python -m upsampler.study.runner).
#
# Runs in the active Python when it can import Keras (on TensorFlow, or on JAX where TensorFlow is
# not installed), papermill and this checkout's package (a conda env, Colab, a GPU machine with JAX,
# your own venv); otherwise it creates ./.venv once (scripts/ensure_venv.sh), with the GPU build of
# TensorFlow when an NVIDIA GPU is present. UPSAMPLER_PYTHON picks the Python.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${UPSAMPLER_PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 MPLBACKEND="${MPLBACKEND:-Agg}" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
ready() {  # $1 can import papermill, upsampler from this checkout and Keras with its backend
  "$1" - "$root" >/dev/null 2>&1 <<'PY'
import os, sys
import papermill, upsampler, keras  # upsampler first: it picks JAX where TensorFlow is missing
sys.exit(0 if os.path.dirname(os.path.dirname(os.path.abspath(upsampler.__file__))) == sys.argv[1] else 1)
PY
}
for arg in "$@"; do  # help needs no environment: print it at once when this Python can
  if [[ "$arg" == "-h" || "$arg" == "--help" ]] && [[ -z "${UPSAMPLER_USE_VENV:-}" ]] &&
     "$py" -c 'import sys; sys.path.insert(0, sys.argv[1]); from upsampler.study.runner import build_parser; build_parser().print_help()' "$root" 2>/dev/null; then
    exit 0
  fi
done
if [[ -z "${UPSAMPLER_USE_VENV:-}" ]] && ready "$py"; then
  echo "run_all: using $(command -v "$py" || echo "$py") (the active environment)" >&2
  exec "$py" -m upsampler.study.runner "$@"
fi
extras="cpu,test,notebooks,instruments"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  extras="gpu,test,notebooks,instruments"
fi
"$root/scripts/ensure_venv.sh" "$extras" >&2
echo "run_all: using $root/.venv (extras $extras)" >&2
exec "$root/.venv/bin/python" -m upsampler.study.runner "$@"
