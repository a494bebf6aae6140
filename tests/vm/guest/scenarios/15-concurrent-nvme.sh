#!/bin/bash
# 16 namespaces of one NVMe/TCP subsystem attached and detached concurrently from 16 threads
# (examples/concurrent_attach.rs): every connect succeeds, every device is the namespace with
# its volume's UUID (no mix-up), one controller serves them all, nothing is left afterwards,
# and the 16 attaches together take well under 16x one attach. Also 5 at once. Timings go to
# the benchmark report.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"
CONCURRENT=${CONCURRENT:-$SHARE/bin/concurrent_attach}
[ -x "$CONCURRENT" ] || fail "concurrent_attach binary missing at $CONCURRENT"

N=16
NQN=nqn.2014-08.org.hostbrick:sixteen
SIZE=$((16 * 1024 * 1024))
for i in $(seq 1 $N); do
    UUIDS[i]=$(printf '16e00000-0000-4000-8000-%012x' "$i")
    check "namespace $i" nvmet_namespace $NQN "$i" $SIZE "${UUIDS[i]}" "${UUIDS[i]}"
    conn_nvme "$WORK/conn-$i.json" $NQN 127.0.0.1 4420 "${UUIDS[i]}" "$i" "${UUIDS[i]//-/}" "$(new_uuid)"
done
check "port" nvmet_port 1 127.0.0.1 4420
check "export" nvmet_export $NQN 1

# concurrent_run NAME COUNT: namespaces 1..COUNT at once; sets RUN_CONNECT, RUN_DISCONNECT
concurrent_run() {
    local name=$1 count=$2 i args=() start
    for i in $(seq 1 "$count"); do args+=("$WORK/conn-$i.json=${UUIDS[i]}"); done
    log "concurrent_attach: $count volumes"
    start=$(now_ns)
    RUST_LOG=${RUST_LOG:-hostbrick=info} timeout 600 "$CONCURRENT" --timeout 120 "${args[@]}" > "$WORK/$name.out" 2> "$WORK/$name.err"
    local rc=$?
    { echo "=== concurrent_attach $count volumes -> rc=$rc in $(secs_since "$start")s"; cat "$WORK/$name.out"; echo "--- stderr"; cat "$WORK/$name.err"; } >> "$RESULTS/$SCENARIO.attach.log"
    log "$(jq -c '{volumes, connect_total_s, disconnect_total_s, ok, failures}' "$WORK/$name.out" 2>/dev/null || head -c 300 "$WORK/$name.out")"
    [ "$rc" = 0 ] || fail "concurrent attach of $count volumes failed (rc=$rc): $(jq -c .failures "$WORK/$name.out" 2>/dev/null | cut -c1-600) $(grep -v ' INFO ' "$WORK/$name.err" | tail -n 3 | tr '\n' ' ')"
    jq -e --argjson n "$count" '.ok == true and .volumes == $n and (.devices | map(select(. != null)) | length) == $n' "$WORK/$name.out" >/dev/null \
        || fail "concurrent attach of $count volumes: unexpected report $(head -c 400 "$WORK/$name.out")"
    jq -e '.nvme_controllers | length == 1' "$WORK/$name.out" >/dev/null \
        || fail "$count namespaces of one subsystem came through controllers $(jq -c .nvme_controllers "$WORK/$name.out"), expected one shared controller"
    RUN_CONNECT=$(jq -r .connect_total_s "$WORK/$name.out")
    RUN_DISCONNECT=$(jq -r .disconnect_total_s "$WORK/$name.out")
    check_no_nvme_leftovers
}

# The kernel's floor for the same: one nvme connect until every namespace's device node.
kernel_floor_nvme 127.0.0.1 4420 $NQN "${UUIDS[1]}" || fail "kernel floor (1 namespace) failed"
F1=$FLOOR_S
kernel_floor_nvme 127.0.0.1 4420 $NQN "${UUIDS[@]}" || fail "kernel floor ($N namespaces) failed"
F16=$FLOOR_S
check_no_nvme_leftovers

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
note "one attach ${T1}s (median of 3; floor ${F1}s), 5 at once ${T5}s (${R5}x), $N at once ${T16}s (${R16}x; floor ${F16}s); detach one ${D1}s, $N at once ${D16}s (${RD16}x)"
bench_line concurrent "NVMe/TCP 1 namespace" 3 "$T1" "$D1" "$F1" "median of 3"
bench_line concurrent "NVMe/TCP 5 namespaces at once" 1 "$T5" "$D5" - "${R5}x one attach"
bench_line concurrent "NVMe/TCP $N namespaces at once" 1 "$T16" "$D16" "$F16" "${R16}x one attach, $(ratio "$T16" "$F16")x its floor; detach ${RD16}x"
# "well under 16x": at most half of doing them one after the other, or within 25% of the
# kernel floor of the same 16 namespaces (raw tools).
lt "$R16" 8 || lt "$T16" "$(awk -v f="$F16" 'BEGIN {printf "%.3f", f * 1.25}')" \
    || fail "$N concurrent attaches took ${T16}s = ${R16}x one attach (${T1}s) and $(ratio "$T16" "$F16")x the kernel floor of $N (${F16}s); expected well under ${N}x"
CONNECT_S=$T16 DISCONNECT_S=$D16
scenario_pass
