#!/usr/bin/env bash
# Fuzzes peercam's parsers of outside input (cargo-fuzz, libFuzzer): the signaling message
# parser, the offer-handling / codec-choice path and the config parser. fuzz/README.md says
# what each target checks.
#
#   bash scripts/fuzz.sh [--seconds N] [--runs N] [target ...]
#
# Targets: signaling, offer, config (default: all three). Each runs for N seconds (default
# $FUZZ_SECONDS, else 30), or for N executions with --runs (then without a time limit), from
# the committed seed corpus fuzz/corpus/<target>/ (read only: new inputs go to the scratch
# corpus fuzz/scratch/<target>/, emptied first) with the dictionary fuzz/dictionaries/<target>.dict.
# A crash (panic), timeout or out-of-memory leaves its input in fuzz/artifacts/<target>/ and
# fails the run; the script prints the input's path and the command that reproduces it.
#
# Installs what it needs: the build packages (scripts/install-deps.sh), cargo-fuzz (pinned,
# `cargo install --locked`) when missing. The toolchain is the pinned stable one
# (rust-toolchain.toml): cargo-fuzz's -Z flags are allowed with RUSTC_BOOTSTRAP=1, no nightly.
# Built without a sanitizer (`-s none`: the targets are safe Rust; a panic or failed assertion
# is the crash), in fuzz/target (FUZZ_TARGET_DIR overrides), all targets in one cargo run.
#
# Prints one summary line per target and `N passed, N failed`; exits 1 if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.1
ALL_TARGETS=(signaling offer config)
seconds=${FUZZ_SECONDS:-30}
runs=""
targets=()
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
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

step "fuzz: build packages, cargo-fuzz $CARGO_FUZZ_VERSION"
# peercam's own build packages; libFuzzer (libfuzzer-sys) is C++, built with g++.
scripts/install-deps.sh
scripts/apt-install.sh g++
if [[ "$(cargo fuzz --version 2>/dev/null)" != *" $CARGO_FUZZ_VERSION" ]]; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# cargo-fuzz passes -Z flags to cargo and rustc; the pinned stable toolchain takes them so.
export RUSTC_BOOTSTRAP=1
target_dir=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}
triple=$(rustc -vV | sed -n 's/^host: //p')
build=(cargo fuzz build --sanitizer none --target-dir "$target_dir")
step "fuzz: build (${build[*]})"
start=$SECONDS
# The daemon's dependency versions (fuzz/Cargo.lock is not committed; cargo adds libFuzzer's).
cp Cargo.lock fuzz/Cargo.lock
if ((${#targets[@]} == 1)); then
  "${build[@]}" "${targets[0]}"
else
  "${build[@]}"
fi
echo "fuzz: built in $((SECONDS - start)) s"

passed=0
failed=0
summaries=()
for t in "${targets[@]}"; do
  bin="$target_dir/$triple/release/$t"
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
      echo "fuzz:   reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none $t $c" >&2
      echo "fuzz:   or:        $bin $c" >&2
      echo "fuzz:   minimise:  RUSTC_BOOTSTRAP=1 cargo fuzz tmin --sanitizer none $t $c" >&2
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
