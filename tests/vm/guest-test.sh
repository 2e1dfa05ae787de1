#!/bin/sh
# guest-test.sh: runs inside the VM (busybox /init calls /host/guest-test.sh; /host is the 9p
# share that run.sh fills). Loads vivid + snd-aloop, configures the webcam, starts peercam on
# 0.0.0.0:7000 and serves commands from the host until the host writes /host/ctl/done:
#   /host/ctl/disconnect  press vivid's "Disconnect" button: open handles get ENODEV (what a
#                         yanked USB camera does); vivid re-registers the node as soon as the
#                         LAST handle closes, so a reopen right after closing succeeds
#   /host/ctl/unplug      Disconnect, then rmmod vivid (retried for 10 s while peercam still
#                         holds the device): /dev/video0 is gone until replug
#   /host/ctl/replug      modprobe vivid and configure it again: /dev/video0 comes back
# Each command's output goes to /host/ctl/NAME.out, then /host/ctl/NAME.done appears.
# Settings come from /host/vm.env (written by run.sh). Exit status: 0 unless setup failed.
set -u
. /host/vm.env
export LD_LIBRARY_PATH=/host/lib
PEERCAM=/host/peercam
CTL=/host/ctl

say() { echo "guest: $*"; }

configure_camera() {
    v4l2-ctl -d /dev/video0 --set-fmt-video=width=640,height=480,pixelformat=YUYV --set-parm=25
}

wait_for_video0() {
    i=0
    while [ ! -e /dev/video0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
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

# V4L2 capture is in the binary once `peercam --list-devices` exists and succeeds.
if "$PEERCAM" --list-devices >/tmp/list-devices.txt 2>&1; then
    SOURCE=/dev/video0
    say "peercam --list-devices:"
    cat /tmp/list-devices.txt
else
    SOURCE=test
    say "V4L2 capture not in this binary yet: testing with the test pattern"
fi
echo "$SOURCE" >/host/source.txt

cat >/tmp/peercam.toml <<TOML
[server]
listen = "0.0.0.0:7000"

[video]
source = "$SOURCE"
width = 640
height = 480
fps = 25
codecs = ["h264"]

[audio]
source = "test"

[webrtc]
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
        v4l2-ctl -d /dev/video0 --set-ctrl=disconnect=1
        echo "set-ctrl disconnect=1 rc=$?"
        sleep 0.3
        dmesg | grep vivid | tail -n 2
        ;;
    unplug)
        v4l2-ctl -d /dev/video0 --set-ctrl=disconnect=1 && echo "pressed Disconnect"
        n=0
        until rmmod vivid 2>/tmp/rmmod.err; do
            n=$((n + 1))
            if [ $n -ge 50 ]; then cat /tmp/rmmod.err; echo "rmmod vivid failed for 10 s"; return 1; fi
            sleep 0.2
        done
        echo "rmmod vivid ok after $n retries"
        ls /dev/video0 2>&1
        ;;
    replug)
        modprobe vivid node_types=0x1
        wait_for_video0
        configure_camera
        echo "configure rc=$?"
        v4l2-ctl -d /dev/video0 --get-fmt-video 2>&1 | grep -E 'Width|Pixel'
        ;;
    *) echo "unknown command $1" ;;
    esac
}

mkdir -p "$CTL"
t=0
while [ ! -e "$CTL/done" ] && [ $t -lt $((GUEST_TIMEOUT * 5)) ]; do
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
    sleep 0.2
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
