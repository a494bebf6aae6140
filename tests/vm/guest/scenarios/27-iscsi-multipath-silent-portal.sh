#!/bin/bash
# iSCSI multipath with a *silent* portal: 10.99.0.2:3260, routed to a dummy interface, where
# SYNs vanish (no RST, no ARP), beside a healthy one (127.0.0.1:3260), both in the lists of
# one volume. The connect returns long before the silent portal's login would time out (5 s
# login timeout, one retry): the map is made over the healthy path, and the pending login
# goes on in the connect's detached worker (`attach __connect-worker`).
#   Run 1: right after the connect returned, the portal comes to life (10.99.0.2 made local,
#   a LIO portal on it), while iscsid still retries its SYNs: the late path logs in and joins
#   the map (2 paths) under a writer of checksummed blocks, and the worker ends by itself;
#   the writer saw no error; the detach leaves nothing (no session, node record, map, disk,
#   worker).
#   Run 2: the portal stays silent and the worker is SIGKILLed (as by a reboot of the
#   service, or the OOM killer): a disconnect from another process, with the connect's record
#   (one path), still leaves nothing: the node record the worker made for the pending login
#   goes, and a session of the volume's targets without LUNs would be logged out.
#   Run 3: the portal stays silent; a disconnect while the login is still pending stops the
#   worker (SIGTERM) and leaves nothing, and nothing comes back afterwards.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:silent
SERIAL=5117e47000000000000000000000a27a
SIZE=$((64 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
GOOD=127.0.0.1:3260 SILENT=10.99.0.2:3260
check "LIO target setup" lio_simple_target $IQN silent $SIZE $SERIAL $GOOD
IO_WRITER_PID=
check "dummy interface for the silent portal" eval \
    'ip link add hbsilent type dummy && ip addr add 10.99.0.1/24 dev hbsilent && ip link set hbsilent up'
cleanup_net() {
    rmdir "$(lio_tpg $IQN)/np/$SILENT" 2>/dev/null
    ip addr del 10.99.0.2/32 dev lo 2>/dev/null
    ip link del hbsilent 2>/dev/null
    return 0
}
silent_up() { ip addr add 10.99.0.2/32 dev lo && lio_portal $IQN $SILENT; }
silent_down() { rmdir "$(lio_tpg $IQN)/np/$SILENT" && ip addr del 10.99.0.2/32 dev lo; }

# The worker's files (pid file, log) are named after the volume's lock key, hex-encoded.
export RUST_LOG=hostbrick=info
VOLUME_ID=$(new_uuid)
WFILES=/run/hostbrick/attach-workers/$(printf 'volume-%s' "$VOLUME_ID" | od -An -tx1 | tr -d ' \n')
worker_logs() { cut -c1-400 "$WFILES.log" 2>/dev/null | tail -n 40; }
diagnose() {
    log "worker logs:"; worker_logs | sed 's/^/    worker| /'
    log "processes: $(ps -eo pid,args | grep -E 'iscsiadm|__connect-worker' | grep -v grep | tr '\n' ';')"
    log "sockets: $(ss -tn 2>&1 | tr '\n' ';')"
    log "sessions: $(iscsi_sessions | tr '\n' ';')"
}
# die MESSAGE: fail with the writer stopped first (its loop would outlive the scenario).
die() { [ -n "${IO_WRITER_PID:-}" ] && { io_writer_stop writer; IO_WRITER_PID=; }; cleanup_net; fail "$@"; }
workers() { pgrep -f -- '__connect-worker' | tr '\n' ' '; }
no_worker() { [ -z "$(workers)" ]; }
map_paths() { ls "/sys/block/$1/slaves" 2>/dev/null | wc -l; }
two_paths() { [ "$(map_paths "$1")" = 2 ]; }

conn_iscsi "$WORK/conn.json" $GOOD $IQN 0 "$VOLUME_ID" \
    ".target_portals=[\"$GOOD\",\"$SILENT\"] | .target_iqns=[\"$IQN\",\"$IQN\"] | .target_luns=[0,0]"

# ---------------------------------------------------------------- run 1: the portal comes up
connect vol "$WORK/conn.json" --multipath
CONNECT1_S=$CONNECT_S
T0=$(now_ns)
check "bringing the silent portal to life" silent_up
[ "${CONNECT1_S%%.*}" -lt 3 ] || fail "connect with a silent portal took ${CONNECT1_S}s (its login timeout is 5 s)"
DEV=$(record_field vol path)
REAL=$(readlink -f "$DEV")
case $REAL in /dev/dm-*) ;; *) fail "multipath connect returned $DEV ($REAL), not a dm device" ;; esac
[ "$(jq '.paths | length' "$WORK/vol.json")" = 1 ] || fail "the record has $(jq '.paths | length' "$WORK/vol.json") paths, expected the healthy one"
check_block_device "$DEV" $SIZE "$WWID"
[ -n "$(workers)" ] || fail "no connect worker is finishing the silent portal's login"
[ -s "$WFILES.pid" ] || fail "the worker has no pid file ($WFILES.pid)"
log "worker(s): $(workers)"
check_io "$DEV" before
check "the writer's first round" io_writer_start "$DEV" writer

