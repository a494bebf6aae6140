#!/bin/bash
# os-brick (OpenStack's connector library) for the interop scenario, installed once per version
# with pip on the host and packed as a tarball the guest unpacks into its /tmp.
#
#   tests/vm/osbrick.sh          prints the tarball's path on stdout (builds it when missing)
#
# Cached as target/vm/osbrick-<version>-py<X.Y>.tar (HOSTBRICK_VM_DIR); a present tarball is
# used as it is. The guest's Python is Debian 12's 3.11, so the install is made by a host
# Python 3.11 (Debian's /usr/bin/python3.11 first) with binary wheels only (nothing is
# compiled; the .pyc files pip writes are valid for any 3.11). Without pip, python3-pip is
# installed from the Debian mirror (private apt state, needs root). Needs the Python package
# index (pip's ordinary client, one `pip install`).
set -euo pipefail
. "$(dirname "$0")/common.sh"

# (Kept here, not in common.sh: common.sh is part of the guest image's cache key.)
VM_OSBRICK_VERSION=7.1.1
PYVER=3.11      # the guest's Python (Debian 12)
TAR=$VM_WORK_DIR/osbrick-$VM_OSBRICK_VERSION-py$PYVER.tar

if [ -s "$TAR" ]; then
    vm_log "os-brick $VM_OSBRICK_VERSION cached: $TAR"
    echo "$TAR"
    exit 0
fi

find_python() {
    local p
    for p in /usr/bin/python$PYVER "$(command -v python$PYVER || true)" "$(command -v python3 || true)"; do
        [ -n "$p" ] && [ -x "$p" ] || continue
        [ "$("$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$PYVER" ] || continue
        echo "$p"; return 0
    done
    return 1
}

PY=$(find_python) || vm_die "no Python $PYVER on the host (the guest runs Debian 12's $PYVER; os-brick's compiled dependencies must match it)"
if ! "$PY" -m pip --version >/dev/null 2>&1; then
    [ "$PY" = /usr/bin/python$PYVER ] || vm_die "$PY has no pip module"
    vm_need_root "osbrick.sh (installing python3-pip)"
    vm_apt_private "$VM_WORK_DIR/host-apt"
    vm_log "installing python3-pip (for pip install os-brick)"
    DEBIAN_FRONTEND=noninteractive apt-get "${VM_APT_OPTS[@]}" install -y -q --no-install-recommends python3-pip >&2
    "$PY" -m pip --version >/dev/null 2>&1 || vm_die "$PY still has no pip after installing python3-pip"
fi

mkdir -p "$VM_WORK_DIR"
BUILD=$VM_WORK_DIR/.osbrick-build.$$
trap 'rm -rf "$BUILD" "$TAR.tmp.$$"' EXIT
rm -rf "$BUILD"; mkdir -p "$BUILD/osbrick"
vm_log "pip install os-brick==$VM_OSBRICK_VERSION with $PY ($("$PY" -m pip --version | cut -d' ' -f1-2))"
T0=$(date +%s)
# --target skips pip's externally-managed check (PEP 668): nothing is installed into $PY itself.
PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --disable-pip-version-check \
    --no-warn-script-location --only-binary=:all: --target "$BUILD/osbrick" \
    "os-brick==$VM_OSBRICK_VERSION" >&2 \
    || vm_die "pip install os-brick==$VM_OSBRICK_VERSION failed (is the Python package index reachable?)"
[ -d "$BUILD/osbrick/os_brick" ] || vm_die "pip install left no os_brick package in $BUILD/osbrick"
# The packages' own test suites are never imported: left out (8 MB less to unpack in the guest).
find "$BUILD/osbrick" -mindepth 2 -maxdepth 3 -type d -name tests -prune -exec rm -rf {} +
# What was installed, for the scenario's log.
(cd "$BUILD/osbrick" && ls -d ./*.dist-info | sed 's|^\./||; s|\.dist-info$||' | LC_ALL=C sort) > "$BUILD/osbrick/MANIFEST.hostbrick"
tar -C "$BUILD" -cf "$TAR.tmp.$$" osbrick
mv -f "$TAR.tmp.$$" "$TAR"
vm_log "os-brick $VM_OSBRICK_VERSION installed in $(( $(date +%s) - T0 ))s: $TAR ($(du -h "$TAR" | cut -f1), $(wc -l < "$BUILD/osbrick/MANIFEST.hostbrick") distributions)"
echo "$TAR"
