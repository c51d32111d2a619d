//! The master's command line; every flag also reads an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use common::cli::{parse_duration, KafkaArgs, LogArgs};

/// Assigns the partitions of the input topic to workers, fences stale
/// results, prints one notification per purchase on stdout, and writes the
/// notifications and dead letters to Kafka in transactions that also commit
/// the consumer group's offsets.
#[derive(Parser, Debug, Clone)]
#[command(name = "master", version)]
pub struct Config {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub log: LogArgs,

    /// Address of the gRPC server (Coordinator for workers, Admin for
    /// operators, health and reflection).
    #[arg(long, env = "MASTER_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Kafka consumer group whose offsets the master reads at start and commits.
    #[arg(long, env = "MASTER_GROUP", default_value = "cyberday-notifier")]
    pub group: String,

    /// Shape of the notifications on stdout: the Spanish text, or one JSON
    /// object per line.
    #[arg(long, env = "NOTIFY_FORMAT", value_enum, default_value_t = NotifyFormat::Text)]
    pub notify_format: NotifyFormat,

    /// Topic every notification is written to (key = folio, value = the
    /// JSON object of `--notify-format json`), in the same Kafka transaction
    /// as the group's offsets. Created when absent.
    #[arg(long, env = "NOTIFICATIONS_TOPIC", default_value = "Notifications")]
    pub notifications_topic: String,

    /// Kafka `transactional.id` of the master's producer; keep it stable
    /// across restarts. A master starting with the same id fences the
    /// previous one (which then stops) and aborts what it left unfinished.
    /// Default: `cyberday-notifier-master-<group>`.
    #[arg(long, env = "MASTER_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,

    /// How often workers must send a heartbeat (told to them in `welcome`).
    #[arg(long, env = "MASTER_HEARTBEAT_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A worker silent for this long is dead: its partitions move at once.
    #[arg(long, env = "MASTER_HEARTBEAT_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// A worker that has not acknowledged a revocation after this long is
    /// treated as dead, so no partition stays stuck between two owners.
    #[arg(long, env = "MASTER_REVOKE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub revoke_timeout: Duration,

    /// How often the Kafka transaction (notifications, dead letters and the
    /// group's offsets) is committed and the next one begun; also once at
    /// shutdown. A read_committed reader sees output within about this long.
    #[arg(long, env = "MASTER_COMMIT_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub commit_interval: Duration,

    /// How long to wait at start for the input topic to exist (created by a
    /// job starting beside the master, or not yet known to the broker
    /// asked); the master gives up after it. `0s`: not at all.
    #[arg(long, env = "MASTER_TOPIC_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub topic_wait: Duration,

    /// How often the input topic's partition count is re-read; new partitions
    /// are assigned from their earliest offset.
    #[arg(long, env = "MASTER_METADATA_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub metadata_interval: Duration,

    /// Most results a worker may put in one batch (told to them in `welcome`).
    #[arg(long, env = "MASTER_MAX_BATCH_RECORDS", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_batch_records: u32,

    /// Address of the HTTP server for Prometheus (`/metrics`) and the live
    /// page (`/`, its data at `/api/status`), e.g. `0.0.0.0:9090`. Off when
    /// not given.
    #[arg(long, env = "MASTER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Largest gRPC message the master accepts, in bytes; a worker's batch
    /// over it breaks its session with `out_of_range`. Must hold one invalid
    /// record whole (the worker carries up to 16 MiB of it).
    #[arg(long, env = "MASTER_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(64 * 1024..))]
    pub max_message_bytes: u32,

    /// Most workers connected at once; one more is refused with
    /// `resource_exhausted` (and retries). Default: no limit.
    #[arg(long, env = "MASTER_MAX_WORKERS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_workers: Option<u32>,

