//! The master in-process against the real 3-broker test cluster, driven by
//! fake workers made of the generated gRPC client: assignment, fencing,
//! exact counts, the console lines, and what Kafka itself holds: the
//! group's committed offsets, the notifications topic and the DLQ
//! (read_committed), committed together in transactions; a rewind after an
//! aborted transaction, and a second master fencing the first.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::classify::Kind;
use common::pb::{self, session_request::Body, session_response};
use serde_json::Value;
use support::*;
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

fn heartbeat(progress: &[(i32, u64, i64)]) -> Body {
    Body::Heartbeat(pb::Heartbeat {
        progress: progress
            .iter()
            .map(
                |&(partition, generation, next_offset)| pb::PartitionProgress {
                    partition,
                    generation,
                    next_offset,
                    high_watermark: -1,
                },
            )
            .collect(),
    })
}

/// The status that ends `w`'s session, skipping assignment changes.
async fn session_error(w: &mut FakeWorker) -> tonic::Status {
    loop {
        match w.next().await {
            Err(status) => return status,
            Ok(Some(session_response::Body::Revoke(_) | session_response::Body::Assign(_))) => {}
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    }
}

async fn stats(m: &Master) -> pb::GetStatsResponse {
    m.admin()
        .await
        .get_stats(pb::GetStatsRequest {})
        .await
        .expect("GetStats")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_gets_every_partition_and_its_results_are_notified_then_committed() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc");
    let group = unique("master-grpc-group");
    let config = config(&bootstrap, &topic, &group, &["--notify-format", "json"]);
    topic_with_records(&config, 3, 5).await;
    let m = Master::start(config).await;

    let mut w = FakeWorker::connect(&m.url(), "fake-1")
        .await
        .expect("hello");
    assert_eq!(w.welcome.worker_id, "fake-1");
    assert_eq!(w.welcome.topic, topic);
    assert_eq!(w.welcome.heartbeat_interval_ms, 500);
    assert_eq!(w.welcome.max_batch_records, 500);
    let assigns = w.assigns(3).await;
    assert_eq!(assigns.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    assert!(assigns
        .values()
        .all(|a| a.start_offset == 0 && a.topic == topic));
    let generations: BTreeSet<u64> = assigns.values().map(|a| a.generation).collect();
    assert_eq!(generations.len(), 3, "one generation per assignment");

    // Admin, health and reflection answer.
    let mut admin = m.admin().await;
    let list = admin
        .list_assignments(pb::ListAssignmentsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.topic, topic);
    assert_eq!(list.assignments.len(), 3);
    for a in &list.assignments {
        assert_eq!(a.owner, "fake-1");
        assert_eq!(a.state, pb::AssignmentState::Assigned as i32);
        assert_eq!(a.generation, assigns[&a.partition].generation);
        assert_eq!(a.next_offset, 0);
    }
    let workers = admin
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].worker_id, "fake-1");
    assert_eq!(workers[0].partitions, [0, 1, 2]);
    assert_eq!(
        (workers[0].version.as_str(), workers[0].host.as_str()),
        ("test", "test-host")
    );
    assert!(workers[0].peer.starts_with("127.0.0.1:"));
    let mut health = HealthClient::new(m.channel().await);
    for service in ["", "cyberday.v1.Coordinator", "cyberday.v1.Admin"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }
    assert_reflection_lists_our_services(&m).await;

    // Results: partition 0 has every outcome, partition 1 five purchases.
    let g = |p: i32| assigns[&p].generation;
    use pb::Outcome::*;
    w.results(
        0,
        g(0),
        vec![
            result(0, Short),
            result(1, Long),
            result(2, NoPurchase),
            result(3, Invalid),
            result(4, Short),
        ],
    )
    .await;
    w.results(1, g(1), (0..5).map(|o| result(o, Short)).collect())
        .await;
    // Re-delivered offsets are suppressed; a zombie generation is rejected.
    w.results(1, g(1), (3..5).map(|o| result(o, Long)).collect())
        .await;
    w.results(2, g(2) + 1000, (0..5).map(|o| result(o, Short)).collect())
        .await;

    let s = eventually("all results applied", || async {
        let s = stats(&m).await;
        (s.records_processed == 10 && s.stale_batches_rejected == 1).then_some(s)
    })
    .await;
    assert_eq!(
        (
            s.notifications_short,
            s.notifications_long,
            s.no_purchase,
            s.invalid,
            s.duplicates_suppressed,
            s.workers,
            s.rebalances
        ),
        (7, 1, 1, 1, 2, 1, 1)
    );

    // Exactly one console line per purchase, with the documented keys.
    let lines = eventually("8 notification lines", || async {
        let lines = m.output.lines();
        (lines.len() >= 8).then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), 8, "{lines:#?}");
    let mut seen = BTreeSet::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).expect("one JSON object per line");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = [
            "kind",
            "folio",
            "nombre",
            "email",
            "productovisto",
            "taps",
            "partition",
            "offset",
            "worker",
            "latency_ms",
        ];
        expected.sort();
        let mut keys = keys.clone();
        keys.sort();
        assert_eq!(keys, expected);
        assert_eq!(v["worker"], "fake-1");
        assert_eq!(v["nombre"], "Valentina");
        assert!(v["latency_ms"].as_i64().unwrap() >= 0);
        let (p, o) = (
            v["partition"].as_i64().unwrap(),
            v["offset"].as_i64().unwrap(),
        );
        assert_eq!(v["folio"], format!("QZX-{o:04}"));
        let kind = if (p, o) == (0, 1) { "long" } else { "short" };
        assert_eq!(v["kind"], kind, "{line}");
        assert!(seen.insert((p, o)), "notified twice: {line}");
    }
    let expected: BTreeSet<(i64, i64)> = [(0, 0), (0, 1), (0, 4)]
        .into_iter()
        .chain((0..5).map(|o| (1, o)))
        .collect();
    assert_eq!(seen, expected);

    // Kafka has the group's offsets: past every notified record, and
    // partition 2 (nothing accepted) at its start.
    eventually("offsets committed", || async {
        (committed(&bootstrap, &group, &topic, 3).await == [5, 5, 0]).then_some(())
    })
    .await;
    // A heartbeat vouches for offsets without results (e.g. transaction markers).
    w.send(heartbeat(&[(2, g(2), 5)])).await;
    eventually("heartbeat progress committed", || async {
        (committed(&bootstrap, &group, &topic, 3).await == [5, 5, 5]).then_some(())
    })
    .await;

    // Committed with those offsets: the notifications topic holds exactly
    // the console's lines (the same bytes), keyed by folio ...
    let mut printed = lines.clone();
    printed.sort();
    let notifications = format!("{topic}.notifications");
    assert_eq!(committed_values(&bootstrap, &notifications).await, printed);
    for r in read_committed(&bootstrap, &notifications).await {
        let v: Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(
            r.key.as_deref(),
            Some(v["folio"].as_str().unwrap().as_bytes())
        );
    }
    // ... and the DLQ the invalid record as the worker carried it, then why
    // and where it came from.
    let dlq = read_committed(&bootstrap, &format!("{topic}.DLQ")).await;
    let [letter] = &dlq[..] else {
        panic!("one dead letter expected: {dlq:?}")
    };
    let sent = result(3, Invalid);
    assert_eq!(letter.key, sent.key);
    assert_eq!(Some(&letter.value), sent.value.as_ref());
    let headers: Vec<(String, String)> = letter
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap()))
        .collect();
    let h = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        headers,
        [
            h("trace-id", "t-3"),
            h("cyberday.reason", "bad_folio"),
            h("cyberday.detail", "folio must look like ABC-1234"),
            h("cyberday.source.topic", &topic),
            h("cyberday.source.partition", "0"),
            h("cyberday.source.offset", "3"),
        ]
    );
    let s = eventually("lag from watermarks", || async {
        let s = stats(&m).await;
        s.partitions
            .iter()
            .all(|p| p.high_watermark == 5)
            .then_some(s)
    })
    .await;
    for p in &s.partitions {
        assert_eq!(
            (p.owner.as_str(), p.committed_offset, p.lag),
            ("fake-1", 5, 0)
        );
        assert_eq!(p.generation, g(p.partition));
    }

    m.stop().await;
    // The session ends when the master stops.
    match w.next().await {
        Ok(None) => {}
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status}"),
        Ok(Some(other)) => panic!("unexpected {other:?}"),
    }
}

