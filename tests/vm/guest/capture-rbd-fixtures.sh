#!/bin/bash
# Captures what the rbd CLI, rbd-nbd and the 6.1 kernel (krbd, nbd) really print/expose for Ceph
# RBD attaches, as plain-text fixtures for the RBD connector's unit tests (tests/fixtures/rbd/).
#
#   HOSTBRICK_VM_DIR=target/vm-ceph HOSTBRICK_VM_SCENARIOS=rbd-fixture-capture tests/vm/run-suite.sh
#   cp target/vm-ceph/share/results/rbd-fixtures/*.txt tests/fixtures/rbd/
#
# Cluster: ceph_one_node_up (one mon on 127.0.0.1 v2:3300/v1:6789, one memstore OSD, pool
# `volumes` of size 1, rbd-initialised). Images volumes/vol1 (64 MiB), volumes/ns1/vol2 (32 MiB,
# namespace ns1); cephx user client.cinder (mon 'profile rbd', osd 'profile rbd pool=volumes').
# Every command is shown as run, with its stdout, stderr, exit code and wall time; commands that
# talk to the kernel also show the dmesg lines they caused.
# shellcheck shell=bash
set -u
OUT=${1:?output dir}
mkdir -p "$OUT"
GUEST_DIR=${GUEST_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
. "$GUEST_DIR/targets.sh"
D=/tmp/rbdcap
mkdir -p $D
K=$D/ceph.client.cinder.keyring
MON=127.0.0.1:6789
CMD_TIMEOUT=${CMD_TIMEOUT:-120}

now_ns() { date +%s%N; }
secs_since() { local d=$(( $(now_ns) - $1 )); printf '%d.%03d' $((d / 1000000000)) $(( (d / 1000000) % 1000 )); }

# run CMD...: show the command, its stdout, stderr, exit code, time and new dmesg lines
run() {
    local rc start n
    printf '$ %s\n' "$*"
    n=$(dmesg | wc -l)
    start=$(now_ns)
    timeout --kill-after=5 "$CMD_TIMEOUT" "$@" > $D/cap.out 2> $D/cap.err; rc=$?
    local took; took=$(secs_since "$start")
    echo "--- stdout"; cat $D/cap.out
    echo "--- stderr"; cat $D/cap.err
    echo "--- exit code: $rc"
    echo "--- took: ${took}s"
    if [ "$(dmesg | wc -l)" -gt "$n" ]; then
        echo "--- dmesg (new lines)"; dmesg | tail -n +$((n + 1))
    fi
    echo
    return $rc
}
# sh_run 'SHELL TEXT': same, through bash -c (pipes, loops, redirections)
sh_run() { run bash -c "$1"; }
section() { echo; echo "===== $*"; echo; }
settle() { udevadm settle --timeout=10; }
state() {   # what is mapped right now (krbd, nbd, daemons)
    sh_run 'rbd showmapped --format json; echo; rbd device list -t nbd --format json; echo; ls /sys/bus/rbd/devices/; ls -l /dev/rbd* 2>&1; for n in /sys/block/nbd*; do [ -e $n/pid ] && echo "${n##*/} pid=$(cat $n/pid) size=$(cat $n/size)"; done; pgrep -a rbd-nbd || echo "no rbd-nbd process"'
}
unmap_all() {   # quiet cleanup between sections
    local d
    for d in /dev/rbd[0-9]*; do [ -b "$d" ] && rbd unmap -o force "$d" >/dev/null 2>&1; done
    for d in $(rbd-nbd list-mapped 2>/dev/null | awk 'NR>1 {print $NF}'); do rbd-nbd unmap "$d" >/dev/null 2>&1; done
    settle
}
# wait_size DEV_NAME SECTORS: poll /sys/block/NAME/size every 10 ms for up to 30 s; prints the time
wait_size() {
    local start i; start=$(now_ns)
    for i in $(seq 1 3000); do
        [ "$(cat /sys/block/$1/size 2>/dev/null)" = "$2" ] && { echo "/sys/block/$1/size = $2 after $(secs_since "$start")s"; return 0; }
        sleep 0.01
    done
    echo "/sys/block/$1/size still $(cat /sys/block/$1/size 2>/dev/null) after 30s (expected $2)"; return 1
}
# time_map CMD...: run a map command in the background, time until a new /dev/rbdN or nbd size
time_to_node() {
    local start i; start=$(now_ns)
    for i in $(seq 1 3000); do [ -b "$1" ] && { echo "$1 exists $(secs_since "$start")s after the check began"; return 0; }; sleep 0.01; done
    echo "$1 not there after 30s"; return 1
}

log() { echo "[capture $(cut -d' ' -f1 /proc/uptime)] $*" >&2; }

# ------------------------------------------------------------------ cluster -----
log "ceph_one_node_up"
if ! ceph_one_node_up volumes > $D/up.log 2>&1; then
    log "ceph_one_node_up failed"; cat $D/up.log >&2
    tail -n 40 /var/log/ceph/*.log >&2
    exit 1
fi
log "cluster up"
modprobe -a rbd nbd

{
    section "environment"
    sh_run "uname -r"
    run rbd --version
    run rbd-nbd --version
    sh_run "dpkg-query -W ceph-common rbd-nbd librbd1 librados2 ceph-mon ceph-osd"
    sh_run "cat /etc/ceph/ceph.conf"
    sh_run "ls -l /etc/ceph/"
    run ceph -s
    run ceph mon dump
    run ceph osd pool ls detail
    section "cephx user for the connector"
    run ceph auth get-or-create client.cinder mon 'profile rbd' osd 'profile rbd pool=volumes' -o $K
    sh_run "cat $K; echo; od -c $K | head -n 5"
    run ceph auth get client.cinder
    section "the smallest keyring form the tests use: [client.cinder]\\n\\tkey = KEY\\n"
    KEY=$(ceph auth print-key client.cinder)
    printf '[client.cinder]\n\tkey = %s\n' "$KEY" > $D/min.keyring
    sh_run "cat $D/min.keyring; od -c $D/min.keyring | head -n 4"
    section "images"
    run rbd create volumes/vol1 --size 64M
    run rbd namespace create volumes/ns1
    run rbd namespace ls volumes --format json
    run rbd create volumes/ns1/vol2 --size 32M
    run rbd info volumes/vol1 --format json
    run rbd info volumes/ns1/vol2 --format json
    run rbd ls volumes --format json
    run rbd ls volumes/ns1 --format json
    sh_run "lsmod | grep -E '^(rbd|nbd|libceph) '; ls /sys/bus/rbd/; cat /sys/bus/rbd/supported_features 2>&1"
} > "$OUT/environment.txt" 2>&1
KEY=$(ceph auth print-key client.cinder)
printf '[client.cinder]\n\tkey = %s\n' "$KEY" > $D/min.keyring
log "environment done"

# ------------------------------------------------------------------ 1. map -----
{
    section "nothing mapped yet"
    state
    section "map (krbd) -m IP:PORT, keyring from ceph auth get-or-create; time until /dev/rbd0"
    ( time_to_node /dev/rbd0 > $D/t.node ) & tp=$!
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON
    wait $tp; cat $D/t.node
    settle
    state
    section "map AGAIN, same command, while /dev/rbd0 is mapped"
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON
    settle; state
    section "map AGAIN with --exclusive (krbd exclusive option)"
    CMD_TIMEOUT=30 run rbd map volumes/vol1 --id cinder --keyring $K -m $MON --exclusive
    settle; state
    unmap_all
    section "map --read-only"
    run rbd map --read-only volumes/vol1 --id cinder --keyring $K -m $MON
    settle
    sh_run 'cat /sys/block/rbd0/ro; blockdev --getro /dev/rbd0; dd if=/dev/zero of=/dev/rbd0 bs=4096 count=1 oflag=direct 2>&1; true'
    state
    run rbd unmap /dev/rbd0
    section "map -o ro (kernel option form)"
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON -o ro
    sh_run 'cat /sys/block/rbd0/ro'
    unmap_all
    section "map image in a namespace: volumes/ns1/vol2"
    run rbd map volumes/ns1/vol2 --id cinder --keyring $K -m $MON
    settle; state
    section "and with --pool/--namespace/--image options"
    run rbd map --pool volumes --namespace ns1 --image vol2 --id cinder --keyring $K -m $MON
    settle; state
    unmap_all
    section "other monitor address forms"
    run rbd map volumes/vol1 --id cinder --keyring $K --mon_host $MON
    unmap_all
    run rbd map volumes/vol1 --id cinder --keyring $K --mon-host $MON
    unmap_all
    run rbd map volumes/vol1 --id cinder --keyring $K -m 127.0.0.1
    unmap_all
    CMD_TIMEOUT=30 run rbd map volumes/vol1 --id cinder --keyring $K -m 127.0.0.1:3300
    unmap_all
    run rbd map volumes/vol1 --id cinder --keyring $K -m '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]'
    unmap_all
    run rbd map volumes/vol1 --id cinder --keyring $K -m 127.0.0.1:6789,127.0.0.1:6789
    unmap_all
    run rbd map volumes/vol1 --id cinder --keyring $K -m 127.0.0.1:3300 -o ms_mode=prefer-crc
    unmap_all
    section "--user / --name forms, minimal keyring"
    run rbd map volumes/vol1 --user cinder --keyring $D/min.keyring -m $MON
    unmap_all
    run rbd map volumes/vol1 --name client.cinder --keyring $D/min.keyring -m $MON
    unmap_all
    section "--pool + image name form (os-brick style)"
    run rbd map vol1 --pool volumes --id cinder --keyring $K -m $MON
    unmap_all
    section "map -o queue_depth/options, kernel keyring while mapped"
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON -o noshare,queue_depth=128
    sh_run 'cat /proc/keys 2>&1 | grep -i ceph; grep -r . /sys/bus/rbd/devices/0/config_info'
    unmap_all
    section "map of an image that does not exist"
    run rbd map volumes/nosuch --id cinder --keyring $K -m $MON
    section "map of a pool that does not exist"
    run rbd map nopool/vol1 --id cinder --keyring $K -m $MON
    state
} > "$OUT/map.txt" 2>&1
unmap_all
log "map done"

# ------------------------------------------------------------------ 2. showmapped, udev, sysfs -----
{
    section "0 mappings"
    run rbd showmapped --format json
    run rbd showmapped --format json --pretty-format
    run rbd showmapped
    run rbd device list --format json
    run rbd device list -t krbd --format json
    section "1 mapping"
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON
    settle
    run rbd showmapped --format json
    run rbd showmapped --format json --pretty-format
    run rbd showmapped
    run rbd showmapped --format xml
    section "2 mappings (second in namespace ns1)"
    run rbd map volumes/ns1/vol2 --id cinder --keyring $K -m $MON
    settle
    run rbd showmapped --format json
    run rbd showmapped --format json --pretty-format
    run rbd showmapped
    section "udev links"
    sh_run 'ls -l /dev/rbd* /dev/rbd/ /dev/rbd/*/ 2>&1; ls -lR /dev/rbd/ 2>&1'
    sh_run 'find /dev/rbd -exec ls -ld {} \; ; for l in $(find /dev/rbd -type l); do echo "$l -> $(readlink $l) -> $(readlink -f $l)"; done'
    sh_run 'ls -l /dev/disk/by-id/ 2>&1 | grep -i rbd; ls -l /dev/disk/by-path 2>&1 | grep -i rbd; true'
    for d in /dev/rbd0 /dev/rbd1; do run udevadm info --query=property $d; done
    section "sysfs"
    sh_run 'ls -l /sys/bus/rbd/ /sys/bus/rbd/devices/'
    for n in /sys/bus/rbd/devices/*; do
        sh_run "ls -la $n/"
        sh_run "cd $n && for f in pool pool_id pool_ns name image_id snap snap_id current_snap parent major minor client_addr client_id cluster_fsid config_info features size; do printf '%s=' \$f; if [ -e \$f ]; then printf '[%s]\n' \"\$(cat \$f 2>&1)\"; else echo MISSING; fi; done"
        sh_run "readlink -f $n; od -c $n/pool_ns | head -n 3; od -c $n/current_snap | head -n 3"
    done
    for b in rbd0 rbd1; do
        sh_run "ls -la /sys/block/$b/; readlink -f /sys/block/$b; readlink -f /sys/block/$b/device; cat /sys/block/$b/dev /sys/block/$b/size /sys/block/$b/ro; blockdev --getsize64 /dev/$b"
    done
    sh_run 'cat /proc/partitions; grep rbd /proc/devices'
    run rbd unmap /dev/rbd1
    run rbd unmap /dev/rbd0
    settle
    section "after unmapping both"
    run rbd showmapped --format json
    sh_run 'ls -l /dev/rbd* 2>&1; ls /sys/bus/rbd/devices/'
} > "$OUT/showmapped-sysfs.txt" 2>&1
unmap_all
log "showmapped done"

# ------------------------------------------------------------------ 3. rbd-nbd -----
{
    section "rbd-nbd map (daemonizes); time until /sys/block/nbd0/size is non-zero"
    sh_run 'ls /dev/nbd* | head -n 3; ls /dev/nbd* | wc -l; cat /sys/module/nbd/parameters/nbds_max 2>&1'
    run rbd-nbd map volumes/vol1 --id cinder --keyring $K -m $MON
    sh_run 'for n in /sys/block/nbd*; do s=$(cat $n/size); [ "$s" != 0 ] && echo "${n##*/} size=$s pid=$(cat $n/pid 2>&1)"; done; true'
    settle
    run rbd-nbd list-mapped
    run rbd-nbd list-mapped --format json
    run rbd-nbd list-mapped --format json --pretty-format
    run rbd showmapped --format json
    run rbd showmapped
    run rbd device list -t nbd --format json
    run rbd device list -t nbd --format json --pretty-format
    run rbd device list -t nbd
    sh_run 'pgrep -a rbd-nbd; ls -l /dev/rbd* 2>&1; ls -l /dev/disk/by-id 2>&1 | grep nbd; true'
    sh_run 'cat /sys/block/nbd0/size /sys/block/nbd0/pid /sys/block/nbd0/ro; ls /sys/block/nbd0/; blockdev --getsize64 /dev/nbd0'
    sh_run 'ls -la /sys/block/nbd0/backend 2>&1; cat /sys/block/nbd0/backend 2>&1; true'
    section "rbd-nbd map AGAIN (same image, still mapped)"
    run rbd-nbd map volumes/vol1 --id cinder --keyring $K -m $MON
    run rbd-nbd list-mapped --format json
    section "rbd-nbd unmap /dev/nbd1 (the duplicate, if any)"
    sh_run 'for d in $(rbd-nbd list-mapped | awk "NR>1 && \$NF != \"/dev/nbd0\" {print \$NF}"); do echo "unmap $d"; rbd-nbd unmap $d; echo rc=$?; done'
    section "rbd-nbd unmap /dev/nbd0"
    run rbd-nbd unmap /dev/nbd0
    sleep 1
    sh_run 'pgrep -a rbd-nbd || echo "no rbd-nbd process"; cat /sys/block/nbd0/size /sys/block/nbd0/pid 2>&1; true'
    run rbd-nbd list-mapped --format json
    section "rbd device map -t nbd (same thing through the rbd CLI)"
    run rbd device map -t nbd volumes/vol1 --id cinder --keyring $K -m $MON
    run rbd device list -t nbd --format json
    section "rbd device map -t nbd of a namespace image"
    run rbd device map -t nbd volumes/ns1/vol2 --id cinder --keyring $K -m $MON
    run rbd device list -t nbd --format json --pretty-format
    run rbd-nbd list-mapped --format json --pretty-format
    section "rbd device unmap -t nbd by device and by spec"
    run rbd device unmap -t nbd /dev/nbd0
    run rbd device unmap -t nbd volumes/ns1/vol2
    sleep 1
    run rbd device list -t nbd --format json
    section "rbd-nbd unmap of something not mapped"
    run rbd-nbd unmap /dev/nbd0
    run rbd-nbd unmap /dev/nbd7
    run rbd device unmap -t nbd /dev/nbd0
    run rbd device unmap -t nbd volumes/vol1
    section "rbd-nbd map of an image that does not exist"
    run rbd-nbd map volumes/nosuch --id cinder --keyring $K -m $MON
    state
} > "$OUT/nbd.txt" 2>&1
unmap_all
log "nbd done"

