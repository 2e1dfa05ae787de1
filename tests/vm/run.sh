#!/bin/sh
# tests/vm/run.sh [--binary PATH] [--no-browser] [--shell]
#
# Boots a real Debian kernel under qemu (TCG) with vivid (a V4L2 webcam) and snd-aloop (a
# sound card), runs peercam in it on /dev/video0 (the binary comes from the host through a 9p
# share), and dials it from the host: HTTP + a signaling hello, then ONE headless Chromium
# session decodes vivid's colour bars at 640x480 while tests/vm/vm.test.mjs yanks the camera
# (vivid's Disconnect), unplugs it (node gone + Disconnect + rmmod vivid: the "camera
# disconnected" placeholder within 1 s) and replugs it (modprobe: vivid again within 2 s),
# without dialing again. Everything slow is cached in ${PEERCAM_VM_CACHE:-$HOME/.cache/peercam-vm}.
# See tests/vm/README.md.
#
# Env: PEERCAM_VM_CACHE, PEERCAM_VM_HTTP_PORT (host port for the guest's :7000, default 17000),
#      PEERCAM_VM_UDP_MIN (first of PEERCAM_VM_UDP_COUNT=5 UDP ports forwarded 1:1, default
#      47000), PEERCAM_VM_WEBRTC_EXTRA (the guest config's extra [webrtc] lines, default
#      nat_1to1_ips = ["127.0.0.1/10.0.2.15"]), PEERCAM_RUST_LOG (guest RUST_LOG, default
#      info), PEERCAM_VM_TIMEOUT (qemu limit, 240 s), PEERCAM_VM_CHROMIUM_ARGS (extra flags),
#      PEERCAM_VM_FPS (guest [video] fps, 15), PEERCAM_VM_CPU (qemu -cpu, qemu64),
#      PEERCAM_VM_PLACEHOLDER_MS (1000), PEERCAM_VM_RESUME_MS (2000),
#      PEERCAM_VM_TCG_ALLOWANCE_MS (1500), PEERCAM_VM_SNAPSHOTS (dir for PNGs of the picture),
#      PEERCAM_VM_KEEP (dir: keep serial.log, peercam.log, devices.txt), PEERCAM_VM_DEBUG=1.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$ROOT/target/debug/peercam
BROWSER=1
SHELL_MODE=0
while [ $# -gt 0 ]; do
    case $1 in
    --binary) BIN=$2; shift 2 ;;
    --binary=*) BIN=${1#--binary=}; shift ;;
    --no-browser) BROWSER=0; shift ;;
    --shell) SHELL_MODE=1; shift ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
BIN=$(realpath "$BIN" 2>/dev/null || echo "$BIN")
[ -x "$BIN" ] || { echo "run.sh: peercam binary $BIN not found: run \`cargo build\` or pass --binary PATH" >&2; exit 2; }

C=${PEERCAM_VM_CACHE:-$HOME/.cache/peercam-vm}
HTTP_PORT=${PEERCAM_VM_HTTP_PORT:-17000}
UDP_MIN=${PEERCAM_VM_UDP_MIN:-47000}
UDP_COUNT=${PEERCAM_VM_UDP_COUNT:-5}
UDP_MAX=$((UDP_MIN + UDP_COUNT - 1))
QEMU_TIMEOUT=${PEERCAM_VM_TIMEOUT:-240}
CPU=${PEERCAM_VM_CPU:-qemu64}
# The guest is 10.0.2.15 behind slirp; the host reaches its UDP ports as 127.0.0.1:P.
NAT='nat_1to1_ips = ["127.0.0.1/10.0.2.15"]'
WEBRTC_EXTRA=${PEERCAM_VM_WEBRTC_EXTRA-$NAT}
T0=$(date +%s)
step() { echo "vm: [$(($(date +%s) - T0)) s] $*"; }
mkdir -p "$C"

# 1. Host packages (apt-get update only when one is missing).
PKGS="qemu-system-x86 busybox-static cpio kmod v4l-utils alsa-utils zstd curl"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
"$HERE/../../scripts/apt-install.sh" $PKGS >/dev/null

# 2.-3. Kernel and initramfs (KDIR, KV, INITRD), shared with systemd.sh.
. "$HERE/kernel.sh"

