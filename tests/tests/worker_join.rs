//! A third worker joins mid-stream: it receives a fair share (2 partitions of
//! 6 each), and nothing is lost or repeated, on the console or in the
//! notifications topic.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::*;

#[test]
fn a_joining_worker_takes_a_fair_share_and_nothing_is_lost_or_repeated() {
    let mut p = Pipeline::start("e2e-join", 6);
    p.start_worker("w1");
    p.start_worker("w2");
    let mut producer = p.produce_in_background(20_000, 2_000, 11);
    std::thread::sleep(Duration::from_secs(3));
    p.start_worker("w3");

    let deadline = Instant::now() + Duration::from_secs(20);
    let counts = loop {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for a in p.assignments() {
            if a.state == common::pb::AssignmentState::Assigned as i32 {
                *counts.entry(a.owner).or_default() += 1;
            }
        }
        if counts.len() == 3 && counts.values().all(|n| *n == 2) {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "not balanced over 3 workers: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(producer.is_running(), "the join happened mid-stream");
    eprintln!("balanced after join: {counts:?}");

    let _ = producer.child.wait();
    p.wait_until_committed_to_end(Duration::from_secs(180));
    p.stop();

    let expected = Expected::from_topic(&p.cluster, &p.topic);
    let notified = p.notifications();
    check_exactly_once(&expected, &notified).assert_exactly_once();
    assert!(
        notified.iter().any(|n| n.worker == "w3"),
        "the new worker notified records"
    );
    check_exactly_once(&expected, &p.topic_notifications()).assert_exactly_once();
    assert_eq!(
        check_dead_letters(&p.cluster, &p.topic, &expected),
        0,
        "no DLQ duplicates"
    );
}
