//! Hostile input end to end: records no well-behaved producer writes (empty,
//! null, not UTF-8, not JSON, 10,000 levels of nesting, a ~900 KB field,
//! `1e999`, duplicated keys, headers already set, …) are produced raw into
//! the pipeline's topic between valid ones. Every invalid record must land in
//! `<topic>.DLQ` exactly once with its reason code, its value, key and
//! original headers intact; every valid one must be notified exactly once;
//! the worker must neither crash nor stall.
//!
//! Unknown extra fields are tolerated (the classifier skips them, see
//! `common::record`), so a record that carries some is a valid purchase.

use std::collections::HashMap;
use std::time::Duration;

use common::classify::{classify, Classification, Kind, Rules};
use common::record::{Purchase, Ubicacion};
use e2e::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use serde_json::{json, Value};

const PARTITIONS: i32 = 3;

/// The headers the pipeline adds to a dead letter.
const REASON: &str = "cyberday.reason";
const DETAIL: &str = "cyberday.detail";
const SOURCE_TOPIC: &str = "cyberday.source.topic";
const SOURCE_PARTITION: &str = "cyberday.source.partition";
const SOURCE_OFFSET: &str = "cyberday.source.offset";

/// Size of the oversized string field: far above the classifier's 64 KiB
/// record limit, below the 1 MB a topic with default settings accepts.
const HUGE_FIELD_BYTES: usize = 900 * 1000;

/// What the pipeline must do with a case.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Notified(Kind),
    NoPurchase,
    /// Dead-lettered with this `cyberday.reason` code.
    Dead(&'static str),
}

/// One raw record to produce. The key names the case, except for the
/// null-key case, which is found by where it was written.
struct Case {
    name: &'static str,
    null_key: bool,
    /// `None`: a record without a value at all (a tombstone).
    value: Option<Vec<u8>>,
    /// `None` values are null headers.
    headers: Vec<(&'static str, Option<Vec<u8>>)>,
    outcome: Outcome,
}

impl Case {
    fn new(name: &'static str, value: impl Into<Vec<u8>>, outcome: Outcome) -> Self {
        Self {
            name,
            null_key: false,
            value: Some(value.into()),
            headers: vec![],
            outcome,
        }
    }

    fn key(&self) -> Option<&[u8]> {
        (!self.null_key).then_some(self.name.as_bytes())
    }

    /// The headers as a consumer reads them back (a null header reads as empty).
    fn headers_as_read(&self) -> Vec<(String, Vec<u8>)> {
        self.headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone().unwrap_or_default()))
            .collect()
    }
}

/// A well-formed record numbered `n`: a purchase (with folio `HST-nnnn`)
/// when `taps` is positive, a visit without purchase otherwise.
fn purchase(n: u32, taps: Option<f64>) -> Purchase {
    Purchase {
        id: format!("{:024x}", 0x00C0_FFEE_0000_u64 + u64::from(n)),
        nombre: "Valentina".into(),
        apellido: "Rojas".into(),
        edad: 34,
        email: "valentina.rojas@mail.com".into(),
        telefono: "+56 912-345-6789".into(),
        ubicacion: Ubicacion {
            direccion: "Av. Providencia 1234".into(),
            ciudad: "Santiago".into(),
            pais: "Chile".into(),
        },
        productovisto: "Colchón".into(),
        taps,
        folio: taps.filter(|t| *t > 0.0).map(|_| format!("HST-{n:04}")),
    }
}

fn to_json(p: &Purchase) -> Vec<u8> {
    serde_json::to_vec(p).unwrap()
}

/// Record `n` as JSON with `taps` and `folio` written as the given literal
/// text, for numbers `serde_json::Value` cannot hold (`1e999`, `-0`, `NaN`).
fn with_literals(n: u32, taps: &str, folio: &str) -> Vec<u8> {
    let mut v = serde_json::to_value(purchase(n, Some(1.0))).unwrap();
    v["taps"] = json!("@TAPS@");
    v["folio"] = json!("@FOLIO@");
    v.to_string()
        .replace("\"@TAPS@\"", taps)
        .replace("\"@FOLIO@\"", folio)
        .into_bytes()
}

