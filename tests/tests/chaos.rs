//! The small chaos run: while 36,000 records stream through at 1,000/s, a
//! worker, the master and one Kafka broker are SIGKILLed at seeded random
//! moments and restarted. Every valid purchase must be in the notifications
//! topic exactly once, every invalid record in the DLQ exactly once with its
//! reason, the group's offsets committed to the end, and each kill's
//! partitions moving again. The full run (200,000 records) is
//! `deploy/local/chaos.sh`. (Its own test binary: a broker goes down, so no
//! other test shares the cluster meanwhile.)

use std::time::Duration;

use e2e::chaos::{self, ChaosConfig, KillKind};

#[test]
fn exactly_once_through_a_worker_kill_a_master_kill_and_a_broker_loss() {
    let mut cfg = ChaosConfig::new("e2e-chaos", 36_000, 1_000, 4);
    cfg.recovery_timeout = Duration::from_secs(30);
    let summary = chaos::run(&cfg);
    eprintln!("{summary}");
    summary.assert_ok();

    let kinds: Vec<KillKind> = summary.kills.iter().map(|k| k.kind).collect();
    assert_eq!(
        kinds,
        [KillKind::Worker, KillKind::Master, KillKind::Broker]
    );
    let failover = summary.kills[0].recovery.expect("measured");
    eprintln!("failover after SIGKILL of a worker: {failover:.2?} (goal: under 3 s)");
    // The goal is 3 s; the bound leaves room for a noisy two-core machine.
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );
}
