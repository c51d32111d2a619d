//! The delivery service's command line; every flag also reads an
//! environment variable.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use common::cli::{parse_duration, KafkaArgs, LogArgs};

/// Reads the notifications topic (read_committed, consumer group
/// `cyberday-delivery`) and e-mails each purchase's customer over SMTP,
/// effectively once: a ledger of delivered folios and offsets committed only
/// after the provider's acknowledgement. `--topic` is not used: the input is
/// `--notifications-topic`.
#[derive(Parser, Debug, Clone)]
#[command(name = "delivery", version)]
pub struct Config {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub log: LogArgs,

    /// Topic of notifications to deliver (key = folio, value = the master's
    /// JSON object).
    #[arg(long, env = "NOTIFICATIONS_TOPIC", default_value = "Notifications")]
    pub notifications_topic: String,

    /// Consumer group; every delivery process of one deployment shares it and
    /// Kafka spreads the partitions among them.
    #[arg(long, env = "DELIVERY_GROUP", default_value = "cyberday-delivery")]
    pub group: String,

    /// Kafka's group protocol: `consumer` (KIP-848, the brokers assign
    /// partitions incrementally) or `classic` (the client-side protocol).
    #[arg(long, env = "DELIVERY_GROUP_PROTOCOL", value_enum, default_value_t = GroupProtocol::Consumer)]
    pub group_protocol: GroupProtocol,

    /// Compacted topic of delivered folios (key = folio). Default:
    /// `<notifications-topic>.delivered`. Created when absent.
    #[arg(long, env = "DELIVERY_LEDGER_TOPIC")]
    pub ledger_topic: Option<String>,

    /// Where notifications that cannot be delivered go, with the reason in
    /// headers. Default: `<notifications-topic>.DLQ`. Created when absent.
    #[arg(long, env = "DELIVERY_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,

    /// The SMTP server: `smtp://host:port` (plaintext),
    /// `smtp://host:port?tls=required` (STARTTLS, required),
    /// `smtp://host:port?tls=opportunistic` or `smtps://host:port`
    /// (implicit TLS). Credentials never go here: see `--smtp-credentials-file`.
    /// E-mail is off without it (then `--webhook-url` is needed).
    #[arg(long, env = "DELIVERY_SMTP_URL")]
    pub smtp_url: Option<String>,

    /// A file holding the SMTP user on its first line and the password on
    /// its second, read at start; the password appears in no log.
    #[arg(long, env = "DELIVERY_SMTP_CREDENTIALS_FILE", value_name = "PATH")]
    pub smtp_credentials_file: Option<PathBuf>,

    /// Most SMTP connections kept open (the pool's size).
    #[arg(long, env = "DELIVERY_SMTP_POOL_SIZE", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub smtp_pool_size: u32,

    /// How long one SMTP command may take before the attempt counts as a
    /// (transient) timeout.
    #[arg(long, env = "DELIVERY_SMTP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub smtp_timeout: Duration,

    /// The sender of every e-mail (`Name <address>`).
    #[arg(
        long,
        env = "DELIVERY_FROM",
        default_value = "Cyberday <notificaciones@cyberday.example>"
    )]
    pub from: String,

    /// URL every notification is POSTed to as JSON, with an
    /// `Idempotency-Key` (the folio) and an HMAC-SHA256 signature. Off when
    /// not given.
    #[arg(long, env = "DELIVERY_WEBHOOK_URL")]
    pub webhook_url: Option<reqwest::Url>,

    /// A file holding the webhook's signing secret (its whole content);
    /// needed with `--webhook-url`.
    #[arg(long, env = "DELIVERY_WEBHOOK_SECRET_FILE", value_name = "PATH")]
    pub webhook_secret_file: Option<PathBuf>,

    /// How long one webhook call may take before it counts as a
    /// (transient) timeout.
    #[arg(long, env = "DELIVERY_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// Most notifications sent but not yet recorded in the ledger. This is
    /// the window a crash can re-send: at most this many e-mails per process.
    /// Each one holds its slot through the provider's answer and the
    /// ledger's acknowledgement from every in-sync replica, so a smaller
    /// window costs throughput (see the delivery README's benchmark).
    #[arg(long, env = "DELIVERY_MAX_IN_FLIGHT", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_in_flight: u32,

    /// Most attempts per notification (the first included) on transient
    /// failures (SMTP 4xx, timeouts, lost connections).
    #[arg(long, env = "DELIVERY_MAX_ATTEMPTS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Longest a notification is retried before it goes to the dead-letter
    /// topic as `retries_exhausted`.
    #[arg(long, env = "DELIVERY_RETRY_FOR", default_value = "2m", value_parser = parse_duration)]
    pub retry_for: Duration,

    /// First retry delay; each next one doubles (with jitter), up to
    /// `--retry-max-delay`.
    #[arg(long, env = "DELIVERY_RETRY_MIN_DELAY", default_value = "200ms", value_parser = parse_duration)]
    pub retry_min_delay: Duration,

    /// Longest delay between two attempts.
    #[arg(long, env = "DELIVERY_RETRY_MAX_DELAY", default_value = "10s", value_parser = parse_duration)]
    pub retry_max_delay: Duration,

    /// Token bucket protecting the provider: most sends per second (bursts
    /// up to the same number). Default: no limit.
    #[arg(long, env = "DELIVERY_MAX_PER_SECOND")]
    pub max_per_second: Option<NonZeroU32>,

    /// How often the contiguous delivered prefix of each partition is
    /// committed to the group.
    #[arg(long, env = "DELIVERY_COMMIT_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub commit_interval: Duration,

    /// Address of the HTTP server for Prometheus (`/metrics`), e.g.
    /// `0.0.0.0:9090`. Off when not given.
    #[arg(long, env = "DELIVERY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Kafka's consumer group protocol.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProtocol {
    /// KIP-848: the group coordinator computes the assignment and moves
    /// partitions incrementally (Kafka 4.0+ brokers).
    Consumer,
    /// The classic protocol (JoinGroup/SyncGroup, cooperative-sticky here).
    Classic,
}

