#!/bin/bash
# hostbrick real-kernel end-to-end suite: boots a qemu guest (Debian 6.1 kernel, software
# emulation) that runs LIO/nvmet targets on its loopback and drives examples/attach.rs against
# them.
#
#   tests/vm/run-suite.sh            (root: installs host packages and builds the guest once)
#
# Environment:
#   HOSTBRICK_SKIP_VM=1             skip the whole suite (prints SKIPPED, exits 0)
#   HOSTBRICK_VM_SCENARIOS=REGEX    run only the scenarios whose name matches (bash regex)
#   HOSTBRICK_VM_TIMEOUT=SECS       overall limit for the VM run (default 2700)
#   HOSTBRICK_VM_SCENARIO_TIMEOUT=SECS  limit per scenario inside the guest (default 300)
#   HOSTBRICK_VM_ATTACH=PATH        use this attach binary instead of building the examples
#                                   (concurrent_attach is taken from the same directory)
#   HOSTBRICK_VM_BENCH_RUNS=N       runs per figure of the attach-latency benchmark, rounds of the
#                                   side-by-side one (19-osbrick-side-by-side) (default 5)
#   HOSTBRICK_VM_DIR=DIR            work dir (default target/vm)
#
# Outputs under target/vm/: share/ (what the guest sees at /mnt/host), console.log, dmesg.txt,
# results.tsv, bench.tsv (attach latency and concurrency figures), per-scenario logs in
# share/results/.
set -uo pipefail
. "$(dirname "$0")/common.sh"

if [ "${HOSTBRICK_SKIP_VM:-}" = 1 ]; then
    echo "**********************************************************************"
    echo "*** SKIPPED: hostbrick VM end-to-end suite (HOSTBRICK_SKIP_VM=1)   ***"
    echo "**********************************************************************"
    exit 0
fi

T_START=$(date +%s)
OVERALL_TIMEOUT=${HOSTBRICK_VM_TIMEOUT:-2700}

# 1. host packages, guest image
bash "$VM_SRC_DIR/host-deps.sh" || vm_die "installing the host packages failed (tests/vm/host-deps.sh)"
T_BUILD=$(date +%s)
GUEST=$(bash "$VM_SRC_DIR/build-guest.sh" | tail -n1) || vm_die "building the guest failed (tests/vm/build-guest.sh)"
[ -f "$GUEST/root.img" ] || vm_die "guest build did not produce $GUEST/root.img"
T_BUILT=$(date +%s)

# 2. the attach and concurrent_attach examples, built on the host (same Debian 12 glibc as the
# guest)
if [ -n "${HOSTBRICK_VM_ATTACH:-}" ]; then
    ATTACH_BIN=$HOSTBRICK_VM_ATTACH
    vm_log "using attach binary $ATTACH_BIN (HOSTBRICK_VM_ATTACH)"
else
    vm_log "cargo build --release --example attach --example concurrent_attach"
    (cd "$VM_REPO_ROOT" && cargo build --release --example attach --example concurrent_attach) \
        || vm_die "cargo build --release --example attach --example concurrent_attach failed"
    ATTACH_BIN=${CARGO_TARGET_DIR:-$VM_REPO_ROOT/target}/release/examples/attach
    [ -x "$ATTACH_BIN" ] || vm_die "no binary at $ATTACH_BIN after cargo build"
fi
CONCURRENT_BIN=$(dirname "$ATTACH_BIN")/concurrent_attach

