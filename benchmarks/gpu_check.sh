#!/usr/bin/env bash
# GPU check of the neural flows: the gpu-marked tests, then the GPU benchmarks, which write
# their results (with the card's name) into docs/benchmarks.md. Needs only torch, numpy,
# scipy, numba and pytest; meant to finish in under 5 minutes on one H100/H200.
#
#   bash benchmarks/gpu_check.sh [bench_neural options]
#   PY=/path/to/python bash benchmarks/gpu_check.sh          # choose the interpreter
#   GPU_CHECK_COPY_TO=DIR bash benchmarks/gpu_check.sh       # also copy the log and docs/benchmarks.md to DIR
set -uo pipefail
cd "$(dirname "$0")/.."
sees_cuda() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
if [ -z "${PY:-}" ]; then
    PY=python3
    # the project's venv only when its torch is a CUDA build that sees the card
    if [ -x .venv/bin/python ] && sees_cuda .venv/bin/python; then PY=.venv/bin/python; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG=$(mktemp)
copy_out() {
    if [ -n "${GPU_CHECK_COPY_TO:-}" ]; then
        mkdir -p "$GPU_CHECK_COPY_TO" && cp "$LOG" "$GPU_CHECK_COPY_TO/gpu_check.log" && cp docs/benchmarks.md "$GPU_CHECK_COPY_TO/"
    fi
}
trap 'copy_out; rm -f "$LOG"' EXIT
{
"$PY" - <<'PYEOF' || exit 1
import sys
try:
    import torch
except ImportError:
    sys.exit(f"gpu_check: {sys.executable} cannot import torch; set PY to a python with a CUDA build of torch")
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to torch " + torch.__version__ + " (" + sys.executable + ")")
print("card:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| python", sys.version.split()[0], flush=True)
PYEOF
start=$(date +%s)
rc=0
timeout 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_neural_gpu.py tests/test_sweep.py || rc=$?
echo "gpu tests: exit $rc after $(( $(date +%s) - start )) s"
timeout 270 "$PY" -m benchmarks.bench_neural "$@" || rc=$?
echo "gpu_check: exit $rc, done in $(( $(date +%s) - start )) s"
exit $rc
} 2>&1 | tee "$LOG"
