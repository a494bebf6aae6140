#!/bin/bash
# Target disappears mid-connect, deterministically: a wrapper around the real tool (iSCSI), or
# a watcher that sees the new controller in sysfs (NVMe: hostbrick runs no program to connect),
# tears the target down right after the step succeeded, before hostbrick gets further.
#   iSCSI: sendtargets discovery (target_discovered), login, then the TPG is disabled and its
#   portal removed (LIO drops the session, re-logins are refused) before the LUN scan. The
#   connect must fail with error[volume_device_not_found] within its --timeout and leave no
#   session, no node record (not even the one discovery made), no SCSI disk, no map.
#   NVMe/TCP: the connect (the write to /dev/nvme-fabrics), then the port is removed before
#   any namespace shows (the subsystem's namespace is disabled, never enabled in time): the
#   same error within the deadline (at once when the connect read the subsystem's namespace
#   list, empty, while the controller was still live), no controller left.
# `attach audit` lists nothing afterwards.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

TIMEOUT=30

# ---------------------------------------------------------------- iSCSI -----
IQN=iqn.2003-01.org.linux-iscsi.hostbrick:gone
SERIAL=60e0000000000000000000000000e0e0
SIZE=$((32 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
check "LIO target setup" lio_simple_target $IQN gone $SIZE $SERIAL 127.0.0.1:3260
conn_iscsi "$WORK/conn.json" 127.0.0.1:3260 $IQN 0 "$(new_uuid)" '.target_discovered=true'

fault_wrap iscsiadm --login "lio_target_down $IQN"
attach_faulty gone connect --timeout $TIMEOUT "$WORK/conn.json"
log "hook: $(tr '\n' ' ' < "$WORK/fault-hook.log" 2>/dev/null)"
fault_fired iscsiadm || fail "the login never happened (the fault hook did not fire)"
grep -q "target $IQN down" "$WORK/fault-hook.log" || fail "the target teardown hook failed: $(tail -n 3 "$WORK/fault-hook.log" | tr '\n' ' ')"
expect_error gone volume_device_not_found
CONNECT_S=$ATTACH_SECS
lt "$ATTACH_SECS" $TIMEOUT || fail "the failed connect took ${ATTACH_SECS}s, past its ${TIMEOUT}s deadline"
note "iSCSI: failed after ${ATTACH_SECS}s ($(attach_stderr_summary gone | cut -c1-160))"
fault_clear
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
check_no_dm_map "$WWID"
[ -z "$(iscsiadm -m node 2>/dev/null)" ] || fail "node records left: $(iscsiadm -m node 2>&1 | tr '\n' ';')"
check_audit_empty audit-iscsi

# ---------------------------------------------------------------- NVMe/TCP -----
NQN=nqn.2014-08.org.hostbrick:gone
UUID=6e0e0000-0000-4000-8000-00000000e0e0
check "nvmet subsystem" nvmet_namespace $NQN 1 $SIZE $UUID
echo 0 > "$NVMET/subsystems/$NQN/namespaces/1/enable" || fail "cannot disable namespace 1"
check "nvmet port" nvmet_port 1 127.0.0.1 4420
check "nvmet export" nvmet_export $NQN 1
conn_nvme "$WORK/conn-nvme.json" $NQN 127.0.0.1 4420 $UUID 1 "${UUID//-/}" "$(new_uuid)"

NVME_TIMEOUT=10
fault_on_nvme_ctrl $NQN "nvmet_port_down 1 $NQN"
attach_faulty gone-nvme connect --timeout $NVME_TIMEOUT "$WORK/conn-nvme.json"
fault_watch_end
log "hook: $(tr '\n' ' ' < "$WORK/fault-hook.log" 2>/dev/null)"
fault_fired nvme || fail "no controller showed (the fault hook did not fire)"
grep -q "port 1 down" "$WORK/fault-hook.log" || fail "the port teardown hook failed: $(tail -n 3 "$WORK/fault-hook.log" | tr '\n' ' ')"
expect_error gone-nvme volume_device_not_found
# the deadline plus the undo (the delete of a controller that is reconnecting)
lt "$ATTACH_SECS" $((NVME_TIMEOUT + 5)) || fail "the failed NVMe connect took ${ATTACH_SECS}s (deadline ${NVME_TIMEOUT}s)"
note "NVMe: failed after ${ATTACH_SECS}s with --timeout $NVME_TIMEOUT"
fault_clear
log "$(nvme_state)"
check_no_nvme_leftovers
check_audit_empty audit-nvme
scenario_pass
