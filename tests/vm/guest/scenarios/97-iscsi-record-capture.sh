#!/bin/bash
# Not a test: captures what the guest's open-iscsi writes into its record database, the
# fixtures of tests/fixtures/iscsi/ (hostbrick writes node records itself and compares them
# with these). Runs only when asked for by name:
#   HOSTBRICK_VM_SCENARIOS=iscsi-record-capture tests/vm/run-suite.sh
#   cp target/vm/share/results/iscsi-records/* tests/fixtures/iscsi/records/
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"
[[ ${HOSTBRICK_VM_SCENARIOS:-} == *capture* ]] \
    || scenario_pass "skipped (fixture capture: HOSTBRICK_VM_SCENARIOS=iscsi-record-capture)"

OUT=$RESULTS/iscsi-records
rm -rf "$OUT"; mkdir -p "$OUT"
IQN=iqn.2003-01.org.linux-iscsi.hostbrick:records
SERIAL=7e0c3f7b2d4e8a9c6b1d2e3f40516273
SIZE=$((16 * 1024 * 1024))
WWID=$(lio_expected_wwid $SERIAL)
P1=127.0.0.1:3260 P2=127.0.0.2:3260
check "LIO target setup" lio_simple_target $IQN records $SIZE $SERIAL $P1 $P2
N=/etc/iscsi/nodes/$IQN
UPDATE=(-n node.session.scan -v manual -n node.conn[0].timeo.login_timeout -v 5
        -n node.session.initial_login_retry_max -v 1 -n node.startup -v automatic)

iscsiadm --version > "$OUT/version.txt" 2>&1
cp /etc/iscsi/iscsid.conf "$OUT/iscsid.conf"
{ strings "$(command -v iscsiadm)" | grep -E '^/(run|var)/lock|lock\.write|/etc/iscsi' ; } > "$OUT/iscsiadm-paths.txt"
umask > "$OUT/umask.txt"

# hostbrick's connect of today: --op new, then its one --op update.
iscsiadm -m node -T $IQN -p $P1 --interface default --op new > "$OUT/op-new.out" 2>&1
cp "$N/127.0.0.1,3260" "$OUT/node-new-default"
iscsiadm -m node -T $IQN -p $P1 --op update "${UPDATE[@]}"
cp "$N/127.0.0.1,3260" "$OUT/node-new-default-updated"
ls -la /run/lock/iscsi > "$OUT/lock-dir.txt" 2>&1
stat -c '%a %U %n' /etc/iscsi /etc/iscsi/nodes "$N" "$N/127.0.0.1,3260" > "$OUT/modes.txt"
# iSER and IPv6 (no login needed: the record is all that is captured).
iscsiadm -m node -T $IQN -p 127.0.0.3:3260 --interface iser --op new > "$OUT/op-new-iser.out" 2>&1
cp "$N/127.0.0.3,3260" "$OUT/node-new-iser" 2>>"$OUT/errors.txt"
iscsiadm -m node -T $IQN -p '[::1]:3260' --interface default --op new > "$OUT/op-new-v6.out" 2>&1
cp "$N/::1,3260" "$OUT/node-new-ipv6" 2>>"$OUT/errors.txt"
# The record iscsiadm -m node -T -p prints (what our node_exists read).
iscsiadm -m node -T $IQN -p $P1 > "$OUT/node-show.out" 2>&1
# A login with the written record, then the logout and the delete.
iscsiadm -m node -T $IQN -p $P1 --interface default --login > "$OUT/login.out" 2>&1
iscsiadm -m node -T $IQN -p $P1 --interface default --logout > "$OUT/logout.out" 2>&1
iscsiadm -m node -T $IQN -p $P1 --op delete > "$OUT/delete.out" 2>&1
iscsiadm -m node -T $IQN -p 127.0.0.3:3260 --op delete >/dev/null 2>&1
iscsiadm -m node -T $IQN -p '[::1]:3260' --op delete >/dev/null 2>&1
{ echo "after deletes:"; find /etc/iscsi -path /etc/iscsi/ifaces -prune -o -print | sort; } > "$OUT/after-delete.txt"

