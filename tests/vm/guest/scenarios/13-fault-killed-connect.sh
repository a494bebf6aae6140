#!/bin/bash
# A connect SIGKILLed half way (a wrapper around the real tool kills the attach process right
# after the tool succeeded; for NVMe, whose connect runs no program before the controller is
# up, the wrapper of the `nvme list-ns` it runs while its namespace has not shown), then
# `attach audit` and a disconnect with the same connection_info
# and no saved device record:
#   iSCSI single path, killed right after the login: audit lists the session (no LUNs), and
#   lists it as in progress while the connect is still alive;
#   iSCSI multipath over two portals, killed once the second portal's login is done and the
#   first path's disk is up: audit lists both sessions (one with its disk unused, one without
#   LUNs);
#   NVMe/TCP, killed once the controller is up and the connect, its namespace not shown, has
#   read the subsystem's namespace list (the namespace is enabled on the target only after
#   the kill, so the connect is still waiting for it): audit lists the controller (as in
#   progress while the connect is alive).
# Each time the disconnect cleans up fully (no session, node record, disk, map, controller)
# and audit then lists nothing. Also: a dm-multipath map without paths is listed by audit.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

IQN=iqn.2003-01.org.linux-iscsi.hostbrick:killed
SERIAL=c1110000000000000000000000000c11
SIZE=$((32 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
P1=127.0.0.1:3260 P2=127.0.0.2:3260
check "LIO target setup" lio_simple_target $IQN killed $SIZE $SERIAL $P1 $P2

check_audit_empty audit-start

# killed_connect NAME PROGRAM MARKER ARGS...: attach connect ARGS, SIGKILLed by the wrapper of
# PROGRAM once it ran with MARKER ($KILL_AFTER, if set, is run by the hook before the kill).
killed_connect() {
    local name=$1 prog=$2 marker=$3; shift 3
    fault_wrap "$prog" "$marker" "${KILL_AFTER:-true}; kill -KILL \"\$FAULT_PARENT\""
    attach_faulty "$name" connect "$@"
    fault_fired "$prog" || fail "$prog $marker never ran: the kill did not happen"
    [ "$ATTACH_RC" = 137 ] || fail "attach connect was not killed (rc=$ATTACH_RC)"
    fault_clear
    udevadm settle --timeout=10
}

# ---------------------------------------------------------------- iSCSI, after login -----
conn_iscsi "$WORK/conn.json" $P1 $IQN 0 "$(new_uuid)"
# Before the kill, while the connect still holds the target's lock (it waits for this very
# login), audit lists the session as in progress, not as an orphan.
KILL_AFTER='"$ATTACH" audit > "$WORK/audit-held.out" 2> "$WORK/audit-held.err"' \
    killed_connect single iscsiadm --login "$WORK/conn.json"
session_present $IQN 127.0.0.1 || fail "no session after the killed connect (the kill came too early?)"
log "audit during the connect: $(jq -c . "$WORK/audit-held.out" 2>&1 | cut -c1-600)"
jq -e --arg t $IQN '(.iscsi_sessions | length) == 0 and (.in_progress.iscsi_sessions | length) == 1
        and .in_progress.iscsi_sessions[0].target == $t and .in_progress.iscsi_sessions[0].reason == "no_luns"' \
    "$WORK/audit-held.out" >/dev/null \
    || fail "audit during the connect does not list its session as in progress: $(head -c 400 "$WORK/audit-held.out") $(tail -n 2 "$WORK/audit-held.err")"
audit_run audit-single
[ "$(audit_count audit-single iscsi_sessions)" = 1 ] || fail "audit lists $(audit_count audit-single iscsi_sessions) iSCSI sessions, expected 1"
jq -e --arg t $IQN '.iscsi_sessions[0] | .target == $t and .portal == "127.0.0.1:3260" and .reason == "no_luns" and .state == "LOGGED_IN" and (.sid | type == "number")' \
    "$WORK/audit-single.out" >/dev/null || fail "unexpected audit entry: $(jq -c '.iscsi_sessions[0]' "$WORK/audit-single.out")"
attach_ok single-disconnect disconnect "$WORK/conn.json"
DISCONNECT_S=$ATTACH_SECS
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
check_audit_empty audit-single-after

# ---------------------------------------------------------------- iSCSI multipath, mid-connect -----
conn_iscsi "$WORK/conn-mp.json" $P1 $IQN 0 "$(new_uuid)" \
    ".target_portals=[\"$P1\",\"$P2\"] | .target_iqns=[\"$IQN\",\"$IQN\"] | .target_luns=[0,0]"
# The paths log in in parallel; the kill comes once 127.0.0.2's login returned and the
# 127.0.0.1 path has its disk (the connect cannot return before the 127.0.0.2 thread does).
KILL_AFTER="wait_until 20 has_scsi_disk_of $WWID" killed_connect mp iscsiadm "$P2 --login" --multipath "$WORK/conn-mp.json"
[ -n "$(scsi_disks)" ] || fail "no SCSI disk after the killed multipath connect"
udevadm settle --timeout=10
log "sessions: $(iscsi_sessions | tr '\n' ';') disks: $(scsi_disks) maps: $(dmsetup ls --target multipath 2>&1 | tr '\n' ';')"
audit_run audit-mp
[ "$(audit_count audit-mp iscsi_sessions)" = 2 ] || fail "audit lists $(audit_count audit-mp iscsi_sessions) iSCSI sessions after the killed multipath connect, expected 2: $(jq -c .iscsi_sessions "$WORK/audit-mp.out")"
jq -e --arg t $IQN '[.iscsi_sessions[] | .target == $t] | all' "$WORK/audit-mp.out" >/dev/null \
    || fail "audit lists a session of another target: $(jq -c .iscsi_sessions "$WORK/audit-mp.out")"
jq -e --arg w "$WWID" '[.iscsi_sessions[] | select(.reason == "luns_unused") | .luns[] | .wwid == $w] | (length == 1 and all)' \
    "$WORK/audit-mp.out" >/dev/null || fail "audit does not list the half-attached disk (WWID $WWID) as unused: $(jq -c .iscsi_sessions "$WORK/audit-mp.out")"
jq -e '[.iscsi_sessions[] | select(.reason == "no_luns")] | length == 1' "$WORK/audit-mp.out" >/dev/null \
    || fail "audit does not list the second session as without LUNs: $(jq -c .iscsi_sessions "$WORK/audit-mp.out")"
[ "$(audit_count audit-mp multipath_maps)" = 0 ] || fail "audit lists a pathless map: $(jq -c .multipath_maps "$WORK/audit-mp.out")"
attach_ok mp-disconnect disconnect --multipath "$WORK/conn-mp.json"
check_no_dm_map "$WWID"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
check_audit_empty audit-mp-after

# ---------------------------------------------------------------- a map without paths -----
# multipathd flushes a map that loses its last path unless the map is open, and drops a pathless
# map it is told about; a map is left without paths when multipathd is not running (or the map
# was open). Made here with multipathd stopped, then multipathd is started again.
ORPHAN_WWID=36001405000000000000000000000dead
multipathd_up() { multipathd show status >/dev/null 2>&1; }
multipathd_down() { ! multipathd_up; }
multipathd shutdown >/dev/null 2>&1
wait_until 10 multipathd_down || fail "multipathd did not stop"
dmsetup create $ORPHAN_WWID --uuid mpath-$ORPHAN_WWID --table "0 2048 multipath 0 0 0 0" \
    || { multipathd -s; fail "dmsetup create of a pathless multipath map failed"; }
udevadm settle --timeout=10
audit_run audit-map
dmsetup remove $ORPHAN_WWID || note "dmsetup remove $ORPHAN_WWID failed"
multipathd -s || fail "multipathd did not start again"
wait_until 10 multipathd_up || fail "multipathd does not answer after its restart"
jq -e --arg w $ORPHAN_WWID '.multipath_maps | length == 1 and .[0].wwid == $w and .[0].name == $w and .[0].reason == "no_paths" and (.[0].dm | startswith("dm-"))' \
    "$WORK/audit-map.out" >/dev/null || fail "audit does not list the pathless map: $(jq -c .multipath_maps "$WORK/audit-map.out")"
check_audit_empty audit-map-after

# ---------------------------------------------------------------- NVMe/TCP, after the connect -----
NQN=nqn.2014-08.org.hostbrick:killed
UUID=c1110000-0000-4000-8000-000000000c11
check "nvmet namespace" nvmet_namespace $NQN 1 $SIZE $UUID
echo 0 > "$NVMET/subsystems/$NQN/namespaces/1/enable" || fail "cannot disable namespace 1"
check "nvmet port" nvmet_port 1 127.0.0.1 4420
check "nvmet export" nvmet_export $NQN 1
conn_nvme "$WORK/conn-nvme.json" $NQN 127.0.0.1 4420 $UUID 1 "${UUID//-/}" "$(new_uuid)"
# The connect writes to /dev/nvme-fabrics itself; once the controller is up and the
# (disabled) namespace has not shown, it reads the subsystem's namespace list with `nvme
# list-ns`: the kill comes from that program's wrapper, before the connect sees the (empty)
# list, which would fail it at once. The namespace is enabled after the kill, as it would have
# been for a connect killed a moment earlier.
fault_wrap nvme list-ns '"$ATTACH" audit > "$WORK/audit-nvme-held.out" 2> "$WORK/audit-nvme-held.err";'" kill -KILL \"\$FAULT_PARENT\"; echo 1 > \"\$NVMET/subsystems/$NQN/namespaces/1/enable\""
attach_faulty nvme connect "$WORK/conn-nvme.json"
fault_fired nvme || fail "the connect never read the namespace list: the kill did not happen"
[ "$ATTACH_RC" = 137 ] || fail "attach connect was not killed (rc=$ATTACH_RC)"
fault_clear
udevadm settle --timeout=10
[ -n "$(nvme_ctrls_for $NQN)" ] || fail "no controller after the killed connect"
log "audit during the connect: $(jq -c . "$WORK/audit-nvme-held.out" 2>&1 | cut -c1-600)"
jq -e --arg n $NQN '(.nvme_controllers | length) == 0 and (.in_progress.nvme_controllers | length) == 1
        and .in_progress.nvme_controllers[0].subsysnqn == $n' "$WORK/audit-nvme-held.out" >/dev/null \
    || fail "audit during the NVMe connect does not list its controller as in progress: $(head -c 400 "$WORK/audit-nvme-held.out") $(tail -n 2 "$WORK/audit-nvme-held.err")"
wait_until 10 has_nvme_disk $UUID || note "the namespace did not show within 10s"
audit_run audit-nvme
jq -e --arg n $NQN '.nvme_controllers | length == 1 and .[0].subsysnqn == $n
        and (.[0].reason == "namespaces_unused" or .[0].reason == "no_namespaces")
        and .[0].portal.address == "127.0.0.1" and .[0].portal.port == 4420 and .[0].portal.transport == "tcp"' \
    "$WORK/audit-nvme.out" >/dev/null || fail "audit does not list the controller: $(jq -c .nvme_controllers "$WORK/audit-nvme.out")"
note "killed NVMe connect: audit reason $(jq -r '.nvme_controllers[0].reason' "$WORK/audit-nvme.out")"
attach_ok nvme-disconnect disconnect "$WORK/conn-nvme.json"
check_no_nvme_leftovers
check_audit_empty audit-nvme-after

CONNECT_S=-
scenario_pass