/// Record `n` (a short purchase) with `edits` applied to its JSON object.
fn edited(n: u32, edits: &[(&str, Value)]) -> Vec<u8> {
    let mut v = serde_json::to_value(purchase(n, Some(12.3))).unwrap();
    for (key, value) in edits {
        v[*key] = value.clone();
    }
    serde_json::to_vec(&v).unwrap()
}

fn valid(name: &'static str, n: u32, taps: Option<f64>) -> Case {
    let outcome = match taps {
        Some(t) if t >= 30.0 => Outcome::Notified(Kind::Long),
        Some(t) if t > 0.0 => Outcome::Notified(Kind::Short),
        _ => Outcome::NoPurchase,
    };
    Case::new(name, to_json(&purchase(n, taps)), outcome)
}

/// Valid records first and last (one per partition, so every partition has
/// valid work queued behind the hostile records), hostile ones in between.
fn cases() -> Vec<Case> {
    use Outcome::*;
    let short = Notified(Kind::Short);

    let valid_json = to_json(&purchase(100, Some(12.3)));
    let mut not_utf8 = valid_json.clone();
    // Inside the nombre string: only the byte encoding is wrong.
    let at = valid_json
        .windows(9)
        .position(|w| w == b"Valentina")
        .unwrap();
    not_utf8[at + 1] = 0xff;
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let nested_unknown = String::from_utf8(edited(114, &[])).unwrap().replacen(
        '{',
        &format!("{{\"x\":{nested},"),
        1,
    );
    let huge = edited(
        101,
        &[("productovisto", json!("x".repeat(HUGE_FIELD_BYTES)))],
    );
    let dup_text = String::from_utf8(edited(102, &[])).unwrap();
    let duplicated = dup_text.replacen('{', r#"{"taps":45.0,"#, 1);
    let unknown = edited(
        103,
        &[
            ("canal", json!({"web": [1, 2, {"deep": null}]})),
            ("x-extra", json!(null)),
            ("cupón", json!("CYBER-10")),
        ],
    );
    let control_chars = edited(
        104,
        &[
            ("nombre", json!("Ana\nMaría\r\u{1b}[31m")),
            ("productovisto", json!("Sofá\u{2028}cama\t")),
        ],
    );

    let mut null_value = Case::new("null-value", vec![], Dead("empty"));
    null_value.value = None;
    let mut null_key = valid("null-key", 105, Some(7.5));
    null_key.null_key = true;
    let mut with_headers = Case::new(
        "headers-already-set",
        edited(106, &[("folio", json!("abc-12"))]),
        Dead("bad_folio"),
    );
    with_headers.headers = vec![
        (
            "traceparent",
            Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec()),
        ),
        ("binary", Some(vec![0x00, 0xff, 0xfe, b'\n'])),
        ("empty", Some(vec![])),
        ("null", None),
        ("repeated", Some(b"first".to_vec())),
        ("repeated", Some(b"second".to_vec())),
    ];
    // A record replayed from an earlier dead-letter topic already carries our
    // reason headers, with stale values.
    let mut redriven = Case::new(
        "redriven-from-dlq",
        with_literals(107, "-3.5", "null"),
        Dead("bad_taps"),
    );
    redriven.headers = vec![
        (REASON, Some(b"not_json".to_vec())),
        (DETAIL, Some(b"stale detail from an earlier run".to_vec())),
    ];

    vec![
        valid("valid-before-short", 1, Some(3.2)),
        valid("valid-before-long", 2, Some(41.0)),
        valid("valid-before-no-purchase", 3, None),
        Case::new("empty-value", vec![], Dead("empty")),
        null_value,
        Case::new("not-utf8", not_utf8, Dead("not_utf8")),
        Case::new(
            "truncated-json",
            &valid_json[..valid_json.len() / 2],
            Dead("not_json"),
        ),
        Case::new("json-array", &b"[1,2,3]"[..], Dead("not_object")),
        Case::new("json-string", &b"\"hola\""[..], Dead("not_object")),
        Case::new("json-number", &b"42"[..], Dead("not_object")),
        // Valid JSON, just not an object; checked without recursion.
        Case::new("nested-10000-arrays", nested.clone(), Dead("not_object")),
        Case::new(
            "nested-10000-unclosed",
            "[".repeat(10_000),
            Dead("not_json"),
        ),
        // Skipped like any unknown field, however deep.
        Case::new("nested-in-unknown-field", nested_unknown, short),
        Case::new("huge-string-field", huge, Dead("oversized")),
        // Out of f64 range: serde_json refuses it as a number.
        Case::new(
            "taps-1e999",
            with_literals(108, "1e999", "\"HST-0108\""),
            Dead("not_json"),
        ),
        Case::new(
            "taps-minus-zero-with-folio",
            with_literals(109, "-0", "\"HST-0109\""),
            Dead("folio_without_purchase"),
        ),
        Case::new(
            "taps-minus-zero-no-folio",
            with_literals(110, "-0", "null"),
            NoPurchase,
        ),
        Case::new(
            "taps-nan-string",
            with_literals(111, "\"NaN\"", "\"HST-0111\""),
            Dead("missing_or_mistyped"),
        ),
        Case::new(
            "taps-bare-nan",
            with_literals(112, "NaN", "\"HST-0112\""),
            Dead("not_json"),
        ),
        Case::new(
            "taps-string",
            with_literals(113, "\"12.5\"", "\"HST-0113\""),
            Dead("missing_or_mistyped"),
        ),
        Case::new("duplicated-key", duplicated, Dead("missing_or_mistyped")),
        Case::new("unknown-fields", unknown, short),
        null_key,
        Case::new("control-characters", control_chars, short),
        with_headers,
        redriven,
        valid("valid-after-short", 4, Some(29.9)),
        valid("valid-after-long", 5, Some(30.0)),
        valid("valid-after-no-purchase", 6, Some(0.0)),
    ]
}