    /// The master's TLS certificate (PEM, may include the chain). With
    /// `--tls-key` and `--tls-ca` the master speaks only TLS and the
    /// Coordinator service accepts only workers whose client certificate the
    /// CA signed. Without them, plaintext (local use).
    #[arg(long, env = "MASTER_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "MASTER_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// The CA that signs the workers' client certificates (PEM).
    #[arg(long, env = "MASTER_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// Run as one of several replicas of this master: a leader elected
    /// through a Kafka consumer group on a one-partition election topic
    /// (the member holding the partition leads), the others hot standbys
    /// that refuse workers with `unavailable` and the leader's address, and
    /// take over when the leader's group session ends. A new leader's
    /// transactions fence the old one. Give every replica the same
    /// `--group` (and `--transactional-id`).
    #[arg(long, env = "MASTER_ELECTION")]
    pub election: bool,

    /// The address workers use to reach this replica, as a standby names
    /// the leader to them (e.g. `http://master-0.master-replicas:50051`).
    /// Default: `http://<--listen>`, with this host's name when listening
    /// on every interface.
    #[arg(long, env = "MASTER_ADVERTISE")]
    pub advertise: Option<String>,

    /// The election group's session timeout: how long a leader that
    /// vanished (SIGKILL, lost node) keeps the lead before a standby takes
    /// over. Brokers refuse one under their `group.min.session.timeout.ms`
    /// (Kafka's default 6 s; the project's clusters allow 500 ms).
    #[arg(long, env = "MASTER_ELECTION_SESSION_TIMEOUT", default_value = "6s", value_parser = parse_duration)]
    pub election_session_timeout: Duration,

    /// The election topic (one partition, created when absent); also its
    /// consumer group. Default: `<transactional id>.election`.
    #[arg(long, env = "MASTER_ELECTION_TOPIC")]
    pub election_topic: Option<String>,

    /// A file holding the shared worker token: the Coordinator service then
    /// refuses a worker that does not present it (worker `--token-file`).
    /// For plaintext deployments; with TLS it is an extra check.
    #[arg(long, env = "MASTER_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// The master's TLS files, all three given.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// How notifications are written on stdout.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// One Spanish sentence per notification, as the customer reads it.
    Text,
    /// One JSON object per line: kind, folio, nombre, email, productovisto,
    /// taps, partition, offset, worker, latency_ms.
    Json,
}

impl Config {
    /// The election topic and group: `--election-topic`, or one derived
    /// from the transactional id, so the replicas of one logical master
    /// meet in one group.
    pub fn election_topic(&self) -> String {
        match &self.election_topic {
            Some(t) => t.clone(),
            None => format!("{}.election", self.transactional_id()),
        }
    }

    /// What workers dial to reach this replica: `--advertise`, or the
    /// listening address (this host's name in place of an unspecified IP).
    pub fn advertise(&self) -> String {
        if let Some(a) = &self.advertise {
            return a.trim().to_owned();
        }
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let port = self.listen.port();
        if self.listen.ip().is_unspecified() {
            let host = hostname().unwrap_or_else(|| "127.0.0.1".to_owned());
            format!("{scheme}://{host}:{port}")
        } else {
            format!("{scheme}://{}", self.listen)
        }
    }

    /// The producer's `transactional.id`: `--transactional-id`, or one
    /// derived from the group, so one logical master keeps one id.
    pub fn transactional_id(&self) -> String {
        match &self.transactional_id {
            Some(id) => id.clone(),
            None => format!("cyberday-notifier-master-{}", self.group),
        }
    }

