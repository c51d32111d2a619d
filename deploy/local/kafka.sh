#!/usr/bin/env bash
# A real 3-node Apache Kafka cluster (KRaft, combined broker+controller) on
# loopback, from Maven Central jars run on the machine's Java 17+.
#
#   deploy/local/kafka.sh up [--fresh]   fetch jars (once), format, start 3 nodes, wait, create topics
#   deploy/local/kafka.sh down           stop the nodes this script started (SIGTERM, then SIGKILL)
#   deploy/local/kafka.sh status         which nodes are up
#   deploy/local/kafka.sh kill N         SIGKILL node N (1..3): chaos and failover tests
#   deploy/local/kafka.sh start N        start node N again and wait until it is ready
#   deploy/local/kafka.sh topics|consumer-groups|offsets ARGS...
#                                        Kafka's own CLIs (kafka-topics, kafka-consumer-groups,
#                                        get-offsets) against this cluster
#   deploy/local/kafka.sh bootstrap      print the bootstrap servers
#   deploy/local/kafka.sh client-properties
#                                        print the path of the client properties file
#                                        (librdkafka key=value: credentials and CA; sasl_ssl only)
#
# Environment (all optional):
#   KAFKA_PORT_BASE        first client port; nodes use BASE, BASE+1, BASE+2 (default 9092)
#   KAFKA_CONTROLLER_BASE  first controller port (default BASE+100)
#   KAFKA_STATE_DIR        where data, logs and pid files live
#                          (default deploy/local/.run/kafka-BASE)
#   KAFKA_HEAP             JVM heap per node (default 2g; memory is taken as it is
#                          used: ~1.2 GiB resident per node after a few minutes under load)
#   KAFKA_GC_OPTS          the nodes' garbage collector flags (default
#                          "-XX:+UseParallelGC -XX:NewRatio=1": half the heap young);
#                          GC log in STATE_DIR/node-N/gc.log
#   KAFKA_TOPIC            input topic created by `up` (default DataTopic); its
#                          dead-letter topic is "$KAFKA_TOPIC.DLQ"
#   KAFKA_PARTITIONS       partitions of the input topic (default 6)
#   KAFKA_READY_TIMEOUT    seconds to wait for the nodes (default 180)
#   KAFKA_SECURITY         plaintext (default) or sasl_ssl: clients then connect with
#                          SASL PLAIN over TLS (user cyberday, a random password),
#                          the brokers' certificate from certs.sh (in STATE_DIR/tls); the
#                          credentials and CA are in STATE_DIR/client.properties (mode 600),
#                          ready for --kafka-options-file. Brokers and controllers
#                          talk PLAINTEXT on their own ports (KAFKA_INTERNAL_BASE, default
#                          BASE+200), which the admin commands below also use. Remembered
#                          by the cluster: later commands need not repeat it.
#
# Tests start their own cluster with another KAFKA_PORT_BASE so they never
# disturb one a person is using. Clusters of this project: dev 9092 (controllers
# 9192), tests 27092 (27192), SASL_SSL test 29092 (29192, internal 29292), chaos
# 28092 (28192), benchmark 19192 (19292): all
# below 32768, where the kernel picks the local ports of outgoing connections,
# so a restarted node never finds its port taken by a client socket.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.kafka"           # jars from Maven Central (git-ignored, kept between runs)
libs="$cache/libs"

