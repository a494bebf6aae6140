#!/bin/bash
# vm-needs: osbrick
# os-brick 7.1.1 (OpenStack's connector library) beside hostbrick on one host (issue #13):
# a volume one tool attached, the other detaches, for iSCSI single path, iSCSI multipath over
# two portals and NVMe/TCP:
#   A. os-brick connect_volume -> `attach disconnect` given os-brick's device_info exactly as
#      os-brick returned it (no protocol key; NVMe: type and path only);
#   B. `attach connect` -> os-brick disconnect_volume given hostbrick's record as a dict.
# Data: a pattern written through os-brick's device is on the target's backing file and reads
# back through hostbrick's device of the next attach; hostbrick's pattern is on the backing
# file after os-brick's detach. After each detach: no session, SCSI disk, multipath map, node
# record or NVMe controller left, `attach audit` lists no orphan; hostbrick's registry is empty
# after its own detach, and after os-brick's every entry left is audited as a stale record of
# that volume; and hostbrick does not act later as if the volume os-brick detached were still
# attached (an unused session to its LUN is audited; another namespace's detach drops the
# controller).
# Connector properties: `attach properties` and os-brick's get_connector_properties on the
# same guest, key by key (with and without multipath).
# Every check runs even when an earlier one failed; the verdict lists all failures.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"
T0=$(now_ns)

# Keys whose values may legitimately differ between the two tools on one host, with the
# reason ("key=reason"). Ideally none.
PROPS_MAY_DIFFER=()

IQN1=iqn.2003-01.org.linux-iscsi.hostbrick:interop-single
IQN2=iqn.2003-01.org.linux-iscsi.hostbrick:interop-mpath
NQN=nqn.2014-08.org.hostbrick:interop
SERIAL1=0b1c2d3e4f5061728394a5b6c7d8e9f0 SERIAL2=1c2d3e4f5061728394a5b6c7d8e9f0a1
WWID1=$(lio_expected_wwid $SERIAL1) WWID2=$(lio_expected_wwid $SERIAL2)
NVME_UUID=5e0b1c9a-3f52-4a55-9d7e-1800000000a1 NVME_UUID2=5e0b1c9a-3f52-4a55-9d7e-1800000000a2
SIZE1=$((64 * 1024 * 1024)) SIZE2=$((80 * 1024 * 1024)) SIZE3=$((64 * 1024 * 1024))
P1=127.0.0.1:3260 P2=127.0.0.2:3260

# os-brick unpacks and imports (~30-50 s under emulation) while the targets come up and
# hostbrick answers its part.
osbrick_launch

check "LIO target (single path)" lio_simple_target $IQN1 interop1 $SIZE1 $SERIAL1 $P1
check "LIO target (two portals)" lio_simple_target $IQN2 interop2 $SIZE2 $SERIAL2 $P1 $P2
check "nvmet namespace" nvmet_namespace $NQN 1 $SIZE3 $NVME_UUID $NVME_UUID
check "nvmet port" nvmet_port 1 127.0.0.1 4420
check "nvmet export" nvmet_export $NQN 1

conn_iscsi "$WORK/conn-iscsi.json" $P1 $IQN1 0 "$(new_uuid)"
conn_iscsi "$WORK/conn-mpath.json" $P1 $IQN2 0 "$(new_uuid)" \
    ".target_portals=[\"$P1\",\"$P2\"] | .target_iqns=[\"$IQN2\",\"$IQN2\"] | .target_luns=[0,0]"
conn_nvme "$WORK/conn-nvme.json" $NQN 127.0.0.1 4420 $NVME_UUID 1 "${NVME_UUID//-/}" "$(new_uuid)"

# ------------------------------------------------------------ connector properties -----