async fn assert_reflection_lists_our_services(m: &Master) {
    use tonic_reflection::pb::{v1, v1alpha};
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(m.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list from reflection v1");
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in [
        "cyberday.v1.Coordinator",
        "cyberday.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(name), "reflection v1 lists {names:?}");
    }

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(m.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list from reflection v1alpha");
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "cyberday.v1.Coordinator"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_takes_half_after_the_ack_and_everything_returns_when_it_leaves() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc-move");
    let group = unique("master-grpc-move-group");
    let config = config(&bootstrap, &topic, &group, &[]);
    topic_with_records(&config, 4, 0).await;
    let m = Master::start(config).await;

    let mut a = FakeWorker::connect(&m.url(), "a").await.unwrap();
    let first = a.assigns(4).await;

    // The same id again is refused while `a` lives.
    let refused = FakeWorker::connect(&m.url(), "a")
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused}");

    let mut b = FakeWorker::connect(&m.url(), "").await.unwrap();
    assert_eq!(b.id.len(), 36, "the master names a worker without an id");
    let revoked = a.revokes(2).await;
    // Which two depends on the partitions' leaders (a worker keeps those
    // of as few leaders as it can); `a` drains one and acknowledges both.
    let (idle, drained) = {
        let mut p = revoked.keys().copied();
        (p.next().unwrap(), p.next().unwrap())
    };
    for (p, r) in &revoked {
        assert_eq!(r.generation, first[p].generation);
    }
    // Still revoking: `b` waits, the admin view says so.
    let list = m
        .admin()
        .await
        .list_assignments(pb::ListAssignmentsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.assignments[drained as usize].state,
        pb::AssignmentState::Revoking as i32
    );

    a.results(
        drained,
        first[&drained].generation,
        vec![result(0, pb::Outcome::Short)],
    )
    .await;
    for (p, r) in &revoked {
        a.send(Body::RevokeAck(pb::RevokeAck {
            partition: *p,
            generation: r.generation,
            next_offset: if *p == drained { 1 } else { 0 },
        }))
        .await;
    }
    let moved = b.assigns(2).await;
    let newest = first.values().map(|x| x.generation).max().unwrap();
    assert_eq!(moved[&drained].start_offset, 1, "from where `a` stopped");
    assert_eq!(moved[&idle].start_offset, 0);
    assert!(moved.values().all(|x| x.generation > newest));

    // `a`'s zombie result for the drained partition is fenced; `b`'s is notified.
    a.results(
        drained,
        first[&drained].generation,
        vec![result(1, pb::Outcome::Short)],
    )
    .await;
    b.results(
        drained,
        moved[&drained].generation,
        vec![result(1, pb::Outcome::Long)],
    )
    .await;
    let s = eventually("both batches applied", || async {
        let s = stats(&m).await;
        (s.records_processed == 2 && s.stale_batches_rejected == 1).then_some(s)
    })
    .await;
    assert_eq!(
        (s.notifications_short, s.notifications_long, s.workers),
        (1, 1, 2)
    );

    // `b` leaves: `a` gets its partitions at once, from where `b` stopped.
    b.send(Body::Leave(pb::Leave {
        progress: vec![
            pb::PartitionProgress {
                partition: idle,
                generation: moved[&idle].generation,
                next_offset: 0,
                high_watermark: -1,
            },
            pb::PartitionProgress {
                partition: drained,
                generation: moved[&drained].generation,
                next_offset: 2,
                high_watermark: -1,
            },
        ],
    }))
    .await;
    let back = a.assigns(2).await;
    assert_eq!(back[&drained].start_offset, 2);
    assert!(
        b.next().await.unwrap().is_none(),
        "b's session ends cleanly"
    );

    // `a` breaks its stream: with nobody left, every partition waits.
    drop(a.hang_up());
    eventually("no workers", || async {
        let list = m
            .admin()
            .await
            .list_assignments(pb::ListAssignmentsRequest {})
            .await
            .unwrap()
            .into_inner();
        list.assignments
            .iter()
            .all(|x| x.state == pb::AssignmentState::Unassigned as i32)
            .then_some(())
    })
    .await;

    // Console: exactly the two accepted purchases, as Spanish text.
    let lines = m.output.lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].starts_with("¡Gracias, Valentina! Tu compra de Colchón (folio QZX-0000)"));
    assert!(lines[1]
        .starts_with("Lamentamos la espera, Valentina: tu compra de Colchón (folio QZX-0001)"));
    m.stop().await;
}

