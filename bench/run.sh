#!/usr/bin/env bash
# The Cyberday notifier benchmark: builds the release binaries,
# starts the benchmark's own 3-broker Kafka cluster if it is not running,
# runs target/release/cyberday-bench, prints the table and writes the same
# figures to bench/results/<date>.json. Stops the cluster it started.
#
#   bench/run.sh                  full run (1M records, 60 s per latency rate, ...)
#   bench/run.sh --quick          smoke run (100k records, 10 s phases, 2 failovers)
#   bench/run.sh --phases drain   any cyberday-bench flag (--help lists them)
#   KEEP_KAFKA=1 bench/run.sh     leave the benchmark's cluster running afterwards
#
# The cluster listens on 127.0.0.1:19192-19194 (controllers 19292-19294), so
# it never touches the dev cluster (9092, 9192) nor the test cluster (27092,
# 27192). BENCH_KAFKA_PORT_BASE picks other ports.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source deploy/local/prereqs.sh
source deploy/local/flags.sh
keep_kafka=0
if env_flag KEEP_KAFKA "leave the benchmark's cluster running"; then keep_kafka=1; fi

export KAFKA_PORT_BASE="${BENCH_KAFKA_PORT_BASE:-19192}"
# Settings meant for another cluster must not leak into this one.
unset KAFKA_CONTROLLER_BASE KAFKA_STATE_DIR KAFKA_TOPIC KAFKA_BOOTSTRAP_SERVERS KAFKA_OPTIONS
kafka=deploy/local/kafka.sh
bootstrap="$("$kafka" bootstrap)"

started_kafka=0
bench_pid=""
cleanup() {
  if ((started_kafka && !keep_kafka)); then
    "$kafka" down
  fi
}
# On a signal: the benchmark itself, so it starts nothing new, then its
# children (master, workers, producer), given 20 s to drain while the
# brokers are still up, then SIGKILL for any left.
interrupted() {
  trap - INT TERM
  if [[ -n "$bench_pid" ]]; then
    local children
    children="$(pgrep -P "$bench_pid" || true)"
    kill -STOP "$bench_pid" 2>/dev/null || true
    [[ -n "$children" ]] && kill -TERM $children 2>/dev/null || true
    for _ in $(seq 1 40); do
      local alive=0 c
      for c in $children; do kill -0 "$c" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.5
    done
    [[ -n "$children" ]] && kill -KILL $children 2>/dev/null || true
    kill -KILL "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  exit 130
}
trap cleanup EXIT
trap interrupted INT TERM

echo "bench/run.sh: building (release)" >&2
cargo build --release --quiet -p master -p worker -p producer -p bench

if ! "$kafka" status >/dev/null 2>&1; then
  started_kafka=1
  "$kafka" up
fi
broker_pids="$("$kafka" status | sed -n 's/.*(pid \([0-9]*\),.*/\1/p' | paste -sd, -)"

target/release/cyberday-bench --bootstrap-servers "$bootstrap" --broker-pids "$broker_pids" \
  --command "bench/run.sh $*" "$@" &
bench_pid=$!
set +e
wait "$bench_pid"
status=$?
set -e
exit "$status"
