#!/bin/bash
# Ceph RBD (one-node cluster on loopback, cephx user client.cinder, keyring passed inline as in
# Cinder's connection_info):
#   kernel rbd: connect -> /dev/rbdN of the image's size, I/O that `rbd export` sees, a second
#   connect returns the same device (no second mapping), extend after `rbd resize`, disconnect
#   -> nothing mapped;
#   rbd-nbd (--rbd-nbd): connect -> /dev/nbdN, I/O, idempotent, extend, disconnect -> no daemon left;
#   wrong key -> error[authentication_failed] and nothing mapped (both mappers);
#   --no-local-attach -> a network record (no key in it), nothing mapped; its disconnect is a no-op;
#   an image name with `..` -> error[invalid_connection_info], nothing mapped.
# The cephx key must not be left in a file once disconnect returns.
# Kernel floor: raw `rbd map` -> /dev/rbdN node (rbd-nbd's floor is noted).
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

POOL=volumes
SPEC1=$POOL/vol1 SPEC2=$POOL/vol2
SIZE1=$((64 * 1024 * 1024)) SIZE1_NEW=$((128 * 1024 * 1024)) SIZE2=$((48 * 1024 * 1024))

t0=$(now_ns)
ceph_one_node_up $POOL > "$WORK/ceph-up.log" 2>&1 \
    || fail "one-node Ceph did not come up: $(tail -n 5 "$WORK/ceph-up.log" | tr '\n' ' ')"
log "ceph up in $(secs_since "$t0")s"
modprobe -a rbd nbd || fail "modprobe rbd nbd failed"
KEY=$(ceph_user_key cinder $POOL) || fail "creating client.cinder failed"
[ -n "$KEY" ] || fail "no key for client.cinder"
keyring_text cinder "$KEY" > "$WORK/cinder.keyring"
check "rbd create $SPEC1" timeout 60 rbd create $SPEC1 --size $((SIZE1 / 1024 / 1024))M
check "rbd create $SPEC2" timeout 60 rbd create $SPEC2 --size $((SIZE2 / 1024 / 1024))M
BADKEY=$(ceph-authtool --gen-print-key) || fail "ceph-authtool --gen-print-key failed"

kernel_floor_rbd $SPEC1 cinder "$WORK/cinder.keyring" || fail "kernel floor measurement failed"
NBD_FLOOR=$(kernel_floor_nbd $SPEC2 cinder "$WORK/cinder.keyring") || fail "rbd-nbd floor measurement failed"
note "rbd-nbd floor ${NBD_FLOOR}s"
check_no_rbd_leftovers

conn_rbd "$WORK/conn1.json" $SPEC1 cinder "$KEY" "$(new_uuid)"
conn_rbd "$WORK/conn2.json" $SPEC2 cinder "$KEY" "$(new_uuid)"
conn_rbd "$WORK/conn-bad.json" $SPEC1 cinder "$BADKEY" "$(new_uuid)"

# rbd export of SPEC at the pattern's place (4 KiB blocks 256..319) equals TAG's pattern
export_matches() {
    timeout 120 rbd export "$1" - --conf /dev/null --id cinder --keyring "$WORK/cinder.keyring" -m "$CEPH_MON" 2>/dev/null \
        | dd of="$WORK/export-$2" bs=4096 skip=256 count=64 iflag=fullblock status=none \
        && cmp -s "$WORK/pattern-$2" "$WORK/export-$2"
}
# dev_size_is DEV BYTES
dev_size_is() { [ "$(blockdev --getsize64 "$1" 2>/dev/null)" = "$2" ]; }

# ---------------------------------------------------------------- kernel rbd -----
connect k1 "$WORK/conn1.json"
KRBD_CONNECT=$CONNECT_S
log "$(rbd_state)"
[ "$(record_field k1 type)" = block ] || fail "record k1: type '$(record_field k1 type)', expected 'block': $(jq -c . "$WORK/k1.json")"
DEV1=$(record_field k1 path)
check_rbd_device "$DEV1" $SIZE1 $SPEC1
[ "$(rbd_krbd_count)" = 1 ] || fail "after connect: $(rbd_krbd_mapped)"
# while mapped, the connector's temporary keyring should be gone too (only noted)
LEFT=$(secret_files "$KEY"); [ -z "$LEFT" ] || note "while mapped, the cephx key is in: $LEFT"
check_io "$DEV1" krbd
export_matches $SPEC1 krbd || fail "data written to $DEV1 is not what rbd export reads from $SPEC1"

connect k1again "$WORK/conn1.json"
note "second connect ${ATTACH_SECS}s"
[ "$(readlink -f "$(record_field k1again path)")" = "$(readlink -f "$DEV1")" ] \
    || fail "second connect of $SPEC1 returned $(record_field k1again path), first $DEV1"
[ "$(rbd_krbd_count)" = 1 ] || fail "second connect mapped the image again: $(rbd_krbd_mapped)"
read_pattern "$DEV1" krbd || fail "data unreadable after the second connect"

# extend: Cinder resizes the image; the mapped device follows by itself, extend reports it
check "rbd resize" timeout 60 rbd resize --size $((SIZE1_NEW / 1024 / 1024))M $SPEC1 --conf /dev/null \
    --id cinder --keyring "$WORK/cinder.keyring" -m "$CEPH_MON"
