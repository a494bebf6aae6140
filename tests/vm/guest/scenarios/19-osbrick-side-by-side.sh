#!/bin/bash
# vm-needs: osbrick
# vm-timeout: 720
# Benchmark (issue #14): cold attach and detach, os-brick 7.1.1 beside hostbrick in the same
# guest boot, at the kernel floor. Four sides, on the same targets:
#   os-brick   one long-lived Python process (guest/osbrick_driver.py), timed around each call
#   library    hostbrick in one long-lived process (`attach batch`), timed around each call
#   example    one `attach` process per call, timed from its start to its exit
#   floor      the same attach with raw tools (iscsiadm, a sysfs scan, nvme-cli), timed from
#              the login / connect (node records made before the clock starts) to the device
# For HOSTBRICK_VM_BENCH_RUNS rounds (default 5), the sides taking turns in a rotating order,
# from a cold host before every call (no node record, session, SCSI disk, multipath map or
# NVMe controller):
#   connector properties; iSCSI single path; iSCSI multipath over two portals (multipathd
#   running); 5 LUNs of one target attached at once (os-brick and the library: 5 calls on 5
#   threads of the one process; the example: 5 processes at once) and detached at once;
#   NVMe/TCP. Also the example's own cost: `attach --help` (no external command).
# Every round writes a pattern through the device each side returned and reads it back,
# checks the device is the volume (size, WWID / namespace UUID, 2-path map), and that nothing is
# left after the detach (and hostbrick's registry is empty). It never fails on a time.
# Results: bench lines (section side-by-side) in the suite's report; a markdown table and
# hostbrick's per-phase medians (RUST_LOG=hostbrick=info phase lines) in the scenario log and
# in results/<name>.table.md.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"
T_SCENARIO=${EPOCHREALTIME/./}
RUNS=${HOSTBRICK_VM_BENCH_RUNS:-5}
export RUST_LOG=${RUST_LOG:-hostbrick=info}
SIDES=(osbrick library example floor)

# Logs written during the timed calls stay on the guest's disk (the results share is 9p);
# they are copied to the results when the scenario ends, passing or failing.
OSBRICK_LOG_PATH=$WORK/osbrick.log
save_logs() {
    [ -f "$WORK/library.err" ] && cp "$WORK/library.err" "$RESULTS/$SCENARIO.library.log"
    [ -f "$OSBRICK_LOG_PATH" ] && cp "$OSBRICK_LOG_PATH" "$RESULTS/$SCENARIO.osbrick.log"
    return 0
}
eval "_lib_fail() $(declare -f fail | tail -n +2)"
fail() { save_logs; _lib_fail "$@"; }

osbrick_launch

# ------------------------------------------------------------------ targets -----
P1=127.0.0.1:3260 P2=127.0.0.2:3260
IQN_S=iqn.2003-01.org.linux-iscsi.hostbrick:side-single
IQN_M=iqn.2003-01.org.linux-iscsi.hostbrick:side-mpath
IQN_C=iqn.2003-01.org.linux-iscsi.hostbrick:side-five
NQN=nqn.2014-08.org.hostbrick:side
SERIAL_S=5d0e0000000000000000000000000001 SERIAL_M=5d0e0000000000000000000000000002
WWID_S=$(lio_expected_wwid $SERIAL_S) WWID_M=$(lio_expected_wwid $SERIAL_M)
NVME_UUID=5d0e0000-0000-4000-8000-000000000019
SIZE=$((64 * 1024 * 1024)) SIZE_C=$((16 * 1024 * 1024))
N_C=5

check "LIO target (single path)" lio_simple_target $IQN_S side1 $SIZE $SERIAL_S $P1
check "LIO target (two portals)" lio_simple_target $IQN_M side2 $SIZE $SERIAL_M $P1 $P2
check "LIO target ($N_C LUNs)" lio_target $IQN_C
for i in $(seq 0 $((N_C - 1))); do
    serial=$(printf '5d0c%02x%026x' "$i" 0)
    check "backstore $i" lio_backstore side-c$i $SIZE_C "$serial"
    check "LUN $i" lio_lun $IQN_C "$i" side-c$i
    WWID_C[i]=$(lio_expected_wwid "$serial")
done
check "portal ($N_C LUNs)" lio_portal $IQN_C $P1
check "demo mode ($N_C LUNs)" lio_demo_mode $IQN_C
check "enable ($N_C LUNs)" lio_enable $IQN_C
check "nvmet namespace" nvmet_namespace $NQN 1 $SIZE $NVME_UUID $NVME_UUID
check "nvmet port" nvmet_port 1 127.0.0.1 4420
check "nvmet export" nvmet_export $NQN 1