# hostbrick's properties first (os-brick is still importing), os-brick's once it is up.
# props_hostbrick LABEL ATTACH_FLAGS...
props_hostbrick() {
    local label=$1; shift
    attach_cmd "props-$label" properties --ip 127.0.0.1 "$@"
    [ "$ATTACH_RC" = 0 ] || soft_fail "attach properties $* failed (rc=$ATTACH_RC): $(attach_stderr_summary "props-$label")"
}
# compare_props LABEL ATTACH_FLAGS...: os-brick's properties with the same options, key by key.
compare_props() {
    local label=$1 mp=false diffs allowed line key k bad=(); shift
    [[ " $* " == *" --multipath "* ]] && mp=true
    [ -s "$WORK/props-$label.out" ] || return   # hostbrick's failed (recorded)
    osbrick_call "props-$label" "{\"op\":\"properties\",\"ip\":\"127.0.0.1\",\"multipath\":$mp,\"enforce_multipath\":false}"
    [ "$OSB_OK" = true ] || { soft_fail "os-brick get_connector_properties ($label): $(osbrick_error "props-$label")"; return; }
    osbrick_result "props-$label" > "$WORK/props-$label-osbrick.json"
    log "properties ($label), hostbrick: $(jq -S -c . "$WORK/props-$label.out")"
    log "properties ($label), os-brick:  $(jq -S -c . "$WORK/props-$label-osbrick.json")"
    diffs=$(jq -n -r --slurpfile a "$WORK/props-$label.out" --slurpfile b "$WORK/props-$label-osbrick.json" '
        $a[0] as $h | $b[0] as $o
        | (($h | keys) + ($o | keys) | unique)[] as $k
        | select(($h | has($k) | not) or ($o | has($k) | not) or ($h[$k] != $o[$k]))
        | "\($k)\t hostbrick=\(if $h | has($k) then $h[$k] | tojson else "(absent)" end) os-brick=\(if $o | has($k) then $o[$k] | tojson else "(absent)" end)"')
    if [ -z "$diffs" ]; then
        log "properties ($label): all $(jq 'keys | length' "$WORK/props-$label.out") keys equal"
        return
    fi
    while IFS=$'\t' read -r key line; do
        allowed=""
        for k in "${PROPS_MAY_DIFFER[@]}"; do [ "${k%%=*}" = "$key" ] && allowed=${k#*=}; done
        if [ -n "$allowed" ]; then
            log "properties ($label): '$key' differs (allowed: $allowed):$line"
        else
            log "properties ($label): '$key' differs:$line"
            bad+=("$key:$line;")
        fi
    done <<<"$diffs"
    [ ${#bad[@]} = 0 ] || soft_fail "connector properties ($label: attach properties --ip 127.0.0.1 $*) differ from os-brick's in ${#bad[@]} key(s): ${bad[*]}"
}
props_hostbrick multipath --multipath
props_hostbrick no-multipath

osbrick_wait
note "os-brick driver up ${OSBRICK_STARTUP_S}s after its launch"
# Where the system UUID comes from on this guest (os-brick: sysfs, else `dmidecode -ssystem-uuid`).
log "DMI: /sys/class/dmi/id/product_uuid: $(cat /sys/class/dmi/id/product_uuid 2>&1); dmidecode -ssystem-uuid: $(dmidecode -ssystem-uuid 2>&1)"
compare_props multipath --multipath
compare_props no-multipath

# ------------------------------------------------------------ one protocol, both ways -----

# Per-protocol settings, set by use_case: CASE, CONN, HB_FLAGS (attach), OSB_PROTO, OSB_MP
# (os-brick's use_multipath), BACKING (the target's backing file).
use_case() {
    CASE=$1
    case $CASE in
        iscsi) CONN=$WORK/conn-iscsi.json HB_FLAGS=() OSB_PROTO=ISCSI OSB_MP=false BACKING=$(lio_backstore_file interop1) ;;
        mpath) CONN=$WORK/conn-mpath.json HB_FLAGS=(--multipath) OSB_PROTO=ISCSI OSB_MP=true BACKING=$(lio_backstore_file interop2) ;;
        nvme)  CONN=$WORK/conn-nvme.json HB_FLAGS=() OSB_PROTO=NVME OSB_MP=false BACKING=$(nvmet_namespace_file $NQN 1) ;;
    esac
}

# check_device PATH: the volume's device, as the case expects it.
check_device() {
    local dev=$1 real slaves
    case $CASE in
        iscsi) check_block_device "$dev" $SIZE1 "$WWID1" ;;
        mpath)
            check_block_device "$dev" $SIZE2 "$WWID2"
            real=$(readlink -f "$dev")
            case $real in /dev/dm-*) ;; *) fail "multipath device $dev ($real) is not a dm device" ;; esac
            slaves=$(ls "/sys/block/${real##*/}/slaves" | tr '\n' ' ')
            [ "$(echo $slaves | wc -w)" = 2 ] || fail "dm map ${real##*/} has paths '$slaves', expected 2" ;;
        nvme) check_nvme_device "$dev" $SIZE3 $NVME_UUID ;;
    esac
}

