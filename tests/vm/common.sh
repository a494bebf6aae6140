# Shared host-side helpers for the hostbrick VM suite. Sourced, never executed.
# shellcheck shell=bash

VM_SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_REPO_ROOT=$(cd "$VM_SRC_DIR/../.." && pwd)
# Everything the suite generates lives under target/vm (or $HOSTBRICK_VM_DIR).
VM_WORK_DIR=${HOSTBRICK_VM_DIR:-${CARGO_TARGET_DIR:-$VM_REPO_ROOT/target}/vm}

vm_log() { printf '[vm %s] %s\n' "$(date -u +%T)" "$*" >&2; }
vm_die() { printf '[vm %s] FATAL: %s\n' "$(date -u +%T)" "$*" >&2; exit 1; }

vm_need_root() {
    [ "$(id -u)" = 0 ] || vm_die "$1 must run as root (it installs packages / builds a root filesystem)"
}

# The Debian mirrors this machine already uses (deb822 .sources or one-line lists).
vm_mirrors() {
    local uris
    uris=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | awk '/^URIs:/{for(i=2;i<=NF;i++)print $i} /^deb /{for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:\/\//){print $i; break}}' || true)
    VM_MIRROR=$(printf '%s\n' "$uris" | grep -v -- '-security' | grep -E '/debian/?$' | head -n1 || true)
    VM_SECMIRROR=$(printf '%s\n' "$uris" | grep -- '-security' | head -n1 || true)
    VM_MIRROR=${HOSTBRICK_VM_MIRROR:-${VM_MIRROR:-http://deb.debian.org/debian}}
    VM_MIRROR=${VM_MIRROR%/}
    VM_SECMIRROR=${VM_SECMIRROR%/}
}

# Private apt state: our own sources list and package lists, /etc/apt and the
# system lists are left untouched. Sets the array VM_APT_OPTS.
#   vm_apt_private DIR [backports]
vm_apt_private() {
    local dir=$1 backports=${2:-}
    vm_mirrors
    mkdir -p "$dir/lists/partial"
    {
        echo "deb $VM_MIRROR bookworm main"
        echo "deb $VM_MIRROR bookworm-updates main"
        [ -n "$VM_SECMIRROR" ] && echo "deb $VM_SECMIRROR bookworm-security main"
        [ -n "$backports" ] && echo "deb $VM_MIRROR bookworm-backports main"
    } > "$dir/sources.list.new"
    # Refresh the lists when the sources changed or they are older than a day.
    local stale=1
    if cmp -s "$dir/sources.list.new" "$dir/sources.list" 2>/dev/null \
        && [ -n "$(find "$dir/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n1)" ]; then
        stale=0
    fi
    mv -f "$dir/sources.list.new" "$dir/sources.list"
    VM_APT_OPTS=(-o Dir::Etc::SourceList="$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
                 -o Dir::State::Lists="$dir/lists" -o Acquire::Languages=none
                 -o APT::Sandbox::User=root)
    if [ "$stale" = 1 ]; then
        vm_log "apt-get update (private state in $dir)"
        apt-get "${VM_APT_OPTS[@]}" update -q >/dev/null || vm_die "apt-get update failed (is the Debian mirror reachable?)"
    fi
}

vm_pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# Files whose content defines the guest image. The hash of these names the cache dir.
vm_guest_inputs() {
    printf '%s\n' "$VM_SRC_DIR/build-guest.sh" "$VM_SRC_DIR/common.sh" "$VM_SRC_DIR/guest/packages.txt"
    find "$VM_SRC_DIR/guest/image" -type f | LC_ALL=C sort
}

vm_guest_hash() {
    local f
    vm_guest_inputs | while read -r f; do
        printf '%s\n' "${f#"$VM_SRC_DIR"/}"
        # the mode matters too (the init must be executable)
        stat -c '%a' "$f"
        cat "$f"
    done | sha256sum | cut -c1-16
}

vm_guest_dir() { echo "$VM_WORK_DIR/guest-$(vm_guest_hash)"; }

vm_guest_packages() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$VM_SRC_DIR/guest/packages.txt" | grep -v '^$'; }
