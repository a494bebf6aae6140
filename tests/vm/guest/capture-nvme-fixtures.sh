#!/bin/bash
# Captures what nvme-cli and the 6.1 kernel really print/expose for an NVMe/TCP attach, as
# plain-text fixtures for the NVMe-oF connector's unit tests (tests/fixtures/nvme/).
#
#   HOSTBRICK_VM_SCENARIOS=fixture-capture tests/vm/run-suite.sh
#   cp target/vm/share/results/nvme-fixtures/* tests/fixtures/nvme/
#
# Target: nvmet on 127.0.0.1:4420, one subsystem with two file-backed namespaces (known
# device_uuid/device_nguid), plus a one-namespace subsystem. Every command is shown as run,
# with its stdout, stderr and exit code.
# shellcheck shell=bash
set -u
OUT=${1:?output dir}
mkdir -p "$OUT"
NVMET=/sys/kernel/config/nvmet
STATE=/var/tmp/hostbrick-capture
NQN=nqn.2014-08.org.hostbrick:vm1
NQN1=nqn.2014-08.org.hostbrick:single
UUID1=11111111-2222-4333-8444-000000000001 NGUID1=aaaaaaaa-bbbb-cccc-dddd-000000000001
UUID2=11111111-2222-4333-8444-000000000002 NGUID2=aaaaaaaa-bbbb-cccc-dddd-000000000002
UUID3=11111111-2222-4333-8444-000000000003 NGUID3=aaaaaaaa-bbbb-cccc-dddd-000000000003
SIZE1=$((64 * 1024 * 1024)) SIZE2=$((96 * 1024 * 1024)) SIZE3=$((32 * 1024 * 1024))

# run CMD...: show the command, its stdout, stderr, exit code
run() {
    local rc
    printf '$ %s\n' "$*"
    "$@" > /tmp/cap.out 2> /tmp/cap.err; rc=$?
    echo "--- stdout"; cat /tmp/cap.out
    echo "--- stderr"; cat /tmp/cap.err
    echo "--- exit code: $rc"
    echo
    return $rc
}
# sh_run 'SHELL TEXT': same, through bash -c (pipes, loops, redirections)
sh_run() { run bash -c "$1"; }
section() { echo; echo "===== $*"; echo; }

ns() {   # ns SUBSYS NSID FILE SIZE UUID NGUID
    local d=$NVMET/subsystems/$1/namespaces/$2
    truncate -s "$4" "$3"
    mkdir -p "$d"
    echo -n "$3" > "$d/device_path"
    echo "$5" > "$d/device_uuid"
    echo "$6" > "$d/device_nguid"
    echo 1 > "$d/enable"
}

modprobe -a nvmet nvmet_tcp nvme_tcp nvme_fabrics
mkdir -p "$STATE"
for s in $NQN $NQN1; do mkdir -p "$NVMET/subsystems/$s"; echo 1 > "$NVMET/subsystems/$s/attr_allow_any_host"; done
ns $NQN 1 "$STATE/ns1.img" $SIZE1 $UUID1 $NGUID1
ns $NQN 2 "$STATE/ns2.img" $SIZE2 $UUID2 $NGUID2
ns $NQN1 1 "$STATE/single.img" $SIZE3 $UUID3 $NGUID3
P=$NVMET/ports/1
mkdir -p $P
echo ipv4 > $P/addr_adrfam; echo tcp > $P/addr_trtype; echo 127.0.0.1 > $P/addr_traddr; echo 4420 > $P/addr_trsvcid
ln -s "$NVMET/subsystems/$NQN" "$P/subsystems/$NQN"
ln -s "$NVMET/subsystems/$NQN1" "$P/subsystems/$NQN1"

HOSTNQN=$(cat /etc/nvme/hostnqn 2>/dev/null)
HOSTID=$(cat /etc/nvme/hostid 2>/dev/null)

