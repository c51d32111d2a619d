//! Who may call the `Coordinator` service: only workers. With TLS, a worker
//! is a caller whose client certificate chains to `--tls-ca` (checked during
//! the handshake, see [`crate::tls`]: a certificate from another CA never
//! gets this far); with `--token-file`, a caller that presents the shared
//! token. Everything else is refused, said why, logged and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::security::{Token, TOKEN_METADATA};
use tokio_rustls::rustls::ServerConfig;
use tonic::service::Interceptor;
use tonic::{Request, Status};
use tracing::warn;

use crate::config::Config;

/// The master's TLS settings and worker authentication, read from their
/// files and checked at start.
pub struct Security {
    pub tls: Option<Arc<ServerConfig>>,
    pub auth: WorkerAuth,
}

impl Security {
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let tls = match config.tls().map_err(anyhow::Error::msg)? {
            None => None,
            Some(files) => Some(crate::tls::server_config(&files)?),
        };
        let token = Token::from_optional_file(config.token_file.as_deref())?;
        Ok(Self {
            auth: WorkerAuth::new(tls.is_some(), token),
            tls,
        })
    }
}

/// The Coordinator service's interceptor.
#[derive(Clone)]
pub struct WorkerAuth {
    /// Require a verified client certificate.
    tls: bool,
    token: Option<Token>,
    refused: Arc<AtomicU64>,
}

impl WorkerAuth {
    pub fn new(tls: bool, token: Option<Token>) -> Self {
        Self {
            tls,
            token,
            refused: Arc::default(),
        }
    }

    /// Whether callers must present the shared token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Callers refused so far (Admin `GetStats` shows it).
    pub fn refused(&self) -> Arc<AtomicU64> {
        self.refused.clone()
    }

    /// Whether `request` comes from a worker; the refusal says what is missing.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.tls && request.peer_certs().is_none_or(|certs| certs.is_empty()) {
            return Err(Status::unauthenticated(
                "no client certificate: the Coordinator service accepts only workers with a \
                 certificate signed by the master's CA (worker --tls-cert and --tls-key)",
            ));
        }
        if let Some(token) = &self.token {
            match request.metadata().get(TOKEN_METADATA) {
                None => {
                    return Err(Status::unauthenticated(
                        "no worker token: this master requires one (worker --token-file, \
                         WORKER_TOKEN_FILE)",
                    ))
                }
                Some(presented) if !token.matches(presented.as_bytes()) => {
                    return Err(Status::permission_denied(
                        "wrong worker token: it does not match the master's --token-file",
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

impl Interceptor for WorkerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match self.check(&request) {
            Ok(()) => Ok(request),
            Err(status) => {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                let peer = request
                    .remote_addr()
                    .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
                warn!(%peer, code = ?status.code(), reason = status.message(), refused, "refused a Coordinator caller");
                Err(status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("token");
        std::fs::write(&path, "t0ken").unwrap();
        Token::from_file(&path).unwrap()
    }

    fn with(value: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(v) = value {
            r.metadata_mut().insert(TOKEN_METADATA, v.parse().unwrap());
        }
        r
    }

    #[test]
    fn the_token_is_required_and_compared() {
        let mut auth = WorkerAuth::new(false, Some(token()));
        let missing = auth.call(with(None)).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(missing.message().contains("--token-file"));
        let wrong = auth.call(with(Some("Bearer t0kem"))).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::PermissionDenied);
        assert!(auth.call(with(Some("Bearer t0ken"))).is_ok());
        assert_eq!(auth.refused().load(Ordering::Relaxed), 2);
    }

    #[test]
    fn tls_requires_a_client_certificate_and_plaintext_without_token_lets_all_in() {
        let mut tls = WorkerAuth::new(true, None);
        let status = tls.call(with(None)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("client certificate"));
        assert!(WorkerAuth::new(false, None).call(with(None)).is_ok());
    }
}
