//! The benchmark's command line. `--quick` shrinks every phase for a smoke
//! run; explicit flags win over both presets.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use common::cli::{parse_duration, LogArgs};

/// Bootstrap servers of the benchmark's own cluster (`bench/run.sh` starts it
/// with `KAFKA_PORT_BASE=19192`, away from the dev and test clusters).
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:19192,127.0.0.1:19193,127.0.0.1:19194";

/// Measures the Cyberday notifier against the real brokers: the bare-consumer
/// ceiling, the pipeline's drain rate, produce-to-notify latency under load,
/// peak memory, and worker failover. Prints a table; writes the same figures
/// as JSON.
#[derive(Parser, Debug, Clone)]
#[command(name = "cyberday-bench", version)]
pub struct Args {
    /// Kafka bootstrap servers of the cluster to measure on.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = DEFAULT_BOOTSTRAP)]
    pub bootstrap_servers: String,

    /// Smoke run: 100k records, 2 drain runs, 10 s latency phases, 1 latency
    /// run per rate, 2 failovers.
    #[arg(long)]
    pub quick: bool,

    /// Records pre-filled for the ceiling and drain phases [full: 1000000, quick: 100000].
    #[arg(long)]
    pub records: Option<u64>,

    /// Partitions of every benchmark topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,

    /// Runs of the ceiling and of the drain (interleaved) [full: 3, quick: 2].
    #[arg(long)]
    pub runs: Option<usize>,

    /// Producer rates of the latency phase, events/s, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    pub rates: Vec<u32>,

    /// Rates of the Kafka-alone phase (`floor`), events/s, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub floor_rates: Vec<u32>,

    /// How long the producer runs at each rate [full: 60s, quick: 10s].
    #[arg(long, value_parser = parse_duration)]
    pub phase_duration: Option<Duration>,

    /// How long the producer runs at each rate before the measured window
    /// starts: the records of these first seconds are reported apart, as
    /// "ramp" [full: 10s, quick: 2s].
    #[arg(long, value_parser = parse_duration)]
    pub ramp: Option<Duration>,

    /// Before anything is measured, warm the brokers up: 100,000 records
    /// filled and drained by the pipeline, then the pipeline at 10,000
    /// events/s for this long; only a note reports it. A cluster just
    /// started runs cold for minutes (its JIT); 0s for none [full: 90s,
    /// quick: 0s].
    #[arg(long, value_parser = parse_duration)]
    pub cluster_warm_up: Option<Duration>,

    /// A run at each latency rate before the measured ones, this long after
    /// its ramp, reported apart and left out of the medians (the first run
    /// at a new rate was the slowest in every full run); 0s for none [full:
    /// 30s, quick: 0s].
    #[arg(long, value_parser = parse_duration)]
    pub latency_warm_up: Option<Duration>,

    /// Runs of each latency rate [full: 3, quick: 1].
    #[arg(long)]
    pub latency_runs: Option<usize>,

    /// Worker kills in the failover phase [full: 5, quick: 2].
    #[arg(long)]
    pub failover_runs: Option<usize>,

    /// Producer rate while failovers are measured, events/s.
    #[arg(long, default_value_t = 2000)]
    pub failover_rate: u32,

    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ceiling,drain,latency,floor,failover"
    )]
    pub phases: Vec<Phase>,

    /// Seed of the producer, so every run drains the same records.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Where `master`, `worker` and `producer` are (default: next to this binary).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,

    /// Where process logs and notification files go (default:
    /// `<target>/bench-logs/<date>`).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,

    /// The JSON results file (default: `bench/results/<date>.json`).
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Also tail each latency run's topic with a bare consumer, reported as
    /// "Kafka alone, during the run". Off by default: that consumer's fetches
    /// and CPU land on the brokers and cores the measured pipeline runs on
    /// (the `floor` phase measures Kafka alone without the pipeline).
    #[arg(long)]
    pub kafka_tail: bool,

    /// Keep the master's notification files (1M records make ~170 MB each).
    #[arg(long)]
    pub keep_notifications: bool,

    /// Process ids of the Kafka brokers, to report their CPU time per phase
    /// (`bench/run.sh` passes them).
    #[arg(long, value_delimiter = ',')]
    pub broker_pids: Vec<u32>,

    /// Leave the benchmark's topics in the cluster (they are deleted at the end).
    #[arg(long)]
    pub keep_topics: bool,

    /// The command line to record in the results (`bench/run.sh` passes its own).
    #[arg(long)]
    pub command: Option<String>,

    #[command(flatten)]
    pub log: LogArgs,
}