{
    section "target setup (nvmet configfs, done before the captures)"
    echo "subsystem $NQN: ns 1 file $STATE/ns1.img size $SIZE1 device_uuid $UUID1 device_nguid $NGUID1"
    echo "subsystem $NQN: ns 2 file $STATE/ns2.img size $SIZE2 device_uuid $UUID2 device_nguid $NGUID2"
    echo "subsystem $NQN1: ns 1 file $STATE/single.img size $SIZE3 device_uuid $UUID3 device_nguid $NGUID3"
    echo "port 1: tcp ipv4 127.0.0.1:4420, both subsystems, attr_allow_any_host=1"
    sh_run "grep -r . $NVMET/subsystems/*/namespaces/*/ 2>/dev/null | grep -v '/ana_grpid\|p2pmem'"
    sh_run "uname -r"
    run nvme version
    sh_run "dpkg-query -W nvme-cli libnvme1"
} > "$OUT/environment.txt" 2>&1

{
    section "host identity files"
    sh_run "ls -l /etc/nvme/"
    sh_run "cat /etc/nvme/hostnqn; echo; od -c /etc/nvme/hostnqn | tail -n 3"
    sh_run "cat /etc/nvme/hostid; echo; od -c /etc/nvme/hostid | tail -n 3"
    sh_run "ls -l /sys/class/dmi/id/product_uuid; cat /sys/class/dmi/id/product_uuid"
    run nvme gen-hostnqn
    run nvme show-hostnqn
    sh_run "cat /sys/class/dmi/id/sys_vendor /sys/class/dmi/id/product_name"
    sh_run "ls /etc/nvme/; cat /etc/nvme/discovery.conf 2>/dev/null; cat /etc/nvme/config.json 2>/dev/null"
    sh_run "dpkg -L nvme-cli | grep -i -E 'etc|udev|systemd' "
} > "$OUT/hostnqn-hostid.txt" 2>&1

{
    section "before connect"
    sh_run "ls -l /sys/class/nvme/ /sys/class/nvme-subsystem/ /sys/class/nvme-fabrics/ 2>&1"
    sh_run "ls -la /sys/class/nvme-fabrics/ctl/"
    sh_run "cat /sys/module/nvme_core/parameters/multipath"
    section "connect (first time)"
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -q "$HOSTNQN" -I "$HOSTID"
    udevadm settle --timeout=10
    sh_run "ls -l /dev/nvme*"
    section "connect again: same command, already connected"
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -q "$HOSTNQN" -I "$HOSTID"
    section "connect again with -o json"
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -q "$HOSTNQN" -I "$HOSTID" -o json
    section "connect again with --duplicate-connect (-D)"
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -q "$HOSTNQN" -I "$HOSTID" -D
    sh_run "ls /sys/class/nvme/ /sys/class/nvme-subsystem/*/ | grep nvme"
    section "the -D duplicate, if nvme-cli created one, is removed again (keep the first controller)"
    sh_run 'n=$(ls /sys/class/nvme/ | wc -l); if [ $n -gt 1 ]; then c=$(ls /sys/class/nvme/ | sort -V | tail -n1); echo "removing duplicate $c"; nvme disconnect -d $c; else echo "no duplicate controller ($n controller)"; fi'
    udevadm settle --timeout=10
    section "connect of the second subsystem with -o json (new controller)"
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN1 -q "$HOSTNQN" -I "$HOSTID" -o json
    section "connect without -q/-I (nvme-cli defaults from /etc/nvme)"
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN1
    section "connect to an NQN the target does not export"
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n nqn.2014-08.org.hostbrick:nosuch -q "$HOSTNQN" -I "$HOSTID"
    section "connect to a port nobody listens on"
    run timeout 60 nvme connect -t tcp -a 127.0.0.1 -s 4421 -n $NQN -q "$HOSTNQN" -I "$HOSTID"
    section "connect with a host NQN the subsystem does not allow (subsystem allows any host: expect success; see disconnect.txt for the not-allowed case)"
    section "dmesg"
    sh_run "dmesg | grep -i nvme | tail -n 40"
} > "$OUT/connect.txt" 2>&1

