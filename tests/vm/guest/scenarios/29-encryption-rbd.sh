#!/bin/bash
# vm-timeout: 900
# Encrypted volumes over kernel rbd (issue #16): LUKS1, LUKS2 and plain dm-crypt on three
# images of the one-node cluster, through `attach --key-dir` with Cinder's rbd connection_info
# (keyring inline): first attach formats (LUKS), the mapping sits on the record's /dev/rbdN,
# data through it reads back and is not on the raw device nor in `rbd export` of the image;
# detach leaves no mapping and no rbd mapping; attach again: same header, the data reads back.
# A wrong key (LUKS1): error[wrong_key], no dm-crypt or rbd mapping left. /proc/*/cmdline
# sampled during each first attach never shows the passphrase; it is in no output or file.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"
T0=$(now_ns)
enc_require_attach
modprobe -a dm_crypt rbd || fail "modprobe dm_crypt rbd failed"

POOL=volumes
SIZE=$((64 * 1024 * 1024))
ENC_TIMES=()
t0=$(now_ns)
ceph_one_node_up $POOL > "$WORK/ceph-up.log" 2>&1 \
    || fail "one-node Ceph did not come up: $(tail -n 5 "$WORK/ceph-up.log" | tr '\n' ' ')"
note "ceph up in $(secs_since "$t0")s"
CKEY=$(ceph_user_key cinder $POOL) || fail "creating client.cinder failed"
keyring_text cinder "$CKEY" > "$WORK/cinder.keyring"
for p in luks luks2 plain; do
    check "rbd create $POOL/enc-$p" timeout 60 rbd create "$POOL/enc-$p" --size $((SIZE / 1024 / 1024))M
done

use_rbd() {
    local p=$1
    ENC_TAG=rbd-$p ENC_PROVIDER=$p ENC_KEY_ID=$(new_uuid) ENC_SIZE=$SIZE ENC_SPEC=$POOL/enc-$p ENC_BACKING=""
    ENC_CONN=$WORK/conn-$ENC_TAG.json ENC_META=$WORK/meta-$ENC_TAG.json ENC_FLAGS=()
    conn_rbd "$ENC_CONN" "$ENC_SPEC" cinder "$CKEY" "$(new_uuid)"
    check "key" enc_key_new "$ENC_KEY_ID"
    case $p in
        luks) enc_meta "$ENC_META" luks "$ENC_KEY_ID" aes-xts-plain64 256 ;;
        *)    enc_meta "$ENC_META" "$p" "$ENC_KEY_ID" ;;
    esac
    ENC_META_ARGS=(--encryption "$ENC_META")
}
enc_raw_check() { check_rbd_device "$1" $SIZE "$ENC_SPEC"; }
enc_clean_check() { check_no_rbd_leftovers; }
# what the cluster holds: rbd export of the image has no plaintext
export_has_no_plaintext() {
    timeout 120 rbd export "$ENC_SPEC" "$WORK/export.img" --conf /dev/null --id cinder \
        --keyring "$WORK/cinder.keyring" -m "$CEPH_MON" >/dev/null 2>&1 || fail "$ENC_TAG: rbd export failed"
    check_no_plaintext "$WORK/export.img" "$ENC_TAG"
    rm -f "$WORK/export.img"
}

use_rbd luks;  ENC_WRONG=1 enc_round_trip; export_has_no_plaintext
use_rbd luks2; ENC_WRONG=0 enc_round_trip; export_has_no_plaintext
use_rbd plain; ENC_WRONG=0 enc_round_trip; export_has_no_plaintext
check_secret_not_left "$CKEY"
check_audit_empty audit-end
ceph_teardown
note "$(IFS=';'; echo "${ENC_TIMES[*]}")"
note "scenario $(secs_since "$T0")s"
soft_verdict
scenario_pass "LUKS1, LUKS2, plain over kernel rbd: format, data, no plaintext in the cluster, reattach, wrong key, no passphrase in argv"
