#!/bin/bash
# vm-needs: osbrick
# vm-timeout: 900
# Encrypted volumes between os-brick 7.1.1's encryptors and hostbrick (issue #16), LUKS1
# (os-brick's `luks`, LuksEncryptor) and LUKS2 (`luks2`, Luks2Encryptor), on iSCSI LUNs behind
# two portals (both tools with multipath: the guest's multipathd holds every SCSI disk). os-brick
# is driven as Nova drives it: connector.connect_volume, then get_volume_encryptor(connection_info
# with data.device_path = the connector's path, a key manager stub over the same key directory
# hostbrick reads, **metadata).attach_volume(context, **metadata); detach_volume, then
# disconnect_volume.
#   A. os-brick formats a blank volume and writes through its mapping, detaches; hostbrick
#      attaches it with the same key: no new format (same LUKS UUID), os-brick's data reads
#      back; detach. Then os-brick attaches it again (its mapping open, its device_path link
#      repointed) and hostbrick connects the same volume (a drop-in replacement meeting a
#      volume os-brick left attached): the result is noted and checked (it must use os-brick's
#      mapping or refuse, never open a second one); hostbrick's detach (or os-brick's, when
#      hostbrick refused) leaves nothing.
#   B. hostbrick formats a blank volume and writes through its mapping, detaches; os-brick's
#      encryptor opens it (no new format), hostbrick's data reads back; os-brick detaches.
# hostbrick's dm name is compared with the one os-brick gives the same volume. After each
# detach: no dm-crypt mapping, map, session, disk; hostbrick's registry empty (after its own
# detaches). The drop-in checks go on after a failure (the verdict lists them); any other
# failure ends the scenario.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"
T0=$(now_ns)
enc_require_attach
modprobe dm_crypt || fail "modprobe dm_crypt failed"
osbrick_launch

P1=127.0.0.1:3260 P2=127.0.0.2:3260
SIZE=$((64 * 1024 * 1024))
IQN_BASE=iqn.2003-01.org.linux-iscsi.hostbrick:encosb
serial_of() { case $1 in luks-A) echo e0c0b000000000000000000000000a1 ;; luks-B) echo e0c0b000000000000000000000000b1 ;;
                         luks2-A) echo e0c0b000000000000000000000000a2 ;; luks2-B) echo e0c0b000000000000000000000000b2 ;; esac; }
for v in luks-A luks-B luks2-A luks2-B; do
    check "LIO target $v" lio_simple_target "$IQN_BASE-${v,,}" "encosb-${v,,}" $SIZE "$(serial_of $v)" $P1 $P2
done
TIMES=()

# use_vol PROVIDER-A|B: sets the volume's settings (ENC_* as lib.sh's enc_connect wants them).
use_vol() {
    V=$1 ENC_PROVIDER=${1%-*} ENC_TAG=osb-${1,,}
    ENC_IQN=$IQN_BASE-${1,,} ENC_WWID=$(lio_expected_wwid "$(serial_of "$1")") ENC_BACKING=$(lio_backstore_file "encosb-${1,,}")
    ENC_CONN=$WORK/conn-$ENC_TAG.json ENC_META=$WORK/meta-$ENC_TAG.json ENC_FLAGS=(--multipath)
    ENC_KEY_ID=key-$ENC_TAG ENC_META_ARGS=(--encryption "$ENC_META")
    if [ ! -e "$ENC_CONN" ]; then
        conn_iscsi "$ENC_CONN" $P1 "$ENC_IQN" 0 "$(new_uuid)" \
            ".target_portals=[\"$P1\",\"$P2\"] | .target_iqns=[\"$ENC_IQN\",\"$ENC_IQN\"] | .target_luns=[0,0] | .encrypted=true"
        enc_key_new "$ENC_KEY_ID" || fail "key"
        # Cinder's LUKS volume types: aes-xts-plain64, 256-bit key (LUKS1); the LUKS2 one with
        # cryptsetup's defaults
        case $ENC_PROVIDER in
            luks) enc_meta "$ENC_META" luks "$ENC_KEY_ID" aes-xts-plain64 256 ;;
            *)    enc_meta "$ENC_META" luks2 "$ENC_KEY_ID" ;;
        esac
    fi
}
enc_raw_check() {
    local real; real=$(readlink -f "$1")
    check_block_device "$1" $SIZE "$ENC_WWID"
    case $real in /dev/dm-*) ;; *) fail "$ENC_TAG: raw path $1 ($real) is not the multipath map" ;; esac
}
enc_clean_check() { check_no_dm_map "$ENC_WWID"; check_no_iscsi_leftovers "$ENC_IQN"; check_no_scsi_disks; }
clean_all() { check_no_crypt_leftovers; enc_clean_check; }

