//! One broker of three dies while the producer runs: with acks=all, RF 3 and
//! min.insync.replicas=2, every record is still delivered exactly as generated.
//! (Its own test binary, so no other test shares the cluster while a node is down.)

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use producer::generate::{Generator, Ratios};
use support::*;

fn kafka_sh(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/kafka.sh");
    let port_base = std::env::var("KAFKA_PORT_BASE").unwrap_or_else(|_| "27092".into());
    let status = Command::new("bash")
        .arg(&script)
        .args(args)
        .env("KAFKA_PORT_BASE", port_base)
        .status()
        .expect("running deploy/local/kafka.sh");
    assert!(status.success(), "kafka.sh {args:?} failed");
}

/// Brings the killed node back even when an assertion fails, so later tests
/// find three nodes.
struct Restart(&'static str);

impl Drop for Restart {
    fn drop(&mut self) {
        kafka_sh(&["start", self.0]);
    }
}

#[test]
fn no_record_is_lost_when_a_broker_dies_mid_stream() {
    let bootstrap = bootstrap();
    let topic = unique_topic("broker-loss");
    const N: usize = 15_000;
    let child = Command::new(env!("CARGO_BIN_EXE_producer"))
        .args(["--bootstrap-servers", &bootstrap, "--topic", &topic])
        .args(["--count", "15000", "--rate", "2000", "--seed", "99"])
        .args([
            "--no-purchase-ratio",
            "0.3",
            "--long-ratio",
            "0.2",
            "--invalid-ratio",
            "0.02",
        ])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the producer");

    std::thread::sleep(Duration::from_secs(2));
    let restart = Restart("2");
    kafka_sh(&["kill", "2"]);
    std::thread::sleep(Duration::from_secs(3));
    drop(restart); // node 2 comes back while the producer is still running

    let out = child.wait_with_output().expect("producer output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "producer failed:\n{stderr}");
    let summary = summary_counts(&out.stderr);
    assert_eq!(summary["sent"], N as u64, "{stderr}");
    assert_eq!(summary["failed"], 0, "{stderr}");

    // Exactly the generated records, each once.
    let mut expected: HashMap<(Vec<u8>, Vec<u8>), i32> = HashMap::new();
    let mut generator = Generator::new(99, Ratios::new(0.3, 0.2, 0.02).unwrap());
    for _ in 0..N {
        let r = generator.next_record();
        *expected.entry((r.key.into_bytes(), r.value)).or_default() += 1;
    }
    let seen = read_all(&bootstrap, &topic, N, Duration::from_secs(90));
    assert_eq!(seen.len(), N, "records read back");
    let mut got: HashMap<(Vec<u8>, Vec<u8>), i32> = HashMap::new();
    for s in seen {
        *got.entry((s.key.unwrap_or_default(), s.value)).or_default() += 1;
    }
    assert!(
        got == expected,
        "the records read back differ from those generated"
    );
}
