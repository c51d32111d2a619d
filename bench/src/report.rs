//! The results: what is kept in the JSON file, the targets of issue 5 as
//! pass/fail, and the table printed on stdout.

use serde::Serialize;

use crate::config::Settings;
use crate::kafka::CeilingRun;
use crate::phases::{DrainRun, FailoverRuns, Filled, FloorRun, LatencyRun};
use crate::procs::Usage;
use crate::stats::{self, median, median_of, Percentiles};

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
    /// `/proc/loadavg` before and after: a busy machine shows here.
    pub loadavg_start: String,
    pub loadavg_end: String,
}

impl Machine {
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default(),
            mem_total_mib: meminfo
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
                .map_or(0, |k| k / 1024),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
        }
    }
}

/// The first three fields of `/proc/loadavg`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every run at one producer rate.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRate {
    pub rate: u32,
    /// Median over runs of each percentile (measured windows).
    pub median: Percentiles,
    /// The same for the runs' ramps (their first seconds at the rate).
    pub ramp_median: Percentiles,
    /// The same for the bare consumer tailing the topic (Kafka alone).
    /// Of the runs with a tail consumer (`--kafka-tail`).
    pub kafka_median: Option<Percentiles>,
    /// Percentiles of all runs' notifications together.
    pub all_runs: Percentiles,
    pub producer_events_per_sec_median: Option<f64>,
    pub kept_rate: bool,
    pub caught_up: bool,
    pub runs: Vec<LatencyRun>,
    /// The run before them (`--latency-warm-up`), in none of the figures above.
    pub warm_up: Option<LatencyRun>,
}

impl LatencyRate {
    /// The warm-up run, if any, then the measured runs.
    pub fn every_run(&self) -> impl Iterator<Item = &LatencyRun> {
        self.warm_up.iter().chain(&self.runs)
    }

    pub fn new(rate: u32, runs: Vec<LatencyRun>, warm_up: Option<LatencyRun>) -> Self {
        let mut all = stats::latency_histogram();
        for r in &runs {
            if let Some(h) = &r.histogram {
                all.add(h).expect("same histogram bounds");
            }
        }
        Self {
            rate,
            median: median_percentiles(&runs.iter().map(|r| &r.latency).collect::<Vec<_>>()),
            ramp_median: median_percentiles(
                &runs.iter().map(|r| &r.ramp_latency).collect::<Vec<_>>(),
            ),
            kafka_median: {
                let tailed: Vec<&Percentiles> = runs
                    .iter()
                    .filter_map(|r| r.kafka_latency.as_ref())
                    .collect();
                (!tailed.is_empty()).then(|| median_percentiles(&tailed))
            },
            all_runs: Percentiles::of(&all),
            producer_events_per_sec_median: median_of(&runs, |r| Some(r.producer.events_per_sec)),
            kept_rate: !runs.is_empty() && runs.iter().all(|r| r.kept_rate),
            caught_up: !runs.is_empty() && runs.iter().all(|r| r.caught_up),
            runs,
            warm_up,
        }
    }
}

/// Each percentile's median over the runs' percentiles.
fn median_percentiles(runs: &[&Percentiles]) -> Percentiles {
    let m = |f: fn(&Percentiles) -> f64| median_of(runs, |p| Some(f(p))).unwrap_or(f64::NAN);
    Percentiles {
        count: runs.iter().map(|p| p.count).sum(),
        p50_ms: m(|p| p.p50_ms),
        p99_ms: m(|p| p.p99_ms),
        p999_ms: m(|p| p.p999_ms),
        max_ms: m(|p| p.max_ms),
    }
}

/// The first columns of both latency tables.
const PERCENTILE_HEADERS: [&str; 5] = ["rate ev/s", "p50", "p99", "p99.9", "max"];