# os-brick's side. osb_attach NAME: connect_volume + encryptor attach_volume; sets OSB_PATH
# (the connector's device path), OSB_DM (os-brick's dm name), OSB_DEV (/dev/mapper/OSB_DM),
# OSB_RAW (a block node of our own for the device os-brick opened: its encryptor replaces the
# device_path it was given, here the map's /dev/dm-N node itself, with a symlink to its mapping,
# as it does under Nova, so /dev/dm-N and /dev/mapper/WWID -> ../dm-N now lead to the
# decrypted device).
osb_attach() {
    local name=$1
    osbrick_call "$name-connect" "$(jq -c '{op: "connect", protocol: "ISCSI", use_multipath: true, connection_properties: .data}' "$ENC_CONN")"
    [ "$OSB_OK" = true ] || fail "$ENC_TAG: os-brick connect_volume: $(osbrick_error "$name-connect")"
    OSB_PATH=$(jq -r '.result.path' "$WORK/$name-connect.osb")
    jq --arg p "$OSB_PATH" '.data.device_path = $p' "$ENC_CONN" > "$WORK/$name-ci.json"
    osbrick_call "$name-encrypt" "$(jq -c -n --slurpfile ci "$WORK/$name-ci.json" --slurpfile m "$ENC_META" --arg k "$KEY_DIR" \
        '{op: "encryptor_attach", connection_info: $ci[0], encryption: $m[0], key_dir: $k}')"
    [ "$OSB_OK" = true ] || fail "$ENC_TAG: os-brick encryptor attach_volume: $(osbrick_error "$name-encrypt")"
    OSB_DM=$(jq -r '.result.dev_name' "$WORK/$name-encrypt.osb"); OSB_DEV=/dev/mapper/$OSB_DM
    OSB_KDEV=$(basename "$(jq -r '.result.dev_path' "$WORK/$name-encrypt.osb")") OSB_RAW=$WORK/osb-raw
    log "$ENC_TAG: os-brick: connector path $OSB_PATH, encryptor $(jq -c .result "$WORK/$name-encrypt.osb")"
    [ -b "$OSB_DEV" ] || fail "$ENC_TAG: os-brick's $OSB_DEV is not a block device"
    [ "$(basename "$(readlink "/dev/mapper/$ENC_WWID")")" = "$OSB_KDEV" ] || fail "$ENC_TAG: /dev/mapper/$ENC_WWID -> $(readlink "/dev/mapper/$ENC_WWID"), os-brick opened /dev/$OSB_KDEV"
    rm -f "$OSB_RAW"
    mknod "$OSB_RAW" b $(tr ':' ' ' < "/sys/block/$OSB_KDEV/dev") || fail "mknod for /sys/block/$OSB_KDEV failed"
    crypt_check_over "$OSB_DM" "$OSB_KDEV" "$(enc_type "$ENC_PROVIDER")"
}
# osb_detach NAME: encryptor detach_volume + disconnect_volume (with connect NAME's answers).
osb_detach() {
    local name=$1
    osbrick_call "$name-decrypt" "$(jq -c -n --slurpfile ci "$WORK/$name-ci.json" --slurpfile m "$ENC_META" --arg k "$KEY_DIR" \
        '{op: "encryptor_detach", connection_info: $ci[0], encryption: $m[0], key_dir: $k}')"
    [ "$OSB_OK" = true ] || fail "$ENC_TAG: os-brick encryptor detach_volume: $(osbrick_error "$name-decrypt")"
    osbrick_call "$name-disconnect" "$(jq -c -n --slurpfile c "$ENC_CONN" --slurpfile d "$WORK/$name-connect.osb" \
        '{op: "disconnect", protocol: "ISCSI", use_multipath: true, connection_properties: $c[0].data,
          device_info: $d[0].result, force: false, ignore_errors: false}')"
    [ "$OSB_OK" = true ] || fail "$ENC_TAG: os-brick disconnect_volume: $(osbrick_error "$name-disconnect")"
    osb_dev_links
    check_no_crypt_leftovers
    enc_clean_check "$ENC_TAG: after os-brick's detach"
}
# osb_dev_links: the symlink os-brick's encryptor put in place of a /dev node (its device_path)
# outlives the detach; noted and removed, or the next device of that name gets no node.
osb_dev_links() {
    local l
    for l in $(find /dev -maxdepth 1 -type l \( -name 'dm-*' -o -name 'sd*' -o -name 'nvme*' \) 2>/dev/null) \
             $(find /dev/disk/by-id -maxdepth 1 -type l -name 'os-brick+*' 2>/dev/null); do
        note "$ENC_TAG: os-brick's encryptor left $l -> $(readlink "$l") in place of the device node (removed)"
        rm -f "$l"
    done
}
# names_check HOSTBRICK_NAME: for a connection_info with `encrypted: true` os-brick (since 5.2)
# hands its encryptor its own link /dev/disk/by-id/os-brick+dev+dm-N and names the mapping after
# it; hostbrick names it after the device (crypt-dm-N, os-brick's name for the device path) and
# recognises both.
names_check() {
    [ "$OSB_PATH" = "/dev/disk/by-id/os-brick+dev+$OSB_KDEV" ] || soft_fail "$ENC_TAG: os-brick's connector path is $OSB_PATH, expected its link /dev/disk/by-id/os-brick+dev+$OSB_KDEV"
    [ "$OSB_DM" = "crypt-os-brick+dev+$OSB_KDEV" ] || soft_fail "$ENC_TAG: os-brick named its mapping '$OSB_DM'"
    [ "$1" = "crypt-$OSB_KDEV" ] || soft_fail "$ENC_TAG: hostbrick named its mapping '$1', expected crypt-$OSB_KDEV"
}
check_no_osbrick_links() {
    local l; l=$(ls /dev/disk/by-id/ 2>/dev/null | grep '^os-brick+' || true)
    [ -z "$l" ] || fail "os-brick links left: $l"
}
luks_version_is() { cryptsetup luksDump "$1" | grep -qE "^Version:[[:space:]]+$([ "$2" = luks ] && echo 1 || echo 2)\$"; }

