#!/usr/bin/env bash
# Runs the whole system locally: the real 3-broker Kafka cluster (started if
# it is not running), the master, two workers as separate processes, the
# shopper producer at the original pace (one record every two seconds), a
# Mailpit SMTP server and one delivery process that e-mails every purchase
# into it (its HTTP API on 127.0.0.1:8025).
# Notifications appear on this terminal as they happen; logs go to
# deploy/local/.run/logs/. Ctrl-C stops everything this script started.
#
#   deploy/local/run.sh [producer flags...]     e.g. --rate 50 --seed 7
#   KEEP_KAFKA=1 deploy/local/run.sh            leave Kafka running afterwards
#   NOTIFY_FORMAT=json deploy/local/run.sh      one JSON object per notification
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source deploy/local/prereqs.sh
kafka=deploy/local/kafka.sh
export KAFKA_BOOTSTRAP_SERVERS="$("$kafka" bootstrap)"
source deploy/local/flags.sh
keep_kafka=0
if env_flag KEEP_KAFKA "leave the cluster running"; then keep_kafka=1; fi
logs="$root/deploy/local/.run/logs"
mkdir -p "$logs"

started_kafka=0
names=()
pids=()
stopping=0
cleanup() {
  trap - INT TERM HUP EXIT
  # A closed terminal or pipe must not stop the clean-up half way.
  trap '' PIPE
  stopping=1
  echo "run.sh: stopping" >&2
  # Producer first, then workers (they drain and leave), then the master (final commit).
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  if ((started_kafka && !keep_kafka)); then
    "$kafka" down
  fi
}
trap cleanup INT TERM HUP EXIT

# setsid: Ctrl-C reaches only this script, which then stops each child once, cleanly.
start() { # start NAME COMMAND...
  local name="$1"; shift
  setsid "$@" 2>"$logs/$name.log" &
  names+=("$name")
  pids+=("$!")
}

if ! "$kafka" status >/dev/null 2>&1; then
  started_kafka=1
  "$kafka" up
fi
# A cluster started with KAFKA_SECURITY=sasl_ssl: its credentials, from their file.
if props="$("$kafka" client-properties 2>/dev/null)"; then
  export KAFKA_OPTIONS_FILE="$props"
fi

echo "run.sh: building (release; the first build takes several minutes)" >&2
cargo build --release --quiet --bins

start master target/release/master --listen 127.0.0.1:50051 --notify-format "${NOTIFY_FORMAT:-text}" \
  --metrics-listen "${MASTER_METRICS_LISTEN:-127.0.0.1:8080}"
sleep 1
start worker-1 target/release/worker --id worker-1 --metrics-listen 127.0.0.1:8081
start worker-2 target/release/worker --id worker-2 --metrics-listen 127.0.0.1:8082
start producer target/release/producer "$@"
# The customers' inbox: Mailpit, loopback only, messages kept in memory.
mailpit_smtp="${MAILPIT_SMTP:-127.0.0.1:1025}"
mailpit_http="${MAILPIT_HTTP:-127.0.0.1:8025}"
start mailpit mailpit --smtp "$mailpit_smtp" --listen "$mailpit_http" --pop3 127.0.0.1:1110 \
  --max 100000 --disable-version-check --smtp-auth-accept-any --smtp-auth-allow-insecure
start delivery target/release/delivery --smtp-url "smtp://$mailpit_smtp" \
  --metrics-listen "${DELIVERY_METRICS_LISTEN:-127.0.0.1:8083}"

cat >&2 <<TXT
run.sh: running. Master on 127.0.0.1:50051, workers worker-1 and worker-2, producer into DataTopic,
run.sh:          delivery e-mailing each purchase into Mailpit (SMTP $mailpit_smtp).
run.sh: notifications appear below; logs: tail -f $logs/*.log
run.sh: the e-mails: curl -s http://$mailpit_http/api/v1/messages | jq '.messages[] | {To, Subject}'
run.sh:             (this Mailpit is built with go install, without its web UI's assets: use the API)
run.sh: live page: http://${MASTER_METRICS_LISTEN:-127.0.0.1:8080}/   metrics: /metrics there and on 127.0.0.1:8081, :8082 (workers), :8083 (delivery)
run.sh: inspect: grpcurl -plaintext 127.0.0.1:50051 cyberday.v1.Admin/ListAssignments
run.sh:          deploy/local/kafka.sh consumer-groups --describe --group cyberday-notifier
run.sh: Ctrl-C to stop.
TXT

# If any process ends on its own (the producer after --count, or a crash), say so and stop.
set +e
wait -n "${pids[@]}"
status=$?
set -e
# Ctrl-C or SIGTERM: cleanup already stopped everything, on purpose.
if ((stopping)); then exit 0; fi
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[i]}" 2>/dev/null; then
    echo "run.sh: ${names[i]} exited (status $status); last lines of $logs/${names[i]}.log:" >&2
    tail -n 5 "$logs/${names[i]}.log" >&2
  fi
done
