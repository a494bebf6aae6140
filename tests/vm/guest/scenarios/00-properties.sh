#!/bin/bash
# Connector properties of this host (os-brick's get_connector_properties): the guest's iSCSI
# initiator name, multipath true with multipathd running, the given IP.
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"

[ -n "$INITIATOR_IQN" ] || fail "guest has no /etc/iscsi/initiatorname.iscsi"
attach_ok props properties --ip 127.0.0.1 --multipath
jq -e -s 'length == 1 and (.[0] | type == "object")' "$WORK/props.out" >/dev/null \
    || fail "properties stdout is not exactly one JSON object: $(head -c 300 "$WORK/props.out")"
log "properties: $(jq -c . "$WORK/props.out")"
prop() { jq -r ".$1 | tostring" "$WORK/props.out"; }
[ "$(prop initiator)" = "$INITIATOR_IQN" ] || fail "initiator '$(prop initiator)', expected $INITIATOR_IQN"
[ "$(prop multipath)" = true ] || fail "multipath '$(prop multipath)' with --multipath and multipathd running, expected true"
[ "$(prop ip)" = 127.0.0.1 ] || fail "ip '$(prop ip)', expected 127.0.0.1"
[ "$(prop os_type)" = linux ] || fail "os_type '$(prop os_type)', expected linux"
attach_ok props-enforced properties --ip 127.0.0.1 --multipath --enforce-multipath
attach_ok props-plain properties --ip 127.0.0.1
[ "$(jq -r '.multipath | tostring' "$WORK/props-plain.out")" = false ] \
    || fail "multipath '$(jq -r '.multipath' "$WORK/props-plain.out")' without --multipath, expected false"
scenario_pass