# ------------------------------------------------------------------ 4. unmap -----
{
    section "map, then unmap by device"
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON
    settle
    run rbd unmap /dev/rbd0
    sh_run 'ls -l /dev/rbd* 2>&1; ls /sys/bus/rbd/devices/'
    section "map, then unmap by spec (pool/image)"
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON
    settle
    run rbd unmap volumes/vol1
    section "map namespace image, then unmap by spec pool/ns/image"
    run rbd map volumes/ns1/vol2 --id cinder --keyring $K -m $MON
    settle
    run rbd unmap volumes/ns1/vol2
    section "unmap via rbd device unmap"
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON
    settle
    run rbd device unmap /dev/rbd0
    section "unmap of things not mapped"
    run rbd unmap /dev/rbd0
    run rbd unmap volumes/vol1
    run rbd unmap /dev/rbd9
    run rbd unmap volumes/nosuch
    run rbd unmap /dev/sda
    section "unmap while the device is held open (busy), then -o force"
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON
    settle
    sleep 30 < /dev/rbd0 & hold=$!
    sleep 0.5
    run rbd unmap /dev/rbd0
    run rbd unmap -o force /dev/rbd0
    kill $hold 2>/dev/null; wait $hold 2>/dev/null
    sh_run 'ls -l /dev/rbd* 2>&1; ls /sys/bus/rbd/devices/'
    section "unmap -o force of a not-busy device"
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON
    settle
    run rbd unmap -o force volumes/vol1
    section "sysfs remove interface (what rbd unmap writes)"
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON
    settle
    sh_run 'ls -l /sys/bus/rbd/; echo 0 > /sys/bus/rbd/remove_single_major 2>&1 || echo 0 > /sys/bus/rbd/remove'
    sh_run 'ls -l /dev/rbd* 2>&1; ls /sys/bus/rbd/devices/'
} > "$OUT/unmap.txt" 2>&1
unmap_all
log "unmap done"