port_base="${KAFKA_PORT_BASE:-9092}"
controller_base="${KAFKA_CONTROLLER_BASE:-$((port_base + 100))}"
state="${KAFKA_STATE_DIR:-$here/.run/kafka-$port_base}"
# Any node's GC pause holds every partition's high watermark back (RF 3,
# acks=all), so the heap is sized for few pauses. The parallel collector: a
# node's young pauses took 6-15 ms with it and 14-30 ms with G1
# (-XX:MaxGCPauseMillis=20) on this kind of two-core box; bench, 40 s runs at
# 10k events/s alternating between two warm clusters, p99 23/20/22/34 ms vs
# 27/30/26/31 (512 MiB heaps). A 1 GiB young generation (2 GiB heap, half
# young) instead of ~170 MiB: a pause of ~15-25 ms every ~15 s per node
# instead of ~6-13 ms every ~3 s (~50 vs ~130 ms paused per node per 40 s
# run); p99 better in 10 of 12 pairs (22/18/18/22/30/37/24/24 vs
# 27/31/21/37/30/26/39/35 with 512 MiB; 28/29/16/19 vs 35/33/39/20 with a
# 1 GiB heap half young), brokers 37-45 vs 41-46 CPU-s per run. Full
# collections stop the node (~140 ms for a 90 MiB old generation, `jcmd PID
# GC.run`); at 10k events/s the old generation grows ~4 MiB a minute, so
# one every few hours under that load. G1: KAFKA_GC_OPTS="-XX:+UseG1GC".
heap="${KAFKA_HEAP:-2g}"
gc_opts="${KAFKA_GC_OPTS:--XX:+UseParallelGC -XX:NewRatio=1}"
topic="${KAFKA_TOPIC:-DataTopic}"
partitions="${KAFKA_PARTITIONS:-6}"
ready_timeout="${KAFKA_READY_TIMEOUT:-180}"
internal_base="${KAFKA_INTERNAL_BASE:-$((port_base + 200))}"
security="${KAFKA_SECURITY:-$(cat "$state/security" 2>/dev/null || echo plaintext)}"
[[ "$security" == plaintext || "$security" == sasl_ssl ]] ||
  { echo "kafka.sh: KAFKA_SECURITY must be plaintext or sasl_ssl, not '$security'" >&2; exit 2; }
client_properties="$state/client.properties"
nodes=(1 2 3)

die() { echo "kafka.sh: $*" >&2; exit 1; }
say() { echo "kafka.sh: $*" >&2; }

client_port() { echo $((port_base + $1 - 1)); }
controller_port() { echo $((controller_base + $1 - 1)); }
node_dir() { echo "$state/node-$1"; }
pid_file() { echo "$(node_dir "$1")/kafka.pid"; }

internal_port() { echo $((internal_base + $1 - 1)); }

bootstrap() {
  local out="" n
  for n in "${nodes[@]}"; do out+="${out:+,}127.0.0.1:$(client_port "$n")"; done
  echo "$out"
}

# What this script's own admin commands connect to: with sasl_ssl, the
# brokers' internal PLAINTEXT listener (loopback only).
admin_bootstrap() {
  if [[ "$security" == plaintext ]]; then bootstrap; return; fi
  local out="" n
  for n in "${nodes[@]}"; do out+="${out:+,}127.0.0.1:$(internal_port "$n")"; done
  echo "$out"
}

# sasl_ssl: certificates (certs.sh), the client's password and properties,
# made once per state directory.
prepare_sasl_ssl() {
  "$here/certs.sh" "$state/tls" 2>/dev/null
  [[ -f "$client_properties" ]] && return
  local password
  password="$(openssl rand -hex 16)"
  (
    umask 077
    cat >"$client_properties" <<EOF
# librdkafka properties for the SASL_SSL cluster at $(bootstrap)
# (generated by deploy/local/kafka.sh; pass with --kafka-options-file)
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.username=cyberday
sasl.password=$password
ssl.ca.location=$state/tls/ca.pem
EOF
  )
}

