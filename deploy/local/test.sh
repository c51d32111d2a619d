#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, starts a
# throw-away 3-broker Kafka cluster on 127.0.0.1:27092-27094 (so a cluster you
# run on 9092 is never touched), checks formatting and lints, runs every test
# against the real brokers, and stops the cluster it started.
#
#   deploy/local/test.sh [extra cargo test args]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source deploy/local/prereqs.sh
# Prometheus's checker of /metrics scrapes (tests/tests/metrics.rs); keep the
# version in step with PROMTOOL_VERSION in tests/src/scrape.rs.
go_tool promtool github.com/prometheus/prometheus/cmd/promtool v0.316.0 "checks the /metrics scrapes"

export KAFKA_PORT_BASE=27092
export CYBERDAY_TEST_BOOTSTRAP="127.0.0.1:27092,127.0.0.1:27093,127.0.0.1:27094"
kafka=deploy/local/kafka.sh

started=0
stop_cluster() { if ((started)); then "$kafka" down || true; fi; }
trap stop_cluster EXIT
if "$kafka" status >/dev/null 2>&1; then
  echo "test.sh: reusing the test cluster already running at $CYBERDAY_TEST_BOOTSTRAP" >&2
else
  "$kafka" down >/dev/null 2>&1 || true # a node or two left over from an interrupted run
  started=1
  "$kafka" up --fresh
fi

echo "test.sh: cargo fmt --check" >&2
cargo fmt --all -- --check
echo "test.sh: cargo clippy" >&2
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "test.sh: cargo build (the end-to-end tests run the real binaries)" >&2
cargo build --workspace --bins --quiet
echo "test.sh: cargo test" >&2
log="$(mktemp)"
status=0
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log" || status=$?
# One closing line with the totals of every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