# ------------------------------------------------------------------ 5. auth -----
BADKEY=$(ceph-authtool --gen-print-key)
printf '[client.cinder]\n\tkey = %s\n' "$BADKEY" > $D/wrong.keyring
printf '[client.nobody]\n\tkey = %s\n' "$BADKEY" > $D/nobody.keyring
{
    section "wrong key for client.cinder (well-formed, random)"
    sh_run "cat $D/wrong.keyring"
    run rbd map volumes/vol1 --id cinder --keyring $D/wrong.keyring -m $MON
    state
    section "unknown user client.nobody"
    sh_run "cat $D/nobody.keyring"
    run rbd map volumes/vol1 --id nobody --keyring $D/nobody.keyring -m $MON
    state
    section "keyring file without the user's section (client.cinder asked, keyring has client.nobody)"
    run rbd map volumes/vol1 --id cinder --keyring $D/nobody.keyring -m $MON
    section "malformed key (not base64)"
    printf '[client.cinder]\n\tkey = notakey\n' > $D/bad.keyring
    run rbd map volumes/vol1 --id cinder --keyring $D/bad.keyring -m $MON
    section "keyring file missing"
    run rbd map volumes/vol1 --id cinder --keyring $D/missing.keyring -m $MON
    section "user without caps on the pool"
    run ceph auth get-or-create client.nocaps mon 'profile rbd' -o $D/nocaps.keyring
    run rbd map volumes/vol1 --id nocaps --keyring $D/nocaps.keyring -m $MON
    state
    section "monitor nobody listens on (port 6790)"
    CMD_TIMEOUT=75 run rbd map volumes/vol1 --id cinder --keyring $K -m 127.0.0.1:6790
    state
    section "rbd-nbd: wrong key"
    run rbd-nbd map volumes/vol1 --id cinder --keyring $D/wrong.keyring -m $MON
    state
    section "rbd-nbd: unknown user"
    run rbd-nbd map volumes/vol1 --id nobody --keyring $D/nobody.keyring -m $MON
    state
    section "rbd device map -t nbd: wrong key"
    run rbd device map -t nbd volumes/vol1 --id cinder --keyring $D/wrong.keyring -m $MON
    state
    section "rbd-nbd: user without caps on the pool"
    run rbd-nbd map volumes/vol1 --id nocaps --keyring $D/nocaps.keyring -m $MON
    state
    section "rbd-nbd: monitor nobody listens on (port 6790)"
    CMD_TIMEOUT=60 run rbd-nbd map volumes/vol1 --id cinder --keyring $K -m 127.0.0.1:6790
    state
} > "$OUT/auth-errors.txt" 2>&1
unmap_all
log "auth done"