# The listener lines of a node's server.properties.
listener_config() {
  local n="$1"
  if [[ "$security" == plaintext ]]; then
    cat <<EOF
listeners=PLAINTEXT://127.0.0.1:$(client_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(client_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
    return
  fi
  local password key_password
  password="$(sed -n 's/^sasl.password=//p' "$client_properties")"
  key_password="$(cat "$state/tls/kafka-broker.password")"
  cat <<EOF
listeners=CLIENT://127.0.0.1:$(client_port "$n"),INTERNAL://127.0.0.1:$(internal_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=CLIENT://127.0.0.1:$(client_port "$n"),INTERNAL://127.0.0.1:$(internal_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,CLIENT:SASL_SSL
# Clients: SASL PLAIN (one user, cyberday) over TLS.
listener.name.client.sasl.enabled.mechanisms=PLAIN
listener.name.client.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_cyberday="$password";
listener.name.client.ssl.keystore.type=PEM
listener.name.client.ssl.keystore.location=$state/tls/kafka-broker.keystore.pem
listener.name.client.ssl.key.password=$key_password
EOF
}

check_java() {
  command -v java >/dev/null 2>&1 ||
    die "Java 17 or newer is required and 'java' is not on PATH. Install it with: apt-get install -y openjdk-17-jre-headless"
  local v major
  v="$(java -version 2>&1 | head -n1)"
  major="$(sed -E 's/.*version "([0-9]+)(\.[0-9]+)*.*/\1/' <<<"$v")"
  [[ "$major" =~ ^[0-9]+$ && "$major" -ge 17 ]] ||
    die "Kafka 4 needs Java 17 or newer; found: $v. Install it with: apt-get install -y openjdk-17-jre-headless (or set JAVA_HOME and PATH)"
}

# Resolve the broker jars once; afterwards the cache makes `up` work offline.
fetch_jars() {
  if [[ -f "$libs/.complete" && "$libs/.complete" -nt "$here/pom.xml" ]]; then return; fi
  command -v mvn >/dev/null 2>&1 ||
    die "Maven is required once, to fetch Kafka's jars from Maven Central, and 'mvn' is not on PATH. Install it with: apt-get install -y maven"
  say "fetching Apache Kafka jars from Maven Central into $libs (once)"
  rm -rf "$libs"
  mkdir -p "$libs"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" >"$cache/mvn.log" 2>&1 ||
    die "Maven could not resolve Kafka's jars; see $cache/mvn.log"
  ls "$libs" | grep -q '^kafka_2.13-' || die "no kafka_2.13 jar arrived; see $cache/mvn.log"
  touch "$libs/.complete"
}

run_java() { java -Xmx256m -cp "$libs/*" -Dlog4j2.configurationFile="$state/log4j2-tools.properties" "$@"; }

