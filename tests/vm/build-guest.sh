#!/bin/bash
# Build the hostbrick test guest from Debian packages only, or reuse the cached build.
#
#   kernel      linux-image-amd64 (bookworm, 6.1): iscsi_tcp, LIO, nvme(t)_tcp, dm-multipath, rbd, 9p,
#               and RDMA without hardware: soft-RoCE (rdma_rxe) with ib_iser / ib_isert (iSER) and
#               nvme-rdma / nvmet-rdma, over a dummy or veth link; dm-crypt (cryptsetup-bin) for the encryptors
#   root fs     mmdebstrap --variant=minbase + guest/packages.txt, kernel modules (pruned) + depmod,
#               guest/image/ copied on top (init, multipath.conf), as an ext4 image
#   initramfs   busybox-static + virtio/ext4 modules; switch_root to /usr/sbin/hostbrick-vm-init
#
# Output: target/vm/guest-<hash>/{vmlinuz,initrd.img,root.img,kernel-version}; <hash> covers this
# script, common.sh, guest/packages.txt and guest/image/**. The build happens in a temporary
# directory that is renamed into place only when complete, so an interrupted build is never
# taken for a cache hit. Prints the guest directory on stdout.
#
# usage: build-guest.sh [--force]     (root; Debian 12 amd64 host with host-deps.sh done)
set -euo pipefail
. "$(dirname "$0")/common.sh"

FORCE=0
[ "${1:-}" = --force ] && FORCE=1

# Unmount whatever an interrupted mmdebstrap left mounted below DIR, then remove DIR.
remove_build_dir() {
    local m
    for m in $(findmnt -rn -o TARGET 2>/dev/null | grep -F "$1/" | sort -r || true); do umount -l "$m" || true; done
    rm -rf "$1" 2>/dev/null || { sleep 1; rm -rf "$1" || true; }
}
# Leftovers of interrupted builds: never used, only removed (the pid in the name tells
# whether that build is still running).
for d in "$VM_WORK_DIR"/.guest-build.*; do
    [ -d "$d" ] || continue
    kill -0 "${d##*.}" 2>/dev/null && continue
    vm_log "removing partial build $d"; remove_build_dir "$d" || true
done

GUEST_DIR=$(vm_guest_dir)
if [ "$FORCE" = 0 ] && [ -f "$GUEST_DIR/root.img" ] && [ -f "$GUEST_DIR/vmlinuz" ] && [ -f "$GUEST_DIR/initrd.img" ]; then
    vm_log "guest cached: $GUEST_DIR"
    echo "$GUEST_DIR"
    exit 0
fi
vm_need_root "build-guest.sh"
for t in mmdebstrap mkfs.ext4 cpio dpkg-deb; do
    command -v $t >/dev/null || vm_die "$t missing: run tests/vm/host-deps.sh first"
done
[ -x /bin/busybox ] && /bin/busybox --list | grep -x switch_root >/dev/null \
    || vm_die "/bin/busybox (busybox-static) missing: run tests/vm/host-deps.sh first"

