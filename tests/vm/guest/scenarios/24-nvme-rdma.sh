#!/bin/bash
# NVMe/RDMA on soft-RoCE: nvmet serves a namespace on an RDMA port (the rxe device's address,
# 4420); hostbrick connects over /dev/nvme-fabrics with transport=rdma. Three shapes of
# connection_info: portals with transport "rdma", the same with "RoCEv2" (os-brick's other
# spelling), and the older shape with transport_type "rdma". Each time: the controller's
# transport is rdma, the device is the namespace (size, uuid), a pattern written through it
# reads back and is on the target's backing file, and after the disconnect no controller,
# subsystem or namespace node is left.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

NQN=nqn.2014-08.org.hostbrick:rdma
UUID=3c2d1e0f-8e21-4b7f-a0c4-2d0000000001 NGUID=3c2d1e0f-8e21-4b7f-a0c4-2d0000000001
SIZE=$((64 * 1024 * 1024))
check "soft-RoCE device (rxe over veth)" rdma_up
log "$(rdma_state)"
check "namespace" nvmet_namespace $NQN 1 $SIZE $UUID $NGUID
check "RDMA port $RDMA_IP:4420" nvmet_port 1 "$RDMA_IP" 4420 rdma
check "export" nvmet_export $NQN 1
log "port: trtype=$(cat $NVMET/ports/1/addr_trtype) traddr=$(cat $NVMET/ports/1/addr_traddr) trsvcid=$(cat $NVMET/ports/1/addr_trsvcid)"

FLOOR_NVME_TRANSPORT=rdma kernel_floor_nvme "$RDMA_IP" 4420 $NQN $UUID || fail "kernel floor measurement (nvme connect -t rdma) failed"
lsmod | grep -q '^nvme_rdma ' || fail "nvme_rdma not loaded after an NVMe/RDMA connect"

# attach_round TAG CONN_JSON: connect, check, I/O, disconnect, nothing left.
attach_round() {
    local tag=$1 conn=$2 dev real c t
    connect "$tag" "$conn"
    log "$(nvme_state)"
    check_record_nvme "$tag"
    dev=$(record_field "$tag" path)
    real=$(readlink -f "$dev")
    check_nvme_device "$dev" $SIZE $UUID
    c=$(nvme_ctrls_for $NQN)
    [ "$(echo $c | wc -w)" = 1 ] || fail "$tag: controllers for $NQN: '$c' (expected one)"
    t=$(cat "/sys/class/nvme/$c/transport")
    [ "$t" = rdma ] || fail "$tag: controller $c has transport '$t', expected rdma"
    grep -q "traddr=$RDMA_IP,trsvcid=4420" "/sys/class/nvme/$c/address" \
        || fail "$tag: controller $c address '$(cat "/sys/class/nvme/$c/address")'"
    check_io "$dev" "$tag"
    dd if="$(nvmet_namespace_file $NQN 1)" bs=4096 skip=256 count=64 status=none | cmp -s "$WORK/pattern-$tag" - \
        || fail "$tag: the pattern is not on the target's backing file"
    disconnect "$tag" "$conn"
    check_gone "$dev" "$real"
    check_no_nvme_leftovers
    check_registry_empty
}

conn_nvme "$WORK/conn-rdma.json" $NQN "$RDMA_IP" 4420 $UUID 1 "${NGUID//-/}" "$(new_uuid)" \
    ".portals = [[\"$RDMA_IP\", \"4420\", \"rdma\"]]"
attach_round rdma "$WORK/conn-rdma.json"
CONNECT_1=$CONNECT_S DISCONNECT_1=$DISCONNECT_S

conn_nvme "$WORK/conn-roce.json" $NQN "$RDMA_IP" 4420 $UUID 1 "${NGUID//-/}" "$(new_uuid)" \
    ".portals = [[\"$RDMA_IP\", 4420, \"RoCEv2\"]]"
attach_round roce "$WORK/conn-roce.json"
CONNECT_2=$CONNECT_S DISCONNECT_2=$DISCONNECT_S

conn_nvme_legacy "$WORK/conn-legacy.json" $NQN "$RDMA_IP" 4420 "$(new_uuid)"
jq '.data.transport_type = "rdma"' "$WORK/conn-legacy.json" > "$WORK/c.tmp" && mv "$WORK/c.tmp" "$WORK/conn-legacy.json"
attach_round legacy "$WORK/conn-legacy.json"

note "rdma: connect ${CONNECT_1}s, disconnect ${DISCONNECT_1}s; RoCEv2: ${CONNECT_2}s / ${DISCONNECT_2}s; legacy transport_type rdma: ${CONNECT_S}s / ${DISCONNECT_S}s"
CONNECT_S=$CONNECT_1 DISCONNECT_S=$DISCONNECT_1
check_audit_empty audit-end
scenario_pass