/// One measurement of the benchmark.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Bare librdkafka consumer draining the pre-filled topic.
    Ceiling,
    /// Master + 2 workers draining the same topic.
    Drain,
    /// Produce-to-notify latency at fixed producer rates.
    Latency,
    /// SIGKILL of a worker until its partitions progress under the survivor.
    Failover,
    /// Kafka alone: the producer at each `--floor-rates` rate and a bare
    /// consumer tailing the topic, nothing else running.
    Floor,
}

/// The settings in force after presets and flags.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub mode: &'static str,
    pub bootstrap_servers: String,
    pub records: u64,
    pub partitions: i32,
    pub runs: usize,
    pub rates: Vec<u32>,
    pub floor_rates: Vec<u32>,
    pub phase_secs: f64,
    pub ramp_secs: f64,
    pub latency_warm_up_secs: f64,
    pub cluster_warm_up_secs: f64,
    pub latency_runs: usize,
    pub failover_runs: usize,
    pub failover_rate: u32,
    pub seed: u64,
    pub kafka_tail: bool,
}

/// A duration flag in seconds, or the preset's whole seconds when not given.
fn secs(flag: Option<Duration>, preset: u64) -> f64 {
    flag.unwrap_or(Duration::from_secs(preset)).as_secs_f64()
}

impl Args {
    /// Applies the full or quick preset where a flag was not given.
    pub fn settings(&self) -> Settings {
        let q = self.quick;
        Settings {
            mode: if q { "quick" } else { "full" },
            bootstrap_servers: self.bootstrap_servers.clone(),
            records: self.records.unwrap_or(if q { 100_000 } else { 1_000_000 }),
            partitions: self.partitions,
            runs: self.runs.unwrap_or(if q { 2 } else { 3 }).max(1),
            rates: self.rates.clone(),
            floor_rates: self.floor_rates.clone(),
            phase_secs: secs(self.phase_duration, if q { 10 } else { 60 }),
            ramp_secs: secs(self.ramp, if q { 2 } else { 10 }),
            latency_warm_up_secs: secs(self.latency_warm_up, if q { 0 } else { 30 }),
            cluster_warm_up_secs: secs(self.cluster_warm_up, if q { 0 } else { 90 }),
            latency_runs: self.latency_runs.unwrap_or(if q { 1 } else { 3 }).max(1),
            failover_runs: self.failover_runs.unwrap_or(if q { 2 } else { 5 }).max(1),
            failover_rate: self.failover_rate,
            seed: self.seed,
            kafka_tail: self.kafka_tail,
        }
    }

    pub fn runs_phase(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_overrides() {
        let full = Args::try_parse_from(["b"]).unwrap().settings();
        assert_eq!(
            (full.records, full.runs, full.phase_secs, full.failover_runs),
            (1_000_000, 3, 60.0, 5)
        );
        assert_eq!(
            (
                full.ramp_secs,
                full.latency_warm_up_secs,
                full.cluster_warm_up_secs
            ),
            (10.0, 30.0, 90.0)
        );
        assert_eq!(full.rates, vec![1000, 10_000, 50_000]);
        let quick = Args::try_parse_from(["b", "--quick", "--records", "5000"])
            .unwrap()
            .settings();
        assert_eq!(
            (
                quick.records,
                quick.runs,
                quick.phase_secs,
                quick.failover_runs
            ),
            (5000, 2, 10.0, 2)
        );
        let no_ramp = Args::try_parse_from(["b", "--ramp", "0s"]).unwrap();
        assert_eq!(no_ramp.settings().ramp_secs, 0.0);
        let quick = Args::try_parse_from(["b", "--quick"]).unwrap().settings();
        assert_eq!(
            (
                quick.ramp_secs,
                quick.latency_warm_up_secs,
                quick.cluster_warm_up_secs
            ),
            (2.0, 0.0, 0.0)
        );
        // The bare consumer beside the pipeline costs it latency: opt-in only.
        assert!(!full.kafka_tail);
        let tailed = Args::try_parse_from(["b", "--kafka-tail"]).unwrap();
        assert!(tailed.settings().kafka_tail);
        let some = Args::try_parse_from(["b", "--phases", "ceiling,failover"]).unwrap();
        assert!(some.runs_phase(Phase::Failover) && !some.runs_phase(Phase::Drain));
    }
}
