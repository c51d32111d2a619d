//! 5,000 shoppers through the whole system into a real Mailpit: producer →
//! master + 2 workers → notifications topic → delivery → SMTP. Mailpit must
//! hold exactly one e-mail per valid purchase of the input (matched by
//! Message-ID and folio), to the shopper's address, with its kind's Spanish
//! subject, plain-text and HTML parts, and none for the rest.

mod support;

use std::collections::BTreeMap;

use common::classify::Kind;
use e2e::{free_port, Proc};
use support::*;

#[test]
fn five_thousand_records_one_email_per_purchase() {
    let (p, expected) = filled_notifications("delivery-e2e", 5_000, 2027);
    let e = e2e::Expected::from_topic(&p.cluster, &p.topic);
    assert_eq!(e.purchases.len() + e.no_purchase + e.invalid.len(), 5_000);
    assert!(e.no_purchase > 0 && !e.invalid.is_empty());
    assert_eq!(expected.len(), e.purchases.len());

    let mut mailpit = Mailpit::start(&p.dir, "mailpit", &[]);
    let group = delivery_group(&p);
    let metrics_port = free_port();
    let args = delivery_args(
        &p,
        &mailpit.smtp_url(),
        metrics_port,
        &["--from", "Cyberday <notificaciones@cyberday.example>"],
    );
    let mut delivery = Proc::spawn("delivery", &p.dir, &delivery_bin(), &args);
    let want = expected.len() as u64;
    let scrape = finish_delivery(
        &mut mailpit,
        &mut delivery,
        (&p.cluster, &p.notifications_topic, &group),
        want,
        Some(metrics_port),
    )
    .unwrap();

    let mails = mailpit.api.messages();
    assert_eq!(
        mails.len() as u64,
        want,
        "exactly one e-mail per valid purchase"
    );
    let mut by_folio: BTreeMap<String, Vec<&Mail>> = BTreeMap::new();
    for m in &mails {
        let folio = m.folio_header.clone().expect("X-Cyberday-Folio");
        by_folio.entry(folio).or_default().push(m);
    }
    assert_eq!(by_folio.len(), expected.len(), "one folio per e-mail");
    for (folio, (kind, purchase)) in &expected {
        let got = by_folio
            .get(folio)
            .unwrap_or_else(|| panic!("no e-mail for folio {folio}"));
        assert_eq!(got.len(), 1, "folio {folio} sent {} times", got.len());
        let m = got[0];
        assert_eq!(m.message_id, format!("{folio}@notificaciones.cyberday"));
        assert_eq!(m.to, std::slice::from_ref(&purchase.email), "{folio}");
        assert_eq!(m.from, "notificaciones@cyberday.example");
        assert_eq!(m.kind_header.as_deref(), Some(kind.as_str()), "{folio}");
        assert_eq!(m.subject, common::notify::render_subject(*kind, purchase));
        let sentence = common::notify::render_text(*kind, purchase);
        // MIME lines end in CRLF on the wire.
        assert_eq!(
            m.text.replace("\r\n", "\n").trim_end(),
            format!("{sentence}\n\nEquipo Cyberday"),
            "{folio}"
        );
        assert_eq!(
            m.html.replace("\r\n", "\n").trim_end(),
            common::notify::render_html(*kind, purchase).trim_end()
        );
        match kind {
            Kind::Short => assert!(sentence.contains("Sigue aprovechando"), "{sentence}"),
            Kind::Long => assert!(sentence.contains("Cuéntanos qué salió mal"), "{sentence}"),
        }
        assert!(sentence.contains(&purchase.nombre) && sentence.contains(&purchase.productovisto));
        assert!(
            m.content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("multipart/alternative")),
            "{folio}: {:?}",
            m.content_type
        );
    }

    let short = expected.values().filter(|(k, _)| *k == Kind::Short).count() as f64;
    let long = expected.len() as f64 - short;
    assert_eq!(
        scrape.value("cyberday_delivery_sent_total{channel=\"email\",kind=\"short\"}"),
        short
    );
    assert_eq!(
        scrape.value("cyberday_delivery_sent_total{channel=\"email\",kind=\"long\"}"),
        long
    );
    assert_eq!(
        scrape.value("cyberday_delivery_latency_seconds_count"),
        expected.len() as f64
    );
    assert!(
        scrape
            .family("cyberday_delivery_dead_letters_total")
            .is_empty(),
        "no dead letters"
    );
    let lags = scrape.family("cyberday_delivery_partition_lag_records");
    assert!(!lags.is_empty(), "lag per partition is exposed");
    // No address or body in the delivery's logs at info level.
    let log = delivery.stderr_text();
    assert!(log.contains("delivering"), "the log is there: {log}");
    for (folio, (kind, purchase)) in &expected {
        assert!(
            !log.contains(&purchase.email),
            "an address in the log ({folio})"
        );
        assert!(
            !log.contains(&common::notify::render_text(*kind, purchase)),
            "a body in the log"
        );
    }
    println!(
        "delivery-e2e: {} e-mails for {} purchases ({short} short, {long} long), {} no-purchase and {} invalid records without one",
        mails.len(),
        expected.len(),
        e.no_purchase,
        e.invalid.len()
    );
}
