//! Both channels at once: e-mail into a real Mailpit and the webhook into
//! a receiver this test runs, which checks every POST's `Idempotency-Key`
//! and HMAC-SHA256 signature (its own computation, with the shared secret),
//! answers the first call of some folios with a 500 and of others with a
//! 429 and `Retry-After: 1`, and records when each call came. Every
//! purchase must reach both, once each as a success; the 500s retried, the
//! 429s waited out for at least the second asked.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use e2e::{free_port, Proc, Scrape};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::*;

const SECRET: &str = "s3cr3t-webhook-key";

/// One call as the receiver saw it.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    status: u16,
    body: serde_json::Value,
}

#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<BTreeMap<String, Vec<Call>>>>,
    refused: Arc<Mutex<Vec<String>>>,
}

/// The first call of a folio ending in 1 gets a 500, in 2 a 429.
fn scripted(folio: &str, previous_calls: usize) -> (StatusCode, Option<&'static str>) {
    match (folio.as_bytes().last(), previous_calls) {
        (Some(b'1'), 0) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        (Some(b'2'), 0) => (StatusCode::TOO_MANY_REQUESTS, Some("1")),
        _ => (StatusCode::OK, None),
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(key), Some(ts), Some(sig)) = (
        header("idempotency-key"),
        header("x-cyberday-timestamp"),
        header("x-cyberday-signature"),
    ) else {
        r.refused.lock().unwrap().push("missing headers".into());
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = ts.parse::<u64>().is_ok_and(|t| now.abs_diff(t) < 300);
    if sig != format!("v1={want}") || !fresh {
        r.refused
            .lock()
            .unwrap()
            .push(format!("bad signature for {key}"));
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut calls = r.calls.lock().unwrap();
    let seen = calls.entry(key.clone()).or_default();
    let (status, retry_after) = scripted(&key, seen.len());
    seen.push(Call {
        at: Instant::now(),
        status: status.as_u16(),
        body,
    });
    match retry_after {
        Some(after) => (status, [("retry-after", after)]).into_response(),
        None => status.into_response(),
    }
}

/// Serves the receiver on a thread of its own; returns its port.
fn start_receiver(r: Receiver) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new()
                .route("/hook", axum::routing::post(receive))
                .with_state(r);
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

#[test]
fn email_and_signed_webhook_once_each_with_retries_and_retry_after() {
    let (p, expected) = filled_notifications("delivery-webhook", 1_000, 7);
    let receiver = Receiver::default();
    let port = start_receiver(receiver.clone());
    let secret_file = p.dir.join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();

    let mut mailpit = Mailpit::start(&p.dir, "mailpit", &[]);
    let metrics_port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let args = delivery_args(
        &p,
        &mailpit.smtp_url(),
        metrics_port,
        &[
            "--webhook-url",
            &url,
            "--webhook-secret-file",
            secret_file.to_str().unwrap(),
            "--retry-min-delay",
            "10ms",
            "--retry-max-delay",
            "100ms",
        ],
    );
    let mut delivery = Proc::spawn("delivery", &p.dir, &delivery_bin(), &args);
    let group = delivery_group(&p);
    let scrape: Scrape = finish_delivery(
        &mut mailpit,
        &mut delivery,
        (&p.cluster, &p.notifications_topic, &group),
        expected.len() as u64,
        Some(metrics_port),
    )
    .unwrap();

    assert!(
        receiver.refused.lock().unwrap().is_empty(),
        "{:?}",
        receiver.refused
    );
    let calls = receiver.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), expected.len(), "one key per purchase");
    let (mut retried_500, mut waited_429) = (0, 0);
    for (folio, (kind, purchase)) in &expected {
        let c = calls
            .get(folio)
            .unwrap_or_else(|| panic!("no webhook call for {folio}"));
        let ok: Vec<&Call> = c.iter().filter(|c| c.status == 200).collect();
        assert_eq!(ok.len(), 1, "{folio}: {c:?}");
        let body = &ok[0].body;
        assert_eq!(body["folio"], folio.as_str());
        assert_eq!(body["kind"], kind.as_str());
        assert_eq!(body["email"], purchase.email.as_str());
        assert_eq!(body["text"], common::notify::render_text(*kind, purchase));
        match c[0].status {
            500 => {
                assert_eq!(c.len(), 2, "{folio}: {c:?}");
                retried_500 += 1;
            }
            429 => {
                assert_eq!(c.len(), 2, "{folio}: {c:?}");
                let gap = c[1].at - c[0].at;
                assert!(
                    gap >= Duration::from_millis(990),
                    "{folio}: Retry-After 1 s, retried after {gap:?}"
                );
                waited_429 += 1;
            }
            _ => assert_eq!(c.len(), 1, "{folio}: {c:?}"),
        }
    }
    assert!(
        retried_500 > 0 && waited_429 > 0,
        "the script hit both cases"
    );

    let mails = mailpit.api.messages();
    assert_eq!(
        mails.len(),
        expected.len(),
        "one e-mail per purchase as well"
    );
    let sent = |channel: &str| -> f64 {
        scrape
            .family("cyberday_delivery_sent_total")
            .iter()
            .filter(|(labels, _)| labels.contains(&format!("channel=\"{channel}\"")))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(sent("email"), expected.len() as f64);
    assert_eq!(sent("webhook"), expected.len() as f64);
    assert_eq!(
        scrape.value("cyberday_delivery_retries_total{channel=\"webhook\"}"),
        (retried_500 + waited_429) as f64
    );
    let log = delivery.stderr_text();
    assert!(!log.contains(SECRET), "the secret in the log");
    println!(
        "delivery-webhook: {} purchases, each e-mailed once and POSTed with a verified signature; {retried_500} 500s retried, {waited_429} 429s waited out (Retry-After: 1)",
        expected.len()
    );
}
