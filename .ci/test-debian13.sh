#!/usr/bin/env bash
# `make test-debian13`: run `make test` on Debian 13 (trixie), which ships
# Python 3.13, DOLFINx 0.9 and PETSc 3.22 -- the adapter branches that the
# Debian 12 machine (DOLFINx 0.5, PETSc 3.18) never exercises.
#
#   1. Builds a trixie chroot once with debootstrap, cached outside the
#      repository in $MFGLAB_TRIXIE_ROOT (default /var/cache/mfglab-trixie).
#      The chroot's apt packages and its venv (/opt/mfglab-venv, including a
#      PyPI torch of a few GB) persist there, so later runs are quick.
#   2. Bind-mounts /proc, /sys and /dev into it (unmounted on exit, whatever
#      happens).
#   3. Copies the working tree (tracked and untracked-but-not-ignored files,
#      uncommitted edits included) to /root/mfglab inside, then runs
#      `.ci/setup.sh` and `make test` there, timing both.
#
#   bash .ci/test-debian13.sh            # build if needed, then test
#   bash .ci/test-debian13.sh --prepare  # only build the chroot
#
# Needs root (or sudo), debootstrap (installed with apt-get if missing) and
# access to Debian's archive (the one this machine's apt uses, or
# $MFGLAB_TRIXIE_MIRROR) and PyPI.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${MFGLAB_TRIXIE_ROOT:-/var/cache/mfglab-trixie}
# the Debian archive this machine's apt already uses (deb822 or one-line sources)
host_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "URIs:" || $1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:[/][/]/) { print $i; break } }' "$f"
    done | grep -v -- '-security' | head -n 1 || true
}
MIRROR=${MFGLAB_TRIXIE_MIRROR:-$(host_mirror)}
[ -n "$MIRROR" ] || { echo "test-debian13: no Debian archive in /etc/apt sources; set MFGLAB_TRIXIE_MIRROR" >&2; exit 2; }
DEST=/root/mfglab
log() { printf '[test-debian13] %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "test-debian13: needs root or sudo" >&2; exit 2; }
    SUDO=sudo
fi

# --- 1. the chroot, built once ---------------------------------------------
if [ ! -f "$ROOT/.mfglab-bootstrapped" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q debootstrap >/dev/null
    fi
    log "building a Debian 13 chroot in $ROOT (about 5-10 minutes, once)"
    $SUDO rm -rf "$ROOT.partial"
    $SUDO mkdir -p "$(dirname "$ROOT")"
    t0=$(date +%s)
    $SUDO debootstrap --variant=minbase \
        --include=ca-certificates,git,make,python3,procps \
        trixie "$ROOT.partial" "$MIRROR"
    $SUDO rm -rf "$ROOT"
    $SUDO mv "$ROOT.partial" "$ROOT"
    echo "trixie $(date -u +%FT%TZ)" | $SUDO tee "$ROOT/.mfglab-bootstrapped" >/dev/null
    log "chroot built in $(( $(date +%s) - t0 )) s"
fi
[ "${1:-}" = --prepare ] && exit 0

# --- 2. mounts, undone on exit ----------------------------------------------
MOUNTED=()
cleanup() {
    local i
    for (( i=${#MOUNTED[@]}-1; i>=0; i-- )); do
        $SUDO umount -R "${MOUNTED[$i]}" 2>/dev/null || $SUDO umount -lR "${MOUNTED[$i]}" || true
    done
}
trap cleanup EXIT INT TERM
for d in proc sys dev; do
    $SUDO mkdir -p "$ROOT/$d"
    if ! mountpoint -q "$ROOT/$d"; then
        $SUDO mount --rbind "/$d" "$ROOT/$d"
        $SUDO mount --make-rslave "$ROOT/$d"
        MOUNTED+=("$ROOT/$d")
    fi
done
$SUDO cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# CA certificates added on the host (a TLS-inspecting proxy's, for example) so
# that apt and pip inside reach the same registries as the host does.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    $SUDO mkdir -p "$ROOT/usr/local/share/ca-certificates"
    $SUDO cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    $SUDO chroot "$ROOT" update-ca-certificates >/dev/null 2>&1 || true
fi

# --- 3. the working tree, then setup and tests ------------------------------
log "copying the working tree of $SRC"
$SUDO rm -rf "$ROOT$DEST"
$SUDO mkdir -p "$ROOT$DEST"
git -C "$SRC" ls-files -z --cached --others --exclude-standard \
    | (cd "$SRC" && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) \
    | $SUDO tar -xf - -C "$ROOT$DEST"

# A login-like environment; OpenMPI refuses root without these.
$SUDO chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    DEST="$DEST" /bin/bash -s <<'EOF'
set -uo pipefail
cd "$DEST"
# The venv lives outside the copy (/opt/mfglab-venv) so that a rerun does not
# download torch again; .venv points at it once it exists.
t0=$(date +%s)
MFGLAB_VENV=/opt/mfglab-venv bash .ci/setup.sh || { echo "[test-debian13] setup failed"; exit 1; }
ln -sfn /opt/mfglab-venv .venv
t1=$(date +%s)
echo "[test-debian13] setup: $(( t1 - t0 )) s"
.venv/bin/python - <<'PY'
import sys, numpy
try:
    import dolfinx, petsc4py
    fe = "DOLFINx %s, PETSc %s" % (dolfinx.__version__, ".".join(map(str, petsc4py.PETSc.Sys.getVersion())))
except Exception as exc:
    fe = "DOLFINx unavailable (%s)" % exc
import torch
print("[test-debian13] %s; Python %s; NumPy %s; torch %s"
      % (fe, sys.version.split()[0], numpy.__version__, torch.__version__))
PY
make test
rc=$?
echo "[test-debian13] make test: $(( $(date +%s) - t1 )) s, exit $rc"
exit $rc
EOF
