#!/bin/bash
# hostbrick real-libvirt harness: a private libvirtd (QEMU driver) running a small TCG guest
# (the VM suite's kernel and root image, idle mode), raw `virsh` hotplug checks, then the
# #[ignore]d Rust tests of tests/libvirt_domain.rs against that domain (among them a LUKS1
# volume QEMU decrypts itself, its passphrase in a libvirt secret: libvirt's native LUKS).
# Always tears down.
#
#   tests/libvirt/run.sh            (root, Debian 12 amd64; installs what it needs once)
#
# Environment:
#   HOSTBRICK_SKIP_LIBVIRT=1            skip the whole harness (prints SKIPPED, exits 0)
#   HOSTBRICK_LIBVIRT_DIR=DIR           persistent dir: qemu capabilities cache, last run's logs
#                                       (default target/libvirt)
#   HOSTBRICK_LIBVIRT_BOOT_TIMEOUT=S    guest start to idle marker (default 180)
#   HOSTBRICK_VM_DIR=DIR                where the VM suite caches the guest (default target/vm)
#
# The daemons are private: libvirtd and virtlogd run in their own mount namespace with
# /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt bound to a run dir under /tmp
# and /var/cache/libvirt to $HOSTBRICK_LIBVIRT_DIR/cache, so a system libvirtd on the same
# host is neither used nor disturbed. Clients reach them at
#   qemu:///system?socket=<run dir>/run/libvirt-sock
# which the Rust tests get in HOSTBRICK_LIBVIRT_URI (with HOSTBRICK_LIBVIRT_DOMAIN,
# HOSTBRICK_LIBVIRT_CONSOLE, HOSTBRICK_LIBVIRT_SCRATCH and HOSTBRICK_LIBVIRT_ATTACH_TO_GUEST).
set -uo pipefail
LV_SRC_DIR=$(cd "$(dirname "$0")" && pwd)
. "$LV_SRC_DIR/../vm/common.sh"

if [ "${HOSTBRICK_SKIP_LIBVIRT:-}" = 1 ]; then
    echo "**********************************************************************"
    echo "*** SKIPPED: hostbrick real-libvirt tests (HOSTBRICK_SKIP_LIBVIRT=1) ***"
    echo "**********************************************************************"
    exit 0
fi

LV_WORK_DIR=${HOSTBRICK_LIBVIRT_DIR:-${CARGO_TARGET_DIR:-$VM_REPO_ROOT/target}/libvirt}
BOOT_TIMEOUT=${HOSTBRICK_LIBVIRT_BOOT_TIMEOUT:-180}
# The mount points the private daemons get their own copies of.
LV_MOUNTS=(/etc/libvirt /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt)

