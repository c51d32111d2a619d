//! The producer's command line; every flag also reads an environment variable.

use clap::Parser;
use common::cli::{KafkaArgs, LogArgs};

use crate::generate::Ratios;

/// Simulates Cyberday shoppers: writes purchase events (JSON, keyed by id)
/// into the input topic, confirming the delivery of every record.
#[derive(Parser, Debug, Clone)]
#[command(name = "producer", version)]
pub struct Config {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub log: LogArgs,

    /// Records to send, then exit; unbounded when not given.
    #[arg(long, env = "PRODUCER_COUNT")]
    pub count: Option<u64>,

    /// Records per second; 0 sends as fast as the brokers accept. The default
    /// is the original simulator's one record every two seconds.
    #[arg(long, env = "PRODUCER_RATE", default_value_t = 0.5, value_parser = parse_rate)]
    pub rate: f64,

    /// Seed of the generator: the same seed gives the same records. A random
    /// seed is chosen (and logged) when not given.
    #[arg(long, env = "PRODUCER_SEED")]
    pub seed: Option<u64>,

    /// Share of shoppers who look but do not buy (taps 0 or null, no folio).
    #[arg(long, env = "PRODUCER_NO_PURCHASE_RATIO", default_value_t = 0.3)]
    pub no_purchase_ratio: f64,

    /// Share of purchases that took 30 minutes or more.
    #[arg(long, env = "PRODUCER_LONG_RATIO", default_value_t = 0.2)]
    pub long_ratio: f64,

    /// Share of deliberately invalid records, to exercise the dead-letter topic.
    #[arg(long, env = "PRODUCER_INVALID_RATIO", default_value_t = 0.01)]
    pub invalid_ratio: f64,

    /// Partitions of the input topic if the producer has to create it.
    #[arg(long, env = "PRODUCER_PARTITIONS", default_value_t = 6,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
}

impl Config {
    /// The ratios, checked.
    pub fn ratios(&self) -> Result<Ratios, String> {
        Ratios::new(self.no_purchase_ratio, self.long_ratio, self.invalid_ratio)
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "expected records per second, a number >= 0 (0 = as fast as possible), got '{s}'"
        )),
    }
}
