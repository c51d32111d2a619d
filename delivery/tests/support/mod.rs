//! What the delivery tests share: a real Mailpit per test (random loopback
//! ports, in-memory store), its HTTP API, a delivery process, and what the
//! input topic says each e-mail must be.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::classify::{classify, Classification, Kind, Rules};
use common::record::Purchase;
use e2e::{committed_offsets, end_offsets, free_port, read_topic, Cluster, Pipeline, Proc, Scrape};
use serde_json::Value;

/// The `mailpit` binary: on PATH or where `go install` puts it.
pub fn mailpit_bin() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("mailpit"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(gopath) = std::env::var_os("GOPATH") {
        candidates.push(Path::new(&gopath).join("bin/mailpit"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join("go/bin/mailpit"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "mailpit is not installed: run deploy/local/prereqs.sh (or \
                 `go install github.com/axllent/mailpit@v1.33.1`, which puts it in \
                 $(go env GOPATH)/bin)"
            )
        })
}

/// A Mailpit of this test's own: SMTP and HTTP on free loopback ports.
pub struct Mailpit {
    pub proc: Proc,
    pub smtp_port: u16,
    pub api: Api,
}

/// Mailpit's HTTP API.
#[derive(Clone)]
pub struct Api {
    pub http_port: u16,
    http: reqwest::blocking::Client,
}

impl Mailpit {
    /// Starts Mailpit with `extra` flags (e.g. `--enable-chaos`) and waits
    /// until its API answers.
    pub fn start(dir: &Path, name: &str, extra: &[&str]) -> Self {
        let smtp_port = free_port();
        let http_port = free_port();
        let pop3_port = free_port();
        let mut args: Vec<String> = [
            "--smtp",
            &format!("127.0.0.1:{smtp_port}"),
            "--listen",
            &format!("127.0.0.1:{http_port}"),
            // Unused (no --pop3-auth-file), but never on a public interface.
            "--pop3",
            &format!("127.0.0.1:{pop3_port}"),
            "--max",
            "1000000",
            "--disable-version-check",
            "--smtp-auth-accept-any",
            "--smtp-auth-allow-insecure",
            "--quiet",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(name, dir, &mailpit_bin(), &args);
        let mut m = Self {
            proc,
            smtp_port,
            api: Api {
                http_port,
                http: reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap(),
            },
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if m.api.try_get("/api/v1/info").is_ok() {
                return m;
            }
            assert!(
                m.proc.is_running(),
                "mailpit exited:\n{}",
                m.proc.stderr_text()
            );
            assert!(
                Instant::now() < deadline,
                "mailpit did not answer on 127.0.0.1:{http_port} in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.smtp_port)
    }
}

impl Api {
    fn try_get(&self, path: &str) -> reqwest::Result<Value> {
        self.http
            .get(format!("http://127.0.0.1:{}{path}", self.http_port))
            .send()?
            .error_for_status()?
            .json()
    }

    pub fn get(&self, path: &str) -> Value {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("mailpit GET {path}: {e}"))
    }

    pub fn put(&self, path: &str, body: &Value) -> Value {
        self.http
            .put(format!("http://127.0.0.1:{}{path}", self.http_port))
            .json(body)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("mailpit PUT {path}: {e}"))
    }

    /// Messages stored so far.
    pub fn total(&self) -> u64 {
        self.get("/api/v1/messages?limit=1")["total"]
            .as_u64()
            .expect("messages total")
    }

    /// Every stored message, read whole (summary, both parts, headers).
    pub fn messages(&self) -> Vec<Mail> {
        let mut ids = Vec::new();
        let mut start = 0;
        loop {
            let page = self.get(&format!("/api/v1/messages?start={start}&limit=1000"));
            let list = page["messages"].as_array().expect("messages");
            if list.is_empty() {
                break;
            }
            ids.extend(list.iter().map(|m| m["ID"].as_str().unwrap().to_owned()));
            start += list.len();
        }
        ids.iter()
            .map(|id| {
                let m = self.get(&format!("/api/v1/message/{id}"));
                let h = self.get(&format!("/api/v1/message/{id}/headers"));
                let header = |name: &str| {
                    h[name]
                        .as_array()
                        .and_then(|v| v.first())
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                Mail {
                    message_id: m["MessageID"].as_str().unwrap_or_default().to_owned(),
                    to: m["To"]
                        .as_array()
                        .map(|to| {
                            to.iter()
                                .map(|a| a["Address"].as_str().unwrap_or_default().to_owned())
                                .collect()
                        })
                        .unwrap_or_default(),
                    from: m["From"]["Address"].as_str().unwrap_or_default().to_owned(),
                    subject: m["Subject"].as_str().unwrap_or_default().to_owned(),
                    text: m["Text"].as_str().unwrap_or_default().to_owned(),
                    html: m["HTML"].as_str().unwrap_or_default().to_owned(),
                    folio_header: header("X-Cyberday-Folio"),
                    kind_header: header("X-Cyberday-Kind"),
                    content_type: header("Content-Type"),
                }
            })
            .collect()
    }
}

/// One message as Mailpit stored it.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Without the angle brackets, as Mailpit shows it.
    pub message_id: String,
    pub to: Vec<String>,
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub folio_header: Option<String>,
    pub kind_header: Option<String>,
    pub content_type: Option<String>,
}

/// Every valid purchase of the input `topic`, by folio, as the one
/// classification rule sees it (read independently of master and delivery).
pub fn purchases(cluster: &Cluster, topic: &str) -> BTreeMap<String, (Kind, Purchase)> {
    let mut out = BTreeMap::new();
    for r in read_topic(cluster, topic) {
        if let Classification::Purchase { kind, purchase } = classify(&r.value, &Rules::default()) {
            let folio = purchase.folio.clone().expect("a purchase has a folio");
            assert!(
                out.insert(folio.clone(), (kind, purchase)).is_none(),
                "folio {folio} twice in the input"
            );
        }
    }
    out
}

/// A notifications topic filled for real: `records` shoppers (seeded) through
/// the producer, a master and two workers; returns the pipeline (stopped)
/// and every valid purchase of its input.
pub fn filled_notifications(
    test: &str,
    records: u64,
    seed: u64,
) -> (Pipeline, BTreeMap<String, (Kind, Purchase)>) {
    let mut p = Pipeline::start(test, 6);
    p.start_worker("w1");
    p.start_worker("w2");
    p.produce(records, 0, seed);
    p.wait_until_committed_to_end(Duration::from_secs(180));
    p.stop();
    let purchases = purchases(&p.cluster, &p.topic);
    (p, purchases)
}

/// Whether `group` has committed every partition of `topic` to its end.
pub fn committed_to_end(cluster: &Cluster, topic: &str, group: &str) -> bool {
    let end = end_offsets(cluster, topic);
    let done = committed_offsets(cluster, topic, group);
    end.iter().all(|(k, v)| done.get(k) == Some(v))
}

/// Waits until Mailpit holds `want` e-mails and `group` has committed the
/// notifications `topic` to its end, lets anything still on its way
/// arrive, scrapes the delivery's `/metrics` (on `metrics_port`, when
/// given) and stops it, which must exit cleanly.
pub fn finish_delivery(
    mailpit: &mut Mailpit,
    delivery: &mut Proc,
    (cluster, topic, group): (&Cluster, &str, &str),
    want: u64,
    metrics_port: Option<u16>,
) -> Option<Scrape> {
    wait_for(
        "the e-mails in Mailpit and the delivery group committed to the end",
        Duration::from_secs(300),
        &mut [&mut *delivery, &mut mailpit.proc],
        || mailpit.api.total() >= want && committed_to_end(cluster, topic, group),
    );
    std::thread::sleep(Duration::from_secs(2));
    let scrape = metrics_port.map(Scrape::get);
    assert!(
        delivery.terminate(Duration::from_secs(30)),
        "delivery did not exit cleanly:\n{}",
        delivery.stderr_text()
    );
    scrape
}

/// The delivery group of the tests on `p`'s notifications topic.
pub fn delivery_group(p: &Pipeline) -> String {
    format!("{}-delivery", p.topic)
}

/// A delivery process's command line for `p`'s notifications topic into
/// the SMTP server at `smtp_url`.
pub fn delivery_args(
    p: &Pipeline,
    smtp_url: &str,
    metrics_port: u16,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--bootstrap-servers",
        &p.cluster.bootstrap,
        "--notifications-topic",
        &p.notifications_topic,
        "--group",
        &delivery_group(p),
        "--smtp-url",
        smtp_url,
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The `delivery` binary cargo built for these tests (for the benchmark,
/// an example, the one beside it).
pub fn delivery_bin() -> PathBuf {
    option_env!("CARGO_BIN_EXE_delivery").map_or_else(|| e2e::bin("delivery"), PathBuf::from)
}

/// Waits until `done` holds, checking `procs` are still running.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    procs: &mut [&mut Proc],
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        for p in procs.iter_mut() {
            assert!(
                p.is_running(),
                "{} exited while waiting for {what}:\n{}",
                p.name,
                p.stderr_text()
            );
        }
        assert!(Instant::now() < deadline, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
