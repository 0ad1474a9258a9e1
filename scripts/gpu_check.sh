#!/usr/bin/env bash
# The CUDA paths end to end (train bf16/TF32/compile, plan bench, batched eval, DDP):
# one JSON line of timings. See scripts/gpu_check.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" scripts/gpu_check.py "$@"
