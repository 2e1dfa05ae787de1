# tests/vm/kernel.sh: sourced (not run) by tests/vm/run.sh and tests/vm/systemd.sh.
#
# Prepares what every VM test boots, cached in $C (= ${PEERCAM_VM_CACHE:-$HOME/.cache/peercam-vm}):
#   KDIR    $C/<linux-image pkg>: vmlinuz + kroot/ (the extracted Debian kernel .deb, depmod'ed)
#   KV      the kernel version (kroot/lib/modules/$KV)
#   INITRD  $C/initrd-<hash>.cpio.gz, mkinitrd.sh's busybox initramfs (the hash covers
#           mkinitrd.sh, the kernel version and the guest tools' package versions)
# Needs from the caller: C, HERE (tests/vm), SUDO ("" or sudo), a `step MESSAGE` function,
# and the host packages of run.sh's step 1 (busybox-static, kmod, v4l-utils, alsa-utils, cpio).
# Moved here unchanged from run.sh (its steps 2 and 3).

# 2. Kernel: Debian's linux-image .deb, extracted and depmod'ed once per kernel version.
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$KPKG" ]; then
    # A failing index elsewhere (a mirror mid-sync) must not stop this: apt keeps the rest.
    $SUDO apt-get update -qq || echo "warning: apt-get update failed; using the indexes apt has" >&2
    KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
KDIR=$C/$KPKG
if [ ! -f "$KDIR/vmlinuz" ]; then
    step "downloading and extracting $KPKG"
    rm -rf "$KDIR.tmp" && mkdir -p "$KDIR.tmp"
    (cd "$KDIR.tmp" && apt-get download -q "$KPKG" 2>&1 | grep -v unsandboxed || true)
    dpkg-deb -x "$KDIR.tmp"/"$KPKG"_*.deb "$KDIR.tmp/kroot"
    rm -f "$KDIR.tmp"/*.deb
    KV=$(ls "$KDIR.tmp/kroot/lib/modules")
    depmod -b "$KDIR.tmp/kroot" "$KV"
    cp "$KDIR.tmp/kroot/boot/vmlinuz-$KV" "$KDIR.tmp/vmlinuz"
    rm -rf "$KDIR" && mv "$KDIR.tmp" "$KDIR"
fi
KV=$(ls "$KDIR/kroot/lib/modules")

# 3. Initramfs, keyed by the script, the kernel and the guest tools' versions.
KEY=$({ cat "$HERE/mkinitrd.sh"; echo "$KV"; dpkg-query -W busybox-static v4l-utils alsa-utils; } | sha256sum | cut -c1-16)
INITRD=$C/initrd-$KEY.cpio.gz
if [ ! -f "$INITRD" ]; then
    step "building $INITRD"
    "$HERE/mkinitrd.sh" "$KDIR/kroot" "$INITRD"
fi

