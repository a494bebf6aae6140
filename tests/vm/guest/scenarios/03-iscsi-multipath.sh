#!/bin/bash
# iSCSI multipath: one LUN behind two portals (127.0.0.1, 127.0.0.2), connect --multipath with
# the three lists -> dm map with two paths; I/O survives losing one session; disconnect removes
# the map and both paths.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:mpath
SERIAL=3f1d2c3b4a5968778695a4b3c2d1e0f1
SIZE=$((80 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
P1=127.0.0.1:3260 P2=127.0.0.2:3260
check "LIO target setup" lio_simple_target $IQN mpath $SIZE $SERIAL $P1 $P2

kernel_floor_iscsi 0 $P1,$P2 $IQN || fail "kernel floor measurement failed"

conn_iscsi "$WORK/conn.json" $P1 $IQN 0 "$(new_uuid)" \
    ".target_portals=[\"$P1\",\"$P2\"] | .target_iqns=[\"$IQN\",\"$IQN\"] | .target_luns=[0,0]"
connect vol "$WORK/conn.json" --multipath
DEV=$(record_field vol path)
REAL=$(readlink -f "$DEV")
case $REAL in /dev/dm-*) ;; *) fail "multipath connect returned $DEV ($REAL), not a dm device" ;; esac
[ "$(record_field vol multipath_id)" = "$WWID" ] || fail "record multipath_id '$(record_field vol multipath_id)', expected $WWID"
[ "$(record_field vol scsi_wwn)" = "$WWID" ] || fail "record scsi_wwn '$(record_field vol scsi_wwn)', expected $WWID"
check_block_device "$DEV" $SIZE "$WWID"
PATHS=$(ls /sys/block/${REAL##*/}/slaves | tr '\n' ' ')
[ "$(echo $PATHS | wc -w)" = 2 ] || fail "dm map ${REAL##*/} has paths '$PATHS', expected 2"
multipath -ll "$WWID"
session_present $IQN 127.0.0.1 && session_present $IQN 127.0.0.2 || fail "expected sessions on both portals"
check_io "$DEV" mpath-before

# Drop the 127.0.0.2 session: the map must keep working on the other path.
P2SD=""
for sd in $PATHS; do
    readlink -f /sys/block/$sd/device | grep -q "/session" || continue
    h=$(readlink -f /sys/block/$sd/device); h=${h%%/session*}; h=${h##*/host}
    for c in /sys/class/iscsi_host/host$h/device/session*/connection*/iscsi_connection/*/persistent_address; do
        [ "$(cat "$c")" = 127.0.0.2 ] && P2SD=$sd
    done
done
[ -n "$P2SD" ] || fail "cannot tell which path goes through 127.0.0.2 (paths: $PATHS)"
check "logout of the 127.0.0.2 session" iscsiadm -m node -T $IQN -p $P2 --logout
wait_gone /dev/$P2SD 30 || fail "/dev/$P2SD still there after logout"
read_pattern "$DEV" mpath-before || fail "read through the map failed after losing one path"
check_io "$DEV" mpath-after
multipath -ll "$WWID"

disconnect vol "$WORK/conn.json" --multipath
PATH_NODES=(); for s in $PATHS; do PATH_NODES+=("/dev/$s"); done
check_gone "$DEV" "$REAL" "${PATH_NODES[@]}"
check_no_dm_map "$WWID"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
scenario_pass
