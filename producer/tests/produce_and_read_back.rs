//! The producer against the real 3-broker cluster: every record arrives,
//! parses, keeps its key, the class mix follows the flags, and the same seed
//! gives the same records.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::classify::{classify, Classification, Kind, Rules};
use support::*;

const N: usize = 10_000;

fn class_of(value: &[u8]) -> &'static str {
    match classify(value, &Rules::default()) {
        Classification::NoPurchase(_) => "no_purchase",
        Classification::Purchase {
            kind: Kind::Short, ..
        } => "short",
        Classification::Purchase {
            kind: Kind::Long, ..
        } => "long",
        Classification::Invalid(_) => "invalid",
    }
}

#[test]
fn ten_thousand_records_read_back_with_the_requested_mix_and_reproducibly() {
    let bootstrap = bootstrap();
    let args = [
        "--count",
        "10000",
        "--seed",
        "42",
        "--rate",
        "0",
        "--no-purchase-ratio",
        "0.3",
        "--long-ratio",
        "0.2",
        "--invalid-ratio",
        "0.05",
    ];
    let first = unique_topic("produce-a");
    let out = run_producer(&bootstrap, &first, &args);
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = summary_counts(&out.stderr);
    assert_eq!(summary["sent"], N as u64);
    assert_eq!(summary["failed"], 0);

    let seen = read_all(&bootstrap, &first, N, Duration::from_secs(60));
    assert_eq!(seen.len(), N, "records read back");
    let offsets: HashSet<_> = seen.iter().map(|s| (s.partition, s.offset)).collect();
    assert_eq!(offsets.len(), N, "no record twice");

    let mut counts: HashMap<&str, u64> = HashMap::new();
    for s in &seen {
        let class = class_of(&s.value);
        *counts.entry(class).or_default() += 1;
        if class != "invalid" {
            // Valid records are keyed by their id.
            let v: serde_json::Value = serde_json::from_slice(&s.value).unwrap();
            assert_eq!(s.key.as_deref(), Some(v["id"].as_str().unwrap().as_bytes()));
        } else {
            assert_eq!(
                s.key.as_ref().map(Vec::len),
                Some(24),
                "invalid records keep an id key"
            );
        }
    }
    // What the consumer classifies is exactly what the producer says it sent.
    for class in ["no_purchase", "short", "long", "invalid"] {
        assert_eq!(
            counts.get(class).copied().unwrap_or(0),
            summary[class],
            "{class}"
        );
    }
    // And the mix follows the requested ratios (binomial spread at N=10,000 is < 1%).
    for (class, ratio) in [
        ("no_purchase", 0.3),
        ("long", 0.2),
        ("invalid", 0.05),
        ("short", 0.45),
    ] {
        let share = counts[class] as f64 / N as f64;
        assert!((share - ratio).abs() < 0.02, "{class}: {share} vs {ratio}");
    }

    // Same seed, another topic: byte-identical records (same keys land on the
    // same partitions, in the same order).
    let second = unique_topic("produce-b");
    let out = run_producer(&bootstrap, &second, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = read_all(&bootstrap, &second, N, Duration::from_secs(60));
    let strip = |v: &[Seen]| {
        v.iter()
            .map(|s| (s.partition, s.key.clone(), s.value.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&seen), strip(&again), "same seed, same records");
}

#[test]
fn another_seed_gives_other_records() {
    let bootstrap = bootstrap();
    let a = unique_topic("seed-1");
    let b = unique_topic("seed-2");
    for (topic, seed) in [(&a, "1"), (&b, "2")] {
        let out = run_producer(
            &bootstrap,
            topic,
            &["--count", "50", "--seed", seed, "--rate", "0"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let keys = |t: &str| {
        read_all(&bootstrap, t, 50, Duration::from_secs(30))
            .into_iter()
            .map(|s| s.key)
            .collect::<HashSet<_>>()
    };
    assert!(keys(&a).is_disjoint(&keys(&b)));
}

#[test]
fn rate_paces_the_records() {
    let bootstrap = bootstrap();
    let topic = unique_topic("rate");
    let started = std::time::Instant::now();
    let out = run_producer(
        &bootstrap,
        &topic,
        &["--count", "20", "--rate", "10", "--seed", "3"],
    );
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 20 records at 10/s: the last is due 1.9 s after the first.
    assert!(elapsed >= Duration::from_millis(1900), "took {elapsed:?}");
    assert_eq!(
        read_all(&bootstrap, &topic, 20, Duration::from_secs(30)).len(),
        20
    );
}

#[test]
fn unreachable_brokers_fail_fast_with_a_clear_message() {
    let out = run_producer(
        "127.0.0.1:1",
        "DataTopic",
        &["--count", "1", "--connect-timeout", "2s"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not reach Kafka at 127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("deploy/local/kafka.sh up"), "{err}");
}

#[test]
fn bad_flags_say_what_to_do() {
    let out = run_producer(
        "127.0.0.1:1",
        "DataTopic",
        &["--long-ratio", "0.9", "--no-purchase-ratio", "0.5"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must be at most 1"), "{err}");

    let out = run_producer("127.0.0.1:1", "DataTopic", &["-X", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected KEY=VALUE"));

    let out = run_producer(
        &bootstrap(),
        &unique_topic("badx"),
        &["--count", "1", "-X", "no.such.property=1"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no.such.property"), "{err}");
}
