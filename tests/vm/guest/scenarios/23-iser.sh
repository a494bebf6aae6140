#!/bin/bash
# iSER (iSCSI over RDMA) on soft-RoCE: LIO serves the LUN on a portal with iSER on (the rxe
# device's address), the initiator logs in with open-iscsi's built-in `iser` iface. Twice:
# Cinder's `driver_volume_type: "iser"` (the iface follows from the protocol), then an `iscsi`
# connection_info with `--iface iser` (the connector's iSCSI iface option). Each time: the
# session's transport is iser, the device is the LUN (size, WWID), a pattern written through it
# reads back and is on the target's backing file, and after the disconnect no session, node
# record, SCSI disk or by-path link is left.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:iser
SERIAL=1e5e7a0c3f7b2d4e8a9c6b1d2e3f4051
SIZE=$((64 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
check "soft-RoCE device (rxe over veth)" rdma_up
log "$(rdma_state)"
PORTAL=$RDMA_IP:3260
check "LIO target setup" lio_simple_target $IQN iser $SIZE $SERIAL
check "iSER portal $PORTAL" lio_portal_iser $IQN $PORTAL
log "portal: $(ls "$(lio_tpg $IQN)/np") iser=$(cat "$(lio_tpg $IQN)/np/$PORTAL/iser")"

FLOOR_ISCSI_IFACE=iser kernel_floor_iscsi 0 $PORTAL $IQN || fail "kernel floor measurement (iSER login with raw iscsiadm) failed"
lsmod | grep -q '^ib_iser ' || fail "ib_iser not loaded after an iSER login"

# the one session of IQN is an iser one, on the iSER portal
check_iser_session() {
    local s
    s=$(iscsi_sessions | grep -F "$IQN")
    [ "$(printf '%s\n' "$s" | grep -c .)" = 1 ] || fail "sessions of $IQN: '$s' (expected one)"
    case $s in "iser: "*" $PORTAL,"*) ;; *) fail "session of $IQN is not iSER on $PORTAL: '$s'" ;; esac
}

# attach_round TAG CONN_JSON [FLAGS...]: connect, check, I/O, disconnect, nothing left.
attach_round() {
    local tag=$1 conn=$2 dev real; shift 2
    RUST_LOG=hostbrick=info connect "$tag" "$conn" "$@"
    [ "$(record_field "$tag" type)" = block ] || fail "$tag: record type '$(record_field "$tag" type)'"
    [ "$(record_field "$tag" scsi_wwn)" = "$WWID" ] || fail "$tag: record scsi_wwn '$(record_field "$tag" scsi_wwn)', expected $WWID"
    dev=$(record_field "$tag" path)
    check_block_device "$dev" $SIZE "$WWID"
    real=$(readlink -f "$dev")
    check_iser_session
    log "$(iscsiadm -m session -P 1 2>&1 | grep -E 'Iface Transport|Iface Name|Current Portal' | tr -s ' \t' ' ' | tr '\n' ';')"
    check_io "$dev" "$tag"
    # what went through the device is on the target's backing file
    dd if="$(lio_backstore_file iser)" bs=4096 skip=256 count=64 status=none | cmp -s "$WORK/pattern-$tag" - \
        || fail "$tag: the pattern is not on the target's backing file"
    disconnect "$tag" "$conn" "$@"
    check_gone "$dev" "$real" "/dev/disk/by-path/ip-$PORTAL-iscsi-$IQN-lun-0"
    check_no_dm_map "$WWID"
    check_no_iscsi_leftovers $IQN
    check_no_scsi_disks
    [ -z "$(ls /etc/iscsi/nodes 2>/dev/null)" ] || fail "$tag: node records left: $(find /etc/iscsi/nodes | tr '\n' ' ')"
    check_registry_empty
}

# 1. Cinder's iSER connection_info: the protocol names the transport.
conn_iscsi "$WORK/conn-iser.json" $PORTAL $IQN 0 "$(new_uuid)"
jq '.driver_volume_type = "iser"' "$WORK/conn-iser.json" > "$WORK/c.tmp" && mv "$WORK/c.tmp" "$WORK/conn-iser.json"
attach_round iser "$WORK/conn-iser.json"
[ "$(record_field iser protocol)" = iser ] || note "record protocol '$(record_field iser protocol)' for an iser volume"
CONNECT_1=$CONNECT_S DISCONNECT_1=$DISCONNECT_S

# 2. An iscsi connection_info with the iface chosen by the caller.
conn_iscsi "$WORK/conn-iface.json" $PORTAL $IQN 0 "$(new_uuid)"
attach_round iface "$WORK/conn-iface.json" --iface iser
CONNECT_2=$CONNECT_S DISCONNECT_2=$DISCONNECT_S

# 3. Detach works from what the host shows: an iSER session made with --iface iser is logged
# out by a disconnect of the same volume without the option (the connector's iface is then
# `default`: the logout goes by the session's own iface).
conn_iscsi "$WORK/conn-mixed.json" $PORTAL $IQN 0 "$(new_uuid)"
connect mixed "$WORK/conn-mixed.json" --iface iser
MIXED_DEV=$(record_field mixed path)
check_iser_session
attach_ok mixed-disconnect disconnect "$WORK/conn-mixed.json" "$WORK/mixed.json"
check_gone "$MIXED_DEV" "/dev/disk/by-path/ip-$PORTAL-iscsi-$IQN-lun-0"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
check_registry_empty
CONNECT_S=$CONNECT_2 DISCONNECT_S=$DISCONNECT_2
note "driver_volume_type iser: connect ${CONNECT_1}s, disconnect ${DISCONNECT_1}s; iscsi + --iface iser: connect ${CONNECT_S}s, disconnect ${DISCONNECT_S}s"
CONNECT_S=$CONNECT_1 DISCONNECT_S=$DISCONNECT_1
check_audit_empty audit-end
scenario_pass