impl Config {
    pub fn ledger_topic(&self) -> String {
        self.ledger_topic
            .clone()
            .unwrap_or_else(|| format!("{}.delivered", self.notifications_topic))
    }

    pub fn dlq_topic(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.DLQ", self.notifications_topic))
    }

    /// Checks what clap cannot check flag by flag.
    pub fn validate(&self) -> Result<(), String> {
        let topics = [
            self.notifications_topic.clone(),
            self.ledger_topic(),
            self.dlq_topic(),
        ];
        if topics.iter().any(|t| t.trim().is_empty()) {
            return Err("topic names must not be empty".into());
        }
        if topics[0] == topics[1] || topics[0] == topics[2] || topics[1] == topics[2] {
            return Err("--notifications-topic, --ledger-topic and --dlq-topic must differ".into());
        }
        if self.smtp_url.is_none() && self.webhook_url.is_none() {
            return Err("nothing to deliver to: give --smtp-url, --webhook-url or both".into());
        }
        if self.webhook_url.is_some() != self.webhook_secret_file.is_some() {
            return Err("--webhook-url and --webhook-secret-file go together".into());
        }
        if self.group.trim().is_empty() {
            return Err("--group must not be empty".into());
        }
        for (flag, d) in [
            ("--smtp-timeout", self.smtp_timeout),
            ("--webhook-timeout", self.webhook_timeout),
            ("--commit-interval", self.commit_interval),
            ("--retry-min-delay", self.retry_min_delay),
        ] {
            if d.is_zero() {
                return Err(format!("{flag} must be greater than zero"));
            }
        }
        if self.retry_max_delay < self.retry_min_delay {
            return Err("--retry-max-delay must be at least --retry-min-delay".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c =
            Config::try_parse_from(["delivery", "--smtp-url", "smtp://127.0.0.1:1025"]).unwrap();
        assert_eq!(c.group, "cyberday-delivery");
        assert_eq!(c.group_protocol, GroupProtocol::Consumer);
        assert_eq!(c.notifications_topic, "Notifications");
        assert_eq!(c.ledger_topic(), "Notifications.delivered");
        assert_eq!(c.dlq_topic(), "Notifications.DLQ");
        assert_eq!(c.max_in_flight, 128);
        assert_eq!(c.max_attempts, 8);
        assert_eq!(c.retry_for, Duration::from_secs(120));
        assert_eq!(c.max_per_second, None);
        c.validate().unwrap();
    }

    #[test]
    fn bad_settings_are_refused() {
        let none = Config::try_parse_from(["delivery"]).unwrap();
        assert!(none.validate().unwrap_err().contains("nothing to deliver"));
        let hook =
            Config::try_parse_from(["delivery", "--webhook-url", "http://127.0.0.1:1/h"]).unwrap();
        assert!(hook
            .validate()
            .unwrap_err()
            .contains("--webhook-secret-file"));
        assert!(Config::try_parse_from(["delivery", "--webhook-url", "not a url"]).is_err());
        let base = ["delivery", "--smtp-url", "smtp://x:1"];
        for extra in [
            &["--max-in-flight", "0"][..],
            &["--max-attempts", "0"],
            &["--group-protocol", "eager"],
            &["--max-per-second", "0"],
        ] {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            assert!(Config::try_parse_from(&args).is_err(), "{args:?} accepted");
        }
        for extra in [
            &["--ledger-topic", "Notifications"][..],
            &["--dlq-topic", "Notifications.delivered"],
            &["--group", " "],
            &["--retry-min-delay", "2s", "--retry-max-delay", "1s"],
            &["--commit-interval", "0s"],
        ] {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            let c = Config::try_parse_from(&args).unwrap();
            assert!(c.validate().is_err(), "{args:?} accepted");
        }
    }
}
