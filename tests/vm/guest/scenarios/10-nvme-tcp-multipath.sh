#!/bin/bash
# NVMe/TCP native multipath: one subsystem through two portals (127.0.0.1:4420, 127.0.0.2:4420).
# The connector connects both (one controller per portal) and returns the one namespace head.
# One portal then goes away on the target under a checked writer: I/O continues through the other
# with no error, and disconnect removes
# both controllers, including the one that is reconnecting.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

NQN=nqn.2014-08.org.hostbrick:mpath
UUID=3c9d2e4f-6a7b-4c8d-9e0f-a10000000001 NGUID=3c9d2e4f-6a7b-4c8d-9e0f-a10000000001
SIZE=$((80 * 1024 * 1024))
[ "$(cat /sys/module/nvme_core/parameters/multipath)" = Y ] || fail "nvme_core multipath is off in this kernel"
check "namespace" nvmet_namespace $NQN 1 $SIZE $UUID $NGUID
check "port 1" nvmet_port 1 127.0.0.1 4420
check "port 2" nvmet_port 2 127.0.0.2 4420
check "export 1" nvmet_export $NQN 1
check "export 2" nvmet_export $NQN 2

kernel_floor_nvme 127.0.0.1 4420 $NQN $UUID || fail "kernel floor measurement failed"

conn_nvme "$WORK/conn.json" $NQN 127.0.0.1 4420 $UUID 1 "${NGUID//-/}" "$(new_uuid)" \
    '.portals += [["127.0.0.2", "4420", "tcp"]]'
connect vol "$WORK/conn.json"
log "$(nvme_state)"
# Both portals are up and the kernel needs well under a second per path (floor); a connect that
# takes longer is waiting for something that does not come (a hidden path disk emits no uevent).
[ "${CONNECT_S%%.*}" -lt 30 ] || fail "connect took ${CONNECT_S}s with both portals up (kernel floor ${FLOOR_S}s)"
check_record_nvme vol
DEV=$(record_field vol path)
REAL=$(readlink -f "$DEV")
check_nvme_device "$DEV" $SIZE $UUID
CTRLS=$(nvme_ctrls_for $NQN)
[ "$(echo $CTRLS | wc -w)" = 2 ] || fail "controllers for $NQN: '$CTRLS' (expected one per portal)"
for c in $CTRLS; do
    [ "$(cat /sys/class/nvme/$c/state)" = live ] || fail "controller $c is $(cat /sys/class/nvme/$c/state)"
done
N=$(jq '.nvme_paths | length' "$WORK/vol.json" 2>/dev/null)
[ "$N" = 2 ] || note "record lists ${N:-no} nvme_paths (2 portals up)"
check_io "$DEV" mpath

# The 127.0.0.1 portal goes away under a checked writer (lib.sh io_writer_*): nvmet drops its
# controller, the host keeps reconnecting it, and the writer goes on through the other path
# with no error.
check "the writer's first round" io_writer_start "$DEV" writer
t_down=$(now_ns)
rm -f "$NVMET/ports/1/subsystems/$NQN" || fail "cannot unexport $NQN from port 1"
C1=""; for c in $CTRLS; do case $(cat /sys/class/nvme/$c/address) in traddr=127.0.0.1,*) C1=$c ;; esac; done
wait_until 20 eval '[ "$(cat /sys/class/nvme/'"$C1"'/state 2>/dev/null)" != live ]' \
    || note "controller $C1 still live 20s after its portal went away"
log "after losing portal 1: $C1 $(cat /sys/class/nvme/$C1/state 2>&1); $(nvme_state)"
r=$(io_writer_rounds writer)
wait_until 60 io_writer_past writer $((r + 2)) || fail "the writer made no progress through the remaining path"
ONE_PATH_S=$(secs_since "$t_down")
io_writer_stop writer || fail "the writer saw an error when a path went away: $IO_WRITER_ERROR"
note "one of two paths lost under I/O: 2 more rounds verified within ${ONE_PATH_S}s, $IO_WRITER_ROUNDS in all, no error"
bench_line fault "NVMe/TCP native multipath, a path lost under I/O" 1 "$CONNECT_S" - - "I/O on within ${ONE_PATH_S}s, $IO_WRITER_ROUNDS rounds verified"
read_pattern "$DEV" mpath || fail "data unreadable through the remaining path"
check_io "$DEV" mpath-one-path

disconnect vol "$WORK/conn.json"
log "$(nvme_state)"
check_gone "$DEV" "$REAL"
check_no_nvme_leftovers
scenario_pass