lv_log() { printf '[libvirt %s] %s\n' "$(date -u +%T)" "$*" >&2; }
lv_die() { printf '[libvirt %s] FATAL: %s\n' "$(date -u +%T)" "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# Phase timings for the summary: "name<TAB>seconds".
TIMES=()
timed() { TIMES+=("$1"$'\t'"$2"); }

# ---------------------------------------------------------------------------------------------
# Tear-down of one run dir: destroy and undefine its domain, detach the loop devices backed by
# files inside it, stop its daemons, keep its logs, remove it. Used for this run (EXIT trap)
# and for the leftovers of runs that were killed (their owner pid is gone).
lv_teardown() {
    local run=$1 keep_logs=${2:-} DOMAIN="" URI="" domain uri pid f
    set +e
    [ -f "$run/state" ] && . "$run/state"   # DOMAIN=, URI= (locals here)
    domain=$DOMAIN; uri=$URI
    if [ -n "$domain" ] && [ -S "$run/run/libvirt-sock" ]; then
        timeout 30 virsh -q -c "$uri" destroy "$domain" >/dev/null 2>&1
        timeout 30 virsh -q -c "$uri" undefine "$domain" >/dev/null 2>&1
    fi
    # a qemu that outlived its libvirtd (or a destroy that failed)
    if [ -n "$domain" ] && [ -f "$run/run/qemu/$domain.pid" ]; then
        pid=$(cat "$run/run/qemu/$domain.pid")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q qemu "/proc/$pid/comm" 2>/dev/null; then
            lv_log "killing qemu $pid of $domain"; kill -KILL "$pid"
        fi
    fi
    losetup -l -n -O NAME,BACK-FILE 2>/dev/null | awk -v r="$run/" 'index($2, r) == 1 { print $1 }' \
        | while read -r dev; do losetup -d "$dev" && lv_log "detached $dev"; done
    for f in libvirtd virtlogd; do
        pid=$(cat "$run/$f.pid" 2>/dev/null)
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { lv_log "$f $pid ignored SIGTERM; SIGKILL"; kill -KILL "$pid"; }
    done
    pid=$(cat "$run/ns.pid" 2>/dev/null)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    if [ -n "$keep_logs" ]; then
        rm -rf "$keep_logs"; mkdir -p "$keep_logs"
        cp -a "$run/console.log" "$run/domain.xml" "$run/log/." "$keep_logs/" 2>/dev/null
    fi
    rm -rf "$run"
}

# ---------------------------------------------------------------------------------------------
lv_host_deps() {
    bash "$VM_SRC_DIR/host-deps.sh" || lv_die "installing qemu (tests/vm/host-deps.sh) failed"
    local want=() p
    # cryptsetup-bin: hostbrick checks (and formats) LUKS headers on the host for QEMU's
    # native LUKS and opens volumes it decrypts on the host
    for p in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients cryptsetup-bin; do
        vm_pkg_installed "$p" || want+=("$p")
    done
    if [ ${#want[@]} -gt 0 ]; then
        # bookworm's libvirt 9.0; no recommends (they would replace the backports qemu) and
        # not libvirt-daemon-system (polkit, iptables, init scripts: the daemons run by hand)
        vm_apt_private "$VM_WORK_DIR/host-apt" backports
        lv_log "installing ${want[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get "${VM_APT_OPTS[@]}" install -y -q \
            --no-install-recommends "${want[@]}" > "$LV_WORK_DIR/apt.log" 2>&1 \
            || { tail -n 20 "$LV_WORK_DIR/apt.log" >&2; lv_die "apt-get install ${want[*]} failed"; }
    fi
    for p in libvirtd virtlogd virsh qemu-img losetup unshare cryptsetup; do
        command -v "$p" >/dev/null || lv_die "$p missing after installation"
    done
    # libvirt resolves its built-in default user before reading qemu.conf
    getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu || lv_die "groupadd libvirt-qemu failed"
    getent passwd libvirt-qemu >/dev/null \
        || useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu \
        || lv_die "useradd libvirt-qemu failed"
}

# Starts virtlogd + libvirtd in a private mount namespace; sets URI.
lv_start_daemons() {
    local d
    mkdir -p "$RUN/etc" "$RUN/run" "$RUN/lib" "$RUN/log" "$LV_WORK_DIR/cache"
    # The mount points: libvirt's standard dirs, created if missing and left in place (empty).
    # Never removed: the same dir may be a mount point in another run's namespace right now.
    for d in "${LV_MOUNTS[@]}"; do mkdir -p "$d" || lv_die "cannot create $d"; done
    # qemu runs as root: the guest image lives in the VM suite's root-owned cache, which
    # libvirt must not chown, and the run dir is private to root.
    cat > "$RUN/etc/qemu.conf" <<'EOF'
user = "root"
group = "root"
EOF
    cat > "$RUN/etc/libvirtd.conf" <<'EOF'
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
    cat > "$RUN/etc/virtlogd.conf" <<'EOF'
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
EOF
    # libvirtd's qemu capabilities cache is valid only for the host CPUID it was probed on, and
    # this machine's vCPUs do not all report the same: on another CPU than last time it
    # re-probes qemu (~4 s). Pinned to one CPU, it reuses the cache. (libvirt gives qemu all
    # host CPUs again.)
    local cpu
    cpu=$(taskset -cp $$ | sed 's/.*: //; s/[,-].*//')
    # Both daemons stay children of the namespace's shell, which this harness stops at the end.
    unshare --mount --propagation private -- bash -c '
        set -e
        run=$1 cache=$2 cpu=$3
        mount --bind "$run/etc" /etc/libvirt
        mount --bind "$run/run" /run/libvirt
        mount --bind "$run/lib" /var/lib/libvirt
        mount --bind "$cache" /var/cache/libvirt
        mount --bind "$run/log" /var/log/libvirt
        virtlogd -p "$run/virtlogd.pid" -f /etc/libvirt/virtlogd.conf &
        taskset -c "$cpu" libvirtd -p "$run/libvirtd.pid" -f /etc/libvirt/libvirtd.conf &
        wait' lv-ns "$RUN" "$LV_WORK_DIR/cache" "$cpu" > "$RUN/log/daemons.out" 2>&1 < /dev/null &
    echo $! > "$RUN/ns.pid"
    URI="qemu:///system?socket=$RUN/run/libvirt-sock"
    echo "URI='$URI'" >> "$RUN/state"
    local t0 n=0
    t0=$(now)
    until [ -S "$RUN/run/virtlogd-sock" ] && virsh -q -c "$URI" uri >/dev/null 2>&1; do
        kill -0 "$(cat "$RUN/ns.pid")" 2>/dev/null || { cat "$RUN/log/daemons.out" "$RUN/log/"*.log >&2 2>/dev/null; lv_die "the daemons exited"; }
        n=$((n + 1)); [ $n -gt 600 ] && lv_die "libvirtd did not answer on $URI within 60 s (logs: $RUN/log)"
        sleep 0.1
    done
    timed "libvirtd + virtlogd up" "$(since "$t0")"
}

lv_domain_xml() {
    cat <<EOF
<domain type='qemu'>
  <name>$DOMAIN</name>
  <memory unit='MiB'>512</memory>
  <vcpu>$VCPUS</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$GUEST/vmlinuz</kernel>
    <initrd>$GUEST/initrd.img</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet loglevel=4 hostbrick.idle=1</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='maximum' check='none'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$RUN/root.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='$RUN/console.log'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$RUN/console.log'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# Defines and starts the domain, waits for the guest's idle marker.
lv_start_domain() {
    local t0 state
    qemu-img create -q -f qcow2 -F raw -b "$GUEST/root.img" "$RUN/root.qcow2" \
        || lv_die "qemu-img create of the root overlay failed"
    lv_domain_xml > "$RUN/domain.xml"
    t0=$(now)
    virsh -q -c "$URI" define "$RUN/domain.xml" >/dev/null || lv_die "virsh define failed ($RUN/domain.xml)"
    timed "define" "$(since "$t0")"
    t0=$(now)
    virsh -q -c "$URI" start "$DOMAIN" >/dev/null || lv_die "virsh start $DOMAIN failed (qemu log: $RUN/log/qemu/$DOMAIN.log)"
    timed "start" "$(since "$t0")"
    t0=$(now)
    until grep -q '^HOSTBRICK-VM-IDLE' "$RUN/console.log" 2>/dev/null; do
        state=$(virsh -q -c "$URI" domstate "$DOMAIN" 2>&1)
        if [ "$state" != running ]; then
            tail -n 30 "$RUN/console.log" >&2
            lv_die "the guest stopped before it was up (domstate: $state)"
        fi
        if [ "$(awk -v a="$t0" -v b="$(now)" -v t="$BOOT_TIMEOUT" 'BEGIN { print (b - a > t) }')" = 1 ]; then
            tail -n 30 "$RUN/console.log" >&2
            lv_die "the guest printed no HOSTBRICK-VM-IDLE within ${BOOT_TIMEOUT}s (console: $RUN/console.log)"
        fi
        sleep 0.2
    done
    timed "guest up (idle marker)" "$(since "$t0")"
}

# domblklist as "target source" lines
lv_blklist() { virsh -q -c "$URI" domblklist "$DOMAIN" | awk 'NF >= 2 { print $1, $2 }'; }
# Waits up to $2 s for the guest console to hold more than $3 lines matching $1.
lv_console_wait() {
    local pattern=$1 limit=$2 before=$3 n=0
    while [ "$(grep -c -- "$pattern" "$RUN/console.log")" -le "$before" ]; do
        n=$((n + 1)); [ $n -gt $((limit * 20)) ] && return 1
        sleep 0.05
    done
}

# One raw hotplug round: attach-device --live, domblklist, the guest's add event,
# detach-device --live, domblklist, the guest's remove event. Fails the run on any miss.
RAW_FAILED=0
lv_raw_round() {
    local label=$1 target=$2 source=$3 xml=$4 adds removes t0 ta tg td tr
    printf '%s\n' "$xml" > "$RUN/raw-$target.xml"
    adds=$(grep -c 'block add' "$RUN/console.log"); removes=$(grep -c 'block remove' "$RUN/console.log")
    t0=$(now)
    if ! virsh -q -c "$URI" attach-device "$DOMAIN" "$RUN/raw-$target.xml" --live >/dev/null; then
        lv_log "FAIL raw $label: attach-device failed"; RAW_FAILED=1; return
    fi
    ta=$(since "$t0")
    if ! lv_blklist | grep -xF "$target $source" >/dev/null; then
        lv_log "FAIL raw $label: domblklist does not show '$target $source':"; lv_blklist >&2; RAW_FAILED=1; return
    fi
    if ! lv_console_wait 'block add' 10 "$adds"; then
        lv_log "FAIL raw $label: the guest logged no block add within 10 s"; RAW_FAILED=1; return
    fi
    tg=$(since "$t0")
    t0=$(now)
    if ! virsh -q -c "$URI" detach-device "$DOMAIN" "$RUN/raw-$target.xml" --live >/dev/null; then
        lv_log "FAIL raw $label: detach-device failed"; RAW_FAILED=1; return
    fi
    td=$(since "$t0")
    if lv_blklist | grep "^$target " >/dev/null; then
        lv_log "FAIL raw $label: $target still listed after detach-device (the guest did not acknowledge?)"
        RAW_FAILED=1; return
    fi
    if ! lv_console_wait 'block remove' 10 "$removes"; then
        lv_log "FAIL raw $label: the guest logged no block remove within 10 s"; RAW_FAILED=1; return
    fi
    tr=$(since "$t0")
    timed "raw $label: attach-device / guest sees it" "$ta / $tg"
    timed "raw $label: detach-device (acknowledged) / guest saw removal" "$td / $tr"
    lv_log "raw $label: ok ($target -> $source)"
}

lv_raw_checks() {
    local loopdev
    truncate -s 64M "$RUN/scratch/raw-file.img"
    lv_raw_round file vdb "$RUN/scratch/raw-file.img" "<disk type='file' device='disk'>
  <driver name='qemu' type='raw'/>
  <source file='$RUN/scratch/raw-file.img'/>
  <target dev='vdb' bus='virtio'/>
  <serial>hostbrick-raw-file</serial>
</disk>"
    truncate -s 64M "$RUN/scratch/raw-loop.img"
    loopdev=$(losetup -f --show "$RUN/scratch/raw-loop.img") || { lv_log "FAIL raw block: losetup failed"; RAW_FAILED=1; return; }
    lv_raw_round "block ($loopdev)" vdc "$loopdev" "<disk type='block' device='disk'>
  <driver name='qemu' type='raw' cache='none' io='native'/>
  <source dev='$loopdev'/>
  <target dev='vdc' bus='virtio'/>
  <serial>hostbrick-raw-block</serial>
</disk>"
    losetup -d "$loopdev"
}

# The Rust side: tests/libvirt_domain.rs, #[ignore]d, run here against the live domain.
RUST_RC=0
lv_rust_tests() {
    local t0 example
    cd "$VM_REPO_ROOT" || lv_die "cd $VM_REPO_ROOT"
    t0=$(now)
    cargo build --all-features --locked --quiet --example attach_to_guest \
        || { lv_log "FAIL: cargo build --example attach_to_guest"; RUST_RC=1; return; }
    example=${CARGO_TARGET_DIR:-$VM_REPO_ROOT/target}/debug/examples/attach_to_guest
    HOSTBRICK_LIBVIRT_URI=$URI HOSTBRICK_LIBVIRT_DOMAIN=$DOMAIN \
    HOSTBRICK_LIBVIRT_CONSOLE=$RUN/console.log HOSTBRICK_LIBVIRT_SCRATCH=$RUN/scratch \
    HOSTBRICK_LIBVIRT_ATTACH_TO_GUEST=$example \
        cargo test --all-features --locked --test libvirt_domain -- --ignored --test-threads=1 --nocapture
    RUST_RC=$?
    timed "Rust tests (tests/libvirt_domain.rs, incl. build)" "$(since "$t0")"
}

# ---------------------------------------------------------------------------------------------
main() {
    local t_start t0 d
    t_start=$(now)
    [ "$(id -u)" = 0 ] || lv_die "tests/libvirt/run.sh must run as root (it runs libvirtd and qemu)"
    mkdir -p "$LV_WORK_DIR"

    # leftovers of killed runs (the pid in the name tells whether that run is still going)
    for d in /tmp/hostbrick-libvirt.*; do
        [ -d "$d" ] || continue
        kill -0 "${d##*.}" 2>/dev/null && continue
        lv_log "cleaning up after an interrupted run: $d"; lv_teardown "$d"
    done

    t0=$(now)
    lv_host_deps
    timed "host packages" "$(since "$t0")"
    t0=$(now)
    GUEST=$(bash "$VM_SRC_DIR/build-guest.sh" | tail -n1) || lv_die "building the guest failed (tests/vm/build-guest.sh)"
    [ -f "$GUEST/vmlinuz" ] && [ -f "$GUEST/initrd.img" ] && [ -f "$GUEST/root.img" ] \
        || lv_die "no guest kernel/initrd/root image in '$GUEST'"
    timed "guest (VM suite cache)" "$(since "$t0")"

    RUN=/tmp/hostbrick-libvirt.$$
    DOMAIN=hostbrick-libvirt-$$
    VCPUS=1
    rm -rf "$RUN"; mkdir -m 0700 "$RUN" "$RUN/scratch"
    echo "DOMAIN='$DOMAIN'" > "$RUN/state"
    trap 'lv_teardown "$RUN" "$LV_WORK_DIR/last-run"' EXIT
    trap 'exit 130' INT TERM HUP

    lv_start_daemons
    lv_start_domain
    lv_raw_checks
    lv_rust_tests

    t0=$(now)
    trap - EXIT
    lv_teardown "$RUN" "$LV_WORK_DIR/last-run"
    timed "tear-down" "$(since "$t0")"

    echo
    echo "== hostbrick real-libvirt harness ====================================================="
    echo "libvirt $(virsh -v), $(qemu-system-x86_64 --version | head -n1), domain $DOMAIN (TCG, pc, ${VCPUS} vCPU)"
    local row
    for row in "${TIMES[@]}"; do printf '%-62s %s s\n' "${row%%$'\t'*}" "${row#*$'\t'}"; done
    printf '%-62s %s s\n' "total" "$(since "$t_start")"
    echo "(logs of this run: $LV_WORK_DIR/last-run/)"
    if [ "$RAW_FAILED" != 0 ] || [ "$RUST_RC" != 0 ]; then
        echo "FAILED: raw virsh checks $([ "$RAW_FAILED" = 0 ] && echo passed || echo FAILED)," \
            "Rust tests $([ "$RUST_RC" = 0 ] && echo passed || echo "FAILED (rc $RUST_RC)")"
        exit 1
    fi
    echo "passed"
}

main "$@"
