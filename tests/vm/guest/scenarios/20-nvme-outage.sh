#!/bin/bash
# NVMe/TCP target outage during I/O (issue #15): a namespace attached with the attach example's
# defaults has a controller the kernel never gives up (ctrl_loss_tmo reads `off`, as os-brick
# connects since its bug 1964385). A writer copies a 32 MiB random pattern onto it in 1 MiB
# O_DIRECT chunks; half-way the subsystem's link into the nvmet port is removed (nvmet drops the
# controller's connections; reconnects are refused while the link is gone) and the rest of the
# writes are issued while the controller is down. The link comes back after OUTAGE_S seconds:
# the same controller reconnects (state live again, at the kernel's next reconnect attempt,
# reconnect_delay = 10 s after the loss), the held writes complete without error, and the whole
# pattern reads back (sha256). Then the detach leaves nothing. The time from the cut to live
# again goes into the note and a bench line (section outage).
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

NQN=nqn.2014-08.org.hostbrick:outage
UUID=0c7a6e00-0000-4000-8000-0000000020a0
SIZE=$((64 * 1024 * 1024))
CHUNKS=32 HALF=8 OUTAGE_S=4
check "nvmet namespace" nvmet_namespace $NQN 1 $SIZE $UUID
check "nvmet port" nvmet_port 1 127.0.0.1 4420
check "nvmet export" nvmet_export $NQN 1
conn_nvme "$WORK/conn.json" $NQN 127.0.0.1 4420 $UUID 1 "${UUID//-/}" "$(new_uuid)"

connect vol "$WORK/conn.json"
check_record_nvme vol
DEV=$(record_field vol path) REAL=$(readlink -f "$(record_field vol path)")
check_nvme_device "$DEV" $SIZE $UUID
CTRL=$(nvme_ctrls_for $NQN)
[ "$(echo $CTRL | wc -w)" = 1 ] || fail "controllers of $NQN after the connect: '$CTRL' (expected one)"
C=/sys/class/nvme/$CTRL
log "$CTRL: ctrl_loss_tmo=$(cat $C/ctrl_loss_tmo) reconnect_delay=$(cat $C/reconnect_delay) fast_io_fail_tmo=$(cat $C/fast_io_fail_tmo 2>&1)"
[ "$(cat $C/ctrl_loss_tmo)" = off ] || fail "$CTRL: ctrl_loss_tmo reads '$(cat $C/ctrl_loss_tmo)', expected 'off' (never give up)"
[ "$(cat $C/reconnect_delay)" = 10 ] || fail "$CTRL: reconnect_delay reads '$(cat $C/reconnect_delay)', expected 10"
[ "$(cat $C/fast_io_fail_tmo)" = off ] || fail "$CTRL: fast_io_fail_tmo reads '$(cat $C/fast_io_fail_tmo)', expected 'off'"

