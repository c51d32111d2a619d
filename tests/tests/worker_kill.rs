//! A worker is killed with SIGKILL mid-stream: its partitions move to the
//! survivor within seconds and every valid purchase is still notified
//! exactly once, on the console and in the notifications topic.

use std::time::{Duration, Instant};

use common::pb::AssignmentState;
use e2e::*;

#[test]
fn a_killed_workers_partitions_move_and_nothing_is_lost_or_repeated() {
    let mut p = Pipeline::start("e2e-kill", 6);
    p.start_worker("w1");
    p.start_worker("w2");
    let mut producer = p.produce_in_background(20_000, 2_000, 12);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        p.assignments().iter().any(|a| a.owner == "w2"),
        "w2 owned partitions before the kill"
    );

    let killed_at = Instant::now();
    p.worker("w2").kill9();
    let deadline = killed_at + Duration::from_secs(15);
    loop {
        let all_on_w1 = p
            .assignments()
            .iter()
            .all(|a| a.owner == "w1" && a.state == AssignmentState::Assigned as i32);
        if all_on_w1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions did not move: {:?}",
            p.assignments()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let failover = killed_at.elapsed();
    eprintln!("failover after SIGKILL of a worker: {failover:?}");
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );
    assert!(producer.is_running(), "the kill happened mid-stream");

    let _ = producer.child.wait();
    p.wait_until_committed_to_end(Duration::from_secs(180));
    p.stop();

    let expected = Expected::from_topic(&p.cluster, &p.topic);
    check_exactly_once(&expected, &p.notifications()).assert_exactly_once();
    check_exactly_once(&expected, &p.topic_notifications()).assert_exactly_once();
    assert_eq!(
        check_dead_letters(&p.cluster, &p.topic, &expected),
        0,
        "dead letters written twice around the kill"
    );
}
