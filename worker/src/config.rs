//! The worker's command line; every flag also reads an environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use common::classify::Rules;
use common::cli::{parse_duration, KafkaArgs, LogArgs};
use tonic::transport::Uri;

/// Reads the partitions the master assigns, classifies every purchase and
/// streams the results back to the master (invalid records with the record
/// itself, which the master writes to `<topic>.DLQ`).
#[derive(Parser, Debug, Clone)]
#[command(name = "worker", version)]
pub struct Config {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub log: LogArgs,

    /// The master's gRPC address (`http://host:port`, or `https://host:port`
    /// with `--tls-ca`; a bare `host:port` means http).
    #[arg(long, env = "WORKER_MASTER", default_value = "http://127.0.0.1:50051",
          value_parser = parse_master)]
    pub master: Uri,

    /// This worker's id, as ListWorkers shows it. When not given the master
    /// assigns one.
    #[arg(long, env = "WORKER_ID", value_parser = parse_id)]
    pub id: Option<String>,

    /// Longest a result waits before its batch is sent while records keep
    /// coming, e.g. 5ms; a batch goes out at once when no more records are
    /// ready to read. The size of a batch comes from the master.
    #[arg(long, env = "WORKER_BATCH_LINGER", default_value = "5ms", value_parser = parse_duration)]
    pub batch_linger: Duration,

    /// Purchases that took at least this many minutes are long.
    #[arg(long, env = "LONG_THRESHOLD_MIN", default_value_t = common::classify::DEFAULT_LONG_THRESHOLD_MIN,
          value_parser = parse_threshold)]
    pub long_threshold_min: f64,

    /// Records larger than this many bytes are invalid (`oversized`).
    #[arg(long, env = "MAX_RECORD_BYTES", default_value_t = common::classify::DEFAULT_MAX_RECORD_BYTES,
          value_parser = parse_max_bytes)]
    pub max_record_bytes: usize,

    /// Address of the HTTP server for Prometheus (`/metrics`), e.g.
    /// `0.0.0.0:9090`. Off when not given.
    #[arg(long, env = "WORKER_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Largest gRPC message the worker accepts from the master or sends to
    /// it, in bytes. Keep it at or under the master's
    /// `--max-message-bytes`: an invalid record travels whole to the master
    /// (cut to fit this limit).
    #[arg(long, env = "WORKER_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(64 * 1024..))]
    pub max_message_bytes: u32,

    /// The CA that signed the master's certificate (PEM); with it the worker
    /// speaks TLS (`--master https://…`).
    #[arg(long, env = "WORKER_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// This worker's client certificate (PEM), signed by the CA the master
    /// trusts (`--tls-ca` of the master): mutual TLS.
    #[arg(long, env = "WORKER_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "WORKER_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// A file holding the shared worker token the master's `--token-file`
    /// requires; sent as `authorization` metadata.
    #[arg(long, env = "WORKER_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

impl Config {
    /// Checks what clap cannot check flag by flag: TLS flags that go
    /// together, and an `https` master exactly when there is a CA.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(
                "--tls-cert and --tls-key (WORKER_TLS_CERT, WORKER_TLS_KEY) go together".into(),
            );
        }
        let https = self.master.scheme_str() == Some("https");
        match (https, self.tls_ca.is_some()) {
            (true, false) => Err(format!(
                "--master {} is https: give --tls-ca (WORKER_TLS_CA), the CA of the master's certificate",
                self.master
            )),
            (false, true) => Err(format!(
                "--tls-ca given but --master {} is not https://; write https://host:port",
                self.master
            )),
            (false, false) if self.tls_cert.is_some() => Err(
                "--tls-cert needs TLS: give --tls-ca and --master https://host:port".into(),
            ),
            _ => Ok(()),
        }
    }

    /// The classification rule's tunables.
    pub fn rules(&self) -> Rules {
        Rules {
            long_threshold_min: self.long_threshold_min,
            max_record_bytes: self.max_record_bytes,
        }
    }
}

/// Parses the master's address: `http` (plaintext) or `https` (TLS).
pub fn parse_master(s: &str) -> Result<Uri, String> {
    let s = s.trim();
    let with_scheme = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|e| format!("expected an address like http://master:50051, got '{s}': {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
            "scheme '{other}' in '{s}' is not supported; use http://host:port or https://host:port"
        ))
        }
        None => {
            return Err(format!(
                "expected an address like http://master:50051, got '{s}'"
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("no host in '{s}'; expected http://host:port"));
    }
    Ok(uri)
}

fn parse_id(s: &str) -> Result<String, String> {
    let id = s.trim();
    if id.is_empty() {
        Err("the worker id must not be blank (leave --id out to let the master choose)".into())
    } else {
        Ok(id.to_owned())
    }
}

fn parse_threshold(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(t) if t.is_finite() && t > 0.0 => Ok(t),
        _ => Err(format!("expected a positive number of minutes, got '{s}'")),
    }
}

fn parse_max_bytes(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive number of bytes, got '{s}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::try_parse_from(["worker"]).unwrap();
        assert_eq!(c.master, "http://127.0.0.1:50051");
        assert_eq!(c.id, None);
        assert_eq!(c.batch_linger, Duration::from_millis(5));
        assert_eq!(c.rules(), Rules::default());
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.max_message_bytes, 64 * 1024 * 1024);
        c.validate().unwrap();
    }

    #[test]
    fn tls_flags_go_together() {
        let check = |args: &[&[&str]]| {
            let args = std::iter::once(&"worker").chain(args.iter().flat_map(|a| a.iter()));
            Config::try_parse_from(args).unwrap().validate()
        };
        let https = &["--master", "https://m:1", "--tls-ca", "ca.pem"][..];
        let (cert, key) = (&["--tls-cert", "c.pem"][..], &["--tls-key", "k.pem"][..]);
        check(&[https]).unwrap();
        check(&[https, cert, key]).unwrap();
        for args in [
            &[&["--master", "https://m:1"][..]][..],
            &[&["--tls-ca", "ca.pem"]],
            &[cert, key],
            &[https, cert],
        ] {
            assert!(check(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn flags() {
        let c = Config::try_parse_from([
            "worker",
            "--master",
            "master.cyberday:6000",
            "--id",
            "w-7",
            "--batch-linger",
            "20ms",
            "--long-threshold-min",
            "12.5",
            "--max-record-bytes",
            "1000",
        ])
        .unwrap();
        assert_eq!(c.master, "http://master.cyberday:6000/");
        assert_eq!(c.id.as_deref(), Some("w-7"));
        assert_eq!(c.batch_linger, Duration::from_millis(20));
        assert_eq!(c.rules().long_threshold_min, 12.5);
        assert_eq!(c.rules().max_record_bytes, 1000);
    }

    #[test]
    fn bad_values_are_rejected() {
        for args in [
            ["worker", "--master", "ftp://m:1"],
            ["worker", "--master", "http://"],
            ["worker", "--id", "  "],
            ["worker", "--long-threshold-min", "0"],
            ["worker", "--long-threshold-min", "NaN"],
            ["worker", "--max-record-bytes", "0"],
            ["worker", "--batch-linger", "soon"],
        ] {
            assert!(Config::try_parse_from(args).is_err(), "{args:?} accepted");
        }
    }
}
