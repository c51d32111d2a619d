//! The worker in-process against a fake master and the real Kafka test
//! cluster: results (invalid ones carrying their record), revoke, leave,
//! and reconnection.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::pb::session_request::Body;
use common::pb::{Outcome, PartitionProgress, RecordResult, RevokeAck};
use support::*;

const T0: i64 = 1_750_000_000_000;

fn input(partition: i32, key: &str, value: Vec<u8>, i: i64) -> Input {
    Input {
        partition,
        key: Some(key.as_bytes().to_vec()),
        value: Some(value),
        headers: Vec::new(),
        timestamp_ms: T0 + i,
    }
}

fn welcome(topic: &str, max_batch_records: u32) -> WelcomeSpec {
    WelcomeSpec {
        worker_id: "w-fake".into(),
        heartbeat_interval_ms: 200,
        topic: topic.into(),
        max_batch_records,
    }
}

/// Results by (partition, offset), with the generation of their batch.
type Results = BTreeMap<(i32, i64), (u64, RecordResult)>;

/// Reads messages until `count` results arrived; asserts that no result
/// comes twice, that batches respect the maximum, and that every message
/// carries the worker's id. Calls `on_batch` after each batch.
async fn collect_results(
    session: &mut FakeSession,
    count: usize,
    max_batch: usize,
    mut on_batch: impl FnMut(&Results),
) -> Results {
    let mut results = Results::new();
    while results.len() < count {
        let m = session.next().await.expect("stream closed");
        assert_eq!(m.worker_id, session.welcome.worker_id);
        if let Some(Body::Results(batch)) = m.body {
            assert!(!batch.results.is_empty(), "empty batch");
            assert!(
                batch.results.len() <= max_batch,
                "batch of {}",
                batch.results.len()
            );
            let offsets: Vec<i64> = batch.results.iter().map(|r| r.offset).collect();
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "out of order: {offsets:?}"
            );
            for r in batch.results {
                let key = (batch.partition, r.offset);
                assert!(
                    results.insert(key, (batch.generation, r)).is_none(),
                    "result for {key:?} reported twice"
                );
            }
            on_batch(&results);
        }
    }
    results
}

/// Waits for a heartbeat whose progress satisfies `ok`.
async fn heartbeat_where(
    session: &mut FakeSession,
    mut ok: impl FnMut(&[PartitionProgress]) -> bool,
) -> Vec<PartitionProgress> {
    loop {
        let progress = session
            .next_matching(
                |b| match b {
                    Body::Heartbeat(h) => Some(h.progress.clone()),
                    _ => None,
                },
                |m| {
                    if let Some(Body::Results(b)) = &m.body {
                        panic!("unexpected results while waiting for a heartbeat: {b:?}");
                    }
                },
            )
            .await;
        if ok(&progress) {
            return progress;
        }
    }
}