    /// The TLS files, when TLS is on. Errors when only some are given.
    pub fn tls(&self) -> Result<Option<TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            _ => Err(
                "TLS needs all of --tls-cert, --tls-key and --tls-ca (MASTER_TLS_CERT, \
                      MASTER_TLS_KEY, MASTER_TLS_CA), or none of them for plaintext"
                    .into(),
            ),
        }
    }

    /// Checks what clap cannot check flag by flag.
    pub fn validate(&self) -> Result<(), String> {
        self.tls()?;
        let positive = [
            ("--heartbeat-interval", self.heartbeat_interval),
            ("--heartbeat-timeout", self.heartbeat_timeout),
            ("--revoke-timeout", self.revoke_timeout),
            ("--commit-interval", self.commit_interval),
            ("--metadata-interval", self.metadata_interval),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{flag} must be greater than zero"));
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(format!(
                "--heartbeat-timeout ({:?}) must be longer than --heartbeat-interval ({:?}), \
                 or every worker would be declared dead between two heartbeats",
                self.heartbeat_timeout, self.heartbeat_interval
            ));
        }
        if self.group.trim().is_empty() {
            return Err("--group must not be empty".into());
        }
        if self
            .transactional_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err("--transactional-id must not be blank".into());
        }
        if self.election && self.election_session_timeout < Duration::from_millis(100) {
            return Err(format!(
                "--election-session-timeout ({:?}) is too short: the election's heartbeats \
                 go every tenth of it; give at least 100ms (and no less than the brokers' \
                 group.min.session.timeout.ms)",
                self.election_session_timeout
            ));
        }
        if let Some(a) = &self.advertise {
            if !(a.starts_with("http://") || a.starts_with("https://")) {
                return Err(format!(
                    "--advertise {a}: give the URL workers dial, like http://master-0:50051"
                ));
            }
        }
        let output = self.notifications_topic.trim();
        if output.is_empty() {
            return Err("--notifications-topic must not be empty".into());
        }
        if output == self.kafka.topic || output == self.kafka.dlq_topic() {
            return Err(format!(
                "--notifications-topic {output} must differ from the input topic and its \
                 dead-letter topic"
            ));
        }
        Ok(())
    }
}

/// This host's name (`HOSTNAME`, else `/etc/hostname`).
fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::try_parse_from(["master"]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(c.group, "cyberday-notifier");
        assert_eq!(c.notify_format, NotifyFormat::Text);
        assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(3));
        assert_eq!(c.commit_interval, Duration::from_millis(250));
        assert_eq!(c.notifications_topic, "Notifications");
        assert_eq!(
            c.transactional_id(),
            "cyberday-notifier-master-cyberday-notifier"
        );
        assert_eq!(c.metadata_interval, Duration::from_secs(5));
        assert_eq!(c.max_batch_records, 500);
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.max_message_bytes, 64 * 1024 * 1024);
        assert_eq!(c.max_workers, None);
        assert!(c.tls().unwrap().is_none() && c.token_file.is_none());
        c.validate().unwrap();
    }

    #[test]
    fn timeout_must_exceed_interval() {
        let c = Config::try_parse_from([
            "master",
            "--heartbeat-interval",
            "3s",
            "--heartbeat-timeout",
            "3s",
        ])
        .unwrap();
        assert!(c.validate().unwrap_err().contains("--heartbeat-timeout"));
        assert!(Config::try_parse_from(["master", "--max-batch-records", "0"]).is_err());
        assert!(Config::try_parse_from(["master", "--notify-format", "xml"]).is_err());
        assert!(Config::try_parse_from(["master", "--max-workers", "0"]).is_err());
        assert!(Config::try_parse_from(["master", "--max-message-bytes", "1000"]).is_err());
        for args in [
            &["master", "--notifications-topic", "DataTopic"][..],
            &["master", "--notifications-topic", "DataTopic.DLQ"],
            &["master", "--notifications-topic", " "],
            &["master", "--transactional-id", ""],
            &["master", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
            &["master", "--tls-ca", "ca.pem"],
        ] {
            let c = Config::try_parse_from(args).unwrap();
            assert!(c.validate().is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn the_transactional_id_follows_the_group_unless_given() {
        let c = Config::try_parse_from(["master", "--group", "g1"]).unwrap();
        assert_eq!(c.transactional_id(), "cyberday-notifier-master-g1");
        let c = Config::try_parse_from(["master", "--group", "g1", "--transactional-id", "m-a"])
            .unwrap();
        assert_eq!(c.transactional_id(), "m-a");
        c.validate().unwrap();
    }
}
