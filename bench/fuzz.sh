#!/usr/bin/env bash
# Fuzzes the record parser and classifier (fuzz/fuzz_targets/classify.rs) for
# a fixed number of executions and reports how many ran and how it ended.
# A benchmark-style run for people, not part of CI.
#
#   bench/fuzz.sh                  # 1,000,000 executions
#   RUNS=10000000 bench/fuzz.sh    # more
#   bench/fuzz.sh -max_len=70000   # extra libFuzzer flags are passed through
#
# Needs a nightly toolchain (sanitizers) and cargo-fuzz; installs cargo-fuzz
# when it is missing. New corpus entries go to fuzz/corpus/classify/ (only
# the seed-* files there are tracked); crashes go to fuzz/artifacts/classify/.
set -euo pipefail

TARGET=classify
RUNS=${RUNS:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_DIR="$ROOT/fuzz/target/logs"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: a nightly Rust toolchain is required (cargo-fuzz builds with sanitizers)." >&2
    echo "fuzz.sh: install it with:  rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi

cd "$ROOT"
mkdir -p "$LOG_DIR"
log="$LOG_DIR/$TARGET-$(date +%Y%m%dT%H%M%S).log"
echo "fuzz.sh: $(cargo +nightly --version), $(cargo fuzz --version)"
echo "fuzz.sh: building and running target '$TARGET' for $RUNS executions; libFuzzer output in $log"

start=$(date +%s)
set +e
# -print_final_stats: the executed-unit count below comes from libFuzzer itself.
cargo +nightly fuzz run "$TARGET" -- -runs="$RUNS" -print_final_stats=1 "$@" >"$log" 2>&1
status=$?
set -e
elapsed=$(($(date +%s) - start))

done_line=$(grep -E '^Done [0-9]+ runs in' "$log" | tail -n 1 || true)
executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
tail -n 25 "$log"
echo
echo "fuzz.sh: target:          $TARGET"
echo "fuzz.sh: libFuzzer:       ${done_line:-no 'Done' line (see $log)}"
echo "fuzz.sh: executions:      ${executed:-unknown}"
echo "fuzz.sh: wall time:       ${elapsed} s (build included)"
echo "fuzz.sh: exit status:     $status"
if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: FAILED: reproduce a crash with: cargo +nightly fuzz run $TARGET fuzz/artifacts/$TARGET/<file>" >&2
fi
exit "$status"
