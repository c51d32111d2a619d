"""Offline checks of everything under deploy/ that Docker or Kubernetes would
otherwise be the first to reject. check.sh runs it after rendering:

  k8s         every object of `kustomize build deploy/k8s` (and of the
              Strimzi overlay) against the Kubernetes JSON schemas, strictly
              (unknown fields are errors), for the oldest and newest
              Kubernetes versions we support; then what a schema cannot
              say: references resolve (Services to pods, ports, ConfigMaps,
              the StatefulSet's headless Service), one master with gRPC
              probes, the KRaft quorum is consistent, non-root/read-only
              containers, resources, grace periods.
  compose     the model compose-go (the library of `docker compose config`)
              made of deploy/compose.yaml: same topology and Kafka settings.
  dockerfile  the structure hadolint does not know is ours: multi-stage,
              `--locked`, the three binaries, a numeric non-root USER, no
              ENTRYPOINT, and a .dockerignore that keeps target/ out but the
              workspace in.

With --env-report FILE it also writes, per container that runs one of our
binaries, the environment variable names it sets (JSON); the Rust test
tests/tests/deploy_manifests.rs checks those against each binary's --help.
"""

import argparse
import fnmatch
import json
import os
import re
import sys

import yaml
from kubernetes_validate import utils as kv

NAMESPACE = "cyberday"
PART_OF = "cyberday-notifier"
APP_IMAGE = "cyberday-notifier"
BINARIES = ("master", "worker", "producer", "delivery")
# Native gRPC probes are GA since 1.27; 1.29 is the oldest release we check.
K8S_VERSIONS = ("1.29.0", "1.37.0")
# Custom resources have no schema in kubernetes-validate: their groups are
# allowed to go unvalidated (and get the structural checks below instead).
CRD_GROUPS = ("kafka.strimzi.io",)
TOPICS = {"DataTopic", "DataTopic.DLQ", "Notifications"}
GRPC_PORT = 50051
MIN_GRACE_SECONDS = 30


class Report:
    def __init__(self):
        self.problems = []
        self.notes = []
        self.checked = 0

    def check(self, ok, where, message):
        self.checked += 1
        if not ok:
            self.problems.append(f"{where}: {message}")
        return ok

    def note(self, message):
        self.notes.append(message)


# --------------------------------------------------------------------------
# Kubernetes


def obj_id(o):
    return f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"