fn outcome(r: &RecordResult) -> Outcome {
    Outcome::try_from(r.outcome).expect("a known outcome")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_every_record_once_carries_invalid_ones_and_leaves() {
    init_logs();
    let bootstrap = bootstrap();
    let topic = unique_topic("worker-session");
    let dlq = format!("{topic}.DLQ");
    create_topics(&bootstrap, &topic, 2).await;

    let mut not_json = input(0, "k-bad", b"{oops".to_vec(), 3);
    not_json.headers = vec![("trace-id".into(), b"t-3".to_vec())];
    let p0 = vec![
        input(
            0,
            "aaaaaaaaaaaaaaaaaaaaaaa0",
            purchase(
                "aaaaaaaaaaaaaaaaaaaaaaa0",
                "Valentina",
                Some(12.5),
                Some("QZX-0042"),
            ),
            0,
        ),
        input(
            0,
            "aaaaaaaaaaaaaaaaaaaaaaa1",
            purchase(
                "aaaaaaaaaaaaaaaaaaaaaaa1",
                "Tomás",
                Some(45.0),
                Some("ABC-1234"),
            ),
            1,
        ),
        input(
            0,
            "aaaaaaaaaaaaaaaaaaaaaaa2",
            purchase("aaaaaaaaaaaaaaaaaaaaaaa2", "Josefa", None, None),
            2,
        ),
        not_json,
        input(
            0,
            "aaaaaaaaaaaaaaaaaaaaaaa4",
            purchase(
                "aaaaaaaaaaaaaaaaaaaaaaa4",
                "Diego",
                Some(5.0),
                Some("AB-12"),
            ),
            4,
        ),
        input(
            0,
            "aaaaaaaaaaaaaaaaaaaaaaa5",
            purchase(
                "aaaaaaaaaaaaaaaaaaaaaaa5",
                "Catalina",
                Some(29.9),
                Some("XYZ-0001"),
            ),
            5,
        ),
        // A Kafka null key and null value.
        Input {
            key: None,
            value: None,
            ..input(0, "", Vec::new(), 6)
        },
    ];
    let p1 = vec![
        input(
            1,
            "bbbbbbbbbbbbbbbbbbbbbbb0",
            purchase(
                "bbbbbbbbbbbbbbbbbbbbbbb0",
                "Ignacio",
                Some(30.0),
                Some("LMN-9999"),
            ),
            10,
        ),
        input(
            1,
            "bbbbbbbbbbbbbbbbbbbbbbb1",
            purchase("bbbbbbbbbbbbbbbbbbbbbbb1", "Antonia", Some(0.0), None),
            11,
        ),
    ];
    assert_eq!(
        produce(&bootstrap, &topic, &p0).await,
        (0..7).collect::<Vec<_>>()
    );
    assert_eq!(produce(&bootstrap, &topic, &p1).await, [0, 1]);

    let mut master = FakeMaster::start("127.0.0.1:0".parse().unwrap(), welcome(&topic, 3)).await;
    let (shutdown, worker) = start_worker(&bootstrap, &topic, &master.url(), &[]);
    let mut session = master.session().await;

    // hello, then the master's id on every message.
    match &session.hello.body {
        Some(Body::Hello(h)) => {
            assert_eq!(h.version, env!("CARGO_PKG_VERSION"));
            assert!(!h.host.is_empty());
        }
        other => panic!("first message is not hello: {other:?}"),
    }
    assert_eq!(session.hello.worker_id, "", "no --id: the master chooses");
    assert_eq!(session.welcome.worker_id, "w-fake");

    session.assign(&topic, 0, 0, 1).await;
    session.assign(&topic, 1, 0, 2).await;

    let results = collect_results(&mut session, 9, 3, |_| {}).await;

    let summary: Vec<(i32, i64, u64, Outcome, &str)> = results
        .iter()
        .map(|((p, o), (g, r))| (*p, *o, *g, outcome(r), r.invalid_code.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (0, 0, 1, Outcome::Short, ""),
            (0, 1, 1, Outcome::Long, ""),
            (0, 2, 1, Outcome::NoPurchase, ""),
            (0, 3, 1, Outcome::Invalid, "not_json"),
            (0, 4, 1, Outcome::Invalid, "bad_folio"),
            (0, 5, 1, Outcome::Short, ""),
            (0, 6, 1, Outcome::Invalid, "empty"),
            (1, 0, 2, Outcome::Long, ""),
            (1, 1, 2, Outcome::NoPurchase, ""),
        ]
    );
    let (_, short) = &results[&(0, 0)];
    assert_eq!(short.timestamp_ms, T0);
    let p = short.purchase.as_ref().expect("a purchase summary");
    assert_eq!(
        (
            p.id.as_str(),
            p.nombre.as_str(),
            p.apellido.as_str(),
            p.email.as_str(),
            p.productovisto.as_str(),
            p.folio.as_str(),
            p.taps
        ),
        (
            "aaaaaaaaaaaaaaaaaaaaaaa0",
            "Valentina",
            "Rojas",
            "valentina.rojas@mail.com",
            "Colchón",
            "QZX-0042",
            12.5
        )
    );
    assert_eq!(
        results[&(1, 0)].1.purchase.as_ref().unwrap().folio,
        "LMN-9999"
    );
    assert!(results[&(0, 2)].1.purchase.is_none());
    let (_, bad_folio) = &results[&(0, 4)];
    assert_eq!(
        bad_folio.invalid_detail,
        "folio must look like ABC-1234 (got \"AB-12\")"
    );
    assert!(bad_folio.purchase.is_none());

    // Heartbeats report where each partition stands.
    let progress = heartbeat_where(&mut session, |p| {
        p.len() == 2 && p[0].high_watermark == 7 && p[1].high_watermark == 2
    })
    .await;
    assert_eq!(
        progress
            .iter()
            .map(|p| (p.partition, p.generation, p.next_offset))
            .collect::<Vec<_>>(),
        [(0, 1, 7), (1, 2, 2)]
    );

    // Invalid results carry the record as read, for the master's dead
    // letter: key, value (Kafka nulls stay absent) and headers, in order.
    for offset in [3, 4, 6] {
        let original = &p0[offset as usize];
        let (_, r) = &results[&(0, offset)];
        assert_eq!(r.key, original.key, "offset {offset}");
        assert_eq!(r.value, original.value, "offset {offset}");
        assert_eq!(
            r.headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect::<Vec<_>>(),
            original
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect::<Vec<_>>(),
            "offset {offset}"
        );
    }
    assert_eq!(results[&(0, 3)].1.headers[0].key, "trace-id");
    assert_eq!(results[&(0, 6)].1.key, None);
    assert_eq!(results[&(0, 6)].1.value, None);
    // Valid results carry no record.
    for ((_, o), (_, r)) in &results {
        if outcome(r) != Outcome::Invalid {
            assert!(
                r.key.is_none() && r.value.is_none() && r.headers.is_empty(),
                "{o}"
            );
        }
    }
    // The worker itself writes nothing to Kafka.
    assert_eq!(
        high_watermark(&bootstrap, &dlq, 0),
        0,
        "the worker wrote the DLQ"
    );

    // Revoke: acknowledged with the next offset, and the partition is no
    // longer read. A revoke of a generation the worker does not hold is ignored.
    session.revoke(&topic, 1, 2).await;
    let ack = session
        .next_matching(
            |b| match b {
                Body::RevokeAck(a) => Some(*a),
                _ => None,
            },
            |_| {},
        )
        .await;
    assert_eq!(
        ack,
        RevokeAck {
            partition: 1,
            generation: 2,
            next_offset: 2
        }
    );
    session.revoke(&topic, 0, 2).await;
    produce(
        &bootstrap,
        &topic,
        &[input(
            1,
            "late-1",
            purchase("bbbbbbbbbbbbbbbbbbbbbbb2", "Pedro", None, None),
            12,
        )],
    )
    .await;
    produce(
        &bootstrap,
        &topic,
        &[input(
            0,
            "late-0",
            purchase(
                "aaaaaaaaaaaaaaaaaaaaaaa7",
                "Martina",
                Some(3.0),
                Some("OPQ-7777"),
            ),
            7,
        )],
    )
    .await;
    let late = collect_results(&mut session, 1, 3, |_| {}).await;
    assert_eq!(
        late.keys().copied().collect::<Vec<_>>(),
        [(0, 7)],
        "only partition 0 is read"
    );
    let progress = heartbeat_where(&mut session, |p| {
        p.first().is_some_and(|p| p.next_offset == 8)
    })
    .await;
    assert_eq!(
        progress
            .iter()
            .map(|p| (p.partition, p.generation, p.next_offset))
            .collect::<Vec<_>>(),
        [(0, 1, 8)]
    );

    // Assigned again, under a new generation, from where it was given back.
    session.assign(&topic, 1, 2, 5).await;
    let again = collect_results(&mut session, 1, 3, |_| {}).await;
    let ((partition, offset), (generation, result)) = again.into_iter().next().unwrap();
    assert_eq!((partition, offset, generation), (1, 2, 5));
    assert_eq!(outcome(&result), Outcome::NoPurchase);

    // Shutdown: leave with where each partition stops, then the stream ends.
    shutdown.cancel();
    let mut generation = 0;
    let leave = session
        .next_matching(
            |b| match b {
                Body::Leave(l) => Some(l.clone()),
                Body::Results(r) => panic!("results after everything was read: {r:?}"),
                _ => None,
            },
            |m| generation = m.generation,
        )
        .await;
    assert_eq!(generation, 5, "highest generation received");
    assert_eq!(
        leave
            .progress
            .iter()
            .map(|p| (p.partition, p.generation, p.next_offset))
            .collect::<Vec<_>>(),
        [(0, 1, 8), (1, 5, 3)]
    );
    assert!(
        session.next().await.is_none(),
        "the worker closes the stream after leave"
    );
    stopped(worker).await;
    master.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_retrying_until_a_master_appears() {
    init_logs();
    let bootstrap = bootstrap();
    let topic = unique_topic("worker-retry");
    // A port nobody listens on, for now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (shutdown, worker) = start_worker(
        &bootstrap,
        &topic,
        &format!("http://{addr}"),
        &["--id", "w-given"],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!worker.is_finished(), "the worker gave up without a master");

    let mut master = FakeMaster::start(addr, welcome(&topic, 10)).await;
    let mut session = master.session().await;
    assert_eq!(session.hello.worker_id, "w-given");
    assert!(matches!(session.hello.body, Some(Body::Hello(_))));
    // A heartbeat: the session is open (a shutdown before `welcome` just exits).
    heartbeat_where(&mut session, |_| true).await;

    shutdown.cancel();
    let leave = session
        .next_matching(
            |b| match b {
                Body::Leave(l) => Some(l.clone()),
                _ => None,
            },
            |m| assert_eq!(m.worker_id, "w-given"),
        )
        .await;
    assert!(leave.progress.is_empty());
    stopped(worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_stream_breaks_it_reconnects_and_starts_over() {
    init_logs();
    let bootstrap = bootstrap();
    let topic = unique_topic("worker-reconnect");
    create_topics(&bootstrap, &topic, 1).await;
    let records: Vec<Input> = (0..4)
        .map(|i| {
            let id = format!("cccccccccccccccccccccc{i:02}");
            input(
                0,
                &id,
                purchase(&id, "Sofía", Some(10.0 + i as f64), Some("DEF-1000")),
                i,
            )
        })
        .collect();
    produce(&bootstrap, &topic, &records).await;

    let mut master = FakeMaster::start("127.0.0.1:0".parse().unwrap(), welcome(&topic, 100)).await;
    let (shutdown, worker) = start_worker(&bootstrap, &topic, &master.url(), &[]);
    let mut first = master.session().await;
    first.assign(&topic, 0, 0, 1).await;
    let results = collect_results(&mut first, 4, 100, |_| {}).await;
    assert_eq!(results.len(), 4);

    // The master goes away; the worker drops the partition and comes back.
    first.break_stream().await;
    let mut second = master.session().await;
    assert!(matches!(second.hello.body, Some(Body::Hello(_))));
    // Nothing is owned until the new master assigns.
    let progress = heartbeat_where(&mut second, |_| true).await;
    assert!(
        progress.is_empty(),
        "partitions kept across sessions: {progress:?}"
    );

    // The new master resumes from its committed offset, 2.
    second.assign(&topic, 0, 2, 7).await;
    let results = collect_results(&mut second, 2, 100, |_| {}).await;
    assert_eq!(
        results
            .iter()
            .map(|((p, o), (g, r))| (*p, *o, *g, outcome(r)))
            .collect::<Vec<_>>(),
        [(0, 2, 7, Outcome::Short), (0, 3, 7, Outcome::Short)]
    );
    let progress = heartbeat_where(&mut second, |p| !p.is_empty()).await;
    assert_eq!(
        progress
            .iter()
            .map(|p| (p.partition, p.generation, p.next_offset))
            .collect::<Vec<_>>(),
        [(0, 7, 4)]
    );

    shutdown.cancel();
    let leave = second
        .next_matching(
            |b| match b {
                Body::Leave(l) => Some(l.clone()),
                _ => None,
            },
            |m| assert_eq!(m.generation, 7),
        )
        .await;
    assert_eq!(leave.progress.len(), 1);
    assert_eq!(leave.progress[0].next_offset, 4);
    stopped(worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assign_under_a_new_generation_starts_the_partition_over() {
    init_logs();
    let bootstrap = bootstrap();
    let topic = unique_topic("worker-rewind");
    create_topics(&bootstrap, &topic, 1).await;
    let records: Vec<Input> = (0..6)
        .map(|i| {
            let id = format!("dddddddddddddddddddddd{i:02}");
            input(
                0,
                &id,
                purchase(&id, "Renata", Some(5.0 + i as f64), Some("RWD-0001")),
                i,
            )
        })
        .collect();
    produce(&bootstrap, &topic, &records).await;

    let mut master = FakeMaster::start("127.0.0.1:0".parse().unwrap(), welcome(&topic, 100)).await;
    let (shutdown, worker) = start_worker(&bootstrap, &topic, &master.url(), &[]);
    let mut session = master.session().await;
    session.assign(&topic, 0, 0, 1).await;
    let first = collect_results(&mut session, 6, 100, |_| {}).await;
    assert!(first.values().all(|(g, _)| *g == 1));

    // The master aborted a transaction: the same partition again, from its
    // last committed offset, under a new generation, without a revoke.
    session.assign(&topic, 0, 2, 9).await;
    let again = collect_results(&mut session, 4, 100, |_| {}).await;
    assert_eq!(
        again
            .iter()
            .map(|((p, o), (g, _))| (*p, *o, *g))
            .collect::<Vec<_>>(),
        (2..6).map(|o| (0, o, 9)).collect::<Vec<_>>()
    );
    let progress = heartbeat_where(&mut session, |p| !p.is_empty()).await;
    assert_eq!(
        progress
            .iter()
            .map(|p| (p.partition, p.generation, p.next_offset))
            .collect::<Vec<_>>(),
        [(0, 9, 6)]
    );
    shutdown.cancel();
    stopped(worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_waiting_batches_then_leave() {
    init_logs();
    let bootstrap = bootstrap();
    let topic = unique_topic("worker-leave");
    create_topics(&bootstrap, &topic, 1).await;
    let records: Vec<Input> = (0..10)
        .map(|i| {
            let id = format!("{i:024x}");
            let value = if i == 8 {
                b"not json".to_vec()
            } else {
                purchase(&id, "Agustín", Some(1.0 + i as f64), Some("GHI-2024"))
            };
            input(0, &id, value, i)
        })
        .collect();
    produce(&bootstrap, &topic, &records).await;

    let mut master = FakeMaster::start("127.0.0.1:0".parse().unwrap(), welcome(&topic, 7)).await;
    // A long linger: only "nothing more to read" sends the last three
    // before the shutdown; what is still unsent then goes before `leave`.
    let (shutdown, worker) =
        start_worker(&bootstrap, &topic, &master.url(), &["--batch-linger", "5s"]);
    let mut session = master.session().await;
    session.assign(&topic, 0, 0, 3).await;
    let mut results = collect_results(&mut session, 7, 7, |_| {}).await;
    // Long enough to read the rest, far shorter than the linger.
    tokio::time::sleep(Duration::from_millis(700)).await;
    shutdown.cancel();

    // The waiting batch goes out before `leave`, which says where it ends.
    let leave = loop {
        let m = session.next().await.expect("stream closed before leave");
        match m.body {
            Some(Body::Results(batch)) => {
                for r in batch.results {
                    assert!(results
                        .insert((0, r.offset), (batch.generation, r))
                        .is_none());
                }
            }
            Some(Body::Leave(leave)) => break leave,
            _ => {}
        }
    };
    assert_eq!(
        leave
            .progress
            .iter()
            .map(|p| (p.partition, p.generation, p.next_offset))
            .collect::<Vec<_>>(),
        [(0, 3, 10)]
    );
    assert_eq!(
        results.keys().map(|(_, o)| *o).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(results[&(0, 8)].1.invalid_code, "not_json");
    assert!(session.next().await.is_none());
    stopped(worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_goes_once_nothing_more_is_ready_not_after_the_linger() {
    init_logs();
    let bootstrap = bootstrap();
    let topic = unique_topic("worker-idle");
    create_topics(&bootstrap, &topic, 2).await;
    let records: Vec<Input> = (0..6)
        .map(|i| {
            let id = format!("{i:024x}");
            let value = purchase(&id, "Agustín", Some(2.5), Some("GHI-2024"));
            input((i % 2) as i32, &id, value, i)
        })
        .collect();
    produce(&bootstrap, &topic, &records).await;

    let mut master = FakeMaster::start("127.0.0.1:0".parse().unwrap(), welcome(&topic, 100)).await;
    // Far fewer records than a full batch, and a linger (an hour) no test waits for:
    // the results can only come because the worker had nothing more to read.
    let (shutdown, worker) = start_worker(
        &bootstrap,
        &topic,
        &master.url(),
        &["--batch-linger", "60m"],
    );
    let mut session = master.session().await;
    session.assign(&topic, 0, 0, 1).await;
    session.assign(&topic, 1, 0, 1).await;
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        collect_results(&mut session, 6, 100, |_| {}),
    )
    .await
    .expect("the 6 results came long before the hour of linger");
    assert_eq!(
        results.keys().copied().collect::<Vec<_>>(),
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    );
    shutdown.cancel();
    stopped(worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_does_not_read_stops_the_worker_and_loses_nothing() {
    init_logs();
    let bootstrap = bootstrap();
    let topic = unique_topic("worker-flow");
    create_topics(&bootstrap, &topic, 1).await;
    // Far more results than the HTTP/2 windows and the send queue hold.
    const N: i64 = 30_000;
    let records: Vec<Input> = (0..N)
        .map(|i| {
            let id = format!("{i:024x}");
            input(
                0,
                &id,
                purchase(
                    &id,
                    "Florencia",
                    Some(1.0 + (i % 50) as f64),
                    Some("JKL-3141"),
                ),
                i,
            )
        })
        .collect();
    produce(&bootstrap, &topic, &records).await;

    let mut master = FakeMaster::start("127.0.0.1:0".parse().unwrap(), welcome(&topic, 50)).await;
    let (shutdown, worker) = start_worker(&bootstrap, &topic, &master.url(), &[]);
    let mut session = master.session().await;
    // The master stops reading before anything is assigned: far more
    // results than the stream can buffer.
    session.stall(true);
    session.assign(&topic, 0, 0, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!worker.is_finished());
    session.stall(false);

    // Heartbeats queued during the stall show the worker stopped reading
    // instead of piling results up.
    let mut stalled_at = None;
    let mut results = Results::new();
    while results.len() < N as usize {
        let m = session.next().await.expect("stream closed");
        match m.body {
            Some(Body::Heartbeat(h)) if stalled_at.is_none() => {
                stalled_at = Some(h.progress[0].next_offset);
            }
            Some(Body::Results(batch)) => {
                assert!(batch.results.len() <= 50);
                for r in batch.results {
                    assert!(results
                        .insert((0, r.offset), (batch.generation, r))
                        .is_none());
                }
            }
            _ => {}
        }
    }
    let stalled_at = stalled_at.expect("a heartbeat");
    assert!(
        stalled_at < N / 2,
        "read up to {stalled_at} while the master read nothing"
    );
    assert_eq!(
        results.keys().map(|(_, o)| *o).collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>()
    );
    shutdown.cancel();
    let leave = session
        .next_matching(
            |b| match b {
                Body::Leave(l) => Some(l.clone()),
                _ => None,
            },
            |_| {},
        )
        .await;
    assert_eq!(leave.progress[0].next_offset, N);
    stopped(worker).await;
}
