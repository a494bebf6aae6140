#!/bin/bash
# vm-timeout: 900
# Encrypted volumes through `attach --key-dir` (issue #16), LUKS1, LUKS2 and plain dm-crypt over
# an iSCSI LUN (two portals, --multipath: the guest's multipathd holds every SCSI disk, so a
# dm-crypt mapping can only sit on the map) and over an NVMe/TCP namespace, one volume each:
#   first attach formats (LUKS; plain has no header), the record's encryption.device is
#   /dev/mapper/NAME, a dm-crypt mapping of the provider's type whose one slave is the record's
#   raw path, the cipher/key size the metadata asks for, the decrypted size = raw less the
#   header; a pattern written through it reads back and is neither on the raw device nor on the
#   target's backing file; detach leaves no mapping, session, map, disk, controller or registry
#   entry; attach again: the same LUKS header (no second format) and the data reads back.
#   Metadata from the connection_info's `encryption` key (iSCSI LUKS1) or --encryption FILE.
#   A wrong key (iSCSI LUKS2, NVMe LUKS1): error[wrong_key], nothing left, the header untouched.
#   Extend (iSCSI LUKS1 over multipath, NVMe LUKS2): the target grows, `attach extend` prints the
#   new decrypted size, which the mapping has; the data reads back.
#   A LUN with an ext4 filesystem: error[device_has_signature], its bytes unchanged, nothing left.
#   /proc/*/cmdline, sampled in a loop during each first attach and each extend, never shows the
#   passphrase (and the loop saw cryptsetup run; a control process with a passphrase in its
#   argv is caught first); the passphrase is in no output, record,
#   registry or file outside the key directory.
#   Single path without --multipath while multipathd holds the disk: outcome noted.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"
T0=$(now_ns)
enc_require_attach
modprobe dm_crypt || fail "modprobe dm_crypt failed"

P1=127.0.0.1:3260 P2=127.0.0.2:3260
SIZE=$((64 * 1024 * 1024)) NEW_SIZE=$((96 * 1024 * 1024))
IQN_BASE=iqn.2003-01.org.linux-iscsi.hostbrick:enc
NQN_BASE=nqn.2014-08.org.hostbrick:enc
ENC_TIMES=()

# Control of the passphrase watch: a process with a made-up passphrase in its argv is caught
# (two commands, so that bash does not exec sleep in its place).
check "key" enc_key_new control
cmdline_watch_start "$ENC_PASSPHRASE"
bash -c 'sleep 0.5; true' cryptsetup-control "x${ENC_PASSPHRASE}x"
cmdline_watch_stop
[ -s "$CMDLINE_LEAKS" ] || fail "control: the /proc/*/cmdline watch missed a process with the passphrase in its argv ($CMDLINE_SAMPLES samples)"
grep -qF "$ENC_PASSPHRASE" "$CMDLINE_LEAKS" && fail "control: the watch's report holds the passphrase itself"

# ------------------------------------------------------------ iSCSI -----
iscsi_serial() { case $1 in luks) echo e0c0000000000000000000000000001 ;; luks2) echo e0c0000000000000000000000000002 ;; plain) echo e0c0000000000000000000000000003 ;; sig) echo e0c0000000000000000000000000004 ;; esac; }
for p in luks luks2 plain sig; do
    check "LIO target $p" lio_simple_target "$IQN_BASE-$p" "enc$p" $SIZE "$(iscsi_serial $p)" $P1 $P2
done

use_iscsi() {
    local p=$1
    ENC_TAG=iscsi-$p ENC_PROVIDER=${p/sig/luks} ENC_KEY_ID=$(new_uuid) ENC_SIZE=$SIZE
    ENC_IQN=$IQN_BASE-$p ENC_WWID=$(lio_expected_wwid "$(iscsi_serial $p)") ENC_BACKING=$(lio_backstore_file "enc$p")
    ENC_CONN=$WORK/conn-$ENC_TAG.json ENC_META=$WORK/meta-$ENC_TAG.json ENC_FLAGS=(--multipath)
    conn_iscsi "$ENC_CONN" $P1 "$ENC_IQN" 0 "$(new_uuid)" \
        ".target_portals=[\"$P1\",\"$P2\"] | .target_iqns=[\"$ENC_IQN\",\"$ENC_IQN\"] | .target_luns=[0,0]"
    check "key" enc_key_new "$ENC_KEY_ID"
    case $p in
        luks)  enc_meta "$ENC_META" luks "$ENC_KEY_ID" aes-xts-plain64 256
               enc_conn_with_meta "$ENC_CONN" "$ENC_META"; ENC_META_ARGS=() ;;
        luks2) enc_meta "$ENC_META" luks2 "$ENC_KEY_ID"; ENC_META_ARGS=(--encryption "$ENC_META") ;;
        *)     enc_meta "$ENC_META" "$ENC_PROVIDER" "$ENC_KEY_ID" aes-xts-plain64 256; ENC_META_ARGS=(--encryption "$ENC_META") ;;
    esac
}
enc_raw_check() {
    local real; real=$(readlink -f "$1")
    case $ENC_TAG in
        iscsi-*) check_block_device "$1" "$(blockdev --getsize64 "$real")" "$ENC_WWID"
                 case $real in /dev/dm-*) ;; *) fail "$ENC_TAG: raw path $1 ($real) is not the multipath map" ;; esac
                 [ "$(ls "/sys/block/${real##*/}/slaves" | wc -l)" = 2 ] || fail "$ENC_TAG: map ${real##*/} has paths '$(ls "/sys/block/${real##*/}/slaves" | tr '\n' ' ')', expected 2" ;;
        nvme-*)  check_nvme_device "$1" "$(blockdev --getsize64 "$real")" "$ENC_UUID" ;;
    esac
}
enc_clean_check() {
    case $ENC_TAG in
        iscsi-*) check_no_dm_map "$ENC_WWID"; check_no_iscsi_leftovers "$ENC_IQN"; check_no_scsi_disks ;;
        nvme-*)  check_no_nvme_leftovers ;;
    esac
}
enc_grow() {
    case $ENC_TAG in
        iscsi-*) lio_backstore_resize "enc${ENC_TAG#iscsi-}" "$1" ;;
        nvme-*)  nvmet_namespace_resize "$ENC_NQN" 1 "$1" ;;
    esac
}