/// A target of issue 5 and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub target: String,
    pub measured: Option<f64>,
    pub unit: String,
    /// `None` when the phase did not run or failed.
    pub pass: Option<bool>,
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub date: String,
    pub command: String,
    pub settings: Settings,
    pub machine: Machine,
    /// `--notifications-topic` given to the master (absent: this master
    /// build has no such flag, so the durable output was not measured).
    pub notifications_topic: Option<String>,
    pub notes: Vec<String>,
    pub fill: Option<Filled>,
    pub ceiling: Vec<CeilingRun>,
    pub drain: Vec<DrainRun>,
    pub latency: Vec<LatencyRate>,
    pub failover: Option<FailoverRuns>,
    /// Kafka alone (`--phases floor`): producer and bare tail, no pipeline.
    pub floor: Vec<FloorRun>,
    pub ceiling_events_per_sec: Option<f64>,
    pub drain_events_per_sec: Option<f64>,
    pub drain_ratio: Option<f64>,
    pub failover_median_secs: Option<f64>,
    pub master_peak_rss_mib: Option<f64>,
    pub worker_peak_rss_mib: Option<f64>,
    pub targets: Vec<Target>,
    pub errors: Vec<String>,
}

impl Results {
    /// Fills the medians, the peaks and the targets from the runs.
    pub fn summarize(&mut self) {
        self.ceiling_events_per_sec = median_of(&self.ceiling, |r| Some(r.events_per_sec));
        self.drain_events_per_sec = median_of(&self.drain, |r| Some(r.events_per_sec));
        self.drain_ratio = median_of(&self.drain, |r| r.ratio_to_ceiling);
        self.failover_median_secs = self.failover.as_ref().and_then(|f| {
            let secs: Vec<f64> = f
                .progress_secs
                .iter()
                .map(|s| s.unwrap_or(f64::INFINITY))
                .collect();
            median(&secs)
        });
        let (masters, workers) = self.usages();
        let peak = |u: &[&Usage]| u.iter().filter_map(|u| u.peak_rss_mib).reduce(f64::max);
        let (master_peak, worker_peak) = (peak(&masters), peak(&workers));
        self.master_peak_rss_mib = master_peak;
        self.worker_peak_rss_mib = worker_peak;

        // A pipeline that fell behind has not notified its slowest records
        // yet: their latency is unknown but larger, so the target fails.
        let p99_10k = self.latency.iter().find(|l| l.rate == 10_000).map(|l| {
            if l.caught_up {
                l.median.p99_ms
            } else {
                f64::INFINITY
            }
        });
        self.targets = vec![
            target(
                "drain / ceiling",
                "≥ 60 %",
                self.drain_ratio.map(|r| r * 100.0),
                "%",
                |v| v >= 60.0,
            ),
            target("p99 at 10k/s", "≤ 25 ms", p99_10k, "ms", |v| v <= 25.0),
            target(
                "worker peak RSS",
                "≤ 64 MiB",
                self.worker_peak_rss_mib,
                "MiB",
                |v| v <= 64.0,
            ),
            target(
                "master peak RSS",
                "≤ 128 MiB",
                self.master_peak_rss_mib,
                "MiB",
                |v| v <= 128.0,
            ),
            target(
                "failover median",
                "≤ 3 s",
                self.failover_median_secs,
                "s",
                |v| v <= 3.0,
            ),
        ];
    }

    /// Every master's and every worker's usage, over all phases.
    fn usages(&self) -> (Vec<&Usage>, Vec<&Usage>) {
        let mut masters = vec![];
        let mut workers = vec![];
        for d in &self.drain {
            masters.push(&d.master);
            workers.extend(&d.workers);
        }
        for r in self.latency.iter().flat_map(LatencyRate::every_run) {
            masters.push(&r.master);
            workers.extend(&r.workers);
        }
        if let Some(f) = &self.failover {
            masters.push(&f.master);
            workers.extend(&f.workers);
        }
        (masters, workers)
    }

    /// The report as text: the headline table, then memory and CPU per phase.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let s = &self.settings;
        let mut out = format!(
            "Cyberday notifier benchmark — {} ({} run)\n\
             machine: {} cores ({}), {} MiB RAM, Linux {}; load {} → {}\n\
             input: {} records, {} partitions, RF 3; notifications topic: {}\n\
             runs: ceiling/drain {}, latency {} × {:.0} s per rate, failover {}\n\n",
            self.date,
            s.mode,
            m.cores,
            m.cpu_model,
            m.mem_total_mib,
            m.kernel,
            m.loadavg_start,
            m.loadavg_end,
            thousands(s.records as f64),
            s.partitions,
            self.notifications_topic
                .as_deref()
                .unwrap_or("off (master has no --notifications-topic)"),
            s.runs,
            s.latency_runs,
            s.phase_secs,
            s.failover_runs,
        );

