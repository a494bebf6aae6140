#!/bin/bash
# Untrusted input on a real kernel:
#   a stale device record (after a "reboot" its H:C:T:L names another LUN of the host) makes
#   disconnect refuse with error[record_mismatch]; both LUNs stay attached and readable;
#   a CHAP connect while a sampler reads every /proc/*/cmdline never shows the password in
#   any process's argv (hostbrick writes the node record's auth settings itself).
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:untrusted
SERIAL_A=a1000000000000000000000000000001 SERIAL_B=b2000000000000000000000000000002
SIZE_A=$((32 * 1024 * 1024)) SIZE_B=$((40 * 1024 * 1024))
WWID_A=$(lio_expected_wwid $SERIAL_A) WWID_B=$(lio_expected_wwid $SERIAL_B)
USER=hbuser2
PASS=hbSampl3dSecret77
check "backstore A" lio_backstore una $SIZE_A $SERIAL_A
check "backstore B" lio_backstore unb $SIZE_B $SERIAL_B
check "target" lio_target $IQN
check "LUN 0" lio_lun $IQN 0 una
check "LUN 1" lio_lun $IQN 1 unb
check "portal" lio_portal $IQN 127.0.0.1:3260
check "ACL with CHAP" lio_acl $IQN "$INITIATOR_IQN" $USER $PASS
check "enable" lio_enable $IQN

auth=".auth_method=\"CHAP\" | .auth_username=\"$USER\" | .auth_password=\"$PASS\""
conn_iscsi "$WORK/conn-a.json" 127.0.0.1:3260 $IQN 0 "$(new_uuid)" "$auth"
conn_iscsi "$WORK/conn-b.json" 127.0.0.1:3260 $IQN 1 "$(new_uuid)" "$auth"

# Two witnesses of every argv: an iscsiadm wrapper first in PATH that logs each call's
# arguments (every call, deterministically), and a sampler that reads every process's
# /proc/PID/cmdline as fast as bash builtins allow (no fork per read) while the connects run.
mkdir -p "$WORK/bin"
ARGV_LOG="$WORK/iscsiadm-argv.txt"
: > "$ARGV_LOG"
REAL_ISCSIADM=$(command -v iscsiadm)
printf '#!/bin/sh\nprintf "%%s\\n" "$*" >> %s\nexec %s "$@"\n' "$ARGV_LOG" "$REAL_ISCSIADM" > "$WORK/bin/iscsiadm"
chmod +x "$WORK/bin/iscsiadm"
SAMPLES="$WORK/cmdlines.txt"
: > "$SAMPLES"
(
    while [ ! -e "$WORK/stop-sampler" ]; do
        for f in /proc/[0-9]*/cmdline; do
            mapfile -d '' -t argv < "$f" 2>/dev/null && [ ${#argv[@]} -gt 0 ] && echo "${argv[*]}"
        done >> "$SAMPLES"
    done
) &
SAMPLER=$!
PATH="$WORK/bin:$PATH" connect a "$WORK/conn-a.json"
CONNECT_A=$CONNECT_S
PATH="$WORK/bin:$PATH" connect b "$WORK/conn-b.json"
touch "$WORK/stop-sampler"
wait $SAMPLER
grep -F -- '--login' "$ARGV_LOG" >/dev/null \
    || fail "the iscsiadm wrapper saw no login (so the argv check proves nothing): $(head -c 300 "$ARGV_LOG")"
if grep -F "$PASS" "$ARGV_LOG" >/dev/null; then
    fail "the CHAP password was on iscsiadm's command line: $(grep -m1 -F "$PASS" "$ARGV_LOG" | cut -c1-200)"
fi
n=$(grep -c . "$SAMPLES")
log "iscsiadm calls: $(grep -c . "$ARGV_LOG"); sampled $n argv lines, $(grep -cF iscsiadm "$SAMPLES") of iscsiadm"
note "$(grep -c . "$ARGV_LOG") iscsiadm calls logged, $n argv lines sampled ($(grep -cF iscsiadm "$SAMPLES") of iscsiadm)"
if grep -F "$PASS" "$SAMPLES" >/dev/null; then
    fail "the CHAP password was in a process's argv: $(grep -m1 -F "$PASS" "$SAMPLES" | cut -c1-200)"
fi
CONNECT_S=$CONNECT_A

DEV_A=$(record_field a path) DEV_B=$(record_field b path)
REAL_A=$(readlink -f "$DEV_A") REAL_B=$(readlink -f "$DEV_B")
check_block_device "$DEV_A" $SIZE_A "$WWID_A"
check_block_device "$DEV_B" $SIZE_B "$WWID_B"
write_pattern "$REAL_A" una || fail "write to LUN 0 failed"
write_pattern "$REAL_B" unb || fail "write to LUN 1 failed"

# A's record after a renumbering: its address is now B's, and it lost its WWID.
HCTL_B=$(jq -r '.paths[0].hctl' "$WORK/b.json")
jq --arg h "$HCTL_B" '.paths[0].hctl = $h | del(.scsi_wwn)' "$WORK/a.json" > "$WORK/stale.json"
attach_cmd stale disconnect "$WORK/conn-a.json" "$WORK/stale.json"
expect_error stale record_mismatch
[ -b "$REAL_A" ] || fail "LUN 0 ($REAL_A) was removed by a refused disconnect"
[ -b "$REAL_B" ] || fail "LUN 1 ($REAL_B), named by the stale record, was removed"
read_pattern "$REAL_A" una || fail "LUN 0 data unreadable after the refused disconnect"
read_pattern "$REAL_B" unb || fail "LUN 1 data unreadable after the refused disconnect"
session_present $IQN 127.0.0.1 || fail "the refused disconnect logged out"

disconnect a "$WORK/conn-a.json"
check_gone "$DEV_A" "$REAL_A"
[ -b "$REAL_B" ] || fail "LUN 1 went with LUN 0"
read_pattern "$REAL_B" unb || fail "LUN 1 data unreadable after LUN 0's disconnect"
disconnect b "$WORK/conn-b.json"
check_gone "$DEV_B" "$REAL_B"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
scenario_pass