conn_iscsi "$WORK/conn-single.json" $P1 $IQN_S 0 "$(new_uuid)"
conn_iscsi "$WORK/conn-mpath.json" $P1 $IQN_M 0 "$(new_uuid)" \
    ".target_portals=[\"$P1\",\"$P2\"] | .target_iqns=[\"$IQN_M\",\"$IQN_M\"] | .target_luns=[0,0]"
for i in $(seq 0 $((N_C - 1))); do conn_iscsi "$WORK/conn-c$i.json" $P1 $IQN_C "$i" "$(new_uuid)"; done
conn_nvme "$WORK/conn-nvme.json" $NQN 127.0.0.1 4420 $NVME_UUID 1 "${NVME_UUID//-/}" "$(new_uuid)"
HOSTNQN=$(hostnqn) HOSTID=$(hostid)

# ------------------------------------------------------------------ timing -----
# since START_US: SINCE = the seconds since then (builtins only: no fork inside a timing)
since() {
    local d=$((${EPOCHREALTIME/./} - $1))
    printf -v SINCE '%d.%03d' $((d / 1000000)) $(((d / 1000) % 1000))
}

# TIMES["op|side|what"]: the runs' seconds, space-separated
declare -A TIMES
add_time() { TIMES["$1|$2|$3"]+=" $4"; }
med() { local v=${TIMES["$1|$2|$3"]:-}; [ -n "$v" ] && median $v || echo -; }

# Phase lines of hostbrick's tracing (phase="login" elapsed_ms=N ...) -> $WORK/phases.tsv
# (op, side, phase, ms).
phases_from() {   # phases_from OP SIDE < stderr text
    grep -o 'phase="[a-z_]*" elapsed_ms=[0-9]*' | sed -E "s/^phase=\"([a-z_]*)\" elapsed_ms=([0-9]*)$/$1\t$2\t\1\t\2/" >> "$WORK/phases.tsv"
}

# ------------------------------------------------------------------ the sides -----

# The library: `attach batch` behind two fifos.
lib_start() {
    local line
    mkfifo "$WORK/lib.in" "$WORK/lib.out" || fail "mkfifo failed"
    "$ATTACH" batch < "$WORK/lib.in" > "$WORK/lib.out" 2> "$WORK/library.err" &
    LIB_PID=$!
    exec {LIB_IN}> "$WORK/lib.in"
    exec {LIB_OUT}< "$WORK/lib.out"
    IFS= read -r -t 60 line <&"$LIB_OUT" || fail "attach batch did not start: $(tail -n 3 "$WORK/library.err")"
    jq -e '.ready == true' <<<"$line" >/dev/null || fail "attach batch: unexpected first line $line"
    log "attach batch up (pid $LIB_PID): $line"
}
lib_stop() {
    local line
    [ -n "${LIB_IN:-}" ] || return 0
    printf '{"op":"quit"}\n' >&"$LIB_IN"
    IFS= read -r -t 30 line <&"$LIB_OUT"
    exec {LIB_IN}>&- {LIB_OUT}<&-
    wait "$LIB_PID" || fail "attach batch exited with $?"
    LIB_IN=""
}

# pipe_call osbrick|library NAME OP REQUEST_JSON(compact, one line): one request; the answer
# in $WORK/NAME.ans; CALL_SECS (wall time around the request), CALL_OK. The phase lines the
# library logged meanwhile are kept under OP.
pipe_call() {
    local side=$1 name=$2 op=$3 req=$4 in out line t0 off=0
    if [ "$side" = osbrick ]; then in=$OSBRICK_IN out=$OSBRICK_OUT; else in=$LIB_IN out=$LIB_OUT; fi
    [ "$side" = library ] && off=$(stat -c %s "$WORK/library.err")
    t0=${EPOCHREALTIME/./}
    printf '%s\n' "$req" >&"$in" || fail "$side driver gone (writing $name)"
    IFS= read -r -t 600 line <&"$out" || fail "$side driver: no answer to $name within 600s"
    since "$t0"; CALL_SECS=$SINCE
    printf '%s\n' "$line" > "$WORK/$name.ans"
    CALL_OK=$(jq -r .ok "$WORK/$name.ans")
    [ "$side" = library ] && tail -c +$((off + 1)) "$WORK/library.err" | phases_from "$op" library
    {
        echo "=== [$(up)] $side $name -> ok=$CALL_OK in ${CALL_SECS}s"
        echo "--- request"; jq -c 'walk(if type == "object" and has("auth_password") then .auth_password = "***" else . end)' <<<"$req"
        echo "--- answer"; jq -c . "$WORK/$name.ans"
    } >> "$RESULTS/$SCENARIO.attach.log"
    [ "$CALL_OK" = true ] || fail "$side $name failed: $(jq -r '.error | if type == "object" then "\(.kind): \(.message)" else tostring end' "$WORK/$name.ans") $(jq -r '[.result[]? | select(.ok != true) | .error.message] | join("; ")' "$WORK/$name.ans" 2>/dev/null | cut -c1-400)"
}
ans_result() { jq -c '.result' "$WORK/$1.ans"; }

