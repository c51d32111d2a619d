//! librdkafka gives the master's transactional producer up (a fatal error,
//! as when it loses an idempotence sequence while a broker is down): the
//! master replaces the producer in-process, fencing the failed one, reads
//! the committed offsets back from Kafka and starts every partition over
//! from them. Nothing is lost or repeated in the notifications topic, and
//! the master keeps running. The fatal error is injected with
//! `CYBERDAY_FAULT_FATAL_AT_COMMIT`.

use std::time::Duration;

use e2e::*;

#[test]
fn a_failed_transactional_producer_is_replaced_without_loss_or_repeat() {
    let mut p = Pipeline::start_with_master_env(
        "e2e-producer-fatal",
        6,
        &[("CYBERDAY_FAULT_FATAL_AT_COMMIT", "3")],
    );
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
        log.contains("injecting a fatal producer error"),
        "the fault was not injected:\n{log}"
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