BUILD=$VM_WORK_DIR/.guest-build.$$
mkdir -p "$VM_WORK_DIR"
rm -rf "$BUILD"; mkdir -p "$BUILD"
CHILD=""
cleanup() {
    set +e
    if [ -n "$CHILD" ]; then kill "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null; fi
    if [ -d "$BUILD" ]; then remove_build_dir "$BUILD"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
T0=$(date +%s)

vm_apt_private "$VM_WORK_DIR/guest-apt"   # bookworm (+updates, security); no backports

vm_log "kernel: resolving linux-image-amd64"
KPKG=$(apt-cache "${VM_APT_OPTS[@]}" depends linux-image-amd64 \
    | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\).*/\1/p' | sed -n 1p)
[ -n "$KPKG" ] || vm_die "cannot resolve the kernel package behind linux-image-amd64"
KVER=${KPKG#linux-image-}
mkdir -p "$BUILD/debs" "$BUILD/kernel"
(cd "$BUILD/debs" && apt-get "${VM_APT_OPTS[@]}" download -q "$KPKG" >/dev/null)
dpkg-deb -x "$BUILD"/debs/"${KPKG}"_*.deb "$BUILD/kernel"
vm_log "kernel: $KPKG"

PKGS=$(vm_guest_packages | paste -sd, -)
vm_log "root fs: mmdebstrap minbase + $PKGS"
vm_mirrors
ROOT=$BUILD/rootfs
mmdebstrap --variant=minbase --include="$PKGS" \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$ROOT" \
    "deb $VM_MIRROR bookworm main" "deb $VM_MIRROR bookworm-updates main" \
    ${VM_SECMIRROR:+"deb $VM_SECMIRROR bookworm-security main"} \
    > "$BUILD/mmdebstrap.log" 2>&1 &
CHILD=$!   # in the background so that a signal interrupts the build at once (see cleanup)
wait "$CHILD" || { tail -n 40 "$BUILD/mmdebstrap.log" >&2; vm_die "mmdebstrap failed"; }
CHILD=""

vm_log "root fs: kernel modules (pruned) + depmod"
MODS=$ROOT/lib/modules/$KVER
mkdir -p "$ROOT/lib/modules"
cp -a "$BUILD/kernel/lib/modules/$KVER" "$MODS"
(cd "$MODS/kernel" && rm -rf sound drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet \
    drivers/usb drivers/iio drivers/staging drivers/hwmon drivers/comedi drivers/isdn drivers/bluetooth \
    drivers/mtd drivers/video drivers/mmc drivers/input drivers/hid drivers/infiniband/hw drivers/net/can \
    net/wireless net/mac80211 net/bluetooth fs/btrfs fs/xfs fs/ocfs2 fs/nfs fs/nfsd fs/cifs fs/smb)
chroot "$ROOT" depmod -a "$KVER"
# (drivers/infiniband stays without its hw/ drivers: the RDMA core, soft-RoCE, the iSER ULPs.)
for m in iscsi_tcp target_core_file iscsi_target_mod nvme_tcp nvmet_tcp dm_multipath scsi_dh_alua rbd nbd 9p 9pnet_virtio \
    rdma_rxe ib_iser ib_isert nvme_rdma nvmet_rdma dummy veth dm_crypt; do
    chroot "$ROOT" modprobe -S "$KVER" --show-depends "$m" >/dev/null 2>&1 || vm_die "module $m missing from the guest kernel"
done

vm_log "root fs: guest/image overlay + settings"
cp -a "$VM_SRC_DIR/guest/image/." "$ROOT/"
chmod 0755 "$ROOT/usr/sbin/hostbrick-vm-init"
echo hostbrick-vm > "$ROOT/etc/hostname"
mkdir -p "$ROOT/mnt/host" "$ROOT/etc/target" "$ROOT/etc/multipath"
# A fixed, recognisable initiator name (open-iscsi's postinst may leave a template).
echo "InitiatorName=iqn.2004-10.com.hostbrick:vm-initiator" > "$ROOT/etc/iscsi/initiatorname.iscsi"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*_Packages*

vm_log "initramfs: busybox + virtio/ext4 modules"
INITRD=$BUILD/initrd
mkdir -p "$INITRD"/{bin,dev,proc,sys,newroot,modules}
cp /bin/busybox "$INITRD/bin/busybox"
for top in virtio_pci virtio_blk ext4; do
    chroot "$ROOT" modprobe -S "$KVER" --show-depends "$top" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ROOT$ko" "$INITRD/modules/"
    basename "$ko" >> "$INITRD/modules/order"
done
cat > "$INITRD/init" <<'EOF'
#!/bin/busybox sh
# hostbrick guest initramfs: load the root disk's drivers, mount it, hand over to the real init.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/modules/$m" 2>/dev/null || echo "initramfs: insmod $m failed"; done < /modules/order
n=0
while [ ! -b /dev/vda ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "initramfs: cannot mount /dev/vda; powering off"
    echo o > /proc/sysrq-trigger
    sleep 60
fi
umount /dev; umount /proc
exec switch_root /newroot /usr/sbin/hostbrick-vm-init
EOF
chmod 0755 "$INITRD/init"
(cd "$INITRD" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 > "$BUILD/initrd.img")
cp "$BUILD/kernel/boot/vmlinuz-$KVER" "$BUILD/vmlinuz"
echo "$KVER" > "$BUILD/kernel-version"

vm_log "root image: ext4 from the root fs"
truncate -s 4G "$BUILD/root.img"
mkfs.ext4 -q -F -L hostbrick-vm -d "$ROOT" "$BUILD/root.img"
rm -rf "$ROOT" "$INITRD" "$BUILD/kernel" "$BUILD/debs"
echo "built $(date -u +%FT%TZ) kernel $KVER packages $PKGS" > "$BUILD/build-info"

# Publish atomically: only a complete build ever carries the guest-<hash> name.
rm -rf "$GUEST_DIR.old"
[ -d "$GUEST_DIR" ] && mv "$GUEST_DIR" "$GUEST_DIR.old"
mv "$BUILD" "$GUEST_DIR"
rm -rf "$GUEST_DIR.old"
trap - EXIT
# Older guests (other hashes) are ~1 GB each: keep only this one.
for d in "$VM_WORK_DIR"/guest-*; do
    [ "$d" != "$GUEST_DIR" ] && [[ ${d##*/} =~ ^guest-[0-9a-f]{16}$ ]] && rm -rf "$d"
done
vm_log "guest built in $(( $(date +%s) - T0 )) s: $GUEST_DIR ($(du -sh "$GUEST_DIR/root.img" | cut -f1) used)"
echo "$GUEST_DIR"
