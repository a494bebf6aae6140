#!/bin/bash
# `attach connect` stopped by SIGTERM at several points: the first signal cancels the connect,
# which undoes what it made and fails with error[cancelled] (exit 1), leaving nothing behind
# (no session, node record, SCSI disk, multipath map, NVMe controller; audit empty). Each time
# the figure is the time from the signal to the process's exit. Points:
#   login:      SIGTERM as iscsiadm --login starts (the login is not cut short: iscsid would
#               finish a killed one; the cancel is seen at the scan, the undo logs out);
#   lun-wait:   during the wait for a LUN whose session is in recovery (the login's wrapper
#               takes the target down; the kernel skips scans of such a session, so the connect
#               would wait its 5 s scan timeout; a LUN the target does not offer fails at once);
#   t+N ms:     at staged times after the start of a plain single-path connect (the phase hit
#               is read from the error; a connect that finished first is disconnected);
#   multipath:  two portals, once the map over the first path shows while the second path
#               logs in (the map is being assembled, or the connect waits for the second path);
#   nvme:       NVMe/TCP, once the controller is up and the connect, its (disabled) namespace
#               not shown, runs `nvme list-ns` (the signal from that program's wrapper; the
#               empty list would fail the connect at once): the controller is deleted;
#   second:     two signals 50 ms apart during the login: exit 143 at once; what is half made
#               stays (as after SIGKILL) and a disconnect cleans it.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:cancel
SERIAL=ca11ce1000000000000000000000ca11
SIZE=$((32 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
P1=127.0.0.1:3260 P2=127.0.0.2:3260
check "LIO target setup" lio_simple_target $IQN cancel $SIZE $SERIAL $P1 $P2
SIGNAL_NS=$WORK/signal.ns
FIGURES=""

# pre_signal PROGRAM 'MARKER WORDS' SIGNAL...: a wrapper first on PATH of the attach call that,
# the first time PROGRAM runs with every marker word, notes the time and sends each SIGNAL (50 ms
# apart) to the attach process, then runs the real program.
pre_signal() {
    local prog=$1 marker=$2 real w test="true"; shift 2
    for w in $marker; do test="$test && [[ \" \$* \" == *\" $w \"* ]]"; done
    real=$(command -v "$prog") || fail "no $prog"
    mkdir -p "$FAULT_BIN"; rm -rf "$FAULT_BIN/$prog.fired"
    cat > "$FAULT_BIN/$prog" <<WRAP
#!/bin/bash
if $test && mkdir "$FAULT_BIN/$prog.fired" 2>/dev/null; then
    date +%s%N > "$SIGNAL_NS"
    for s in $*; do kill -\$s \$PPID; sleep 0.05; done
fi
exec "$real" "\$@"
WRAP
    chmod +x "$FAULT_BIN/$prog"
}

# attach_bg NAME ARGS...: the attach example in the background (ATTACH_PID), fault wrappers first
# on PATH; attach_bg_wait NAME: its exit (ATTACH_RC), logged as attach_cmd logs.
attach_bg() {
    local name=$1; shift
    log "attach $* (background)"
    ATTACH_START_NS=$(now_ns)
    PATH="$FAULT_BIN:$PATH" "$ATTACH" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" &
    ATTACH_PID=$!
    ATTACH_ARGS="$*"
}
attach_bg_wait() {
    local name=$1
    wait "$ATTACH_PID"; ATTACH_RC=$?
    ATTACH_END_NS=$(now_ns)
    ATTACH_SECS=$(awk -v a="$ATTACH_START_NS" -v b="$ATTACH_END_NS" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
    log "attach $ATTACH_ARGS -> rc=$ATTACH_RC in ${ATTACH_SECS}s"
    [ -s "$WORK/$name.err" ] && sed 's/^/    stderr| /' "$WORK/$name.err" | tail -n 12
    {
        echo "=== [$(up)] attach $ATTACH_ARGS (signalled) -> rc=$ATTACH_RC in ${ATTACH_SECS}s"
        echo "--- stdout"; cat "$WORK/$name.out"
        echo "--- stderr"; cat "$WORK/$name.err"
    } >> "$RESULTS/$SCENARIO.attach.log"
}
# signal_to_exit: seconds from the signal (the time in $SIGNAL_NS) to the exit
signal_to_exit() { awk -v a="$(cat "$SIGNAL_NS")" -v b="$ATTACH_END_NS" 'BEGIN {printf "%.3f", (b - a) / 1e9}'; }
# send_now SIGNAL: note the time and signal the background attach
send_now() { date +%s%N > "$SIGNAL_NS"; kill -"$1" "$ATTACH_PID"; }

# phase NAME: what the cancel stopped (every step a path or the map names), from the error line
phase() {
    local e out="" p
    e=$(grep -m1 '^error\[' "$WORK/$1.err")
    for p in "scan of LUN:after-login" "waiting for LUN:lun-wait" "waiting for block device:device-wait" \
             "dm-multipath map:map-wait" "still logging in:extra-paths" "waiting for namespace:namespace-wait" \
             "waiting for controller:controller-wait" "waiting for lock:lock" "was cancelled:command"; do
        [[ $e == *"${p%%:*}"* ]] && out="${out:+$out+}${p##*:}"
    done
    echo "${out:-other}"
}

# expect_cancelled NAME STEP_TEXT: exit 1, error[cancelled], the error names STEP_TEXT
expect_cancelled() {
    [ "$ATTACH_RC" = 1 ] || fail "$1: rc=$ATTACH_RC, expected 1 (cancelled): $(attach_stderr_summary "$1")"
    grep -q '^error\[cancelled\]: connect_volume cancelled after ' "$WORK/$1.err" \
        || fail "$1: no error[cancelled] line: $(attach_stderr_summary "$1")"
    [ -z "${2:-}" ] || grep -q "^error\[cancelled\]: .*$2" "$WORK/$1.err" \
        || fail "$1: the cancellation does not name '$2': $(attach_stderr_summary "$1")"
    [ ! -s "$WORK/$1.out" ] || fail "$1: a cancelled connect printed a record: $(head -c 200 "$WORK/$1.out")"
}

iscsi_clean() {
    check_no_iscsi_leftovers $IQN
    check_no_scsi_disks
    check_no_dm_map "$WWID"
    check_audit_empty "audit-$1"
}

figure() { FIGURES="${FIGURES:+$FIGURES, }$1 $2s"; log "figure: $1: signal -> exit $2s"; }

conn_iscsi "$WORK/conn.json" $P1 $IQN 0 "$(new_uuid)"

# ---------------------------------------------------------------- during the login -----
pre_signal iscsiadm --login TERM
attach_bg login connect --timeout 60 "$WORK/conn.json"
attach_bg_wait login
fault_fired iscsiadm || fail "login: the wrapper never saw the login"
fault_clear
expect_cancelled login "scan of LUN 0"
figure login "$(signal_to_exit)"
iscsi_clean login

# ---------------------------------------------------------------- in the LUN wait -----
conn_iscsi "$WORK/conn-lun3.json" $P1 $IQN 3 "$(new_uuid)"
fault_wrap iscsiadm --login "lio_target_down $IQN"
attach_bg lunwait connect --timeout 60 "$WORK/conn-lun3.json"
wait_until 20 grep -q "target $IQN down" "$WORK/fault-hook.log" \
    || fail "lun-wait: the target was not taken down after the login: $(tail -n 3 "$WORK/fault-hook.log" 2>&1 | tr '\n' ' ')"
_nap 0.3
send_now TERM
attach_bg_wait lunwait
fault_clear
expect_cancelled lunwait "waiting for LUN 3"
figure lun-wait "$(signal_to_exit)"
iscsi_clean lunwait
{ lio_portal $IQN $P1 && lio_portal $IQN $P2 && lio_enable $IQN; } || fail "lun-wait: the target did not come back"

# ---------------------------------------------------------------- staged times -----
for ms in 50 100 150 250; do
    name=t$ms
    attach_bg $name connect --timeout 60 "$WORK/conn.json"
    _nap "$(awk -v m=$ms 'BEGIN {printf "%.3f", m / 1000}')"
    send_now TERM
    attach_bg_wait $name
    if [ "$ATTACH_RC" = 143 ] && ! grep -q 'received: cancelling' "$WORK/$name.err"; then
        note "t+${ms}ms: the signal came before the handler was set up (default action)"
    elif [ "$ATTACH_RC" = 0 ]; then
        jq -e 'type == "object"' "$WORK/$name.out" >/dev/null || fail "$name: rc 0 without a record"
        note "t+${ms}ms: the connect finished before the signal ($(signal_to_exit)s)"
        attach_ok $name-disconnect disconnect "$WORK/conn.json" "$WORK/$name.out"
    else
        expect_cancelled $name
        figure "t+${ms}ms[$(phase $name)]" "$(signal_to_exit)"
    fi
    iscsi_clean $name
done

# ---------------------------------------------------------------- multipath -----
conn_iscsi "$WORK/conn-mp.json" $P1 $IQN 0 "$(new_uuid)" \
    ".target_portals=[\"$P1\",\"$P2\"] | .target_iqns=[\"$IQN\",\"$IQN\"] | .target_luns=[0,0]"
# The paths log in in parallel; the 127.0.0.2 login returns only once the dm map over the
# 127.0.0.1 path shows (multipathd makes it on the path's uevent, find_multipaths no), and then
# the signal comes: the connect is waiting for the map to be ready, or holds it and waits for
# the second path.
fault_wrap iscsiadm "$P2 --login" "wait_until 20 exists /dev/mapper/$WWID; date +%s%N > '$SIGNAL_NS'; kill -TERM \"\$FAULT_PARENT\""
attach_bg mp connect --timeout 60 --multipath "$WORK/conn-mp.json"
attach_bg_wait mp
fault_fired iscsiadm || fail "multipath: the second login never ran"
fault_clear
expect_cancelled mp
figure "multipath[$(phase mp)]" "$(signal_to_exit)"
iscsi_clean mp

# ---------------------------------------------------------------- a second signal -----
pre_signal iscsiadm --login TERM TERM
attach_bg second connect --timeout 60 "$WORK/conn.json"
attach_bg_wait second
fault_clear
[ "$ATTACH_RC" = 143 ] || fail "second signal: rc=$ATTACH_RC, expected 143: $(attach_stderr_summary second)"
grep -q 'again: exiting now' "$WORK/second.err" || fail "second signal: no 'exiting now' message: $(tail -n 2 "$WORK/second.err")"
figure second-signal "$(signal_to_exit)"
# The login iscsid was doing goes on: the session is left to a disconnect (as after SIGKILL).
wait_until 10 session_present $IQN 127.0.0.1 || note "second signal: no session was left (the login had not started)"
attach_ok second-disconnect disconnect "$WORK/conn.json"
iscsi_clean second

# ---------------------------------------------------------------- NVMe/TCP namespace wait -----
NQN=nqn.2014-08.org.hostbrick:cancel
UUID=ca11ce10-0000-4000-8000-00000000ca11
check "nvmet namespace" nvmet_namespace $NQN 1 $SIZE $UUID
echo 0 > "$NVMET/subsystems/$NQN/namespaces/1/enable" || fail "cannot disable namespace 1"
check "nvmet port" nvmet_port 1 127.0.0.1 4420
check "nvmet export" nvmet_export $NQN 1
conn_nvme "$WORK/conn-nvme.json" $NQN 127.0.0.1 4420 $UUID 1 "${UUID//-/}" "$(new_uuid)"
pre_signal nvme list-ns TERM
attach_bg nvme connect --timeout 60 "$WORK/conn-nvme.json"
attach_bg_wait nvme
fault_fired nvme || fail "nvme: the connect never read the namespace list: the signal was not sent"
fault_clear
expect_cancelled nvme "waiting for"
figure "nvme[$(phase nvme)]" "$(signal_to_exit)"
check_no_nvme_leftovers
check_audit_empty audit-nvme

log "figures: $FIGURES"
CONNECT_S=-
scenario_pass "signal -> exit: $FIGURES"
