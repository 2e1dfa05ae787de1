#!/bin/sh
# mkrootfs.sh KDIR INITRD: the disk and boot initramfs of the systemd VM test (systemd.sh).
#
# Prints two lines: the path of a cached ext4 image (Debian bookworm minbase + systemd + the
# packages below + the modules the test needs from the same kernel) and the path of the boot
# initramfs: INITRD (mkinitrd.sh's busybox image, shared with run.sh) with a small cpio
# appended (the kernel merges concatenated archives; later files win) that adds virtio_blk,
# ext4 and crc32c and replaces /init by one that mounts /dev/vda and switch_roots into systemd.
#
# Both are cached in $C (${PEERCAM_VM_CACHE:-$HOME/.cache/peercam-vm}) under a key hashing the
# package list, this script, the kernel version and INITRD's name (itself a hash of
# mkinitrd.sh, the kernel and the guest tools); debootstrap's .debs are kept in $C/debs.
# Boot the image with -snapshot so it stays pristine. KDIR is kernel.sh's (vmlinuz + kroot/).
#
# The image: root without password on ttyS0; vivid (node_types=0x1: only /dev/video0),
# snd-aloop and 9pnet_virtio loaded by systemd-modules-load; the 9p share "host0" on /host;
# 10.0.2.15/24 via 10.0.2.2 (systemd-networkd, qemu user networking); timers, scrubs and
# the generators it does not need masked (faster boot and daemon-reload under TCG);
# test-runner.service runs /host/guest-test.sh after multi-user.target, its output on the
# serial console (then ===TEST-RC=N===), then powers off. Nothing else (no peercam).
#
# The packages: what the peercam .deb Depends on (libc6, libopus0, libasound2, procps for the
# unit's /bin/kill) must be there already (the guest has no mirror); alsa-utils and v4l-utils
# are for the test itself.
set -eu
KDIR=$1
INITRD=$2
PKGS=systemd-sysv,udev,kmod,iproute2,procps,libopus0,libasound2,alsa-utils,v4l-utils
C=${PEERCAM_VM_CACHE:-$HOME/.cache/peercam-vm}
KV=$(ls "$KDIR/kroot/lib/modules")
KEY=$({ echo "$PKGS"; cat "$0"; echo "$KV"; basename "$INITRD"; } | sha256sum | cut -c1-16)
IMG=$C/rootfs-$KEY.img
BOOT=$C/rootfs-$KEY.initrd.gz
mkdir -p "$C/debs"
log() { echo "mkrootfs: $*" >&2; }

