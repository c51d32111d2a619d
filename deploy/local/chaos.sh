#!/usr/bin/env bash
# The chaos run: 200,000 records at 2,000/s through a master and two
# workers; at seeded random moments a worker, the master and one Kafka broker
# are SIGKILLed and restarted (then two more worker kills, for a median
# failover). At the end it checks from read_committed consumers that every
# valid purchase was notified exactly once and every invalid record
# dead-lettered exactly once with its reason, and that the group's offsets
# were committed to the end; it prints each kill's recovery time.
#
#   deploy/local/chaos.sh                          the full run (a few minutes)
#   deploy/local/chaos.sh --records 50000 --seed 7 --kills worker,master,broker
#   deploy/local/chaos.sh --help                   every flag of target/release/chaos
#
# Environment (all optional):
#   KAFKA_PORT_BASE  its own cluster's first port (default 28092, so a cluster on
#                    9092, the tests' on 27092 or a benchmark's is never touched);
#                    started if not running (and stopped at the end), reused if it is;
#   CHAOS_KILLS      the kills, in order (default worker,master,broker,worker,worker)
#   CHAOS_JSON       where the summary is also written as JSON
#                    (default deploy/local/.run/chaos-summary.json)
# The processes' logs go to target/release/e2e-logs/chaos/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source deploy/local/prereqs.sh

export KAFKA_PORT_BASE="${KAFKA_PORT_BASE:-28092}"
export CHAOS_KILLS="${CHAOS_KILLS:-worker,master,broker,worker,worker}"
export CHAOS_JSON="${CHAOS_JSON:-$root/deploy/local/.run/chaos-summary.json}"
kafka=deploy/local/kafka.sh
case " $* " in
  *" --help "* | *" -h "*)
    cargo build --release --quiet --bin chaos -p e2e
    exec target/release/chaos --help
    ;;
esac
bootstrap="$("$kafka" bootstrap)"
mkdir -p "$(dirname "$CHAOS_JSON")"

started=0
cleanup() {
  if ((started)); then
    "$kafka" down || true
  else
    # An interrupted run may have left a node down: bring every node back.
    for n in 1 2 3; do "$kafka" start "$n" >/dev/null 2>&1 || true; done
  fi
}
trap cleanup EXIT
if "$kafka" status >/dev/null 2>&1; then
  echo "chaos.sh: reusing the cluster already running at $bootstrap" >&2
else
  "$kafka" down >/dev/null 2>&1 || true # a node or two left over from an interrupted run
  started=1
  # A client's ephemeral port can hold one of the cluster's ports for a
  # moment ("Address already in use"): try again.
  for attempt in 1 2 3; do
    if "$kafka" up --fresh; then break; fi
    ((attempt < 3)) || exit 1
    echo "chaos.sh: the cluster did not start (attempt $attempt); trying again" >&2
    "$kafka" down >/dev/null 2>&1 || true
    sleep 2
  done
fi

echo "chaos.sh: building the release binaries" >&2
cargo build --release --quiet --bins -p master -p worker -p producer -p e2e

# target/release/chaos runs the master, worker and producer of target/release.
status=0
target/release/chaos --bootstrap-servers "$bootstrap" --kafka-port-base "$KAFKA_PORT_BASE" "$@" ||
  status=$?
echo "chaos.sh: summary also in $CHAOS_JSON" >&2
exit "$status"