use_iscsi luks;  ENC_EXTEND=$NEW_SIZE ENC_WRONG=0 enc_round_trip
use_iscsi luks2; ENC_EXTEND="" ENC_WRONG=1 enc_round_trip
use_iscsi plain; ENC_EXTEND="" ENC_WRONG=0 enc_round_trip

# Single path (no --multipath) with multipathd holding the disk: what hostbrick does is noted;
# whatever it does, nothing may be left. (os-brick's encryptor meets the same busy disk.)
conn_iscsi "$WORK/conn-single.json" $P1 "$ENC_IQN" 0 "$(new_uuid)"
attach_cmd single connect --key-dir "$KEY_DIR" --encryption "$ENC_META" "$WORK/conn-single.json"
if [ "$ATTACH_RC" = 0 ]; then
    cp "$WORK/single.out" "$WORK/single.json"
    SDEV=$(jq -r '.encryption.device // empty' "$WORK/single.json")
    read_pattern "$SDEV" "$ENC_TAG" || fail "single path: the plain volume's data did not read back through $SDEV"
    note "single path with multipathd holding the disk: attached ($(jq -c '{path, encryption}' "$WORK/single.json"))"
    attach_ok single-disconnect disconnect "$WORK/conn-single.json" "$WORK/single.json"
else
    note "single path with multipathd holding the disk: $(attach_stderr_summary single)"
fi
check_no_crypt_leftovers; enc_clean_check "single path"; check_registry_empty

# A LUN that carries a filesystem: refused, not one byte written.
use_iscsi sig
mkfs.ext4 -q -F "$ENC_BACKING" >/dev/null 2>&1 || fail "mkfs.ext4 on the backing file failed"
SUM=$(sha256sum < "$ENC_BACKING")
attach_cmd sig connect "${ENC_FLAGS[@]}" --key-dir "$KEY_DIR" --encryption "$ENC_META" "$ENC_CONN"
expect_error sig device_has_signature
note "ext4 LUN refused in ${ATTACH_SECS}s: $(attach_stderr_summary sig | cut -c1-160)"
check_no_crypt_leftovers; enc_clean_check "$ENC_TAG"; check_registry_empty
[ "$(sha256sum < "$ENC_BACKING")" = "$SUM" ] || fail "the ext4 LUN changed in the refused attach"

# ------------------------------------------------------------ NVMe/TCP -----
nvme_uuid() { case $1 in luks) echo e0c0e0c0-0000-4000-8000-000000000011 ;; luks2) echo e0c0e0c0-0000-4000-8000-000000000012 ;; plain) echo e0c0e0c0-0000-4000-8000-000000000013 ;; esac; }
check "nvmet port" nvmet_port 1 127.0.0.1 4420
for p in luks luks2 plain; do
    check "nvmet namespace $p" nvmet_namespace "$NQN_BASE-$p" 1 $SIZE "$(nvme_uuid $p)" "$(nvme_uuid $p)"
    check "nvmet export $p" nvmet_export "$NQN_BASE-$p" 1
done
use_nvme() {
    local p=$1
    ENC_TAG=nvme-$p ENC_PROVIDER=$p ENC_KEY_ID=$(new_uuid) ENC_SIZE=$SIZE
    ENC_NQN=$NQN_BASE-$p ENC_UUID=$(nvme_uuid $p) ENC_BACKING=$(nvmet_namespace_file "$NQN_BASE-$p" 1)
    ENC_CONN=$WORK/conn-$ENC_TAG.json ENC_META=$WORK/meta-$ENC_TAG.json ENC_FLAGS=()
    conn_nvme "$ENC_CONN" "$ENC_NQN" 127.0.0.1 4420 "$ENC_UUID" 1 "${ENC_UUID//-/}" "$(new_uuid)"
    check "key" enc_key_new "$ENC_KEY_ID"
    case $p in
        luks)  enc_meta "$ENC_META" luks "$ENC_KEY_ID" aes-xts-plain64 512 ;;
        *)     enc_meta "$ENC_META" "$p" "$ENC_KEY_ID" ;;
    esac
    ENC_META_ARGS=(--encryption "$ENC_META")
}
use_nvme luks;  ENC_EXTEND="" ENC_WRONG=1 enc_round_trip
use_nvme luks2; ENC_EXTEND=$NEW_SIZE ENC_WRONG=0 enc_round_trip
use_nvme plain; ENC_EXTEND="" ENC_WRONG=0 enc_round_trip

check_audit_empty audit-end
note "$(IFS=';'; echo "${ENC_TIMES[*]}")"
note "scenario $(secs_since "$T0")s"
soft_verdict
scenario_pass "LUKS1, LUKS2, plain over iSCSI multipath and NVMe/TCP: format, data, no plaintext on the target, reattach, wrong key, extend, signature refused, no passphrase in argv"
