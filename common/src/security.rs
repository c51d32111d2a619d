//! Transport security between the master and its workers: a worker's PEM
//! files into tonic's TLS settings (the master's listener is
//! `master::tls`), and the shared worker token, sent as `authorization:
//! Bearer` metadata and compared in constant time.

use std::fmt;
use std::path::Path;

use anyhow::Context;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The gRPC metadata key that carries the worker token.
pub const TOKEN_METADATA: &str = "authorization";
const BEARER: &str = "Bearer ";

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// A certificate and its private key, PEM files.
fn identity(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
    Ok(Identity::from_pem(
        read(cert, "certificate (--tls-cert)")?,
        read(key, "private key (--tls-key)")?,
    ))
}

/// A worker's TLS: the CA that signed the master's certificate and, for
/// mutual TLS, the worker's own certificate and key; read and parsed now.
pub fn client_tls(
    ca: &Path,
    cert_and_key: Option<(&Path, &Path)>,
) -> anyhow::Result<ClientTlsConfig> {
    let mut tls = ClientTlsConfig::new().ca_certificate(ca_certificate(ca)?);
    if let Some((cert, key)) = cert_and_key {
        tls = tls.identity(identity(cert, key)?);
    }
    tonic::transport::Endpoint::from_static("https://localhost")
        .tls_config(tls.clone())
        .context("parsing --tls-ca, --tls-cert or --tls-key")?;
    Ok(tls)
}

fn ca_certificate(ca: &Path) -> anyhow::Result<Certificate> {
    Ok(Certificate::from_pem(read(
        ca,
        "CA certificate (--tls-ca)",
    )?))
}

/// The shared worker token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Reads the token from a file (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the worker token file {}", path.display()))?;
        let token = text.trim();
        anyhow::ensure!(
            !token.is_empty(),
            "the worker token file {} is empty",
            path.display()
        );
        anyhow::ensure!(
            token.bytes().all(|b| b.is_ascii_graphic()),
            "the worker token in {} must be printable ASCII without spaces",
            path.display()
        );
        Ok(Self(token.to_owned()))
    }

    /// The token in `path`, if a path is given.
    pub fn from_optional_file(path: Option<&Path>) -> anyhow::Result<Option<Self>> {
        path.map(Self::from_file).transpose()
    }

    /// The metadata value a worker sends.
    pub fn metadata(&self) -> MetadataValue<tonic::metadata::Ascii> {
        let mut value: MetadataValue<_> = format!("{BEARER}{}", self.0)
            .parse()
            .expect("a printable ASCII token is a valid metadata value");
        value.set_sensitive(true);
        value
    }

    /// Whether `presented` (the whole metadata value) carries this token;
    /// the comparison takes the same time wherever the first difference is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented = presented
            .strip_prefix(BEARER.as_bytes())
            .unwrap_or(presented);
        constant_time_eq(presented, self.0.as_bytes())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Equality whose time depends on the lengths only, not on where the bytes
/// differ (`subtle`). The token's length is not secret; its bytes are.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("token");
        std::fs::write(&path, "s3cret-token\n").unwrap();
        let token = Token::from_file(&path).unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert!(token.matches(b"Bearer s3cret-token"));
        assert!(token.matches(token.metadata().as_bytes()));
        for wrong in [
            &b"Bearer s3cret-tokem"[..],
            b"Bearer s3cret-token2",
            b"",
            b"Bearer ",
        ] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        std::fs::write(&path, "  \n").unwrap();
        assert!(Token::from_file(&path).is_err());
        std::fs::write(&path, "two words").unwrap();
        assert!(Token::from_file(&path).is_err());
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
