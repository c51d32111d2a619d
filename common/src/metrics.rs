//! Prometheus metrics without a metrics library: histograms on atomics
//! (cheap enough for a per-record path: one relaxed add per bucket, sum and
//! count) and a writer of the text exposition format (version 0.0.4), which
//! the master and the worker fill at scrape time from what they already
//! count.

use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bounds of a latency histogram in milliseconds: 1 ms to 60 s.
pub const LATENCY_MS_BOUNDS: &[u64] = &[
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// Bounds of a records-per-batch histogram.
pub const BATCH_RECORDS_BOUNDS: &[u64] = &[1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 5_000];

/// Bounds of a bytes-per-batch histogram: 256 B to 4 MiB.
pub const BATCH_BYTES_BOUNDS: &[u64] = &[
    256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304,
];

/// A histogram of integer observations with fixed upper bounds. Exposed
/// multiplied by `scale` (e.g. observed in ms, exposed in seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    scale: f64,
    /// One per bound, plus +Inf; not cumulative.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64], scale: f64) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "sorted bounds");
        Self {
            bounds,
            scale,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The counts now. Not atomic as a whole: a scrape racing an observation
    /// may see its bucket and not yet its sum, which Prometheus tolerates.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            scale: self.scale,
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    bounds: &'static [u64],
    scale: f64,
    buckets: Vec<u64>,
    sum: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// What was observed since `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let mut window = self.clone();
        for (n, then) in window.buckets.iter_mut().zip(&earlier.buckets) {
            *n = n.saturating_sub(*then);
        }
        window.sum = self.sum.saturating_sub(earlier.sum);
        window
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), in the
    /// observed unit; the last bound for the +Inf bucket; `None` when empty.
    pub fn quantile_bound(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(*self.bounds.get(i).unwrap_or(self.bounds.last()?));
            }
        }
        self.bounds.last().copied()
    }
}

/// A text exposition being written: families in the order written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// `# HELP` and `# TYPE` of a family; its samples follow.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.text, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        self
    }

    /// One sample line.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.text.push_str(name);
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {value}");
        self
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A whole histogram family of one series.
    pub fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) -> &mut Self {
        self.family(name, "histogram", help);
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = match h.bounds.get(i) {
                Some(b) => format_float(*b as f64 * h.scale),
                None => "+Inf".to_owned(),
            };
            self.text.push_str(name);
            self.text.push_str("_bucket");
            write_labels(&mut self.text, &[], Some(&le));
            let _ = writeln!(self.text, " {cumulative}");
        }
        let sum = format_float(h.sum as f64 * h.scale);
        let _ = writeln!(self.text, "{name}_sum {sum}");
        let _ = writeln!(self.text, "{name}_count {cumulative}");
        self
    }

    /// Gauge families with one sample per partition of `rows` (a row whose
    /// value is `None` has no sample in that family).
    pub fn partition_gauges<T>(
        &mut self,
        gauges: &[PartitionGauge<T>],
        rows: &[(i32, T)],
    ) -> &mut Self {
        for g in gauges {
            self.family(g.name, "gauge", g.help);
            for (partition, row) in rows {
                if let Some(v) = (g.value)(row) {
                    self.sample(g.name, &[("partition", &partition.to_string())], v);
                }
            }
        }
        self
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// A gauge family over per-partition rows of `T`; see
/// [`Exposition::partition_gauges`].
pub struct PartitionGauge<T> {
    pub name: &'static str,
    pub help: &'static str,
    /// The row's value; `None` while unknown (no sample).
    pub value: fn(&T) -> Option<i64>,
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    for (i, (k, v)) in all.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A float as Prometheus reads it, without a trailing `.0` noise for
/// integers and without exponent surprises for small bounds.
fn format_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_exposed_cumulative_and_scaled() {
        let h = Histogram::new(&[10, 100], 0.001);
        for v in [3, 10, 11, 500] {
            h.observe(v);
        }
        let mut e = Exposition::new();
        e.histogram("x_seconds", "latency", &h.snapshot());
        assert_eq!(
            e.finish(),
            "# HELP x_seconds latency\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"0.01\"} 2\nx_seconds_bucket{le=\"0.1\"} 3\n\
             x_seconds_bucket{le=\"+Inf\"} 4\nx_seconds_sum 0.524\nx_seconds_count 4\n"
        );
    }

    #[test]
    fn quantiles_come_from_the_window_between_two_snapshots() {
        let h = Histogram::new(&[10, 100, 1000], 1.0);
        h.observe(5000);
        let before = h.snapshot();
        assert_eq!(
            before.quantile_bound(0.5),
            Some(1000),
            "+Inf reports the last bound"
        );
        for _ in 0..98 {
            h.observe(7);
        }
        h.observe(50);
        h.observe(700);
        let window = h.snapshot().since(&before);
        assert_eq!(window.count(), 100);
        assert_eq!(window.quantile_bound(0.5), Some(10));
        assert_eq!(window.quantile_bound(0.99), Some(100));
        assert_eq!(window.quantile_bound(1.0), Some(1000));
        assert_eq!(h.snapshot().since(&h.snapshot()).quantile_bound(0.5), None);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::new();
        e.sample("m", &[("a", "x\"y\\z\nw"), ("b", "2")], 1);
        assert_eq!(e.finish(), "m{a=\"x\\\"y\\\\z\\nw\",b=\"2\"} 1\n");
    }
}
