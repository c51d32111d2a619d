//! librdkafka gives the master's transactional producer up (a fatal error,
//! as when it loses an idempotence sequence while a broker is down): the
//! master replaces the producer in-process, fencing the failed one, reads
//! the committed offsets back from Kafka and starts every partition over
//! from them. Nothing is lost or repeated in the notifications topic, and
//! the master keeps running. The fatal error is injected with
//! `CYBERDAY_FAULT_FATAL_AT_COMMIT`; a transactional call that never returns
//! (librdkafka's, when the group coordinator's broker goes away mid-commit)
//! with `CYBERDAY_FAULT_STUCK_AT_COMMIT`.

use std::time::Duration;

use e2e::*;

#[test]
fn a_failed_transactional_producer_is_replaced_without_loss_or_repeat() {
    replaced_without_loss_or_repeat(
        "e2e-producer-fatal",
        ("CYBERDAY_FAULT_FATAL_AT_COMMIT", "3"),
        "injecting a fatal producer error",
    );
}

/// Takes the 30 s the master gives a stuck call.
#[test]
fn a_transactional_call_that_never_returns_replaces_the_producer_without_loss_or_repeat() {
    replaced_without_loss_or_repeat(
        "e2e-producer-stuck",
        ("CYBERDAY_FAULT_STUCK_AT_COMMIT", "3"),
        "did not return; giving the producer up",
    );
}

/// 10,000 records through master + 2 workers with the fault `env` in the
/// master, whose log must show `fault_seen` and then the replacement.
fn replaced_without_loss_or_repeat(name: &str, env: (&str, &str), fault_seen: &str) {
    let mut p = Pipeline::start_with_master_env(name, 6, &[env]);
    p.start_worker("w1");
    p.start_worker("w2");
    let mut producer = p.produce_in_background(10_000, 2_000, 21);
    let _ = producer.child.wait();
    p.wait_until_committed_to_end(Duration::from_secs(120));
    assert!(
        p.master.as_mut().unwrap().is_running(),
        "the master stopped instead of replacing its producer"
    );
    let log = p.master.as_ref().unwrap().stderr_text();
    assert!(
        log.contains(fault_seen),
        "no \"{fault_seen}\" in the master's log:\n{log}"
    );
    assert!(
        log.contains("transactional producer replaced"),
        "no replacement in the master's log:\n{log}"
    );
    p.stop();

    let expected = Expected::from_topic(&p.cluster, &p.topic);
    let in_topic = check_exactly_once(&expected, &p.topic_notifications());
    in_topic.assert_exactly_once();
    assert_eq!(
        check_dead_letters(&p.cluster, &p.topic, &expected),
        0,
        "dead letters written twice around the replacement"
    );
}