fn outcome_of(value: &[u8]) -> Outcome {
    match classify(value, &Rules::default()) {
        Classification::Purchase { kind, .. } => Outcome::Notified(kind),
        Classification::NoPurchase(_) => Outcome::NoPurchase,
        Classification::Invalid(reason) => Outcome::Dead(reason.code()),
    }
}

/// Writes every case, in order, case `i` to partition `i % PARTITIONS`;
/// returns where each landed.
fn produce(bootstrap: &str, topic: &str, cases: &[Case]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("test producer");
    block_on(async {
        let mut written = Vec::with_capacity(cases.len());
        for (i, case) in cases.iter().enumerate() {
            let mut headers = OwnedHeaders::new();
            for (key, value) in &case.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(topic)
                .partition(i as i32 % PARTITIONS)
                .headers(headers);
            if let Some(key) = case.key() {
                record = record.key(key);
            }
            if let Some(value) = &case.value {
                record = record.payload(value);
            }
            // One at a time: the order within each partition is the list's.
            let delivery = producer
                .send(record, Timeout::After(Duration::from_secs(30)))
                .await
                .unwrap_or_else(|(e, _)| panic!("producing {}: {e}", case.name));
            written.push((delivery.partition, delivery.offset));
        }
        written
    })
}

fn last_header(r: &Record, name: &str) -> Option<String> {
    r.headers
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn hostile_records_are_dead_lettered_and_valid_ones_notified_once() {
    let cases = cases();
    for case in &cases {
        let got = outcome_of(case.value.as_deref().unwrap_or_default());
        assert_eq!(got, case.outcome, "classify disagrees on {}", case.name);
    }
    let count = |f: fn(&Outcome) -> bool| cases.iter().filter(|c| f(&c.outcome)).count();
    let n_dead = count(|o| matches!(o, Outcome::Dead(_)));
    let n_short = count(|o| *o == Outcome::Notified(Kind::Short));
    let n_long = count(|o| *o == Outcome::Notified(Kind::Long));
    let n_no_purchase = count(|o| *o == Outcome::NoPurchase);

    let mut p = Pipeline::start("e2e-hostile", PARTITIONS);
    p.start_worker("w1");
    let at = produce(&p.cluster.bootstrap, &p.topic, &cases);
    let case_at: HashMap<(i32, i64), &Case> = at.iter().copied().zip(&cases).collect();
    assert_eq!(case_at.len(), cases.len());

    p.wait_until_committed_to_end(Duration::from_secs(120));
    let stats = p.stats();
    let worker = p.worker("w1");
    assert!(
        worker.is_running(),
        "the worker died on hostile input:\n{}",
        worker.stderr_text()
    );
    p.stop();
    for proc in p.workers.iter().chain(&p.master) {
        let log = proc.stderr_text();
        assert!(!log.contains("panicked"), "{} panicked:\n{log}", proc.name);
    }

    // The input, read back independently, is what was written.
    let expected = Expected::from_topic(&p.cluster, &p.topic);
    assert_eq!(expected.invalid.len(), n_dead);
    assert_eq!(expected.purchases.len(), n_short + n_long);
    assert_eq!(expected.no_purchase, n_no_purchase);

    // Valid purchases: notified exactly once, and nothing else is.
    let notified = p.notifications();
    check_exactly_once(&expected, &notified).assert_exactly_once();
    assert_eq!(notified.len(), n_short + n_long);
    for (case, at) in cases.iter().zip(&at) {
        let times = notified
            .iter()
            .filter(|n| (n.partition, n.offset) == *at)
            .count();
        let want = usize::from(matches!(case.outcome, Outcome::Notified(_)));
        assert_eq!(times, want, "{} notified {times} times", case.name);
    }

    // Invalid records: each in the DLQ exactly once, intact, with its reason.
    assert_eq!(
        check_dead_letters(&p.cluster, &p.topic, &expected),
        0,
        "no DLQ duplicates"
    );
    let dlq = read_topic(&p.cluster, &format!("{}.DLQ", p.topic));
    let mut letters: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in &dlq {
        let source = |name| {
            last_header(r, name)
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("DLQ record without {name}: {r:?}"))
        };
        let from = (source(SOURCE_PARTITION) as i32, source(SOURCE_OFFSET));
        let case = case_at
            .get(&from)
            .unwrap_or_else(|| panic!("DLQ record from {from:?}, which was not produced"));
        letters.entry(case.name).or_default().push(r);
    }
    assert_eq!(dlq.len(), n_dead, "DLQ holds {} records", dlq.len());
    for case in &cases {
        let found = letters.get(case.name).map_or(0, Vec::len);
        let Outcome::Dead(code) = case.outcome else {
            assert_eq!(found, 0, "valid {} is in the DLQ", case.name);
            continue;
        };
        assert_eq!(found, 1, "{} is in the DLQ {found} times", case.name);
        let r = letters[case.name][0];
        let name = case.name;
        assert_eq!(last_header(r, REASON).as_deref(), Some(code), "{name}");
        assert_eq!(
            last_header(r, SOURCE_TOPIC).as_deref(),
            Some(p.topic.as_str()),
            "{name}"
        );
        let detail = last_header(r, DETAIL).unwrap_or_default();
        assert!(
            !detail.is_empty() && detail.len() <= 512,
            "{name}: detail of {} bytes: {detail:.200}",
            detail.len()
        );
        assert!(
            r.value == case.value.clone().unwrap_or_default(),
            "{name}: value changed ({} bytes instead of {})",
            r.value.len(),
            case.value.as_ref().map_or(0, Vec::len)
        );
        assert_eq!(r.key.as_deref(), case.key(), "{name}: key changed");
        // The original headers first, unchanged and in order, then exactly ours.
        let original = case.headers_as_read();
        assert!(
            r.headers.len() == original.len() + 5 && r.headers[..original.len()] == original[..],
            "{name}: original headers {original:?} not kept in {:?}",
            r.headers
        );
        let mut ours: Vec<&str> = r.headers[original.len()..]
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        let mut want = [
            REASON,
            DETAIL,
            SOURCE_TOPIC,
            SOURCE_PARTITION,
            SOURCE_OFFSET,
        ];
        ours.sort_unstable();
        want.sort_unstable();
        assert_eq!(ours, want, "{name}: our headers");
    }

    // The master counted what it saw.
    assert_eq!(stats.records_processed, cases.len() as u64);
    assert_eq!(stats.invalid, n_dead as u64);
    assert_eq!(stats.notifications_short, n_short as u64);
    assert_eq!(stats.notifications_long, n_long as u64);
    assert_eq!(stats.no_purchase, n_no_purchase as u64);
    assert_eq!(stats.duplicates_suppressed, 0);
}
