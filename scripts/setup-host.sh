#!/usr/bin/env bash
# Installs, once, what building and testing hostbrick needs on a Debian host.
#   hb_ensure_build_deps   libudev-dev and pkg-config (for the udev crate)      scripts/attach
#   hb_ensure_test_deps    the above + libvirt-clients and libxml2-utils        scripts/test
#                          (`virt-xml-validate`: the libvirt XML golden tests run it in `cargo test`)
#   hb_ensure_cargo_fuzz   cargo-fuzz, for building the fuzz targets             scripts/test
# Sourced by scripts/attach and scripts/test, or run alone (then: all of it).
# What is already present is left alone; installing packages needs root (or passwordless sudo).
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
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null || printf '%s\n' "$p"
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

# The cargo-fuzz release the fuzz targets are built with (scripts/test, README "Fuzzing").
HB_CARGO_FUZZ_VERSION=0.13.2

# The fuzz targets build on the stable toolchain: cargo-fuzz's sanitizer and coverage flags are
# unstable rustc options, which RUSTC_BOOTSTRAP=1 allows (scripts/test sets it for that step).
hb_ensure_cargo_fuzz() {
    command -v cargo >/dev/null || { hb_log "cargo not found: install a Rust toolchain (rustup) first"; return 1; }
    if [ "$(cargo fuzz --version 2>/dev/null)" = "cargo-fuzz $HB_CARGO_FUZZ_VERSION" ]; then
        return 0
    fi
    hb_log "installing cargo-fuzz $HB_CARGO_FUZZ_VERSION (cargo install, about a minute and a half)"
    cargo install --locked --quiet "cargo-fuzz@$HB_CARGO_FUZZ_VERSION"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    hb_ensure_test_deps
    hb_ensure_cargo_fuzz
fi