# example NAME OP ARGS...: one `attach` process (no wrapper), stdout $WORK/NAME.out, stderr
# $WORK/NAME.err; CALL_SECS from its start to its exit; fails unless it succeeded.
example() {
    local name=$1 op=$2 t0 rc; shift 2
    t0=${EPOCHREALTIME/./}
    "$ATTACH" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
    rc=$?
    since "$t0"; CALL_SECS=$SINCE
    example_logged "$name" "$op" "$rc" "$*"
}
example_logged() {   # NAME OP RC ARGS: attach log, phases, verdict
    phases_from "$2" example < "$WORK/$1.err"
    {
        echo "=== [$(up)] attach $4 -> rc=$3 in ${CALL_SECS}s ($1)"
        echo "--- stdout"; cat "$WORK/$1.out"
        echo "--- stderr"; cat "$WORK/$1.err"
    } >> "$RESULTS/$SCENARIO.attach.log"
    grep -m1 'udev record not understood' "$WORK/$1.err" && fail "attach $4: hostbrick could not parse a real udev record"
    [ "$3" = 0 ] || fail "attach $4 failed (rc=$3): $(grep -m1 '^error\[' "$WORK/$1.err" || tail -n1 "$WORK/$1.err")"
}

# Requests, the same for os-brick and the library: os-brick's connector keys.
# vol_req CONN_JSON_FILE MULTIPATH(true|false)
vol_req() {
    jq -c --argjson mp "$2" '{protocol: (if .driver_volume_type == "nvmeof" then "NVME" else "ISCSI" end),
        use_multipath: $mp, connection_properties: .data}' "$1"
}
connect_req() { vol_req "$1" "$2" | jq -c '{op: "connect"} + .'; }
disconnect_req() {   # CONN MP DEVICE_INFO_JSON
    vol_req "$1" "$2" | jq -c --argjson d "$3" '{op: "disconnect"} + . + {device_info: $d, force: false, ignore_errors: false}'
}

# ------------------------------------------------------------------ checks -----

# check_volume KIND PATH: the device is the volume, and a pattern written through it reads back.
check_volume() {
    local kind=$1 dev=$2 tag=$3 real dm slaves
    case $kind in
        single) check_block_device "$dev" $SIZE "$WWID_S" ;;
        mpath)
            check_block_device "$dev" $SIZE "$WWID_M"
            real=$(readlink -f "$dev"); dm=${real##*/}
            case $dm in dm-*) ;; *) fail "multipath device $dev ($real) is not a dm device" ;; esac
            slaves=$(ls "/sys/block/$dm/slaves" | wc -w)
            [ "$slaves" = 2 ] || fail "dm map $dm has $slaves path(s), expected 2" ;;
        c[0-9]*) check_block_device "$dev" $SIZE_C "${WWID_C[${kind#c}]}" ;;
        nvme) check_nvme_device "$dev" $SIZE $NVME_UUID ;;
    esac
    check_io "$dev" "$tag"
}

# check_clean KIND [DEVICE...]: nothing of the volume(s) is left; hostbrick's registry is empty.
check_clean() {
    local kind=$1 i; shift
    check_gone "$@"
    case $kind in
        single) check_no_dm_map "$WWID_S"; check_no_iscsi_leftovers $IQN_S; check_no_scsi_disks ;;
        mpath) check_no_dm_map "$WWID_M"; check_no_iscsi_leftovers $IQN_M; check_no_scsi_disks ;;
        many)
            for i in $(seq 0 $((N_C - 1))); do check_no_dm_map "${WWID_C[i]}"; done
            check_no_iscsi_leftovers $IQN_C; check_no_scsi_disks ;;
        nvme) check_no_nvme_leftovers ;;
    esac
    check_registry_empty
}

# ------------------------------------------------------------------ raw floors -----