head -c $((CHUNKS * 1024 * 1024)) /dev/urandom > "$WORK/data" || fail "cannot make the pattern"
WANT=$(sha256sum < "$WORK/data" | cut -d' ' -f1)
# I/O errors the kernel logs for the volume: on its head device, or any write. (udev's probes
# after each chunk's close read the path device with readahead, which is fail-fast: such reads
# fail at the cut by design and are only counted in the note.)
HEAD=${REAL##*/}
io_errors() { dmesg | grep 'I/O error, dev nvme' | grep -E "dev $HEAD,|op 0x1:\(WRITE\)"; }
ra_errors() { dmesg | grep 'I/O error, dev nvme' | grep -vE "dev $HEAD,|op 0x1:\(WRITE\)"; }
IOERR_BEFORE=$(io_errors | wc -l) RAERR_BEFORE=$(ra_errors | wc -l)

# The writer: chunk by chunk; after HALF chunks it says so and waits until the target is cut,
# then issues the rest, which the kernel must hold until the controller is back.
(
    for i in $(seq 0 $((CHUNKS - 1))); do
        if [ "$i" = "$HALF" ]; then
            : > "$WORK/writer-half"
            wait_until 60 exists "$WORK/writer-go" || { echo "writer: never told to go on" >&2; exit 2; }
        fi
        dd if="$WORK/data" of="$DEV" bs=1M skip="$i" seek="$i" count=1 oflag=direct status=none \
            || { echo "writer: chunk $i failed" >&2; exit 1; }
    done
) 2> "$WORK/writer.err" &
WRITER=$!
writer_done() { ! kill -0 "$WRITER" 2>/dev/null; }
ctrl_live() { [ "$(cat "$C/state" 2>/dev/null)" = live ]; }

wait_until 30 exists "$WORK/writer-half" || fail "the writer did not get half-way ($(cat "$WORK/writer.err"))"
T_CUT=$(now_ns)
kmsg "cutting $NQN off port 1"
rm "$NVMET/ports/1/subsystems/$NQN" || fail "cannot remove the subsystem's link into the port"
wait_until 15 nvme_not_live $NQN || fail "$CTRL still live 15 s after the cut"
T_DOWN=$(secs_since "$T_CUT")
: > "$WORK/writer-go"
log "target cut; $CTRL $(cat $C/state 2>&1) after ${T_DOWN}s; the writer goes on"
_nap $OUTAGE_S
# During the outage: the controller is kept, the namespace too, and the writes wait.
[ -e "$C" ] || fail "$CTRL was given up during a ${OUTAGE_S}s outage"
STATE=$(cat $C/state 2>&1)
[ -b "$REAL" ] || fail "$REAL vanished during the outage"
writer_done && fail "the writer ended during the outage (the writes were not held): $(cat "$WORK/writer.err")"
T_RESTORE=$(now_ns)
kmsg "restoring $NQN on port 1"
check "nvmet export again" nvmet_export $NQN 1
log "target back after $(secs_since "$T_CUT")s (controller was '$STATE')"
wait_until 40 ctrl_live || fail "$CTRL not live 40 s after the target came back: $(cat $C/state 2>&1)"
RECOVER_S=$(secs_since "$T_CUT") SINCE_RESTORE_S=$(secs_since "$T_RESTORE")
log "$CTRL live again ${RECOVER_S}s after the cut (${SINCE_RESTORE_S}s after the restore)"
[ "$(nvme_ctrls_for $NQN)" = "$CTRL" ] || fail "controllers of $NQN after the outage: '$(nvme_ctrls_for $NQN)' (expected $CTRL reconnected)"

wait_until 30 writer_done || fail "the writer did not finish within 30 s of the reconnect"
wait "$WRITER"; RC=$?
WRITE_S=$(secs_since "$T_CUT")
[ "$RC" = 0 ] || fail "the writer failed (rc=$RC): $(cat "$WORK/writer.err")"
dd if="$DEV" of="$WORK/back" bs=1M count=$CHUNKS iflag=direct status=none || fail "reading the pattern back failed"
GOT=$(sha256sum < "$WORK/back" | cut -d' ' -f1)
[ "$GOT" = "$WANT" ] || fail "the data did not survive the outage: sha256 $GOT, expected $WANT ($(cmp "$WORK/data" "$WORK/back" 2>&1 | head -n1))"
IOERR=$(( $(io_errors | wc -l) - IOERR_BEFORE )) RAERR=$(( $(ra_errors | wc -l) - RAERR_BEFORE ))
[ "$IOERR" = 0 ] || fail "the kernel logged $IOERR I/O errors of the volume during the outage: $(io_errors | tail -n 2 | tr '\n' ' ')"

disconnect vol "$WORK/conn.json"
check_gone "$DEV" "$REAL"
check_no_nvme_leftovers
check_audit_empty audit
note "ctrl_loss_tmo off; ${OUTAGE_S}s outage mid-write: not live after ${T_DOWN}s, live again ${RECOVER_S}s after the cut (${SINCE_RESTORE_S}s after the restore), writes done ${WRITE_S}s after the cut, $((CHUNKS)) MiB verified; $RAERR fail-fast path reads (udev probes) failed at the cut"
bench_line outage "NVMe/TCP ${OUTAGE_S}s target outage" 1 "$CONNECT_S" "$DISCONNECT_S" - "live again ${RECOVER_S}s after the cut, ${SINCE_RESTORE_S}s after the restore (reconnect_delay 10 s); held writes done ${WRITE_S}s after the cut; sha256 verified"
scenario_pass