# A: os-brick formats, hostbrick opens; then os-brick attached and hostbrick connects too.
case_a() {
    use_vol "$1-A"
    local hdr t
    log "---- $ENC_TAG: os-brick formats, hostbrick opens"
    osb_attach a1
    t=$OSB_SECS
    luks_version_is "$OSB_RAW" "$ENC_PROVIDER" || fail "$ENC_TAG: os-brick's header is not $ENC_PROVIDER: $(cryptsetup luksDump "$OSB_RAW" | grep -m1 Version)"
    hdr=$(cryptsetup luksUUID "$OSB_RAW")
    check_io "$OSB_DEV" "$ENC_TAG"
    check_no_plaintext "$OSB_RAW" "$ENC_TAG"
    osb_detach a1
    check_no_plaintext "$ENC_BACKING" "$ENC_TAG"

    enc_connect a2 --watch
    TIMES+=("$ENC_TAG: os-brick format+open ${t}s, hostbrick open ${ATTACH_SECS}s")
    [ "$ENC_HDR_UUID" = "$hdr" ] || fail "$ENC_TAG: hostbrick shows LUKS UUID '$ENC_HDR_UUID', os-brick formatted '$hdr'"
    read_pattern "$ENC_DEV" "$ENC_TAG" || fail "$ENC_TAG: os-brick's data did not read back through hostbrick's $ENC_DEV"
    HB_NAME_A=$ENC_NAME
    enc_disconnect a2

    log "---- $ENC_TAG: os-brick attached, hostbrick connects the same volume"
    osb_attach a3
    [ "$(cryptsetup luksUUID "$OSB_RAW")" = "$hdr" ] || fail "$ENC_TAG: os-brick's second attach shows another LUKS UUID"
    read_pattern "$OSB_DEV" "$ENC_TAG" || fail "$ENC_TAG: the data did not read back through os-brick's second mapping"
    names_check "$HB_NAME_A"
    attach_cmd a4 connect "${ENC_FLAGS[@]}" --key-dir "$KEY_DIR" "${ENC_META_ARGS[@]}" "$ENC_CONN"
    STEP_FAILS=${#SOFT_FAILS[@]}
    dropin_check
    force_clean
}
# the drop-in half of A (soft checks: B runs whatever happens here)
dropin_check() {
    local maps; maps=$(crypt_mappings | tr '\n' ' ')
    if [ "$ATTACH_RC" = 0 ]; then
        cp "$WORK/a4.out" "$WORK/a4.json"
        log "$ENC_TAG: hostbrick's record over os-brick's attachment: $(jq -c . "$WORK/a4.json")"
        [ "$maps" = "$OSB_DM " ] || soft_fail "$ENC_TAG: hostbrick's connect over os-brick's attachment left dm-crypt mappings '$maps', expected only os-brick's $OSB_DM"
        [ "$(jq -r '.encryption.name' "$WORK/a4.json")" = "$OSB_DM" ] || soft_fail "$ENC_TAG: hostbrick's record names mapping '$(jq -r '.encryption.name' "$WORK/a4.json")', os-brick's is $OSB_DM"
        read_pattern "$(jq -r '.encryption.device' "$WORK/a4.json")" "$ENC_TAG" || soft_fail "$ENC_TAG: the data did not read back through hostbrick's record over os-brick's mapping"
        note "$ENC_TAG: hostbrick connected the volume os-brick holds open: record $(jq -c '.encryption' "$WORK/a4.json")"
        attach_cmd a4-disconnect disconnect "${ENC_FLAGS[@]}" "$ENC_CONN" "$WORK/a4.json"
        if [ "$ATTACH_RC" != 0 ]; then
            soft_fail "$ENC_TAG: hostbrick's disconnect of the volume os-brick attached failed: $(attach_stderr_summary a4-disconnect)"
            note "$ENC_TAG: left after hostbrick's failed disconnect: dm-crypt '$(crypt_mappings | tr '\n' ' ')', dm '$(dmsetup ls 2>/dev/null | awk '{print $1}' | tr '\n' ' ')', sessions $(iscsi_sessions | wc -l), /dev/dm-0: $(ls -l /dev/dm-0 2>&1 | cut -c1-80)"
            return
        fi
        soft "$ENC_TAG: after hostbrick's disconnect of os-brick's attachment" clean_all
        soft "$ENC_TAG: os-brick's link after hostbrick closed os-brick's mapping" check_no_osbrick_links
        soft "$ENC_TAG: registry after hostbrick's disconnect of os-brick's attachment" check_registry_empty
    else
        note "$ENC_TAG: hostbrick's connect of the volume os-brick holds open: $(attach_stderr_summary a4 | cut -c1-200)"
        [ "$maps" = "$OSB_DM " ] || soft_fail "$ENC_TAG: the failed connect changed the dm-crypt mappings to '$maps' (os-brick's: $OSB_DM)"
        soft "$ENC_TAG: registry after the refused connect" check_registry_empty
        read_pattern "$OSB_DEV" "$ENC_TAG" || soft_fail "$ENC_TAG: os-brick's mapping no longer reads the data after hostbrick's failed connect"
        osb_detach a3
    fi
}

# B: hostbrick formats, os-brick opens.
case_b() {
    use_vol "$1-B"
    local hdr t
    log "---- $ENC_TAG: hostbrick formats, os-brick opens"
    enc_connect b1 --watch
    t=$ATTACH_SECS
    hdr=$ENC_HDR_UUID
    check_io "$ENC_DEV" "$ENC_TAG"
    check_no_plaintext "$ENC_RAW" "$ENC_TAG"
    HB_NAME_B=$ENC_NAME
    enc_disconnect b1
    check_no_plaintext "$ENC_BACKING" "$ENC_TAG"

    osb_attach b2
    TIMES+=("$ENC_TAG: hostbrick format+open ${t}s, os-brick open ${OSB_SECS}s")
    [ "$(cryptsetup luksUUID "$OSB_RAW")" = "$hdr" ] || fail "$ENC_TAG: os-brick shows LUKS UUID '$(cryptsetup luksUUID "$OSB_RAW")', hostbrick formatted '$hdr'"
    luks_version_is "$OSB_RAW" "$ENC_PROVIDER" || fail "$ENC_TAG: the header is not $ENC_PROVIDER"
    read_pattern "$OSB_DEV" "$ENC_TAG" || fail "$ENC_TAG: hostbrick's data did not read back through os-brick's $OSB_DEV"
    names_check "$HB_NAME_B"
    osb_detach b2
}

# after a failed case: close whatever is open, log out, so the next case starts clean
force_clean() {
    [ ${#SOFT_FAILS[@]} -gt "${STEP_FAILS:-0}" ] || return 0
    log "cleaning up after the failed case"
    crypt_reset
    osb_dev_links
    udevadm settle --timeout=10
    multipath -F >/dev/null 2>&1
    iscsiadm -m node --logoutall=all >/dev/null 2>&1
    iscsiadm -m node -o delete >/dev/null 2>&1
    wait_until 30 no_scsi_disks
    udevadm settle --timeout=10
    multipath -F >/dev/null 2>&1
    rm -rf "${HOSTBRICK_REGISTRY:?}"/*/*.json
}

osbrick_wait
note "os-brick $OSBRICK_VERSION up ${OSBRICK_STARTUP_S}s after its launch"
for p in luks luks2; do
    case_a $p
    case_b $p
done
osbrick_stop
soft "nothing left at the end" check_audit_empty audit-end
note "$(IFS=';'; echo "${TIMES[*]}")"
note "scenario $(secs_since "$T0")s"
soft_verdict
scenario_pass "os-brick $OSBRICK_VERSION and hostbrick open each other's LUKS1 and LUKS2 volumes with the same key and data"
