# Scenario library of the hostbrick VM suite: results, timing, the attach example, raw-tool
# kernel floor, device and leftover assertions. Sourced by every scenario (after targets.sh).
# shellcheck shell=bash

GUEST_DIR=${GUEST_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
. "$GUEST_DIR/targets.sh"
SHARE=${SHARE:-/mnt/host}
RESULTS=${RESULTS:-$SHARE/results}
ATTACH=${ATTACH:-$SHARE/bin/attach}
WORK=${WORK:-/tmp/hostbrick-scenario}
WAIT_SECS=${WAIT_SECS:-30}

up() { cut -d' ' -f1 /proc/uptime; }
log() { echo "[$(up)] ${SCENARIO:-suite}: $*"; }
now_ns() { date +%s%N; }
# secs_since START_NS -> seconds with millisecond precision
secs_since() { local d=$(( $(now_ns) - $1 )); printf '%d.%03d' $((d / 1000000000)) $(( (d / 1000000) % 1000 )); }
kmsg() { echo "hostbrick-vm: $*" > /dev/kmsg 2>/dev/null; }

# ------------------------------------------------------------------ results -----
# Each scenario writes $RESULTS/<name>.res (key=value); suite.sh turns it into one line of
# results.tsv. A scenario ends with scenario_pass, or with fail (which exits).

scenario_begin() {
    SCENARIO=$1
    RES=$RESULTS/$SCENARIO.res
    CONNECT_S=- DISCONNECT_S=- FLOOR_S=- NOTES=""
    rm -rf "$WORK"; mkdir -p "$WORK" "$RESULTS"
    : > "$RES"; : > "$RESULTS/$SCENARIO.attach.log"
    kmsg "scenario $SCENARIO begin"
    log "begin"
    trap '_scenario_exit $?' EXIT
}

_res_write() {
    {
        echo "status=$1"
        echo "connect_s=$CONNECT_S"
        echo "disconnect_s=$DISCONNECT_S"
        echo "floor_s=$FLOOR_S"
        echo "message=$(printf '%s' "$2" | tr '\t\n' '  ')"
    } > "$RES"
}

note() { NOTES="${NOTES:+$NOTES; }$*"; log "note: $*"; }

scenario_pass() {
    _res_write pass "${1:-ok}${NOTES:+ ($NOTES)}"
    kmsg "scenario $SCENARIO pass"
    log "PASS"
    trap - EXIT
    exit 0
}

fail() {
    local m="$*" f
    # failures recorded by soft checks before this one (not inside a soft check itself)
    if [ -z "${_IN_SOFT:-}" ] && [ "${#SOFT_FAILS[@]}" -gt 0 ]; then
        m="$m; earlier:"; for f in "${SOFT_FAILS[@]}"; do m="$m [$f]"; done
    fi
    log "FAIL: $*"
    _res_write fail "$m"
    kmsg "scenario $SCENARIO FAIL: $*"
    trap - EXIT
    exit 1
}

_scenario_exit() {
    [ -s "$RES" ] || _res_write fail "scenario script exited (rc=$1) without a verdict"
}

# check DESCRIPTION COMMAND...: run it; on failure the scenario fails with DESCRIPTION.
check() {
    local desc=$1; shift
    "$@" || fail "$desc"
}

# ------------------------------------------------------------------ waiting -----

# _nap SECS: sleep without starting a process (a read that times out on a private fifo); under
# emulation a fork costs milliseconds of CPU the work being waited for needs.
_nap() {
    if [ -z "${_NAP_FD:-}" ] || [ "${_NAP_PID:-}" != "$BASHPID" ]; then
        local f=/run/hostbrick-nap.$BASHPID
        _NAP_PID=$BASHPID _NAP_FD=none
        if mkfifo "$f" 2>/dev/null; then exec {_NAP_FD}<>"$f"; rm -f "$f"; fi
    fi
    if [ "$_NAP_FD" = none ]; then sleep "$1"; else read -r -t "$1" -u "$_NAP_FD"; fi
    return 0
}

wait_until() {   # wait_until SECS COMMAND... (polls every 20 ms; forks nothing itself)
    local secs=$1 end; shift
    end=$(( ${EPOCHREALTIME/./} + secs * 1000000 ))
    until "$@"; do
        [ "${EPOCHREALTIME/./}" -gt "$end" ] && return 1
        _nap 0.02
    done
}
exists() { [ -e "$1" ] || [ -L "$1" ]; }
absent() { ! exists "$1"; }
wait_for() { wait_until "${2:-$WAIT_SECS}" exists "$1"; }
wait_gone() { wait_until "${2:-$WAIT_SECS}" absent "$1"; }

# ------------------------------------------------------------------ attach example -----

# conn_iscsi FILE PORTAL IQN LUN VOLUME_ID [extra jq assignments...]
# Writes Cinder's connection_info for one iSCSI volume. Extra args are jq filters applied to
# .data, e.g. '.auth_method="CHAP"'.
conn_iscsi() {
    local file=$1 portal=$2 iqn=$3 lun=$4 vol=$5 f; shift 5
    jq -n --arg p "$portal" --arg t "$iqn" --argjson l "$lun" --arg v "$vol" \
        '{driver_volume_type: "iscsi",
          data: {target_discovered: false, target_portal: $p, target_iqn: $t, target_lun: $l,
                 volume_id: $v, encrypted: false, access_mode: "rw"}}' > "$file" || return 1
    for f in "$@"; do
        jq ".data |= ($f)" "$file" > "$file.tmp" && mv "$file.tmp" "$file" || return 1
    done
}

new_uuid() { cat /proc/sys/kernel/random/uuid; }

# attach_cmd NAME ARGS...: run the attach example; stdout -> $WORK/NAME.out, stderr ->
# $WORK/NAME.err, wall time -> ATTACH_SECS, exit code -> ATTACH_RC. Always returns 0.
attach_cmd() {
    local name=$1 start; shift
    [ -x "$ATTACH" ] || fail "attach example binary missing at $ATTACH"
    log "attach $*"
    start=$(now_ns)
    RUST_BACKTRACE=1 timeout 300 "$ATTACH" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
    ATTACH_RC=$?
    ATTACH_SECS=$(secs_since "$start")
    log "attach $1 -> rc=$ATTACH_RC in ${ATTACH_SECS}s"
    if [ -s "$WORK/$name.err" ]; then sed 's/^/    stderr| /' "$WORK/$name.err" | tail -n 30; fi
    {   # complete stdout/stderr of every call, for the post-mortem
        echo "=== [$(up)] attach $* -> rc=$ATTACH_RC in ${ATTACH_SECS}s"
        echo "--- stdout"; cat "$WORK/$name.out"
        echo "--- stderr"; cat "$WORK/$name.err"
    } >> "$RESULTS/$SCENARIO.attach.log"
    # Every udev database record hostbrick reads on a real guest must parse (it warns if not).
    if grep -m1 'udev record not understood' "$WORK/$name.err"; then
        fail "attach $1: hostbrick could not parse a real udev record (see the stderr above)"
    fi
    return 0
}

attach_stderr_summary() { grep -m1 '^error\[' "$WORK/$1.err" || tail -n1 "$WORK/$1.err"; }

# attach_ok NAME ARGS...: the command must succeed.
attach_ok() {
    local name=$1
    attach_cmd "$@"
    [ "$ATTACH_RC" = 0 ] || fail "attach $2 failed (rc=$ATTACH_RC): $(attach_stderr_summary "$name")"
}

# connect NAME CONN_JSON [--multipath]: connect, validate the device record, set CONNECT_S.
# The record is left in $WORK/NAME.json.
connect() {
    local name=$1 conn=$2; shift 2
    attach_ok "$name" connect "$@" "$conn"
    jq -e -s 'length == 1 and (.[0] | type == "object")' "$WORK/$name.out" >/dev/null \
        || fail "connect stdout is not exactly one JSON object: $(head -c 300 "$WORK/$name.out")"
    cp "$WORK/$name.out" "$WORK/$name.json"
    log "device record: $(jq -c . "$WORK/$name.json")"
    CONNECT_S=$ATTACH_SECS
    # not a failure, but worth seeing next to the kernel floor
    [ "${ATTACH_SECS%%.*}" -ge 10 ] && note "connect $name took ${ATTACH_SECS}s"
    return 0
}

record_field() { jq -r ".$2 // empty" "$WORK/$1.json"; }

# disconnect NAME CONN_JSON [flags]: disconnect using the record of connect NAME; sets DISCONNECT_S.
disconnect() {
    local name=$1 conn=$2; shift 2
    attach_ok "$name-disconnect" disconnect "$@" "$conn" "$WORK/$name.json"
    DISCONNECT_S=$ATTACH_SECS
}

# expect_error NAME KIND: the last attach command NAME failed with stderr error[KIND].
expect_error() {
    local name=$1 kind=$2
    [ "$ATTACH_RC" != 0 ] || fail "attach $name succeeded; expected error[$kind]"
    grep -q "^error\[$kind\]: " "$WORK/$name.err" \
        || fail "attach $name: expected a stderr line 'error[$kind]: ...', got: $(attach_stderr_summary "$name")"
}

# ------------------------------------------------------------------ device checks -----

# check_block_device PATH SIZE_BYTES WWID
check_block_device() {
    local dev=$1 size=$2 wwid=$3 real got
    [ -n "$dev" ] || fail "device record has no path"
    [ -b "$dev" ] || fail "$dev is not a block device"
    real=$(readlink -f "$dev")
    got=$(blockdev --getsize64 "$real") || fail "blockdev --getsize64 $real failed"
    [ "$got" = "$size" ] || fail "$dev: size $got, expected $size"
    if [ -n "$wwid" ]; then
        case ${real##*/} in
            dm-*) got=$(dmsetup info -c --noheadings -o uuid "$real" 2>/dev/null); got=${got#mpath-} ;;
            *)    got=$(/lib/udev/scsi_id -g -u "$real") ;;
        esac
        [ "$got" = "$wwid" ] || fail "$dev: WWID '$got', expected '$wwid'"
    fi
}