# 3. the share: binaries + guest scripts + empty results
SHARE=$VM_WORK_DIR/share
rm -rf "$SHARE"; mkdir -p "$SHARE/bin" "$SHARE/results"
[ -e "$ATTACH_BIN" ] && cp "$ATTACH_BIN" "$SHARE/bin/attach"
[ -e "$CONCURRENT_BIN" ] && cp "$CONCURRENT_BIN" "$SHARE/bin/concurrent_attach"
cp -a "$VM_SRC_DIR/guest" "$SHARE/guest"
rm -rf "$SHARE/guest/image" "$SHARE/guest/packages.txt"
# HOSTBRICK_VM_* and RUST_LOG/RUST_BACKTRACE travel to the guest (HOSTBRICK_VM_TRACE=1: set -x
# timestamps in the raw-tool helpers).
# os-brick for the scenarios that drive it beside hostbrick (a line '# vm-needs: osbrick' in the
# scenario): installed once per version (tests/vm/osbrick.sh, cached in target/vm/), only when
# such a scenario is selected. The tarball is linked into the share; a failed install is
# written to share/osbrick.error and fails only those scenarios.
osbrick_wanted=0
for script in "$VM_SRC_DIR"/guest/scenarios/*.sh; do
    grep -q '^# vm-needs: osbrick' "$script" || continue
    name=$(basename "$script" .sh); name=${name#[0-9][0-9]-}
    if [ -z "${HOSTBRICK_VM_SCENARIOS:-}" ] || [[ $name =~ ${HOSTBRICK_VM_SCENARIOS} ]]; then osbrick_wanted=1; fi
done
if [ "$osbrick_wanted" = 1 ]; then
    if OSBRICK_TAR=$(bash "$VM_SRC_DIR/osbrick.sh" 2> >(tee "$VM_WORK_DIR/osbrick.log" >&2) | tail -n1) && [ -s "$OSBRICK_TAR" ]; then
        ln -f "$OSBRICK_TAR" "$SHARE/osbrick.tar" 2>/dev/null || cp "$OSBRICK_TAR" "$SHARE/osbrick.tar"
    else
        echo "installing os-brick on the host failed (tests/vm/osbrick.sh): $(tail -n 3 "$VM_WORK_DIR/osbrick.log" | tr '\n' ' ')" > "$SHARE/osbrick.error"
        vm_log "$(cat "$SHARE/osbrick.error")"
    fi
fi
for v in $(compgen -v | grep -E '^(HOSTBRICK_VM_[A-Z_]+|RUST_LOG|RUST_BACKTRACE)$'); do
    printf 'export %s=%q\n' "$v" "${!v}"
done > "$SHARE/suite.env"

# 4. boot
command -v qemu-system-x86_64 >/dev/null || vm_die "qemu-system-x86_64 not found"
CONSOLE=$VM_WORK_DIR/console.log
rm -f "$CONSOLE" "$VM_WORK_DIR/dmesg.txt" "$VM_WORK_DIR/results.tsv"
vm_log "booting the guest ($GUEST, kernel $(cat "$GUEST/kernel-version" 2>/dev/null)); console -> $CONSOLE"
T_BOOT=$(date +%s)
timeout --kill-after=10 "$OVERALL_TIMEOUT" \
    qemu-system-x86_64 -accel tcg,thread=multi -cpu max -machine q35 -smp 2 -m 1024 \
        -nographic -no-reboot -serial mon:stdio -nic none \
        -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.img" \
        -append "console=ttyS0 panic=-1 quiet loglevel=4 hostbrick.entry=/mnt/host/guest/suite.sh" \
        -drive "file=$GUEST/root.img,if=virtio,format=raw,snapshot=on" \
        -virtfs "local,path=$SHARE,mount_tag=host,security_model=none,id=host0" \
        < /dev/null 2>&1 | tr -d '\r' | tee "$CONSOLE"
QEMU_RC=${PIPESTATUS[0]}
T_END=$(date +%s)

# 5. results
[ -f "$SHARE/results/dmesg.txt" ] && cp "$SHARE/results/dmesg.txt" "$VM_WORK_DIR/dmesg.txt"
TSV=$SHARE/results/results.tsv
[ -f "$TSV" ] && cp "$TSV" "$VM_WORK_DIR/results.tsv"
BENCH=$SHARE/results/bench.tsv
rm -f "$VM_WORK_DIR/bench.tsv"
[ -f "$BENCH" ] && cp "$BENCH" "$VM_WORK_DIR/bench.tsv"
echo
echo "== hostbrick VM suite =================================================================="
printf 'guest build/cache %ss, VM run %ss (boot to power-off), total %ss\n' \
    $((T_BUILT - T_BUILD)) $((T_END - T_BOOT)) $((T_END - T_START))
if [ "$QEMU_RC" = 124 ] || [ "$QEMU_RC" = 137 ]; then
    echo "FAILED: the VM did not power off within ${OVERALL_TIMEOUT}s (HOSTBRICK_VM_TIMEOUT); console: $CONSOLE"
    exit 1
elif [ "$QEMU_RC" != 0 ]; then
    echo "FAILED: qemu-system-x86_64 exited with $QEMU_RC: the VM could not run. Console: $CONSOLE"
    tail -n 20 "$CONSOLE"
    exit 1
fi
if [ ! -s "$TSV" ]; then
    echo "FAILED: the guest produced no results (no scenario ran?). Console: $CONSOLE"
    grep -E 'hostbrick-vm-init|HOSTBRICK-VM-EXIT' "$CONSOLE" | tail -n 20
    exit 1
fi
printf '%-26s %-5s %9s %12s %9s  %s\n' SCENARIO RESULT CONNECT_S DISCONNECT_S FLOOR_S MESSAGE
failed=()
while IFS=$'\t' read -r name status connect disconnect floor message; do
    printf '%-26s %-5s %9s %12s %9s  %s\n' "$name" "${status^^}" "$connect" "$disconnect" "$floor" "$message"
    [ "$status" = pass ] || failed+=("$name")
done < "$TSV"
echo "(floor: the same attach with raw tools -> device node: iscsiadm manual-scan login + targeted LUN scan, nvme connect, rbd map; logs: $SHARE/results/<name>.{log,attach.log,dmesg}, dmesg: $VM_WORK_DIR/dmesg.txt)"
if [ -s "$BENCH" ]; then
    echo
    echo "== attach latency and concurrency ($VM_WORK_DIR/bench.tsv) ==========================="
    printf '%-11s %-34s %4s %9s %12s %8s  %s\n' SECTION WHAT RUNS CONNECT_S DISCONNECT_S FLOOR_S NOTE
    while IFS=$'\t' read -r section label runs connect disconnect floor note; do
        printf '%-11s %-34s %4s %9s %12s %8s  %s\n' "$section" "$label" "$runs" "$connect" "$disconnect" "$floor" "${note%%; runs:*}"
    done < "$BENCH"
    echo "(latency: medians of RUNS runs of attach connect/disconnect, process start included, beside the raw-tool floor; concurrent: total wall time of all attaches/detaches started together from one thread each)"
fi
# Per-scenario slices of the guest's dmesg (the guest marks each scenario's start in the log).
if [ -f "$VM_WORK_DIR/dmesg.txt" ]; then
    awk -v dir="$SHARE/results" '
        /hostbrick-vm: scenario [^ ]+ begin/ { for (i = 1; i <= NF; i++) if ($i == "scenario") name = $(i + 1); out = dir "/" name ".dmesg" }
        out != "" { print > out }' "$VM_WORK_DIR/dmesg.txt"
fi
for name in "${failed[@]}"; do
    echo
    echo "-- $name: last attach output and failure ($SHARE/results/$name.log, $SHARE/results/$name.dmesg)"
    sed -n '/^--- iscsiadm -m session/q; p' "$SHARE/results/$name.log" | grep -E 'stderr\||FAIL|attach ' | tail -n 12 | cut -c1-400
done
ENTRY_RC=$(cat "$SHARE/results/entry-rc" 2>/dev/null || echo missing)
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED scenarios: ${failed[*]}"
    exit 1
fi
if [ "$ENTRY_RC" != 0 ]; then
    echo "FAILED: the guest suite script exited with '$ENTRY_RC' although no scenario failed"
    exit 1
fi
echo "all $(wc -l < "$TSV") scenarios passed"
