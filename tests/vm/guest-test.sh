#!/bin/sh
# guest-test.sh: runs inside the VM (busybox /init calls /host/guest-test.sh; /host is the 9p
# share that run.sh fills). Loads vivid + snd-aloop, configures the webcam, starts peercam on
# 0.0.0.0:7000 and serves commands from the host until the host writes /host/ctl/done:
#   /host/ctl/disconnect  press vivid's "Disconnect" button: open handles get ENODEV (what a
#                         yanked USB camera does); vivid re-registers the node as soon as the
#                         LAST handle closes, so a reopen right after closing succeeds
#   /host/ctl/unplug      a real unplug: delete the /dev/video0 node (a USB unplug removes it;
#                         vivid's Disconnect leaves it), press Disconnect through a private node,
#                         then rmmod vivid (retried for 10 s until peercam lets go of its handle)
#   /host/ctl/replug      modprobe vivid: /dev/video0 comes back (peercam configures it)
# Each command writes /host/ctl/NAME.effect the moment it takes effect (Disconnect pressed;
# /dev/video0 back), holding "T0 T1": the guest uptime (s) just before and just after the
# step, and NAME.clock + NAME.dmesg (see effect() below); then its output goes to
# /host/ctl/NAME.out and /host/ctl/NAME.done appears.
# Settings come from /host/vm.env (written by run.sh). Exit status: 0 unless setup failed.
set -u
. /host/vm.env
export LD_LIBRARY_PATH=/host/lib
PEERCAM=/host/peercam
CTL=/host/ctl

say() { echo "guest: $*"; }

configure_camera() {
    v4l2-ctl -d /dev/video0 --set-fmt-video=width=640,height=480,pixelformat=YUYV --set-parm=$FPS
}

