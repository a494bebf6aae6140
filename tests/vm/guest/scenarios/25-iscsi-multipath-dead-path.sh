#!/bin/bash
# iSCSI multipath with a path that dies under I/O: one LUN behind two target portal groups
# (tpgt_1 on 127.0.0.1, tpgt_2 on 127.0.0.2, the same backstore, so one WWID); while a writer
# keeps writing checksummed blocks through the map, tpgt_2 goes away (its session falls into
# recovery and stays there: the path is dead, not removed). The writer sees no error, every
# block reads back, and a non-forced detach with the dead path still there succeeds at once
# (the map is flushed, the dead path is not) and leaves nothing: no map, session, node record,
# SCSI disk, or path multipathd still lists.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:deadpath
SERIAL=3f1d2c3b4a5968778695a4b3c2d1e0f5
SIZE=$((64 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
P1=127.0.0.1:3260 P2=127.0.0.2:3260
TPG2=$LIO/iscsi/$IQN/tpgt_2
# tpgt_1: LUN 0 on P1; tpgt_2: the same backstore as LUN 0 on P2.
check "LIO target (tpgt_1)" lio_simple_target $IQN deadpath $SIZE $SERIAL $P1
mkdir -p "$TPG2/lun/lun_0" && ln -s "$LIO/core/fileio_0/deadpath" "$TPG2/lun/lun_0/deadpath" \
    && mkdir "$TPG2/np/$P2" \
    && echo 1 > "$TPG2/attrib/generate_node_acls" && echo 1 > "$TPG2/attrib/cache_dynamic_acls" \
    && echo 0 > "$TPG2/attrib/demo_mode_write_protect" && echo 0 > "$TPG2/attrib/authentication" \
    && echo 1 > "$TPG2/enable" || fail "LIO target (tpgt_2) setup failed"

conn_iscsi "$WORK/conn.json" $P1 $IQN 0 "$(new_uuid)" \
    ".target_portals=[\"$P1\",\"$P2\"] | .target_iqns=[\"$IQN\",\"$IQN\"] | .target_luns=[0,0]"
connect vol "$WORK/conn.json" --multipath
DEV=$(record_field vol path)
REAL=$(readlink -f "$DEV")
case $REAL in /dev/dm-*) ;; *) fail "multipath connect returned $DEV ($REAL), not a dm device" ;; esac
check_block_device "$DEV" $SIZE "$WWID"
wait_until 10 eval '[ "$(ls /sys/block/${REAL##*/}/slaves | wc -l)" = 2 ]' \
    || fail "map ${REAL##*/} has paths '$(ls /sys/block/${REAL##*/}/slaves | tr '\n' ' ')', expected 2"
PATHS=$(ls /sys/block/${REAL##*/}/slaves | tr '\n' ' ')
check_io "$DEV" before

check "the writer's first round" io_writer_start "$DEV" writer

# The fault: tpgt_2 goes away (disabled, its portal removed); the session through it falls
# into recovery and its re-logins are refused.
t0=$(now_ns)
echo 0 > "$TPG2/enable" && rmdir "$TPG2/np/$P2" || fail "taking tpgt_2 down failed"
wait_until 20 eval '[ "$(iscsi_session_states $IQN | grep -cx LOGGED_IN)" -lt 2 ]' \
    || fail "the tpgt_2 session is still logged in: $(iscsi_session_states $IQN | tr '\n' ' ')"
log "path down after $(secs_since "$t0")s; sessions: $(iscsi_session_states $IQN | tr '\n' ' ')"
r0=$(io_writer_rounds writer)
wait_until 60 io_writer_past writer $((r0 + 2)) \
    || fail "the writer made no progress on one path (round $(io_writer_rounds writer))"
RECOVER_S=$(secs_since "$t0")
io_writer_stop writer || fail "the writer saw an error: $IO_WRITER_ERROR"
ROUNDS=$IO_WRITER_ROUNDS
read_pattern "$DEV" before || fail "the first pattern did not read back after the path died"
multipath -ll "$WWID" 2>&1 | sed 's/^/  /'
iscsi_session_states $IQN | grep -qx LOGGED_IN || fail "no session logged in: the live path died too"
[ "$(ls /sys/block/${REAL##*/}/slaves | wc -l)" = 2 ] || note "the dead path left the map before the detach"

# Detach, not forced, the dead path still in recovery.
disconnect vol "$WORK/conn.json" --multipath
[ "${DISCONNECT_S%%.*}" -lt 10 ] || fail "the detach with a dead path took ${DISCONNECT_S}s"
PATH_NODES=(); for s in $PATHS; do PATH_NODES+=("/dev/$s"); done
check_gone "$DEV" "$REAL" "${PATH_NODES[@]}"
check_no_dm_map "$WWID"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
for s in $PATHS; do
    multipathd show paths raw format '%d' 2>/dev/null | grep -qx "$s" && fail "multipathd still lists $s after the detach"
done
note "writer: $ROUNDS rounds of 4 MiB verified, no error; one path lost, I/O went on within ${RECOVER_S}s; detach with the dead path ${DISCONNECT_S}s"
bench_line fault "iSCSI multipath, a path dies under I/O" 1 "$CONNECT_S" "$DISCONNECT_S" - "I/O on within ${RECOVER_S}s, $ROUNDS rounds verified"
scenario_pass