# write_pattern DEV TAG: write 256 KiB of data derived from TAG at offset 1 MiB, O_DIRECT.
pattern() { local i; for i in $(seq 1 64); do printf '%-4096s' "hostbrick $1 block $i"; done; }
write_pattern() {
    pattern "$2" > "$WORK/pattern-$2"
    dd if="$WORK/pattern-$2" of="$1" bs=4096 seek=256 count=64 oflag=direct conv=notrunc,fsync status=none
}
read_pattern() {   # read_pattern DEV TAG: compare what's on DEV with TAG's pattern
    dd if="$1" of="$WORK/readback-$2" bs=4096 skip=256 count=64 iflag=direct status=none && \
        cmp -s "$WORK/pattern-$2" "$WORK/readback-$2"
}
check_io() {   # check_io DEV TAG
    write_pattern "$1" "$2" || fail "write to $1 failed"
    read_pattern "$1" "$2" || fail "data written to $1 did not read back"
}

# A writer under a fault: round after round, 4 MiB of checksummed 4 KiB blocks (each names
# its round and offset) written O_DIRECT at offset 4 MiB, fsynced, read back and compared.
# io_writer_start DEV NAME: starts it (IO_WRITER_PID); waits for its first round.
# io_writer_rounds NAME: rounds completed so far.
# io_writer_stop NAME: stops it after the round in progress; fails when a round failed (its
# error in IO_WRITER_ERROR), sets IO_WRITER_ROUNDS.
_io_writer() {
    local dev=$1 name=$2 round=0 i
    while [ ! -e "$WORK/$name.stop" ]; do
        round=$((round + 1))
        for i in $(seq 0 1023); do printf '%-4096s' "hostbrick $name round $round block $i"; done > "$WORK/$name.data"
        dd if="$WORK/$name.data" of="$dev" bs=4096 seek=1024 count=1024 oflag=direct conv=notrunc,fsync status=none 2> "$WORK/$name.dd" \
            || { echo "round $round: write failed: $(tr '\n' ' ' < "$WORK/$name.dd")" > "$WORK/$name.error"; return 1; }
        dd if="$dev" of="$WORK/$name.back" bs=4096 skip=1024 count=1024 iflag=direct status=none 2> "$WORK/$name.dd" \
            || { echo "round $round: read failed: $(tr '\n' ' ' < "$WORK/$name.dd")" > "$WORK/$name.error"; return 1; }
        cmp -s "$WORK/$name.data" "$WORK/$name.back" \
            || { echo "round $round: the data did not read back" > "$WORK/$name.error"; return 1; }
        echo "$round" > "$WORK/$name.rounds"
    done
}
io_writer_start() {
    rm -f "$WORK/$2.stop" "$WORK/$2.error" "$WORK/$2.rounds"
    _io_writer "$1" "$2" & IO_WRITER_PID=$!
    wait_until 60 test -s "$WORK/$2.rounds" || { log "writer $2: no round within 60 s"; return 1; }
}
io_writer_rounds() { cat "$WORK/$1.rounds" 2>/dev/null || echo 0; }
io_writer_running() { kill -0 "$IO_WRITER_PID" 2>/dev/null; }
# io_writer_past NAME N: the writer completed round N, or it stopped (no fork: for wait_until)
io_writer_past() {
    local r=0
    read -r r < "$WORK/$1.rounds" 2>/dev/null
    [ "${r:-0}" -ge "$2" ] || ! io_writer_running
}
io_writer_stop() {
    touch "$WORK/$1.stop"; wait "$IO_WRITER_PID"; local rc=$?
    IO_WRITER_ROUNDS=$(io_writer_rounds "$1") IO_WRITER_ERROR=$(cat "$WORK/$1.error" 2>/dev/null)
    [ "$rc" = 0 ] && [ -z "$IO_WRITER_ERROR" ]
}

# ------------------------------------------------------------------ iSCSI state -----

iscsi_sessions() { iscsiadm -m session 2>/dev/null; }
# session_present IQN [PORTAL_IP]
session_present() { iscsi_sessions | grep -F " ${2:-}" | grep -qF "$1"; }
node_records() { iscsiadm -m node 2>/dev/null; }

# check_no_iscsi_leftovers IQN [IQN...]: no session at all (exit 21), no node record for the
# targets.
check_no_iscsi_leftovers() {
    local rc out iqn
    out=$(iscsiadm -m session 2>&1); rc=$?
    [ "$rc" = 21 ] || fail "iSCSI sessions left behind (iscsiadm -m session rc=$rc): $(echo "$out" | tr '\n' ';')"
    for iqn in "$@"; do
        out=$(iscsiadm -m node -T "$iqn" 2>&1); rc=$?
        [ "$rc" = 21 ] || fail "node records left for $iqn (rc=$rc): $(echo "$out" | tr '\n' ';')"
    done
}

# check_gone DEVICE_PATH... : device nodes are gone (waits for udev a little).
check_gone() {
    local d
    udevadm settle --timeout=10
    for d in "$@"; do
        [ -n "$d" ] || continue
        wait_gone "$d" 5 || fail "$d still present after disconnect"
    done
}

check_no_dm_map() {   # check_no_dm_map WWID
    udevadm settle --timeout=10
    wait_gone "/dev/mapper/$1" 5 || fail "multipath map /dev/mapper/$1 left behind"
    dmsetup info "$1" >/dev/null 2>&1 && fail "device-mapper still has map $1"
    return 0
}

scsi_disks() { ls /sys/class/scsi_disk 2>/dev/null | tr '\n' ' '; }
check_no_scsi_disks() {
    udevadm settle --timeout=10
    wait_until 5 no_scsi_disks || fail "SCSI disks left behind: $(scsi_disks)"
}

