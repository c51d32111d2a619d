//! The Cyberday notifier benchmark: real brokers, the real
//! `master`, `worker` and `producer` processes, measured side by side in one
//! run and compared with the targets.
//!
//! - [`config`]: flags, and the full and `--quick` presets.
//! - [`procs`]: child processes, their peak RSS and CPU time from `/proc`.
//! - [`kafka`]: an independent view of Kafka: topics, end and committed
//!   offsets, and the bare consumer that sets the ceiling.
//! - [`pipeline`]: master + workers as processes, the producer, the Admin client.
//! - [`phases`]: fill, ceiling, drain, latency at a fixed rate, failover.
//! - [`stats`]: medians, HdrHistogram percentiles, dates.
//! - [`report`]: the results (JSON), the targets, the printed table.
//! - [`run`]: every selected phase in order; a failed phase is reported and
//!   the others still run.

pub mod config;
pub mod kafka;
pub mod phases;
pub mod pipeline;
pub mod procs;
pub mod report;
pub mod stats;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use config::{Args, Phase};
use phases::Bench;
use pipeline::Binaries;
use report::{LatencyRate, Machine, Results};

/// Runs the selected phases and returns what they measured; the caller
/// prints and stores it.
pub fn run(args: &Args) -> Result<Results> {
    let settings = args.settings();
    let unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let date = stats::utc_stamp(unix);
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark's own folder")?
            .to_path_buf(),
    };
    let bins = Binaries::find(&bin_dir)?;
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        bin_dir
            .parent()
            .unwrap_or(&bin_dir)
            .join("bench-logs")
            .join(&date)
    });
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let prefix = format!("bench-{date}");
    let mut notes = vec![];
    let notifications_topic = if bins.notifications_flag {
        Some(format!("{prefix}.Notifications"))
    } else {
        notes.push(
            "this master has no --notifications-topic: measured without the durable \
             Notifications output (console JSON file only)"
                .to_string(),
        );
        None
    };
    let bench = Bench {
        settings: settings.clone(),
        bins,
        prefix: prefix.clone(),
        work_dir: work_dir.clone(),
        notifications_topic: notifications_topic.clone(),
        broker_pids: args.broker_pids.clone(),
        keep_notifications: args.keep_notifications,
        keep_topics: args.keep_topics,
    };
    tracing::info!(work_dir = %work_dir.display(), prefix, "benchmark starting");

    let mut r = Results {
        date,
        command: args
            .command
            .clone()
            .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" ")),
        settings: settings.clone(),
        machine: Machine::probe(),
        notifications_topic,
        notes,
        fill: None,
        ceiling: vec![],
        drain: vec![],
        latency: vec![],
        failover: None,
        floor: vec![],
        ceiling_events_per_sec: None,
        drain_events_per_sec: None,
        drain_ratio: None,
        failover_median_secs: None,
        master_peak_rss_mib: None,
        worker_peak_rss_mib: None,
        targets: vec![],
        errors: vec![],
    };
    let fail = |r: &mut Results, what: String, e: anyhow::Error| {
        tracing::error!(what, error = %format!("{e:#}"), "phase failed");
        r.errors.push(format!("{what}: {e:#}"));
    };

    if settings.cluster_warm_up_secs > 0.0 {
        match bench.warm_cluster(settings.cluster_warm_up_secs) {
            Ok(note) => r.notes.push(note),
            Err(e) => fail(&mut r, "cluster warm-up".into(), e),
        }
    }
    if args.runs_phase(Phase::Ceiling) || args.runs_phase(Phase::Drain) {
        match bench.fill() {
            Ok(f) => r.fill = Some(f),
            Err(e) => fail(&mut r, "fill".into(), e),
        }
    }
    if let Some(filled) = r.fill.clone() {
        // Interleaved, so each drain has a ceiling from the same moment.
        for run in 1..=settings.runs {
            let mut ceiling = None;
            if args.runs_phase(Phase::Ceiling) {
                match bench.ceiling(&filled, run) {
                    Ok(c) => {
                        ceiling = Some(c.events_per_sec);
                        r.ceiling.push(c);
                    }
                    Err(e) => fail(&mut r, format!("ceiling {run}"), e),
                }
            }
            if args.runs_phase(Phase::Drain) {
                match bench.drain(&filled, run) {
                    Ok(mut d) => {
                        d.ratio_to_ceiling = ceiling.map(|c| d.events_per_sec / c);
                        r.drain.push(d);
                    }
                    Err(e) => fail(&mut r, format!("drain {run}"), e),
                }
            }
        }
        // Gone before the latency phase: idle partitions still cost the
        // brokers in every follower fetch.
        bench.done_with(&filled.topic);
    }
    if args.runs_phase(Phase::Latency) {
        for &rate in &settings.rates {
            let warm_up = if settings.latency_warm_up_secs > 0.0 {
                match bench.latency(rate, 0, settings.latency_warm_up_secs) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        fail(&mut r, format!("latency {rate}/s warm-up run"), e);
                        None
                    }
                }
            } else {
                None
            };
            let mut runs = vec![];
            for run in 1..=settings.latency_runs {
                match bench.latency(rate, run, settings.phase_secs) {
                    Ok(l) => runs.push(l),
                    Err(e) => fail(&mut r, format!("latency {rate}/s run {run}"), e),
                }
            }
            if !runs.is_empty() {
                r.latency.push(LatencyRate::new(rate, runs, warm_up));
            }
        }
    }
    if args.runs_phase(Phase::Floor) {
        for &rate in &settings.floor_rates {
            for run in 1..=settings.latency_runs {
                match bench.floor(rate, run) {
                    Ok(f) => r.floor.push(f),
                    Err(e) => fail(&mut r, format!("kafka alone {rate}/s run {run}"), e),
                }
            }
        }
    }
    if args.runs_phase(Phase::Failover) {
        match bench.failover() {
            Ok(f) => r.failover = Some(f),
            Err(e) => fail(&mut r, "failover".into(), e),
        }
    }
    if !args.keep_topics {
        match kafka::delete_topics(&settings.bootstrap_servers, &prefix) {
            Ok(n) => tracing::info!(topics = n, "deleted the benchmark's topics"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not delete the benchmark's topics")
            }
        }
    }
    r.machine.loadavg_end = report::loadavg();
    r.summarize();
    Ok(r)
}

/// Where the JSON goes when `--json` is not given: `bench/results/<date>.json`.
pub fn default_json_path(date: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join(format!("{date}.json"))
}
