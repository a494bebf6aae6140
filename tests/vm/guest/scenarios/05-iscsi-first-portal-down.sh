#!/bin/bash
# The first portal of the lists is unreachable (127.0.0.3:3260, nothing listens), the second is
# good: a single-path connect succeeds through the second.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:failover
SERIAL=f00d0000111122223333444455556666
SIZE=$((64 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
BAD=127.0.0.3:3260 GOOD=127.0.0.1:3260
check "LIO target setup" lio_simple_target $IQN failover $SIZE $SERIAL $GOOD

kernel_floor_iscsi 0 $GOOD $IQN || fail "kernel floor measurement failed"

conn_iscsi "$WORK/conn.json" $BAD $IQN 0 "$(new_uuid)" \
    ".target_portals=[\"$BAD\",\"$GOOD\"] | .target_iqns=[\"$IQN\",\"$IQN\"] | .target_luns=[0,0]"
connect vol "$WORK/conn.json"
DEV=$(record_field vol path)
REAL=$(readlink -f "$DEV")
[ "$(record_field vol scsi_wwn)" = "$WWID" ] || fail "record scsi_wwn '$(record_field vol scsi_wwn)', expected $WWID"
check_block_device "$DEV" $SIZE "$WWID"
check_io "$DEV" failover
session_present $IQN 127.0.0.1 || fail "no session through the good portal $GOOD"
iscsi_sessions | grep -qF 127.0.0.3 && fail "a session to the dead portal $BAD exists?"

disconnect vol "$WORK/conn.json"
check_gone "$DEV" "$REAL"
check_no_dm_map "$WWID"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
scenario_pass
