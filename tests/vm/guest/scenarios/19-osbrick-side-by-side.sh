#!/bin/bash
# vm-needs: osbrick
# vm-timeout: 1200
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

# Volume ids: the phase lines of hostbrick's log name them (operation{... volume="..."}).
declare -A KIND_OF_VOLUME
vol_id() { VOL=$(new_uuid); KIND_OF_VOLUME[$VOL]=$1; }
vol_id single; conn_iscsi "$WORK/conn-single.json" $P1 $IQN_S 0 "$VOL"
vol_id mpath; conn_iscsi "$WORK/conn-mpath.json" $P1 $IQN_M 0 "$VOL" \
    ".target_portals=[\"$P1\",\"$P2\"] | .target_iqns=[\"$IQN_M\",\"$IQN_M\"] | .target_luns=[0,0]"
for i in $(seq 0 $((N_C - 1))); do vol_id many; conn_iscsi "$WORK/conn-c$i.json" $P1 $IQN_C "$i" "$VOL"; done
vol_id nvme; conn_nvme "$WORK/conn-nvme.json" $NQN 127.0.0.1 4420 $NVME_UUID 1 "${NVME_UUID//-/}" "$VOL"
HOSTNQN=$(hostnqn) HOSTID=$(hostid)

# Requests, the same for os-brick and the library (os-brick's connector keys), made once:
# CONNECT_REQ[VOLUME], and DISCONNECT_PRE[VOLUME] to which the device_info and "}" are added.
declare -A CONNECT_REQ DISCONNECT_PRE
make_requests() {   # make_requests VOLUME CONN_JSON_FILE MULTIPATH
    local vol
    vol=$(jq -c --argjson mp "$3" '{protocol: (if .driver_volume_type == "nvmeof" then "NVME" else "ISCSI" end),
        use_multipath: $mp, connection_properties: .data}' "$2") || fail "jq on $2 failed"
    CONNECT_REQ[$1]=$(jq -c '{op: "connect"} + .' <<<"$vol")
    DISCONNECT_PRE[$1]=$(jq -c '{op: "disconnect"} + . + {force: false, ignore_errors: false, device_info: 0}' <<<"$vol")
    DISCONNECT_PRE[$1]=${DISCONNECT_PRE[$1]%0\}}
}
make_requests single "$WORK/conn-single.json" false
make_requests mpath "$WORK/conn-mpath.json" true
for i in $(seq 0 $((N_C - 1))); do make_requests c$i "$WORK/conn-c$i.json" false; done
make_requests nvme "$WORK/conn-nvme.json" false
MANY_REQ='{"op":"connect_many","requests":['
for i in $(seq 0 $((N_C - 1))); do MANY_REQ+="${CONNECT_REQ[c$i]},"; done
MANY_REQ="${MANY_REQ%,}]}"

# ------------------------------------------------------------------ timing -----
# Under emulation every process costs tens of milliseconds (hundreds on a loaded host): the
# code between the timed calls forks as little as it can (one jq per answer, checks through
# sysfs), and nothing forks inside a clock.

# since START_US: SINCE = the seconds since then (builtins only)
since() {
    local d=$((${EPOCHREALTIME/./} - $1))
    printf -v SINCE '%d.%03d' $((d / 1000000)) $(((d / 1000) % 1000))
}
# log without a process (lib.sh's reads the uptime with cut)
log() { local u _; read -r u _ < /proc/uptime; echo "[$u] ${SCENARIO:-suite}: $*"; }

# TIMES["op|side|what"]: the runs' seconds, space-separated
declare -A TIMES SHORT_MAPS
add_time() { TIMES["$1|$2|$3"]+=" $4"; }
med() { local v=${TIMES["$1|$2|$3"]:-}; [ -n "$v" ] && median $v || echo -; }

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

