//! Kafka with SASL_SSL: the test starts its own 3-node cluster through
//! `deploy/local/kafka.sh` (KAFKA_SECURITY=sasl_ssl, ports 29092-29094,
//! internal PLAINTEXT 29292-29294) and stops it at the end. The producer,
//! the master and two workers read their credentials from a file
//! (`--kafka-options-file`); the full pipeline runs on them. With a wrong
//! password every process stops within the connect timeout, saying so,
//! having processed nothing. No password and no worker token appears in any
//! process's output.
//!
//! The harness's own reads (expected records, committed offsets, output
//! topics) use the brokers' internal PLAINTEXT listener: an independent view.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::*;

const PORT_BASE: u16 = 29092;
const CONNECT_TIMEOUT: &str = "10s";

fn ports(base: u16) -> String {
    (0..3)
        .map(|n| format!("127.0.0.1:{}", base + n))
        .collect::<Vec<_>>()
        .join(",")
}

/// `deploy/local/kafka.sh` for this test's SASL_SSL cluster.
fn kafka_sh(args: &[&str]) -> Command {
    let mut c = Command::new(repo_root().join("deploy/local/kafka.sh"));
    c.args(args)
        .env("KAFKA_PORT_BASE", PORT_BASE.to_string())
        .env("KAFKA_SECURITY", "sasl_ssl")
        .env("KAFKA_HEAP", "384m")
        .env_remove("KAFKA_STATE_DIR")
        .env_remove("KAFKA_CONTROLLER_BASE")
        .env_remove("KAFKA_INTERNAL_BASE");
    c
}

/// The cluster, stopped when dropped (also when the test fails).
struct SaslCluster {
    client_properties: PathBuf,
}

impl SaslCluster {
    fn start() -> Self {
        // Whatever an interrupted run left on these ports goes first.
        let _ = kafka_sh(&["down"]).output();
        let started = Instant::now();
        run_ok(
            &mut kafka_sh(&["up", "--fresh"]),
            "`KAFKA_SECURITY=sasl_ssl KAFKA_PORT_BASE=29092 deploy/local/kafka.sh up --fresh` \
             (needs Java 17 and Kafka's jars; see README)",
        );
        eprintln!("SASL_SSL cluster up in {:.1?}", started.elapsed());
        let out = run_ok(
            &mut kafka_sh(&["client-properties"]),
            "kafka.sh client-properties",
        );
        let client_properties = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        Self { client_properties }
    }
}

impl Drop for SaslCluster {
    fn drop(&mut self) {
        let _ = kafka_sh(&["down"]).stdout(Stdio::null()).output();
    }
}

fn property(file: &Path, key: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {key} in {}", file.display()))
}

/// Runs `program` with `args` (output to files in `dir`, as every process
/// of the test) and expects it to fail within the connect timeout and to
/// say that Kafka refused the credentials.
fn fails_on_credentials(dir: &Path, name: &str, program: &str, args: &[String]) {
    let started = Instant::now();
    let mut p = Proc::spawn(name, dir, &bin(program), args);
    let status = loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name} still running {:?} after a refused login",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    let stderr = p.stderr_text();
    assert!(!status.success(), "{name} succeeded with a wrong password");
    assert!(
        stderr.contains("refused this client's credentials") && stderr.contains("sasl.password"),
        "{name} does not say what is wrong:\n{stderr}"
    );
    assert!(took < Duration::from_secs(12), "{name} took {took:?}");
    eprintln!("{name}: refused credentials reported after {took:.1?}");
}

#[test]
fn the_pipeline_runs_on_sasl_ssl_and_wrong_credentials_fail_fast() {
    let cluster = SaslCluster::start();
    let props = cluster.client_properties.clone();
    let password = property(&props, "sasl.password");
    assert!(password.len() >= 16);

    let dir = out_dir("e2e-sasl-files");
    let token = format!("sasl-test-token-{}", std::process::id());
    let token_file = dir.join("token");
    std::fs::write(&token_file, &token).unwrap();
    let wrong_password = format!("wrong-{password}-wrong");
    let wrong = dir.join("wrong.properties");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&props)
            .unwrap()
            .replace(&password, &wrong_password),
    )
    .unwrap();

    let as_str = |p: &Path| p.to_str().unwrap().to_owned();
    let security = Security {
        bootstrap: Some(ports(PORT_BASE)),
        kafka_args: vec!["--kafka-options-file".into(), as_str(&props)],
        master_args: vec!["--token-file".into(), as_str(&token_file)],
        worker_args: vec!["--token-file".into(), as_str(&token_file)],
        master_ca: None,
    };
    let harness_view = Cluster {
        bootstrap: ports(PORT_BASE + 200),
    };
    let mut p = Pipeline::start_with("e2e-sasl", 6, harness_view, security);

    // Wrong credentials: each process stops at once, having done nothing.
    let bad = |extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "--bootstrap-servers".into(),
            ports(PORT_BASE),
            "--kafka-options-file".into(),
            as_str(&wrong),
            "--connect-timeout".into(),
            CONNECT_TIMEOUT.into(),
            "--topic".into(),
            p.topic.clone(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let bad_group = format!("{}-bad", p.group);
    fails_on_credentials(
        &p.dir,
        "producer-bad",
        "producer",
        &bad(&["--count", "100"]),
    );
    fails_on_credentials(
        &p.dir,
        "master-bad",
        "master",
        &bad(&[
            "--listen",
            "127.0.0.1:0",
            "--group",
            &bad_group,
            "--transactional-id",
            &bad_group,
        ]),
    );
    fails_on_credentials(
        &p.dir,
        "worker-bad",
        "worker",
        &bad(&[
            "--master",
            &p.master_url(),
            "--token-file",
            &as_str(&token_file),
        ]),
    );
    assert!(
        end_offsets(&p.cluster, &p.topic).values().all(|&o| o == 0),
        "the refused producer wrote records"
    );
    assert!(committed_offsets(&p.cluster, &p.topic, &bad_group).is_empty());
    let master_bad_stdout = std::fs::read_to_string(p.dir.join("master-bad.stdout")).unwrap();
    assert!(master_bad_stdout.is_empty(), "the refused master notified");
    assert!(p.worker_ids().is_empty(), "the refused worker joined");

    // The right credentials, from the file: the whole pipeline.
    p.start_worker("w1");
    p.start_worker("w2");
    let produced = p.produce(3_000, 0, 77);
    let producer_output = [produced.stdout, produced.stderr].concat();
    let producer_output = String::from_utf8_lossy(&producer_output);
    assert!(!producer_output.contains(&password) && !producer_output.contains(&token));
    p.wait_until_committed_to_end(Duration::from_secs(90));
    let mut ids = p.worker_ids();
    ids.sort();
    assert_eq!(ids, ["w1", "w2"]);
    p.stop();
    let expected = Expected::from_topic(&p.cluster, &p.topic);
    check_exactly_once(&expected, &p.notifications()).assert_exactly_once();
    check_exactly_once(&expected, &p.topic_notifications()).assert_exactly_once();
    assert_eq!(check_dead_letters(&p.cluster, &p.topic, &expected), 0);
    eprintln!(
        "SASL_SSL: {} purchases notified exactly once, {} dead letters",
        expected.purchases.len(),
        expected.invalid.len()
    );

    assert_no_secret_in_logs(&p.dir, &[&password, &wrong_password, &token]);
}