# _scsi_block H:C:T:L: SCSI_BLOCK = its block device (sdX) once it has one (builtins only)
_scsi_block() {
    local b
    for b in "/sys/bus/scsi/devices/$1/block/"*; do
        [ -e "$b" ] && { SCSI_BLOCK=${b##*/}; return 0; }
    done
    return 1
}
# sd name (sdX) of the SCSI device H:C:T:L, if any
scsi_block_of() { ls "/sys/class/scsi_device/$1/device/block" 2>/dev/null | head -n1; }
has_scsi_block() { [ -n "$(scsi_block_of "$1")" ]; }
no_scsi_disks() { [ -z "$(scsi_disks)" ]; }

# ------------------------------------------------------------------ kernel floor -----
# What the kernel and udev need for the same attach, driven with raw tools: node record with
# manual scan, login, a targeted scan of the one LUN, wait for the block device node (and note
# udev's by-path link). FLOOR_S = login start -> /dev/sdX present; FLOOR_LINK_S = -> the udev
# link (the single-device floors set it).

# _floor_login PORTAL IQN [CHAP_USER CHAP_PASS] -> FLOOR_HOST (scsi host number); the node
# record is the FLOOR_ISCSI_IFACE iface's (e.g. iser) when that is set, else the default one's.
_floor_login() {
    local portal=$1 iqn=$2 s
    iscsiadm -m node -o new -T "$iqn" -p "$portal" ${FLOOR_ISCSI_IFACE:+-I "$FLOOR_ISCSI_IFACE"} >/dev/null || return 1
    iscsiadm -m node -T "$iqn" -p "$portal" -o update -n node.session.scan -v manual || return 1
    if [ -n "${3:-}" ]; then
        iscsiadm -m node -T "$iqn" -p "$portal" -o update -n node.session.auth.authmethod -v CHAP
        iscsiadm -m node -T "$iqn" -p "$portal" -o update -n node.session.auth.username -v "$3"
        iscsiadm -m node -T "$iqn" -p "$portal" -o update -n node.session.auth.password -v "$4"
    fi
    iscsiadm -m node -T "$iqn" -p "$portal" --login >/dev/null || return 1
    FLOOR_HOST=""
    for s in /sys/class/iscsi_session/session*; do
        [ "$(cat "$s/targetname")" = "$iqn" ] || continue
        [ "$(cat "$s/device/connection"*/iscsi_connection/connection*/persistent_address 2>/dev/null)" = "${portal%:*}" ] || continue
        FLOOR_HOST=$(basename "$(readlink -f "$s/device/..")"); FLOOR_HOST=${FLOOR_HOST#host}
    done
    [ -n "$FLOOR_HOST" ]
}

# kernel_floor_iscsi LUN PORTAL[,PORTAL2] IQN [CHAP_USER CHAP_PASS]
# One portal: floor to /dev/sdX. Two portals: both paths, floor to /dev/mapper/<wwid>.
kernel_floor_iscsi() {
    local lun=$1 portals=$2 iqn=$3 user=${4:-} pass=${5:-} start p sd="" sds="" t_dev t_link wwid
    start=$(now_ns)
    for p in ${portals//,/ }; do
        _floor_login "$p" "$iqn" $user $pass || { note "floor: login to $p failed"; _floor_cleanup "$iqn"; return 1; }
        echo "0 0 $lun" > "/sys/class/scsi_host/host$FLOOR_HOST/scan"
        wait_until 30 has_scsi_block "$FLOOR_HOST:0:0:$lun" || { note "floor: no block device on host$FLOOR_HOST"; _floor_cleanup "$iqn"; return 1; }
        sd=$(scsi_block_of "$FLOOR_HOST:0:0:$lun"); sds="$sds $sd"
        wait_for "/dev/$sd" 30
        [ -z "${t_dev:-}" ] && t_dev=$(secs_since "$start")
    done
    if [ "$portals" = "${portals%,*}" ]; then
        FLOOR_S=$t_dev
        wait_for "/dev/disk/by-path/ip-$portals-iscsi-$iqn-lun-$lun" 30 && t_link=$(secs_since "$start")
        FLOOR_LINK_S=${t_link:--}
        log "kernel floor: login+scan -> /dev/$sd ${FLOOR_S}s, by-path link ${t_link:-never}s"
        note "floor by-path link ${t_link:-never}s"
    else
        wwid=$(/lib/udev/scsi_id -g -u "/dev/$sd")
        wait_for "/dev/mapper/$wwid" 30 && FLOOR_S=$(secs_since "$start")
        log "kernel floor: 2 logins+scans -> first /dev/$sd ${t_dev}s, /dev/mapper/$wwid ${FLOOR_S}s"
    fi
    _floor_cleanup "$iqn" $sds
}

# kernel_floor_iscsi_luns PORTAL IQN COUNT: the floor of COUNT LUNs (0..COUNT-1) of one target
# at once: one manual-scan login, a targeted scan of each LUN, until every block device node
# exists; FLOOR_S = login start -> last node (the by-path links are noted). Cleans up after.
kernel_floor_iscsi_luns() {
    local portal=$1 iqn=$2 count=$3 start l sd sds="" t_link
    start=$(now_ns)
    _floor_login "$portal" "$iqn" || { note "floor: login to $portal failed"; _floor_cleanup "$iqn"; return 1; }
    for l in $(seq 0 $((count - 1))); do echo "0 0 $l" > "/sys/class/scsi_host/host$FLOOR_HOST/scan"; done
    for l in $(seq 0 $((count - 1))); do
        wait_until 60 _scsi_block "$FLOOR_HOST:0:0:$l" || { note "floor: no block device for LUN $l"; _floor_cleanup "$iqn"; return 1; }
        sds="$sds $SCSI_BLOCK"
        wait_for "/dev/$SCSI_BLOCK" 60
    done
    FLOOR_S=$(secs_since "$start")
    for l in $(seq 0 $((count - 1))); do wait_for "/dev/disk/by-path/ip-$portal-iscsi-$iqn-lun-$l" 60; done
    t_link=$(secs_since "$start")
    log "kernel floor: login + $count targeted scans -> $count device nodes ${FLOOR_S}s, by-path links ${t_link}s"
    FLOOR_LINKS_S=$t_link
    _floor_cleanup "$iqn" $sds
}

# Undo the floor measurement: flush the dm map multipathd may have built, log out, delete the
# node records, wait for the disks to go.
_floor_cleanup() {
    local iqn=$1 sd wwid; shift
    [ -n "${HOSTBRICK_VM_TRACE:-}" ] && { PS4='+[$(up)] '; set -x; }
    udevadm settle --timeout=10
    local flushed=" "
    for sd in "$@"; do
        wwid=$(/lib/udev/scsi_id -g -u "/dev/$sd" 2>/dev/null) || continue
        [[ $flushed == *" $wwid "* ]] && continue
        flushed="$flushed$wwid "
        # with find_multipaths no, multipathd builds a map for every path: let it, then flush
        if multipath -c "/dev/$sd" >/dev/null 2>&1; then
            wait_for "/dev/mapper/$wwid" 10
            udevadm settle --timeout=10
            multipath -f "$wwid" >/dev/null 2>&1 || { sleep 0.5; multipath -f "$wwid" >/dev/null 2>&1; }
        fi
    done
    iscsiadm -m node -T "$iqn" --logout >/dev/null 2>&1
    iscsiadm -m node -T "$iqn" -o delete >/dev/null 2>&1
    for sd in "$@"; do wait_gone "/dev/$sd" 30; done
    udevadm settle --timeout=10
    set +x
}

# ------------------------------------------------------------------ NVMe-oF -----

# conn_nvme FILE NQN IP PORT VOL_UUID NSID NGUID VOLUME_ID [jq filters on .data...]
# Cinder's current nvmeof connection_info: portals list, namespace identified by vol_uuid.
conn_nvme() {
    local file=$1 nqn=$2 ip=$3 port=$4 uuid=$5 nsid=$6 nguid=$7 vol=$8 f; shift 8
    jq -n --arg n "$nqn" --arg ip "$ip" --arg port "$port" --arg u "$uuid" --argjson ns "$nsid" \
        --arg g "$nguid" --arg v "$vol" \
        '{driver_volume_type: "nvmeof",
          data: {target_nqn: $n, portals: [[$ip, $port, "tcp"]], vol_uuid: $u, ns_id: $ns,
                 volume_nguid: $g, volume_id: $v, encrypted: false, access_mode: "rw"}}' > "$file" || return 1
    for f in "$@"; do
        jq ".data |= ($f)" "$file" > "$file.tmp" && mv "$file.tmp" "$file" || return 1
    done
}

# conn_nvme_legacy FILE NQN IP PORT VOLUME_ID: the older shape (nqn, transport_type,
# target_portal, target_port), no namespace identity: the subsystem's namespace is the volume.
conn_nvme_legacy() {
    jq -n --arg n "$2" --arg ip "$3" --argjson port "$4" --arg v "$5" \
        '{driver_volume_type: "nvmeof",
          data: {nqn: $n, transport_type: "tcp", target_portal: $ip, target_port: $port,
                 volume_id: $v, encrypted: false, access_mode: "rw"}}' > "$1"
}

hostnqn() { tr -d '[:space:]' < /etc/nvme/hostnqn; }
hostid() { tr -d '[:space:]' < /etc/nvme/hostid; }

# controllers (nvmeN) whose subsysnqn is NQN
nvme_ctrls_for() {
    local c
    for c in /sys/class/nvme/nvme*; do
        [ -e "$c/subsysnqn" ] && [ "$(cat "$c/subsysnqn")" = "$1" ] && echo "${c##*/}"
    done
}
no_nvme_ctrls_for() { [ -z "$(nvme_ctrls_for "$1")" ]; }
nvme_ctrls() { ls /sys/class/nvme 2>/dev/null | tr '\n' ' '; }
no_nvme_ctrls() { [ -z "$(nvme_ctrls)" ]; }
# block devices of namespace heads and lone namespaces (no hidden nvmeXcYnZ path disks)
nvme_disks() {
    local b h
    for b in /sys/block/nvme*; do
        [ -e "$b/dev" ] || continue
        h=0; [ -e "$b/hidden" ] && read -r h < "$b/hidden"
        [ "$h" != 1 ] && echo "${b##*/}"
    done
}
# _nvme_disk UUID: NVME_DISK = the visible block device (nvmeXnY) whose uuid is UUID (shell
# builtins only: it is polled)
_nvme_disk() {
    local b h u
    NVME_DISK=""
    for b in /sys/block/nvme*; do
        [ -e "$b/uuid" ] || continue
        h=0; [ -e "$b/hidden" ] && read -r h < "$b/hidden"
        [ "$h" = 1 ] && continue
        read -r u < "$b/uuid" 2>/dev/null || continue
        [ "$u" = "$1" ] && { NVME_DISK=${b##*/}; return 0; }
    done
    return 1
}
# the visible block device (nvmeXnY) whose uuid is UUID
nvme_disk_by_uuid() { _nvme_disk "$1" && echo "$NVME_DISK"; }
has_nvme_disk() { _nvme_disk "$1" && [ -b "/dev/$NVME_DISK" ]; }

# check_nvme_device PATH SIZE_BYTES UUID: a block device of that size; its sysfs entry is a
# visible namespace (not a hidden path) whose uuid is UUID.
check_nvme_device() {
    local dev=$1 size=$2 uuid=$3 real name got
    [ -n "$dev" ] || fail "device record has no path"
    [ -b "$dev" ] || fail "$dev is not a block device"
    real=$(readlink -f "$dev"); name=${real##*/}
    [ -d "/sys/block/$name" ] || fail "$dev ($real) has no /sys/block/$name"
    [ "$(cat "/sys/block/$name/hidden" 2>/dev/null)" != 1 ] || fail "$dev is a hidden multipath path disk"
    got=$(blockdev --getsize64 "$real") || fail "blockdev --getsize64 $real failed"
    [ "$got" = "$size" ] || fail "$dev: size $got, expected $size"
    got=$(cat "/sys/block/$name/uuid" 2>/dev/null)
    [ "$got" = "$uuid" ] || fail "$dev: /sys/block/$name/uuid '$got', expected '$uuid'"
}

# check_record_nvme NAME: the connect record is {"type":"block","path":"/dev/..."}.
check_record_nvme() {
    local t p
    t=$(record_field "$1" type); p=$(record_field "$1" path)
    [ "$t" = block ] || fail "record $1: type '$t', expected 'block': $(jq -c . "$WORK/$1.json")"
    case $p in /dev/*) ;; *) fail "record $1: path '$p' is not under /dev" ;; esac
}

# check_no_nvme_leftovers: no controller at all, no namespace block device, no /dev/nvme*n* node.
check_no_nvme_leftovers() {
    local nodes
    udevadm settle --timeout=10
    wait_until 10 no_nvme_ctrls || fail "NVMe controllers left behind: $(nvme_ctrls)($(nvme list-subsys 2>&1 | tr '\n' ' '))"
    [ -z "$(ls /sys/class/nvme-subsystem 2>/dev/null)" ] || fail "NVMe subsystems left behind: $(ls /sys/class/nvme-subsystem | tr '\n' ' ')"
    nodes=$(ls /dev/nvme*n* 2>/dev/null | tr '\n' ' ')
    [ -z "$nodes" ] || fail "NVMe device nodes left behind: $nodes"
}

nvme_state() {   # for the logs
    echo "controllers: $(for c in /sys/class/nvme/nvme*; do [ -e "$c" ] && printf '%s(%s %s %s) ' "${c##*/}" "$(cat "$c/subsysnqn")" "$(cat "$c/address")" "$(cat "$c/state")"; done)"
    echo "disks: $(for b in /sys/block/nvme*; do [ -e "$b" ] && printf '%s(uuid=%s hidden=%s) ' "${b##*/}" "$(cat "$b/uuid" 2>/dev/null)" "$(cat "$b/hidden" 2>/dev/null)"; done)"
}

# kernel_floor_nvme IP PORT NQN UUID [UUID...]: the same attach with raw nvme-cli: `nvme connect`
# (with the host's hostnqn/hostid) until the namespace's block device node exists (every
# namespace's, with more UUIDs); FLOOR_S = connect start -> /dev/nvmeXnY; the udev by-id link
# time (of the first) is noted. Disconnects afterwards. FLOOR_NVME_TRANSPORT=rdma measures
# NVMe/RDMA (default tcp).
kernel_floor_nvme() {
    local ip=$1 port=$2 nqn=$3 uuid=$4 start t_cli dev t_link out u
    [ -n "${HOSTBRICK_VM_TRACE:-}" ] && { PS4='+[$(up)] '; set -x; }
    start=$(now_ns)
    out=$(nvme connect -t "${FLOOR_NVME_TRANSPORT:-tcp}" -a "$ip" -s "$port" -n "$nqn" -q "$(hostnqn)" -I "$(hostid)" 2>&1) \
        || { set +x; note "floor: nvme connect failed: $out"; nvme disconnect -n "$nqn" >/dev/null 2>&1; return 1; }
    t_cli=$(secs_since "$start")
    for u in "${@:4}"; do
        wait_until 30 has_nvme_disk "$u" || { set +x; note "floor: no block device with uuid $u"; nvme disconnect -n "$nqn" >/dev/null 2>&1; return 1; }
        dev=$(nvme_disk_by_uuid "$u")
        wait_for "/dev/$dev" 30
    done
    dev=$(nvme_disk_by_uuid "$uuid")
    FLOOR_S=$(secs_since "$start")
    wait_for "/dev/disk/by-id/nvme-uuid.$uuid" 30 && t_link=$(secs_since "$start")
    set +x
    FLOOR_LINK_S=${t_link:--}
    log "kernel floor: nvme connect ${t_cli}s, -> /dev/$dev ${FLOOR_S}s, by-id link ${t_link:-never}s"
    note "floor: nvme connect returns ${t_cli}s, by-id link ${t_link:-never}s"
    udevadm settle --timeout=10
    nvme disconnect -n "$nqn" >/dev/null 2>&1
    wait_gone "/dev/$dev" 30
    wait_until 10 no_nvme_ctrls_for "$nqn"
    udevadm settle --timeout=10
}

# ------------------------------------------------------------------ Ceph RBD -----
# Facts behind these helpers: tests/fixtures/rbd/SUMMARY.md.

CEPH_MON=${CEPH_MON:-127.0.0.1:6789}

# ceph_user_key USER POOL: create client.USER with rbd caps on POOL (if needed); print its key.
ceph_user_key() {
    timeout 60 ceph auth get-or-create "client.$1" mon 'profile rbd' osd "profile rbd pool=$2" >/dev/null || return 1
    timeout 60 ceph auth print-key "client.$1"
}

# keyring_text USER KEY: the keyring file content Cinder passes inline.
keyring_text() { printf '[client.%s]\n\tkey = %s\n' "$1" "$2"; }

# conn_rbd FILE POOL/IMAGE USER KEY VOLUME_ID [jq filters on .data...]: Cinder's rbd
# connection_info with the keyring inline.
conn_rbd() {
    local file=$1 name=$2 user=$3 key=$4 vol=$5 f; shift 5
    jq -n --arg n "$name" --arg u "$user" --arg k "$(keyring_text "$user" "$key")" --arg v "$vol" \
        --arg s "$(new_uuid)" --arg mh "${CEPH_MON%:*}" --arg mp "${CEPH_MON##*:}" \
        '{driver_volume_type: "rbd",
          data: {name: $n, hosts: [$mh], ports: [$mp], cluster_name: "ceph", auth_enabled: true,
                 auth_username: $u, secret_type: "ceph", secret_uuid: $s, keyring: $k,
                 volume_id: $v, discard: true, access_mode: "rw"}}' > "$file" || return 1
    for f in "$@"; do
        jq ".data |= ($f)" "$file" > "$file.tmp" && mv "$file.tmp" "$file" || return 1
    done
}

# krbd mappings: `rbd showmapped --format json` (krbd only) as compact JSON; count; devices
rbd_krbd_mapped() { rbd showmapped --format json --conf /dev/null 2>/dev/null || echo '"showmapped failed"'; }
rbd_krbd_count() { rbd_krbd_mapped | jq 'length'; }
rbd_krbd_devs_of() { rbd_krbd_mapped | jq -r --arg p "${1%%/*}" --arg n "${1#*/}" '.[] | select(.pool == $p and .name == $n) | .device'; }
# rbd-nbd mappings (no trailing newline in its output: echo adds one)
rbd_nbd_mapped() { { rbd-nbd list-mapped --format json --conf /dev/null 2>/dev/null || printf '"list-mapped failed"'; }; echo; }
rbd_nbd_count() { rbd_nbd_mapped | jq 'length'; }
rbd_nbd_devs_of() { rbd_nbd_mapped | jq -r --arg p "${1%%/*}" --arg n "${1#*/}" '.[] | select(.pool == $p and .image == $n) | .device'; }
rbd_nothing_mapped() {
    [ -z "$(ls /sys/bus/rbd/devices 2>/dev/null)" ] && [ "$(rbd_nbd_count)" = 0 ] && ! pgrep -x rbd-nbd >/dev/null
}
rbd_state() {   # for the logs
    echo "krbd: $(rbd_krbd_mapped | jq -c .) sysfs: $(ls /sys/bus/rbd/devices 2>/dev/null | tr '\n' ' ')"
    echo "nbd: $(rbd_nbd_mapped | jq -c .) daemons: $(pgrep -a rbd-nbd | tr '\n' ';')"
}

# check_rbd_device PATH SIZE_BYTES POOL/IMAGE: krbd block device of that size mapping the image
check_rbd_device() {
    local dev=$1 size=$2 spec=$3 real name id got
    [ -n "$dev" ] || fail "device record has no path"
    [ -b "$dev" ] || fail "$dev is not a block device"
    real=$(readlink -f "$dev"); name=${real##*/}
    case $name in rbd[0-9]*) ;; *) fail "$dev ($real) is not an rbd device" ;; esac
    id=${name#rbd}
    got=$(blockdev --getsize64 "$real") || fail "blockdev --getsize64 $real failed"
    [ "$got" = "$size" ] || fail "$dev: size $got, expected $size"
    got="$(cat "/sys/bus/rbd/devices/$id/pool")/$(cat "/sys/bus/rbd/devices/$id/name")"
    [ "$got" = "$spec" ] || fail "$dev maps '$got', expected '$spec'"
    [ "$(cat "/sys/bus/rbd/devices/$id/current_snap")" = "-" ] || fail "$dev maps a snapshot"
}

# check_nbd_device PATH SIZE_BYTES POOL/IMAGE: nbd device of that size served by an rbd-nbd
# daemon mapping the image
check_nbd_device() {
    local dev=$1 size=$2 spec=$3 real got
    [ -n "$dev" ] || fail "device record has no path"
    [ -b "$dev" ] || fail "$dev is not a block device"
    real=$(readlink -f "$dev")
    case ${real##*/} in nbd[0-9]*) ;; *) fail "$dev ($real) is not an nbd device" ;; esac
    got=$(blockdev --getsize64 "$real") || fail "blockdev --getsize64 $real failed"
    [ "$got" = "$size" ] || fail "$dev: size $got, expected $size"
    rbd_nbd_devs_of "$spec" | grep -qx "$real" || fail "rbd-nbd list-mapped does not show $real for $spec: $(rbd_nbd_mapped)"
}

# check_no_rbd_leftovers: no krbd mapping, no /dev/rbdN, no /dev/rbd/ links, no nbd mapping,
# no rbd-nbd daemon.
check_no_rbd_leftovers() {
    local nodes
    udevadm settle --timeout=10
    wait_until 10 rbd_nothing_mapped || fail "RBD mappings left behind: $(rbd_state | tr '\n' ' ')"
    [ "$(rbd_krbd_count)" = 0 ] || fail "rbd showmapped not empty: $(rbd_krbd_mapped)"
    nodes=$(ls -d /dev/rbd[0-9]* 2>/dev/null | tr '\n' ' ')
    [ -z "$nodes" ] || fail "rbd device nodes left behind: $nodes"
    nodes=$(find /dev/rbd -type l 2>/dev/null | tr '\n' ' ')
    [ -z "$nodes" ] || fail "/dev/rbd links left behind: $nodes"
}

# check_secret_not_left KEY: no file under /tmp, /run, /var/tmp, /dev/shm (but our $WORK and
# the cluster's own state) holds the key.
secret_files() {
    grep -rlsF -- "$1" /tmp /run /var/tmp /dev/shm 2>/dev/null | grep -v "^$WORK/" | grep -v '^/run/ceph/' | tr '\n' ' '
}
check_secret_not_left() {
    local hits; hits=$(secret_files "$1")
    [ -z "$hits" ] || fail "the cephx key was left in: $hits"
}

# kernel_floor_rbd POOL/IMAGE USER KEYRING_FILE: raw `rbd map` (as the connector would run it)
# until the /dev/rbdN node exists; FLOOR_S = map start -> node; the udev /dev/rbd/POOL/IMAGE link
# time is noted. Unmaps afterwards.
kernel_floor_rbd() {
    local spec=$1 user=$2 keyring=$3 start t_cli dev out t_link
    [ -n "${HOSTBRICK_VM_TRACE:-}" ] && { PS4='+[$(up)] '; set -x; }
    start=$(now_ns)
    out=$(rbd map "$spec" --id "$user" --keyring "$keyring" -m "$CEPH_MON" --conf /dev/null 2>&1) \
        || { set +x; note "floor: rbd map failed: $out"; return 1; }
    t_cli=$(secs_since "$start")
    dev=$(echo "$out" | grep -m1 '^/dev/rbd')
    [ -n "$dev" ] || { set +x; note "floor: rbd map printed no device: $out"; return 1; }
    wait_for "$dev" 30 || { set +x; note "floor: $dev never appeared"; return 1; }
    FLOOR_S=$(secs_since "$start")
    wait_for "/dev/rbd/$spec" 30 && t_link=$(secs_since "$start")
    set +x
    FLOOR_LINK_S=${t_link:--}
    log "kernel floor: rbd map returns ${t_cli}s, -> $dev ${FLOOR_S}s, /dev/rbd/$spec link ${t_link:-never}s"
    note "floor: rbd map returns ${t_cli}s, udev link ${t_link:-never}s"
    udevadm settle --timeout=10
    rbd unmap "$dev" --conf /dev/null >/dev/null 2>&1 || note "floor: rbd unmap $dev failed"
    wait_gone "$dev" 30
}

# kernel_floor_nbd POOL/IMAGE USER KEYRING_FILE: raw `rbd-nbd map` until the nbd device has a
# size; prints the seconds. Unmaps afterwards.
kernel_floor_nbd() {
    local spec=$1 user=$2 keyring=$3 start out dev t
    start=$(now_ns)
    out=$(rbd-nbd map "$spec" --id "$user" --keyring "$keyring" -m "$CEPH_MON" --conf /dev/null 2>&1) \
        || { note "floor: rbd-nbd map failed: $out"; return 1; }
    dev=$(echo "$out" | grep -m1 '^/dev/nbd'); dev=${dev##*/}
    wait_until 30 nbd_has_size "$dev" || { note "floor: $dev has no size"; return 1; }
    t=$(secs_since "$start")
    rbd-nbd unmap "/dev/$dev" --conf /dev/null >/dev/null 2>&1
    wait_until 10 rbd_nothing_mapped
    echo "$t"
}
nbd_has_size() { local s; s=$(cat "/sys/block/$1/size" 2>/dev/null); [ -n "$s" ] && [ "$s" != 0 ]; }

# rbd_reset: unmap every krbd/nbd mapping and stop the one-node cluster (between scenarios).
# A no-op when no Ceph/rbd state exists.
rbd_reset() {
    local d
    for d in /sys/bus/rbd/devices/*; do
        [ -e "$d" ] && echo "${d##*/}" > /sys/bus/rbd/remove_single_major 2>/dev/null
    done
    if pgrep -x rbd-nbd >/dev/null; then
        for d in /sys/block/nbd*; do
            [ -e "$d/pid" ] && rbd-nbd unmap "/dev/${d##*/}" --conf /dev/null >/dev/null 2>&1
        done
        pkill -x rbd-nbd 2>/dev/null
    fi
    if [ -f /run/ceph/ceph-mon.a.pid ] || [ -f /run/ceph/ceph-osd.0.pid ] || [ -f /etc/ceph/ceph.conf ]; then
        ceph_teardown
    fi
    return 0
}

# ------------------------------------------------------------------ reset -----

# Return the guest to a clean initiator + target state (between scenarios).
guest_reset() {
    crypt_reset
    multipath -F >/dev/null 2>&1
    iscsiadm -m node --logoutall=all >/dev/null 2>&1
    iscsiadm -m node -o delete >/dev/null 2>&1
    iscsiadm -m discoverydb -o delete >/dev/null 2>&1
    wait_until 30 no_scsi_disks
    udevadm settle --timeout=10
    multipath -F >/dev/null 2>&1
    nvme disconnect-all >/dev/null 2>&1
    lio_teardown_all
    nvmet_teardown_all
    rdma_down
    rbd_reset
    # what a failed scenario left in hostbrick's registry (its volumes are gone now)
    rm -f "${HOSTBRICK_REGISTRY:-/run/hostbrick/attachments}"/*/*.json
    rm -rf "$WORK"
}

# ------------------------------------------------------------------ faults -----
# Deterministic fault injection: a wrapper for one program, first on the PATH of the attach
# call, runs the real program and then, once its arguments contain every marker word and it
# succeeded, runs a hook (the first time only): e.g. tear the target down right after the
# login, or SIGKILL the attach process ($FAULT_PARENT) in the middle of its connect.
FAULT_BIN=${FAULT_BIN:-$WORK/fault-bin}

# fault_wrap PROGRAM 'MARKER WORDS' HOOK...: the hook is a command line run by bash with
# lib.sh sourced (and $FAULT_PARENT set); its output goes to $WORK/fault-hook.log.
fault_wrap() {
    local prog=$1 marker=$2 real w test=""; shift 2
    for w in $marker; do test="$test && [[ \" \$* \" == *\" $w \"* ]]"; done
    real=$(command -v "$prog") || { log "fault_wrap: no $prog"; return 1; }
    mkdir -p "$FAULT_BIN"
    printf '%s\n' "$*" > "$FAULT_BIN/$prog.hook"
    rm -rf "$FAULT_BIN/$prog.fired"
    cat > "$FAULT_BIN/$prog" <<WRAP
#!/bin/bash
"$real" "\$@"; rc=\$?
if [ \$rc = 0 ] $test && mkdir "$FAULT_BIN/$prog.fired" 2>/dev/null; then
    FAULT_PARENT=\$PPID GUEST_DIR="$GUEST_DIR" WORK="$WORK" RESULTS="$RESULTS" SCENARIO="${SCENARIO:-}-hook" \
        bash -c '. "\$GUEST_DIR/lib.sh"; . "\$0"' "$FAULT_BIN/$prog.hook" >> "$WORK/fault-hook.log" 2>&1
fi
exit \$rc
WRAP
    chmod +x "$FAULT_BIN/$prog"
}
# fault_on_nvme_ctrl NQN HOOK...: fault_wrap for NVMe connects, which run no program a
# wrapper could stand in for (hostbrick writes to /dev/nvme-fabrics itself): a watcher polls
# sysfs from now on and, once a controller of NQN exists, runs the hook once, as fault_wrap's
# hooks run ($FAULT_PARENT: the attach process), then marks it fired (fault_fired nvme).
# Only a hook that does not race the connect is deterministic: keep what hostbrick waits for
# next (the namespace) away until the hook has run. fault_watch_end waits for the watcher.
fault_on_nvme_ctrl() {
    local nqn=$1 exe; shift
    exe=$(readlink -f "$ATTACH")
    mkdir -p "$FAULT_BIN"
    printf '%s\n' "$*" > "$FAULT_BIN/nvme.hook"
    rm -rf "$FAULT_BIN/nvme.fired"
    (
        deadline=$(( $(date +%s) + 60 ))
        while [ "$(date +%s)" -lt "$deadline" ]; do
            if [ -n "$(nvme_ctrls_for "$nqn")" ]; then
                pid=
                for p in /proc/[0-9]*; do
                    [ "$(readlink "$p/exe" 2>/dev/null)" = "$exe" ] && { pid=${p#/proc/}; break; }
                done
                mkdir "$FAULT_BIN/nvme.fired"
                FAULT_PARENT=$pid GUEST_DIR="$GUEST_DIR" WORK="$WORK" RESULTS="$RESULTS" SCENARIO="${SCENARIO:-}-hook" \
                    bash -c '. "$GUEST_DIR/lib.sh"; . "$0"' "$FAULT_BIN/nvme.hook" >> "$WORK/fault-hook.log" 2>&1
                exit 0
            fi
            sleep 0.01
        done
    ) &
    FAULT_WATCH_PID=$!
}
fault_watch_end() { [ -n "${FAULT_WATCH_PID:-}" ] && wait "$FAULT_WATCH_PID"; FAULT_WATCH_PID=; }
fault_fired() { [ -d "$FAULT_BIN/$1.fired" ]; }
fault_clear() { rm -rf "$FAULT_BIN"; }
# attach_faulty NAME ARGS...: attach_cmd with the fault wrappers first on PATH.
attach_faulty() { PATH="$FAULT_BIN:$PATH" attach_cmd "$@"; }

# iSCSI session states (LOGGED_IN, FAILED, FREE) of the sessions to IQN
iscsi_session_states() {
    local s
    for s in /sys/class/iscsi_session/session*; do
        [ -e "$s/targetname" ] && [ "$(cat "$s/targetname")" = "$1" ] && cat "$s/state"
    done
}
iscsi_not_logged_in() { ! iscsi_session_states "$1" | grep -qx LOGGED_IN; }
# has_scsi_disk_of WWID: a SCSI disk with that WWID (udev's form) exists
has_scsi_disk_of() {
    local d
    for d in /sys/class/scsi_disk/*/device; do
        [ -e "$d/wwid" ] || continue
        [ "$(/lib/udev/scsi_id -g -u "/dev/$(ls "$d/block" 2>/dev/null | head -n1)" 2>/dev/null)" = "$1" ] && return 0
    done
    return 1
}

# lio_target_down IQN: the target goes away under its initiators: TPG disabled (LIO drops
# its sessions) and portals removed (re-logins are refused). Waits until the initiator has
# noticed (no session of IQN still LOGGED_IN).
lio_target_down() {
    local tpg np; tpg=$(lio_tpg "$1")
    echo 0 > "$tpg/enable" || return 1
    for np in "$tpg"/np/*; do [ -d "$np" ] && rmdir "$np"; done
    wait_until 15 iscsi_not_logged_in "$1" || { log "sessions of $1 still logged in: $(iscsi_session_states "$1" | tr '\n' ' ')"; return 1; }
    log "target $1 down; sessions: $(iscsi_session_states "$1" | tr '\n' ' ')"
}

nvme_ctrl_states() { local c; for c in $(nvme_ctrls_for "$1"); do cat "/sys/class/nvme/$c/state"; done; }
nvme_not_live() { ! nvme_ctrl_states "$1" | grep -qx live; }

# nvmet_port_down PORT_ID NQN: the port goes away (connections drop, reconnects are refused);
# waits until no controller of NQN is live.
nvmet_port_down() {
    local p=$NVMET/ports/$1 x
    for x in "$p"/subsystems/*; do [ -L "$x" ] && rm -f "$x"; done
    rmdir "$p" || return 1
    wait_until 15 nvme_not_live "$2" || { log "controllers of $2 still live: $(nvme_ctrl_states "$2" | tr '\n' ' ')"; return 1; }
    log "port $1 down; controllers of $2: $(nvme_ctrl_states "$2" | tr '\n' ' ')"
}

# ------------------------------------------------------------------ audit -----

# audit_run NAME: `attach audit` -> $WORK/NAME.out (must succeed and be one JSON object)
audit_run() {
    attach_ok "$1" audit
    jq -e 'type == "object" and has("iscsi_sessions") and has("multipath_maps") and has("nvme_controllers") and has("rbd_mappings")' \
        "$WORK/$1.out" >/dev/null || fail "audit output is not a report: $(head -c 300 "$WORK/$1.out")"
    log "audit: $(jq -c . "$WORK/$1.out")"
}
# audit_count NAME KIND: entries of KIND (iscsi_sessions, ...) in audit NAME
audit_count() { jq -r --arg k "$2" '.[$k] | length' "$WORK/$1.out"; }
# check_audit_empty NAME: audit lists nothing
check_audit_empty() {
    audit_run "$1"
    jq -e '[.[] | length] | add == 0' "$WORK/$1.out" >/dev/null \
        || fail "audit lists orphans where none should be: $(jq -c . "$WORK/$1.out")"
}

# ------------------------------------------------------------------ statistics -----

# median VALUE...: the median (mean of the middle two for an even count), 3 decimals
median() {
    printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -n \
        | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) printf "%.3f\n", a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'
}
# ratio A B: A / B with 2 decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f\n", a / b; else print "-"}'; }
# lt A B: A < B (decimals)
lt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a < b)}'; }

# bench_line SECTION LABEL RUNS CONNECT_S DISCONNECT_S FLOOR_S NOTE: one line of the suite's
# benchmark report ($RESULTS/bench.tsv; run-suite.sh prints it as a table).
bench_line() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$(printf '%s' "$7" | tr '\t\n' '  ')" >> "$RESULTS/bench.tsv"
    log "bench: $*"
}

# ------------------------------------------------------------------ os-brick -----
# os-brick (OpenStack's connector library) beside hostbrick, for the interop scenario. The
# host installs it (tests/vm/osbrick.sh) and shares it as $SHARE/osbrick.tar; it is unpacked
# into the guest's /tmp (imports over 9p are slow) and driven by one long-lived Python process
# (guest/osbrick_driver.py: JSON lines on a coprocess' stdin/stdout; a warm import alone takes
# ~20 s under emulation).
OSBRICK_DIR=${OSBRICK_DIR:-/tmp/osbrick}
OSBRICK_TIMEOUT=${OSBRICK_TIMEOUT:-300}

# osbrick_launch: start unpacking os-brick and the driver in the background (a coprocess;
# its log: $OSBRICK_LOG_PATH, default results/<scenario>.osbrick.log);
# osbrick_wait: wait until it has imported os-brick (sets OSBRICK_STARTUP_S, OSBRICK_VERSION).
# osbrick_start: both. Between the two a scenario can set up targets and run hostbrick.
osbrick_launch() {
    [ -s "$SHARE/osbrick.error" ] && fail "$(cat "$SHARE/osbrick.error")"
    [ -s "$SHARE/osbrick.tar" ] || fail "no os-brick in the share ($SHARE/osbrick.tar): run-suite.sh provisions it for scenarios marked '# vm-needs: osbrick'"
    command -v python3 >/dev/null || fail "the guest has no python3"
    OSBRICK_LOG=${OSBRICK_LOG_PATH:-$RESULTS/$SCENARIO.osbrick.log}
    : > "$OSBRICK_LOG"
    OSBRICK_T0=$(now_ns)
    coproc OSBRICK {
        if [ ! -d "$OSBRICK_DIR/os_brick" ]; then
            mkdir -p "$OSBRICK_DIR" && tar -C "$OSBRICK_DIR" --strip-components=1 -xf "$SHARE/osbrick.tar" 2>>"$OSBRICK_LOG" \
                || { echo '{"ready": false, "error": "unpacking the shared osbrick.tar failed"}'; exit 1; }
            echo "os-brick unpacked into $OSBRICK_DIR in $(secs_since "$OSBRICK_T0")s ($(du -sh "$OSBRICK_DIR" | cut -f1)): $(tr '\n' ' ' < "$OSBRICK_DIR/MANIFEST.hostbrick" 2>/dev/null)" >> "$OSBRICK_LOG"
        fi
        PYTHONPATH=$OSBRICK_DIR exec python3 "$GUEST_DIR/osbrick_driver.py" 2>>"$OSBRICK_LOG"
    }
    OSBRICK_IN=${OSBRICK[1]} OSBRICK_OUT=${OSBRICK[0]}
    log "os-brick driver starting (pid $OSBRICK_PID)"
}
osbrick_wait() {
    local line
    IFS= read -r -t 240 line <&"$OSBRICK_OUT" \
        || fail "the os-brick driver did not start within 240s: $(tail -n 5 "$OSBRICK_LOG" | tr '\n' ' ')"
    grep -m1 '^os-brick unpacked' "$OSBRICK_LOG" | cut -c1-200 | while read -r l; do log "$l"; done
    jq -e '.ready == true' <<<"$line" >/dev/null \
        || fail "the os-brick driver failed to start: $(jq -r '.error // .' <<<"$line" 2>/dev/null || echo "$line") $(tail -n 3 "$OSBRICK_LOG" | tr '\n' ' ')"
    OSBRICK_STARTUP_S=$(secs_since "$OSBRICK_T0")
    OSBRICK_VERSION=$(jq -r .version <<<"$line")
    log "os-brick driver up ${OSBRICK_STARTUP_S}s after its launch: $line"
}
osbrick_start() { osbrick_launch; osbrick_wait; }

# osbrick_call NAME REQUEST_JSON: one request; the answer goes to $WORK/NAME.osb, its
# wall time to OSB_SECS; OSB_OK is true or false. Fails the scenario only when the driver
# does not answer.
osbrick_call() {
    local name=$1 req=$2 start line
    start=$(now_ns)
    log "os-brick $(jq -r .op <<<"$req") ($name)"
    printf '%s\n' "$(jq -c . <<<"$req")" >&"$OSBRICK_IN" || fail "os-brick driver gone (writing $name)"
    IFS= read -r -t "$OSBRICK_TIMEOUT" line <&"$OSBRICK_OUT" \
        || fail "os-brick driver: no answer to $name within ${OSBRICK_TIMEOUT}s: $(tail -n 5 "$OSBRICK_LOG" | tr '\n' ' ')"
    printf '%s\n' "$line" > "$WORK/$name.osb"
    OSB_SECS=$(secs_since "$start")
    OSB_OK=$(jq -r '.ok' "$WORK/$name.osb")
    {
        echo "=== [$(up)] os-brick $name -> ok=$OSB_OK in ${OSB_SECS}s"
        echo "--- request"; jq -c . <<<"$req"
        echo "--- answer"; jq . "$WORK/$name.osb"
    } >> "$RESULTS/$SCENARIO.attach.log"
    log "os-brick $name -> ok=$OSB_OK in ${OSB_SECS}s$([ "$OSB_OK" = true ] || echo ": $(osbrick_error "$name")")"
}
osbrick_result() { jq -c '.result' "$WORK/$1.osb"; }
# the error of an answer ({"kind", "message"}; older drivers: a string) as "kind: message"
osbrick_error() { jq -r '.error | if type == "object" then "\(.kind): \(.message)" else tostring end' "$WORK/$1.osb"; }

# osbrick_stop: ask the driver to quit (its privsep daemons go with it) and free the unpacked
# tree (tmpfs: guest memory).
osbrick_stop() {
    [ -n "${OSBRICK_IN:-}" ] || return 0
    printf '{"op":"quit"}\n' >&"$OSBRICK_IN" 2>/dev/null
    local line; IFS= read -r -t 30 line <&"$OSBRICK_OUT"
    exec {OSBRICK_IN}>&- 2>/dev/null
    [ -n "${OSBRICK_PID:-}" ] && wait "$OSBRICK_PID" 2>/dev/null
    OSBRICK_IN=""
    rm -rf "$OSBRICK_DIR"
}

# Checks that go on after a failure (the scenario then fails at the end, listing them all):
#   soft DESCRIPTION COMMAND...   runs COMMAND in a subshell (where `fail` only ends the
#                                 subshell); on failure records DESCRIPTION and fail's message.
SOFT_FAILS=()
soft() {
    local desc=$1 msg; shift
    : > "$RES"
    ( _IN_SOFT=1; "$@" ) && return 0
    msg=$(sed -n 's/^message=//p' "$RES" 2>/dev/null)
    : > "$RES"
    soft_fail "$desc${msg:+: $msg}"
    return 1
}
soft_fail() { SOFT_FAILS+=("$*"); log "FAILED (going on): $*"; }
# soft_verdict: fail with every recorded failure, if any.
soft_verdict() {
    [ ${#SOFT_FAILS[@]} = 0 ] && return 0
    local m="${#SOFT_FAILS[@]} check(s) failed:" f
    for f in "${SOFT_FAILS[@]}"; do m="$m [$f]"; done
    SOFT_FAILS=()
    fail "$m"
}

# hostbrick's attachment registry (/run/hostbrick/attachments/<protocol>/*.json).
HOSTBRICK_REGISTRY=${HOSTBRICK_REGISTRY:-/run/hostbrick/attachments}
registry_entries() { find "$HOSTBRICK_REGISTRY" -type f -name '*.json' ! -name '.*' 2>/dev/null | LC_ALL=C sort; }
# check_registry_empty: no entry at all (callers attach one volume at a time)
check_registry_empty() {
    local e out=""
    for e in $(registry_entries); do out="$out ${e#"$HOSTBRICK_REGISTRY"/}=$(tr -d '\n' < "$e" | cut -c1-300)"; done
    [ -z "$out" ] || fail "hostbrick's registry still holds:$out"
}

# ------------------------------------------------------------------ encryption -----
# Encrypted volumes (issue #16): keys in a FileKeyManager directory (--key-dir), Cinder's
# encryption metadata, dm-crypt state, the passphrase watch on /proc/*/cmdline.
KEY_DIR=${KEY_DIR:-$WORK/keys}

# enc_key_new KEY_ID: a 32-byte symmetric key as hex text in $KEY_DIR/KEY_ID (0600, directory
# 0700), as `openssl rand -hex 32` writes it. The passphrase cryptsetup gets (os-brick's
# get_passphrase_from_secret: hexlify) is that same hex text: ENC_PASSPHRASE.
enc_key_new() {
    mkdir -p "$KEY_DIR" && chmod 0700 "$KEY_DIR" || return 1
    ENC_PASSPHRASE=$(head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
    [ ${#ENC_PASSPHRASE} = 64 ] || return 1
    ( umask 077; printf '%s\n' "$ENC_PASSPHRASE" > "$KEY_DIR/$1" )
}
enc_passphrase_of() { tr -d '[:space:]' < "$KEY_DIR/$1"; }

# enc_meta FILE PROVIDER KEY_ID [CIPHER KEY_SIZE]: Cinder's encryption metadata (front-end).
enc_meta() {
    jq -n --arg p "$2" --arg k "$3" --arg c "${4:-}" --arg s "${5:-}" \
        '{provider: $p, control_location: "front-end", encryption_key_id: $k,
          cipher: (if $c == "" then null else $c end),
          key_size: (if $s == "" then null else ($s | tonumber) end)}' > "$1"
}
# enc_conn_with_meta CONN META: the metadata as the connection_info's top-level `encryption`
# key (beside driver_volume_type and data), the other place `attach` reads it from.
enc_conn_with_meta() {
    jq --slurpfile m "$2" '.encryption = $m[0] | .data.encrypted = true' "$1" > "$1.tmp" && mv "$1.tmp" "$1"
}

# attach --key-dir needs ENC-LIB's example flags (issue #16 step 5).
enc_attach_supported() { "$ATTACH" --help 2>&1 | grep -q -- '--key-dir'; }
enc_require_attach() {
    enc_attach_supported || fail "the attach example has no --key-dir option (hostbrick's encryption flags are missing from this build)"
}

# dm-crypt mappings on the host: names (one a line)
crypt_mappings() { dmsetup ls --target crypt 2>/dev/null | awk '$1 != "No" {print $1}'; }
no_crypt_mappings() { [ -z "$(crypt_mappings)" ]; }
check_no_crypt_leftovers() {
    udevadm settle --timeout=10
    wait_until 5 no_crypt_mappings || fail "dm-crypt mappings left behind: $(crypt_mappings | tr '\n' ' ')"
    local n; n=$(ls /dev/mapper 2>/dev/null | grep -v '^control$' | tr '\n' ' ')
    [ -z "$n" ] || fail "/dev/mapper still holds: $n"
}
# crypt_reset: close every dm-crypt mapping (between scenarios, before multipath flushes).
crypt_reset() {
    local n
    for n in $(crypt_mappings); do cryptsetup close "$n" >/dev/null 2>&1 || dmsetup remove --force "$n" >/dev/null 2>&1; done
    return 0
}

# crypt_check_over NAME KDEV TYPE: /dev/mapper/NAME is an open dm-crypt mapping of TYPE
# (LUKS1, LUKS2, PLAIN: its dm uuid) whose one slave is the kernel device KDEV (sdb,
# dm-0, nvme0n1, rbd0), and its dm uuid is CRYPT-TYPE-...; sets CRYPT_DM (dm-N).
crypt_check_over() {
    local name=$1 kdev=$2 type=$3 real slaves uuid st
    [ -b "/dev/mapper/$name" ] || fail "/dev/mapper/$name is not a block device"
    real=$(readlink -f "/dev/mapper/$name"); CRYPT_DM=${real##*/}
    slaves=$(ls "/sys/block/$CRYPT_DM/slaves" 2>/dev/null | tr '\n' ' ')
    [ "$slaves" = "$kdev " ] || fail "mapping $name ($CRYPT_DM) sits on '$slaves', expected $kdev"
    uuid=$(cat "/sys/block/$CRYPT_DM/dm/uuid")
    case $uuid in CRYPT-$type-*|CRYPT-$type) ;; *) fail "mapping $name: dm uuid '$uuid', expected CRYPT-$type-..." ;; esac
    # (cryptsetup status shows the type too, but reads the header through the device's /dev
    # node, which os-brick's encryptor may have replaced with a symlink: "type: n/a")
    st=$(cryptsetup status "$name" 2>&1) || fail "cryptsetup status $name: $st"
}

# raw_plaintext_absent DEV_OR_FILE TAG: TAG's pattern text is nowhere on DEV (read O_DIRECT
# for a block device, so no page cache can hide what is on the target).
raw_has_text() {
    if [ -b "$1" ]; then dd if="$1" bs=1M iflag=direct status=none; else cat "$1"; fi | grep -aqF -- "$2"
}
check_no_plaintext() {
    raw_has_text "$1" "hostbrick $2 block" && fail "$1 holds the plaintext of '$2' (no encryption on the way to the target)"
    return 0
}

# The passphrase watch: a background loop reading every /proc/*/cmdline (bash builtins only,
# no fork per sample) until stopped; records processes whose argv holds PASSPHRASE (or its
# first 16 characters) and how often cryptsetup was seen (proof the sampling caught it).
#   cmdline_watch_start PASSPHRASE; ...attach...; cmdline_watch_stop -> CMDLINE_SAMPLES,
#   CMDLINE_CRYPTSETUP (samples that saw a cryptsetup process), CMDLINE_LEAKS (file, empty: none)
_cmdline_watch() {
    local secret=$1 short=${1:0:16} f a args n=0 seen=0 hit
    : > "$WORK/cmdline.leaks"
    while [ ! -e "$WORK/cmdline.stop" ]; do
        n=$((n + 1)); hit=0
        for f in /proc/[0-9]*/cmdline; do
            mapfile -d '' -t args 2>/dev/null < "$f" || continue
            [ ${#args[@]} = 0 ] && continue
            [[ ${args[0]} == *cryptsetup* ]] && hit=1
            for a in "${args[@]}"; do
                if [[ $a == *"$short"* ]]; then echo "${f%/cmdline}: ${args[*]//$secret/<PASSPHRASE>}" >> "$WORK/cmdline.leaks"; fi
            done
        done
        seen=$((seen + hit))
        echo "$n $seen" > "$WORK/cmdline.count"
    done
}
cmdline_watch_start() {
    rm -f "$WORK/cmdline.stop" "$WORK/cmdline.count"
    _cmdline_watch "$1" & CMDLINE_PID=$!
    wait_until 10 test -s "$WORK/cmdline.count"
}
cmdline_watch_stop() {
    touch "$WORK/cmdline.stop"; wait "$CMDLINE_PID" 2>/dev/null
    read -r CMDLINE_SAMPLES CMDLINE_CRYPTSETUP < "$WORK/cmdline.count"
    CMDLINE_LEAKS=$WORK/cmdline.leaks
    log "cmdline watch: $CMDLINE_SAMPLES samples, cryptsetup seen in $CMDLINE_CRYPTSETUP, leaks: $(wc -l < "$CMDLINE_LEAKS")"
}
# check_cmdline_clean WHAT: the watch saw cryptsetup run and never the passphrase in an argv.
check_cmdline_clean() {
    [ -s "$CMDLINE_LEAKS" ] && fail "$1: the passphrase appeared in a process' command line: $(head -n 3 "$CMDLINE_LEAKS" | tr '\n' ';')"
    [ "${CMDLINE_CRYPTSETUP:-0}" -gt 0 ] || fail "$1: the /proc/*/cmdline watch ($CMDLINE_SAMPLES samples) never saw cryptsetup run: the check proves nothing"
    return 0
}

# check_secret_nowhere WHAT SECRET NAME...: the secret is in no attach output ($WORK/NAME.out /
# .err), not in hostbrick's registry or lock files, in no file under /tmp /run /var/tmp /dev/shm
# but the key directory ($WORK).
check_secret_nowhere() {
    local what=$1 secret=$2 n hits; shift 2
    for n in "$@"; do
        grep -qF -- "$secret" "$WORK/$n.out" "$WORK/$n.err" 2>/dev/null && fail "$what: the passphrase is in the output of attach $n"
    done
    hits=$(secret_files "$secret")
    [ -z "$hits" ] || fail "$what: the passphrase was left in: $hits"
    return 0
}

# One encrypted volume's round trip through `attach` (the scenario sets, per volume):
#   ENC_TAG       a name (logs, files, pattern)       ENC_CONN   connection_info file
#   ENC_PROVIDER  luks | luks2 | plain                ENC_META   metadata file (enc_meta)
#   ENC_FLAGS     array: connect/disconnect flags     ENC_META_ARGS array: (--encryption FILE) or ()
#                 (e.g. --multipath)                  (metadata inside ENC_CONN instead)
#   ENC_KEY_ID    the key's id in $KEY_DIR             ENC_SIZE   the raw volume's size
#   ENC_BACKING   the target's backing file (or empty)
#   enc_raw_check DEV     the scenario's check of the raw device (size, WWID / uuid / image)
#   enc_clean_check WHAT  the scenario's check that nothing of the volume is left
# ENC_TYPE: the dm-crypt type cryptsetup status shows for ENC_PROVIDER.
enc_type() { case $1 in luks) echo LUKS1 ;; luks2) echo LUKS2 ;; plain) echo PLAIN ;; esac; }

# enc_connect NAME [--watch]: attach connect with the key dir; checks the record and the
# mapping; sets ENC_RAW, ENC_NAME, ENC_DEV, ENC_OFFSET (sectors), ENC_HDR_UUID (LUKS).
enc_connect() {
    local name=$1 watch=${2:-} type st cipher keysize
    type=$(enc_type "$ENC_PROVIDER")
    [ -n "$watch" ] && cmdline_watch_start "$(enc_passphrase_of "$ENC_KEY_ID")"
    attach_cmd "$name" connect "${ENC_FLAGS[@]}" --key-dir "$KEY_DIR" "${ENC_META_ARGS[@]}" "$ENC_CONN"
    [ -n "$watch" ] && cmdline_watch_stop
    [ "$ATTACH_RC" = 0 ] || fail "$ENC_TAG: attach connect failed (rc=$ATTACH_RC): $(attach_stderr_summary "$name")"
    jq -e -s 'length == 1 and (.[0] | type == "object")' "$WORK/$name.out" >/dev/null \
        || fail "$ENC_TAG: connect stdout is not exactly one JSON object: $(head -c 300 "$WORK/$name.out")"
    cp "$WORK/$name.out" "$WORK/$name.json"
    log "$ENC_TAG: device record: $(jq -c . "$WORK/$name.json")"
    [ -n "$watch" ] && check_cmdline_clean "$ENC_TAG: connect"
    ENC_RAW=$(record_field "$name" path)
    ENC_NAME=$(jq -r '.encryption.name // empty' "$WORK/$name.json")
    ENC_DEV=$(jq -r '.encryption.device // empty' "$WORK/$name.json")
    [ -n "$ENC_NAME" ] && [ -n "$ENC_DEV" ] || fail "$ENC_TAG: the record has no encryption name/device: $(jq -c .encryption "$WORK/$name.json")"
    [ "$(jq -r '.encryption.provider' "$WORK/$name.json")" = "$ENC_PROVIDER" ] \
        || fail "$ENC_TAG: record encryption.provider '$(jq -r '.encryption.provider' "$WORK/$name.json")', expected $ENC_PROVIDER"
    [ "$ENC_DEV" = "/dev/mapper/$ENC_NAME" ] || fail "$ENC_TAG: encryption.device '$ENC_DEV' is not /dev/mapper/$ENC_NAME"
    [ "$(readlink -f "$ENC_RAW")" != "$(readlink -f "$ENC_DEV")" ] || fail "$ENC_TAG: record path $ENC_RAW is the decrypted device"
    [ "$(readlink -f "$(jq -r '.encryption.raw // empty' "$WORK/$name.json")")" = "$(readlink -f "$ENC_RAW")" ] \
        || fail "$ENC_TAG: encryption.raw '$(jq -r '.encryption.raw // empty' "$WORK/$name.json")' is not the record path's device $(readlink -f "$ENC_RAW")"
    enc_raw_check "$ENC_RAW"
    crypt_check_over "$ENC_NAME" "$(basename "$(readlink -f "$ENC_RAW")")" "$type"
    st=$(cryptsetup status "$ENC_NAME")
    ENC_OFFSET=$(awk '$1 == "offset:" {print $2}' <<<"$st")
    cipher=$(awk '$1 == "cipher:" {print $2}' <<<"$st"); keysize=$(awk '$1 == "keysize:" {print $2}' <<<"$st")
    case $ENC_PROVIDER in
        plain) [ "$ENC_OFFSET" = 0 ] || fail "$ENC_TAG: plain mapping at offset $ENC_OFFSET" ;;
        *)     [ "${ENC_OFFSET:-0}" -gt 0 ] || fail "$ENC_TAG: LUKS mapping at offset '$ENC_OFFSET'" ;;
    esac
    local want_cipher want_size
    want_cipher=$(jq -r '.cipher // empty' "$ENC_META"); want_size=$(jq -r '.key_size // empty' "$ENC_META")
    [ -z "$want_cipher" ] || [ "$cipher" = "$want_cipher" ] || fail "$ENC_TAG: cipher $cipher, the metadata asks for $want_cipher"
    [ -z "$want_size" ] || [ "$keysize" = "$want_size" ] || fail "$ENC_TAG: key size $keysize bits, the metadata asks for $want_size"
    enc_size_check
    ENC_HDR_UUID=""
    if [ "$ENC_PROVIDER" != plain ]; then
        ENC_HDR_UUID=$(cryptsetup luksUUID "$ENC_RAW") || fail "$ENC_TAG: cryptsetup luksUUID $ENC_RAW failed"
        cryptsetup luksDump "$ENC_RAW" | grep -qE "^Version:[[:space:]]+$([ "$ENC_PROVIDER" = luks ] && echo 1 || echo 2)\$" \
            || fail "$ENC_TAG: luksDump shows $(cryptsetup luksDump "$ENC_RAW" | grep -m1 '^Version'), expected the $ENC_PROVIDER format"
    fi
    check_secret_nowhere "$ENC_TAG: connect" "$(enc_passphrase_of "$ENC_KEY_ID")" "$name"
    log "$ENC_TAG: $ENC_DEV ($CRYPT_DM, $type $cipher $keysize bits, offset $ENC_OFFSET) over $ENC_RAW ($(readlink -f "$ENC_RAW"))"
}
# enc_size_check: the decrypted device is the raw device less the header (status offset).
enc_size_check() {
    local raw dec
    raw=$(blockdev --getsize64 "$(readlink -f "$ENC_RAW")"); dec=$(blockdev --getsize64 "$ENC_DEV")
    [ "$dec" = $(( raw - ENC_OFFSET * 512 )) ] || fail "$ENC_TAG: decrypted size $dec, raw $raw less offset $ENC_OFFSET sectors"
    ENC_DEC_SIZE=$dec
}

# enc_disconnect NAME: attach disconnect with the record of connect NAME (no key), then the
# mapping and the volume are gone.
enc_disconnect() {
    local name=$1 dm=$CRYPT_DM
    attach_cmd "$name-disconnect" disconnect "${ENC_FLAGS[@]}" "$ENC_CONN" "$WORK/$name.json"
    [ "$ATTACH_RC" = 0 ] || fail "$ENC_TAG: attach disconnect failed (rc=$ATTACH_RC): $(attach_stderr_summary "$name-disconnect")"
    DISCONNECT_S=$ATTACH_SECS
    check_gone "$ENC_DEV" "/dev/$dm"
    check_no_crypt_leftovers
    enc_clean_check "$ENC_TAG: after disconnect"
    check_registry_empty
}

# enc_round_trip: first attach (formats a LUKS volume; watched for the passphrase in argv),
# data through the decrypted device, none of it on the raw device or the target, detach;
# ENC_WRONG=1: then a wrong key fails with nothing left; attach again: the same header
# (no second format), the data reads back; ENC_EXTEND=NEW_SIZE (with enc_grow NEW_SIZE
# defined): grow the target, `attach extend`, the decrypted device grows (a failed extend is
# a soft failure: the scenario calls soft_verdict at its end); detach.
# Times in ENC_TIMES.
enc_round_trip() {
    local t_first t_second t_disc hdr
    log "---- $ENC_TAG"
    enc_connect "$ENC_TAG-1" --watch
    t_first=$ATTACH_SECS
    check_io "$ENC_DEV" "$ENC_TAG"
    raw_has_text "$ENC_DEV" "hostbrick $ENC_TAG block" || fail "$ENC_TAG: control: the pattern is not found on the decrypted device"
    check_no_plaintext "$ENC_RAW" "$ENC_TAG"
    hdr=$ENC_HDR_UUID
    enc_disconnect "$ENC_TAG-1"
    t_disc=$ATTACH_SECS
    [ -n "$ENC_BACKING" ] && check_no_plaintext "$ENC_BACKING" "$ENC_TAG"

    if [ "${ENC_WRONG:-0}" = 1 ]; then enc_wrong_key; fi

    enc_connect "$ENC_TAG-2"
    t_second=$ATTACH_SECS
    [ "$ENC_HDR_UUID" = "$hdr" ] || fail "$ENC_TAG: the second attach shows LUKS header '$ENC_HDR_UUID', the first '$hdr' (formatted again?)"
    read_pattern "$ENC_DEV" "$ENC_TAG" || fail "$ENC_TAG: the data written before the detach did not read back through $ENC_DEV"
    if [ -n "${ENC_EXTEND:-}" ]; then enc_extend "$ENC_EXTEND"; fi
    enc_disconnect "$ENC_TAG-2"
    ENC_TIMES+=("$ENC_TAG: first connect ${t_first}s, again ${t_second}s, disconnect ${t_disc}s")
    bench_line encryption "$ENC_TAG first attach (format)" 1 "$t_first" "$t_disc" - "$(enc_type "$ENC_PROVIDER")"
    bench_line encryption "$ENC_TAG attach (open)" 1 "$t_second" "$DISCONNECT_S" - "$(enc_type "$ENC_PROVIDER")"
}

# enc_wrong_key: the same volume's metadata naming another key: error[wrong_key], nothing
# left, the header untouched.
enc_wrong_key() {
    local meta=$WORK/meta-$ENC_TAG-wrong.json before after
    enc_key_new "$ENC_KEY_ID-wrong" || fail "key"
    jq --arg k "$ENC_KEY_ID-wrong" '.encryption_key_id = $k' "$ENC_META" > "$meta"
    before=$(enc_header_sum)
    attach_cmd "$ENC_TAG-wrong" connect "${ENC_FLAGS[@]}" --key-dir "$KEY_DIR" --encryption "$meta" "$ENC_CONN"
    expect_error "$ENC_TAG-wrong" wrong_key
    note "$ENC_TAG: wrong key refused in ${ATTACH_SECS}s"
    check_no_crypt_leftovers
    enc_clean_check "$ENC_TAG: after the wrong key"
    check_registry_empty
    check_secret_nowhere "$ENC_TAG: wrong key" "$(enc_passphrase_of "$ENC_KEY_ID-wrong")" "$ENC_TAG-wrong"
    after=$(enc_header_sum)
    [ "$before" = "$after" ] || fail "$ENC_TAG: the volume's first 32 MiB changed in the failed attach with the wrong key"
}
# the sha256 of the first 32 MiB of the target's backing file (the header and more)
enc_header_sum() { [ -n "$ENC_BACKING" ] && head -c $((32 * 1024 * 1024)) "$ENC_BACKING" | sha256sum | cut -c1-16; }

# enc_extend NEW_RAW_SIZE: grow the target (the scenario's enc_grow), `attach extend` with the
# key (watched for the passphrase in argv), printed size = the decrypted device's = new raw
# size less the header; the data reads back; the last MiB is writable.
enc_extend() {
    local new=$1 got
    enc_grow "$new" || fail "$ENC_TAG: growing the volume on the target failed"
    cmdline_watch_start "$(enc_passphrase_of "$ENC_KEY_ID")"
    attach_cmd "$ENC_TAG-extend" extend "${ENC_FLAGS[@]}" --key-dir "$KEY_DIR" "${ENC_META_ARGS[@]}" "$ENC_CONN"
    cmdline_watch_stop
    # a failed extend is recorded and the scenario goes on (the volume is still attached, at
    # its old decrypted size); the verdict lists it
    if [ "$ATTACH_RC" != 0 ]; then
        soft_fail "$ENC_TAG: attach extend failed (rc=$ATTACH_RC): $(attach_stderr_summary "$ENC_TAG-extend")"
        return 0
    fi
    [ -s "$CMDLINE_LEAKS" ] && fail "$ENC_TAG: extend: the passphrase appeared in a command line: $(head -n 3 "$CMDLINE_LEAKS" | tr '\n' ';')"
    [ "${CMDLINE_CRYPTSETUP:-0}" -gt 0 ] || note "$ENC_TAG: the cmdline watch did not see extend's cryptsetup resize ($CMDLINE_SAMPLES samples)"
    got=$(tr -d '[:space:]' < "$WORK/$ENC_TAG-extend.out")
    [ "$(blockdev --getsize64 "$(readlink -f "$ENC_RAW")")" = "$new" ] || fail "$ENC_TAG: raw device size $(blockdev --getsize64 "$(readlink -f "$ENC_RAW")") after extend, expected $new"
    enc_size_check
    [ "$got" = "$ENC_DEC_SIZE" ] || fail "$ENC_TAG: attach extend printed '$got', the decrypted device has $ENC_DEC_SIZE"
    [ "$got" = $(( new - ENC_OFFSET * 512 )) ] || fail "$ENC_TAG: extend printed $got, expected $(( new - ENC_OFFSET * 512 ))"
    note "$ENC_TAG: extend ${ATTACH_SECS}s to $got bytes decrypted"
    read_pattern "$ENC_DEV" "$ENC_TAG" || fail "$ENC_TAG: data unreadable after extend"
    dd if=/dev/zero of="$ENC_DEV" bs=1M seek=$(( got / 1048576 - 1 )) count=1 oflag=direct status=none \
        || fail "$ENC_TAG: cannot write the last MiB of the extended decrypted device"
    check_secret_nowhere "$ENC_TAG: extend" "$(enc_passphrase_of "$ENC_KEY_ID")" "$ENC_TAG-extend"
}
