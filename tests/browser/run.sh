#!/bin/sh
# Browser tests: headless Chromium and Firefox ESR against the real peercam daemon.
# Usage: tests/browser/run.sh [test files...]   (default: every *.test.mjs here)
# Env: PEERCAM_BIN (absolute, or relative to the repository root; default target/debug/peercam),
#      PEERCAM_LOG=1 to echo the daemon's log.
set -eu
cd "$(dirname "$0")"

if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/ws ]; then
    npm ci --no-audit --no-fund
fi

if [ "$#" -eq 0 ]; then
    set -- ./*.test.mjs
fi
# One file at a time: each test starts its own daemon and browser, and the encoders need the CPU.
exec node --test --test-concurrency=1 --test-reporter=spec "$@"