/// The leader of each partition of `topic`, from the cluster's metadata.
async fn leaders(config: &master::config::Config, topic: &str) -> BTreeMap<i32, i32> {
    let md = common::kafka::fetch_metadata(&config.kafka, Some(topic))
        .await
        .expect("metadata");
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("topic");
    t.partitions()
        .iter()
        .map(|p| (p.id(), p.leader()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_worker_splits_the_partitions_along_their_leaders() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc-leaders");
    let group = unique("master-grpc-leaders-group");
    let config = config(&bootstrap, &topic, &group, &[]);
    topic_with_records(&config, 6, 0).await;
    let leaders = leaders(&config, &topic).await;
    let brokers: BTreeSet<i32> = leaders.values().copied().collect();
    assert_eq!(
        brokers.len(),
        3,
        "6 partitions led by the 3 nodes: {leaders:?}"
    );
    let m = Master::start(config).await;

    let mut a = FakeWorker::connect(&m.url(), "a").await.unwrap();
    let first = a.assigns(6).await;
    let mut b = FakeWorker::connect(&m.url(), "b").await.unwrap();
    let revoked = a.revokes(3).await;
    for (p, r) in &revoked {
        a.send(Body::RevokeAck(pb::RevokeAck {
            partition: *p,
            generation: r.generation,
            next_offset: 0,
        }))
        .await;
    }
    let moved = b.assigns(3).await;
    let kept: Vec<i32> = first
        .keys()
        .filter(|p| !revoked.contains_key(p))
        .copied()
        .collect();
    let a_reads: BTreeSet<i32> = kept.iter().map(|p| leaders[p]).collect();
    let b_reads: BTreeSet<i32> = moved.keys().map(|p| leaders[p]).collect();
    // Leader-blind, each would read from all three nodes (six fetch sessions).
    assert!(
        a_reads.len() + b_reads.len() <= 4,
        "a keeps {kept:?} (leaders {a_reads:?}), b gets {:?} (leaders {b_reads:?}); leaders {leaders:?}",
        moved.keys().collect::<Vec<_>>()
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_resumes_from_the_committed_offsets() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc-restart");
    let group = unique("master-grpc-restart-group");
    // Commits only at start and at shutdown.
    let config1 = config(&bootstrap, &topic, &group, &["--commit-interval", "10m"]);
    topic_with_records(&config1, 2, 6).await;

    let m = Master::start(config1).await;
    let mut w = FakeWorker::connect(&m.url(), "w").await.unwrap();
    let first = w.assigns(2).await;
    w.results(
        0,
        first[&0].generation,
        (0..4).map(|o| result(o, pb::Outcome::Short)).collect(),
    )
    .await;
    eventually("results applied", || async {
        (stats(&m).await.records_processed == 4).then_some(())
    })
    .await;
    // The start-up commit is a transaction of its own: on a cold cluster it may
    // still be settling (offsets read as -1) for a moment; it must end at [0, 0].
    eventually("start-up offsets committed", || async {
        (committed(&bootstrap, &group, &topic, 2).await == [0, 0]).then_some(())
    })
    .await;
    // Stopping flushes and commits, without waiting for the next interval.
    let output = m.output.clone();
    m.stop().await;
    drop(w);
    assert_eq!(committed(&bootstrap, &group, &topic, 2).await, [4, 0]);

    let expected: Vec<String> = (0..4)
        .map(|o| {
            let r = result(o, pb::Outcome::Short);
            let p = r.purchase.unwrap();
            common::notify::render_text(
                Kind::Short,
                &common::record::Purchase {
                    id: p.id,
                    nombre: p.nombre,
                    apellido: p.apellido,
                    edad: 30,
                    email: p.email,
                    telefono: String::new(),
                    ubicacion: common::record::Ubicacion {
                        direccion: String::new(),
                        ciudad: String::new(),
                        pais: String::new(),
                    },
                    productovisto: p.productovisto,
                    taps: Some(p.taps),
                    folio: Some(p.folio),
                },
            )
        })
        .collect();
    assert_eq!(output.lines(), expected);

    let m = Master::start(config(&bootstrap, &topic, &group, &[])).await;
    let mut w = FakeWorker::connect(&m.url(), "w").await.unwrap();
    let again = w.assigns(2).await;
    assert_eq!(again[&0].start_offset, 4);
    assert!(
        again[&0].generation > first[&0].generation,
        "generations keep increasing across restarts"
    );
    assert_eq!(again[&1].start_offset, 0);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_are_refused_with_the_right_code() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc-proto");
    let group = unique("master-grpc-proto-group");
    let config = config(&bootstrap, &topic, &group, &[]);
    topic_with_records(&config, 1, 0).await;
    let m = Master::start(config).await;

    // A session that does not start with hello.
    let mut client = pb::coordinator_client::CoordinatorClient::connect(m.url())
        .await
        .unwrap();
    let err = client
        .session(tokio_stream::iter([request("x", 0, heartbeat(&[]))]))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    // An oversized batch ends the session; its partition moves on.
    let mut w = FakeWorker::connect(&m.url(), "big").await.unwrap();
    let a = w.assigns(1).await;
    w.results(
        0,
        a[&0].generation,
        (0..501)
            .map(|o| result(o, pb::Outcome::NoPurchase))
            .collect(),
    )
    .await;
    let err = session_error(&mut w).await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("at most 500"), "{err}");
    assert_eq!(stats(&m).await.records_processed, 0);

    // A message naming another worker.
    let mut w = FakeWorker::connect(&m.url(), "honest").await.unwrap();
    w.assigns(1).await;
    w.send_raw(request("someone-else", 0, heartbeat(&[]))).await;
    let err = w.next().await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_input_topic_is_a_clear_error() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc-missing");
    let m = Master::start(config(
        &bootstrap,
        &topic,
        "unused",
        &["--topic-wait", "2s"],
    ))
    .await;
    let err = tokio::time::timeout(WAIT, m.task)
        .await
        .expect("master did not give up")
        .unwrap()
        .expect_err("no topic, no master");
    let text = format!("{err:#}");
    assert!(
        text.contains(&topic) && text.contains("does not exist"),
        "{text}"
    );
    assert!(text.contains("producer"), "says how to create it: {text}");
    assert!(
        text.contains("waited 2s"),
        "says how long it waited: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_started_before_its_input_topic_waits_for_it() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc-late-topic");
    let cfg = config(&bootstrap, &topic, &unique("g"), &["--topic-wait", "60s"]);
    let m = Master::start(cfg.clone()).await;
    // The topic comes 3 s later, as from a Kubernetes Job started beside it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !m.task.is_finished(),
        "the master gave up instead of waiting"
    );
    topic_with_records(&cfg, 3, 0).await;
    let mut w = FakeWorker::connect(&m.url(), "late").await.unwrap();
    let assigned = w.assigns(3).await;
    assert_eq!(assigned.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_waiting_for_its_topic_stops_at_once_when_told() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc-never");
    let m = Master::start(config(
        &bootstrap,
        &topic,
        "unused",
        &["--topic-wait", "60s"],
    ))
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = std::time::Instant::now();
    m.stop().await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_ended_and_its_partitions_move() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc-silent");
    let group = unique("master-grpc-silent-group");
    let config = config(
        &bootstrap,
        &topic,
        &group,
        &["--heartbeat-interval", "100ms", "--heartbeat-timeout", "1s"],
    );
    topic_with_records(&config, 2, 0).await;
    let m = Master::start(config).await;

    let mut silent = FakeWorker::connect(&m.url(), "silent").await.unwrap();
    let mut alive = FakeWorker::connect(&m.url(), "alive").await.unwrap();
    silent.assigns(2).await;
    let revoked = silent.revokes(1).await;
    let started = std::time::Instant::now();
    // `alive` heartbeats; `silent` says nothing more, not even the ack.
    let beat = {
        let alive_id = alive.id.clone();
        let tx = alive.sender();
        tokio::spawn(async move {
            loop {
                if tx
                    .send(request(&alive_id, 0, heartbeat(&[])))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let err = silent
        .next()
        .await
        .expect_err("the silent session is ended");
    assert_eq!(err.code(), tonic::Code::Aborted, "{err}");
    assert!(err.message().contains("heartbeat timeout"), "{err}");
    let got = alive.assigns(2).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "detected after {elapsed:?}"
    );
    assert!(got.contains_key(revoked.keys().next().unwrap()));
    beat.abort();
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_partitions_are_assigned_within_seconds() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;

    let bootstrap = bootstrap();
    let topic = unique("master-grpc-grow");
    let group = unique("master-grpc-grow-group");
    let config = config(&bootstrap, &topic, &group, &[]);
    topic_with_records(&config, 2, 0).await;
    let admin: AdminClient<DefaultClientContext> =
        common::kafka::admin_config(&config.kafka).create().unwrap();
    let m = Master::start(config).await;
    let mut w = FakeWorker::connect(&m.url(), "w").await.unwrap();
    w.assigns(2).await;

    let started = std::time::Instant::now();
    let results = admin
        .create_partitions([&NewPartitions::new(&topic, 4)], &AdminOptions::new())
        .await
        .expect("create_partitions");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let more = w.assigns(2).await;
    assert_eq!(more.keys().copied().collect::<Vec<_>>(), [2, 3]);
    assert!(
        more.values().all(|a| a.start_offset == 0),
        "from the earliest offset"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_graceful_stop_the_offsets_and_the_notifications_topic_agree() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc-agree");
    let group = unique("master-grpc-agree-group");
    let notifications = format!("{topic}.notifications");
    // One transaction for the whole run: committed only at shutdown.
    let config = config(&bootstrap, &topic, &group, &["--commit-interval", "10m"]);
    topic_with_records(&config, 2, 8).await;
    let m = Master::start(config).await;
    let mut w = FakeWorker::connect(&m.url(), "w").await.unwrap();
    let a = w.assigns(2).await;
    use pb::Outcome::*;
    let outcomes = [Short, NoPurchase, Long, Invalid, Short, Short];
    w.results(
        0,
        a[&0].generation,
        outcomes
            .iter()
            .enumerate()
            .map(|(o, k)| result(o as i64, *k))
            .collect(),
    )
    .await;
    w.results(
        1,
        a[&1].generation,
        (0..3).map(|o| result(o, Long)).collect(),
    )
    .await;
    // A heartbeat vouches for partition 1 up to 5 (offsets without output).
    w.send(heartbeat(&[(1, a[&1].generation, 5)])).await;
    eventually("results applied", || async {
        (stats(&m).await.records_processed == 9).then_some(())
    })
    .await;
    // The console prints before anything is committed (its thread may
    // still be writing the lines the coordinator handed it).
    eventually("the console prints before the commit", || async {
        (m.output.lines().len() == 7).then_some(())
    })
    .await;

    // Nothing is committed yet but the start positions (the first
    // checkpoint, at start): a read_committed reader sees no notification.
    assert!(committed_values(&bootstrap, &notifications)
        .await
        .is_empty());
    assert_eq!(committed(&bootstrap, &group, &topic, 2).await, [0, 0]);

    m.stop().await;
    drop(w);

    // The stop committed the one transaction: offsets and output together.
    let offsets = committed(&bootstrap, &group, &topic, 2).await;
    assert_eq!(offsets, [6, 5]);
    let notified: Vec<(i64, i64)> = read_committed(&bootstrap, &notifications)
        .await
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            (
                v["partition"].as_i64().unwrap(),
                v["offset"].as_i64().unwrap(),
            )
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let expected: Vec<(i64, i64)> = [(0, 0), (0, 2), (0, 4), (0, 5), (1, 0), (1, 1), (1, 2)].into();
    assert_eq!(notified, expected);
    assert_eq!(
        read_committed(&bootstrap, &notifications).await.len(),
        expected.len(),
        "each notification once"
    );
    // Every notified record lies before its partition's committed offset.
    assert!(notified.iter().all(|(p, o)| *o < offsets[*p as usize]));
    let dlq = read_committed(&bootstrap, &format!("{topic}.DLQ")).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(
        dlq[0].header("cyberday.source.offset").as_deref(),
        Some("3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_master_with_the_same_transactional_id_fences_the_first() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc-fence");
    let group = unique("master-grpc-fence-group");
    let id = unique("master-grpc-fence-txn");
    let notifications = format!("{topic}.notifications");
    let first = config(&bootstrap, &topic, &group, &["--transactional-id", &id]);
    topic_with_records(&first, 1, 4).await;
    let m1 = Master::start(first).await;
    let mut w1 = FakeWorker::connect(&m1.url(), "w1").await.unwrap();
    let a1 = w1.assigns(1).await;
    w1.results(0, a1[&0].generation, vec![result(0, pb::Outcome::Short)])
        .await;
    eventually("the first master commits", || async {
        (committed(&bootstrap, &group, &topic, 1).await == [1]).then_some(())
    })
    .await;

    // A second instance under the same id (a new pod while the old one
    // lingers): serving means its init_transactions fenced the first.
    let m2 = Master::start(config(
        &bootstrap,
        &topic,
        &group,
        &["--transactional-id", &id],
    ))
    .await;
    let mut w2 = FakeWorker::connect(&m2.url(), "w2").await.unwrap();
    let a2 = w2.assigns(1).await;
    assert_eq!(a2[&0].start_offset, 1, "from the first master's commit");

    // The zombie accepts one more result, but cannot commit it: it stops.
    w1.results(0, a1[&0].generation, vec![result(1, pb::Outcome::Long)])
        .await;
    let err = tokio::time::timeout(WAIT, m1.task)
        .await
        .expect("the fenced master did not stop")
        .unwrap()
        .expect_err("a fenced master stops with an error");
    let text = format!("{err:#}");
    assert!(text.contains("fenced") && text.contains(&id), "{text}");

    // Its last result never reached a read_committed reader, nor the offsets.
    let values = committed_values(&bootstrap, &notifications).await;
    assert_eq!(values.len(), 1, "{values:?}");
    assert!(values[0].contains("\"offset\":0"), "{values:?}");
    assert_eq!(committed(&bootstrap, &group, &topic, 1).await, [1]);

    // The new master carries on from there.
    w2.results(0, a2[&0].generation, vec![result(1, pb::Outcome::Long)])
        .await;
    eventually("the second master commits", || async {
        (committed(&bootstrap, &group, &topic, 1).await == [2]).then_some(())
    })
    .await;
    m2.stop().await;
    assert_eq!(committed_values(&bootstrap, &notifications).await.len(), 2);
}

/// Bytes no compression shrinks.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_rewinds_to_the_committed_offsets_and_loses_nothing() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let bootstrap = bootstrap();
    let topic = unique("master-grpc-rewind");
    let group = unique("master-grpc-rewind-group");
    let notifications = format!("{topic}.notifications");
    let dlq_topic = format!("{topic}.DLQ");
    // The fake worker sends no heartbeats of its own.
    let config = config(&bootstrap, &topic, &group, &["--heartbeat-timeout", "60s"]);
    topic_with_records(&config, 1, 6).await;
    // A DLQ whose brokers refuse records over 100 kB: a dead letter larger
    // than that makes the transaction abortable.
    let admin: AdminClient<DefaultClientContext> =
        common::kafka::admin_config(&config.kafka).create().unwrap();
    let created = admin
        .create_topics(
            [&NewTopic::new(&dlq_topic, 1, TopicReplication::Fixed(3))
                .set("max.message.bytes", "100000")],
            &AdminOptions::new().operation_timeout(Some(WAIT)),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let m = Master::start(config).await;
    let mut w = FakeWorker::connect(&m.url(), "w").await.unwrap();
    let first = w.assigns(1).await[&0].clone();
    w.results(0, first.generation, vec![result(0, pb::Outcome::Short)])
        .await;
    eventually("the first transaction commits", || async {
        (committed(&bootstrap, &group, &topic, 1).await == [1]).then_some(())
    })
    .await;

    use pb::Outcome::*;
    let huge = noise(300_000);
    let batch = || {
        let mut invalid = result(2, Invalid);
        invalid.value = Some(huge.clone());
        vec![result(1, Short), invalid, result(3, Long)]
    };
    w.results(0, first.generation, batch()).await;
    let sent = std::time::Instant::now();

    // The brokers refuse the dead letter: the transaction is aborted and the
    // partition assigned again, under a new generation, from the last
    // committed offset; the worker reads again from there, and the dead
    // letter now goes cut down. (librdkafka may need one more abort to
    // reset the refused partition's sequence numbers; each is a rewind.)
    let mut generation = first.generation;
    let mut rewinds = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), w.next()).await;
        let Ok(next) = next else {
            break;
        };
        let Ok(Some(session_response::Body::Assign(again))) = next else {
            panic!("expected an assign, got {next:?}");
        };
        rewinds += 1;
        eprintln!(
            "rewind {rewinds}: {:?} after the refused batch",
            sent.elapsed()
        );
        assert_eq!((again.partition, again.start_offset), (0, 1));
        assert!(again.generation > generation);
        if rewinds == 1 {
            // What the old generation still sends is fenced.
            w.results(0, generation, vec![result(4, Short)]).await;
        }
        generation = again.generation;
        w.results(0, generation, batch()).await;
    }
    assert!((1..=3).contains(&rewinds), "{rewinds} rewinds");
    eventually("the replay commits", || async {
        (committed(&bootstrap, &group, &topic, 1).await == [4]).then_some(())
    })
    .await;

    // The topic has every notification exactly once, the DLQ the record once.
    let offsets: Vec<i64> = read_committed(&bootstrap, &notifications)
        .await
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            v["offset"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(offsets, [0, 1, 3]);
    let dlq = read_committed(&bootstrap, &dlq_topic).await;
    let [letter] = &dlq[..] else {
        panic!("one dead letter expected, got {}", dlq.len())
    };
    assert_eq!(
        letter.header("cyberday.source.offset").as_deref(),
        Some("2")
    );
    assert_eq!(
        letter.header("cyberday.reason").as_deref(),
        Some("bad_folio")
    );
    assert_eq!(
        letter.header("cyberday.truncated").as_deref(),
        Some("300000")
    );
    assert_eq!(letter.value, huge[..master::output::TRUNCATED_VALUE_BYTES]);

    // The console is a view: it printed the aborted lines, then again.
    let s = stats(&m).await;
    assert_eq!(s.stale_batches_rejected, 1);
    let printed = m.output.lines().len();
    assert_eq!(printed, 1 + 2 * (1 + rewinds), "{:#?}", m.output.lines());
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_bytes_ends_the_session_and_nothing_is_notified() {
    let bootstrap = bootstrap();
    let topic = unique("master-grpc-size");
    let group = unique("master-grpc-size-group");
    let config = config(
        &bootstrap,
        &topic,
        &group,
        &["--max-message-bytes", "65536"],
    );
    topic_with_records(&config, 1, 0).await;
    let m = Master::start(config).await;

    let mut w = FakeWorker::connect(&m.url(), "big").await.unwrap();
    let a = w.assigns(1).await;
    let mut huge = result(0, pb::Outcome::Invalid);
    huge.value = Some(vec![b'x'; 100_000]);
    w.results(0, a[&0].generation, vec![huge]).await;
    let err = session_error(&mut w).await;
    eprintln!("over --max-message-bytes: {err}");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    assert!(
        err.message().contains("65536") && err.message().contains("--max-message-bytes"),
        "{err}"
    );
    let s = stats(&m).await;
    assert_eq!((s.records_processed, s.invalid), (0, 0));
    m.stop().await;
}