wait_for_video0() {
    i=0
    while [ ! -e /dev/video0 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
}

# Guest uptime in s (10 ms resolution). `read` is a shell builtin: no fork, so the stamp is
# taken right after the step it follows.
uptime_now() { read -r UP _ </proc/uptime; }

# Marks the moment command $1 took effect. First a line in the kernel log (same clock as
# vivid's own "disconnect" / "registered as video0" lines, µs), then NAME.effect ("T0 T1":
# uptime before and after the step), both from shell builtins, so the host sees the file
# within a ms or two of the kernel-log mark. Then, not time-critical: NAME.clock, the wall
# clock ("SEC USEC") read between two more kernel-log lines, so the host can place the daemon
# log's wall-clock times, and NAME.dmesg, the kernel log lines the host needs.
effect() {
    echo "peercam-vm: $1 marker" >/dev/kmsg
    echo "$T0 $UP" >"$CTL/$1.effect"
    echo "peercam-vm: $1 clock-before" >/dev/kmsg
    adjtimex | sed -n 's/^ *time\.tv_[a-z]*: *//p' | tr '\n' ' ' >"$CTL/$1.clock"
    echo "peercam-vm: $1 clock-after" >/dev/kmsg
    dmesg | grep -E 'vivid|peercam-vm' | tail -n 12 >"$CTL/$1.dmesg"
}

modprobe vivid node_types=0x1 || { say "modprobe vivid failed"; exit 10; }
modprobe snd-aloop || { say "modprobe snd-aloop failed"; exit 11; }
wait_for_video0
configure_camera || { say "v4l2-ctl could not configure /dev/video0"; exit 12; }
echo "---- v4l2-ctl --get-fmt-video --get-parm"
v4l2-ctl -d /dev/video0 --get-fmt-video --get-parm
echo "---- v4l2-ctl --list-formats-ext"
v4l2-ctl -d /dev/video0 --list-formats-ext
echo "---- v4l2-ctl --list-ctrls"
v4l2-ctl -d /dev/video0 --list-ctrls
echo "---- arecord -l"
arecord -l | grep '^card'
echo "----"

# The camera must be usable: `peercam --list-devices` lists it (else the host test fails).
if "$PEERCAM" --list-devices >/tmp/list-devices.txt 2>&1; then
    SOURCE=/dev/video0
    say "peercam --list-devices:"
    cat /tmp/list-devices.txt
else
    SOURCE=test
    say "peercam --list-devices failed (the host test will fail); running the test pattern:"
    cat /tmp/list-devices.txt
fi
echo "$SOURCE" >/host/source.txt

cat >/tmp/peercam.toml <<TOML
[server]
listen = "0.0.0.0:7000"

[video]
source = "$SOURCE"
width = 640
height = 480
fps = $FPS
codecs = ["h264"]

[audio]
source = "test"

[webrtc]
udp_port = 0
udp_port_min = $UDP_MIN
udp_port_max = $UDP_MAX
$WEBRTC_EXTRA

[log]
level = "info"
TOML
say "config:"
cat /tmp/peercam.toml
RUST_LOG=${PEERCAM_RUST_LOG:-info} "$PEERCAM" --config /tmp/peercam.toml >/host/peercam.log 2>&1 &
PID=$!
say "peercam started (pid $PID, source $SOURCE, uptime $(cut -d" " -f1 /proc/uptime) s)"

run_ctl() {
    case $1 in
    disconnect)
        uptime_now && T0=$UP
        v4l2-ctl -d /dev/video0 --set-ctrl=disconnect=1
        rc=$?
        uptime_now && effect disconnect
        echo "set-ctrl disconnect=1 rc=$rc"
        sleep 0.3
        dmesg | grep vivid | tail -n 2
        ;;
    unplug)
        # vivid's Disconnect only flags the node unregistered and brings it back when the last
        # handle closes: a daemon that reopens at once gets the camera straight back and rmmod
        # never wins. A USB unplug deletes the node; do that first, through a private node.
        dev=$(cat /sys/class/video4linux/video0/dev)
        mknod /tmp/unplugged c "${dev%:*}" "${dev#*:}"
        rm -f /dev/video0
        uptime_now && T0=$UP
        v4l2-ctl -d /tmp/unplugged --set-ctrl=disconnect=1 && pressed=1
        uptime_now && effect unplug
        rm -f /tmp/unplugged
        [ -n "${pressed:-}" ] && echo "deleted /dev/video0 ($dev), pressed Disconnect"
        n=0
        until rmmod vivid 2>/tmp/rmmod.err; do
            n=$((n + 1))
            if [ $n -ge 100 ]; then cat /tmp/rmmod.err; echo "rmmod vivid failed for 10 s"; return 1; fi
            sleep 0.1
        done
        echo "rmmod vivid ok after $n retries"
        ls /dev/video0 2>&1
        ;;
    replug)
        uptime_now && T0=$UP
        modprobe vivid node_types=0x1
        wait_for_video0
        uptime_now && effect replug
        # No configuring here: vivid's format is per device, and a set-fmt racing peercam's
        # own open (between its S_FMT and streaming) would garble its frames. peercam sets the
        # format itself; once it has reopened the camera, get-fmt shows what it picked.
        sleep 1.5
        v4l2-ctl -d /dev/video0 --get-fmt-video 2>&1 | grep -E 'Width|Pixel'
        ;;
    *) echo "unknown command $1" ;;
    esac
}

mkdir -p "$CTL"
t=0
while [ ! -e "$CTL/done" ] && [ $t -lt $((GUEST_TIMEOUT * 10)) ]; do
    for c in disconnect unplug replug; do
        if [ -e "$CTL/$c" ] && [ ! -e "$CTL/$c.done" ]; then
            say "ctl $c"
            run_ctl "$c" >"$CTL/$c.out" 2>&1
            cat "$CTL/$c.out"
            touch "$CTL/$c.done"
        fi
    done
    if ! kill -0 $PID 2>/dev/null; then
        wait $PID
        say "peercam exited early with status $?"
        break
    fi
    sleep 0.1
    t=$((t + 1))
done
[ -e "$CTL/done" ] || say "no /host/ctl/done from the host within $GUEST_TIMEOUT s"
kill -TERM $PID 2>/dev/null
i=0
while kill -0 $PID 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
kill -0 $PID 2>/dev/null && { say "peercam ignored SIGTERM for 5 s"; kill -KILL $PID; }
wait $PID
say "peercam stopped with status $?"
echo "---- peercam log (tail)"
tail -n 40 /host/peercam.log
exit 0
