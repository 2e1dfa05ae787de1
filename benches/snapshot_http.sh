#!/usr/bin/env bash
# /snapshot.jpg through HTTP, and what keeping the newest picture costs while nobody asks.
#
#   bash benches/snapshot_http.sh BINARY [BASELINE_BINARY]
#
# 1. Time to serve: for the test pattern (raw) and the simulated H.264 camera (passthrough,
#    an IDR every 2 s) at 640x480 and 1280x720, 20 snapshots 300 ms apart (so none is the
#    100 ms reuse, and they land all over the keyframe interval) with curl from the same
#    machine; p50 and p95 of curl's time_total in ms.
# 2. Idle CPU: the daemon with the test pattern at 1280x720@30 and nobody watching or asking,
#    its CPU (utime + stime from /proc) over 30 s, as % of one core; with BASELINE_BINARY (a
#    build without /snapshot.jpg), both, interleaved, twice each.
# Prints Markdown tables. Needs curl and a free port 7391 on loopback.
set -euo pipefail

bin=${1:?usage: snapshot_http.sh BINARY [BASELINE_BINARY]}
baseline=${2:-}
port=7391
dir=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

# start BINARY WIDTH HEIGHT EXTRA_VIDEO_LINES
start() {
    cat >"$dir/peercam.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
[video]
source = "test"
width = $2
height = $3
fps = 30
$4
[audio]
source = "none"
[log]
level = "warn"
EOF
    "$1" --config "$dir/peercam.toml" 2>"$dir/log" &
    pid=$!
    # /healthz: the baseline build has no /snapshot.jpg. Then past the first frames.
    for _ in $(seq 100); do
        if curl -sf -o /dev/null "http://127.0.0.1:$port/healthz"; then
            sleep 1
            return
        fi
        sleep 0.1
    done
    cat "$dir/log" >&2
    echo "$1 did not answer within 10 s" >&2
    exit 1
}

stop() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
}

# p50 and p95 (ms) of the numbers (seconds) on stdin.
percentiles() {
    sort -n | awk '{ v[NR] = $1 * 1000 } END {
        p50 = v[int((NR - 1) * 0.5 + 1.5)]; p95 = v[int((NR - 1) * 0.95 + 1.5)];
        printf "%.1f | %.1f", p50, p95 }'
}

echo "| source | size | query | p50 ms | p95 ms | JPEG bytes |"
echo "|---|---|---|---|---|---|"
for source in raw passthrough; do
    for size in 640x480 1280x720; do
        extra=""
        [[ $source == passthrough ]] && extra=$'format = "h264"\nkeyframe_interval_s = 2'
        start "$bin" "${size%x*}" "${size#*x}" "$extra"
        for query in "" "?width=320"; do
            : >"$dir/times"
            for _ in $(seq 20); do
                curl -s -o "$dir/still.jpg" -w '%{time_total}\n' \
                    "http://127.0.0.1:$port/snapshot.jpg$query" >>"$dir/times"
                sleep 0.3
            done
            bytes=$(stat -c %s "$dir/still.jpg")
            echo "| $source | $size | ${query:-(none)} | $(percentiles <"$dir/times") | $bytes |"
        done
        stop
    done
done

# Prints a row: BINARY's CPU over 30 s with nobody watching, % of one core. (Not in a
# subshell: the daemon's pid must stay where the EXIT trap sees it.)
idle_cpu() {
    start "$1" 1280 720 ""
    sleep 2 # past start-up
    local tck before after
    tck=$(getconf CLK_TCK)
    before=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    sleep 30
    after=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    stop
    awk -v n="$(basename "$1")" -v a="$after" -v b="$before" -v t="$tck" \
        'BEGIN { printf "| %s | %.2f |\n", n, (a - b) / t / 30 * 100 }'
}

echo
echo "| build | idle CPU, % of one core (1280x720@30 test pattern, 30 s) |"
echo "|---|---|"
for _ in 1 2; do
    idle_cpu "$bin"
    if [[ -n $baseline ]]; then
        idle_cpu "$baseline"
    fi
done
