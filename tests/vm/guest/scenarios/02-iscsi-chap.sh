#!/bin/bash
# iSCSI with CHAP (ACL for the initiator): good credentials attach; a wrong password fails with
# error[authentication_failed] and leaves nothing behind.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:chap
SERIAL=c4a9000102030405060708090a0b0c0d
SIZE=$((48 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
USER=hbuser
PASS=hbsecret0123456
check "LIO backstore" lio_backstore chap $SIZE $SERIAL
check "LIO target" lio_target $IQN
check "LIO LUN" lio_lun $IQN 0 chap
check "LIO portal" lio_portal $IQN 127.0.0.1:3260
check "LIO ACL with CHAP" lio_acl $IQN "$INITIATOR_IQN" $USER $PASS
check "LIO enable" lio_enable $IQN

kernel_floor_iscsi 0 127.0.0.1:3260 $IQN $USER $PASS || fail "kernel floor measurement failed"

VOL=$(new_uuid)
conn_iscsi "$WORK/bad.json" 127.0.0.1:3260 $IQN 0 "$VOL" \
    ".auth_method=\"CHAP\" | .auth_username=\"$USER\" | .auth_password=\"wrong-$PASS\""
attach_cmd bad connect "$WORK/bad.json"
expect_error bad authentication_failed
check_no_iscsi_leftovers $IQN
check_no_scsi_disks

conn_iscsi "$WORK/conn.json" 127.0.0.1:3260 $IQN 0 "$VOL" \
    ".auth_method=\"CHAP\" | .auth_username=\"$USER\" | .auth_password=\"$PASS\""
connect vol "$WORK/conn.json"
DEV=$(record_field vol path)
[ "$(record_field vol scsi_wwn)" = "$WWID" ] || fail "record scsi_wwn '$(record_field vol scsi_wwn)', expected $WWID"
check_block_device "$DEV" $SIZE "$WWID"
REAL=$(readlink -f "$DEV")
check_io "$DEV" chap

disconnect vol "$WORK/conn.json"
check_gone "$DEV" "$REAL"
check_no_dm_map "$WWID"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
scenario_pass
