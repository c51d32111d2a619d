#!/usr/bin/env bash
# Runs the whole system locally: the real 3-broker Kafka cluster (started if
# it is not running) and the shopper producer at the original pace, one record
# every two seconds. Ctrl-C stops everything this script started.
#
#   deploy/local/run.sh [producer flags...]     e.g. --rate 50 --seed 7
#   KEEP_KAFKA=1 deploy/local/run.sh            leave Kafka running afterwards
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source deploy/local/prereqs.sh
kafka=deploy/local/kafka.sh
export KAFKA_BOOTSTRAP_SERVERS="$("$kafka" bootstrap)"

started_kafka=0
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if ((started_kafka)) && [[ -z "${KEEP_KAFKA:-}" ]]; then
    "$kafka" down
  fi
}
trap cleanup INT TERM EXIT

if ! "$kafka" status >/dev/null 2>&1; then
  started_kafka=1
  "$kafka" up
fi

echo "run.sh: building (release)" >&2
cargo build --release --quiet --bin producer

echo "run.sh: producing into DataTopic at $KAFKA_BOOTSTRAP_SERVERS; watch the records with:" >&2
echo "run.sh:   kcat -C -b 127.0.0.1:9092 -t DataTopic -f '%p:%o %k %s\n'" >&2
echo "run.sh: Ctrl-C to stop" >&2
# setsid: Ctrl-C reaches only this script, which then stops each child once, cleanly.
RUST_LOG="${RUST_LOG:-info,producer=debug}" setsid target/release/producer "$@" &
pids+=($!)
wait "${pids[@]}"
