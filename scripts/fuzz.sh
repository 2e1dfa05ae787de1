#!/usr/bin/env bash
# Fuzzes peercam's parsers of outside input with libFuzzer (libfuzzer-sys): the signaling
# message parser, the offer-handling / codec-choice path and the config parser. fuzz/README.md
# says what each target checks.
#
#   bash scripts/fuzz.sh [--seconds N | --runs N] [--instrument peercam|all] [target ...]
#
# Targets: signaling, offer, config (default: all three). Each runs for N seconds (default
# $FUZZ_SECONDS, else 30), or for N executions with --runs (then without a time limit;
# `--runs 0` only replays the corpus), from the committed seed corpus fuzz/corpus/<target>/
# (read only: new inputs go to the scratch corpus fuzz/scratch/<target>/, emptied first) with
# the dictionary fuzz/dictionaries/<target>.dict. A crash (panic), timeout or out-of-memory
# leaves its input in fuzz/artifacts/<target>/ and fails the run; the script prints the
# input's path and the command that reproduces it.
#
# --instrument peercam (default): coverage instrumentation on peercam's own code and the
#   targets only (fuzz/rustc-sancov.sh as cargo's workspace wrapper), in the dev profile and
#   target/ like the tests, so every dependency is the one the tests built: a build of about
#   two minutes after `cargo test`. libFuzzer sees no coverage inside serde_json or toml. For
#   short runs (the test command: the corpus plus a few seconds per target).
# --instrument all: every crate instrumented, as cargo-fuzz does (the same flags in RUSTFLAGS
#   with an explicit --target, so build scripts and proc macros stay plain), in
#   target/fuzz-all: the whole dependency tree built once more. For long runs
#   (`scripts/test.sh --full`: 5 minutes per target).
#
# No sanitizer: the targets are safe Rust, a panic or failed assertion is the crash. Stable
# toolchain (rust-toolchain.toml), no cargo-fuzz: the flags are rustc's stable -C options.
#
# Prints one summary line per target and `N passed, N failed`; exits 1 if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(signaling offer config)
seconds=${FUZZ_SECONDS:-30}
runs=""
instrument=peercam
targets=()
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    --instrument) instrument=${2:?--instrument needs peercam or all}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *)
      [[ " ${ALL_TARGETS[*]} " == *" $1 "* ]] || {
        echo "fuzz.sh: unknown target $1 (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
      }
      targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")
[[ $seconds =~ ^[0-9]+$ && (-z $runs || $runs =~ ^[0-9]+$) ]] || {
  echo "fuzz.sh: --seconds and --runs take whole numbers" >&2
  exit 2
}

step() { printf '\n==> %s\n' "$*"; }

step "fuzz: build packages"
# peercam's own build packages; libFuzzer (libfuzzer-sys) is C++, built with g++.
scripts/install-deps.sh
scripts/apt-install.sh g++

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
case "$instrument" in
  peercam)
    build=(env RUSTC_WORKSPACE_WRAPPER="$PWD/fuzz/rustc-sancov.sh"
      cargo build --locked -p peercam-fuzz "${bins[@]}")
    bin_dir="$target_dir/debug"
    ;;
  all)
    triple=$(rustc -vV | sed -n 's/^host: //p')
    target_dir="$target_dir/fuzz-all"
    build=(env RUSTFLAGS="$(fuzz/rustc-sancov.sh --flags)"
      cargo build --locked -p peercam-fuzz "${bins[@]}" --target "$triple" --target-dir "$target_dir")
    bin_dir="$target_dir/$triple/debug"
    ;;
  *) echo "fuzz.sh: --instrument takes peercam or all, not $instrument" >&2; exit 2 ;;
esac
step "fuzz: build, instrumenting $instrument (${build[*]})"
start=$SECONDS
"${build[@]}"
echo "fuzz: built in $((SECONDS - start)) s"

passed=0
failed=0
summaries=()
for t in "${targets[@]}"; do
  bin="$bin_dir/$t"
  scratch="fuzz/scratch/$t"
  artifacts="fuzz/artifacts/$t"
  rm -rf "$scratch"
  mkdir -p "$scratch" "$artifacts"
  args=(-artifact_prefix="$artifacts/" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048)
  [[ -f fuzz/dictionaries/$t.dict ]] && args+=(-dict="fuzz/dictionaries/$t.dict")
  if [[ -n $runs ]]; then
    args+=(-runs="$runs")
    what="$runs executions"
  else
    args+=(-max_total_time="$seconds")
    what="$seconds s"
  fi
  step "fuzz: $t for $what"
  log="$scratch.log"
  start=$SECONDS
  status=0
  # The first corpus directory receives new inputs; the committed one is only read.
  "$bin" "${args[@]}" "$scratch" "fuzz/corpus/$t" >"$log" 2>&1 || status=$?
  elapsed=$((SECONDS - start))
  tail -n 25 "$log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$last")
  mapfile -t crashes < <(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log")
  if ((status == 0 && ${#crashes[@]} == 0)); then
    passed=$((passed + 1))
    verdict=ok
  else
    failed=$((failed + 1))
    verdict=FAILED
    echo "fuzz: $t FAILED (exit status $status); full output: $log" >&2
    for c in "${crashes[@]}"; do
      echo "fuzz: $t crash input: $c" >&2
      echo "fuzz:   reproduce: $bin $c" >&2
      echo "fuzz:   minimise:  $bin -minimize_crash=1 -runs=10000 $c" >&2
    done
  fi
  summary="fuzz $t: ${execs:-?} executions in $elapsed s (${rate:-?} exec/s), cov ${cov:-?} ft ${ft:-?}, corpus ${corp:-?}, new inputs $(find "$scratch" -type f | wc -l), crashes ${#crashes[@]}: $verdict"
  echo "$summary"
  summaries+=("$summary")
done

step "fuzz: summary"
printf '%s\n' "${summaries[@]}"
echo "$passed passed, $failed failed"
((failed == 0))
