#!/usr/bin/env bash
# Idempotent environment setup for mfglab.
#
#   1. Debian packages: DOLFINx, petsc4py, mpi4py, gmsh (apt), unless the
#      system python already imports them (or MFGLAB_SKIP_APT=1).
#   2. A venv `.venv` made from the *system* python with
#      --system-site-packages, so the apt DOLFINx is visible.
#   3. pip packages with numpy pinned to a version the system's compiled
#      modules (DOLFINx, petsc4py, SciPy) accept.
#
# A stamp keyed on the dependency files makes a second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${MFGLAB_VENV:-.venv}
STAMP="$VENV/.mfglab-stamp"
KEY=$(cat pyproject.toml .ci/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] && [ -x "$VENV/bin/python" ]; then
    exit 0
fi

log() { printf '[setup] %s\n' "$*"; }

# --- system python: the one apt's DOLFINx is built for -------------------
SYSPY=${MFGLAB_SYSTEM_PYTHON:-}
if [ -z "$SYSPY" ]; then
    for cand in /usr/bin/python3 python3; do
        if command -v "$cand" >/dev/null 2>&1; then SYSPY=$(command -v "$cand"); break; fi
    done
fi
[ -n "$SYSPY" ] || { echo "setup: no python3 found" >&2; exit 1; }

sudo_cmd=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
fi

have_fe() { "$SYSPY" -c 'import dolfinx, petsc4py, mpi4py' >/dev/null 2>&1; }
have_venv() { "$SYSPY" -c 'import ensurepip, venv' >/dev/null 2>&1; }

if [ "${MFGLAB_SKIP_APT:-0}" != 1 ] && { ! have_fe || ! have_venv; } && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] || [ -n "$sudo_cmd" ]; then
        log "installing Debian packages (DOLFINx, PETSc, MPI, gmsh; about 1-2 minutes)"
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends \
            python3-dolfinx python3-petsc4py python3-mpi4py python3-gmsh python3-venv \
            python3-dev openmpi-bin >/dev/null
    else
        log "not root and no sudo: skipping apt; the FE solver will be unavailable"
    fi
fi
if [ "$SYSPY" != /usr/bin/python3 ] || ! have_fe; then
    log "DOLFINx is not importable by $SYSPY: FE tests will be skipped (see README: conda)"
fi

PYVER=$("$SYSPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
log "system python $SYSPY ($PYVER)"

# --- venv ------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV (--system-site-packages)"
    "$SYSPY" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"

# --- constraints: keep numpy ABI-compatible with the system's compiled modules
CONS="$VENV/constraints.txt"
SYSNP=$("$SYSPY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || echo none)
case "$SYSNP" in
    none) echo "numpy<2.4" > "$CONS" ;;
    1.*)  echo "numpy==1.26.4" > "$CONS" ;;     # Debian 12: system modules built on numpy 1.24
    *)    echo "numpy==$SYSNP" > "$CONS" ;;     # Debian 13: keep the system's numpy 2.x
esac
# Matplotlib 3.10+ needs numpy>=1.25 only; the pin above keeps pip from pulling numpy 2.
log "constraints: $(tr '\n' ' ' < "$CONS")"

PIP=("$PY" -m pip install -q --disable-pip-version-check -c "$CONS")

# torch: on Python 3.11 the CPU wheel of 2.13.0 is on this disk (no download);
# elsewhere pip fetches a build from PyPI -- the only heavy step.
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    if [ "$PYVER" = 3.11 ]; then TORCH="torch==2.13.0"; else TORCH="torch>=2.2"; fi
    log "installing $TORCH"
    "${PIP[@]}" "$TORCH"
fi

log "installing mfglab and its pip dependencies"
"${PIP[@]}" -e ".[test]"

log "checking imports"
"$PY" - <<'PYEOF'
import importlib, sys
for mod in ("numpy", "scipy", "numba", "torch", "ot", "matplotlib", "tqdm", "pytest", "pde", "neural", "compare"):
    importlib.import_module(mod)
try:
    import dolfinx, petsc4py, mpi4py  # noqa: F401
    print("[setup] DOLFINx", dolfinx.__version__, "available")
except Exception as exc:  # FE is optional; say so
    print("[setup] DOLFINx not available:", exc)
import numpy
print("[setup] numpy", numpy.__version__, "python", sys.version.split()[0])
PYEOF
echo "$KEY" > "$STAMP"
log "done"
