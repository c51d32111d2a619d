//! Prometheus metrics against what really happened: master + 2 workers
//! (each with `--metrics-listen`) on a fresh topic, 6,000 records produced
//! while `/metrics` is scraped; counters never go down during the run, and
//! at the end the master's and the workers' counters agree with the
//! notifications in the notifications topic and on the console, with the
//! dead-letter topic (by reason), and with each other; lag is zero; and
//! Prometheus's `promtool check metrics` finds every scrape valid.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::*;

const RECORDS: u64 = 6_000;

/// Counters the master must never decrease.
const MASTER_COUNTERS: &[&str] = &[
    "cyberday_master_records_total",
    "cyberday_master_notifications_total",
    "cyberday_master_invalid_total",
    "cyberday_master_no_purchase_total",
    "cyberday_master_notify_latency_seconds_count",
];

#[test]
fn metrics_agree_with_the_notifications_and_the_dlq() {
    let mut p = Pipeline::start("e2e-metrics", 6);
    p.start_worker("w1");
    p.start_worker("w2");

    // During the run: every scrape answers, counters only grow.
    let mut producer = p.produce_in_background(RECORDS, 2_000, 77);
    let mut last: BTreeMap<&str, f64> = BTreeMap::new();
    let mut scrapes = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while producer.is_running() {
        assert!(
            Instant::now() < deadline,
            "producer still running after 120 s"
        );
        let m = Scrape::get(p.metrics_port);
        for name in MASTER_COUNTERS {
            let v = m.sum(name);
            assert!(
                v >= last.get(name).copied().unwrap_or(0.0),
                "{name} went down"
            );
            last.insert(name, v);
        }
        for port in p.worker_metrics_ports.values() {
            Scrape::get(*port);
        }
        // Prometheus's own check, once mid-run (a histogram with samples,
        // every partition owned) for the master and a worker.
        if scrapes == 1 {
            promtool_check("master", &Scrape::text(p.metrics_port));
            let worker = p.worker_metrics_ports.values().next().expect("a worker");
            promtool_check("worker", &Scrape::text(*worker));
        }
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        producer.child.wait().unwrap().success(),
        "producer failed:\n{}",
        producer.stderr_text()
    );
    assert!(scrapes >= 2, "only {scrapes} scrapes during the run");
    p.wait_until_committed_to_end(Duration::from_secs(180));

    // The lags come from watermarks fetched every second or so.
    let master = wait_for_zero_lag(&p, Duration::from_secs(15));
    let workers: Vec<Scrape> = p
        .worker_metrics_ports
        .values()
        .map(|port| Scrape::get(*port))
        .collect();
    promtool_check("master", &Scrape::text(p.metrics_port));
    for (id, port) in &p.worker_metrics_ports {
        promtool_check(&format!("worker {id}"), &Scrape::text(*port));
    }
    p.stop();

    let expected = Expected::from_topic(&p.cluster, &p.topic);
    let in_topic = p.topic_notifications();
    check_exactly_once(&expected, &in_topic).assert_exactly_once();
    let on_console = p.notifications();
    let count = |list: &[Notification], kind: &str| list.iter().filter(|n| n.kind == kind).count();
    let short = count(&in_topic, "short") as f64;
    let long = count(&in_topic, "long") as f64;
    println!(
        "{RECORDS} records: {short} short, {long} long, {} no purchase, {} invalid; {scrapes} scrapes during the run",
        expected.no_purchase,
        expected.invalid.len()
    );

    // The master's counters and the notifications.
    assert_eq!(
        master.value("cyberday_master_records_total"),
        RECORDS as f64
    );
    assert_eq!(
        master.value("cyberday_master_notifications_total{kind=\"short\"}"),
        short
    );
    assert_eq!(
        master.value("cyberday_master_notifications_total{kind=\"long\"}"),
        long
    );
    assert_eq!(
        (short as usize, long as usize),
        (count(&on_console, "short"), count(&on_console, "long")),
        "the console printed what the topic holds (nothing crashed)"
    );
    assert_eq!(
        master.value("cyberday_master_no_purchase_total"),
        expected.no_purchase as f64
    );
    assert_eq!(
        master.value("cyberday_master_notify_latency_seconds_count"),
        short + long,
        "one latency per notification"
    );
    assert_eq!(
        master.value("cyberday_master_batch_records_sum"),
        RECORDS as f64
    );
    assert_eq!(
        master.value("cyberday_master_duplicates_suppressed_total"),
        0.0
    );
    assert_eq!(master.value("cyberday_master_workers"), 2.0);
    assert!(master.value("cyberday_master_rebalances_total") >= 1.0);
    assert_eq!(
        master.types["cyberday_master_notify_latency_seconds"],
        "histogram"
    );

    // Invalid records: the DLQ, reason by reason.
    let mut dlq_reasons: BTreeMap<String, f64> = BTreeMap::new();
    for r in read_topic(&p.cluster, &format!("{}.DLQ", p.topic)) {
        let reason = r
            .header("cyberday.reason")
            .expect("DLQ record with a reason");
        *dlq_reasons
            .entry(format!("reason=\"{reason}\""))
            .or_default() += 1.0;
    }
    assert!(!dlq_reasons.is_empty(), "the producer sent invalid records");
    assert_eq!(
        master.family("cyberday_master_invalid_total"),
        dlq_reasons,
        "invalid_total by reason == the DLQ by its reason header"
    );
    assert_eq!(
        dlq_reasons.values().sum::<f64>(),
        expected.invalid.len() as f64
    );

    // Lag, per partition: nothing left to notify or to commit.
    let processed = master.family("cyberday_master_partition_processed_lag_records");
    let committed = master.family("cyberday_master_partition_committed_lag_records");
    assert_eq!(processed.len(), 6, "{processed:?}");
    assert_eq!(committed.len(), 6, "{committed:?}");

    // The workers: what they read is what the master accepted.
    let worker_sum = |series: &str| workers.iter().map(|w| w.value(series)).sum::<f64>();
    for (outcome, master_value) in [
        ("short", short),
        ("long", long),
        ("no_purchase", expected.no_purchase as f64),
        ("invalid", expected.invalid.len() as f64),
    ] {
        assert_eq!(
            worker_sum(&format!(
                "cyberday_worker_records_total{{outcome=\"{outcome}\"}}"
            )),
            master_value,
            "workers' {outcome} records"
        );
    }
    assert_eq!(
        worker_sum("cyberday_worker_batch_records_sum"),
        RECORDS as f64
    );
    assert_eq!(
        worker_sum("cyberday_worker_batch_records_count"),
        master.value("cyberday_master_batch_records_count"),
        "every batch sent was received"
    );
    for w in &workers {
        assert_eq!(w.value("cyberday_worker_master_connected"), 1.0);
        assert_eq!(w.value("cyberday_worker_master_reconnects_total"), 0.0);
        assert!(w.value("cyberday_worker_partitions") >= 1.0);
        for (partition, lag) in w.family("cyberday_worker_partition_lag_records") {
            assert_eq!(lag, 0.0, "worker lag of {partition}");
        }
    }
    assert_eq!(worker_sum("cyberday_worker_partitions"), 6.0);
}

/// Scrapes the master until every partition shows zero lag (both kinds).
fn wait_for_zero_lag(p: &Pipeline, timeout: Duration) -> Scrape {
    let deadline = Instant::now() + timeout;
    loop {
        let m = Scrape::get(p.metrics_port);
        let lags: Vec<f64> = [
            "cyberday_master_partition_processed_lag_records",
            "cyberday_master_partition_committed_lag_records",
        ]
        .iter()
        .flat_map(|f| m.family(f).into_values())
        .collect();
        if lags.len() == 12 && lags.iter().all(|l| *l == 0.0) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "lag not zero after {timeout:?}: {lags:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