# sendtargets discovery.
iscsiadm -m discovery -t sendtargets -p $P1 > "$OUT/discovery.out" 2>&1
cp "$N/127.0.0.1,3260,1/default" "$OUT/node-discovered" 2>>"$OUT/errors.txt"
cp /etc/iscsi/send_targets/127.0.0.1,3260/st_config "$OUT/st_config" 2>>"$OUT/errors.txt"
ls -la /etc/iscsi/send_targets/127.0.0.1,3260 > "$OUT/send_targets-dir.txt" 2>&1
stat -c '%a %U %n' "$N" "$N/127.0.0.1,3260,1" "$N/127.0.0.1,3260,1/default" >> "$OUT/modes.txt" 2>&1
# --op new over a discovered record (what --op new does when one is there).
iscsiadm -m node -T $IQN -p $P1 --interface default --op new > "$OUT/op-new-over-discovered.out" 2>&1
{ find "$N" | sort; } > "$OUT/op-new-over-discovered.txt"
cp "$N/127.0.0.1,3260,1/default" "$OUT/node-new-over-discovered" 2>>"$OUT/errors.txt"
iscsiadm -m node -T $IQN --op delete > "$OUT/delete-discovered.out" 2>&1
ls -la /etc/iscsi/send_targets/127.0.0.1,3260 >> "$OUT/send_targets-dir.txt" 2>&1
{ echo "after discovered deletes:"; find /etc/iscsi -path /etc/iscsi/ifaces -prune -o -print | sort; } >> "$OUT/after-delete.txt"
iscsiadm -m discoverydb -t sendtargets -p $P1 --op delete >/dev/null 2>&1
# iscsiadm 2.1.8 cannot delete what --op new over a discovered record left (a flat record
# beside the portal directory: "iface iter could not stat"): clear it by hand.
rm -rf "$N" /etc/iscsi/send_targets/127.0.0.1,3260

# Multipath: two manual-scan logins and targeted scans, no multipath -a / add path: does
# multipathd (find_multipaths no) build the map itself, and how fast?
{
for add in none wwid-only add-path; do
    start=$(now_ns)
    sds=""
    for p in $P1 $P2; do
        _floor_login "$p" "$IQN" || { echo "login $p failed"; continue; }
        echo "0 0 0" > "/sys/class/scsi_host/host$FLOOR_HOST/scan"
        wait_until 30 has_scsi_block "$FLOOR_HOST:0:0:0"
        sd=$(scsi_block_of "$FLOOR_HOST:0:0:0"); sds="$sds $sd"
        wait_for "/dev/$sd" 30
        case $add in
            wwid-only) [ "$p" = $P1 ] && multipath -a "$WWID" ;;
            add-path) [ "$p" = $P1 ] && multipath -a "$WWID"; multipathd add path "/dev/$sd" ;;
        esac
    done
    if wait_for "/dev/mapper/$WWID" 30; then
        t=$(secs_since "$start")
        paths=$(ls /sys/block/$(basename "$(readlink -f /dev/mapper/$WWID)")/slaves | tr '\n' ' ')
        wait_until 10 test "$(ls /sys/block/$(basename "$(readlink -f /dev/mapper/$WWID)")/slaves | wc -l)" = 2
        t2=$(secs_since "$start")
        echo "$add: map after ${t}s (paths then: $paths), both paths after ${t2}s"
    else
        echo "$add: no map within 30 s"
    fi
    _floor_cleanup "$IQN" $sds
    sed -i "/$WWID/d" /etc/multipath/wwids 2>/dev/null
done
} > "$OUT/multipath.txt" 2>&1
# Two concurrent add path calls.
{
for p in $P1 $P2; do _floor_login "$p" "$IQN"; echo "0 0 0" > "/sys/class/scsi_host/host$FLOOR_HOST/scan"; done
udevadm settle --timeout=20
sds=$(for h in /sys/class/scsi_disk/*; do basename "$(ls -d $h/device/block/* 2>/dev/null)"; done | tr '\n' ' ')
echo "disks: $sds"
start=$(now_ns)
for sd in $sds; do multipathd add path "/dev/$sd" & done; wait
echo "concurrent add path: $(secs_since "$start")s"
multipath -ll "$WWID"
_floor_cleanup "$IQN" $sds
} >> "$OUT/multipath.txt" 2>&1
iscsiadm -m node > "$OUT/nodes-left.txt" 2>&1
ls "$OUT" >/dev/null
scenario_pass "records in results/iscsi-records/"
