#!/bin/bash
# Fail fast on what does not exist (issue #15): a connect whose volume the target does not have
# fails with error[volume_device_not_found] as soon as the target has shown that, not at the
# deadline (--timeout 60), and leaves nothing behind.
#   NVMe/TCP: the connection_info names a namespace UUID the subsystem does not have (its one
#   namespace has another; ns_id 1 is that namespace's): the controller comes up, the connect
#   reads the subsystem's namespace list (nvme list-ns) once the namespace has not shown, sees
#   the controller show every listed namespace, none of them the volume's, and fails; the
#   controller it made is dropped.
#   iSCSI: a LUN the target does not export: login, targeted scans of the LUN on the logged-in
#   session that make no SCSI device, failure, logout; no node record left.
# Each failure must come well under one second after the controller / session is up: from the
# connect's own phase log (RUST_LOG=hostbrick=info): NVMe not_on_target elapsed_ms minus the
# connect phase's (both from the start of the portal), iSCSI not_on_target elapsed_ms (from the
# end of the login).
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

TIMEOUT=60
LIMIT_MS=1000

# phase_ms NAME PHASE: elapsed_ms of the first PHASE event in attach call NAME's stderr.
phase_ms() {
    sed -n "s/.*phase=\"$2\" elapsed_ms=\([0-9]*\).*/\1/p" "$WORK/$1.err" | head -n1
}

# ---------------------------------------------------------------- NVMe/TCP -----
NQN=nqn.2014-08.org.hostbrick:missing
UUID=2d1e0000-0000-4000-8000-000000000d21
WRONG=2d1e0000-0000-4000-8000-0000000000ff
SIZE=$((32 * 1024 * 1024))
check "nvmet namespace" nvmet_namespace $NQN 1 $SIZE $UUID
check "nvmet port" nvmet_port 1 127.0.0.1 4420
check "nvmet export" nvmet_export $NQN 1
conn_nvme "$WORK/conn-nvme.json" $NQN 127.0.0.1 4420 $WRONG 1 "${WRONG//-/}" "$(new_uuid)"

RUST_LOG=hostbrick=info attach_cmd nvme-missing connect --timeout $TIMEOUT "$WORK/conn-nvme.json"
expect_error nvme-missing volume_device_not_found
grep -q "has no namespace uuid $WRONG: controller nvme[0-9]* is live and shows every namespace its subsystem lists (nsids 1)" "$WORK/nvme-missing.err" \
    || fail "the NVMe error does not say what was looked for and what the subsystem has: $(attach_stderr_summary nvme-missing)"
CTRL_MS=$(phase_ms nvme-missing connect) GONE_MS=$(phase_ms nvme-missing not_on_target)
[ -n "$CTRL_MS" ] && [ -n "$GONE_MS" ] || fail "no connect / not_on_target phase in the NVMe connect's log"
NVME_AFTER_MS=$((GONE_MS - CTRL_MS))
[ "$NVME_AFTER_MS" -lt $LIMIT_MS ] || fail "the NVMe connect failed ${NVME_AFTER_MS} ms after its controller was ready (limit ${LIMIT_MS} ms)"
lt "$ATTACH_SECS" 10 || fail "the failed NVMe connect took ${ATTACH_SECS}s in all"
NVME_FAIL_S=$ATTACH_SECS
note "NVMe: failed ${NVME_AFTER_MS} ms after the controller was ready (controller ${CTRL_MS} ms, whole call ${ATTACH_SECS}s)"
log "$(nvme_state)"
check_no_nvme_leftovers
check_audit_empty audit-nvme
check_registry_empty

# The same subsystem with the right UUID attaches (the failure was the UUID, not the target).
conn_nvme "$WORK/conn-ok.json" $NQN 127.0.0.1 4420 $UUID 1 "${UUID//-/}" "$(new_uuid)"
connect nvme-ok "$WORK/conn-ok.json"
check_nvme_device "$(record_field nvme-ok path)" $SIZE $UUID
disconnect nvme-ok "$WORK/conn-ok.json"
check_no_nvme_leftovers
# The results table's connect_s: the failed NVMe connect, the figure of this scenario.
CONNECT_S=$NVME_FAIL_S DISCONNECT_S=-

# ---------------------------------------------------------------- iSCSI -----
IQN=iqn.2003-01.org.linux-iscsi.hostbrick:missing
SERIAL=21d1e0000000000000000000000000d2
check "LIO target setup" lio_simple_target $IQN missing $SIZE $SERIAL 127.0.0.1:3260
# The target exports LUN 0 only.
conn_iscsi "$WORK/conn-iscsi.json" 127.0.0.1:3260 $IQN 3 "$(new_uuid)"
RUST_LOG=hostbrick=info attach_cmd iscsi-missing connect --timeout $TIMEOUT "$WORK/conn-iscsi.json"
expect_error iscsi-missing volume_device_not_found
grep -q "has no LUN 3: 2 scans of [0-9]*:0:0:3 on the logged-in session made no SCSI device" "$WORK/iscsi-missing.err" \
    || fail "the iSCSI error does not say what was looked for: $(attach_stderr_summary iscsi-missing)"
LOGIN_MS=$(phase_ms iscsi-missing login) ISCSI_AFTER_MS=$(phase_ms iscsi-missing not_on_target)
[ -n "$ISCSI_AFTER_MS" ] || fail "no not_on_target phase in the iSCSI connect's log"
[ "$ISCSI_AFTER_MS" -lt $LIMIT_MS ] || fail "the iSCSI connect failed ${ISCSI_AFTER_MS} ms after its login (limit ${LIMIT_MS} ms)"
lt "$ATTACH_SECS" 10 || fail "the failed iSCSI connect took ${ATTACH_SECS}s in all"
note "iSCSI: failed ${ISCSI_AFTER_MS} ms after the login (login ${LOGIN_MS:-?} ms, whole call ${ATTACH_SECS}s)"
check_no_iscsi_leftovers $IQN
check_no_scsi_disks
[ -z "$(iscsiadm -m node 2>/dev/null)" ] || fail "node records left: $(iscsiadm -m node 2>&1 | tr '\n' ';')"
check_audit_empty audit-iscsi
check_registry_empty
scenario_pass