# check_backing TAG: the target's backing file holds TAG's pattern (what reached the target).
check_backing() {
    dd if="$BACKING" of="$WORK/backing-$1" bs=4096 skip=256 count=64 status=none \
        && cmp -s "$WORK/pattern-$1" "$WORK/backing-$1" || fail "$BACKING does not hold the pattern '$1' at 1 MiB"
}

# check_clean WHAT [--foreign VOLUME_ID] DEVICE_PATH...: nothing of the case's volume is left
# on the host. hostbrick's registry must be empty, except after a detach by os-brick
# (--foreign: hostbrick cannot know of it): then every entry left must be listed by `attach
# audit` as a stale record of that volume (README "Compatibility with os-brick").
check_clean() {
    local what=$1 foreign="" d; shift
    [ "$1" = --foreign ] && { foreign=$2; shift 2; }
    for d in "$@"; do soft "$what: device gone" check_gone "$d"; done
    case $CASE in
        iscsi|mpath)
            local iqn=$IQN1 wwid=$WWID1
            [ "$CASE" = mpath ] && iqn=$IQN2 wwid=$WWID2
            soft "$what: no multipath map" check_no_dm_map "$wwid"
            soft "$what: no iSCSI session or node record" check_no_iscsi_leftovers "$iqn"
            soft "$what: no SCSI disk" check_no_scsi_disks ;;
        nvme)
            soft "$what: no NVMe controller" check_no_nvme_leftovers ;;
    esac
    soft "$what: attach audit lists no orphan" check_audit_no_orphans "audit-$what"
    if [ -z "$foreign" ]; then
        soft "$what: attach audit lists no stale record" check_audit_no_stale "audit-$what"
        soft "$what: hostbrick's registry" check_registry_empty
    else
        soft "$what: the registry entries left are audited as stale records of the volume os-brick detached" \
            check_stale_listed "audit-$what" "$foreign"
        [ -z "$(registry_entries)" ] || note "$CASE: $(registry_entries | wc -l) registry entry left by os-brick's detach"
    fi
}
# check_stale_listed AUDIT VOLUME_ID: each registry entry is one of the audit's stale_records,
# and each of those is VOLUME_ID's (its volume_id, or its entry named volume-VOLUME_ID: the NVMe
# registry's entries carry no volume_id).
check_stale_listed() {
    local n; n=$(registry_entries | wc -l)
    [ -s "$WORK/$1.out" ] || fail "no audit output"
    jq -e --arg v "$2" --argjson n "$n" '(.stale_records // []) as $s | ($s | length) == $n and all($s[]; .volume_id == $v or .entry == "volume-" + $v)' "$WORK/$1.out" >/dev/null \
        || fail "registry holds $n entr(y/ies) ($(registry_entries | sed "s|^$HOSTBRICK_REGISTRY/||" | tr '\n' ' ')); audit's stale_records: $(jq -c '.stale_records // "absent"' "$WORK/$1.out") (expected the volume $2's)"
}
# check_audit_no_orphans NAME: `attach audit` (-> $WORK/NAME.out) lists no session, map,
# controller or mapping. check_audit_no_stale NAME: that audit lists no stale registry entry
# (stale_records: entries of volumes the host no longer shows; older hostbricks lack the key).
check_audit_no_orphans() {
    audit_run "$1"
    jq -e '[.iscsi_sessions, .multipath_maps, .nvme_controllers, .rbd_mappings | length] | add == 0' "$WORK/$1.out" >/dev/null \
        || fail "attach audit lists orphans: $(jq -c 'del(.stale_records)' "$WORK/$1.out")"
}
check_audit_no_stale() {
    [ -s "$WORK/$1.out" ] || fail "no audit output"
    jq -e '(.stale_records // []) | length == 0' "$WORK/$1.out" >/dev/null \
        || fail "attach audit lists stale records: $(jq -c .stale_records "$WORK/$1.out")"
}

