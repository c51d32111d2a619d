//! The master is killed with SIGKILL and restarted: the workers reconnect by
//! themselves, processing resumes from the committed offsets, and every valid
//! purchase is in the notifications topic exactly once (the crashed
//! master's open transaction is aborted by its successor), every invalid
//! record in the DLQ exactly once. The console is a view: lines printed
//! after the last commit and before the crash are printed again; this test
//! counts them. Each worker's `/metrics` shows the stream up again and the
//! reconnection counted.

use std::time::Duration;

use e2e::*;

#[test]
fn a_restarted_master_resumes_from_committed_offsets() {
    let mut p = Pipeline::start("e2e-master", 6);
    p.start_worker("w1");
    p.start_worker("w2");
    let mut producer = p.produce_in_background(20_000, 2_000, 13);
    std::thread::sleep(Duration::from_secs(4));

    p.master.as_mut().unwrap().kill9();
    std::thread::sleep(Duration::from_secs(1));
    assert!(producer.is_running(), "the crash happened mid-stream");
    p.start_master();

    let _ = producer.child.wait();
    p.wait_until_committed_to_end(Duration::from_secs(180));
    let stats = p.stats();
    assert_eq!(stats.workers, 2, "both workers reconnected by themselves");
    for w in ["w1", "w2"] {
        assert!(p.worker(w).is_running(), "{w} survived the master's crash");
        // The stream's state, as the worker's /metrics reports it.
        let m = Scrape::get(p.worker_metrics_ports[w]);
        assert_eq!(m.value("cyberday_worker_master_connected"), 1.0, "{w}");
        assert!(
            m.value("cyberday_worker_master_reconnects_total") >= 1.0,
            "{w} counted its reconnection"
        );
    }
    p.stop();

    let expected = Expected::from_topic(&p.cluster, &p.topic);
    let in_topic = check_exactly_once(&expected, &p.topic_notifications());
    eprintln!(
        "notifications topic after the master crash: {} missing, {} duplicated, of {}",
        in_topic.missing.len(),
        in_topic.duplicated.len(),
        expected.purchases.len()
    );
    in_topic.assert_exactly_once();
    assert_eq!(
        check_dead_letters(&p.cluster, &p.topic, &expected),
        0,
        "dead letters written twice around the crash"
    );

    let console = check_exactly_once(&expected, &p.notifications());
    assert!(
        console.missing.is_empty(),
        "{} valid purchases never printed",
        console.missing.len()
    );
    assert!(console.wrong.is_empty(), "{:?}", console.wrong.first());
    eprintln!(
        "console lines printed twice around the master crash (since the last commit): {} of {}",
        console.duplicated.len(),
        expected.purchases.len()
    );
}