write_configs() {
  mkdir -p "$state"
  echo "$security" >"$state/security"
  if [[ "$security" == sasl_ssl ]]; then prepare_sasl_ssl; fi
  local voters="" n
  for n in "${nodes[@]}"; do voters+="${voters:+,}$n@127.0.0.1:$(controller_port "$n")"; done
  for n in "${nodes[@]}"; do
    local dir; dir="$(node_dir "$n")"
    mkdir -p "$dir"
    # umask: with sasl_ssl it holds the client password and the key's.
    (umask 077 && cat >"$dir/server.properties") <<EOF
# Generated by deploy/local/kafka.sh; edits are overwritten on the next start.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
$(listener_config "$n")
log.dirs=$dir/data
# Small box: two cores shared by three nodes and our own processes.
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
# Durability: every topic is replicated on all three nodes and a write needs two in sync.
default.replication.factor=3
min.insync.replicas=2
# Three partitions each (one led by each node) for the offsets and transaction
# logs: every follower fetch and every leader's answer to it walks all the
# partitions the pair shares, busy or idle. Bench "Kafka alone" at 10k
# events/s: 43 broker CPU-s per 40 s and p99 20 ms with 10 each; 35 and 13 ms with 3.
offsets.topic.replication.factor=3
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=3
unclean.leader.election.enable=false
# The log cleaner's key map (compacted topics: offsets, transactions) lives on
# the heap: 128 MiB by default, a quarter of a node's heap and above G1's mark
# threshold with the rest, so G1 (the collector then) marked and mixed all the
# time. 16 MiB holds ~600k keys, far more than these topics have. Bench at 10k
# events/s, runs 2-3 of 3 x 40 s after drains: p99 22/20 ms vs 39/32, GC
# pauses 1.7 s vs 2.4 s in total, brokers 42/39 CPU-s vs 51/46.
log.cleaner.dedupe.buffer.size=16777216
auto.create.topics.enable=false
num.partitions=$partitions
group.initial.rebalance.delay.ms=0
# Standby masters (master --election) take over when the leader's election
# session times out; the default floor of 6 s would make that the takeover.
group.min.session.timeout.ms=500
# A node shuts itself down if the quorum is not up in time; nodes start together.
initial.broker.registration.timeout.ms=120000
EOF
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
  done
  cat >"$state/log4j2-tools.properties" <<EOF
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

format_storage() {
  local id="" n
  if [[ -f "$state/cluster.id" ]]; then id="$(cat "$state/cluster.id")"; fi
  for n in "${nodes[@]}"; do
    local dir; dir="$(node_dir "$n")"
    [[ -f "$dir/data/meta.properties" ]] && continue
    if [[ -z "$id" ]]; then
      id="$(run_java kafka.tools.StorageTool random-uuid | tail -n1)"
      echo "$id" >"$state/cluster.id"
    fi
    run_java kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" >"$dir/format.log" 2>&1 ||
      die "formatting node $n failed; see $dir/format.log"
  done
}

# The pid is ours only if that process still runs this node's config.
node_pid() {
  local f; f="$(pid_file "$1")"
  [[ -f "$f" ]] || return 1
  local pid; pid="$(cat "$f")"
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$(node_dir "$1")/server.properties" || return 1
  echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_node() {
  local n="$1" dir; dir="$(node_dir "$n")"
  if node_pid "$n" >/dev/null; then return; fi
  local ports=("$(client_port "$n")" "$(controller_port "$n")")
  if [[ "$security" == sasl_ssl ]]; then ports+=("$(internal_port "$n")"); fi
  for p in "${ports[@]}"; do
    if port_busy "$p"; then
      die "port $p is already in use by another process; stop it, or pick other ports with KAFKA_PORT_BASE=..."
    fi
  done
  : >"$dir/server.log"
  # setsid: the node outlives the shell that started it; Ctrl-C in that shell does not reach it.
  # shellcheck disable=SC2086 # KAFKA_GC_OPTS is a list of JVM flags
  setsid java -Xms"$heap" -Xmx"$heap" $gc_opts \
    -Xlog:gc:file="$dir/gc.log":utctime,uptime:filecount=2,filesize=5m \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$libs/*" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 </dev/null &
  echo $! >"$(pid_file "$n")"
}

wait_ready() {
  local deadline=$((SECONDS + ready_timeout)) n
  for n in "$@"; do
    local dir; dir="$(node_dir "$n")"
    until grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null; do
      if ! node_pid "$n" >/dev/null; then
        tail -n 20 "$dir/stdout.log" "$dir/server.log" >&2 || true
        die "node $n exited while starting; logs: $dir/server.log $dir/stdout.log"
      fi
      ((SECONDS < deadline)) || die "node $n not ready after ${ready_timeout}s; see $dir/server.log"
      sleep 0.5
    done
  done
}

create_topics() {
  local t
  for t in "$topic" "$topic.DLQ"; do
    run_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$(admin_bootstrap)" \
      --create --if-not-exists --topic "$t" --partitions "$partitions" \
      --replication-factor 3 --config min.insync.replicas=2 >/dev/null ||
      die "could not create topic $t"
  done
}

# Nodes restarted on existing data come up one by one, and the first one up
# leads every partition it holds (12 of 18 here after a restart). Kafka moves
# them back to their preferred leaders by itself, but only at its imbalance
# check five minutes later, and that move stalled a benchmark run for 244-372
# ms (the group and transaction coordinators move with their partitions). So
# `up` elects the preferred leaders at once; a replica still catching up
# makes the election fail for its partition, hence the retries.
elect_preferred_leaders() {
  local attempt out
  for attempt in $(seq 1 20); do
    if out="$(run_java org.apache.kafka.tools.LeaderElectionCommand --bootstrap-server "$(admin_bootstrap)" \
      --election-type PREFERRED --all-topic-partitions 2>&1)"; then
      return 0
    fi
    ((attempt < 20)) && sleep 1
  done
  local why
  why="$(grep -m1 'could not be elected' <<<"$out" || tail -n1 <<<"$out")"
  say "warning: preferred leader election: $why; those partitions keep their current leaders until Kafka moves them (within 5 minutes)"
}

# SIGTERM to all given nodes at once (a lone last node cannot shut down in an
# orderly way without a quorum), then SIGKILL whatever is left after 30 s.
stop_nodes() {
  local pids=() n pid
  for n in "$@"; do
    if pid="$(node_pid "$n")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for _ in $(seq 1 60); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for n in "$@"; do rm -f "$(pid_file "$n")"; done
}

cmd_up() {
  local fresh=0
  [[ "${1:-}" == "--fresh" ]] && fresh=1
  check_java
  fetch_jars
  local n
  if ((fresh)); then
    for n in "${nodes[@]}"; do
      if node_pid "$n" >/dev/null; then die "node $n at $(bootstrap) is running; run 'down' before 'up --fresh'"; fi
    done
    rm -rf "$state"
  fi
  write_configs
  format_storage
  for n in "${nodes[@]}"; do start_node "$n"; done
  say "waiting for 3 nodes at $(bootstrap) (logs in $state)"
  wait_ready "${nodes[@]}"
  create_topics
  elect_preferred_leaders
  if [[ "$security" == sasl_ssl ]]; then
    say "SASL_SSL: client credentials and CA in $client_properties (for --kafka-options-file)"
  fi
  say "ready: bootstrap servers $(bootstrap); topics $topic and $topic.DLQ ($partitions partitions, RF 3, min.insync.replicas=2)"
}

cmd_status() {
  local up=0 n
  for n in "${nodes[@]}"; do
    if pid="$(node_pid "$n")"; then
      echo "node $n: up (pid $pid, 127.0.0.1:$(client_port "$n"))"
      up=$((up + 1))
    else
      echo "node $n: down (127.0.0.1:$(client_port "$n"))"
    fi
  done
  ((up == 3))
}

need_node_arg() {
  [[ "${1:-}" =~ ^[123]$ ]] || die "expected a node number 1, 2 or 3; got '${1:-}'"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) stop_nodes "${nodes[@]}"; say "stopped the nodes at $(bootstrap)" ;;
  status) cmd_status ;;
  kill)
    need_node_arg "${2:-}"
    if pid="$(node_pid "$2")"; then kill -KILL "$pid"; rm -f "$(pid_file "$2")"; say "killed node $2 (pid $pid)"; else say "node $2 was not running"; fi
    ;;
  start)
    need_node_arg "${2:-}"
    check_java; write_configs; start_node "$2"; wait_ready "$2"; say "node $2 ready"
    ;;
  topics) shift; fetch_jars; mkdir -p "$state"; write_configs; run_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$(admin_bootstrap)" "$@" ;;
  consumer-groups) shift; fetch_jars; write_configs; run_java org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$(admin_bootstrap)" "$@" ;;
  offsets) shift; fetch_jars; write_configs; run_java org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$(admin_bootstrap)" "$@" ;;
  bootstrap) bootstrap ;;
  client-properties)
    [[ "$security" == sasl_ssl ]] || die "the cluster at $(bootstrap) is plaintext: it needs no client properties"
    echo "$client_properties"
    ;;
  *)
    sed -n '2,41p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