# force_clean: whatever a failed step left, so the next step starts clean. Only after a
# failure (STEP_FAILS: the failure count when the step began).
force_clean() {
    [ ${#SOFT_FAILS[@]} -gt "${STEP_FAILS:-0}" ] || return 0
    log "cleaning up after the failed step"
    udevadm settle --timeout=10
    multipath -F >/dev/null 2>&1
    iscsiadm -m node --logoutall=all >/dev/null 2>&1
    iscsiadm -m node -o delete >/dev/null 2>&1
    nvme disconnect -n $NQN >/dev/null 2>&1
    wait_until 30 no_scsi_disks
    udevadm settle --timeout=10
    multipath -F >/dev/null 2>&1
    rm -rf "${HOSTBRICK_REGISTRY:?}"/*/*.json
}

TIMES=()

# A: os-brick attaches, hostbrick detaches with os-brick's device_info.
osbrick_then_hostbrick() {
    local dev real keys t_conn
    STEP_FAILS=${#SOFT_FAILS[@]}
    osbrick_call "$CASE-osb-connect" "$(jq -c --arg p "$OSB_PROTO" --argjson mp $OSB_MP \
        '{op: "connect", protocol: $p, use_multipath: $mp, connection_properties: .data}' "$CONN")"
    [ "$OSB_OK" = true ] || { soft_fail "$CASE: os-brick connect_volume failed: $(osbrick_error "$CASE-osb-connect")"; force_clean; return; }
    t_conn=$OSB_SECS
    osbrick_result "$CASE-osb-connect" > "$WORK/$CASE-osb-device.json"
    log "$CASE: os-brick device_info: $(cat "$WORK/$CASE-osb-device.json")"
    dev=$(jq -r '.path // empty' "$WORK/$CASE-osb-device.json"); real=$(readlink -f "$dev")
    keys=$(jq -r 'keys | join(",")' "$WORK/$CASE-osb-device.json")
    case $CASE in
        iscsi) [ "$keys" = path,scsi_wwn,type ] || soft_fail "$CASE: os-brick's device_info has keys $keys, expected path,scsi_wwn,type" ;;
        mpath) [ "$keys" = multipath_id,path,scsi_wwn,type ] || soft_fail "$CASE: os-brick's device_info has keys $keys, expected multipath_id,path,scsi_wwn,type" ;;
        nvme)  [ "$keys" = path,type ] || soft_fail "$CASE: os-brick's device_info has keys $keys, expected path,type" ;;
    esac
    soft "$CASE: os-brick's device" check_device "$dev"
    soft "$CASE: I/O through os-brick's device" check_io "$dev" "osb-$CASE"
    soft "$CASE: os-brick's write reached the target" check_backing "osb-$CASE"

    attach_cmd "$CASE-hb-disconnect" disconnect "${HB_FLAGS[@]}" "$CONN" "$WORK/$CASE-osb-device.json"
    if [ "$ATTACH_RC" != 0 ]; then
        soft_fail "$CASE: attach disconnect with os-brick's device_info failed (rc=$ATTACH_RC): $(attach_stderr_summary "$CASE-hb-disconnect")"
    else
        TIMES+=("$CASE: os-brick connect ${t_conn}s, hostbrick disconnect ${ATTACH_SECS}s")
        check_clean "$CASE-A" "$dev" "$real"
    fi
    force_clean
}

# B: hostbrick attaches, os-brick detaches with hostbrick's record.
hostbrick_then_osbrick() {
    local dev real t_conn
    STEP_FAILS=${#SOFT_FAILS[@]}
    attach_cmd "$CASE-hb" connect "${HB_FLAGS[@]}" "$CONN"
    if [ "$ATTACH_RC" != 0 ]; then
        soft_fail "$CASE: attach connect failed (rc=$ATTACH_RC): $(attach_stderr_summary "$CASE-hb")"; force_clean; return
    fi
    t_conn=$ATTACH_SECS
    cp "$WORK/$CASE-hb.out" "$WORK/$CASE-hb.json"
    log "$CASE: hostbrick record: $(jq -c . "$WORK/$CASE-hb.json")"
    dev=$(jq -r '.path // empty' "$WORK/$CASE-hb.json"); real=$(readlink -f "$dev")
    soft "$CASE: hostbrick's device" check_device "$dev"
    [ -n "$(registry_entries)" ] || note "$CASE: hostbrick's connect wrote no registry entry"
    soft "$CASE: os-brick's data read through hostbrick's device" read_pattern "$dev" "osb-$CASE"
    soft "$CASE: I/O through hostbrick's device" check_io "$dev" "hb-$CASE"

    osbrick_call "$CASE-osb-disconnect" "$(jq -c -n --arg p "$OSB_PROTO" --argjson mp $OSB_MP \
        --slurpfile c "$CONN" --slurpfile d "$WORK/$CASE-hb.json" \
        '{op: "disconnect", protocol: $p, use_multipath: $mp, connection_properties: $c[0].data,
          device_info: $d[0], force: false, ignore_errors: false}')"
    if [ "$OSB_OK" != true ]; then
        soft_fail "$CASE: os-brick disconnect_volume with hostbrick's record failed: $(osbrick_error "$CASE-osb-disconnect")"
    else
        TIMES+=("$CASE: hostbrick connect ${t_conn}s, os-brick disconnect ${OSB_SECS}s")
        check_clean "$CASE-B" --foreign "$(jq -r .data.volume_id "$CONN")" "$dev" "$real"
        soft "$CASE: hostbrick's write reached the target" check_backing "hb-$CASE"
        after_foreign_detach
    fi
    force_clean
    # what os-brick's detach left in hostbrick's registry (audited as stale above): deleted,
    # as the audit says is harmless, so the next case starts with an empty registry
    rm -f $(registry_entries)
}

# after_foreign_detach: once os-brick has detached hostbrick's attachment, hostbrick must not
# act as if the volume were still attached (what a leftover registry entry would make it do):
#   iscsi: an unused session to the same LUN, made by hand, is listed by `attach audit`;
#   nvme:  hostbrick attaches and detaches another namespace of the same subsystem (added
#          now: os-brick keeps a controller that serves other namespaces) and no controller is
#          left.
after_foreign_detach() {
    case $CASE in
        iscsi)
            iscsiadm -m node -o new -T $IQN1 -p $P1 >/dev/null && iscsiadm -m node -T $IQN1 -p $P1 --login >/dev/null \
                || { soft_fail "$CASE: iscsiadm login by hand failed"; return; }
            wait_until 30 has_scsi_disk_of "$WWID1" || soft_fail "$CASE: no disk after the login by hand"
            udevadm settle --timeout=10
            if ! soft "$CASE: after os-brick's detach, attach audit lists an unused session to the same LUN" audit_lists_one_session \
                && [ -n "$(registry_entries)" ]; then
                # control: the same audit without the registry entry left of the detached volume
                rm -f $(registry_entries)
                audit_run audit-control
                log "control: with hostbrick's registry emptied, attach audit lists $(audit_count audit-control iscsi_sessions) iSCSI session(s)"
                note "$CASE: with the registry entry of the volume os-brick detached removed, attach audit lists $(audit_count audit-control iscsi_sessions) session(s)"
            fi
            multipath -F >/dev/null 2>&1
            iscsiadm -m node -T $IQN1 --logout >/dev/null 2>&1; iscsiadm -m node -T $IQN1 -o delete >/dev/null 2>&1
            wait_until 30 no_scsi_disks; udevadm settle --timeout=10; multipath -F >/dev/null 2>&1
            ;;
        nvme)
            check "nvmet namespace 2" nvmet_namespace $NQN 2 $SIZE3 $NVME_UUID2 $NVME_UUID2
            conn_nvme "$WORK/conn-nvme2.json" $NQN 127.0.0.1 4420 $NVME_UUID2 2 "${NVME_UUID2//-/}" "$(new_uuid)"
            attach_cmd nvme2 connect "$WORK/conn-nvme2.json"
            [ "$ATTACH_RC" = 0 ] || { soft_fail "$CASE: attach connect of namespace 2 failed (rc=$ATTACH_RC): $(attach_stderr_summary nvme2)"; return; }
            attach_cmd nvme2-disconnect disconnect "$WORK/conn-nvme2.json" "$WORK/nvme2.out"
            [ "$ATTACH_RC" = 0 ] || soft_fail "$CASE: attach disconnect of namespace 2 failed (rc=$ATTACH_RC): $(attach_stderr_summary nvme2-disconnect)"
            if ! soft "$CASE: after os-brick's detach, hostbrick's attach and detach of namespace 2 leave no controller" check_no_nvme_leftovers \
                && [ -n "$(registry_entries)" ] && [ "$ATTACH_RC" = 0 ]; then
                # control: the same detach again without the registry entry left of the detached volume
                rm -f $(registry_entries)
                attach_cmd nvme2-control disconnect "$WORK/conn-nvme2.json" "$WORK/nvme2.out"
                udevadm settle --timeout=10
                log "control: with hostbrick's registry emptied, a second detach of namespace 2 (rc=$ATTACH_RC) leaves controllers '$(nvme_ctrls_for $NQN)'"
                note "$CASE: with the registry entry of the volume os-brick detached removed, a second detach of namespace 2 leaves controllers '$(nvme_ctrls_for $NQN)'"
            fi
            nvme disconnect -n $NQN >/dev/null 2>&1
            ;;
    esac
}
audit_lists_one_session() {
    audit_run audit-stale
    [ "$(audit_count audit-stale iscsi_sessions)" = 1 ] \
        || fail "attach audit lists $(audit_count audit-stale iscsi_sessions) iSCSI sessions, expected the one made by hand: $(jq -c . "$WORK/audit-stale.out")"
}

for c in iscsi mpath nvme; do
    use_case $c
    log "---- $c: os-brick connects, hostbrick disconnects"
    osbrick_then_hostbrick
    log "---- $c: hostbrick connects, os-brick disconnects"
    hostbrick_then_osbrick
done

osbrick_stop
note "$(IFS=';'; echo "${TIMES[*]}")"
note "scenario $(secs_since "$T0")s"
soft_verdict
scenario_pass "os-brick $OSBRICK_VERSION and hostbrick: iSCSI, iSCSI multipath, NVMe/TCP attached by one and detached by the other, both ways; connector properties equal"