# ------------------------------------------------------------------ 6. resize -----
{
    section "krbd: resize while mapped"
    run rbd map volumes/vol1 --id cinder --keyring $K -m $MON
    settle
    sh_run 'cat /sys/block/rbd0/size; blockdev --getsize64 /dev/rbd0; cat /sys/bus/rbd/devices/0/size'
    ( wait_size rbd0 262144 > $D/t.size ) & wp=$!
    run rbd resize --size 128M volumes/vol1
    wait $wp; echo "poll started just before rbd resize:"; cat $D/t.size
    sh_run 'cat /sys/block/rbd0/size; blockdev --getsize64 /dev/rbd0; cat /sys/bus/rbd/devices/0/size'
    section "krbd: resize as client.cinder"
    ( wait_size rbd0 327680 > $D/t.size ) & wp=$!
    run rbd resize --size 160M volumes/vol1 --id cinder --keyring $K -m $MON
    wait $wp; cat $D/t.size
    section "krbd: refresh attribute"
    sh_run 'ls -l /sys/bus/rbd/devices/0/refresh; echo 1 > /sys/bus/rbd/devices/0/refresh; echo rc=$?'
    run rbd info volumes/vol1 --format json
    unmap_all
    section "rbd-nbd: resize while mapped"
    run rbd-nbd map volumes/vol1 --id cinder --keyring $K -m $MON
    settle
    sh_run 'cat /sys/block/nbd0/size; blockdev --getsize64 /dev/nbd0'
    ( wait_size nbd0 393216 > $D/t.size ) & wp=$!
    run rbd resize --size 192M volumes/vol1
    wait $wp; echo "poll started just before rbd resize:"; cat $D/t.size
    sh_run 'cat /sys/block/nbd0/size; blockdev --getsize64 /dev/nbd0'
    run rbd-nbd list-mapped --format json
    unmap_all
    section "shrink back (needs --allow-shrink)"
    run rbd resize --size 64M volumes/vol1
    run rbd resize --size 64M --allow-shrink volumes/vol1
    run rbd info volumes/vol1 --format json
} > "$OUT/resize.txt" 2>&1
unmap_all
log "resize done"

