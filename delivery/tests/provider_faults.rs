//! Provider faults through a real Mailpit: its chaos API answers a share of
//! MAIL FROM with 421 and of RCPT TO with 451 (transient: retried with
//! backoff until delivered), and `--smtp-allowed-recipients` refuses every
//! address beginning with `v` with 550 (permanent: to the dead-letter topic
//! with its reason, never holding up the rest). Malformed notifications
//! written straight into the topic go to the dead-letter topic too. Nothing
//! is lost, and `/metrics` agrees with Mailpit and the DLQ.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e::{free_port, read_topic, Proc};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::json;
use support::*;

#[test]
fn transient_errors_are_retried_and_permanent_ones_dead_lettered() {
    let (p, expected) = filled_notifications("delivery-faults", 2_000, 99);
    // Bad input in the notifications topic: (key, value, reason code).
    let malformed: [(&str, &[u8], &str); 3] = [
        ("XYZ-0001", b"not json at all", "not_json"),
        (
            "XYZ-0002",
            br#"{"kind":"short","folio":"xyz-2","nombre":"A","email":"a@mail.com","productovisto":"B","taps":1.0}"#,
            "bad_folio",
        ),
        (
            "XYZ-0003",
            br#"{"kind":"long","folio":"XYZ-0004","nombre":"A","email":"a@mail.com","productovisto":"B","taps":40.0}"#,
            "key_mismatch",
        ),
    ];
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &p.cluster.bootstrap)
        .create()
        .unwrap();
    for (key, value, _) in &malformed {
        producer
            .send(
                BaseRecord::to(&p.notifications_topic)
                    .key(*key)
                    .payload(*value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let refused = |email: &str| email.starts_with('v');
    let permanent: BTreeSet<&String> = expected
        .iter()
        .filter(|(_, (_, p))| refused(&p.email))
        .map(|(f, _)| f)
        .collect();
    assert!(
        !permanent.is_empty(),
        "the seed gives some addresses beginning with v"
    );
    let deliverable = expected.len() - permanent.len();

    let mut mailpit = Mailpit::start(
        &p.dir,
        "mailpit",
        &["--enable-chaos", "--smtp-allowed-recipients", "^[^v]"],
    );
    let chaos = mailpit.api.put(
        "/api/v1/chaos",
        &json!({
            "Sender": {"ErrorCode": 421, "Probability": 10},
            "Recipient": {"ErrorCode": 451, "Probability": 20},
        }),
    );
    assert_eq!(chaos["Recipient"]["Probability"], 20, "{chaos}");

    let group = delivery_group(&p);
    let metrics_port = free_port();
    let args = delivery_args(
        &p,
        &mailpit.smtp_url(),
        metrics_port,
        &[
            "--max-attempts",
            "30",
            "--retry-for",
            "60s",
            "--retry-min-delay",
            "10ms",
            "--retry-max-delay",
            "200ms",
        ],
    );
    let mut delivery = Proc::spawn("delivery", &p.dir, &delivery_bin(), &args);
    let scrape = finish_delivery(
        &mut mailpit,
        &mut delivery,
        (&p.cluster, &p.notifications_topic, &group),
        deliverable as u64,
        Some(metrics_port),
    )
    .unwrap();

    // Mailpit: each deliverable purchase once, none of the refused.
    let mails = mailpit.api.messages();
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for m in &mails {
        *sent.entry(m.folio_header.clone().unwrap()).or_default() += 1;
    }
    assert_eq!(
        mails.len(),
        deliverable,
        "one e-mail per deliverable purchase"
    );
    for (folio, (_, purchase)) in &expected {
        let n = sent.get(folio).copied().unwrap_or(0);
        let want = usize::from(!refused(&purchase.email));
        assert_eq!(n, want, "{folio} sent {n} times");
    }

    // The DLQ: the refused purchases with their 550, the malformed records.
    let dlq = read_topic(&p.cluster, &format!("{}.DLQ", p.notifications_topic));
    let mut reasons: BTreeMap<String, String> = BTreeMap::new();
    for r in &dlq {
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        let reason = r.header("cyberday.reason").expect("a reason header");
        assert!(r.header("cyberday.source.offset").is_some());
        assert!(
            reasons.insert(key.clone(), reason).is_none(),
            "{key} dead-lettered twice"
        );
    }
    for folio in &permanent {
        assert_eq!(
            reasons.get(*folio).map(String::as_str),
            Some("smtp_550"),
            "{folio}"
        );
    }
    for (key, _, reason) in &malformed {
        assert_eq!(
            reasons.get(*key).map(String::as_str),
            Some(*reason),
            "{key}"
        );
    }
    assert_eq!(dlq.len(), permanent.len() + malformed.len());

    // /metrics agrees with Mailpit and the DLQ.
    let sent_total: f64 = scrape.family("cyberday_delivery_sent_total").values().sum();
    assert_eq!(sent_total, deliverable as f64);
    let dead = scrape.family("cyberday_delivery_dead_letters_total");
    let dead_total: f64 = dead.values().sum();
    assert_eq!(dead_total, dlq.len() as f64, "{dead:?}");
    assert_eq!(
        scrape.value("cyberday_delivery_dead_letters_total{reason=\"smtp_550\"}"),
        permanent.len() as f64
    );
    let failures = scrape.family("cyberday_delivery_failures_total");
    let failed_on = |channel: &str, reason: &str| {
        scrape.value(&format!(
            "cyberday_delivery_failures_total{{channel=\"{channel}\",reason=\"{reason}\"}}"
        ))
    };
    let failed = |reason: &str| failed_on("email", reason);
    assert!(
        failed("smtp_451") > 0.0 && failed("smtp_421") > 0.0,
        "{failures:?}"
    );
    assert_eq!(failed("smtp_550"), permanent.len() as f64, "{failures:?}");
    // Bad input never reached a channel.
    for (_, _, reason) in &malformed {
        assert_eq!(failed_on("none", reason), 1.0, "{failures:?}");
    }
    // Every transient failure was followed by a retry: none ran out.
    let transient = failures.values().sum::<f64>() - failed("smtp_550") - malformed.len() as f64;
    let retries = scrape.value("cyberday_delivery_retries_total{channel=\"email\"}");
    assert_eq!(retries, transient, "{failures:?}");
    println!(
        "delivery-faults: {} purchases: {deliverable} delivered through {transient} transient SMTP errors ({retries} retries), {} refused with 550 and {} malformed records in the DLQ; failures {failures:?}",
        expected.len(),
        permanent.len(),
        malformed.len()
    );
}
