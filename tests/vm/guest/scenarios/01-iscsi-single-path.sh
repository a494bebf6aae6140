#!/bin/bash
# iSCSI, one portal, demo-mode ACL: connect, check the device, I/O, disconnect, nothing left.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:single
SERIAL=5a1e0c3f7b2d4e8a9c6b1d2e3f405162
SIZE=$((64 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
check "LIO target setup" lio_simple_target $IQN single $SIZE $SERIAL 127.0.0.1:3260

kernel_floor_iscsi 0 127.0.0.1:3260 $IQN || fail "kernel floor measurement failed"

conn_iscsi "$WORK/conn.json" 127.0.0.1:3260 $IQN 0 "$(new_uuid)"
# With trace logging on, the device wait logs the udev events it read (hostbrick::Uevent).
RUST_LOG=hostbrick=info,hostbrick::wait=trace connect vol "$WORK/conn.json"
[ "$(record_field vol type)" = block ] || fail "record type is '$(record_field vol type)', expected block"
DEV=$(record_field vol path)
[ "$(record_field vol scsi_wwn)" = "$WWID" ] || fail "record scsi_wwn '$(record_field vol scsi_wwn)', expected $WWID"
check_block_device "$DEV" $SIZE "$WWID"
case $DEV in /dev/sd*|/dev/disk/by-*) ;; *) note "path $DEV for a single-path connect" ;; esac
REAL=$(readlink -f "$DEV")
# The wait may return before the last event is read; the LUN's events before it are there.
grep -E 'udev event action="add" subsystem="(block|scsi)" .*seqnum=[0-9]+' "$WORK/vol.err" >/dev/null \
    || fail "no traced udev add event of the LUN in the connect's log: $(grep -m3 'udev event' "$WORK/vol.err")"
check_io "$DEV" single
session_present $IQN 127.0.0.1 || fail "no iSCSI session to $IQN after connect"

disconnect vol "$WORK/conn.json"
check_gone "$DEV" "$REAL" "/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-$IQN-lun-0"
check_no_dm_map "$WWID"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
scenario_pass