# 4. The 9p share: the binary, its libraries, the guest script and its settings.
W=$(mktemp -d /tmp/peercam-vm.XXXXXX)
QPID=""
cleanup() {
    [ -z "$QPID" ] || kill "$QPID" 2>/dev/null || true
    if [ -n "${PEERCAM_VM_KEEP:-}" ]; then
        mkdir -p "$PEERCAM_VM_KEEP"
        for f in "$W/serial.log" "$W/share/peercam.log" "$W/devices.txt"; do
            [ ! -e "$f" ] || cp "$f" "$PEERCAM_VM_KEEP/" || true
        done
    fi
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
S=$W/share
mkdir -p "$S/lib" "$S/ctl"
ln "$BIN" "$S/peercam" 2>/dev/null || cp "$BIN" "$S/peercam"
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do cp -L "$lib" "$S/lib/"; done
cp "$HERE/guest-test.sh" "$S/"
cat >"$S/vm.env" <<ENV
UDP_MIN=$UDP_MIN
UDP_MAX=$UDP_MAX
FPS=${PEERCAM_VM_FPS:-15}
GUEST_TIMEOUT=$((QEMU_TIMEOUT - 20))
PEERCAM_RUST_LOG='${PEERCAM_RUST_LOG:-info}'
WEBRTC_EXTRA='$WEBRTC_EXTRA'
ENV

# 5. Boot. UDP ports are forwarded 1:1 so a candidate 127.0.0.1:P reaches the guest's port P.
FWD="hostfwd=tcp:127.0.0.1:$HTTP_PORT-:7000"
p=$UDP_MIN
while [ $p -le $UDP_MAX ]; do FWD="$FWD,hostfwd=udp:127.0.0.1:$p-:$p"; p=$((p + 1)); done
APPEND="console=ttyS0 quiet panic=-1"
if [ $SHELL_MODE = 1 ]; then
    rm "$S/guest-test.sh"
    echo "vm: interactive busybox shell; /host/guest-test.sh is in $S ... (Ctrl-a x quits)"
    cp "$HERE/guest-test.sh" "$S/guest-test.sh.manual"
    exec qemu-system-x86_64 -accel tcg -cpu "$CPU" -smp 2 -m 1024 -nographic -no-reboot \
        -kernel "$KDIR/vmlinuz" -initrd "$INITRD" -append "$APPEND shell" \
        -virtfs "local,path=$S,mount_tag=host0,security_model=none" \
        -netdev "user,id=n0,$FWD" -device virtio-net-pci,netdev=n0
fi
SERIAL=$W/serial.log
step "booting qemu ($KV, binary $BIN)"
timeout "$QEMU_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu "$CPU" -smp 2 -m 1024 -nographic -no-reboot \
    -kernel "$KDIR/vmlinuz" -initrd "$INITRD" -append "$APPEND" \
    -virtfs "local,path=$S,mount_tag=host0,security_model=none" \
    -netdev "user,id=n0,$FWD" -device virtio-net-pci,netdev=n0 \
    </dev/null >"$SERIAL" 2>&1 &
QPID=$!

FAIL=""
fail() { FAIL="$FAIL$*; "; echo "vm: FAIL: $*"; }
URL=http://127.0.0.1:$HTTP_PORT/
i=0
until curl -sf --max-time 2 -o /dev/null "$URL"; do
    if ! kill -0 "$QPID" 2>/dev/null; then fail "qemu exited before $URL answered"; break; fi
    i=$((i + 1))
    if [ $i -gt 240 ]; then fail "$URL did not answer within 120 s"; break; fi
    sleep 0.5
done
if [ -z "$FAIL" ]; then
    step "HTTP up: $URL (video source in the guest: $(cat "$S/source.txt" 2>/dev/null || echo '?'))"
    if [ $BROWSER = 1 ]; then
        # One Chromium session; the test drives the unplug/replug hook itself (share's ctl/).
        if [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ]; then
            (cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund)
        fi
        step "node --test tests/vm/vm.test.mjs"
        PEERCAM_VM_URL=$URL PEERCAM_VM_SOURCE=$(cat "$S/source.txt" 2>/dev/null || echo '?') \
            PEERCAM_VM_CTL=$S/ctl PEERCAM_VM_LOG=$S/peercam.log \
            node --test --test-reporter=spec "$HERE/vm.test.mjs" || fail "tests/vm/vm.test.mjs"
    else
        curl -sf --max-time 5 "${URL}healthz" | grep -q ok || fail "GET /healthz"
        # The unplug/replug hook (see guest-test.sh): each command must answer; replug must
        # bring /dev/video0 back at 640x480.
        for c in disconnect unplug replug; do
            touch "$S/ctl/$c"
            i=0
            while [ ! -e "$S/ctl/$c.done" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
            echo "vm: ---- ctl $c:"
            [ -e "$S/ctl/$c.done" ] || fail "guest did not answer ctl $c within 20 s"
            sed 's/^/vm:   /' "$S/ctl/$c.out" 2>/dev/null
        done
        grep -q 'Width/Height *: 640/480' "$S/ctl/replug.out" 2>/dev/null || fail "replug did not bring /dev/video0 back"
    fi
fi
touch "$S/ctl/done"
wait "$QPID" || true
QPID=""
RC=$(sed -n 's/^===TEST-RC=\([0-9]*\)===.*/\1/p' "$SERIAL" | tail -n 1)
[ "$RC" = 0 ] || fail "guest script status ${RC:-missing} (no ===TEST-RC=0===)"
grep -q 'peercam exited early' "$SERIAL" && fail "peercam exited in the guest"
if [ -n "$FAIL" ]; then
    echo "vm: ===== guest serial log"
    sed -n '/===TEST-BEGIN===/,$p' "$SERIAL" | grep -v -e '^\s*\(\[\|Size\|Interval\)' | tail -n 150
    [ -s "$SERIAL" ] && ! grep -q '===TEST-BEGIN===' "$SERIAL" && tail -n 60 "$SERIAL"
    echo "vm: ===== peercam log (guest)"
    tail -n 60 "$S/peercam.log" 2>/dev/null
    step "FAILED: $FAIL"
    exit 1
fi
grep -E '^guest: peercam (started|stopped|--list-devices failed)' "$SERIAL" | sed 's/^/vm: /'
sed -n '/^guest: peercam --list-devices:/,/^guest: config:/p' "$SERIAL" | sed '1d; $d' >"$W/devices.txt"
echo "vm: guest's peercam --list-devices ($(wc -l <"$W/devices.txt") lines), first and last lines:"
{ head -n 6 "$W/devices.txt"; echo "..."; sed -n '/^Microphones/,$p' "$W/devices.txt" | head -n 3; } | sed 's/^/vm:   /'
step "PASSED"
