#!/bin/sh
# libFuzzer's coverage instrumentation for scripts/fuzz.sh, in one place.
#
# As the RUSTC_WORKSPACE_WRAPPER of `--instrument peercam` (the default): cargo runs it instead
# of rustc for the workspace's own crates (peercam and these fuzz targets) and runs plain rustc
# for every dependency, so the dependencies are the very artifacts the tests built. It adds the
# flags below: SanitizerCoverage (inline 8-bit edge counters, the PC table, compare tracing,
# stack depth), the flags cargo-fuzz gives every crate, and `--cfg fuzzing`. Build scripts and
# proc macros are host programs without libFuzzer: they are compiled as they are.
#
# `fuzz/rustc-sancov.sh --flags` prints the flags: `--instrument all` puts them in RUSTFLAGS.
#
#   usage (by cargo): fuzz/rustc-sancov.sh RUSTC ARGS...
flags="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth"
if [ "${1:-}" = --flags ]; then
    echo "$flags"
    exit 0
fi
rustc=$1
shift
case " $* " in
*" --crate-name build_script_"* | *" --crate-type proc-macro "*) exec "$rustc" "$@" ;;
esac
# shellcheck disable=SC2086 # the flags are words
exec "$rustc" "$@" $flags
