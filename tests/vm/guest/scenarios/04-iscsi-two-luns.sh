#!/bin/bash
# Two LUNs of one target attached as two volumes: disconnecting one keeps the shared session and
# the other device intact and readable.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:twoluns
SERIAL_A=aa00000000000000000000000000000a
SERIAL_B=bb00000000000000000000000000000b
SIZE_A=$((64 * 1024 * 1024)) SIZE_B=$((96 * 1024 * 1024))
WWID_A=$(lio_expected_wwid $SERIAL_A) WWID_B=$(lio_expected_wwid $SERIAL_B)
check "backstore A" lio_backstore luna $SIZE_A $SERIAL_A
check "backstore B" lio_backstore lunb $SIZE_B $SERIAL_B
check "target" lio_target $IQN
check "LUN 0" lio_lun $IQN 0 luna
check "LUN 1" lio_lun $IQN 1 lunb
check "portal" lio_portal $IQN 127.0.0.1:3260
check "demo mode" lio_demo_mode $IQN
check "enable" lio_enable $IQN

kernel_floor_iscsi 1 127.0.0.1:3260 $IQN || fail "kernel floor measurement failed"

conn_iscsi "$WORK/conn-a.json" 127.0.0.1:3260 $IQN 0 "$(new_uuid)"
conn_iscsi "$WORK/conn-b.json" 127.0.0.1:3260 $IQN 1 "$(new_uuid)"
connect a "$WORK/conn-a.json"
CONNECT_A=$CONNECT_S
connect b "$WORK/conn-b.json"
note "connect A ${CONNECT_A}s, B ${CONNECT_S}s (second LUN, session already up)"
CONNECT_S=$CONNECT_A
DEV_A=$(record_field a path) DEV_B=$(record_field b path)
REAL_A=$(readlink -f "$DEV_A") REAL_B=$(readlink -f "$DEV_B")
[ "$REAL_A" != "$REAL_B" ] || fail "both volumes resolved to $REAL_A"
check_block_device "$DEV_A" $SIZE_A "$WWID_A"
check_block_device "$DEV_B" $SIZE_B "$WWID_B"
[ "$(record_field a scsi_wwn)" = "$WWID_A" ] || fail "record A scsi_wwn '$(record_field a scsi_wwn)', expected $WWID_A"
[ "$(record_field b scsi_wwn)" = "$WWID_B" ] || fail "record B scsi_wwn '$(record_field b scsi_wwn)', expected $WWID_B"
check_io "$DEV_A" luna
check_io "$DEV_B" lunb
[ "$(iscsi_sessions | grep -cF $IQN)" = 1 ] || note "sessions to $IQN: $(iscsi_sessions | grep -cF $IQN) (expected one shared)"

disconnect a "$WORK/conn-a.json"
check_gone "$DEV_A" "$REAL_A"
check_no_dm_map "$WWID_A"
session_present $IQN 127.0.0.1 || fail "disconnecting LUN 0 logged out the session LUN 1 still uses"
[ -b "$REAL_B" ] || fail "LUN 1 device $REAL_B disappeared when LUN 0 was disconnected"
check_block_device "$DEV_B" $SIZE_B "$WWID_B"
read_pattern "$DEV_B" lunb || fail "LUN 1 data unreadable after disconnecting LUN 0"
check_io "$DEV_B" lunb-after

disconnect b "$WORK/conn-b.json"
check_gone "$DEV_B" "$REAL_B"
check_no_dm_map "$WWID_B"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
scenario_pass
