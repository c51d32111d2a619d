//! Who may be a worker. Over mutual TLS: a worker with a certificate from
//! another CA, or with none, gets no partition, while the pipeline runs end
//! to end with the right ones. In plaintext with a shared token: a worker
//! without it or with a wrong one is refused with the reason; `--max-workers`
//! refuses one worker too many until a place frees. Nothing secret in any
//! process's output.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::*;

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Waits until `done` holds, or panics with `what` after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `worker`'s stderr contains `text`.
fn wait_for_log(p: &mut Pipeline, worker: &str, text: &str) {
    let w = p.worker(worker);
    wait_for(
        &format!("{worker} to log {text:?}"),
        Duration::from_secs(30),
        || w.stderr_text().contains(text),
    );
}

/// Every purchase of the input notified exactly once, in the topic too.
fn check_everything_notified(p: &Pipeline) {
    let expected = Expected::from_topic(&p.cluster, &p.topic);
    assert!(!expected.purchases.is_empty());
    check_exactly_once(&expected, &p.notifications()).assert_exactly_once();
    check_exactly_once(&expected, &p.topic_notifications()).assert_exactly_once();
}

#[test]
fn over_mutual_tls_only_workers_signed_by_the_ca_get_partitions() {
    let dir = out_dir("e2e-mtls-certs");
    let certs = make_certs(&dir);
    let c = |name: &str| path(&certs.join(name));
    let security = Security {
        master_args: args(&[
            "--tls-cert",
            &c("master.pem"),
            "--tls-key",
            &c("master.key"),
            "--tls-ca",
            &c("ca.pem"),
        ]),
        worker_args: args(&[
            "--tls-ca",
            &c("ca.pem"),
            "--tls-cert",
            &c("worker.pem"),
            "--tls-key",
            &c("worker.key"),
        ]),
        master_ca: Some(certs.join("ca.pem")),
        ..Security::default()
    };
    let mut p = Pipeline::start_with("e2e-mtls", 6, Cluster::get(), security);

    // Intruders first: none of them may get in.
    p.start_worker_with(
        "rogue",
        &args(&[
            "--tls-ca",
            &c("ca.pem"),
            "--tls-cert",
            &c("rogue-worker.pem"),
            "--tls-key",
            &c("rogue-worker.key"),
        ]),
    );
    p.start_worker_with("no-cert", &args(&["--tls-ca", &c("ca.pem")]));
    let plaintext = p.master_url().replace("https://", "http://");
    p.start_worker_with("plaintext", &args(&["--master", &plaintext]));
    wait_for_log(&mut p, "no-cert", "no client certificate");
    wait_for_log(&mut p, "no-cert", "the master refused this worker");
    // The rogue's handshake fails: it never reaches the Coordinator; the
    // master says why.
    wait_for_log(&mut p, "rogue", "signed by the CA the master trusts");
    let master = p.master.as_ref().unwrap();
    wait_for(
        "the master to log the rogue certificate",
        Duration::from_secs(10),
        || {
            master
                .stderr_text()
                .contains("refused a TLS client certificate")
        },
    );
    wait_for_log(&mut p, "plaintext", "retrying");
    assert!(
        p.worker_ids().is_empty(),
        "an intruder got in: {:?}",
        p.worker_ids()
    );

    p.start_worker("w1");
    p.start_worker("w2");
    p.produce(2_000, 0, 21);
    p.wait_until_committed_to_end(Duration::from_secs(120));
    let mut ids = p.worker_ids();
    ids.sort();
    assert_eq!(ids, ["w1", "w2"]);
    let owners: std::collections::BTreeSet<String> =
        p.assignments().into_iter().map(|a| a.owner).collect();
    assert_eq!(owners.into_iter().collect::<Vec<_>>(), ["w1", "w2"]);
    let stats = p.stats();
    // At least one of the rogue's handshakes and one no-certificate call.
    assert!(stats.auth_refused >= 2, "refusals counted: {stats:?}");
    let scraped = Scrape::get(p.metrics_port);
    assert!(
        scraped.value("cyberday_master_auth_refused_total") >= 2.0,
        "refusals on /metrics"
    );
    for intruder in ["rogue", "no-cert", "plaintext"] {
        assert!(p.worker(intruder).is_running(), "{intruder} keeps retrying");
    }
    p.stop();
    check_everything_notified(&p);
    let notified_by: std::collections::BTreeSet<String> =
        p.notifications().into_iter().map(|n| n.worker).collect();
    assert_eq!(notified_by.into_iter().collect::<Vec<_>>(), ["w1", "w2"]);
    eprintln!(
        "mTLS: {} records, refusals counted {}",
        stats.records_processed, stats.auth_refused
    );
}

#[test]
fn in_plaintext_the_token_is_required_and_max_workers_holds() {
    let dir = out_dir("e2e-token-files");
    let token = format!("tok-{}", unique("x").replace('-', ""));
    let (good, bad) = (dir.join("token"), dir.join("wrong-token"));
    std::fs::write(&good, format!("{token}\n")).unwrap();
    std::fs::write(&bad, "not-the-token").unwrap();
    let security = Security {
        master_args: args(&["--token-file", &path(&good), "--max-workers", "1"]),
        worker_args: args(&["--token-file", &path(&good)]),
        ..Security::default()
    };
    let mut p = Pipeline::start_with("e2e-token", 6, Cluster::get(), security);

    p.start_worker_with("no-token", &[]);
    p.start_worker_with("wrong-token", &args(&["--token-file", &path(&bad)]));
    wait_for_log(&mut p, "no-token", "no worker token");
    wait_for_log(&mut p, "no-token", "Unauthenticated");
    wait_for_log(&mut p, "wrong-token", "wrong worker token");
    wait_for_log(&mut p, "wrong-token", "PermissionDenied");
    assert!(p.worker_ids().is_empty(), "got in: {:?}", p.worker_ids());

    p.start_worker("w1");
    wait_for("w1 to own every partition", Duration::from_secs(30), || {
        let a = p.assignments();
        a.len() == 6 && a.iter().all(|a| a.owner == "w1")
    });
    // One worker too many: refused, it retries with backoff.
    p.start_worker("w2");
    wait_for_log(&mut p, "w2", "--max-workers 1");
    wait_for_log(&mut p, "w2", "ResourceExhausted");
    assert_eq!(p.worker_ids(), ["w1"]);
    let mut producer = p.produce_in_background(2_000, 1_000, 5);

    // A place frees: the waiting worker gets in by itself.
    assert!(p.worker("w1").terminate(Duration::from_secs(15)));
    wait_for("w2 to take over", Duration::from_secs(30), || {
        p.worker_ids() == ["w2"]
    });
    assert!(producer.child.wait().unwrap().success());
    p.wait_until_committed_to_end(Duration::from_secs(120));
    let stats = p.stats();
    assert!(stats.auth_refused >= 2, "refusals counted: {stats:?}");
    p.stop();
    check_everything_notified(&p);
    assert_no_secret_in_logs(&p.dir, &[&token]);
}
