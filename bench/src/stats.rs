//! Small statistics: medians over runs, latency percentiles from an
//! HdrHistogram, and the UTC date for file names.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Median of the values (mean of the two middle ones for an even count);
/// NaNs are ignored, infinities (a run that timed out) count as the largest.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Median of the values that are present.
pub fn median_of<T>(items: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<f64> {
    median(&items.iter().filter_map(f).collect::<Vec<_>>())
}

/// Largest of the values that are present.
pub fn max_of<T>(items: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<f64> {
    items.iter().filter_map(f).reduce(f64::max)
}

/// A latency histogram in whole milliseconds (the master's `latency_ms`),
/// from 1 ms to one hour at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid histogram bounds")
}

/// Latencies of one run split at a cut (next offset per partition): the
/// ramp, records before it, while the load settles at its rate; and the
/// measured window, records at or past it.
pub struct Split {
    pub ramp: Histogram<u64>,
    pub measured: Histogram<u64>,
}

impl Split {
    pub fn new() -> Self {
        Self {
            ramp: latency_histogram(),
            measured: latency_histogram(),
        }
    }

    /// Records `ms` for the record at `offset` of `partition`; without a
    /// cut yet it belongs to the ramp.
    pub fn record(
        &mut self,
        cut: Option<&BTreeMap<i32, i64>>,
        partition: i32,
        offset: i64,
        ms: u64,
    ) {
        let measured = cut.is_some_and(|c| offset >= c.get(&partition).copied().unwrap_or(0));
        let h = if measured {
            &mut self.measured
        } else {
            &mut self.ramp
        };
        h.saturating_record(ms);
    }
}

impl Default for Split {
    fn default() -> Self {
        Self::new()
    }
}

/// The percentiles the report shows, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50_ms: h.value_at_quantile(0.50) as f64,
            p99_ms: h.value_at_quantile(0.99) as f64,
            p999_ms: h.value_at_quantile(0.999) as f64,
            max_ms: h.max() as f64,
        }
    }
}

/// The UTC date and time of `unix_secs` as `YYYY-MM-DDTHHMMSSZ`, safe in a
/// file name (RFC 3339 from `humantime`, without the colons).
pub fn utc_stamp(unix_secs: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(':', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
        assert_eq!(median(&[f64::INFINITY, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn percentiles_from_a_histogram() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 500.0).abs() <= 1.0);
        assert!((p.p99_ms - 990.0).abs() <= 1.0);
        assert_eq!(p.max_ms, 1000.0);
    }

    #[test]
    fn a_split_sends_records_before_the_cut_to_the_ramp() {
        let mut split = Split::new();
        split.record(None, 0, 500, 90);
        let cut = BTreeMap::from([(0, 100), (1, 200)]);
        split.record(Some(&cut), 0, 99, 80);
        split.record(Some(&cut), 0, 100, 5);
        split.record(Some(&cut), 1, 150, 70);
        split.record(Some(&cut), 1, 250, 6);
        // A partition the cut does not name starts at 0.
        split.record(Some(&cut), 2, 0, 7);
        assert_eq!((split.ramp.len(), split.ramp.max()), (3, 90));
        assert_eq!((split.measured.len(), split.measured.max()), (3, 7));
    }

    #[test]
    fn dates() {
        assert_eq!(utc_stamp(0), "1970-01-01T000000Z");
        assert_eq!(utc_stamp(951_782_400), "2000-02-29T000000Z");
        assert_eq!(utc_stamp(1_735_689_599), "2024-12-31T235959Z");
        assert_eq!(utc_stamp(1_709_210_096), "2024-02-29T123456Z");
    }
}