# Modules (with their dependencies, in load order) from the full kernel tree.
modules() {
    for m in "$@"; do
        modprobe -d "$KDIR/kroot" -S "$KV" --show-depends "$m" | awk '/^insmod/{print $2}'
    done | awk '!seen[$0]++'
}
copy_modules() { # DEST: copies stdin's .ko paths under DEST/lib/modules/KV, keeping the tree
    while read -r ko; do
        rel=lib/modules/${ko#*/lib/modules/}
        mkdir -p "$1/${rel%/*}"
        cp "$ko" "$1/$rel"
    done
}

if [ ! -f "$BOOT" ]; then
    log "boot initramfs $BOOT"
    O=$(mktemp -d)
    modules virtio_pci virtio_blk crc32c_generic ext4 >"$O/list"
    copy_modules "$O" <"$O/list"
    sed "s#.*/lib/modules/#/lib/modules/#" "$O/list" >"$O/boot-modules.txt"
    cat >"$O/init" <<'INIT'
#!/bin/sh
# systemd path (mkrootfs.sh): load the disk modules, mount /dev/vda, hand over to systemd.
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r ko; do insmod "$ko" 2>/dev/null; done </boot-modules.txt
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
mount -t ext4 -o rw /dev/vda /newroot || { echo "init: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
INIT
    chmod 755 "$O/init"
    rm "$O/list"
    (cd "$O" && find . | cpio -o -H newc --quiet | gzip -1) >"$O.cpio.gz"
    cat "$INITRD" "$O.cpio.gz" >"$BOOT.$$.tmp" && mv "$BOOT.$$.tmp" "$BOOT"
    rm -rf "$O" "$O.cpio.gz"
fi

if [ ! -f "$IMG" ]; then
    R=$(mktemp -d /tmp/peercam-rootfs.XXXXXX)
    trap 'rm -rf "$R" "$IMG.$$.tmp"' EXIT
    MIRROR=${PEERCAM_VM_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)}
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    log "debootstrap bookworm ($MIRROR) + $PKGS"
    debootstrap --variant=minbase --cache-dir="$C/debs" --include="$PKGS" bookworm "$R" "$MIRROR" >"$R.log" 2>&1 ||
        { tail -n 30 "$R.log" >&2; rm -f "$R.log"; exit 1; }
    rm -f "$R.log"
    modules vivid snd-aloop 9p 9pnet_virtio virtio_net virtio_pci virtio_blk crc32c_generic ext4 | copy_modules "$R/usr"
    cp "$KDIR/kroot/lib/modules/$KV"/modules.order "$KDIR/kroot/lib/modules/$KV"/modules.builtin* "$R/usr/lib/modules/$KV/"
    depmod -b "$R/usr" "$KV"
    echo peercam-vm >"$R/etc/hostname"
    echo "127.0.1.1 peercam-vm" >>"$R/etc/hosts"
    chroot "$R" passwd -d root >/dev/null # root without password on ttyS0 (--shell)
    printf 'vivid\nsnd-aloop\n9pnet_virtio\n' >"$R/etc/modules-load.d/peercam-vm.conf"
    echo 'options vivid node_types=0x1' >"$R/etc/modprobe.d/vivid.conf"
    echo 'host0 /host 9p trans=virtio,version=9p2000.L,msize=512000,nofail 0 0' >"$R/etc/fstab"
    mkdir "$R/host"
    printf '[Match]\nName=eth0 en*\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n' \
        >"$R/etc/systemd/network/10-vm.network"
    cat >"$R/etc/systemd/system/test-runner.service" <<'UNIT'
[Unit]
Description=Run /host/guest-test.sh once booted, then power off
After=multi-user.target
RequiresMountsFor=/host
ConditionPathExists=/host/guest-test.sh
[Service]
Type=simple
ExecStart=/bin/sh -c '/host/guest-test.sh; echo "===TEST-RC=$?==="'
StandardOutput=journal+console
ExecStopPost=/bin/systemctl --no-block poweroff
[Install]
WantedBy=multi-user.target
UNIT
    chroot "$R" systemctl enable systemd-networkd test-runner.service >/dev/null 2>&1
    # Boot and `systemctl daemon-reload` run every generator, and each exec is slow under TCG:
    # keep fstab (/host) and getty (the serial console), mask the rest; no timers or scrubs.
    mkdir -p "$R/etc/systemd/system-generators"
    for g in cryptsetup debug gpt-auto hibernate-resume integritysetup rc-local run system-update sysv veritysetup; do
        ln -sf /dev/null "$R/etc/systemd/system-generators/systemd-$g-generator"
    done
    for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
        systemd-tmpfiles-clean.timer e2scrub_reap.service getty-static.service; do
        ln -sf /dev/null "$R/etc/systemd/system/$u"
    done
    rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
    log "mke2fs $IMG"
    mke2fs -q -t ext4 -L root -d "$R" "$IMG.$$.tmp" 1G >/dev/null
    mv "$IMG.$$.tmp" "$IMG"
    rm -rf "$R"
    trap - EXIT
    for f in "$C"/rootfs-*; do # images of other keys (1 GiB sparse each; a qemu still using
        case $f in "$C/rootfs-$KEY".* | *.tmp) ;; *) rm -f "$f" ;; esac # one keeps its open file)
    done
fi
echo "$IMG"
echo "$BOOT"
