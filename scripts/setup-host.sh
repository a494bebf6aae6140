#!/usr/bin/env bash
# Installs, once, what building and testing hostbrick needs on a Debian host.
#   hb_ensure_build_deps   libudev-dev and pkg-config (for the udev crate)      scripts/attach
#   hb_ensure_test_deps    the above + libvirt-clients and libxml2-utils        scripts/test
#                          (`virt-xml-validate`: the libvirt XML golden tests run it in `cargo test`)
# Sourced by scripts/attach and scripts/test, or run alone (then: hb_ensure_test_deps).
# Packages already present are left alone; installing needs root (or passwordless sudo).
set -euo pipefail

hb_log() { printf '[setup %s] %s\n' "$(date -u +%T)" "$*" >&2; }

hb_apt_install() {
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

hb_missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$p"
    done
}

hb_ensure_packages() {
    local missing
    mapfile -t missing < <(hb_missing_packages "$@")
    if [ ${#missing[@]} -gt 0 ]; then
        hb_log "installing ${missing[*]}"
        hb_apt_install "${missing[@]}"
    fi
}

hb_ensure_build_deps() {
    command -v cargo >/dev/null || { hb_log "cargo not found: install a Rust toolchain (rustup) first"; return 1; }
    hb_ensure_packages libudev-dev pkg-config
}

hb_ensure_test_deps() {
    hb_ensure_build_deps
    hb_ensure_packages libvirt-clients libxml2-utils
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    hb_ensure_test_deps
fi