{
    section "sysfs after connecting $NQN (2 namespaces) and $NQN1 (1 namespace)"
    sh_run "ls -l /sys/class/nvme/ /sys/class/nvme-subsystem/"
    for c in /sys/class/nvme/*; do sh_run "ls -la $c/"; done
    for s in /sys/class/nvme-subsystem/*; do sh_run "ls -la $s/"; done
    sh_run 'for l in /sys/class/nvme/* /sys/class/nvme-subsystem/* /sys/block/nvme*; do echo "$l -> $(readlink -f $l)"; done'
    sh_run 'ls -l /sys/block/ | grep nvme'
    sh_run 'ls /sys/block'
    for c in /sys/class/nvme/*; do
        sh_run "cd $c && for f in address transport subsysnqn hostnqn hostid state cntlid model serial firmware_rev numa_node queue_count sqsize kato ctrl_loss_tmo reconnect_delay fast_io_fail_tmo dev; do printf '%s=' \$f; if [ -e \$f ]; then printf '[%s]\n' \"\$(cat \$f 2>&1)\"; else echo MISSING; fi; done"
        sh_run "cd $c && for f in address subsysnqn state; do echo \"--- od -c \$f\"; od -c \$f; done"
    done
    for s in /sys/class/nvme-subsystem/*; do
        sh_run "cd $s && for f in subsysnqn model serial firmware_rev iopolicy subsystype; do printf '%s=' \$f; if [ -e \$f ]; then printf '[%s]\n' \"\$(cat \$f 2>&1)\"; else echo MISSING; fi; done"
    done
    for b in /sys/block/nvme*; do
        sh_run "ls -la $b/"
        sh_run "cd $b && for f in uuid nguid nsid wwid eui size dev ro hidden removable; do printf '%s=' \$f; if [ -e \$f ]; then printf '[%s]\n' \"\$(cat \$f 2>&1)\"; else echo MISSING; fi; done"
        sh_run "ls -la $b/device/ 2>&1 | head -n 20; readlink -f $b/device"
        sh_run "ls $b/multipath 2>&1; ls -l $b/slaves $b/holders 2>&1"
    done
    section "path entries under the controllers (nvmeXcYnZ)"
    for p in /sys/class/nvme/*/nvme*c*n*; do
        [ -e "$p" ] || continue
        sh_run "ls -la $p/"
        sh_run "cd $p && for f in uuid nguid nsid wwid eui size dev ana_state ana_grpid hidden; do printf '%s=' \$f; if [ -e \$f ]; then printf '[%s]\n' \"\$(cat \$f 2>&1)\"; else echo MISSING; fi; done"
        sh_run "readlink -f $p; ls -la $p/mpath 2>&1"
    done
    sh_run "ls -l /dev/nvme* /dev/ng* 2>&1"
    sh_run "udevadm settle; ls -l /dev/disk/by-id/ | grep -i nvme"
    sh_run "ls -l /dev/disk/by-path/ 2>&1 | grep -i nvme"
    for d in /dev/nvme*n*; do [ -b "$d" ] && sh_run "blockdev --getsize64 $d; udevadm info --query=property $d"; done
    sh_run "cat /sys/module/nvme_core/parameters/multipath"
    sh_run "ls /sys/module/nvme_core/parameters/; grep -r . /sys/module/nvme_core/parameters/"
} > "$OUT/sysfs-after-connect.txt" 2>&1

{
    section "nvme-cli views while both subsystems are connected"
    run nvme list-subsys -o json
    run nvme list-subsys
    run nvme list -o json
    run nvme list -v -o json
    run nvme list
    sh_run 'for d in /dev/nvme*n*; do [ -b $d ] && nvme list-subsys -o json $d; done'
    sh_run 'for d in /dev/nvme*n*; do [ -b $d ] && { echo "== $d"; nvme id-ns -o json $d | head -c 3000; echo; nvme ns-descs -o json $d; }; done'
} > "$OUT/list-subsys.txt" 2>&1

