#!/bin/bash
# Install (idempotently) the host packages the hostbrick VM suite needs.
#
#   qemu-system-x86, qemu-utils   from bookworm-backports. bookworm's own qemu-system-x86 (7.2)
#                                 would replace the preinstalled backports qemu-utils (10.x) and
#                                 with it qemu-img, so both come from backports, through a
#                                 private apt state (/etc/apt is never modified).
#   mmdebstrap busybox-static cpio e2fsprogs   to build the guest (bookworm).
#
# Anything already installed is left alone. Needs root and the Debian mirror.
set -euo pipefail
. "$(dirname "$0")/common.sh"

main() {
    local want_bpo=() want_main=() p
    command -v qemu-system-x86_64 >/dev/null && vm_pkg_installed qemu-system-x86 || want_bpo+=(qemu-system-x86)
    command -v qemu-img >/dev/null || want_bpo+=(qemu-utils)
    command -v mmdebstrap >/dev/null || want_main+=(mmdebstrap)
    vm_pkg_installed busybox-static || want_main+=(busybox-static)
    command -v cpio >/dev/null || want_main+=(cpio)
    command -v mkfs.ext4 >/dev/null || want_main+=(e2fsprogs)
    if [ ${#want_bpo[@]} -eq 0 ] && [ ${#want_main[@]} -eq 0 ]; then
        vm_log "host deps: all present ($(qemu-system-x86_64 --version | head -n1))"
        return 0
    fi
    vm_need_root "host-deps.sh"
    vm_apt_private "$VM_WORK_DIR/host-apt" backports
    export DEBIAN_FRONTEND=noninteractive
    if [ ${#want_bpo[@]} -gt 0 ]; then
        # qemu-utils is always named so apt upgrades/keeps it in lock-step with qemu-system-x86
        # from the same suite instead of resolving the pair by removing it.
        vm_log "installing from bookworm-backports: ${want_bpo[*]} (+ qemu-utils)"
        apt-get "${VM_APT_OPTS[@]}" install -y -q --no-install-recommends \
            -t bookworm-backports qemu-system-x86 qemu-utils
    fi
    if [ ${#want_main[@]} -gt 0 ]; then
        vm_log "installing: ${want_main[*]}"
        apt-get "${VM_APT_OPTS[@]}" install -y -q --no-install-recommends "${want_main[@]}"
    fi
    for p in qemu-system-x86_64 qemu-img mmdebstrap cpio mkfs.ext4; do
        command -v "$p" >/dev/null || vm_die "$p still missing after installation"
    done
    [ -x /bin/busybox ] || vm_die "/bin/busybox (busybox-static) missing after installation"
    vm_log "host deps ready: $(qemu-system-x86_64 --version | head -n1); $(qemu-img --version | head -n1)"
}

main "$@"
