#!/bin/bash
# NVMe/TCP, Cinder's current connection_info shape: two namespaces of one subsystem attached as
# two volumes (one controller shared). Each device is the namespace whose uuid is the volume's
# vol_uuid; disconnecting the first keeps the controller and the second device; disconnecting the
# second leaves no controller and no device node (namespace 1's node goes with the controller).
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

NQN=nqn.2014-08.org.hostbrick:vm1
UUID_A=7b0e1c9a-3f52-4a55-9d7e-0a0000000001 NGUID_A=7b0e1c9a-3f52-4a55-9d7e-0a0000000001
UUID_B=7b0e1c9a-3f52-4a55-9d7e-0b0000000002 NGUID_B=7b0e1c9a-3f52-4a55-9d7e-0b0000000002
SIZE_A=$((64 * 1024 * 1024)) SIZE_B=$((96 * 1024 * 1024))
check "namespace 1" nvmet_namespace $NQN 1 $SIZE_A $UUID_A $NGUID_A
check "namespace 2" nvmet_namespace $NQN 2 $SIZE_B $UUID_B $NGUID_B
check "port" nvmet_port 1 127.0.0.1 4420
check "export" nvmet_export $NQN 1

kernel_floor_nvme 127.0.0.1 4420 $NQN $UUID_A || fail "kernel floor measurement failed"

# Cinder's nvmet driver sends the nguid without dashes; sysfs shows it dashed.
conn_nvme "$WORK/conn-a.json" $NQN 127.0.0.1 4420 $UUID_A 1 "${NGUID_A//-/}" "$(new_uuid)"
conn_nvme "$WORK/conn-b.json" $NQN 127.0.0.1 4420 $UUID_B 2 "${NGUID_B//-/}" "$(new_uuid)"
connect a "$WORK/conn-a.json"
CONNECT_A=$CONNECT_S
log "$(nvme_state)"
connect b "$WORK/conn-b.json"
note "connect A ${CONNECT_A}s, B ${CONNECT_S}s (second namespace, controller already up)"
CONNECT_S=$CONNECT_A
log "$(nvme_state)"
check_record_nvme a
check_record_nvme b
DEV_A=$(record_field a path) DEV_B=$(record_field b path)
REAL_A=$(readlink -f "$DEV_A") REAL_B=$(readlink -f "$DEV_B")
[ "$REAL_A" != "$REAL_B" ] || fail "both volumes resolved to $REAL_A"
check_nvme_device "$DEV_A" $SIZE_A $UUID_A
check_nvme_device "$DEV_B" $SIZE_B $UUID_B
check_io "$DEV_A" nsa
check_io "$DEV_B" nsb
CTRLS=$(nvme_ctrls_for $NQN)
[ "$(echo $CTRLS | wc -w)" = 1 ] || fail "controllers for $NQN after two connects: '$CTRLS' (expected one shared)"

# Connecting an attached volume again (a retried attach) gives the same device, no new controller.
attach_cmd a-again connect "$WORK/conn-a.json"
if [ "$ATTACH_RC" != 0 ]; then
    note "connect A again failed (rc=$ATTACH_RC): $(attach_stderr_summary a-again)"
elif [ "$(jq -r .path "$WORK/a-again.out")" != "$DEV_A" ]; then
    note "connect A again gave $(jq -r .path "$WORK/a-again.out"), first connect $DEV_A"
fi
[ "$(nvme_ctrls_for $NQN)" = "$CTRLS" ] || fail "connecting A again changed the controllers: '$CTRLS' -> '$(nvme_ctrls_for $NQN)'"

disconnect a "$WORK/conn-a.json"
log "$(nvme_state)"
# NVMe has no host-side removal of one namespace: while the controller stays, so does
# namespace 1's block device (os-brick leaves it too). Only noted.
[ -b "$REAL_A" ] && note "namespace 1 device $REAL_A stays while the controller serves namespace 2"
[ "$(nvme_ctrls_for $NQN)" = "$CTRLS" ] \
    || fail "disconnecting namespace 1 changed the controllers of $NQN: '$CTRLS' -> '$(nvme_ctrls_for $NQN)'"
[ -b "$REAL_B" ] || fail "namespace 2 device $REAL_B disappeared when namespace 1 was disconnected"
check_nvme_device "$DEV_B" $SIZE_B $UUID_B
read_pattern "$DEV_B" nsb || fail "namespace 2 data unreadable after disconnecting namespace 1"
check_io "$DEV_B" nsb-after

disconnect b "$WORK/conn-b.json"
log "$(nvme_state)"
check_gone "$DEV_B" "$REAL_B" "$DEV_A" "$REAL_A"
check_no_nvme_leftovers

# Disconnecting a volume that is already gone (a retried detach) is not an error.
attach_cmd b-again disconnect "$WORK/conn-b.json" "$WORK/b.json"
[ "$ATTACH_RC" = 0 ] || note "second disconnect of B failed (rc=$ATTACH_RC): $(attach_stderr_summary b-again)"
scenario_pass
