#!/usr/bin/env bash
# The test suite: sets up ./.venv itself, then runs pytest (extra arguments are passed on).
# Tests that need ../shared/data fail (not skip) when CI=true and it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
./scripts/ensure_venv.sh "cpu,test,notebooks,instruments"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" MPLBACKEND=Agg PYTHONHASHSEED=0
exec .venv/bin/python -m pytest "$@"
