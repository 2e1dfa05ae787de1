#!/bin/sh
# Scale-out on a real SFU: peercam publishes over WHIP to Janus (Debian's janus, VideoRoom),
# headless Chromium watches through Janus. README.md here says what and why.
#
# Usage: tests/sfu/run.sh [test files...]          (default: every *.test.mjs here)
#        tests/sfu/run.sh --exec COMMAND [ARG...]  (any command in the same namespace, e.g.
#                                                   node benches/browser/sfu.mjs)
# Env: PEERCAM_BIN (absolute, or relative to the repository root; default target/debug/peercam),
#      PEERCAM_LOG=1 / JANUS_LOG=1 to echo the daemon's / Janus's log.
#
# Installs janus (apt) and the node packages when missing, then runs everything in a network
# namespace and a PID namespace of its own (unshare; root): Janus never gathers ICE candidates
# on loopback, so the namespace has one more address, 203.0.113.1 (TEST-NET-3) on a veth pair
# whose both ends are inside it, and no route out. When the command ends, or this script is
# killed, the kernel kills every process left in the PID namespace: nothing outlives the run.
set -eu
ADDRESS=203.0.113.1

if [ "${1:-}" = "--inside" ]; then
    # Inside the namespaces (PID 1 is this shell's exec target).
    shift
    ip link set lo up
    ip link add sfu0 type veth peer name sfu1
    ip addr add "$ADDRESS/24" dev sfu0
    ip link set sfu0 up
    ip link set sfu1 up
    export SFU_ICE_ADDRESS="$ADDRESS"
    if [ "${1:-}" = "--exec" ]; then
        shift
        cd "$SFU_CALLER_DIR"
        exec "$@"
    fi
    if [ "$#" -eq 0 ]; then
        set -- ./*.test.mjs
    fi
    exec node --test --test-concurrency=1 --test-reporter=spec "$@"
fi

SFU_CALLER_DIR=$(pwd)
export SFU_CALLER_DIR
cd "$(dirname "$0")"
here=$(pwd)
root=$(cd ../.. && pwd)

# Debian's Janus (1.1.x); unshare (util-linux) and ip (iproute2) for the namespaces.
fresh=0
dpkg-query -W -f='${Status}' janus 2>/dev/null | grep -q "install ok installed" || fresh=1
"$root/scripts/apt-install.sh" janus iproute2 util-linux
# The package enables and starts a system-wide janus.service (/etc/janus: its APIs on every
# interface). The tests run their own Janus: stop the service that this install started.
if [ "$fresh" -eq 1 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now janus.service || true
fi

# playwright-core and ws: the browser tests' own install (tests/browser/helpers.mjs is shared).
if [ ! -d ../browser/node_modules/playwright-core ] || [ ! -d ../browser/node_modules/ws ]; then
    (cd ../browser && npm ci --no-audit --no-fund)
fi
# janode, pinned in package-lock.json. It imports unix-dgram, a native addon that node-gyp
# builds at install: against the installed Node's own headers when it has them (no download).
if [ ! -f node_modules/janode/package.json ] \
    || [ ! -f node_modules/unix-dgram/build/Release/unix_dgram.node ]; then
    if [ -f /usr/include/node/node.h ]; then
        export npm_config_nodedir=/usr
    fi
    npm ci --no-audit --no-fund
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/sfu/run.sh: needs root for its network namespace (unshare --net)" >&2
    exit 1
fi
cd "$here"
exec unshare --net --pid --fork --kill-child --mount-proc "$here/run.sh" --inside "$@"
