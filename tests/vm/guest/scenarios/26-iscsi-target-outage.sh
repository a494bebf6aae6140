#!/bin/bash
# iSCSI single path, the target away under a checked writer (lib.sh io_writer_*):
#   short: away for less than the session's replacement timeout, then back: the session
#   recovers, the writer's I/O resumes with no error and every round verifies;
#   long: away for longer than a 5 s replacement timeout (the session's recovery_tmo): the
#   writer gets an I/O error; a detach that is not forced reports the lost flush and removes
#   nothing, a forced one removes everything (no session, node record, disk, map left).
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:outage
SERIAL=60e0000000000000000000000000a0a1
SIZE=$((64 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
P=127.0.0.1:3260
check "LIO target setup" lio_simple_target $IQN outage $SIZE $SERIAL $P
conn_iscsi "$WORK/conn.json" $P $IQN 0 "$(new_uuid)"
connect vol "$WORK/conn.json"
DEV=$(record_field vol path)
check_block_device "$DEV" $SIZE "$WWID"
check_io "$DEV" before
SID=""
for s in /sys/class/iscsi_session/session*; do
    [ "$(cat "$s/targetname" 2>/dev/null)" = "$IQN" ] && SID=${s##*/session}
done
[ -n "$SID" ] || fail "no session of $IQN"
log "session $SID, recovery_tmo $(cat /sys/class/iscsi_session/session$SID/recovery_tmo)"
logged_in() { [ "$(cat /sys/class/iscsi_session/session$SID/state 2>/dev/null)" = LOGGED_IN ]; }
target_up() { lio_portal $IQN $P && lio_enable $IQN; }

# ---- short outage: 3 s
check "the writer's first round" io_writer_start "$DEV" short
check "target down" lio_target_down $IQN
_nap 3
t_up=$(now_ns)
check "target back" target_up
wait_until 60 logged_in || fail "the session did not recover: $(cat /sys/class/iscsi_session/session$SID/state)"
RELOGIN_S=$(secs_since "$t_up")
r=$(io_writer_rounds short)
wait_until 60 io_writer_past short $((r + 1)) || fail "no write round after the target came back"
RESUME_S=$(secs_since "$t_up")
io_writer_stop short || fail "the writer saw an error across a short outage: $IO_WRITER_ERROR"
SHORT_ROUNDS=$IO_WRITER_ROUNDS
read_pattern "$DEV" before || fail "the first pattern did not read back after the short outage"
note "short outage (3 s): session back ${RELOGIN_S}s after the target, I/O resumed within ${RESUME_S}s, $SHORT_ROUNDS rounds verified"
bench_line fault "iSCSI target away 3 s (< replacement timeout)" 1 "$CONNECT_S" - - "I/O resumed ${RESUME_S}s after the target, no error, $SHORT_ROUNDS rounds verified"

# ---- long outage: longer than a 5 s replacement timeout
echo 5 > /sys/class/iscsi_session/session$SID/recovery_tmo || fail "cannot set recovery_tmo"
check "the writer's first round (long)" io_writer_start "$DEV" long
t_down=$(now_ns)
check "target down" lio_target_down $IQN
wait_until 60 eval '! io_writer_running' || fail "the writer did not fail within 60 s of the target going away"
ERROR_S=$(secs_since "$t_down")
io_writer_stop long && fail "the writer saw no error through a ${ERROR_S}s outage"
log "writer error after ${ERROR_S}s: $IO_WRITER_ERROR"
log "session state $(cat /sys/class/iscsi_session/session$SID/state), disk state $(cat /sys/block/$(readlink -f "$DEV" | sed 's|/dev/||')/device/state 2>/dev/null)"

attach_cmd vol-plain disconnect "$WORK/conn.json" "$WORK/vol.json"
PLAIN_RC=$ATTACH_RC PLAIN_S=$ATTACH_SECS
if [ "$PLAIN_RC" != 0 ]; then
    log "non-forced detach refused after ${PLAIN_S}s: $(attach_stderr_summary vol-plain)"
    iscsi_session_states $IQN | grep -q . || fail "the refused detach removed the session"
    disconnect vol "$WORK/conn.json" --force
else
    DISCONNECT_S=$PLAIN_S
fi
check_gone "$DEV"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
check_no_dm_map "$WWID"
note "long outage (recovery_tmo 5 s): the writer failed after ${ERROR_S}s; non-forced detach rc=$PLAIN_RC in ${PLAIN_S}s, then ${DISCONNECT_S}s in all; nothing left"
bench_line fault "iSCSI target away > replacement timeout (5 s)" 1 - "$DISCONNECT_S" - "writer error after ${ERROR_S}s; detach non-forced rc=$PLAIN_RC"
scenario_pass
