#!/bin/sh
# systemd-guest.sh: the guest half of tests/vm/systemd.sh. systemd.sh copies it into the 9p
# share as guest-test.sh; the image's test-runner.service (mkrootfs.sh) runs it once the
# system reached multi-user.target, as root, with its output on the serial console.
#
# It waits for the boot to finish, writes /host/ctl/booted ("STATE UPTIME_S"), then runs the shell scripts the host drops into /host/ctl until
# the host writes /host/ctl/done: for each new /host/ctl/NNN.sh (the host writes .NNN.tmp and
# renames it, so a script is never seen half-written), in name order,
#   sh NNN.sh >NNN.out 2>&1 </dev/null; echo $? >NNN.rc; touch NNN.done
# Scripts run one at a time; one that backgrounds a process must detach its output
# (`setsid CMD >/dev/null 2>&1 &`). Settings come from /host/vm.env (GUEST_TIMEOUT).
set -u
. /host/vm.env
CTL=/host/ctl
say() { echo "guest: $*"; }

STATE=$(systemctl is-system-running --wait 2>&1)
read -r UP _ </proc/uptime
mkdir -p "$CTL"
echo "$STATE $UP" >"$CTL/.booted.tmp" && mv "$CTL/.booted.tmp" "$CTL/booted"
say "system $STATE after $UP s of uptime"
if [ "$STATE" != running ]; then
    systemctl --failed --no-legend --no-pager | sed 's/^/guest:   failed: /'
    systemd-analyze blame --no-pager 2>/dev/null | head -n 8 | sed 's/^/guest:   blame: /'
fi

t=0
while [ ! -e "$CTL/done" ] && [ $t -lt $((GUEST_TIMEOUT * 10)) ]; do
    for f in "$CTL"/*.sh; do
        [ -e "$f" ] || continue
        n=${f%.sh}
        [ -e "$n.done" ] && continue
        say "run ${n##*/}: $(grep -v -e '^set ' -e '^[[:space:]]*$' "$f" | head -n 1 | sed 's/^[[:space:]]*//' | cut -c1-100)"
        sh "$f" >"$n.out" 2>&1 </dev/null
        rc=$?
        echo $rc >"$n.rc"
        touch "$n.done"
        [ $rc = 0 ] || say "${n##*/} exited with $rc"
    done
    sleep 0.1
    t=$((t + 1))
done
[ -e "$CTL/done" ] || { say "no /host/ctl/done from the host within $GUEST_TIMEOUT s"; exit 1; }
say "host is done"
exit 0