# pipe_call osbrick|library NAME REQUEST_JSON(one line): one request; CALL_SECS (wall time
# around it), ANSWER (the line), and from one jq: CALL_RESULTS (each call's result, compact:
# one for a call, every item's for a _many) and CALL_PATHS (their .path). Fails on a failed call.
pipe_call() {
    local side=$1 name=$2 req=$3 in out t0 lines i
    if [ "$side" = osbrick ]; then in=$OSBRICK_IN out=$OSBRICK_OUT; else in=$LIB_IN out=$LIB_OUT; fi
    t0=${EPOCHREALTIME/./}
    printf '%s\n' "$req" >&"$in" || fail "$side driver gone (writing $name)"
    IFS= read -r -t 600 ANSWER <&"$out" || fail "$side driver: no answer to $name within 600s"
    since "$t0"; CALL_SECS=$SINCE
    printf '=== %s %s %s -> in %ss\n--- request\n%s\n--- answer\n%s\n' "$EPOCHREALTIME" "$side" "$name" "$CALL_SECS" "$req" "$ANSWER" >> "$RESULTS/$SCENARIO.attach.log"
    mapfile -t lines < <(jq -r 'def one: (.result | tojson), (.result.path? // "");
        (.ok | tostring),
        (if .ok then (if (.result | type) == "array" then .result[] | one else one end)
         else (.error | if type == "object" then "\(.kind): \(.message)" else tostring end),
              ([.result[]? | select(.ok != true) | .error.message] | join("; ")) end)' <<<"$ANSWER")
    [ "${lines[0]:-}" = true ] || fail "$side $name failed: ${lines[1]:-no answer} ${lines[2]:-}"
    CALL_RESULTS=() CALL_PATHS=()
    for ((i = 1; i < ${#lines[@]}; i += 2)); do CALL_RESULTS+=("${lines[i]}"); CALL_PATHS+=("${lines[i + 1]}"); done
}

# example NAME ARGS...: one `attach` process (no wrapper), stdout $WORK/NAME.out, stderr
# $WORK/NAME.err; CALL_SECS from its start to its exit; fails unless it succeeded.
example() {
    local name=$1 t0 rc; shift
    t0=${EPOCHREALTIME/./}
    "$ATTACH" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
    rc=$?
    since "$t0"; CALL_SECS=$SINCE
    example_logged "$name" "$rc" "$*"
}
# example_logged NAME RC ARGS: into the attach log; the record's path in RECORD_PATH (the
# record is one line: "type" first, then "path")
example_logged() {
    local rec=""
    printf '=== %s attach %s -> rc=%s in %ss (%s)\n' "$EPOCHREALTIME" "$3" "$2" "$CALL_SECS" "$1" >> "$RESULTS/$SCENARIO.attach.log"
    cat "$WORK/$1.out" "$WORK/$1.err" >> "$RESULTS/$SCENARIO.attach.log"
    [ "$2" = 0 ] || fail "attach $3 failed (rc=$2): $(grep -m1 '^error\[' "$WORK/$1.err" || tail -n1 "$WORK/$1.err")"
    IFS= read -r rec < "$WORK/$1.out"
    RECORD_PATH=""
    [[ $rec =~ \"path\":\"([^\"]*)\" ]] && RECORD_PATH=${BASH_REMATCH[1]}
    return 0
}

# ------------------------------------------------------------------ checks -----
# Through sysfs and shell builtins; a mismatch is confirmed with lib.sh's own check (which
# fails with its message).

# check_volume KIND DEV TAG: the device is the volume (size, WWID / map of 2 paths / namespace
# uuid) and a pattern written through DEV reads back.
check_volume() {
    local kind=$1 dev=$2 tag=$3 real name sectors w n=0 s want size
    [ -n "$dev" ] && [ -b "$dev" ] || fail "$kind: '$dev' is not a block device"
    real=$(readlink -f "$dev"); name=${real##*/}
    read -r sectors < "/sys/block/$name/size" || fail "$dev: no /sys/block/$name"
    case $kind in
        single) want=$WWID_S ;; mpath) want=$WWID_M ;; c[0-9]*) want=${WWID_C[${kind#c}]} ;; nvme) want=$NVME_UUID ;;
    esac
    case $kind in
        mpath)
            read -r w < "/sys/block/$name/dm/uuid" 2>/dev/null
            for s in "/sys/block/$name/slaves/"*; do [ -e "$s" ] && n=$((n + 1)); done
            [ "$w" = "mpath-$want" ] && [ $((sectors * 512)) = $SIZE ] \
                || { check_block_device "$dev" $SIZE "$want"; fail "$dev ($name): dm uuid '$w', expected mpath-$want"; }
            # hostbrick hands out a usable map while the last paths may still join (within
            # iscsi.extra_path_grace): counted, and the second path must come
            if [ "$n" != 2 ]; then
                SHORT_MAPS[$CUR_SIDE]=$((${SHORT_MAPS[$CUR_SIDE]:-0} + 1))
                log "$CUR_SIDE: the map $name had $n path(s) when the connect returned"
                MAP_PATHS_WANTED=2 wait_until 15 _map_paths "$want" || fail "$dev ($name): the map did not get its 2 paths within 15 s of the connect"
            fi ;;
        nvme)
            read -r w < "/sys/block/$name/uuid" 2>/dev/null
            [ "$w" = "$want" ] && [ $((sectors * 512)) = $SIZE ] || check_nvme_device "$dev" $SIZE "$want" ;;
        *)
            size=$SIZE; [ "$kind" = single ] || size=$SIZE_C
            read -r w < "/sys/block/$name/device/wwid" 2>/dev/null; w=3${w#naa.}
            [ "$w" = "$want" ] && [ $((sectors * 512)) = "$size" ] || check_block_device "$dev" "$size" "$want" ;;
    esac
    io_check "$dev" "$tag"
}
# io_check DEV TAG: 64 KiB made from TAG written at 1 MiB (O_DIRECT) and read back
io_check() {
    local i b p="" got
    for ((i = 1; i <= 16; i++)); do printf -v b '%-4096s' "hostbrick $2 block $i"; p+=$b; done
    printf '%s' "$p" > "$WORK/pattern"
    dd if="$WORK/pattern" of="$1" bs=4096 seek=256 count=16 oflag=direct conv=notrunc,fsync status=none || fail "write to $1 failed"
    dd if="$1" of="$WORK/readback" bs=4096 skip=256 count=16 iflag=direct status=none || fail "read from $1 failed"
    IFS= read -r -d '' -N 65536 got < "$WORK/readback"
    [ "$got" = "$p" ] || fail "data written to $1 ($2) did not read back"
}

# _clean KIND: nothing of KIND's volume(s) on the host (builtins only); LEFT says what is
_clean() {
    local d u w
    LEFT=""
    case $1 in
        nvme)
            for d in /sys/class/nvme/* /sys/class/nvme-subsystem/* /dev/nvme*n*; do [ -e "$d" ] && LEFT+=" $d"; done ;;
        *)
            for d in /sys/class/iscsi_session/* /sys/class/scsi_disk/* "/etc/iscsi/nodes/$2" "/var/lib/iscsi/nodes/$2"; do
                [ -e "$d" ] && LEFT+=" $d"
            done
            for d in /sys/block/dm-*; do
                [ -e "$d/dm/uuid" ] || continue
                read -r u < "$d/dm/uuid"
                for w in "${@:3}"; do [ "$u" = "mpath-$w" ] && LEFT+=" map $w (${d##*/})"; done
            done ;;
    esac
    for d in "$HOSTBRICK_REGISTRY"/*/*.json; do [ -e "$d" ] && LEFT+=" registry:${d#"$HOSTBRICK_REGISTRY"/}"; done
    [ -z "$LEFT" ]
}
# check_clean KIND DEVICE...: the devices are gone; no session, node record, SCSI disk,
# multipath map, NVMe controller or registry entry is left (after udev has settled).
check_clean() {
    local kind=$1 d iqn wwids=(); shift
    udevadm settle --timeout=10
    for d in "$@"; do [ -n "$d" ] && { wait_gone "$d" 5 || fail "$kind: $d still present after the disconnect"; }; done
    case $kind in
        single) iqn=$IQN_S wwids=("$WWID_S") ;;
        mpath) iqn=$IQN_M wwids=("$WWID_M") ;;
        many) iqn=$IQN_C wwids=("${WWID_C[@]}") ;;
    esac
    wait_until 5 _clean "$kind" "${iqn:-}" "${wwids[@]}" || fail "$kind: left after the disconnect:$LEFT"
}
# check_round_clean: lib.sh's own leftover checks, once a round
check_round_clean() {
    check_no_iscsi_leftovers $IQN_S $IQN_M $IQN_C
    check_no_scsi_disks
    check_no_dm_map "$WWID_S"; check_no_dm_map "$WWID_M"
    check_no_nvme_leftovers
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
# floor_settle_maps WWID...: before timing a raw detach, let multipathd build the maps it builds
# for every SCSI disk (find_multipaths no), as it has for the other sides by then.
floor_settle_maps() {
    local w
    udevadm settle --timeout=10
    FLOOR_MAPS=()
    for w in "$@"; do wait_for "/dev/mapper/$w" 5 && FLOOR_MAPS+=("$w"); done
}
# floor_iscsi_detach IQN SD...: timed: flush the maps (at once), log out, delete the node
# records, until the disks are gone -> FLOOR_DETACH_S
floor_iscsi_detach() {
    local iqn=$1 t0 w sd pids=(); shift
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
floor_single_detach() { floor_settle_maps "$WWID_S"; floor_iscsi_detach $IQN_S $FLOOR_SDS; }

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
floor_many_detach() { floor_settle_maps "${WWID_C[@]}"; floor_iscsi_detach $IQN_C $FLOOR_SDS; }

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

# run_single OP CONN MP SIDE ROUND: connect, check, disconnect, check; times under OP (which
# is also the volume's kind: single, mpath, nvme).
run_single() {
    local op=$1 conn=$2 mp=$3 side=$4 r=$5 name dev real rec flags=()
    CUR_SIDE=$side
    name=$op-$side-$r
    [ "$mp" = true ] && flags=(--multipath)
    case $side in
        osbrick|library)
            pipe_call "$side" "$name" "${CONNECT_REQ[$op]}"
            rec=${CALL_RESULTS[0]} dev=${CALL_PATHS[0]} ;;
        example)
            example "$name" connect "${flags[@]}" "$conn"
            rec=$WORK/$name.out dev=$RECORD_PATH ;;
        floor)
            "floor_$op"
            CALL_SECS=$FLOOR_LINK_S
            if [ "$op" = nvme ]; then   # NVMe: the device node; udev's link beside it
                CALL_SECS=$FLOOR_S
                add_time "$op" floor link "$FLOOR_LINK_S"
            else                        # iSCSI: the by-path link (mpath: the map); the node beside it
                add_time "$op" floor node "$FLOOR_S"
            fi
            dev=$FLOOR_DEV ;;
    esac
    add_time "$op" "$side" connect "$CALL_SECS"
    real=$(readlink -f "$dev")
    check_volume "$op" "$dev" "$name"
    case $side in
        osbrick|library) pipe_call "$side" "$name-d" "${DISCONNECT_PRE[$op]}$rec}" ;;
        example) example "$name-d" disconnect "${flags[@]}" "$conn" "$rec" ;;
        floor) "floor_${op}_detach"; CALL_SECS=$FLOOR_DETACH_S ;;
    esac
    add_time "$op" "$side" disconnect "$CALL_SECS"
    check_clean "$op" "$dev" "$real"
}

# run_many SIDE ROUND: the 5 LUNs at once, then their detaches at once.
run_many() {
    local side=$1 r=$2 name=many-$1-$2 i t0 req pids=() rc=() devs=() reals=() recs=()
    case $side in
        osbrick|library)
            pipe_call "$side" "$name" "$MANY_REQ"
            [ ${#CALL_RESULTS[@]} = "$N_C" ] || fail "$side $name: ${#CALL_RESULTS[@]} answers, expected $N_C"
            recs=("${CALL_RESULTS[@]}") devs=("${CALL_PATHS[@]}") ;;
        example)
            t0=${EPOCHREALTIME/./}
            for i in $(seq 0 $((N_C - 1))); do
                "$ATTACH" connect "$WORK/conn-c$i.json" > "$WORK/$name-$i.out" 2> "$WORK/$name-$i.err" &
                pids+=($!)
            done
            for i in "${!pids[@]}"; do wait "${pids[i]}"; rc[i]=$?; done
            since "$t0"; CALL_SECS=$SINCE
            for i in $(seq 0 $((N_C - 1))); do
                example_logged "$name-$i" "${rc[i]}" "connect $WORK/conn-c$i.json (one of $N_C at once)"
                recs+=("$WORK/$name-$i.out") devs+=("$RECORD_PATH")
            done ;;
        floor)
            floor_many
            CALL_SECS=$FLOOR_LINK_S
            add_time many floor node "$FLOOR_S"
            for i in $(seq 0 $((N_C - 1))); do devs+=("/dev/disk/by-path/ip-$P1-iscsi-$IQN_C-lun-$i"); done ;;
    esac
    add_time many "$side" connect "$CALL_SECS"
    for i in $(seq 0 $((N_C - 1))); do
        reals+=("$(readlink -f "${devs[i]}")")
        check_volume "c$i" "${devs[i]}" "$name-$i"
    done
    case $side in
        osbrick|library)
            req='{"op":"disconnect_many","requests":['
            for i in $(seq 0 $((N_C - 1))); do req+="${DISCONNECT_PRE[c$i]}${recs[i]}},"; done
            pipe_call "$side" "$name-d" "${req%,}]}" ;;
        example)
            t0=${EPOCHREALTIME/./} pids=()
            for i in $(seq 0 $((N_C - 1))); do
                "$ATTACH" disconnect "$WORK/conn-c$i.json" "${recs[i]}" > "$WORK/$name-$i-d.out" 2> "$WORK/$name-$i-d.err" &
                pids+=($!)
            done
            for i in "${!pids[@]}"; do wait "${pids[i]}"; rc[i]=$?; done
            since "$t0"; CALL_SECS=$SINCE
            for i in $(seq 0 $((N_C - 1))); do
                example_logged "$name-$i-d" "${rc[i]}" "disconnect $WORK/conn-c$i.json (one of $N_C at once)"
            done ;;
        floor) floor_many_detach; CALL_SECS=$FLOOR_DETACH_S ;;
    esac
    add_time many "$side" disconnect "$CALL_SECS"
    check_clean many "${devs[@]}" "${reals[@]}"
}

# run_properties SIDE ROUND (os-brick, library, example; the floor has none): the results are
# checked at the end (initiator, multipath)
run_properties() {
    local side=$1 r=$2 name=props-$1-$2
    case $side in
        osbrick|library)
            pipe_call "$side" "$name" '{"op":"properties","ip":"127.0.0.1","multipath":true,"enforce_multipath":false}'
            printf '%s\n' "${CALL_RESULTS[0]}" > "$WORK/$name.json" ;;
        example)
            example "$name" properties --ip 127.0.0.1 --multipath
            cp "$WORK/$name.out" "$WORK/$name.json" ;;
        floor) return 0 ;;
    esac
    add_time properties "$side" connect "$CALL_SECS"
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
    for s in "${order[@]}"; do run_single single "$WORK/conn-single.json" false "$s" "$r"; done
    for s in "${order[@]}"; do run_single mpath "$WORK/conn-mpath.json" true "$s" "$r"; done
    for s in "${order[@]}"; do run_many "$s" "$r"; done
    for s in "${order[@]}"; do run_single nvme "$WORK/conn-nvme.json" false "$s" "$r"; done
    check_round_clean
    since "$T_SCENARIO"; log "==== round $r done at ${SINCE}s"
done
lib_stop
osbrick_stop
save_logs
# Properties: every side names this host's initiator and multipath; the library's equal the
# example's (the same code, the same host and options).
jq -e -s --arg iqn "$INITIATOR_IQN" 'length > 0 and all(.[]; .initiator == $iqn and .multipath == true)' "$WORK"/props-*.json >/dev/null \
    || fail "connector properties without this host's initiator $INITIATOR_IQN or multipath: $(cat "$WORK"/props-*.json | tr '\n' ' ' | cut -c1-600)"
for r in $(seq 1 "$RUNS"); do
    jq -e -n --slurpfile a "$WORK/props-example-$r.json" --slurpfile b "$WORK/props-library-$r.json" '$a[0] == $b[0]' >/dev/null \
        || fail "attach batch properties differ from attach properties (round $r): $(cat "$WORK/props-library-$r.json") vs $(cat "$WORK/props-example-$r.json")"
done
grep -m1 'udev record not understood' "$RESULTS/$SCENARIO.attach.log" "$WORK/library.err" \
    && fail "hostbrick could not parse a real udev record (see the attach log)"

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
        note=""
        [ "$(med "$2" floor disconnect)" = - ] || note="floor detach $(med "$2" floor disconnect)s; "
        note+="runs: connect${TIMES["$2|$s|connect"]}; disconnect${TIMES["$2|$s|disconnect"]:- -}"
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
for s in "${!SHORT_MAPS[@]}"; do
    echo "- $s: ${SHORT_MAPS[$s]} of $RUNS multipath connects returned the map with 1 of its 2 paths (the second joined later)" >> "$TABLE"
    note "$s: ${SHORT_MAPS[$s]} of $RUNS multipath connects returned a 1-path map"
done
cat "$TABLE"

bench "properties" properties
bench "example start-up" help
bench "iSCSI single path" single
bench "iSCSI multipath" mpath
bench "iSCSI $N_C at once" many
bench "NVMe/TCP" nvme

# hostbrick's phases: the phase events of its log (RUST_LOG=hostbrick=info), each call's
# operation and volume from its span; medians per operation, side and phase.
for v in "${!KIND_OF_VOLUME[@]}"; do printf '%s\t%s\n' "$v" "${KIND_OF_VOLUME[$v]}"; done > "$WORK/volumes.tsv"
phases() {   # phases SIDE FILE
    awk -v side="$1" 'NR == FNR { kind[$1] = $2; next }
        /phase="[a-z_]*" elapsed_ms=[0-9]+/ {
            if (!match($0, /op="[a-z_]*"/)) next; op = substr($0, RSTART + 4, RLENGTH - 5); sub(/_volume$/, "", op)
            if (!match($0, /volume="[^"]*"/)) next; v = substr($0, RSTART + 8, RLENGTH - 9)
            match($0, /phase="[a-z_]*"/); ph = substr($0, RSTART + 7, RLENGTH - 8)
            match($0, /elapsed_ms=[0-9]+/); ms = substr($0, RSTART + 11, RLENGTH - 11)
            if (v in kind) printf "%s %s\t%s\t%s\t%s\n", kind[v], op, side, ph, ms }' "$WORK/volumes.tsv" "$2"
}
{ phases example "$RESULTS/$SCENARIO.attach.log"; phases library "$WORK/library.err"; } > "$WORK/phases.tsv"
if [ -s "$WORK/phases.tsv" ]; then
    {
        echo
        echo "hostbrick phases (RUST_LOG=hostbrick=info: elapsed_ms of each phase event, medians over every call of $RUNS rounds)"
        echo
        echo "| operation | side | phase | events | median ms |"
        echo "|---|---|---|---|---|"
        sort -t$'\t' -k1,1 -k2,2 -k3,3 -k4,4n "$WORK/phases.tsv" | awk -F'\t' '
            function flush() { if (n) printf "| %s | %s | %s | %d | %s |\n", k1, k2, k3, n, (n % 2 ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2) }
            { key = $1 FS $2 FS $3; if (key != last) { flush(); n = 0; last = key; k1 = $1; k2 = $2; k3 = $3 } v[++n] = $4 }
            END { flush() }'
    } >> "$TABLE"
    sed -n '/^hostbrick phases/,$p' "$TABLE"
else
    note "no phase lines in hostbrick's logs"
fi
CONNECT_S=$(med single example connect) DISCONNECT_S=$(med single example disconnect) FLOOR_S=$(med single floor connect)
since "$T_SCENARIO"; note "scenario ${SINCE}s; table: results/$SCENARIO.table.md"
scenario_pass "os-brick $OSBRICK_VERSION and hostbrick side by side, $RUNS rounds: every device checked, nothing left"
