#!/bin/sh
# The RUSTC_WORKSPACE_WRAPPER of scripts/test.sh's test build: cargo runs it instead of rustc
# for peercam's own crates and plain rustc for every dependency. It compiles with clippy-driver
# (rustc plus clippy's lints; `cargo clippy` runs the same driver the same way, but for a
# check-only build) and turns every warning into an error. So one build both lints, as
# `cargo clippy --all-targets -- -D warnings` does, and makes the test binaries, without a
# second pass over the whole dependency tree in check mode.
#
#   usage (by cargo): scripts/clippy-rustc.sh RUSTC ARGS...
exec clippy-driver "$@" -D warnings
