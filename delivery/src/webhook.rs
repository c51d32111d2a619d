//! The webhook channel: one JSON POST per notification, as payment and
//! messaging providers send theirs. `Idempotency-Key` is the folio, so a
//! re-send is recognisable; `X-Cyberday-Signature` is
//! `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with the timestamp
//! (Unix seconds) in `X-Cyberday-Timestamp`, so the receiver can check both
//! origin and freshness.
//!
//! 408, 429 and 5xx are transient (honouring `Retry-After`), so are
//! timeouts and lost connections; any other 4xx is permanent.

use std::path::Path;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Serialize;
use sha2::Sha256;

use crate::deliver::Failure;
use crate::notice::Notice;
use crate::{Error, Result};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Cyberday-Signature";
/// Header carrying the signed timestamp (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "X-Cyberday-Timestamp";

/// Posts notifications to one URL.
#[derive(Clone)]
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Vec<u8>,
}

/// The JSON body of a webhook call.
#[derive(Serialize)]
struct Body<'a> {
    folio: &'a str,
    kind: &'a str,
    nombre: &'a str,
    email: &'a str,
    productovisto: &'a str,
    taps: f64,
    /// The Spanish sentence the e-mail carries, for SMS or push.
    text: String,
}

impl Webhook {
    /// A client for `url`, signing with the secret in `secret_file` (its
    /// whole content, without a final newline).
    pub fn new(url: reqwest::Url, secret_file: &Path, timeout: Duration) -> Result<Self> {
        let secret = std::fs::read(secret_file).map_err(|e| {
            Error::Config(format!(
                "cannot read --webhook-secret-file {}: {e}",
                secret_file.display()
            ))
        })?;
        let secret = secret
            .strip_suffix(b"\n")
            .map(|s| s.strip_suffix(b"\r").unwrap_or(s))
            .unwrap_or(&secret)
            .to_vec();
        if secret.is_empty() {
            return Err(Error::Config("--webhook-secret-file is empty".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("building the webhook client: {e}")))?;
        Ok(Self {
            client,
            url,
            secret,
        })
    }

    /// The body of `n`'s call, rendered once for every attempt.
    pub fn body(n: &Notice) -> Vec<u8> {
        let p = n.purchase();
        serde_json::to_vec(&Body {
            folio: &n.folio,
            kind: n.kind.as_str(),
            nombre: &n.nombre,
            email: &n.email,
            productovisto: &n.productovisto,
            taps: n.taps,
            text: common::notify::render_text(n.kind, &p),
        })
        .expect("plain struct serializes")
    }

    /// One attempt: `Ok` on any 2xx.
    pub async fn send(&self, folio: &str, body: &[u8]) -> std::result::Result<(), Failure> {
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = sign(&self.secret, timestamp, body);
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", folio)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_vec())
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let reason = if e.is_timeout() {
                    "timeout"
                } else {
                    "connection"
                };
                return Err(Failure::Transient {
                    reason: reason.into(),
                    // reqwest's text names the URL, which may hold a token.
                    detail: format!("{}", e.without_url()),
                    retry_after: None,
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(classify(status, response.headers()))
    }
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

fn classify(status: StatusCode, headers: &HeaderMap) -> Failure {
    let reason = format!("http_{}", status.as_u16());
    let detail = status.to_string();
    let transient = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    if transient {
        Failure::Transient {
            reason,
            detail,
            retry_after: retry_after(headers),
        }
    } else {
        Failure::Permanent { reason, detail }
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        let sig = sign(b"Jefe", 1_700_000_000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{}");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, format!("v1={want}"));
        assert_ne!(sign(b"other", 1_700_000_000, b"{}"), sig);
        assert_ne!(sign(b"Jefe", 1_700_000_001, b"{}"), sig);
    }

    #[test]
    fn statuses_are_sorted_and_retry_after_is_read() {
        let mut h = HeaderMap::new();
        for (code, transient) in [
            (500, true),
            (503, true),
            (408, true),
            (429, true),
            (400, false),
            (404, false),
            (410, false),
        ] {
            let f = classify(StatusCode::from_u16(code).unwrap(), &h);
            assert_eq!(matches!(f, Failure::Transient { .. }), transient, "{code}");
            assert_eq!(f.reason(), format!("http_{code}"));
        }
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