def pod_spec(o):
    spec = o.get("spec", {})
    if o["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        return spec.get("template", {}).get("spec", {})
    if o["kind"] == "Pod":
        return spec
    return None


def pod_labels(o):
    return o.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_map(container):
    return {e["name"]: e.get("value") for e in container.get("env", []) or []}


def image_parts(image):
    """('name', 'tag') of an image reference; tag None when absent."""
    if "@" in image:
        return image.split("@", 1)[0], "digest"
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, None
    return name, tag


def app_binary(container):
    """The binary a container of our image runs, or None for other images."""
    name, _ = image_parts(container.get("image", ""))
    if name.rsplit("/", 1)[-1] != APP_IMAGE:
        return None
    cmd = (container.get("command") or []) + (container.get("args") or [])
    return cmd[0] if cmd else "master"  # the image's CMD


def validate_schemas(r, docs, label):
    for o in docs:
        group = o.get("apiVersion", "").split("/")[0] if "/" in o.get("apiVersion", "") else ""
        for version in K8S_VERSIONS:
            try:
                kv.validate(o, version, strict=True)
                r.check(True, label, "")
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                r.check(False, f"{label} {obj_id(o)}", f"invalid for Kubernetes {e.version}: {path}: {e.message}")
            except kv.SchemaNotFoundError:
                if group in CRD_GROUPS:
                    r.note(f"{label}: {obj_id(o)} ({o['apiVersion']}) is a custom resource; "
                           "no schema offline, structural checks only")
                    break
                r.check(False, f"{label} {obj_id(o)}", f"no schema for {o.get('apiVersion')} {o.get('kind')} "
                        f"in Kubernetes {version}: a typo in apiVersion/kind, or an API that was removed")


def check_k8s(r, docs, label, env_report, expect_statefulset_kafka):
    where = lambda o: f"{label} {obj_id(o)}"  # noqa: E731
    validate_schemas(r, docs, label)

    seen = set()
    for o in docs:
        key = (o.get("kind"), o.get("metadata", {}).get("name"))
        r.check(key not in seen, where(o), "defined twice")
        seen.add(key)
        md = o.get("metadata", {})
        if o["kind"] == "Namespace":
            r.check(md.get("name") == NAMESPACE, where(o), f"namespace should be {NAMESPACE}")
        else:
            r.check(md.get("namespace") == NAMESPACE, where(o), f"not in namespace {NAMESPACE}")
        r.check((md.get("labels") or {}).get("app.kubernetes.io/part-of") == PART_OF, where(o),
                f"missing label app.kubernetes.io/part-of={PART_OF}")
    r.check(any(o["kind"] == "Namespace" for o in docs), label, f"no Namespace {NAMESPACE}")

    by_kind = {}
    for o in docs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    configmaps = by_kind.get("ConfigMap", {})
    services = by_kind.get("Service", {})
    workloads = [o for o in docs if pod_spec(o) is not None]

    for o in workloads:
        spec = pod_spec(o)
        labels = pod_labels(o)
        r.check("app.kubernetes.io/name" in labels, where(o), "pod template without app.kubernetes.io/name")
        if o["kind"] in ("Deployment", "StatefulSet"):
            sel = o["spec"].get("selector", {}).get("matchLabels", {})
            r.check(selects(sel, labels), where(o), "selector does not match the pod template's labels")
        r.check(spec.get("enableServiceLinks") is False, where(o),
                "enableServiceLinks must be false (service links inject KAFKA_*/MASTER_* variables)")
        psc = spec.get("securityContext", {}) or {}
        r.check(psc.get("runAsNonRoot") is True, where(o), "pod securityContext.runAsNonRoot must be true")
        r.check(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0, where(o),
                "pod securityContext.runAsUser must be a non-zero uid")
        volumes = {v["name"] for v in spec.get("volumes", []) or []}
        volumes |= {t["metadata"]["name"] for t in o["spec"].get("volumeClaimTemplates", []) or []}

        for c in spec.get("containers", []):
            cw = f"{where(o)} container {c['name']}"
            name, tag = image_parts(c.get("image", ""))
            binary = app_binary(c)
            if binary is None:
                r.check(tag not in (None, "latest"), cw, f"image {c.get('image')} must be pinned to a version tag")
            res = c.get("resources", {}) or {}
            r.check("memory" in (res.get("requests") or {}) and "cpu" in (res.get("requests") or {}), cw,
                    "resources.requests needs cpu and memory")
            r.check("memory" in (res.get("limits") or {}), cw, "resources.limits needs memory")
            csc = c.get("securityContext", {}) or {}
            r.check(csc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation must be false")
            r.check("ALL" in ((csc.get("capabilities") or {}).get("drop") or []), cw, "capabilities must drop ALL")
            for m in c.get("volumeMounts", []) or []:
                r.check(m["name"] in volumes, cw, f"volumeMount {m['name']} has no volume")
            names = set()
            for src in c.get("envFrom", []) or []:
                ref = (src.get("configMapRef") or {}).get("name")
                if r.check(ref in configmaps, cw, f"envFrom ConfigMap {ref} does not exist"):
                    names |= set((configmaps[ref].get("data") or {}).keys())
            for e in c.get("env", []) or []:
                names.add(e["name"])
                ref = ((e.get("valueFrom") or {}).get("configMapKeyRef") or {})
                if ref:
                    r.check(ref.get("key") in (configmaps.get(ref.get("name"), {}).get("data") or {}), cw,
                            f"env {e['name']} refers to a missing ConfigMap key")
            if binary is None:
                continue
            r.check(binary in BINARIES, cw, f"command {binary!r} is not one of {BINARIES}")
            r.check(csc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem must be true")
            r.check(spec.get("terminationGracePeriodSeconds", 30) >= MIN_GRACE_SECONDS, cw,
                    f"terminationGracePeriodSeconds below {MIN_GRACE_SECONDS}: the drain would be cut short")
            r.check("KAFKA_BOOTSTRAP_SERVERS" in names, cw, "KAFKA_BOOTSTRAP_SERVERS is not set")
            env_report.append({"where": f"{label}: {obj_id(o)} container {c['name']}",
                               "binary": binary, "env": sorted(names)})

    # Services select pods and name ports those pods have.
    for s in services.values():
        sel = s["spec"].get("selector") or {}
        targets = [o for o in workloads if selects(sel, pod_labels(o))]
        if not r.check(targets, where(s), f"selector {sel} matches no pod template"):
            continue
        ports = {}
        for o in targets:
            for c in pod_spec(o)["containers"]:
                for p in c.get("ports", []) or []:
                    ports[p.get("name")] = p["containerPort"]
        for p in s["spec"].get("ports", []):
            t = p.get("targetPort", p["port"])
            r.check(t in ports or t in ports.values(), where(s), f"targetPort {t} is not a port of the selected pods")
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        sel = pdb["spec"].get("selector", {}).get("matchLabels", {})
        r.check(any(selects(sel, pod_labels(o)) for o in workloads), where(pdb), "selects no pods")

    deployments = by_kind.get("Deployment", {})
    master = deployments.get("master")
    if r.check(master is not None, label, "no Deployment master"):
        r.check(master["spec"].get("replicas") == 1, where(master), "the master must have exactly 1 replica")
        r.check(master["spec"].get("strategy", {}).get("type") == "Recreate", where(master),
                "strategy must be Recreate: a rolling update would run two masters at once")
        c = pod_spec(master)["containers"][0]
        r.check(any(p["containerPort"] == GRPC_PORT for p in c.get("ports", [])), where(master),
                f"no container port {GRPC_PORT}")
        for probe in ("readinessProbe", "livenessProbe"):
            r.check((c.get(probe) or {}).get("grpc", {}).get("port") == GRPC_PORT, where(master),
                    f"{probe} must be a native grpc probe on port {GRPC_PORT} (grpc.health.v1)")
        svc = services.get("master")
        if r.check(svc is not None, label, "no Service master"):
            r.check(any(p["port"] == GRPC_PORT for p in svc["spec"]["ports"]), where(svc), f"no port {GRPC_PORT}")
    worker = deployments.get("worker")
    if r.check(worker is not None, label, "no Deployment worker"):
        r.check(worker["spec"].get("replicas", 1) >= 2, where(worker), "workers should start with 2 replicas")
        url = env_map(pod_spec(worker)["containers"][0]).get("WORKER_MASTER") or ""
        m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url)
        if r.check(m is not None, where(worker), f"WORKER_MASTER {url!r} is not http://SERVICE:PORT"):
            svc = services.get(m.group(1))
            r.check(svc is not None and any(p["port"] == int(m.group(2)) for p in svc["spec"]["ports"]),
                    where(worker), f"WORKER_MASTER {url} names no Service port")
    producer = deployments.get("producer")
    if r.check(producer is not None, label, "no Deployment producer"):
        r.check("PRODUCER_RATE" in env_map(pod_spec(producer)["containers"][0]), where(producer),
                "PRODUCER_RATE must be set in env")

    bootstrap = None
    for cm in configmaps.values():
        bootstrap = (cm.get("data") or {}).get("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    r.check(bootstrap, label, "no ConfigMap sets KAFKA_BOOTSTRAP_SERVERS")

    if expect_statefulset_kafka:
        check_kafka_statefulset(r, by_kind, label, bootstrap or "")
    if any(o["apiVersion"].startswith("kafka.strimzi.io/") for o in docs):
        check_strimzi(r, by_kind, label, bootstrap or "")


def check_kafka_statefulset(r, by_kind, label, bootstrap):
    sts = by_kind.get("StatefulSet", {}).get("kafka")
    if not r.check(sts is not None, label, "no StatefulSet kafka"):
        return None
    w = f"{label} StatefulSet/kafka"
    spec = sts["spec"]
    r.check(spec.get("replicas") == 3, w, "Kafka needs 3 replicas")
    r.check(spec.get("podManagementPolicy") == "Parallel", w,
            "podManagementPolicy must be Parallel, or the first node waits forever for a quorum")
    headless = by_kind.get("Service", {}).get(spec.get("serviceName"))
    if r.check(headless is not None, w, f"serviceName {spec.get('serviceName')} is not a Service"):
        r.check(headless["spec"].get("clusterIP") == "None", w, "its serviceName must be a headless Service")
        r.check(headless["spec"].get("publishNotReadyAddresses") is True, w,
                "the headless Service must publish not-ready addresses for the quorum to form")
    r.check(spec.get("volumeClaimTemplates"), w, "no volumeClaimTemplates: the brokers would lose their data")
    c = spec["template"]["spec"]["containers"][0]
    env = env_map(c)
    r.check(env.get("KAFKA_PROCESS_ROLES") == "broker,controller", w, "KRaft combined mode expected")
    r.check(bool(env.get("CLUSTER_ID")), w, "CLUSTER_ID must be set")
    r.check("KAFKA_NODE_ID" in " ".join(c.get("command", []) + c.get("args", [])), w,
            "the start command must derive KAFKA_NODE_ID from the pod ordinal")
    voters = (env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") or "").split(",")
    expected = [f"{i}@kafka-{i}.{spec.get('serviceName')}:9093" for i in range(spec.get("replicas", 0))]
    r.check(voters == expected, w, f"KAFKA_CONTROLLER_QUORUM_VOTERS should be {','.join(expected)}")
    for k, v in (("KAFKA_DEFAULT_REPLICATION_FACTOR", "3"), ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3"),
                 ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "3"), ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
                 ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "2")):
        r.check(env.get(k) == v, w, f"{k} should be {v}")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    r.check(any((env.get("KAFKA_LOG_DIRS") or "").startswith(m + "/") for m in mounts), w,
            "KAFKA_LOG_DIRS must be inside the persistent volume")
    for host in bootstrap.split(","):
        svc = by_kind.get("Service", {}).get(host.split(":")[0])
        r.check(svc is not None, label, f"bootstrap server {host} is not a Service")

    job = by_kind.get("Job", {}).get("kafka-topics")
    if r.check(job is not None, label, "no Job kafka-topics to create the topics"):
        jc = job["spec"]["template"]["spec"]["containers"][0]
        jenv = env_map(jc)
        script = " ".join(jc.get("args", []) + jc.get("command", []))
        created = {jenv.get("TOPIC"), f"{jenv.get('TOPIC')}.DLQ", jenv.get("NOTIFICATIONS_TOPIC")}
        r.check(created == TOPICS, f"{label} Job/kafka-topics", f"creates {created}, expected {TOPICS}")
        r.check(jenv.get("PARTITIONS") == "6", f"{label} Job/kafka-topics", "DataTopic needs 6 partitions")
        for needle in ("--replication-factor 3", "min.insync.replicas=2", "--if-not-exists"):
            r.check(needle in script, f"{label} Job/kafka-topics", f"script lacks {needle}")
        r.check(jc.get("image") == c.get("image"), f"{label} Job/kafka-topics", "should use the brokers' image")
    return c.get("image")


def check_strimzi(r, by_kind, label, bootstrap):
    kafkas = by_kind.get("Kafka", {})
    if not r.check(len(kafkas) == 1, label, "the Strimzi overlay needs exactly one Kafka"):
        return
    cluster, kafka = next(iter(kafkas.items()))
    w = f"{label} Kafka/{cluster}"
    cfg = kafka["spec"]["kafka"].get("config", {})
    r.check(cfg.get("default.replication.factor") == 3 and cfg.get("min.insync.replicas") == 2, w,
            "replication factor 3 and min.insync.replicas 2 expected")
    r.check(any(lst.get("port") == 9092 and lst.get("tls") is False for lst in kafka["spec"]["kafka"]["listeners"]),
            w, "no plain listener on 9092")
    pools = [p for p in by_kind.get("KafkaNodePool", {}).values()
             if p["metadata"].get("labels", {}).get("strimzi.io/cluster") == cluster]
    r.check(sum(p["spec"].get("replicas", 0) for p in pools) == 3, w, "node pools should total 3 nodes")
    r.check(all(set(p["spec"].get("roles", [])) == {"broker", "controller"} for p in pools), w,
            "node pools should be broker+controller (KRaft combined)")
    topics = {}
    for t in by_kind.get("KafkaTopic", {}).values():
        tw = f"{label} KafkaTopic/{t['metadata']['name']}"
        r.check(t["metadata"].get("labels", {}).get("strimzi.io/cluster") == cluster, tw,
                f"label strimzi.io/cluster must be {cluster}")
        s = t["spec"]
        topics[s.get("topicName", t["metadata"]["name"])] = s
        r.check(s.get("replicas") == 3 and s.get("partitions") == 6, tw, "6 partitions, RF 3 expected")
        r.check((s.get("config") or {}).get("min.insync.replicas") == 2, tw, "min.insync.replicas 2 expected")
    r.check(set(topics) == TOPICS, label, f"KafkaTopics {sorted(topics)}, expected {sorted(TOPICS)}")
    r.check(bootstrap == f"{cluster}-kafka-bootstrap:9092", label,
            f"KAFKA_BOOTSTRAP_SERVERS should be Strimzi's {cluster}-kafka-bootstrap:9092")


# --------------------------------------------------------------------------
# Compose


def check_compose(r, model, compose_path, repo_root, env_report, k8s_kafka_image):
    label = "compose"
    services = model.get("services", {})
    expected = {"kafka-1", "kafka-2", "kafka-3", "kafka-topics", "master", "worker-1", "worker-2", "producer",
                "mailpit", "delivery"}
    r.check(expected <= set(services), label, f"missing services {sorted(expected - set(services))}")

    brokers = {n: s for n, s in services.items() if image_parts(s.get("image", ""))[0] == "apache/kafka"
               and "KAFKA_PROCESS_ROLES" in (s.get("environment") or {})}
    r.check(len(brokers) == 3, label, f"3 Kafka brokers expected, found {sorted(brokers)}")
    ids, cluster_ids, images = {}, set(), set()
    for n, s in brokers.items():
        env = s.get("environment") or {}
        images.add(s["image"])
        cluster_ids.add(env.get("CLUSTER_ID"))
        r.check(env.get("KAFKA_PROCESS_ROLES") == "broker,controller", f"{label} {n}", "KRaft combined mode expected")
        ids[env.get("KAFKA_NODE_ID")] = n
        r.check(f"PLAINTEXT://{n}:9092" in (env.get("KAFKA_ADVERTISED_LISTENERS") or ""), f"{label} {n}",
                f"must advertise PLAINTEXT://{n}:9092 to the other containers")
        r.check(any(v.get("target") == "/var/lib/kafka/data" and v.get("type") == "volume"
                    for v in s.get("volumes", []) or []), f"{label} {n}", "needs a named volume for its data")
        r.check(bool(s.get("healthcheck", {}).get("test")), f"{label} {n}", "needs a healthcheck")
        for k, v in (("KAFKA_DEFAULT_REPLICATION_FACTOR", "3"), ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
                     ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3")):
            r.check(env.get(k) == v, f"{label} {n}", f"{k} should be {v}")
        voters = sorted((env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") or "").split(","))
        r.check(voters == sorted(f"{i}@{b}:9093" for b, i in
                                 ((b, (services[b].get("environment") or {}).get("KAFKA_NODE_ID")) for b in brokers)),
                f"{label} {n}", "KAFKA_CONTROLLER_QUORUM_VOTERS must list every broker as NODE_ID@service:9093")
    r.check(len(ids) == len(brokers), label, "KAFKA_NODE_ID values must be distinct")
    r.check(len(cluster_ids) == 1 and None not in cluster_ids, label, "every broker needs the same CLUSTER_ID")
    r.check(len(images) == 1, label, f"brokers use different images {images}")
    if k8s_kafka_image and images:
        r.check(images == {k8s_kafka_image}, label,
                f"Kafka image {images} differs from the Kubernetes StatefulSet's {k8s_kafka_image}")
    for img in images:
        r.check(image_parts(img)[1] not in (None, "latest"), label, f"{img} must be pinned")

    topics = services.get("kafka-topics", {})
    if topics:
        r.check(topics.get("restart") in (None, "no"), f"{label} kafka-topics", "a one-shot job must not restart")
        deps = topics.get("depends_on") or {}
        r.check(all(deps.get(b, {}).get("condition") == "service_healthy" for b in brokers),
                f"{label} kafka-topics", "must wait for every broker to be healthy")
        env = topics.get("environment") or {}
        script = " ".join((topics.get("entrypoint") or []) + (topics.get("command") or []))
        created = {env.get("TOPIC"), f"{env.get('TOPIC')}.DLQ", env.get("NOTIFICATIONS_TOPIC")}
        r.check(created == TOPICS, f"{label} kafka-topics", f"creates {created}, expected {TOPICS}")
        r.check(env.get("PARTITIONS") == "6", f"{label} kafka-topics", "DataTopic needs 6 partitions")
        for needle in ("--replication-factor 3", "min.insync.replicas=2", "--if-not-exists"):
            r.check(needle in script, f"{label} kafka-topics", f"script lacks {needle}")

    compose_dir = os.path.dirname(os.path.abspath(compose_path))
    apps = {}
    for n, s in services.items():
        if image_parts(s.get("image", ""))[0].rsplit("/", 1)[-1] != APP_IMAGE:
            continue
        w = f"{label} {n}"
        cmd = s.get("command") or []
        binary = cmd[0] if cmd else "master"
        apps[n] = binary
        r.check(binary in BINARIES, w, f"command {binary!r} is not one of {BINARIES}")
        r.check(not s.get("entrypoint"), w, "must not override the entrypoint")
        build = s.get("build") or {}
        ctx = os.path.normpath(os.path.join(compose_dir, build.get("context", ".")))
        r.check(ctx == os.path.normpath(repo_root), w, f"build context {ctx} is not the repository root")
        r.check(build.get("dockerfile") == "deploy/Dockerfile", w, "build.dockerfile must be deploy/Dockerfile")
        r.check(s.get("read_only") is True and "ALL" in (s.get("cap_drop") or []), w,
                "read_only and cap_drop: [ALL] expected")
        env = s.get("environment") or {}
        r.check("KAFKA_BOOTSTRAP_SERVERS" in env, w, "KAFKA_BOOTSTRAP_SERVERS is not set")
        for host in (env.get("KAFKA_BOOTSTRAP_SERVERS") or "").split(","):
            r.check(host.split(":")[0] in brokers and host.endswith(":9092"), w,
                    f"bootstrap server {host} is not a broker's PLAINTEXT listener")
        env_report.append({"where": f"deploy/compose.yaml: service {n}", "binary": binary, "env": sorted(env)})

    masters = [n for n, b in apps.items() if b == "master"]
    workers = [n for n, b in apps.items() if b == "worker"]
    r.check(len(masters) == 1, label, f"exactly one master expected, found {masters}")
    r.check(len(workers) >= 2, label, f"2 workers expected, found {workers}")
    r.check([b for b in apps.values() if b == "producer"], label, "no producer")
    for n in masters:
        r.check((services[n].get("depends_on") or {}).get("kafka-topics", {}).get("condition")
                == "service_completed_successfully", f"{label} {n}", "must start after kafka-topics succeeded")
    ids = set()
    for n in workers:
        env = services[n].get("environment") or {}
        ids.add(env.get("WORKER_ID", n))
        r.check(masters and masters[0] in (services[n].get("depends_on") or {}), f"{label} {n}",
                "must depend on the master")
        listen_port = ((services[masters[0]].get("environment") or {}).get("MASTER_LISTEN", f":{GRPC_PORT}")
                       .rsplit(":", 1)[-1]) if masters else ""
        r.check(masters and env.get("WORKER_MASTER") == f"http://{masters[0]}:{listen_port}", f"{label} {n}",
                "WORKER_MASTER must be the master service and its MASTER_LISTEN port")
    r.check(len(ids) == len(workers), label, "workers need distinct WORKER_IDs")
    prod = [n for n, b in apps.items() if b == "producer"]
    for n in prod:
        r.check("PRODUCER_RATE" in (services[n].get("environment") or {}), f"{label} {n}", "PRODUCER_RATE unset")


# --------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(text):
    """[(INSTRUCTION, arguments)] with continuations joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerignore_excludes(patterns, path):
    excluded = False
    for p in patterns:
        negate = p.startswith("!")
        p = p.lstrip("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(pre, p) or (p.startswith("**/") and fnmatch.fnmatch(pre.split("/")[-1], p[3:]))
               for pre in prefixes):
            excluded = not negate
    return excluded


def check_dockerfile(r, dockerfile, dockerignore, repo_root):
    label = os.path.relpath(dockerfile, repo_root)
    ins = dockerfile_instructions(open(dockerfile).read())
    stages, current = [], None
    for word, args in ins:
        if word == "FROM":
            current = {"from": args, "ins": []}
            stages.append(current)
        elif current is not None:
            current["ins"].append((word, args))
    r.check(len(stages) >= 2, label, "must be multi-stage (a builder and a small runtime)")
    for st in stages:
        image = st["from"].split()[0]
        r.check(image_parts(image)[1] not in (None, "latest"), label, f"FROM {image}: pin a tag, not latest")
    if not stages:
        return
    build_runs = " ".join(a for st in stages[:-1] for w, a in st["ins"] if w == "RUN")
    r.check("cargo build" in build_runs, label, "no `cargo build` in the builder stage")
    for flag in ("--release", "--locked", "--bins"):
        r.check(flag in build_runs, label, f"cargo build needs {flag}")
    final = stages[-1]
    r.check("slim" in final["from"] or "distroless" in final["from"], label,
            f"the runtime stage should be a small base image, not {final['from']}")
    words = [w for w, _ in final["ins"]]
    users = [a for w, a in final["ins"] if w == "USER"]
    r.check(users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]) is not None, label,
            "the runtime stage must end as a numeric non-root USER (runAsNonRoot can only check numbers)")
    r.check("ENTRYPOINT" not in words, label, "no ENTRYPOINT: the command chooses the binary")
    cmds = [a for w, a in final["ins"] if w == "CMD"]
    try:
        cmd = json.loads(cmds[-1]) if cmds else []
    except json.JSONDecodeError:
        cmd = []
    r.check(cmd and cmd[0] in BINARIES, label, "CMD must be exec form naming one of the binaries")
    copies = " ".join(a for w, a in final["ins"] if w == "COPY" and "--from=" in a)
    r.check("/usr/local/bin" in copies, label, "the binaries must be copied into /usr/local/bin")
    for b in BINARIES:
        r.check(re.search(rf"\b{b}\b", build_runs + " " + copies) is not None, label, f"binary {b} is not shipped")
    r.check(any(w == "EXPOSE" and str(GRPC_PORT) in a for w, a in final["ins"]), label, f"EXPOSE {GRPC_PORT}")

    patterns = [ln.strip() for ln in open(dockerignore) if ln.strip() and not ln.startswith("#")]
    for p in ("target", ".git", "deploy/local/.kafka", "deploy/local/.run", "deploy/validate/.venv"):
        r.check(dockerignore_excludes(patterns, p), ".dockerignore", f"should exclude {p}")
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", open(os.path.join(repo_root, "Cargo.toml")).read())
    needed = ["Cargo.toml", "Cargo.lock", "proto"]
    needed += re.findall(r'"([^"]+)"', members.group(1)) if members else []
    for p in needed:
        r.check(not dockerignore_excludes(patterns, p), ".dockerignore", f"excludes {p}, which the build needs")


# --------------------------------------------------------------------------


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo-root", required=True)
    ap.add_argument("--k8s", required=True, help="output of kustomize build deploy/k8s")
    ap.add_argument("--k8s-strimzi", required=True, help="output of kustomize build deploy/k8s/overlays/strimzi")
    ap.add_argument("--compose-model", required=True, help="output of compose-config deploy/compose.yaml")
    ap.add_argument("--compose-file", required=True)
    ap.add_argument("--dockerfile", required=True)
    ap.add_argument("--dockerignore", required=True)
    ap.add_argument("--env-report", help="write the env names of our containers here (JSON)")
    a = ap.parse_args()

    r = Report()
    env_report = []
    base = load_docs(a.k8s)
    check_k8s(r, base, "deploy/k8s", env_report, expect_statefulset_kafka=True)
    sts = [o for o in base if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "kafka"]
    kafka_image = sts[0]["spec"]["template"]["spec"]["containers"][0]["image"] if sts else None
    check_k8s(r, load_docs(a.k8s_strimzi), "deploy/k8s/overlays/strimzi", env_report,
              expect_statefulset_kafka=False)
    with open(a.compose_model) as f:
        check_compose(r, json.load(f), a.compose_file, a.repo_root, env_report, kafka_image)
    check_dockerfile(r, a.dockerfile, a.dockerignore, a.repo_root)

    if a.env_report:
        with open(a.env_report, "w") as f:
            json.dump(env_report, f, indent=1)
    for n in sorted(set(r.notes)):
        print(f"note: {n}")
    for p in r.problems:
        print(f"FAIL {p}")
    if r.problems:
        print(f"check_deploy: {len(r.problems)} of {r.checked} checks failed")
        return 1
    print(f"check_deploy: all {r.checked} checks hold (Kubernetes schemas {', '.join(K8S_VERSIONS)}; "
          f"{len(env_report)} containers in the env report)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
