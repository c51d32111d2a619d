//! Command-line flags shared by `producer`, `master` and `worker`.
//!
//! Each flag has an environment variable because Kubernetes manifests set env.

use clap::{Args, ValueEnum};

/// Default bootstrap servers: the three nodes of `deploy/local/kafka.sh up`.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094";

/// How to reach Kafka and which topic to read or write.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port pairs.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = DEFAULT_BOOTSTRAP)]
    pub bootstrap_servers: String,

    /// Input topic of purchase events; its dead-letter topic is `<topic>.DLQ`.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "DataTopic")]
    pub topic: String,

    /// A librdkafka property, as kcat's `-X` (repeatable), e.g.
    /// `-X security.protocol=SASL_SSL`. Applied after ours, so it wins.
    /// In the environment, separate several with `;`.
    #[arg(
        short = 'X',
        value_name = "KEY=VALUE",
        value_parser = parse_key_value,
        env = "KAFKA_OPTIONS",
        value_delimiter = ';'
    )]
    pub options: Vec<(String, String)>,

    /// How long to wait for the brokers before giving up with an error.
    #[arg(long, env = "KAFKA_CONNECT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub connect_timeout: std::time::Duration,
}

impl KafkaArgs {
    /// The dead-letter topic that follows the input topic's name.
    pub fn dlq_topic(&self) -> String {
        format!("{}.DLQ", self.topic)
    }
}

/// Log output shape.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging flags; the level comes from `RUST_LOG` (default `info`).
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Parses `key=value` for `-X`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!(
            "expected KEY=VALUE (a librdkafka property, e.g. -X linger.ms=5), got '{s}'"
        )),
    }
}

/// Parses durations written as `250ms`, `15s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("expected a duration like 500ms, 15s or 2m, got '{s}'"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => {
            return Err(format!(
                "unknown duration unit '{unit}' in '{s}'; use ms, s or m"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration '{s}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn key_value_splits_on_first_equals() {
        assert_eq!(
            parse_key_value("sasl.password=a=b").unwrap(),
            ("sasl.password".into(), "a=b".into())
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("abc").is_err());
    }
}
