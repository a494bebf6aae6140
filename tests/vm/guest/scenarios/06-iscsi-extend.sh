#!/bin/bash
# Extend: grow the LUN on the target (file + LIO fd_dev_size), `attach extend` reports the new
# size and the device has it.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:extend
SERIAL=e7e7e7e7000000000000000000000001
SIZE=$((64 * 1024 * 1024)) NEW_SIZE=$((160 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
check "LIO target setup" lio_simple_target $IQN extend $SIZE $SERIAL 127.0.0.1:3260

kernel_floor_iscsi 0 127.0.0.1:3260 $IQN || fail "kernel floor measurement failed"

conn_iscsi "$WORK/conn.json" 127.0.0.1:3260 $IQN 0 "$(new_uuid)"
connect vol "$WORK/conn.json"
DEV=$(record_field vol path)
REAL=$(readlink -f "$DEV")
check_block_device "$DEV" $SIZE "$WWID"
check_io "$DEV" extend

check "grow the LUN on the target" lio_backstore_resize extend $NEW_SIZE
attach_ok extend extend "$WORK/conn.json"
GOT=$(tr -d '[:space:]' < "$WORK/extend.out")
[ "$GOT" = "$NEW_SIZE" ] || fail "attach extend printed '$GOT', expected $NEW_SIZE"
note "extend ${ATTACH_SECS}s"
check_block_device "$DEV" $NEW_SIZE "$WWID"
read_pattern "$DEV" extend || fail "data unreadable after extend"
dd if=/dev/zero of="$DEV" bs=1M seek=$(( NEW_SIZE / 1048576 - 1 )) count=1 oflag=direct status=none \
    || fail "cannot write the last MiB of the extended device"

disconnect vol "$WORK/conn.json"
check_gone "$DEV" "$REAL"
check_no_dm_map "$WWID"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
scenario_pass