        let mut rows: Vec<Vec<String>> = vec![];
        let runs_of = |v: Vec<f64>, f: fn(f64) -> String| {
            v.into_iter().map(f).collect::<Vec<_>>().join(" / ")
        };
        let eps = |v: f64| format!("{} ev/s", thousands(v));
        rows.push(vec![
            "ceiling: bare consumer".into(),
            self.ceiling_events_per_sec.map_or("-".into(), eps),
            runs_of(
                self.ceiling.iter().map(|r| r.events_per_sec).collect(),
                thousands,
            ),
            String::new(),
            String::new(),
        ]);
        rows.push(vec![
            "drain: master + 2 workers".into(),
            self.drain_events_per_sec.map_or("-".into(), eps),
            runs_of(
                self.drain.iter().map(|r| r.events_per_sec).collect(),
                thousands,
            ),
            String::new(),
            String::new(),
        ]);
        let records = s.records as f64;
        let processed: Vec<f64> = self
            .drain
            .iter()
            .filter_map(|r| r.processed_secs.map(|p| records / p))
            .collect();
        rows.push(vec![
            "  of which processed (GetStats)".into(),
            median(&processed).map_or("-".into(), eps),
            runs_of(processed, thousands),
            String::new(),
            String::new(),
        ]);
        // The drain writes a notification or a dead letter for most
        // records, replicated like the input: the brokers' write rate (the
        // producer filling the topic, acks=all, in this same run) bounds it.
        if let Some(f) = &self.fill {
            let writes = (f.producer.purchases() + f.producer.invalid) as f64
                / (f.producer.sent.max(1) as f64);
            let bound = f.producer.events_per_sec / writes.max(f64::MIN_POSITIVE);
            rows.push(vec![
                "fill: producer, acks=all".into(),
                eps(f.producer.events_per_sec),
                String::new(),
                String::new(),
                String::new(),
            ]);
            rows.push(vec![
                format!("  write bound (fill ÷ {writes:.2} writes/record)"),
                eps(bound),
                String::new(),
                String::new(),
                String::new(),
            ]);
            rows.push(vec![
                "drain / write bound".into(),
                self.drain_events_per_sec
                    .map_or("-".into(), |d| format!("{:.1} %", d / bound * 100.0)),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        let t = |name: &str| self.targets.iter().find(|t| t.name == name);
        rows.push(
            self.target_row(
                "drain / ceiling",
                t("drain / ceiling"),
                runs_of(
                    self.drain
                        .iter()
                        .filter_map(|r| r.ratio_to_ceiling)
                        .collect(),
                    |v| format!("{:.1}%", v * 100.0),
                ),
            ),
        );
        if let Some(l) = self.latency.iter().find(|l| l.rate == 10_000) {
            rows.push(self.target_row(
                "latency p99 @ 10,000 ev/s",
                t("p99 at 10k/s"),
                runs_of(l.runs.iter().map(|r| r.latency.p99_ms).collect(), |v| {
                    format!("{v}")
                }),
            ));
        }
        rows.push(self.target_row(
            "master peak RSS (all phases)",
            t("master peak RSS"),
            String::new(),
        ));
        rows.push(self.target_row(
            "worker peak RSS (all phases)",
            t("worker peak RSS"),
            String::new(),
        ));
        let failover_runs = self.failover.as_ref().map_or(String::new(), |f| {
            f.progress_secs
                .iter()
                .map(|s| s.map_or("timeout".into(), |v| format!("{v:.2}")))
                .collect::<Vec<_>>()
                .join(" / ")
        });
        rows.push(self.target_row(
            "failover: SIGKILL → progress",
            t("failover median"),
            failover_runs,
        ));
        out += &render(&["measure", "median", "runs", "target", "result"], &rows);

        if !self.latency.is_empty() {
            out += &format!(
                "\nproduce-to-notify latency, ms (median of runs; records of the {}s after a {}s ramp at the rate; kafka alone: a bare consumer tailing the same topic, with --kafka-tail)\n",
                self.settings.phase_secs, self.settings.ramp_secs
            );
            let rows: Vec<Vec<String>> = self
                .latency
                .iter()
                .map(|l| {
                    let (p, k) = (&l.median, &l.kafka_median);
                    vec![
                        thousands(f64::from(l.rate)),
                        format!("{}", p.p50_ms),
                        format!("{}", p.p99_ms),
                        format!("{}", p.p999_ms),
                        format!("{}", p.max_ms),
                        format!("{}", l.ramp_median.p99_ms),
                        k.as_ref()
                            .map_or("-".into(), |k| format!("{} / {}", k.p50_ms, k.p99_ms)),
                        format!(
                            "{}{}",
                            l.producer_events_per_sec_median
                                .map_or("-".into(), thousands),
                            if l.kept_rate { " kept" } else { " FELL SHORT" }
                        ),
                        if l.caught_up {
                            "yes".into()
                        } else {
                            let (n, e): (u64, u64) = l.runs.iter().fold((0, 0), |(n, e), r| {
                                (n + r.notifications, e + r.expected_notifications)
                            });
                            format!(
                                "NO: {} of {} notified, percentiles are of those",
                                thousands(n as f64),
                                thousands(e as f64)
                            )
                        },
                    ]
                })
                .collect();
            let headers = [
                &PERCENTILE_HEADERS[..],
                &[
                    "ramp p99",
                    "kafka alone p50 / p99",
                    "producer ev/s",
                    "caught up",
                ],
            ]
            .concat();
            out += &render(&headers, &rows);
            let warm_ups: Vec<String> = self
                .latency
                .iter()
                .filter_map(|l| {
                    let w = l.warm_up.as_ref()?;
                    Some(format!(
                        "{}/s p99 {} ms",
                        thousands(f64::from(l.rate)),
                        w.latency.p99_ms
                    ))
                })
                .collect();
            if !warm_ups.is_empty() {
                out += &format!(
                    "warm-up run before each rate ({}s after the ramp; in none of the figures above): {}\n",
                    self.settings.latency_warm_up_secs,
                    warm_ups.join(", ")
                );
            }
        }

        if !self.floor.is_empty() {
            out += &format!(
                "\nkafka alone, nothing else running: producer (acks=all) → a bare consumer tailing the topic, ms (median of runs; records after a {}s ramp)\n",
                self.settings.ramp_secs
            );
            let mut rates: Vec<u32> = self.floor.iter().map(|f| f.rate).collect();
            rates.dedup();
            let rows: Vec<Vec<String>> = rates
                .iter()
                .map(|&rate| {
                    let runs: Vec<&FloorRun> =
                        self.floor.iter().filter(|f| f.rate == rate).collect();
                    let m = |f: fn(&FloorRun) -> Option<f64>| {
                        median_of(&runs, |r| f(r)).map_or("-".into(), |v| format!("{v}"))
                    };
                    vec![
                        thousands(f64::from(rate)),
                        m(|r| Some(r.latency.p50_ms)),
                        m(|r| Some(r.latency.p99_ms)),
                        m(|r| Some(r.latency.p999_ms)),
                        m(|r| Some(r.latency.max_ms)),
                        m(|r| Some(r.ramp_latency.p99_ms)),
                        runs.iter()
                            .map(|r| format!("{}", r.latency.p99_ms))
                            .collect::<Vec<_>>()
                            .join(" / "),
                        median_of(&runs, |r| r.broker_cpu_secs)
                            .map_or("-".into(), |c| format!("{c:.1}")),
                        if runs
                            .iter()
                            .all(|r| r.kept_rate && r.received == r.producer.sent)
                        {
                            "yes".into()
                        } else {
                            "NO (see JSON)".into()
                        },
                    ]
                })
                .collect();
            let headers = [
                &PERCENTILE_HEADERS[..],
                &[
                    "ramp p99",
                    "p99 of runs",
                    "broker CPU s",
                    "rate kept, all received",
                ],
            ]
            .concat();
            out += &render(&headers, &rows);
        }

        out += "\nmemory (peak RSS, MiB) and CPU (s) per phase\n";
        let mut rows = vec![];
        let mib = |u: &Usage| u.peak_rss_mib.map_or("-".into(), |v| format!("{v:.1}"));
        let cpu = |u: &[&Usage]| {
            let total: Option<f64> = u.iter().map(|u| u.cpu_secs).sum();
            total.map_or("-".into(), |v| format!("{v:.1}"))
        };
        let mut phase_row = |name: String,
                             wall: Option<f64>,
                             master: &Usage,
                             workers: &[Usage],
                             brokers: Option<f64>| {
            let w: Vec<&Usage> = workers.iter().collect();
            rows.push(vec![
                name,
                wall.map_or("-".into(), |v| format!("{v:.1}")),
                mib(master),
                workers.iter().map(mib).collect::<Vec<_>>().join(" / "),
                cpu(&[master]),
                cpu(&w),
                brokers.map_or("-".into(), |v| format!("{v:.1}")),
            ]);
        };
        for (i, d) in self.drain.iter().enumerate() {
            phase_row(
                format!("drain {}", i + 1),
                Some(d.secs),
                &d.master,
                &d.workers,
                d.broker_cpu_secs,
            );
        }
        for l in &self.latency {
            for r in l.every_run() {
                let run = match r.run {
                    0 => "warm-up".to_string(),
                    n => format!("run {n}"),
                };
                phase_row(
                    format!("latency {} ev/s {run}", thousands(f64::from(l.rate))),
                    Some(r.producer.secs),
                    &r.master,
                    &r.workers,
                    r.broker_cpu_secs,
                );
            }
        }
        if let Some(f) = &self.failover {
            phase_row("failover".into(), None, &f.master, &f.workers, None);
        }
        out += &render(
            &[
                "phase",
                "wall s",
                "master",
                "workers",
                "master CPU",
                "workers CPU",
                "brokers CPU",
            ],
            &rows,
        );
        for n in &self.notes {
            out += &format!("note: {n}\n");
        }
        for e in &self.errors {
            out += &format!("ERROR: {e}\n");
        }
        out
    }

    fn target_row(&self, name: &str, t: Option<&Target>, runs: String) -> Vec<String> {
        match t {
            Some(t) => vec![
                name.into(),
                t.measured.map_or("-".into(), |v| {
                    if v.is_infinite() {
                        "incomplete".into()
                    } else {
                        format!("{v:.2} {}", t.unit)
                    }
                }),
                runs,
                t.target.clone(),
                verdict(t.pass),
            ],
            None => vec![name.into(), "-".into(), runs, String::new(), String::new()],
        }
    }
}

fn target(
    name: &str,
    goal: &str,
    measured: Option<f64>,
    unit: &str,
    ok: fn(f64) -> bool,
) -> Target {
    Target {
        name: name.into(),
        target: goal.into(),
        measured,
        unit: unit.into(),
        pass: measured.filter(|v| !v.is_nan()).map(ok),
    }
}

fn verdict(pass: Option<bool>) -> String {
    match pass {
        Some(true) => "PASS".into(),
        Some(false) => "FAIL".into(),
        None => "n/a".into(),
    }
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// Left-aligned columns, two spaces apart.
fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s += c;
            if i + 1 < cells.len() {
                s += &" ".repeat(widths[i] - c.chars().count() + 2);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    out += &line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_tables() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        let t = render(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "a    bb\n---  --\nxxx  y\n");
    }

    #[test]
    fn targets_pass_and_fail() {
        assert_eq!(
            target("x", "≤ 3 s", Some(2.0), "s", |v| v <= 3.0).pass,
            Some(true)
        );
        assert_eq!(
            target("x", "≤ 3 s", Some(f64::INFINITY), "s", |v| v <= 3.0).pass,
            Some(false)
        );
        assert_eq!(target("x", "≤ 3 s", None, "s", |v| v <= 3.0).pass, None);
    }
}
