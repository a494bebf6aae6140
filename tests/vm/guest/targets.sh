# Storage targets inside the hostbrick test guest, all on loopback. Sourced by the scenarios.
# shellcheck shell=bash
#
#   iSCSI   LIO through configfs (no targetcli): fileio backstores on sparse files, one TPG per
#           target, portals on 127.0.0.x:3260, demo mode or per-initiator ACLs with CHAP.
#   NVMe    nvmet through configfs: TCP port on 127.0.0.1:4420.
#   RDMA    soft-RoCE (rdma_rxe) on a veth link with its own address (rdma_up): LIO portals with
#           iSER on (lio_portal_iser), nvmet RDMA ports (nvmet_port with trtype rdma).
#   Ceph    one mon + one OSD (memstore), pool size 1, no mgr.

LIO=/sys/kernel/config/target
NVMET=/sys/kernel/config/nvmet
TARGET_STATE=${TARGET_STATE:-/var/tmp/hostbrick-targets}
INITIATOR_IQN=$(sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi 2>/dev/null)

targets_modules() {
    modprobe -a target_core_mod target_core_file iscsi_target_mod nvmet nvmet_tcp nvme_tcp nvme_fabrics
}

# ---------------------------------------------------------------- LIO (iSCSI) -----

# The WWID udev (scsi_id) reports for a LIO LUN whose vpd_unit_serial is SERIAL:
# NAA 6, IEEE company id 0x001405, then the first 25 hex digits of the serial (zero padded).
lio_expected_wwid() {
    local hex
    hex=$(printf '%s' "$1" | tr -cd '0-9a-fA-F' | tr 'A-F' 'a-f' | cut -c1-25)
    while [ ${#hex} -lt 25 ]; do hex=${hex}0; done
    echo "36001405$hex"
}

# lio_backstore NAME SIZE_BYTES SERIAL  -> fileio backstore on a sparse file
lio_backstore() {
    local name=$1 size=$2 serial=$3 file dir=$LIO/core/fileio_0/$1
    mkdir -p "$TARGET_STATE"
    file=$TARGET_STATE/$name.img
    rm -f "$file"; truncate -s "$size" "$file" || return 1
    mkdir -p "$dir" || return 1
    echo "fd_dev_name=$file,fd_dev_size=$size" > "$dir/control" || return 1
    echo -n "$serial" > "$dir/wwn/vpd_unit_serial" || return 1
    echo 1 > "$dir/enable" || return 1
}

lio_backstore_file() { echo "$TARGET_STATE/$1.img"; }

# lio_backstore_resize NAME NEW_SIZE_BYTES: grow the file, then tell LIO the new size.
# On 6.1 fileio takes the capacity of a regular file from fd_dev_size (not from the file), and
# the control attribute accepts a new fd_dev_size while the device is live.
lio_backstore_resize() {
    local name=$1 size=$2
    truncate -s "$size" "$(lio_backstore_file "$name")" || return 1
    echo "fd_dev_size=$size" > "$LIO/core/fileio_0/$name/control" || return 1
}

lio_tpg() { echo "$LIO/iscsi/$1/tpgt_1"; }

# lio_target IQN
lio_target() { mkdir -p "$(lio_tpg "$1")"; }

# lio_lun IQN LUN BACKSTORE
lio_lun() {
    local tpg; tpg=$(lio_tpg "$1")
    mkdir -p "$tpg/lun/lun_$2" || return 1
    ln -s "$LIO/core/fileio_0/$3" "$tpg/lun/lun_$2/$3"
}

# lio_portal IQN IP:PORT
lio_portal() { mkdir "$(lio_tpg "$1")/np/$2"; }

# lio_demo_mode IQN: any initiator, all LUNs, read-write, no authentication.
lio_demo_mode() {
    local a; a=$(lio_tpg "$1")/attrib
    echo 1 > "$a/generate_node_acls" && echo 1 > "$a/cache_dynamic_acls" \
        && echo 0 > "$a/demo_mode_write_protect" && echo 0 > "$a/authentication"
}

# lio_acl IQN INITIATOR_IQN [CHAP_USER CHAP_PASSWORD]: an ACL mapping every LUN of the TPG;
# with CHAP credentials, authentication is required. The secrets are written with echo -n:
# a trailing newline would become part of the secret.
lio_acl() {
    local tpg acl lun; tpg=$(lio_tpg "$1"); acl=$tpg/acls/$2
    echo 0 > "$tpg/attrib/generate_node_acls" || return 1
    mkdir -p "$acl" || return 1
    for lun in "$tpg"/lun/lun_*; do
        [ -d "$lun" ] || continue
        mkdir -p "$acl/${lun##*/}" && ln -s "$lun" "$acl/${lun##*/}/map" || return 1
    done
    if [ $# -ge 4 ]; then
        echo -n "$3" > "$acl/auth/userid" && echo -n "$4" > "$acl/auth/password" \
            && echo 1 > "$tpg/attrib/authentication" || return 1
    else
        echo 0 > "$tpg/attrib/authentication"
    fi
}

lio_enable() { echo 1 > "$(lio_tpg "$1")/enable"; }

# lio_simple_target IQN BACKSTORE SIZE SERIAL PORTAL...: one LUN 0, demo mode, enabled.
lio_simple_target() {
    local iqn=$1 bs=$2 size=$3 serial=$4 p; shift 4
    lio_backstore "$bs" "$size" "$serial" && lio_target "$iqn" && lio_lun "$iqn" 0 "$bs" || return 1
    for p in "$@"; do lio_portal "$iqn" "$p" || return 1; done
    lio_demo_mode "$iqn" && lio_enable "$iqn"
}

# Remove every LIO object (in dependency order) and the backing files.
lio_teardown_all() {
    local tgt tpg x
    for tgt in "$LIO"/iscsi/iqn.* "$LIO"/iscsi/eui.* "$LIO"/iscsi/naa.*; do
        [ -d "$tgt" ] || continue
        for tpg in "$tgt"/tpgt_*; do
            [ -d "$tpg" ] || continue
            echo 0 > "$tpg/enable" 2>/dev/null
            for x in "$tpg"/acls/*/lun_*/*; do [ -L "$x" ] && rm -f "$x"; done
            for x in "$tpg"/acls/*/lun_*; do [ -d "$x" ] && rmdir "$x"; done
            for x in "$tpg"/acls/*; do [ -d "$x" ] && rmdir "$x"; done
            for x in "$tpg"/np/*; do [ -d "$x" ] && rmdir "$x"; done
            for x in "$tpg"/lun/lun_*/*; do [ -L "$x" ] && rm -f "$x"; done
            for x in "$tpg"/lun/lun_*; do [ -d "$x" ] && rmdir "$x"; done
            rmdir "$tpg"
        done
        rmdir "$tgt"
    done
    for x in "$LIO"/core/fileio_*/*; do [ -d "$x" ] && [ -f "$x/control" ] && rmdir "$x"; done
    for x in "$LIO"/core/fileio_*; do [ -d "$x" ] && rmdir "$x"; done
    rm -f "$TARGET_STATE"/*.img
    return 0
}

# ---------------------------------------------------------------- nvmet (NVMe/TCP) -----

# nvmet_tcp_subsystem NQN NSID SIZE_BYTES [PORT_ID] -> namespace on a sparse file, exported on
# 127.0.0.1:4420 (any host).
nvmet_tcp_subsystem() {
    local nqn=$1 nsid=$2 size=$3 port=${4:-1} sub=$NVMET/subsystems/$1 file
    mkdir -p "$TARGET_STATE"; file=$TARGET_STATE/nvme-${nsid}-${nqn##*:}.img
    truncate -s "$size" "$file" || return 1
    mkdir -p "$sub" && echo 1 > "$sub/attr_allow_any_host" || return 1
    mkdir -p "$sub/namespaces/$nsid" && echo -n "$file" > "$sub/namespaces/$nsid/device_path" \
        && echo 1 > "$sub/namespaces/$nsid/enable" || return 1
    if [ ! -d "$NVMET/ports/$port" ]; then
        mkdir "$NVMET/ports/$port" || return 1
        echo ipv4 > "$NVMET/ports/$port/addr_adrfam"
        echo tcp > "$NVMET/ports/$port/addr_trtype"
        echo 127.0.0.1 > "$NVMET/ports/$port/addr_traddr"
        echo 4420 > "$NVMET/ports/$port/addr_trsvcid"
    fi
    ln -s "$sub" "$NVMET/ports/$port/subsystems/$nqn"
}

# nvmet_namespace NQN NSID SIZE_BYTES [UUID [NGUID]] -> creates the subsystem (any host) if
# needed and a namespace on a sparse file with the given device_uuid / device_nguid, enabled.
nvmet_namespace() {
    local nqn=$1 nsid=$2 size=$3 uuid=${4:-} nguid=${5:-} sub=$NVMET/subsystems/$1 file d
    mkdir -p "$TARGET_STATE"; file=$(nvmet_namespace_file "$nqn" "$nsid")
    rm -f "$file"; truncate -s "$size" "$file" || return 1
    mkdir -p "$sub" && echo 1 > "$sub/attr_allow_any_host" || return 1
    d=$sub/namespaces/$nsid
    mkdir -p "$d" && echo -n "$file" > "$d/device_path" || return 1
    if [ -n "$uuid" ]; then echo "$uuid" > "$d/device_uuid" || return 1; fi
    if [ -n "$nguid" ]; then echo "$nguid" > "$d/device_nguid" || return 1; fi
    echo 1 > "$d/enable"
}

nvmet_namespace_file() { echo "$TARGET_STATE/nvme-$2-${1##*:}.img"; }

# nvmet_port PORT_ID IP [SVCID [TRTYPE]]: a port (ipv4; TCP unless TRTYPE is rdma); no-op if
# it exists.
nvmet_port() {
    local p=$NVMET/ports/$1
    [ -d "$p" ] && return 0
    mkdir "$p" || return 1
    echo ipv4 > "$p/addr_adrfam" && echo "${4:-tcp}" > "$p/addr_trtype" \
        && echo "$2" > "$p/addr_traddr" && echo "${3:-4420}" > "$p/addr_trsvcid"
}

# nvmet_export NQN PORT_ID: the subsystem becomes reachable through the port.
nvmet_export() { ln -s "$NVMET/subsystems/$1" "$NVMET/ports/$2/subsystems/$1"; }

# nvmet_namespace_resize NQN NSID NEW_SIZE_BYTES: grow the file, then revalidate_size (6.1:
# works for file-backed namespaces; nvmet sends a namespace-changed AEN and the host picks up
# the new capacity by itself).
nvmet_namespace_resize() {
    truncate -s "$3" "$(nvmet_namespace_file "$1" "$2")" || return 1
    echo 1 > "$NVMET/subsystems/$1/namespaces/$2/revalidate_size"
}

nvmet_teardown_all() {
    local x
    for x in "$NVMET"/ports/*/subsystems/*; do [ -L "$x" ] && rm -f "$x"; done
    for x in "$NVMET"/ports/*; do [ -d "$x" ] && rmdir "$x"; done
    for x in "$NVMET"/subsystems/*/namespaces/*; do
        [ -d "$x" ] || continue; echo 0 > "$x/enable"; rmdir "$x"
    done
    for x in "$NVMET"/subsystems/*; do [ -d "$x" ] && rmdir "$x"; done
    rm -f "$TARGET_STATE"/nvme-*.img
    return 0
}

# ---------------------------------------------------------------- RDMA (soft-RoCE) -----
# What the kernel's blktests do with use_rxe=1: an rxe device on an Ethernet link that has an
# address; the initiator and the target both use that address (rxe loops traffic between its
# own addresses back inside the device). The guest has no network: the link is one end of a
# veth pair, both ends up (a veth end has carrier only while its peer is up).
RDMA_NETDEV=${RDMA_NETDEV:-hbrdma0}
RDMA_PEER=${RDMA_PEER:-hbrdma1}
RDMA_RXE=${RDMA_RXE:-hbrxe0}
RDMA_IP=${RDMA_IP:-10.77.0.1}

# rdma_up: the veth pair, RDMA_IP/24 on RDMA_NETDEV, the rxe device over it (ACTIVE), and the
# targets' RDMA modules. The initiators' (ib_iser, nvme-rdma) are left to what loads them on a
# real host: iscsid at the first iSER login, the kernel at the first NVMe/RDMA connect.
# Idempotent.
rdma_up() {
    modprobe -a rdma_rxe rdma_cm ib_isert nvmet_rdma || return 1
    if [ ! -e "/sys/class/net/$RDMA_NETDEV" ]; then
        ip link add "$RDMA_NETDEV" type veth peer name "$RDMA_PEER" || return 1
    fi
    ip addr replace "$RDMA_IP/24" dev "$RDMA_NETDEV" || return 1
    ip link set "$RDMA_PEER" up && ip link set "$RDMA_NETDEV" up || return 1
    if [ ! -e "/sys/class/infiniband/$RDMA_RXE" ]; then
        rdma link add "$RDMA_RXE" type rxe netdev "$RDMA_NETDEV" || return 1
    fi
    local n=0
    until rdma link show "$RDMA_RXE/1" 2>/dev/null | grep -q 'state ACTIVE'; do
        n=$((n + 1)); [ $n -gt 100 ] && { rdma link show >&2; return 1; }
        sleep 0.1
    done
}

# rdma_down: the rxe device and the veth pair gone (after every target and initiator use).
rdma_down() {
    [ -e "/sys/class/infiniband/$RDMA_RXE" ] && rdma link delete "$RDMA_RXE"
    [ -e "/sys/class/net/$RDMA_NETDEV" ] && ip link delete "$RDMA_NETDEV"
    return 0
}

rdma_state() {   # for the logs
    echo "rdma links: $(rdma link show 2>&1 | tr '\n' ';') netdev: $(ip -br addr show dev "$RDMA_NETDEV" 2>&1)"
}

# lio_portal_iser IQN IP:PORT: the portal, with iSER on (LIO's np `iser` attribute, what
# targetcli's enable_iser sets; ib_isert listens on the address through the RDMA CM).
lio_portal_iser() {
    local np; np=$(lio_tpg "$1")/np/$2
    [ -d "$np" ] || mkdir "$np" || return 1
    echo 1 > "$np/iser"
}

# ---------------------------------------------------------------- Ceph -----

# ceph_one_node_up [POOL]: one mon (cephx, v2+v1 on 127.0.0.1), one memstore OSD, pool of size 1
# initialised for rbd. No mgr: avoid mgr commands (`ceph pg stat` would block forever).
# Leaves /etc/ceph/ceph.conf and the client.admin keyring in place.
ceph_one_node_up() {
    local pool=${1:-volumes} fsid osd_uuid i
    command -v ceph-mon >/dev/null || { echo "ceph is not installed in this guest" >&2; return 1; }
    fsid=$(cat /proc/sys/kernel/random/uuid)
    mkdir -p /etc/ceph /var/lib/ceph/mon/ceph-a /var/lib/ceph/osd/ceph-0 /var/log/ceph /run/ceph
    cat > /etc/ceph/ceph.conf <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
mon initial members = a
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
ms bind ipv6 = false
osd objectstore = memstore
memstore device bytes = 1073741824
osd memory target = 939524096
log to stderr = false
pid file = /run/ceph/\$cluster-\$name.pid
log file = /var/log/ceph/\$name.log
EOF
    ceph-authtool --create-keyring /run/ceph/mon.keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null || return 1
    ceph-authtool --create-keyring /etc/ceph/ceph.client.admin.keyring --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null || return 1
    ceph-authtool /run/ceph/mon.keyring --import-keyring /etc/ceph/ceph.client.admin.keyring >/dev/null || return 1
    monmaptool --create --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' --fsid "$fsid" /run/ceph/monmap >/dev/null || return 1
    ceph-mon --mkfs -i a --monmap /run/ceph/monmap --keyring /run/ceph/mon.keyring && ceph-mon -i a || return 1
    for i in $(seq 1 120); do timeout 10 ceph -s --connect-timeout 5 >/dev/null 2>&1 && break; sleep 1; done
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    timeout 60 ceph osd new "$osd_uuid" >/dev/null || return 1
    timeout 60 ceph auth get-or-create osd.0 mon 'allow profile osd' osd 'allow *' mgr 'allow profile osd' \
        -o /var/lib/ceph/osd/ceph-0/keyring || return 1
    ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1 && ceph-osd -i 0 2>/dev/null || return 1
    for i in $(seq 1 180); do timeout 10 ceph osd stat 2>/dev/null | grep -q '1 up' && break; sleep 1; done
    timeout 10 ceph osd stat | grep -q '1 up' || return 1
    timeout 60 ceph osd pool create "$pool" 8 8 >/dev/null 2>&1 && timeout 120 rbd pool init "$pool"
}

ceph_teardown() {
    local f pid i
    for f in /run/ceph/ceph-osd.0.pid /run/ceph/ceph-mon.a.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f"); kill "$pid" 2>/dev/null || continue
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    # the monmap and mon keyring too: the next ceph_one_node_up makes new ones
    rm -rf /var/lib/ceph/mon/ceph-a /var/lib/ceph/osd/ceph-0 /etc/ceph/ceph.conf \
        /run/ceph/monmap /run/ceph/mon.keyring
    return 0
}
