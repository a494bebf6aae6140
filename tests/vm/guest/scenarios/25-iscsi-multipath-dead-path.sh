#!/bin/bash
# iSCSI multipath with a path that flaps and then dies under I/O: one LUN behind two target
# portal groups (tpgt_1 on 127.0.0.1, tpgt_2 on 127.0.0.2, the same backstore, so one WWID);
# while a writer keeps writing checksummed blocks through the map, tpgt_2 goes away and comes
# back three times (each time the path rejoins the map), then goes away for good (its session
# falls into recovery and stays there: the path is dead, not removed). The writer sees no error, every
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

# tpgt_2 goes away (disabled, its portal removed): the session through it falls into recovery
# and its re-logins are refused; back (portal, enabled): iscsid logs in again and multipathd
# reinstates the path. Three flaps under the writer, then it goes away for good.
tpg2_down() { echo 0 > "$TPG2/enable" && rmdir "$TPG2/np/$P2"; }
tpg2_up() { mkdir "$TPG2/np/$P2" && echo 1 > "$TPG2/enable"; }
logged_in_count() { iscsi_session_states $IQN | grep -cx LOGGED_IN; }
one_path_down() { [ "$(logged_in_count)" -lt 2 ]; }
# both paths active in the map, as multipathd sees them (dm state %t)
both_active() { [ "$(multipathd show paths raw format '%d %t' 2>/dev/null | grep -c ' active$')" -ge 2 ]; }
path_down() {   # path_down: sets DOWN_S (fault to the writer's second round after it)
    local t0 r
    t0=$(now_ns)
    check "taking tpgt_2 down" tpg2_down
    wait_until 20 one_path_down || fail "the tpgt_2 session is still logged in: $(iscsi_session_states $IQN | tr '\n' ' ')"
    r=$(io_writer_rounds writer)
    wait_until 90 io_writer_past writer $((r + 2)) || fail "the writer made no progress on one path (round $(io_writer_rounds writer))"
    io_writer_running || { io_writer_stop writer; fail "the writer stopped with one path: $IO_WRITER_ERROR"; }
    DOWN_S=$(secs_since "$t0")
}
path_up() {     # path_up: sets UP_S (back to both paths active in the map)
    local t0
    t0=$(now_ns)
    check "bringing tpgt_2 back" tpg2_up
    wait_until 60 both_active || fail "the path did not rejoin the map: $(multipathd show paths raw format '%d %t %T' 2>&1 | tr '\n' ';')"
    UP_S=$(secs_since "$t0")
}
FLAPS=()
for cycle in 1 2 3; do
    path_down; path_up
    FLAPS+=("${DOWN_S}/${UP_S}")
    log "flap $cycle: I/O on one path within ${DOWN_S}s, path back in the map within ${UP_S}s"
done
path_down
RECOVER_S=$DOWN_S
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
note "writer: $ROUNDS rounds of 4 MiB verified, no error; 3 flaps (I/O on one path within / path back in the map within, s: ${FLAPS[*]}), then lost: I/O on within ${RECOVER_S}s; detach with the dead path ${DISCONNECT_S}s"
bench_line fault "iSCSI multipath, a path flaps 3 times then dies under I/O" 1 "$CONNECT_S" "$DISCONNECT_S" - "I/O on within ${RECOVER_S}s; flaps down/up s: ${FLAPS[*]}; $ROUNDS rounds verified"
scenario_pass
