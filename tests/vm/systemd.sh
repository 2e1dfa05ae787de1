#!/bin/sh
# tests/vm/systemd.sh --deb PATH.deb [--keep DIR] [--shell]
#
# The real-init test of the Debian package: boots a debootstrapped Debian bookworm with systemd
# under qemu (TCG; the kernel and busybox initramfs are run.sh's, see kernel.sh; the image is
# mkrootfs.sh's, cached, booted with -snapshot), with vivid as /dev/video0 and snd-aloop as the
# sound card, and drives it from the host (tests/vm/systemd.test.mjs, node:test + headless
# Chromium) through commands the guest runs (systemd-guest.sh, over the 9p share):
#   1. apt-get install ./peercam_*_amd64.deb: enabled, started by postinst, READY=1 reached
#   2. the VM config in /etc/peercam/peercam.toml (vivid, snd-aloop, forwarded UDP ports,
#      nat_1to1_ips), `systemctl stop` + `start` timed (exec -> READY=1)
#   3. Chromium dials through the forwarded ports and decodes vivid's colour bars (+ Opus)
#   4. fps edited + `systemctl reload`: journal "reload: ... applied", the page redials by
#      itself and gets the new rate; a broken file + reload: still active, the journal names
#      file:line:column and key; restored
#   5. an upgrade (the same package repacked as -2 with a changed conffile): the edited
#      config is kept (.dpkg-dist next to it), the service restarted
#   6. WatchdogSec=3 (a runtime drop-in), kill -STOP the main PID: the watchdog restarts it
#   7. `systemctl stop`: Result=success, no SIGKILL; the journal holds the expected lines
#   8. `systemd-analyze security peercam`: the score and the table (PEERCAM_VM_MAX_EXPOSURE)
#   9. apt-get remove (stops it, keeps /etc/peercam), apt-get purge (removes /etc/peercam)
# Exit 0 = passed (ends with "vm-systemd: [N s] PASSED"). See tests/vm/README.md.
#
#   --deb PATH   the amd64 package (CARGO_TARGET_DIR=... cargo deb; the default is
#                target/debian/peercam_*_amd64.deb, the newest)
#   --keep DIR   keep serial.log, guest.log (the ctl transcript) and journal.txt in DIR
#   --shell      boot the image with the package in /host and a root shell (no test)
#
# Env: PEERCAM_VM_CACHE, PEERCAM_VM_SD_HTTP_PORT (host port for the guest's :7000, 17100),
#      PEERCAM_VM_SD_UDP_MIN (first of 5 UDP ports forwarded 1:1, 47100), PEERCAM_VM_SD_TIMEOUT
#      (qemu limit, 420 s), PEERCAM_VM_CPU (qemu -cpu, qemu64), PEERCAM_VM_MAX_EXPOSURE (2.0),
#      PEERCAM_VM_SECURITY_VARIANTS=1 (also score unit variants, see systemd.test.mjs),
#      PEERCAM_VM_CHROMIUM_ARGS, PEERCAM_VM_MIRROR (debootstrap mirror), PEERCAM_VM_SD_TEST
#      (another node test file to run against the booted guest instead, for experiments).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DEB=""
KEEP=""
SHELL_MODE=0
while [ $# -gt 0 ]; do
    case $1 in
    --deb) DEB=$2; shift 2 ;;
    --deb=*) DEB=${1#--deb=}; shift ;;
    --keep) KEEP=$2; shift 2 ;;
    --keep=*) KEEP=${1#--keep=}; shift ;;
    --shell) SHELL_MODE=1; shift ;;
    -h | --help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "systemd.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$DEB" ]; then
    DEB=$(ls -t "${CARGO_TARGET_DIR:-$ROOT/target}"/debian/peercam_*_amd64.deb 2>/dev/null | head -n 1 || true)
fi
[ -n "$DEB" ] && [ -f "$DEB" ] || { echo "systemd.sh: no package: build one with \`cargo deb\` and pass --deb PATH" >&2; exit 2; }
DEB=$(realpath "$DEB")
case $(dpkg-deb -f "$DEB" Architecture) in
amd64) ;;
*) echo "systemd.sh: $DEB is not an amd64 package (the VM is x86_64)" >&2; exit 2 ;;
esac

C=${PEERCAM_VM_CACHE:-$HOME/.cache/peercam-vm}
HTTP_PORT=${PEERCAM_VM_SD_HTTP_PORT:-17100}
UDP_MIN=${PEERCAM_VM_SD_UDP_MIN:-47100}
UDP_MAX=$((UDP_MIN + 4))
QEMU_TIMEOUT=${PEERCAM_VM_SD_TIMEOUT:-420}
CPU=${PEERCAM_VM_CPU:-qemu64}
T0=$(date +%s)
step() { echo "vm-systemd: [$(($(date +%s) - T0)) s] $*"; }
mkdir -p "$C"

# 1. Host packages: run.sh's plus debootstrap and mke2fs (apt-get update only when missing).
PKGS="qemu-system-x86 busybox-static cpio kmod v4l-utils alsa-utils zstd curl debootstrap e2fsprogs"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
"$HERE/../../scripts/apt-install.sh" $PKGS >/dev/null

# 2. Kernel + busybox initramfs, shared with run.sh (cached).
. "$HERE/kernel.sh"

# 3. The bookworm image and its boot initramfs (cached; cold: debootstrap).
if ! OUT=$($SUDO env PEERCAM_VM_CACHE="$C" ${PEERCAM_VM_MIRROR:+PEERCAM_VM_MIRROR="$PEERCAM_VM_MIRROR"} \
    "$HERE/mkrootfs.sh" "$KDIR" "$INITRD"); then
    step "FAILED: mkrootfs.sh"
    exit 1
