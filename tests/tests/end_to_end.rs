//! The whole pipeline, nothing failing: 20,000 records with a known mix,
//! master + 2 workers as separate processes, every valid purchase notified
//! exactly once (on the console and in the notifications topic), every
//! invalid record in the DLQ exactly once, offsets committed to the end.

use std::collections::HashSet;
use std::time::Duration;

use e2e::*;

#[test]
fn twenty_thousand_records_are_notified_exactly_once() {
    let mut p = Pipeline::start("e2e-steady", 6);
    p.start_worker("w1");
    p.start_worker("w2");
    p.produce(20_000, 0, 2026);
    p.wait_until_committed_to_end(Duration::from_secs(180));
    let stats = p.stats();
    p.stop();

    let expected = Expected::from_topic(&p.cluster, &p.topic);
    let total = expected.purchases.len() + expected.no_purchase + expected.invalid.len();
    assert_eq!(total, 20_000);
    assert!(expected.no_purchase > 0 && !expected.invalid.is_empty());

    let notified = p.notifications();
    check_exactly_once(&expected, &notified).assert_exactly_once();
    assert_eq!(
        notified.len(),
        expected.purchases.len(),
        "no notification for no-purchase or invalid records"
    );
    let in_topic = p.topic_notifications();
    check_exactly_once(&expected, &in_topic).assert_exactly_once();
    assert_eq!(in_topic.len(), expected.purchases.len());
    let workers: HashSet<_> = notified.iter().map(|n| n.worker.as_str()).collect();
    assert_eq!(
        workers,
        HashSet::from(["w1", "w2"]),
        "both workers did work"
    );

    assert_eq!(
        check_dead_letters(&p.cluster, &p.topic, &expected),
        0,
        "no DLQ duplicates"
    );

    let short = expected
        .purchases
        .values()
        .filter(|(k, _)| k == "short")
        .count() as u64;
    assert_eq!(stats.records_processed, 20_000);
    assert_eq!(stats.notifications_short, short);
    assert_eq!(
        stats.notifications_long,
        expected.purchases.len() as u64 - short
    );
    assert_eq!(stats.no_purchase, expected.no_purchase as u64);
    assert_eq!(stats.invalid, expected.invalid.len() as u64);
    assert_eq!(stats.duplicates_suppressed, 0);
    for part in &stats.partitions {
        assert_eq!(part.lag, 0, "partition {} lag", part.partition);
    }
}
