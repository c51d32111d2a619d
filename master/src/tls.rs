//! The master's TLS listener: accepts TCP connections, runs each TLS
//! handshake in its own task (a bounded number at once), and hands the
//! established streams to the gRPC server. A client certificate is optional
//! (operators and probes present none) but one that is presented must chain
//! to `--tls-ca`; a handshake that fails on a certificate is logged with the
//! peer and the reason and counted with the other refusals.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::TlsFiles;

/// Handshakes in progress at once; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 128;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls settings from the PEM files: the master's certificate chain
/// and key, and the CA its workers' client certificates must chain to.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = pem_certs(&files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "reading the private key (--tls-key) {}",
            files.key.display()
        )
    })?;
    let mut roots = RootCertStore::empty();
    for ca in pem_certs(&files.ca, "--tls-ca")? {
        roots
            .add(ca)
            .with_context(|| format!("the CA certificate (--tls-ca) {}", files.ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("the CA certificate (--tls-ca)")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(clients)
        .with_single_cert(certs, key)
        .context("the master's certificate (--tls-cert) and key (--tls-key)")?;
    // gRPC is HTTP/2; clients insist on negotiating it.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn pem_certs(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificates ({flag}) {}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no PEM certificate in {} ({flag})",
        path.display()
    );
    Ok(certs)
}

/// The established TLS connections on `listener`, until `shutdown`.
/// Handshakes refused for a certificate add one to `refused`.
pub fn incoming(
    listener: Arc<TcpListener>,
    config: Arc<ServerConfig>,
    refused: Arc<AtomicU64>,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: pass, and retry.
                        warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Assignments and revocations are small and urgent.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, refused) = (acceptor.clone(), tx.clone(), refused.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => match certificate_error(&e) {
                        Some(reason) => {
                            let refused = refused.fetch_add(1, Ordering::Relaxed) + 1;
                            warn!(%peer, reason, refused, "refused a TLS client certificate");
                        }
                        None => debug!(%peer, error = %e, "TLS handshake failed"),
                    },
                    Err(_) => {
                        debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Why a handshake failed on the client's certificate, if it did.
fn certificate_error(e: &io::Error) -> Option<String> {
    let rustls_error = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match rustls_error {
        rustls::Error::InvalidCertificate(why) => Some(format!(
            "client certificate not accepted ({why:?}): it must be signed by the CA of --tls-ca"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_empty_files_are_named_in_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let files = |cert: &Path| TlsFiles {
            cert: cert.to_owned(),
            key: dir.join("missing.key"),
            ca: empty.clone(),
        };
        let e = format!(
            "{:#}",
            server_config(&files(&dir.join("missing.pem"))).unwrap_err()
        );
        assert!(e.contains("--tls-cert") && e.contains("missing.pem"), "{e}");
        let e = format!("{:#}", server_config(&files(&empty)).unwrap_err());
        assert!(
            e.contains("no PEM certificate") && e.contains("--tls-cert"),
            "{e}"
        );
    }

    #[test]
    fn only_certificate_errors_count_as_refusals() {
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let reason = certificate_error(&io::Error::new(io::ErrorKind::InvalidData, bad)).unwrap();
        assert!(
            reason.contains("UnknownIssuer") && reason.contains("--tls-ca"),
            "{reason}"
        );
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tcp probe");
        assert_eq!(certificate_error(&eof), None);
    }
}