fi
IMG=$(echo "$OUT" | sed -n 1p)
BOOT=$(echo "$OUT" | sed -n 2p)
step "image $IMG"

# 4. The 9p share: the package, the guest script, a 1 s 440 Hz tone, settings, ctl/.
W=$(mktemp -d /tmp/peercam-vm-systemd.XXXXXX)
QPID=""
cleanup() {
    [ -z "$QPID" ] || kill "$QPID" 2>/dev/null || true
    if [ -n "$KEEP" ]; then
        mkdir -p "$KEEP"
        for f in "$W/serial.log" "$S/journal.txt"; do [ ! -e "$f" ] || cp "$f" "$KEEP/" || true; done
        [ ! -d "$S/ctl" ] || (cd "$S/ctl" && for n in *.sh; do
            [ -e "$n" ] || continue
            echo "==== ${n%.sh} (rc $(cat "${n%.sh}.rc" 2>/dev/null || echo '?'))"
            grep -v '^set -eu$' "$n"
            echo "---- output"
            cat "${n%.sh}.out" 2>/dev/null
        done) >"$KEEP/guest.log" 2>&1 || true
    fi
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
S=$W/share
mkdir -p "$S/ctl"
DEBNAME=$(basename "$DEB")
ln "$DEB" "$S/$DEBNAME" 2>/dev/null || cp "$DEB" "$S/$DEBNAME"
cp "$HERE/systemd-guest.sh" "$S/guest-test.sh"
chmod 755 "$S/guest-test.sh"
python3 -c "import math,struct,sys; sys.stdout.buffer.write(b''.join(struct.pack('<h',int(8000*math.sin(
  2*math.pi*440*i/48000))) for i in range(48000)))" >"$S/tone.s16le"
echo "GUEST_TIMEOUT=$((QEMU_TIMEOUT - 20))" >"$S/vm.env"

# 5. Boot. UDP ports are forwarded 1:1 so a candidate 127.0.0.1:P reaches the guest's port P.
FWD="hostfwd=tcp:127.0.0.1:$HTTP_PORT-:7000"
p=$UDP_MIN
while [ $p -le $UDP_MAX ]; do FWD="$FWD,hostfwd=udp:127.0.0.1:$p-:$p"; p=$((p + 1)); done
APPEND="console=ttyS0 root=/dev/vda rw panic=-1 loglevel=4 systemd.show_status=1"
set -- qemu-system-x86_64 -accel tcg -cpu "$CPU" -smp 2 -m 1024 -nographic -no-reboot \
    -kernel "$KDIR/vmlinuz" -initrd "$BOOT" \
    -drive "file=$IMG,format=raw,if=virtio,cache=unsafe" -snapshot \
    -virtfs "local,path=$S,mount_tag=host0,security_model=none" \
    -netdev "user,id=n0,$FWD" -device virtio-net-pci,netdev=n0
if [ $SHELL_MODE = 1 ]; then
    mv "$S/guest-test.sh" "$S/guest-test.sh.manual" # no test-runner: a login prompt instead
    echo "vm-systemd: root shell (no password); /host holds $DEBNAME (Ctrl-a x quits)"
    "$@" -append "$APPEND"
    exit 0
fi
SERIAL=$W/serial.log
step "booting qemu ($KV, systemd, package $DEBNAME)"
timeout "$QEMU_TIMEOUT" "$@" -append "$APPEND" </dev/null >"$SERIAL" 2>&1 &
QPID=$!

FAIL=""
fail() { FAIL="$FAIL$*; "; echo "vm-systemd: FAIL: $*"; }
i=0
until [ -e "$S/ctl/booted" ]; do
    if ! kill -0 "$QPID" 2>/dev/null; then fail "qemu exited before the guest booted"; break; fi
    i=$((i + 1))
    if [ $i -gt 1200 ]; then fail "the guest did not boot within 120 s"; break; fi
    sleep 0.1
done
if [ -z "$FAIL" ]; then
    step "guest booted: system $(cut -d' ' -f1 "$S/ctl/booted") after $(cut -d' ' -f2 "$S/ctl/booted") s of guest uptime"
    if [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ]; then
        (cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund)
    fi
    step "node --test tests/vm/systemd.test.mjs"
    PEERCAM_VM_URL=https://127.0.0.1:$HTTP_PORT/ PEERCAM_VM_CTL=$S/ctl PEERCAM_VM_DEB=$DEBNAME \
        PEERCAM_VM_UDP_MIN=$UDP_MIN PEERCAM_VM_UDP_MAX=$UDP_MAX PEERCAM_VM_SHARE=$S \
        node --test --test-reporter=spec "${PEERCAM_VM_SD_TEST:-$HERE/systemd.test.mjs}" || fail "tests/vm/systemd.test.mjs"
fi
touch "$S/ctl/done"
# The runner prints ===TEST-RC=N=== and the guest powers off; do not wait for the shutdown.
i=0
while kill -0 "$QPID" 2>/dev/null && ! grep -q '===TEST-RC=' "$SERIAL" && [ $i -lt 300 ]; do
    sleep 0.1
    i=$((i + 1))
done
kill "$QPID" 2>/dev/null || true
wait "$QPID" || true
QPID=""
RC=$(sed -n 's/.*===TEST-RC=\([0-9]*\)===.*/\1/p' "$SERIAL" | tail -n 1)
[ "$RC" = 0 ] || fail "guest runner status ${RC:-missing} (no ===TEST-RC=0===)"
if [ -n "$FAIL" ]; then
    echo "vm-systemd: ===== guest serial log (the runner's lines, then the tail)"
    grep -a 'guest: ' "$SERIAL" | tail -n 40
    echo "vm-systemd: -----"
    tail -n 40 "$SERIAL"
    step "FAILED: $FAIL"
    exit 1
fi
step "PASSED"