wait_until 30 two_paths "${REAL##*/}" \
    || { diagnose; die "the late path did not join the map: $(multipath -ll $WWID 2>&1 | tr '\n' ';')"; }
JOIN_S=$(secs_since "$T0")
worker_logs | sed 's/^/    worker| /'
# The worker's own figure: from the connect's return (the hand-off) to the path in the map.
JOIN_MS=$(worker_logs | grep -o 'phase="late_path_joined" elapsed_ms=[0-9]*' | grep -o '[0-9]*$' | head -n1)
[ -n "$JOIN_MS" ] || die "the worker's log has no late_path_joined event"
multipath -ll "$WWID" 2>&1 | sed 's/^/  /'
session_present $IQN 10.99.0.2 || die "no session through $SILENT"
wait_until 10 no_worker || die "the worker did not end after the late path joined: $(workers)"
[ -e "$WFILES.pid" ] && die "the worker left its pid file"
r=$(io_writer_rounds writer)
wait_until 60 io_writer_past writer $((r + 1)) || die "the writer made no progress over two paths"
io_writer_stop writer || { IO_WRITER_PID=; die "the writer saw an error: $IO_WRITER_ERROR"; }
IO_WRITER_PID=
ROUNDS=$IO_WRITER_ROUNDS
read_pattern "$DEV" before || fail "the first pattern did not read back"
PATHS=$(ls /sys/block/${REAL##*/}/slaves | tr '\n' ' ')

disconnect vol "$WORK/conn.json" --multipath
PATH_NODES=(); for s in $PATHS; do PATH_NODES+=("/dev/$s"); done
check_gone "$DEV" "$REAL" "${PATH_NODES[@]}"
check_no_dm_map "$WWID"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
no_worker || fail "a worker is left: $(workers)"
DISCONNECT1_S=$DISCONNECT_S

# ---------------------------------------------------------------- run 2: the worker is killed
check "silencing the portal again" silent_down
no_login() { ! pgrep -x iscsiadm >/dev/null; }
connect vol3 "$WORK/conn.json" --multipath
CONNECT3_S=$CONNECT_S
W=$(workers)
[ -n "$W" ] || fail "no worker while the silent portal's login is pending"
kill -KILL $W
wait_until 5 no_worker || fail "the worker survived SIGKILL"
iscsiadm -m node -T $IQN -p $SILENT >/dev/null 2>&1 || note "no node record of the pending login after the kill"
disconnect vol3 "$WORK/conn.json" --multipath
KILLED_DISCONNECT_S=$DISCONNECT_S
check_no_dm_map "$WWID"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
# The login iscsiadm was running for the killed worker ends by itself (the portal is silent);
# the next connect must not find iscsid still busy with it.
wait_until 30 no_login || fail "iscsiadm still running: $(pgrep -a iscsiadm | tr '\n' ';')"
sleep 1
check_no_iscsi_leftovers $IQN

# ---------------------------------------------------------------- run 3: it never comes up
connect vol2 "$WORK/conn.json" --multipath
CONNECT2_S=$CONNECT_S
[ "${CONNECT2_S%%.*}" -lt 3 ] || fail "connect with a silent portal took ${CONNECT2_S}s"
DEV2=$(record_field vol2 path)
REAL2=$(readlink -f "$DEV2")
check_io "$DEV2" second
[ -n "$(workers)" ] || fail "no worker while the silent portal's login is pending"
sleep 0.5
worker_logs | sed 's/^/    worker| /'
disconnect vol2 "$WORK/conn.json" --multipath
[ -e "$WFILES.log" ] && fail "the disconnect left the worker's log"
DISCONNECT2_S=$DISCONNECT_S
[ "${DISCONNECT2_S%%.*}" -lt 5 ] || fail "the disconnect during a pending login took ${DISCONNECT2_S}s"
no_worker || fail "the worker outlived the disconnect: $(workers)"
check_gone "$DEV2" "$REAL2"
check_no_dm_map "$WWID"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
# iscsid's own attempt at the silent portal cannot succeed: nothing appears later either.
sleep 2
check_no_iscsi_leftovers $IQN
cleanup_net

note "connect with a silent portal ${CONNECT1_S}s / ${CONNECT3_S}s / ${CONNECT2_S}s (login timeout 5 s); late path in the map ${JOIN_MS} ms after the connect handed it off (seen by the scenario within ${JOIN_S}s, after its I/O check); writer $ROUNDS rounds verified; detach ${DISCONNECT1_S}s, after the worker was killed ${KILLED_DISCONNECT_S}s, during the pending login ${DISCONNECT2_S}s"
bench_line fault "iSCSI multipath, one portal silent (SYNs dropped)" 1 "$CONNECT1_S" "$DISCONNECT1_S" - "late path joined ${JOIN_MS} ms after connect returned; detach during pending login ${DISCONNECT2_S}s"
scenario_pass