{
    section "extend: grow ns 1 of $NQN from $SIZE1 to $((SIZE1 * 2)) bytes"
    sh_run "ls $NVMET/subsystems/$NQN/namespaces/1/"
    B=""; for f in /sys/block/nvme*n*/uuid; do case ${f#/sys/block/} in nvme*c*n*) continue;; esac; [ "$(cat $f)" = $UUID1 ] && B=$(basename "$(dirname $f)"); done
    echo "block device of ns 1 (by uuid): $B"
    sh_run "blockdev --getsize64 /dev/$B; cat /sys/block/$B/size"
    run truncate -s $((SIZE1 * 2)) "$STATE/ns1.img"
    sleep 2
    sh_run "echo 'after truncate only:'; blockdev --getsize64 /dev/$B; cat /sys/block/$B/size"
    sh_run "echo 1 > $NVMET/subsystems/$NQN/namespaces/1/revalidate_size"
    sleep 3
    sh_run "echo 'after revalidate_size (AEN ns-changed -> host rescans):'; blockdev --getsize64 /dev/$B; cat /sys/block/$B/size; for p in /sys/class/nvme/*/nvme*c*n*; do [ \"\$(cat \$p/uuid)\" = $UUID1 ] && echo \"\$p size \$(cat \$p/size)\"; done"
    C=""; for c in /sys/class/nvme/*; do [ "$(cat $c/subsysnqn)" = $NQN ] && C=$(basename $c); done
    run nvme ns-rescan /dev/$C
    sh_run "blockdev --getsize64 /dev/$B; cat /sys/block/$B/size"
    sh_run "ls -la /sys/class/nvme/$C/ | grep -E 'rescan|reset|delete'"
    sh_run "echo 1 > /sys/class/nvme/$C/rescan_controller; blockdev --getsize64 /dev/$B"
    section "extend by disable/enable of the namespace (the other way to make nvmet see a new size)"
    run truncate -s $((SIZE1 * 3)) "$STATE/ns1.img"
    sh_run "echo 0 > $NVMET/subsystems/$NQN/namespaces/1/enable; echo 1 > $NVMET/subsystems/$NQN/namespaces/1/enable"
    sleep 3
    sh_run "blockdev --getsize64 /dev/$B; cat /sys/block/$B/size; ls -l /dev/nvme*n*"
    sh_run "dmesg | tail -n 25"
} > "$OUT/extend.txt" 2>&1

{
    section "disconnect"
    sh_run "ls /sys/class/nvme/; for c in /sys/class/nvme/*; do echo \$c \$(cat \$c/subsysnqn); done"
    run nvme disconnect -n $NQN1
    udevadm settle --timeout=10
    sh_run "ls /sys/class/nvme/"
    section "disconnect -n again (nothing connected for that NQN)"
    run nvme disconnect -n $NQN1
    section "disconnect -d of a controller name that does not exist"
    run nvme disconnect -d nvme9
    section "disconnect -d with /dev/ prefix, of a controller that does not exist"
    run nvme disconnect -d /dev/nvme9
    section "disconnect -d of the controller of $NQN"
    C=""; for c in /sys/class/nvme/*; do [ "$(cat $c/subsysnqn)" = $NQN ] && C=$(basename $c); done
    echo "controller of $NQN: $C"
    run nvme disconnect -d $C
    udevadm settle --timeout=10
    sh_run "ls /sys/class/nvme/ /sys/class/nvme-subsystem/ ; ls /sys/block; ls -l /dev/nvme* 2>&1"
    section "reconnect, then remove through sysfs delete_controller"
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -q "$HOSTNQN" -I "$HOSTID"
    udevadm settle --timeout=10
    C=""; for c in /sys/class/nvme/*; do [ "$(cat $c/subsysnqn)" = $NQN ] && C=$(basename $c); done
    sh_run "ls -l /sys/class/nvme/$C/delete_controller; ls /sys/block | grep nvme"
    sh_run "time (echo 1 > /sys/class/nvme/$C/delete_controller); echo rc=\$?; ls /sys/class/nvme/ /sys/class/nvme-subsystem/; ls /sys/block"
    udevadm settle --timeout=10
    sh_run "ls -l /dev/nvme* 2>&1"
    section "reconnect, disconnect -n with two controllers to the same NQN (one -D duplicate)"
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -q "$HOSTNQN" -I "$HOSTID"
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -q "$HOSTNQN" -I "$HOSTID" -D
    sh_run "ls /sys/class/nvme/; ls /sys/class/nvme-subsystem/*/ | grep nvme; ls /sys/block"
    run nvme disconnect -n $NQN
    udevadm settle --timeout=10
    sh_run "ls /sys/class/nvme/ /sys/class/nvme-subsystem/; ls /sys/block"
    section "disconnect-all with nothing connected"
    run nvme disconnect-all
    section "host not allowed: subsystem with attr_allow_any_host=0 and no hosts"
    echo 0 > "$NVMET/subsystems/$NQN/attr_allow_any_host"
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -q "$HOSTNQN" -I "$HOSTID"
    echo 1 > "$NVMET/subsystems/$NQN/attr_allow_any_host"
    sh_run "dmesg | grep -i nvme | tail -n 30"
} > "$OUT/disconnect.txt" 2>&1

{
    section "native NVMe multipath: $NQN through two ports (127.0.0.1:4420 and 127.0.0.2:4420); controller and head names diverge"
    P2=$NVMET/ports/2
    mkdir -p $P2
    echo ipv4 > $P2/addr_adrfam; echo tcp > $P2/addr_trtype; echo 127.0.0.2 > $P2/addr_traddr; echo 4420 > $P2/addr_trsvcid
    ln -s "$NVMET/subsystems/$NQN" "$P2/subsystems/$NQN"
    nvme disconnect-all >/dev/null 2>&1; udevadm settle --timeout=10
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN1 -q "$HOSTNQN" -I "$HOSTID" -o json
    run nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -q "$HOSTNQN" -I "$HOSTID" -o json
    section "uevents (kernel and udev) while the second path of $NQN connects (udevadm monitor)"
    udevadm monitor --kernel --udev --property > /tmp/cap.monitor 2>&1 &
    MON=$!
    sleep 1
    run nvme connect -t tcp -a 127.0.0.2 -s 4420 -n $NQN -q "$HOSTNQN" -I "$HOSTID" -o json
    udevadm settle --timeout=10
    sleep 2
    kill $MON; wait $MON 2>/dev/null
    echo "\$ udevadm monitor --kernel --udev --property   (started before the connect, stopped 2s after settle)"
    cat /tmp/cap.monitor
    echo
    sh_run 'echo "summary (action devpath):"; grep -E "^(KERNEL|UDEV)" /tmp/cap.monitor'
    sh_run 'for l in /sys/class/nvme/* /sys/class/nvme-subsystem/* /sys/block/nvme*; do echo "$l -> $(readlink -f $l)"; done'
    sh_run 'for c in /sys/class/nvme/*; do echo "$c: subsysnqn=$(cat $c/subsysnqn) address=$(cat $c/address) state=$(cat $c/state) cntlid=$(cat $c/cntlid)"; ls -d $c/nvme*; done'
    sh_run 'ls /sys/class/nvme-subsystem/*/'
    sh_run 'for b in /sys/block/nvme*; do echo "$b uuid=$(cat $b/uuid) nsid=$(cat $b/nsid) hidden=$(cat $b/hidden) ana_state=$(cat $b/ana_state 2>&1)"; done'
    run nvme list-subsys -o json
    section "drop the first path of $NQN (disconnect -d of the controller on 127.0.0.1)"
    C=""; for c in /sys/class/nvme/*; do [ "$(cat $c/subsysnqn)" = $NQN ] && case $(cat $c/address) in traddr=127.0.0.1,*) C=$(basename $c);; esac; done
    run nvme disconnect -d $C
    udevadm settle --timeout=10
    sh_run 'ls /sys/class/nvme/ /sys/class/nvme-subsystem/*/; ls /sys/block; ls -l /dev/nvme*'
    run nvme disconnect -n $NQN
    run nvme disconnect -n $NQN1
    sh_run 'ls /sys/class/nvme/ /sys/class/nvme-subsystem/; ls /sys/block'
} > "$OUT/multipath-two-portals.txt" 2>&1

# teardown
nvme disconnect-all >/dev/null 2>&1
for x in "$NVMET"/ports/*/subsystems/*; do [ -L "$x" ] && rm -f "$x"; done
rmdir "$NVMET"/ports/* 2>/dev/null
for x in "$NVMET"/subsystems/*/namespaces/*; do echo 0 > "$x/enable"; rmdir "$x"; done
rmdir "$NVMET"/subsystems/* 2>/dev/null
rm -rf "$STATE"
ls "$OUT"