t0=$(now_ns)
wait_until 30 dev_size_is "$DEV1" $SIZE1_NEW || note "$DEV1 did not follow the resize by itself within 30s"
note "device followed rbd resize after $(secs_since "$t0")s"
attach_ok extend1 extend "$WORK/conn1.json"
got=$(tr -d '[:space:]' < "$WORK/extend1.out")
[ "$got" = $SIZE1_NEW ] || fail "extend printed '$got', expected $SIZE1_NEW"
dev_size_is "$DEV1" $SIZE1_NEW || fail "$DEV1 size $(blockdev --getsize64 "$DEV1") after extend, expected $SIZE1_NEW"
read_pattern "$DEV1" krbd || fail "data unreadable after extend"

disconnect k1 "$WORK/conn1.json"
KRBD_DISCONNECT=$DISCONNECT_S
check_gone "$DEV1" "/dev/rbd/$SPEC1"
check_no_rbd_leftovers
check_secret_not_left "$KEY"

# ---------------------------------------------------------------- rbd-nbd -----
connect n1 "$WORK/conn2.json" --rbd-nbd
NBD_CONNECT=$ATTACH_SECS
log "$(rbd_state)"
[ "$(record_field n1 type)" = block ] || fail "record n1: type '$(record_field n1 type)', expected 'block': $(jq -c . "$WORK/n1.json")"
DEV2=$(record_field n1 path)
check_nbd_device "$DEV2" $SIZE2 $SPEC2
[ "$(rbd_krbd_count)" = 0 ] || fail "--rbd-nbd connect made a krbd mapping: $(rbd_krbd_mapped)"
check_io "$DEV2" nbd
export_matches $SPEC2 nbd || fail "data written to $DEV2 is not what rbd export reads from $SPEC2"

connect n1again "$WORK/conn2.json" --rbd-nbd
[ "$(readlink -f "$(record_field n1again path)")" = "$(readlink -f "$DEV2")" ] \
    || fail "second --rbd-nbd connect of $SPEC2 returned $(record_field n1again path), first $DEV2"
[ "$(rbd_nbd_count)" = 1 ] || fail "second --rbd-nbd connect mapped the image again: $(rbd_nbd_mapped)"

# extend through rbd-nbd (rbd-nbd resizes the nbd device itself)
SIZE2_NEW=$((96 * 1024 * 1024))
check "rbd resize $SPEC2" timeout 60 rbd resize --size $((SIZE2_NEW / 1024 / 1024))M $SPEC2 --conf /dev/null \
    --id cinder --keyring "$WORK/cinder.keyring" -m "$CEPH_MON"
t0=$(now_ns)
wait_until 30 dev_size_is "$DEV2" $SIZE2_NEW || note "$DEV2 did not follow the resize by itself within 30s"
note "nbd device followed rbd resize after $(secs_since "$t0")s"
attach_ok extend2 extend --rbd-nbd "$WORK/conn2.json"
got=$(tr -d '[:space:]' < "$WORK/extend2.out")
[ "$got" = $SIZE2_NEW ] || fail "extend --rbd-nbd printed '$got', expected $SIZE2_NEW"
dev_size_is "$DEV2" $SIZE2_NEW || fail "$DEV2 size $(blockdev --getsize64 "$DEV2") after extend, expected $SIZE2_NEW"
read_pattern "$DEV2" nbd || fail "data unreadable on $DEV2 after the resize"

disconnect n1 "$WORK/conn2.json"
NBD_DISCONNECT=$DISCONNECT_S
note "rbd-nbd connect ${NBD_CONNECT}s, disconnect ${NBD_DISCONNECT}s"
check_no_rbd_leftovers
check_secret_not_left "$KEY"

# ---------------------------------------------------------------- errors -----
attach_cmd badkey connect "$WORK/conn-bad.json"
expect_error badkey authentication_failed
check_no_rbd_leftovers
attach_cmd badkey-nbd connect --rbd-nbd "$WORK/conn-bad.json"
expect_error badkey-nbd authentication_failed
check_no_rbd_leftovers
check_secret_not_left "$BADKEY"
# An image name that climbs out of its pool (`..`): refused before anything runs.
for name in "$POOL/../sda" "$POOL/..";  do
    conn_rbd "$WORK/conn-dotdot.json" "$name" cinder "$KEY" "$(new_uuid)"
    attach_cmd dotdot connect "$WORK/conn-dotdot.json"
    expect_error dotdot invalid_connection_info
    check_no_rbd_leftovers
done

# ---------------------------------------------------------------- no local attach -----
attach_ok net connect --no-local-attach "$WORK/conn1.json"
jq -e -s 'length == 1' "$WORK/net.out" >/dev/null || fail "--no-local-attach stdout is not one JSON object: $(head -c 300 "$WORK/net.out")"
log "network record: $(jq -c . "$WORK/net.out")"
# DeviceRecord: type/protocol on top, what the hypervisor opens under .network
jq -e --arg n $SPEC1 --arg h "${CEPH_MON%:*}" --arg p "${CEPH_MON##*:}" \
    '.type == "network" and .protocol == "rbd" and .network.protocol == "rbd" and .network.name == $n
     and .network.hosts == [$h] and .network.ports == [$p] and .network.auth_username == "cinder"' \
    "$WORK/net.out" >/dev/null || fail "unexpected network record: $(jq -c . "$WORK/net.out")"
grep -qF -- "$KEY" "$WORK/net.out" && fail "the network record contains the cephx key"
check_no_rbd_leftovers
cp "$WORK/net.out" "$WORK/net.json"
disconnect net "$WORK/conn1.json"
check_no_rbd_leftovers

CONNECT_S=$KRBD_CONNECT
DISCONNECT_S=$KRBD_DISCONNECT
ceph_teardown
scenario_pass
