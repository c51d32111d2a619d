//! The retry policy and the token bucket against a real Mailpit, in
//! process (no Kafka): a recipient that always gets a 451 is tried exactly
//! `--max-attempts` times, or stopped by `--retry-for`, then dead-lettered
//! as `retries_exhausted`; `--max-per-second` holds the send rate.

mod support;

use std::time::{Duration, Instant};

use common::classify::Kind;
use delivery::deliver::{Deliverer, Outcome, Policy};
use delivery::email::Mailer;
use delivery::metrics::Metrics;
use delivery::notice::Notice;
use serde_json::json;
use support::Mailpit;

fn notice(folio: &str) -> Notice {
    Notice {
        kind: Kind::Short,
        folio: folio.into(),
        nombre: "Sofía".into(),
        email: "sofia.munoz@mail.com".into(),
        productovisto: "Colchón".into(),
        taps: 12.5,
    }
}

fn deliverer(mailpit: &Mailpit, policy: Policy, per_second: Option<u32>, m: &Metrics) -> Deliverer {
    let mailer = Mailer::new(
        &mailpit.smtp_url(),
        None,
        4,
        Duration::from_secs(10),
        "Cyberday <notificaciones@cyberday.example>",
    )
    .unwrap();
    Deliverer::new(
        Some(mailer),
        None,
        policy,
        per_second.and_then(std::num::NonZeroU32::new),
        m.clone(),
    )
}

/// The e-mail channel's outcome (the only channel here).
async fn by_email(d: &Deliverer, folio: &str) -> Outcome {
    let mut outcomes = d.deliver(&notice(folio)).await;
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0).1
}

fn mailpit(test: &str, extra: &[&str]) -> Mailpit {
    let dir = e2e::out_dir(test);
    Mailpit::start(&dir, "mailpit", extra)
}

/// Mailpit's API client blocks: the sends run on this runtime, the API
/// calls outside it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn attempts_are_bounded_by_count_and_by_time() {
    let rt = runtime();
    let mp = mailpit("delivery-retry-bounds", &["--enable-chaos"]);
    mp.api.put(
        "/api/v1/chaos",
        &json!({"Recipient": {"ErrorCode": 451, "Probability": 100}}),
    );
    let m = Metrics::new();
    let by_count = Policy {
        max_attempts: 4,
        retry_for: Duration::from_secs(60),
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    // The pooled transport starts on the runtime.
    let d = rt.block_on(async { deliverer(&mp, by_count, None, &m) });
    match rt.block_on(by_email(&d, "AAA-0001")) {
        Outcome::DeadLetter {
            reason,
            detail,
            attempts,
        } => {
            assert_eq!(reason, "retries_exhausted");
            assert!(detail.contains("smtp_451"), "{detail}");
            assert_eq!(attempts, 4);
        }
        other => panic!("{other:?}"),
    }

    // The pool's connections close on the runtime.
    rt.block_on(async move { drop(d) });

    let by_time = Policy {
        max_attempts: 100,
        retry_for: Duration::from_millis(600),
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(100),
    };
    let d = rt.block_on(async { deliverer(&mp, by_time, None, &m) });
    let started = Instant::now();
    let Outcome::DeadLetter { attempts, .. } = rt.block_on(by_email(&d, "AAA-0002")) else {
        panic!("a 451 every time cannot be delivered");
    };
    let took = started.elapsed();
    assert!(
        (3..=8).contains(&attempts),
        "{attempts} attempts in {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    let text = m.encode();
    assert!(
        text.contains("cyberday_delivery_retries_total{channel=\"email\"}"),
        "{text}"
    );
    assert_eq!(mp.api.total(), 0, "nothing got through");

    // Chaos off: the next one is delivered at the first attempt.
    mp.api.put(
        "/api/v1/chaos",
        &json!({"Recipient": {"ErrorCode": 451, "Probability": 0}}),
    );
    assert_eq!(
        rt.block_on(by_email(&d, "AAA-0003")),
        Outcome::Delivered { attempts: 1 }
    );
    assert_eq!(mp.api.total(), 1);
    rt.block_on(async move { drop(d) });
}

#[test]
fn the_token_bucket_holds_the_rate() {
    let rt = runtime();
    let mp = mailpit("delivery-rate", &[]);
    let policy = Policy {
        max_attempts: 3,
        retry_for: Duration::from_secs(10),
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    let d = rt.block_on(async { deliverer(&mp, policy, Some(20), &Metrics::new()) });
    let started = Instant::now();
    rt.block_on(async {
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..60 {
            let d = d.clone();
            sends.spawn(async move { by_email(&d, &format!("RTE-{i:04}")).await });
        }
        while let Some(outcome) = sends.join_next().await {
            assert!(matches!(outcome.unwrap(), Outcome::Delivered { .. }));
        }
    });
    rt.block_on(async move { drop(d) });
    let took = started.elapsed().as_secs_f64();
    // A burst of 20, then 20 per second: the other 40 take at least 2 s.
    assert!(took >= 1.9, "60 sends at 20/s took {took:.2} s");
    assert_eq!(mp.api.total(), 60);
    println!("delivery-rate: 60 sends at --max-per-second 20 took {took:.2} s");
}
