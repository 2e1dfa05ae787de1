#!/bin/sh
# mkinitrd.sh KROOT OUT.cpio.gz: a busybox initramfs for the peercam VM test.
#
# KROOT is an extracted Debian linux-image .deb (after depmod). The image holds busybox, the
# modules for vivid (the webcam), snd-aloop (the microphone), 9p over virtio and virtio-net,
# v4l2-ctl/arecord/aplay with every library ldd lists, and an /init that mounts the 9p share
# on /host, runs /host/guest-test.sh between ===TEST-BEGIN=== and ===TEST-RC=N=== and powers
# off. The peercam binary is NOT baked in: run.sh passes it (and its libraries) through 9p, so
# this image is cached across builds of the daemon.
set -eu
KROOT=$1
OUT=$2
KV=$(ls "$KROOT/lib/modules")
R=$(mktemp -d)
trap 'rm -rf "$R"' EXIT
chmod 755 "$R"
mkdir -p "$R"/bin "$R"/sbin "$R"/usr/bin "$R"/usr/share "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/host
cp /bin/busybox "$R/bin/"
for a in $(busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
ln -s /bin/busybox "$R/sbin/modprobe" # the kernel's request_module() runs /sbin/modprobe
for m in vivid snd-aloop 9p 9pnet_virtio virtio_net virtio_pci; do
    modprobe -d "$KROOT" -S "$KV" --show-depends "$m" | awk '/^insmod/{print $2}'
done | sort -u | while read -r ko; do
    rel=lib/modules/${ko#*/lib/modules/}
    mkdir -p "$R/${rel%/*}"
    cp "$ko" "$R/$rel"
done
cp "$KROOT/lib/modules/$KV"/modules.order "$KROOT/lib/modules/$KV"/modules.builtin* "$R/lib/modules/$KV/"
depmod -b "$R" "$KV"
for b in v4l2-ctl arecord aplay; do # dynamic binaries + every .so that ldd lists
    p=$(command -v "$b")
    cp "$p" "$R/usr/bin/"
    for lib in $(ldd "$p" | grep -o '/[^ ]*'); do
        mkdir -p "$R${lib%/*}"
        cp -L "$lib" "$R$lib"
    done
done
cp -r /usr/share/alsa "$R/usr/share/" # alsa-lib refuses every device without alsa.conf
cat >"$R/init" <<'INIT'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in virtio_pci virtio_net 9pnet_virtio 9p; do modprobe $m; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 host0 /host || echo "init: 9p mount failed"
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
fi
if [ -x /host/guest-test.sh ]; then
    echo ===TEST-BEGIN===
    /host/guest-test.sh
    echo "===TEST-RC=$?==="
fi
grep -q ' shell' /proc/cmdline && exec setsid cttyhack sh
poweroff -f
INIT
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