# floor_nodes IQN PORTAL...: node records with manual scan (before the clock starts)
floor_nodes() {
    local iqn=$1 p; shift
    for p in "$@"; do
        iscsiadm -m node -o new -T "$iqn" -p "$p" >/dev/null || fail "floor: iscsiadm -o new $iqn $p failed"
        iscsiadm -m node -T "$iqn" -p "$p" -o update -n node.session.scan -v manual || fail "floor: node update failed"
    done
}
# session_hosts IQN: FLOOR_HOSTS = the SCSI host numbers of IQN's sessions (builtins only)
session_hosts() {
    local s t h
    FLOOR_HOSTS=()
    for s in /sys/class/iscsi_session/session*; do
        [ -e "$s/targetname" ] || continue
        read -r t < "$s/targetname"; [ "$t" = "$1" ] || continue
        for h in "$s"/device/../scsi_host/host*; do [ -e "$h" ] && FLOOR_HOSTS+=("${h##*/host}"); done
    done
}
# _map_paths WWID: the dm map named WWID exists with exactly $MAP_PATHS_WANTED paths (builtins)
_map_paths() {
    local d u n=0 s
    for d in /sys/block/dm-*; do
        [ -e "$d/dm/uuid" ] || continue
        read -r u < "$d/dm/uuid"; [ "$u" = "mpath-$1" ] || continue
        for s in "$d"/slaves/*; do [ -e "$s" ] && n=$((n + 1)); done
        [ "$n" = "$MAP_PATHS_WANTED" ] && [ -e "/dev/mapper/$1" ]
        return
    done
    return 1
}
# floor_settle_maps SD...: before timing a raw detach, let multipathd build the maps it builds
# for every SCSI disk (find_multipaths no), as it has for the other sides by then.
floor_settle_maps() {
    local sd wwid
    udevadm settle --timeout=10
    FLOOR_MAPS=()
    for sd in "$@"; do
        multipath -c "/dev/$sd" >/dev/null 2>&1 || continue
        wwid=$(/lib/udev/scsi_id -g -u "/dev/$sd") || continue
        wait_for "/dev/mapper/$wwid" 10 && FLOOR_MAPS+=("$wwid")
    done
    udevadm settle --timeout=10
}
# floor_iscsi_detach IQN SD...: timed: flush the maps (at once), log out, delete the node
# records, until the disks are gone -> FLOOR_DETACH_S
floor_iscsi_detach() {
    local iqn=$1 t0 w sd pids=(); shift
    floor_settle_maps "$@"
    t0=${EPOCHREALTIME/./}
    for w in "${FLOOR_MAPS[@]}"; do multipath -f "$w" >/dev/null 2>&1 & pids+=($!); done
    for w in "${pids[@]}"; do wait "$w"; done
    for w in "${FLOOR_MAPS[@]}"; do [ -e "/dev/mapper/$w" ] && { multipath -f "$w" >/dev/null 2>&1 || note "floor: multipath -f $w failed"; }; done
    iscsiadm -m node -T "$iqn" --logout >/dev/null 2>&1 || fail "floor: logout from $iqn failed"
    iscsiadm -m node -T "$iqn" -o delete >/dev/null 2>&1
    for sd in "$@"; do wait_gone "/dev/$sd" 30 || fail "floor: /dev/$sd still there after the logout"; done
    since "$t0"; FLOOR_DETACH_S=$SINCE
}

# floor_single: login + targeted scan of LUN 0 -> /dev/sdX (FLOOR_S) -> by-path link (FLOOR_LINK_S)
floor_single() {
    local t0 link=/dev/disk/by-path/ip-$P1-iscsi-$IQN_S-lun-0
    floor_nodes $IQN_S $P1
    t0=${EPOCHREALTIME/./}
    iscsiadm -m node -T $IQN_S -p $P1 --login >/dev/null || fail "floor: login failed"
    session_hosts $IQN_S
    [ ${#FLOOR_HOSTS[@]} = 1 ] || fail "floor: SCSI hosts of $IQN_S: ${FLOOR_HOSTS[*]}"
    echo "0 0 0" > "/sys/class/scsi_host/host${FLOOR_HOSTS[0]}/scan"
    wait_until 30 _scsi_block "${FLOOR_HOSTS[0]}:0:0:0" || fail "floor: no block device"
    wait_for "/dev/$SCSI_BLOCK" 30 || fail "floor: no /dev/$SCSI_BLOCK"
    since "$t0"; FLOOR_S=$SINCE
    wait_for "$link" 30 || fail "floor: no $link"
    since "$t0"; FLOOR_LINK_S=$SINCE
    FLOOR_DEV=$link FLOOR_SDS=$SCSI_BLOCK
}
floor_single_detach() { floor_iscsi_detach $IQN_S $FLOOR_SDS; }

# floor_mpath: one `iscsiadm --login` of both portals' records + a targeted scan on each
# session -> the 2-path map /dev/mapper/WWID (FLOOR_S; FLOOR_LINK_S the same)
floor_mpath() {
    local t0 h sds=()
    floor_nodes $IQN_M $P1 $P2
    t0=${EPOCHREALTIME/./}
    iscsiadm -m node -T $IQN_M --login >/dev/null || fail "floor: login to both portals failed"
    session_hosts $IQN_M
    [ ${#FLOOR_HOSTS[@]} = 2 ] || fail "floor: SCSI hosts of $IQN_M: ${FLOOR_HOSTS[*]}"
    for h in "${FLOOR_HOSTS[@]}"; do echo "0 0 0" > "/sys/class/scsi_host/host$h/scan"; done
    for h in "${FLOOR_HOSTS[@]}"; do
        wait_until 30 _scsi_block "$h:0:0:0" || fail "floor: no block device on host$h"
        sds+=("$SCSI_BLOCK")
    done
    MAP_PATHS_WANTED=2 wait_until 30 _map_paths "$WWID_M" || fail "floor: no 2-path map $WWID_M"
    since "$t0"; FLOOR_S=$SINCE FLOOR_LINK_S=$FLOOR_S
    FLOOR_DEV=/dev/mapper/$WWID_M FLOOR_SDS="${sds[*]}"
}
floor_mpath_detach() {
    local t0 sd
    udevadm settle --timeout=10
    t0=${EPOCHREALTIME/./}
    multipath -f "$WWID_M" >/dev/null 2>&1 || { _nap 0.2; multipath -f "$WWID_M" >/dev/null 2>&1; } || fail "floor: multipath -f $WWID_M failed"
    iscsiadm -m node -T $IQN_M --logout >/dev/null 2>&1 || fail "floor: logout failed"
    iscsiadm -m node -T $IQN_M -o delete >/dev/null 2>&1
    for sd in $FLOOR_SDS; do wait_gone "/dev/$sd" 30 || fail "floor: /dev/$sd still there"; done
    since "$t0"; FLOOR_DETACH_S=$SINCE
}

# floor_many: one login + a targeted scan of each of the 5 LUNs -> every device node (FLOOR_S)
# -> every by-path link (FLOOR_LINK_S)
floor_many() {
    local t0 l sds=() h
    floor_nodes $IQN_C $P1
    t0=${EPOCHREALTIME/./}
    iscsiadm -m node -T $IQN_C -p $P1 --login >/dev/null || fail "floor: login failed"
    session_hosts $IQN_C
    h=${FLOOR_HOSTS[0]:-}
    [ ${#FLOOR_HOSTS[@]} = 1 ] || fail "floor: SCSI hosts of $IQN_C: ${FLOOR_HOSTS[*]}"
    for l in $(seq 0 $((N_C - 1))); do echo "0 0 $l" > "/sys/class/scsi_host/host$h/scan"; done
    for l in $(seq 0 $((N_C - 1))); do
        wait_until 60 _scsi_block "$h:0:0:$l" || fail "floor: no block device for LUN $l"
        wait_for "/dev/$SCSI_BLOCK" 30 || fail "floor: no /dev/$SCSI_BLOCK"
        sds+=("$SCSI_BLOCK")
    done
    since "$t0"; FLOOR_S=$SINCE
    for l in $(seq 0 $((N_C - 1))); do
        wait_for "/dev/disk/by-path/ip-$P1-iscsi-$IQN_C-lun-$l" 60 || fail "floor: no by-path link for LUN $l"
    done
    since "$t0"; FLOOR_LINK_S=$SINCE
    FLOOR_SDS="${sds[*]}"
}
floor_many_detach() { floor_iscsi_detach $IQN_C $FLOOR_SDS; }

# floor_nvme: `nvme connect` -> the namespace's block device node (FLOOR_S) -> udev done with
# it: its by-id link (FLOOR_LINK_S)
floor_nvme() {
    local t0 out
    t0=${EPOCHREALTIME/./}
    out=$(nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -q "$HOSTNQN" -I "$HOSTID" 2>&1) \
        || fail "floor: nvme connect failed: $out"
    wait_until 30 has_nvme_disk $NVME_UUID || fail "floor: no namespace with uuid $NVME_UUID"
    since "$t0"; FLOOR_S=$SINCE
    wait_for "/dev/disk/by-id/nvme-uuid.$NVME_UUID" 30 || fail "floor: no by-id link"
    since "$t0"; FLOOR_LINK_S=$SINCE
    FLOOR_DEV=/dev/$NVME_DISK
}
floor_nvme_detach() {
    local t0
    udevadm settle --timeout=10
    t0=${EPOCHREALTIME/./}
    nvme disconnect -n $NQN >/dev/null 2>&1 || fail "floor: nvme disconnect failed"
    wait_gone "$FLOOR_DEV" 30 || fail "floor: $FLOOR_DEV still there"
    wait_until 10 no_nvme_ctrls_for $NQN || fail "floor: controller of $NQN still there"
    since "$t0"; FLOOR_DETACH_S=$SINCE
}

# ------------------------------------------------------------------ one operation, one side -----

# run_single OP KIND CONN MP SIDE ROUND: connect, check, disconnect, check; times under OP.
run_single() {
    local op=$1 kind=$2 conn=$3 mp=$4 side=$5 r=$6 name dev real flags=()
    name=$op-$side-$r
    [ "$mp" = true ] && flags=(--multipath)
    case $side in
        osbrick|library)
            pipe_call "$side" "$name" "$op connect" "$(connect_req "$conn" "$mp")"
            add_time "$op" "$side" connect "$CALL_SECS"
            ans_result "$name" > "$WORK/$name.json" ;;
        example)
            example "$name" "$op connect" connect "${flags[@]}" "$conn"
            add_time "$op" "$side" connect "$CALL_SECS"
            cp "$WORK/$name.out" "$WORK/$name.json" ;;
        floor)
            "floor_$op"
            if [ "$op" = nvme ]; then   # NVMe: the device node; udev's link beside it
                add_time "$op" floor connect "$FLOOR_S"
                add_time "$op" floor link "$FLOOR_LINK_S"
            else                        # iSCSI: the by-path link (mpath: the map); the node beside it
                add_time "$op" floor connect "$FLOOR_LINK_S"
                add_time "$op" floor node "$FLOOR_S"
            fi
            echo "{\"path\": \"$FLOOR_DEV\"}" > "$WORK/$name.json" ;;
    esac
    dev=$(jq -r '.path // empty' "$WORK/$name.json"); real=$(readlink -f "$dev")
    check_volume "$kind" "$dev" "$name"
    case $side in
        osbrick|library)
            pipe_call "$side" "$name-d" "$op disconnect" "$(disconnect_req "$conn" "$mp" "$(cat "$WORK/$name.json")")" ;;
        example) example "$name-d" "$op disconnect" disconnect "${flags[@]}" "$conn" "$WORK/$name.json" ;;
        floor) "floor_${op}_detach"; CALL_SECS=$FLOOR_DETACH_S ;;
    esac
    add_time "$op" "$side" disconnect "$CALL_SECS"
    check_clean "$kind" "$dev" "$real"
}

# run_many SIDE ROUND: the 5 LUNs at once, then their detaches at once.
run_many() {
    local side=$1 r=$2 name=many-$1-$2 i t0 reqs pids=() rc devs=() reals=() dev
    case $side in
        osbrick|library)
            reqs=$(for i in $(seq 0 $((N_C - 1))); do connect_req "$WORK/conn-c$i.json" false; done | jq -c -s '{op: "connect_many", requests: .}')
            pipe_call "$side" "$name" "many connect" "$reqs"
            add_time many "$side" connect "$CALL_SECS"
            for i in $(seq 0 $((N_C - 1))); do jq -c ".result[$i].result" "$WORK/$name.ans" > "$WORK/$name-$i.json"; done ;;
        example)
            t0=${EPOCHREALTIME/./}
            for i in $(seq 0 $((N_C - 1))); do
                "$ATTACH" connect "$WORK/conn-c$i.json" > "$WORK/$name-$i.out" 2> "$WORK/$name-$i.err" &
                pids+=($!)
            done
            rc=(); for i in "${!pids[@]}"; do wait "${pids[i]}"; rc[i]=$?; done
            since "$t0"; CALL_SECS=$SINCE
            add_time many example connect "$CALL_SECS"
            for i in $(seq 0 $((N_C - 1))); do
                example_logged "$name-$i" "many connect" "${rc[i]}" "connect $WORK/conn-c$i.json (one of $N_C at once)"
                cp "$WORK/$name-$i.out" "$WORK/$name-$i.json"
            done ;;
        floor)
            floor_many
            add_time many floor connect "$FLOOR_LINK_S"
            add_time many floor node "$FLOOR_S"
            for i in $(seq 0 $((N_C - 1))); do echo "{\"path\": \"/dev/disk/by-path/ip-$P1-iscsi-$IQN_C-lun-$i\"}" > "$WORK/$name-$i.json"; done ;;
    esac
    for i in $(seq 0 $((N_C - 1))); do
        dev=$(jq -r '.path // empty' "$WORK/$name-$i.json")
        devs+=("$dev"); reals+=("$(readlink -f "$dev")")
        check_volume "c$i" "$dev" "$name-$i"
    done
    case $side in
        osbrick|library)
            reqs=$(for i in $(seq 0 $((N_C - 1))); do disconnect_req "$WORK/conn-c$i.json" false "$(cat "$WORK/$name-$i.json")"; done | jq -c -s '{op: "disconnect_many", requests: .}')
            pipe_call "$side" "$name-d" "many disconnect" "$reqs" ;;
        example)
            t0=${EPOCHREALTIME/./} pids=()
            for i in $(seq 0 $((N_C - 1))); do
                "$ATTACH" disconnect "$WORK/conn-c$i.json" "$WORK/$name-$i.json" > "$WORK/$name-$i-d.out" 2> "$WORK/$name-$i-d.err" &
                pids+=($!)
            done
            rc=(); for i in "${!pids[@]}"; do wait "${pids[i]}"; rc[i]=$?; done
            since "$t0"; CALL_SECS=$SINCE
            for i in $(seq 0 $((N_C - 1))); do
                example_logged "$name-$i-d" "many disconnect" "${rc[i]}" "disconnect $WORK/conn-c$i.json (one of $N_C at once)"
            done ;;
        floor) floor_many_detach; CALL_SECS=$FLOOR_DETACH_S ;;
    esac
    add_time many "$side" disconnect "$CALL_SECS"
    check_clean many "${devs[@]}" "${reals[@]}"
}

# properties SIDE ROUND (os-brick, library, example; the floor has none)
run_properties() {
    local side=$1 r=$2 name=props-$1-$2
    case $side in
        osbrick|library)
            pipe_call "$side" "$name" properties '{"op":"properties","ip":"127.0.0.1","multipath":true,"enforce_multipath":false}'
            ans_result "$name" > "$WORK/$name.json" ;;
        example)
            example "$name" properties properties --ip 127.0.0.1 --multipath
            cp "$WORK/$name.out" "$WORK/$name.json" ;;
        floor) return 0 ;;
    esac
    add_time properties "$side" connect "$CALL_SECS"
    [ "$(jq -r .initiator "$WORK/$name.json")" = "$INITIATOR_IQN" ] \
        || fail "$side properties: initiator $(jq -r .initiator "$WORK/$name.json"), expected $INITIATOR_IQN"
    [ "$(jq -r .multipath "$WORK/$name.json")" = true ] || fail "$side properties: multipath is not true"
}

# ------------------------------------------------------------------ the rounds -----

lib_start
osbrick_wait
note "os-brick driver up ${OSBRICK_STARTUP_S}s after its launch"
log "os-brick $OSBRICK_VERSION; hostbrick $("$ATTACH" batch < /dev/null | jq -r .version); $RUNS rounds"

for r in $(seq 1 "$RUNS"); do
    # this round's order: the sides rotated by one each round
    order=()
    for k in 0 1 2 3; do order+=("${SIDES[((k + r - 1) % 4)]}"); done
    log "==== round $r/$RUNS: ${order[*]}"
    # the example's own cost: start to exit, no external command
    t0=${EPOCHREALTIME/./}
    "$ATTACH" --help > /dev/null || fail "attach --help failed"
    since "$t0"; add_time help example connect "$SINCE"
    for s in "${order[@]}"; do run_properties "$s" "$r"; done
    for s in "${order[@]}"; do run_single single single "$WORK/conn-single.json" false "$s" "$r"; done
    for s in "${order[@]}"; do run_single mpath mpath "$WORK/conn-mpath.json" true "$s" "$r"; done
    for s in "${order[@]}"; do run_many "$s" "$r"; done
    for s in "${order[@]}"; do run_single nvme nvme "$WORK/conn-nvme.json" false "$s" "$r"; done
    since "$T_SCENARIO"; log "==== round $r done at ${SINCE}s"
done
# the library's and os-brick's properties equal the example's (same host, same options)
jq -e -n --slurpfile a "$WORK/props-example-1.json" --slurpfile b "$WORK/props-library-1.json" '$a[0] == $b[0]' >/dev/null \
    || fail "attach batch properties differ from attach properties: $(jq -c . "$WORK/props-library-1.json") vs $(jq -c . "$WORK/props-example-1.json")"
lib_stop
osbrick_stop
save_logs

# ------------------------------------------------------------------ report -----

ms() { [ "$1" = - ] && echo "–" || awk -v s="$1" 'BEGIN {printf "%d ms", s * 1000 + 0.5}'; }
rt() { local x; x=$(ratio "$1" "$2"); [ "$x" = - ] || [ "$1" = - ] && echo "–" || echo "$x"; }
TABLE=$RESULTS/$SCENARIO.table.md
{
    echo "os-brick $OSBRICK_VERSION vs hostbrick, one guest boot, cold host before every call, medians of $RUNS rounds (sides in rotating order)"
    echo
    echo "| operation | raw floor | os-brick | hostbrick library | hostbrick example | os-brick / library | os-brick / example | library / floor | example / floor |"
    echo "|---|---|---|---|---|---|---|---|---|"
} > "$TABLE"
row() {   # row LABEL OP WHAT FLOOR_NOTE
    local label=$1 op=$2 what=$3 f o l e fcell
    f=$(med "$op" floor "$what") o=$(med "$op" osbrick "$what") l=$(med "$op" library "$what") e=$(med "$op" example "$what")
    fcell=$(ms "$f")
    [ "$f" != - ] && [ -n "${4:-}" ] && fcell="$fcell ($4)"
    echo "| $label | $fcell | $(ms "$o") | $(ms "$l") | $(ms "$e") | $(rt "$o" "$l") | $(rt "$o" "$e") | $(rt "$l" "$f") | $(rt "$e" "$f") |" >> "$TABLE"
}
node_note() { echo "to the by-path link; device node $(ms "$(med "$1" floor node)")"; }
bench() {   # bench LABEL OP: the bench lines of one operation (connect and disconnect)
    local s c d f note
    f=$(med "$2" floor connect)
    for s in osbrick library example; do
        c=$(med "$2" "$s" connect) d=$(med "$2" "$s" disconnect)
        [ "$c" = - ] && continue
        note="floor detach $(med "$2" floor disconnect)s; runs: connect${TIMES["$2|$s|connect"]}; disconnect${TIMES["$2|$s|disconnect"]:- -}"
        bench_line side-by-side "$1: $s" "$RUNS" "$c" "$d" "$f" "$note"
    done
}
row "connector properties" properties connect
row "example start-up (\`attach --help\`)" help connect
row "iSCSI single-path connect" single connect "$(node_note single)"
row "iSCSI single-path disconnect" single disconnect
row "two-portal multipath connect" mpath connect "two logins → 2-path map"
row "multipath disconnect" mpath disconnect
row "$N_C concurrent iSCSI connects" many connect "$(node_note many)"
row "$N_C concurrent iSCSI disconnects" many disconnect
row "NVMe/TCP connect" nvme connect "\`nvme connect\` → device node; udev by-id link $(ms "$(med nvme floor link)")"
row "NVMe/TCP disconnect" nvme disconnect
cat "$TABLE"

bench "properties" properties
bench "example start-up" help
bench "iSCSI single path" single
bench "iSCSI multipath" mpath
bench "iSCSI $N_C at once" many
bench "NVMe/TCP" nvme

# hostbrick's phases (elapsed_ms as logged), medians per operation and side
if [ -s "$WORK/phases.tsv" ]; then
    {
        echo
        echo "hostbrick phases (RUST_LOG=hostbrick=info: elapsed_ms of each phase event, medians over every call of $RUNS rounds)"
        echo
        echo "| operation | side | phase | calls | median ms |"
        echo "|---|---|---|---|---|"
        sort -t$'\t' -k1,1 -k2,2 -k3,3 -k4,4n "$WORK/phases.tsv" | awk -F'\t' '
            function flush() { if (n) printf "| %s | %s | %s | %d | %s |\n", k1, k2, k3, n, (n % 2 ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2) }
            { key = $1 FS $2 FS $3; if (key != last) { flush(); n = 0; last = key; k1 = $1; k2 = $2; k3 = $3 } v[++n] = $4 }
            END { flush() }'
    } >> "$TABLE"
    sed -n '/^hostbrick phases/,$p' "$TABLE"
fi
CONNECT_S=$(med single example connect) DISCONNECT_S=$(med single example disconnect) FLOOR_S=$(med single floor connect)
since "$T_SCENARIO"; note "scenario ${SINCE}s; table: results/$SCENARIO.table.md"
scenario_pass "os-brick $OSBRICK_VERSION and hostbrick side by side, $RUNS rounds: every device checked, nothing left"