# ------------------------------------------------------------------ 7. no ceph.conf -----
mv /etc/ceph/ceph.conf $D/ceph.conf.saved
mv /etc/ceph/ceph.client.admin.keyring $D/admin.keyring.saved
printf '[global]\nmon host = %s\n' "$MON" > $D/min.conf
printf '[global]\nmon_host = %s\n\n[client.cinder]\nkeyring = %s\n' "$MON" "$D/min.keyring" > $D/oslike.conf
{
    section "no /etc/ceph/ceph.conf (and no admin keyring)"
    sh_run 'ls -l /etc/ceph/'
    section "-m + --keyring only"
    run rbd map volumes/vol1 --id cinder --keyring $D/min.keyring -m $MON
    unmap_all
    section "-m without port"
    run rbd map volumes/vol1 --id cinder --keyring $D/min.keyring -m 127.0.0.1
    unmap_all
    section "--conf /dev/null + -m"
    run rbd map volumes/vol1 --id cinder --keyring $D/min.keyring -m $MON --conf /dev/null
    unmap_all
    section "minimal conf: [global] mon host = ..., keyring on the command line"
    sh_run "cat $D/min.conf"
    run rbd map volumes/vol1 --id cinder --keyring $D/min.keyring --conf $D/min.conf
    unmap_all
    section "os-brick-like conf: mon_host + [client.cinder] keyring = path; no --keyring, no -m"
    sh_run "cat $D/oslike.conf"
    run rbd map volumes/vol1 --id cinder --conf $D/oslike.conf
    unmap_all
    run rbd map vol1 --pool volumes --id cinder --conf $D/oslike.conf
    unmap_all
    section "-c short form"
    run rbd map volumes/vol1 --id cinder -c $D/oslike.conf
    unmap_all
    section "no -m and no conf at all"
    run rbd map volumes/vol1 --id cinder --keyring $D/min.keyring
    unmap_all
    section "showmapped / unmap need no cluster access"
    run rbd map volumes/vol1 --id cinder --keyring $D/min.keyring -m $MON
    run rbd showmapped --format json
    run rbd unmap /dev/rbd0
    section "rbd-nbd without ceph.conf"
    run rbd-nbd map volumes/vol1 --id cinder --keyring $D/min.keyring -m $MON
    run rbd-nbd list-mapped --format json
    unmap_all
    run rbd-nbd map volumes/vol1 --id cinder --keyring $D/min.keyring -m $MON --conf /dev/null
    unmap_all
    run rbd-nbd map volumes/vol1 --id cinder --conf $D/oslike.conf
    unmap_all
    run rbd device map -t nbd volumes/vol1 --id cinder --keyring $D/min.keyring -m $MON
    unmap_all
    section "rbd resize / rbd info / rbd export as client.cinder without ceph.conf"
    run rbd info volumes/vol1 --id cinder --keyring $D/min.keyring -m $MON --format json
    run rbd resize --size 96M volumes/vol1 --id cinder --keyring $D/min.keyring -m $MON
    sh_run "rbd export volumes/vol1 - --id cinder --keyring $D/min.keyring -m $MON 2>$D/export.err | wc -c; cat $D/export.err"
    run rbd resize --size 64M --allow-shrink volumes/vol1 --id cinder --keyring $D/min.keyring -m $MON
    state
} > "$OUT/no-ceph-conf.txt" 2>&1
unmap_all
mv $D/ceph.conf.saved /etc/ceph/ceph.conf
mv $D/admin.keyring.saved /etc/ceph/ceph.client.admin.keyring
log "no-conf done"

{
    section "dmesg (rbd, libceph, nbd)"
    sh_run 'dmesg | grep -E "rbd|libceph|nbd|block nbd" | tail -n 200'
} > "$OUT/dmesg.txt" 2>&1
log "all captured"
exit 0
