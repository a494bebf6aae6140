#!/bin/bash
# Attach-latency benchmark: `attach connect` and `attach disconnect` wall time (process start
# included) per protocol, beside the kernel floor (the same attach with raw tools until the
# device node exists: iscsiadm manual-scan login + targeted LUN scan, nvme connect, rbd map),
# each the median of $RUNS runs, into the suite's benchmark report:
#   iSCSI single path, NVMe/TCP (one namespace), Ceph RBD (kernel rbd).
# Along the way, RBD and audit: an image mapped by hand is listed as unrecorded; connecting the
# volume adopts the mapping (and records it), after which audit lists nothing.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"
RUNS=${HOSTBRICK_VM_BENCH_RUNS:-5}
# phase timings of every attach call (login, scan, device found, ...) into the attach log
export RUST_LOG=${RUST_LOG:-hostbrick=info}
SIZE=$((64 * 1024 * 1024))

# bench PROTOCOL FLOOR_FN... -- CONN_JSON CHECK_FN: $RUNS times the floor, then $RUNS times
# connect (device checked with CHECK_FN PATH) + disconnect; one bench line with the medians.
bench() {
    local label=$1 floor_cmd=$2 conn=$3 check_fn=$4 r floors=() links=() cons=() dis=() saved_notes=$NOTES dev
    for r in $(seq 1 "$RUNS"); do
        FLOOR_S=- FLOOR_LINK_S=-
        $floor_cmd || fail "$label: kernel floor run $r failed"
        floors+=("$FLOOR_S") links+=("$FLOOR_LINK_S")
    done
    NOTES=$saved_notes
    for r in $(seq 1 "$RUNS"); do
        connect "$label-$r" "$conn"
        cons+=("$CONNECT_S")
        dev=$(record_field "$label-$r" path)
        $check_fn "$dev"
        disconnect "$label-$r" "$conn"
        dis+=("$DISCONNECT_S")
        check_gone "$dev"
    done
    local c d f l
    c=$(median "${cons[@]}") d=$(median "${dis[@]}") f=$(median "${floors[@]}") l=$(median "${links[@]}")
    log "$label: connect ${cons[*]} disconnect ${dis[*]} floor ${floors[*]} (udev link ${links[*]})"
    bench_line latency "$label" "$RUNS" "$c" "$d" "$f" "connect $(ratio "$c" "$f")x the floor to the device node, $(ratio "$c" "$l")x to its udev link (${l}s); runs: connect ${cons[*]}; disconnect ${dis[*]}; floor ${floors[*]}; udev link ${links[*]}"
    note "$label: connect $c s, disconnect $d s, floor $f s (udev link $l s) (medians of $RUNS)"
    BENCH_C=$c BENCH_D=$d BENCH_F=$f
}

# ---------------------------------------------------------------- iSCSI -----
IQN=iqn.2003-01.org.linux-iscsi.hostbrick:bench
SERIAL=be0c0000000000000000000000000be0
WWID=$(lio_expected_wwid $SERIAL)
check "LIO target setup" lio_simple_target $IQN bench $SIZE $SERIAL 127.0.0.1:3260
conn_iscsi "$WORK/conn-iscsi.json" 127.0.0.1:3260 $IQN 0 "$(new_uuid)"
iscsi_floor() { kernel_floor_iscsi 0 127.0.0.1:3260 $IQN; }
iscsi_check() { check_block_device "$1" $SIZE "$WWID"; }
bench iscsi iscsi_floor "$WORK/conn-iscsi.json" iscsi_check
ISCSI_C=$BENCH_C ISCSI_D=$BENCH_D ISCSI_F=$BENCH_F
check_no_iscsi_leftovers $IQN
check_no_scsi_disks

# ---------------------------------------------------------------- NVMe/TCP -----
NQN=nqn.2014-08.org.hostbrick:bench
UUID=be0e0000-0000-4000-8000-000000000be0
check "nvmet namespace" nvmet_namespace $NQN 1 $SIZE $UUID $UUID
check "nvmet port" nvmet_port 1 127.0.0.1 4420
check "nvmet export" nvmet_export $NQN 1
conn_nvme "$WORK/conn-nvme.json" $NQN 127.0.0.1 4420 $UUID 1 "${UUID//-/}" "$(new_uuid)"
nvme_floor() { kernel_floor_nvme 127.0.0.1 4420 $NQN $UUID; }
nvme_check() { check_nvme_device "$1" $SIZE $UUID; }
bench nvme-tcp nvme_floor "$WORK/conn-nvme.json" nvme_check
check_no_nvme_leftovers

# ---------------------------------------------------------------- RBD -----
POOL=volumes SPEC=volumes/bench
t0=$(now_ns)
ceph_one_node_up $POOL > "$WORK/ceph-up.log" 2>&1 \
    || fail "one-node Ceph did not come up: $(tail -n 5 "$WORK/ceph-up.log" | tr '\n' ' ')"
log "ceph up in $(secs_since "$t0")s"
modprobe rbd || fail "modprobe rbd failed"
KEY=$(ceph_user_key cinder $POOL) || fail "creating client.cinder failed"
keyring_text cinder "$KEY" > "$WORK/cinder.keyring"
check "rbd create $SPEC" timeout 60 rbd create $SPEC --size $((SIZE / 1024 / 1024))M
conn_rbd "$WORK/conn-rbd.json" $SPEC cinder "$KEY" "$(new_uuid)"

# audit: a mapping made by hand is unrecorded; a connect of the volume adopts and records it
out=$(rbd map $SPEC --id cinder --keyring "$WORK/cinder.keyring" -m "$CEPH_MON" --conf /dev/null 2>&1) \
    || fail "rbd map by hand failed: $out"
MANUAL=$(echo "$out" | grep -m1 '^/dev/rbd')
audit_run audit-rbd
jq -e --arg d "$MANUAL" '.rbd_mappings | length == 1 and .[0].device == $d and .[0].mapper == "krbd"
        and .[0].pool == "volumes" and .[0].image == "bench" and .[0].reason == "unrecorded"' \
    "$WORK/audit-rbd.out" >/dev/null || fail "audit does not list the hand-made mapping: $(jq -c .rbd_mappings "$WORK/audit-rbd.out")"
connect adopt "$WORK/conn-rbd.json"
[ "$(readlink -f "$(record_field adopt path)")" = "$(readlink -f "$MANUAL")" ] \
    || fail "connect did not adopt the existing mapping $MANUAL: $(record_field adopt path)"
check_audit_empty audit-rbd-adopted
disconnect adopt "$WORK/conn-rbd.json"
check_no_rbd_leftovers
check_audit_empty audit-rbd-after

rbd_floor() { kernel_floor_rbd $SPEC cinder "$WORK/cinder.keyring"; }
rbd_check() { check_rbd_device "$1" $SIZE $SPEC; }
bench rbd rbd_floor "$WORK/conn-rbd.json" rbd_check
check_no_rbd_leftovers
ceph_teardown

CONNECT_S=$ISCSI_C DISCONNECT_S=$ISCSI_D FLOOR_S=$ISCSI_F
scenario_pass "iSCSI shown; NVMe/TCP and RBD in the benchmark table"
