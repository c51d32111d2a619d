//! Command-line flags shared by `producer`, `master` and `worker`.
//!
//! Each flag has an environment variable because Kubernetes manifests set env.
//! Kafka secrets (`sasl.password`, …) belong in `--kafka-options-file`, not on
//! a command line; [`KafkaArgs`]' `Debug` never shows their values.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Default bootstrap servers: the three nodes of `deploy/local/kafka.sh up`.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094";

/// How to reach Kafka and which topic to read or write.
#[derive(Args, Clone)]
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
        // `--help` would print the variable's value: it may hold a secret.
        hide_env_values = true,
        value_delimiter = ';'
    )]
    pub options: Vec<(String, String)>,

    /// A file of librdkafka properties, one `key=value` per line (`#`
    /// comments and blank lines ignored), read at start: the place for
    /// secrets such as `sasl.password`, which then appear on no command line
    /// and in no log. `-X` options win over the file's.
    #[arg(long, env = "KAFKA_OPTIONS_FILE", value_name = "PATH", value_parser = OptionsFile::read)]
    pub kafka_options_file: Option<OptionsFile>,

    /// How long to wait for the brokers before giving up with an error.
    #[arg(long, env = "KAFKA_CONNECT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub connect_timeout: std::time::Duration,
}

impl KafkaArgs {
    /// The dead-letter topic that follows the input topic's name.
    pub fn dlq_topic(&self) -> String {
        format!("{}.DLQ", self.topic)
    }

    /// Every librdkafka property the user gave, in the order to apply them:
    /// the options file first, then `-X` (which therefore wins).
    pub fn user_options(&self) -> impl Iterator<Item = &(String, String)> {
        let file = self.kafka_options_file.iter().flat_map(|f| &f.entries);
        file.chain(&self.options)
    }
}

/// Shows secret values as `<redacted>`, so a logged config leaks nothing.
impl fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaArgs")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic", &self.topic)
            .field("options", &Redacted(&self.options))
            .field("kafka_options_file", &self.kafka_options_file)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Whether a librdkafka property holds a secret whose value must never be
/// shown: passwords, private keys, OAuth and JAAS settings. Errs on the side
/// of hiding (any key mentioning a password, secret, key material or token).
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        "oauthbearer",
        "key.pem",
        "ssl.key",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// A list of properties whose secret values print as `<redacted>`.
struct Redacted<'a>(&'a [(String, String)]);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, v)| {
                let v = if is_secret_option(k) { "<redacted>" } else { v };
                format!("{k}={v}")
            }))
            .finish()
    }
}

/// librdkafka properties read from `--kafka-options-file`.
#[derive(Clone, PartialEq, Eq)]
pub struct OptionsFile {
    pub path: PathBuf,
    pub entries: Vec<(String, String)>,
}

impl OptionsFile {
    /// Reads and parses the file; errors name the line, never its value.
    pub fn read(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the Kafka options file {path}: {e}"))?;
        let entries = Self::parse(&text).map_err(|e| format!("{path}: {e}"))?;
        Ok(Self {
            path: path.into(),
            entries,
        })
    }

    /// `key=value` lines; `#` comments and blank lines are skipped. The
    /// value is everything after the first `=`, as written (no trimming of
    /// its inside: a password may contain spaces or `=`).
    pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    entries.push((k.trim().to_owned(), v.trim_end_matches('\r').to_owned()))
                }
                _ => {
                    return Err(format!(
                        "line {}: expected key=value (a librdkafka property)",
                        n + 1
                    ))
                }
            }
        }
        Ok(entries)
    }
}

impl fmt::Debug for OptionsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionsFile")
            .field("path", &self.path)
            .field("entries", &Redacted(&self.entries))
            .finish()
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
        // Only the key: the value may be a secret.
        Some((k, _)) => Err(format!(
            "expected KEY=VALUE (a librdkafka property, e.g. -X linger.ms=5), got '{k}=…'"
        )),
        None => Err(format!(
            "expected KEY=VALUE (a librdkafka property, e.g. -X linger.ms=5), got '{s}'"
        )),
    }
}

/// Parses a duration as `humantime` writes them (`250ms`, `15s`, `2m`,
/// `1h 30m`), or a bare number of seconds (`3`, `0.5`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(secs)
            .map_err(|e| format!("bad duration '{s}': {e}"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("expected a duration like 500ms, 15s, 2m or 1h 30m, got '{s}' ({e})"))
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
    fn options_file_lines_and_errors() {
        let text = "# SASL\n\nsecurity.protocol=SASL_SSL\n  sasl.password=a b=c\r\n";
        assert_eq!(
            OptionsFile::parse(text).unwrap(),
            [
                ("security.protocol".into(), "SASL_SSL".into()),
                ("sasl.password".into(), "a b=c".into())
            ]
        );
        let e = OptionsFile::parse("ok=1\nsecret-without-equals\n").unwrap_err();
        assert_eq!(e, "line 2: expected key=value (a librdkafka property)");
        assert!(!e.contains("secret"));
    }

    #[test]
    fn debug_redacts_secret_values_and_the_file_comes_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let file = dir.join("kafka.properties");
        std::fs::write(&file, "sasl.password=hunter2\nlinger.ms=1\n").unwrap();
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            kafka: KafkaArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "x",
            "--kafka-options-file",
            file.to_str().unwrap(),
            "-X",
            "ssl.key.password=s3cr3t",
            "-X",
            "linger.ms=7",
        ])
        .unwrap();
        let shown = format!("{:?}", cli.kafka);
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(shown.contains("linger.ms=7") && shown.contains("<redacted>"));
        let order: Vec<_> = cli.kafka.user_options().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            order,
            [
                "sasl.password",
                "linger.ms",
                "ssl.key.password",
                "linger.ms"
            ]
        );
        assert!(!parse_key_value("=hunter2").unwrap_err().contains("hunter2"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("abc").is_err());
    }
}
