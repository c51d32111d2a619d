//! The e-mail channel: one multipart (plain text + HTML) message per
//! notification, in Spanish, sent through lettre's pooled async SMTP
//! transport; the provider's answer sorted into transient (retry) and
//! permanent (dead letter).
//!
//! The `Message-ID` is derived from the folio alone, so a re-send after a
//! crash carries the id of the first send and mail clients and providers
//! that deduplicate by it show one message.

use std::path::Path;
use std::time::Duration;

use common::classify::Kind;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::deliver::Failure;
use crate::notice::Notice;
use crate::{Error, Result};

/// The domain part of every `Message-ID`.
pub const MESSAGE_ID_DOMAIN: &str = "notificaciones.cyberday";

/// `<FOLIO@notificaciones.cyberday>`: the same for every send of one folio.
pub fn message_id(folio: &str) -> String {
    format!("<{folio}@{MESSAGE_ID_DOMAIN}>")
}

/// Sends the notifications' e-mails.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// A pooled transport for `url` (see `--smtp-url`), with the credentials
    /// of `credentials_file` when given.
    pub fn new(
        url: &str,
        credentials_file: Option<&Path>,
        pool_size: u32,
        timeout: Duration,
        from: &str,
    ) -> Result<Self> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| Error::Config(format!("--from is not a mailbox ({e})")))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            // lettre's message would repeat the URL; it holds no secret, but
            // keep to what is wrong.
            .map_err(|e| Error::Config(format!("--smtp-url is not a usable SMTP URL ({e})")))?
            .pool_config(PoolConfig::new().max_size(pool_size))
            .timeout(Some(timeout));
        if let Some(path) = credentials_file {
            builder = builder.credentials(read_credentials(path)?);
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }

    /// The e-mail for `n`; a recipient that is not an address is permanent.
    pub fn message(&self, n: &Notice) -> std::result::Result<Message, Failure> {
        let to: Mailbox = n.email.parse().map_err(|e| Failure::Permanent {
            reason: "malformed_address".into(),
            detail: format!("{e}"),
        })?;
        let p = n.purchase();
        let text = common::notify::render_text(n.kind, &p);
        let html = common::notify::render_html(n.kind, &p);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(common::notify::render_subject(n.kind, &p))
            .message_id(Some(message_id(&n.folio)))
            .header(FolioHeader(n.folio.clone()))
            .header(KindHeader(n.kind))
            .multipart(MultiPart::alternative_plain_html(
                format!("{text}\n\nEquipo Cyberday\n"),
                html,
            ))
            .map_err(|e| Failure::Permanent {
                reason: "unbuildable_message".into(),
                detail: e.to_string(),
            })
    }

    /// One attempt: `Ok` once the server accepted the message (250 to DATA).
    pub async fn send(&self, message: Message) -> std::result::Result<(), Failure> {
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| classify(&e))
    }
}

/// Sorts lettre's error: the server's code decides when there is one.
fn classify(e: &lettre::transport::smtp::Error) -> Failure {
    let detail = e.to_string();
    if let Some(code) = e.status() {
        let reason = format!("smtp_{code}");
        return if e.is_permanent() {
            Failure::Permanent { reason, detail }
        } else {
            Failure::Transient {
                reason,
                detail,
                retry_after: None,
            }
        };
    }
    let reason = if e.is_timeout() {
        "timeout"
    } else if e.is_tls() {
        "tls"
    } else {
        // The connection failed or was lost, or the server said something
        // that is not SMTP: the next attempt opens a new one.
        "connection"
    };
    Failure::Transient {
        reason: reason.into(),
        detail,
        retry_after: None,
    }
}

/// The user on the first line, the password on the second.
fn read_credentials(path: &Path) -> Result<Credentials> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read --smtp-credentials-file {}: {e}",
            path.display()
        ))
    })?;
    let mut lines = text.lines();
    match (lines.next(), lines.next()) {
        (Some(user), Some(password)) if !user.trim().is_empty() => Ok(Credentials::new(
            user.trim().to_owned(),
            password.trim_end_matches('\r').to_owned(),
        )),
        _ => Err(Error::Config(format!(
            "--smtp-credentials-file {}: expected the user on line 1 and the password on line 2",
            path.display()
        ))),
    }
}

/// `X-Cyberday-Folio: ABC-1234`.
#[derive(Clone)]
struct FolioHeader(String);

impl Header for FolioHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Cyberday-Folio")
    }

    fn parse(s: &str) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `X-Cyberday-Kind: short|long`.
#[derive(Clone)]
struct KindHeader(Kind);

impl Header for KindHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Cyberday-Kind")
    }

    fn parse(s: &str) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        match s {
            "short" => Ok(Self(Kind::Short)),
            "long" => Ok(Self(Kind::Long)),
            _ => Err("expected short or long".into()),
        }
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.as_str().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(email: &str) -> Notice {
        Notice {
            kind: Kind::Long,
            folio: "QZX-0042".into(),
            nombre: "Valentina".into(),
            email: email.into(),
            productovisto: "Colchón".into(),
            taps: 45.0,
        }
    }

    fn mailer() -> Mailer {
        Mailer::new(
            "smtp://127.0.0.1:1",
            None,
            1,
            Duration::from_secs(1),
            "Cyberday <notificaciones@cyberday.example>",
        )
        .unwrap()
    }

    // The pooled transport starts its pool on the runtime.
    #[tokio::test]
    async fn the_message_carries_the_folio_id_headers_and_both_parts() {
        let m = mailer()
            .message(&notice("valentina.munoz@mail.com"))
            .unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        for needle in [
            "Message-ID: <QZX-0042@notificaciones.cyberday>",
            "X-Cyberday-Folio: QZX-0042",
            "X-Cyberday-Kind: long",
            "To: valentina.munoz@mail.com",
            "multipart/alternative",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Type: text/html; charset=utf-8",
        ] {
            assert!(raw.contains(needle), "no {needle:?} in:\n{raw}");
        }
        // The same folio, the same id: a re-send is recognisable.
        let again = mailer()
            .message(&notice("valentina.munoz@mail.com"))
            .unwrap();
        assert_eq!(
            m.headers().get_raw("Message-ID"),
            again.headers().get_raw("Message-ID")
        );
    }

    #[tokio::test]
    async fn a_malformed_address_is_permanent() {
        for bad in ["", "no-at-sign", "a@b@c", "x <y"] {
            match mailer().message(&notice(bad)) {
                Err(Failure::Permanent { reason, .. }) => assert_eq!(reason, "malformed_address"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn credentials_file_shape() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "user\npa ss=word\n").unwrap();
        read_credentials(&good).unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "hunter2").unwrap();
        let e = read_credentials(&bad).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
