#!/bin/bash
# NVMe/TCP, the older connection_info shape (nqn, transport_type, target_portal, target_port; no
# namespace identity): a one-namespace subsystem, whose namespace is the volume.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

NQN=nqn.2014-08.org.hostbrick:legacy
UUID=5d6c3a10-8e21-4b7f-a0c4-1e0000000001 NGUID=5d6c3a10-8e21-4b7f-a0c4-1e0000000001
SIZE=$((48 * 1024 * 1024))
check "namespace" nvmet_namespace $NQN 1 $SIZE $UUID $NGUID
check "port" nvmet_port 1 127.0.0.1 4420
check "export" nvmet_export $NQN 1

kernel_floor_nvme 127.0.0.1 4420 $NQN $UUID || fail "kernel floor measurement failed"

conn_nvme_legacy "$WORK/conn.json" $NQN 127.0.0.1 4420 "$(new_uuid)"
connect vol "$WORK/conn.json"
log "$(nvme_state)"
check_record_nvme vol
DEV=$(record_field vol path)
REAL=$(readlink -f "$DEV")
check_nvme_device "$DEV" $SIZE $UUID
check_io "$DEV" legacy
[ "$(nvme_ctrls_for $NQN | wc -w)" = 1 ] || fail "controllers for $NQN: '$(nvme_ctrls_for $NQN)' (expected one)"

disconnect vol "$WORK/conn.json"
check_gone "$DEV" "$REAL"
check_no_nvme_leftovers
scenario_pass
