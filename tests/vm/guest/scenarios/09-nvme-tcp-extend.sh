#!/bin/bash
# NVMe/TCP extend: grow the namespace on the target (file + nvmet revalidate_size), `attach extend`
# reports the new size and the device has it; once with the host unaware of the growth (AENs
# masked: the connector's rescan must find it), once after the namespace-changed AEN has already
# updated the device.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

NQN=nqn.2014-08.org.hostbrick:extend
UUID=e7e7e7e7-0000-4000-8000-000000000001 NGUID=e7e7e7e7-0000-4000-8000-000000000001
SIZE=$((64 * 1024 * 1024)) NEW_SIZE=$((160 * 1024 * 1024)) NEW_SIZE2=$((192 * 1024 * 1024))
check "namespace" nvmet_namespace $NQN 1 $SIZE $UUID $NGUID
check "port" nvmet_port 1 127.0.0.1 4420
check "export" nvmet_export $NQN 1

kernel_floor_nvme 127.0.0.1 4420 $NQN $UUID || fail "kernel floor measurement failed"

conn_nvme "$WORK/conn.json" $NQN 127.0.0.1 4420 $UUID 1 "${NGUID//-/}" "$(new_uuid)"
connect vol "$WORK/conn.json"
check_record_nvme vol
DEV=$(record_field vol path)
REAL=$(readlink -f "$DEV")
check_nvme_device "$DEV" $SIZE $UUID
check_io "$DEV" extend

host_size() { blockdev --getsize64 "$REAL"; }
size_is() { [ "$(host_size)" = "$1" ]; }

# 1. The host has not seen the growth: namespace-attribute AENs are masked on the controller
#    (Set Features, Asynchronous Event Configuration = 0), so only the connector's rescan can
#    reveal the new size.
CTRL=$(nvme_ctrls_for $NQN)
check "mask the controller's async events" nvme set-feature "/dev/$CTRL" -f 0x0b -v 0
check "grow the namespace on the target" nvmet_namespace_resize $NQN 1 $NEW_SIZE
sleep 1
size_is $SIZE || note "the host saw the growth despite the AEN mask (size $(host_size))"
attach_ok extend extend "$WORK/conn.json"
GOT=$(tr -d '[:space:]' < "$WORK/extend.out")
[ "$GOT" = "$NEW_SIZE" ] || fail "attach extend (host not yet aware) printed '$GOT', expected $NEW_SIZE"
note "extend ${ATTACH_SECS}s (host unaware, AEN masked)"
check_nvme_device "$DEV" $NEW_SIZE $UUID
read_pattern "$DEV" extend || fail "data unreadable after extend"
dd if=/dev/zero of="$DEV" bs=1M seek=$(( NEW_SIZE / 1048576 - 1 )) count=1 oflag=direct status=none \
    || fail "cannot write the last MiB of the extended device"

# 2. The usual NVMe case: the namespace-changed AEN already updated the device before extend
#    runs; extend must report that size (the time it takes is noted).
check "unmask the controller's async events" nvme set-feature "/dev/$CTRL" -f 0x0b -v 0x100
check "grow the namespace again" nvmet_namespace_resize $NQN 1 $NEW_SIZE2
wait_until 10 size_is $NEW_SIZE2 || note "the AEN did not update the host within 10s (size $(host_size))"
attach_ok extend2 extend "$WORK/conn.json"
GOT=$(tr -d '[:space:]' < "$WORK/extend2.out")
[ "$GOT" = "$NEW_SIZE2" ] || fail "attach extend (host already aware) printed '$GOT', expected $NEW_SIZE2"
note "extend ${ATTACH_SECS}s (host already aware via AEN)"
check_nvme_device "$DEV" $NEW_SIZE2 $UUID
read_pattern "$DEV" extend || fail "data unreadable after the second extend"

disconnect vol "$WORK/conn.json"
check_gone "$DEV" "$REAL"
check_no_nvme_leftovers
scenario_pass
