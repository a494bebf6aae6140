#!/bin/bash
# 16 LUNs of one iSCSI target attached and detached concurrently from 16 threads
# (examples/concurrent_attach.rs): every connect succeeds, every device shows the WWID of its
# own LUN (no mix-up), nothing is left afterwards, and the 16 attaches together take well
# under 16x one attach (one shared session; per-target locks shared by the connects).
# Also 5 at once. Timings go to the benchmark report.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"
CONCURRENT=${CONCURRENT:-$SHARE/bin/concurrent_attach}
[ -x "$CONCURRENT" ] || fail "concurrent_attach binary missing at $CONCURRENT"

N=16
IQN=iqn.2003-01.org.linux-iscsi.hostbrick:sixteen
SIZE=$((16 * 1024 * 1024))
check "target" lio_target $IQN
for i in $(seq 0 $((N - 1))); do
    serial=$(printf '16c%02x%027x' "$i" 0)   # the WWID comes from the first 25 hex digits
    check "backstore $i" lio_backstore lun$i $SIZE "$serial"
    check "LUN $i" lio_lun $IQN "$i" lun$i
    WWIDS[i]=$(lio_expected_wwid "$serial")
    for j in $(seq 0 $((i - 1))); do [ "${WWIDS[j]}" != "${WWIDS[i]}" ] || fail "LUNs $j and $i would show the same WWID"; done
    conn_iscsi "$WORK/conn-$i.json" 127.0.0.1:3260 $IQN "$i" "$(new_uuid)"
done
check "portal" lio_portal $IQN 127.0.0.1:3260
check "demo mode" lio_demo_mode $IQN
check "enable" lio_enable $IQN

# concurrent_run NAME COUNT: volumes 0..COUNT-1 at once; sets RUN_CONNECT, RUN_DISCONNECT
concurrent_run() {
    local name=$1 count=$2 i args=() start
    for i in $(seq 0 $((count - 1))); do args+=("$WORK/conn-$i.json=${WWIDS[i]}"); done
    log "concurrent_attach: $count volumes"
    start=$(now_ns)
    RUST_LOG=${RUST_LOG:-hostbrick=info} timeout 600 "$CONCURRENT" --timeout 120 "${args[@]}" > "$WORK/$name.out" 2> "$WORK/$name.err"
    local rc=$?
    { echo "=== concurrent_attach $count volumes -> rc=$rc in $(secs_since "$start")s"; cat "$WORK/$name.out"; echo "--- stderr"; cat "$WORK/$name.err"; } >> "$RESULTS/$SCENARIO.attach.log"
    log "$(jq -c '{volumes, connect_total_s, disconnect_total_s, ok, failures}' "$WORK/$name.out" 2>/dev/null || head -c 300 "$WORK/$name.out")"
    [ "$rc" = 0 ] || fail "concurrent attach of $count volumes failed (rc=$rc): $(jq -c .failures "$WORK/$name.out" 2>/dev/null | cut -c1-600) $(grep -v ' INFO ' "$WORK/$name.err" | tail -n 3 | tr '\n' ' ')"
    jq -e --argjson n "$count" '.ok == true and .volumes == $n and (.devices | map(select(. != null)) | length) == $n' "$WORK/$name.out" >/dev/null \
        || fail "concurrent attach of $count volumes: unexpected report $(head -c 400 "$WORK/$name.out")"
    jq -e '.scsi_hosts | length == 1' "$WORK/$name.out" >/dev/null \
        || fail "$count volumes of one target came through SCSI hosts $(jq -c .scsi_hosts "$WORK/$name.out"), expected one shared session"
    RUN_CONNECT=$(jq -r .connect_total_s "$WORK/$name.out")
    RUN_DISCONNECT=$(jq -r .disconnect_total_s "$WORK/$name.out")
    udevadm settle --timeout=10
    check_no_iscsi_leftovers $IQN
    check_no_scsi_disks
    for i in $(seq 0 $((count - 1))); do check_no_dm_map "${WWIDS[i]}"; done
}

