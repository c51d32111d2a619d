//! Two masters with `--election`: the first leads, the second stands by and
//! refuses workers with `unavailable` naming the leader. The leader is
//! SIGKILLed mid-stream; the standby is elected when the leader's group
//! session (1 s here) times out, fences it by initialising transactions
//! under the shared transactional id, and serves from the committed
//! offsets. The workers, pointed at the standby, are served by it then;
//! every valid purchase is in the notifications topic exactly once, every
//! invalid record in the DLQ exactly once.

use std::time::{Duration, Instant};

use common::pb::{GetRoleRequest, GetStatsRequest};
use e2e::*;

const ELECTION: &[(&str, &str)] = &[
    ("MASTER_ELECTION", "true"),
    ("MASTER_ELECTION_SESSION_TIMEOUT", "1s"),
];

fn role(p: &Pipeline) -> Option<(String, String)> {
    block_on(async {
        let mut admin = p.admin().await.ok()?;
        let r = admin.get_role(GetRoleRequest {}).await.ok()?.into_inner();
        Some((r.role, r.leader))
    })
}

fn wait_for_role(p: &Pipeline, want: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if role(p).is_some_and(|(r, _)| r == want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "the master at {} is not {want} after {timeout:?} (last: {:?})",
            p.master_url(),
            role(p)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_standby_master_takes_over_from_a_killed_leader() {
    let mut p = Pipeline::start_with_master_env("e2e-standby", 6, ELECTION);
    wait_for_role(&p, "leader", Duration::from_secs(30));
    let leader_url = p.master_url();
    let mut leader = p.master.take().expect("the first master");

    // The second replica, on its own ports, same group and transactional id.
    p.port = free_port();
    p.metrics_port = free_port();
    p.start_master();
    wait_for_role(&p, "standby", Duration::from_secs(10));
    // It reads the leader's announcement from the election topic.
    let deadline = Instant::now() + Duration::from_secs(10);
    while role(&p).is_some_and(|(_, named)| named != leader_url) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        role(&p).unwrap().1,
        leader_url,
        "the standby names the leader"
    );

    // Workers pointed at the standby: refused (unavailable) until it leads.
    p.start_worker("w1");
    p.start_worker("w2");
    let mut producer = p.produce_in_background(20_000, 2_000, 21);
    std::thread::sleep(Duration::from_secs(3));
    let refused = block_on(async {
        let mut admin = p.admin().await.expect("the standby's Admin");
        admin.get_stats(GetStatsRequest {}).await
    })
    .expect_err("a standby serves no stats");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get(common::pb::LEADER_METADATA)
            .and_then(|v| v.to_str().ok()),
        Some(leader_url.as_str()),
        "the refusal names the leader"
    );

    leader.kill9();
    let took_over = wait_for_role(&p, "leader", Duration::from_secs(30));
    eprintln!("standby-master: leader SIGKILLed, the standby leads {took_over:?} later");
    assert!(producer.is_running(), "the takeover happened mid-stream");

    let _ = producer.child.wait();
    p.wait_until_committed_to_end(Duration::from_secs(180));
    assert_eq!(
        p.stats().workers,
        2,
        "both workers served by the new leader"
    );
    p.stop();

    let expected = Expected::from_topic(&p.cluster, &p.topic);
    let in_topic = check_exactly_once(&expected, &p.topic_notifications());
    eprintln!(
        "standby-master: notifications topic: {} missing, {} duplicated, of {}",
        in_topic.missing.len(),
        in_topic.duplicated.len(),
        expected.purchases.len()
    );
    in_topic.assert_exactly_once();
    assert_eq!(
        check_dead_letters(&p.cluster, &p.topic, &expected),
        0,
        "dead letters written twice around the takeover"
    );
}
