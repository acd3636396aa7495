#!/usr/bin/env bash
# GPU check of the neural flows: the gpu-marked tests, then the GPU benchmarks, which write
# their results (with the card's name) into docs/benchmarks.md. Needs only torch, numpy,
# scipy, numba and pytest; finishes in under 5 minutes on one H100/H200.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to torch " + torch.__version__)
print("card:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda, flush=True)
PYEOF
start=$(date +%s)
timeout 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_neural_gpu.py
timeout 270 "$PY" -m benchmarks.bench_neural "$@"
echo "gpu_check: done in $(( $(date +%s) - start )) s"
