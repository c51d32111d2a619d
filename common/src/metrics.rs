//! Prometheus metrics through the `prometheus-client` crate (the Prometheus
//! project's own Rust client), in the text exposition format 0.0.4 that
//! every Prometheus and `promtool check metrics` read.
//!
//! Two kinds of metric, as the library intends:
//! - instruments the record path updates (counters, histograms), each
//!   registered once in a process's [`Registry`];
//! - values the process already keeps elsewhere (the master's coordinator
//!   counters, offsets, per-partition views), written at scrape time by a
//!   [`Collector`] through [`Families`].
//!
//! Histogram bounds are shared here so master and worker agree on them.

use std::fmt;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Bounds of a latency histogram in seconds: 1 ms to 60 s.
pub const LATENCY_SECONDS_BOUNDS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Bounds of a records-per-batch histogram.
pub const BATCH_RECORDS_BOUNDS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 5_000.0,
];

/// Bounds of a bytes-per-batch histogram: 256 B to 4 MiB.
pub const BATCH_BYTES_BOUNDS: &[f64] = &[
    256.0,
    1_024.0,
    4_096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
];

/// A histogram with fixed `bounds`.
pub fn histogram(bounds: &[f64]) -> Histogram {
    Histogram::new(bounds.iter().copied())
}

/// The text exposition of everything in `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String fails only if an encoder does; ours never do.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        tracing::error!(error = %e, "encoding the metrics failed");
    }
    text
}

/// The label set of an unlabelled sample.
const NO_LABELS: [(&str, &str); 0] = [];

/// Writes families at scrape time, from values kept elsewhere. Counter names
/// are given without `_total`: the encoder adds it, as the library does for
/// registered counters.
pub struct Families<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl<'a> Families<'a> {
    pub fn new(encoder: DescriptorEncoder<'a>) -> Self {
        Self { encoder }
    }

    /// One unlabelled counter.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        self.counters(name, help, [(NO_LABELS, value)])
    }

    /// One unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) -> fmt::Result {
        self.gauges(name, help, [(NO_LABELS, value)])
    }

    /// A counter family, one sample per label set.
    pub fn counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) -> fmt::Result {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
        self.family(name, help, MetricType::Counter, samples)
    }

    /// A gauge family, one sample per label set.
    pub fn gauges<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, i64)>,
    ) -> fmt::Result {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
        self.family(name, help, MetricType::Gauge, samples)
    }

    fn family<L: EncodeLabelSet, M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (L, M)>,
    ) -> fmt::Result {
        let mut m = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, metric) in samples {
            metric.encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// Gauge families with one sample per partition of `rows` (a row whose
    /// value is `None` has no sample in that family).
    pub fn partition_gauges<T>(
        &mut self,
        gauges: &[PartitionGauge<T>],
        rows: &[(i32, T)],
    ) -> fmt::Result {
        for g in gauges {
            let samples = rows.iter().filter_map(|(partition, row)| {
                (g.value)(row).map(|v| ([("partition", partition.to_string())], v))
            });
            self.gauges(g.name, g.help, samples)?;
        }
        Ok(())
    }
}

/// A gauge family over per-partition rows of `T`; see
/// [`Families::partition_gauges`].
pub struct PartitionGauge<T> {
    pub name: &'static str,
    pub help: &'static str,
    /// The row's value; `None` while unknown (no sample).
    pub value: fn(&T) -> Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
            let mut f = Families::new(encoder);
            f.counter("c", "a counter", 3)?;
            f.gauges("g", "by key", [([("a", "x\"y\\z\nw")], 1)])?;
            f.partition_gauges(
                &[PartitionGauge {
                    name: "p",
                    help: "per partition",
                    value: |v: &i64| (*v >= 0).then_some(*v),
                }],
                &[(0, 5), (1, -1)],
            )
        }
    }

    #[test]
    fn a_histogram_is_exposed_cumulative_in_seconds() {
        let mut registry = Registry::default();
        let h = histogram(&[0.01, 0.1]);
        registry.register("x_seconds", "latency", h.clone());
        for v in [0.003, 0.01, 0.011, 0.5] {
            h.observe(v);
        }
        let text = encode(&registry);
        for line in [
            "# TYPE x_seconds histogram",
            "x_seconds_bucket{le=\"0.01\"} 2",
            "x_seconds_bucket{le=\"0.1\"} 3",
            "x_seconds_bucket{le=\"+Inf\"} 4",
            "x_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }

    #[test]
    fn collected_families_are_named_typed_and_escaped() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        let text = encode(&registry);
        for line in [
            "# TYPE c_total counter",
            "c_total 3",
            "# TYPE g gauge",
            "g{a=\"x\\\"y\\\\z\\nw\"} 1",
            "p{partition=\"0\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(!text.contains("p{partition=\"1\"}"), "{text}");
    }
}
