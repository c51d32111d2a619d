//! What the metrics cost on the per-record path, side by side in one run:
//! nanoseconds per observation of the `prometheus-client` histogram and
//! counter the master and workers use, against a histogram of relaxed
//! atomics (one add per bucket and one for the sum: the cheapest a
//! histogram gets) and a bare atomic add, and the HdrHistogram record behind
//! the live page's percentiles. Single-threaded, as on the master's actor;
//! the median of several rounds.
//!
//! `cargo run --release -p bench --example metrics_cost [OBSERVATIONS_PER_ROUND] [ROUNDS]`
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::metrics::{histogram, Counter, LATENCY_SECONDS_BOUNDS};

/// The baseline: fixed bounds, one relaxed atomic per bucket, and the sum.
struct AtomicHistogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Latencies spread over the buckets a run at 10k ev/s fills (1-60 ms).
fn value(i: u64) -> f64 {
    0.001 + (i % 60) as f64 / 1000.0
}

fn ns_per(n: u64, f: impl Fn(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(black_box(i));
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map_or(10_000_000, |a| a.parse().expect("a count"));
    let rounds: usize = args
        .next()
        .map_or(7, |a| a.parse().expect("a count of rounds"));

    let prom = histogram(LATENCY_SECONDS_BOUNDS);
    let atomic = AtomicHistogram::new(LATENCY_SECONDS_BOUNDS);
    let counter = Counter::<u64>::default();
    let bare = AtomicU64::new(0);
    let mut hdr = hdrhistogram::Histogram::<u64>::new_with_max(3_600_000, 3).expect("range");

    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("prometheus-client Histogram::observe", vec![]),
        ("relaxed-atomic histogram (baseline)", vec![]),
        ("prometheus-client Counter::inc", vec![]),
        ("AtomicU64::fetch_add (baseline)", vec![]),
        ("HdrHistogram record (live page)", vec![]),
    ];
    for _ in 0..rounds {
        // Interleaved, so a slower moment of the machine hits every row.
        rows[0].1.push(ns_per(n, |i| prom.observe(value(i))));
        rows[1].1.push(ns_per(n, |i| atomic.observe(value(i))));
        rows[2].1.push(ns_per(n, |_| {
            counter.inc();
        }));
        rows[3].1.push(ns_per(n, |_| {
            bare.fetch_add(1, Ordering::Relaxed);
        }));
        let start = Instant::now();
        for i in 0..n {
            hdr.saturating_record(black_box(i % 60 + 1));
        }
        rows[4].1.push(start.elapsed().as_nanos() as f64 / n as f64);
    }
    println!("{n} observations per round, {rounds} rounds; ns per observation:");
    println!("| what | median | rounds |");
    println!("|---|---|---|");
    for (what, v) in rows {
        let all: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
        println!(
            "| {what} | {:.1} | {} |",
            median(v.clone()),
            all.join(" / ")
        );
    }
    black_box((counter.get(), bare.load(Ordering::Relaxed), hdr.len()));
}