# The kernel's floor for the same: one login, targeted scans, every device node (raw tools).
# hostbrick hands out devices udev has processed, so the floor to compare with is the one to
# udev's by-path links (the one to the device nodes is reported too).
kernel_floor_iscsi_luns 127.0.0.1:3260 $IQN 1 || fail "kernel floor (1 LUN) failed"
F1=$FLOOR_S F1_LINK=$FLOOR_LINKS_S
kernel_floor_iscsi_luns 127.0.0.1:3260 $IQN 5 || fail "kernel floor (5 LUNs) failed"
F5=$FLOOR_S F5_LINK=$FLOOR_LINKS_S
kernel_floor_iscsi_luns 127.0.0.1:3260 $IQN $N || fail "kernel floor ($N LUNs) failed"
F16=$FLOOR_S F16_LINK=$FLOOR_LINKS_S
note "floor of 1 LUN: device node ${F1}s, by-path link ${F1_LINK}s; of 5 LUNs: ${F5}s, ${F5_LINK}s; of $N LUNs: device nodes ${F16}s, by-path links ${F16_LINK}s"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks

ONE_C=() ONE_D=()
for r in 1 2 3; do
    concurrent_run one-$r 1
    ONE_C+=("$RUN_CONNECT"); ONE_D+=("$RUN_DISCONNECT")
done
T1=$(median "${ONE_C[@]}") D1=$(median "${ONE_D[@]}")
concurrent_run five 5
T5=$RUN_CONNECT D5=$RUN_DISCONNECT
concurrent_run sixteen $N
T16=$RUN_CONNECT D16=$RUN_DISCONNECT
check_audit_empty audit-after

R5=$(ratio "$T5" "$T1") R16=$(ratio "$T16" "$T1")
RD16=$(ratio "$D16" "$D1")
note "one attach ${T1}s (median of 3; floor ${F1}s), 5 at once ${T5}s (${R5}x; floor to the links ${F5_LINK}s), $N at once ${T16}s (${R16}x; floor ${F16}s); detach one ${D1}s, $N at once ${D16}s (${RD16}x)"
bench_line concurrent "iSCSI 1 LUN" 3 "$T1" "$D1" "$F1" "median of 3; floor to the by-path link ${F1_LINK}s"
# The guest's 2 emulated CPUs run udev (and multipathd, find_multipaths no) for every new
# disk; the kernel's own floor for 5 LUNs says how much of the ratio that is.
bench_line concurrent "iSCSI 5 LUNs at once" 1 "$T5" "$D5" "$F5" "${R5}x one attach; $(ratio "$T5" "$F5_LINK")x the floor to the 5 by-path links (${F5_LINK}s; the kernel's own ratio $(ratio "$F5_LINK" "$F1_LINK")x)"
bench_line concurrent "iSCSI $N LUNs at once" 1 "$T16" "$D16" "$F16" "${R16}x one attach; $(ratio "$T16" "$F16_LINK")x the floor to the $N by-path links (${F16_LINK}s; the kernel's own ratio $(ratio "$F16_LINK" "$F1_LINK")x); detach ${RD16}x"
# "well under 16x": at most half of doing them one after the other; under emulation the
# per-LUN scan and udev work dominates (the kernel's own floor grows about as much), so being
# within 25% of the floor of the same 16 LUNs to their udev links counts too.
lt "$R16" 8 || lt "$T16" "$(awk -v f="$F16_LINK" 'BEGIN {printf "%.3f", f * 1.25}')" \
    || fail "$N concurrent attaches took ${T16}s = ${R16}x one attach (${T1}s) and $(ratio "$T16" "$F16_LINK")x the kernel floor of $N to the by-path links (${F16_LINK}s); expected well under ${N}x"
CONNECT_S=$T16 DISCONNECT_S=$D16
scenario_pass
