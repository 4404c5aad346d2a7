//! What the core counts for operators, as plain in-memory metrics (the `prometheus-client`
//! types: counters, gauges, histograms; no I/O). The core records into [`Metrics`]; the
//! operations listener (`crate::ops`) registers them and serves `/metrics`. Gauges that
//! mirror state (probes, locates in flight) are set from that state at each scrape
//! ([`crate::Coordinator::refresh_metrics`]), so they cannot drift.
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::core::measurement::MeasurementOutcome;

/// One label, as `[("name", "value")]`.
pub type Label = [(&'static str, &'static str); 1];

/// Upper bounds of the locate latency buckets, seconds (a locate takes one or two probe
/// budgets: 1.5 to 10 s by default, longer with slow probes).
pub const LOCATE_BUCKETS_S: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

fn locate_histogram() -> Histogram {
    Histogram::new(LOCATE_BUCKETS_S)
}

/// The coordinator's own metrics (names in `README.md`, "Operations").
#[derive(Debug)]
pub struct Metrics {
    /// Probes with an open session.
    pub probes_connected: Gauge,
    /// Probes connected, heartbeating and unflagged.
    pub probes_healthy: Gauge,
    /// Probes (known, connected or not) excluded from solving by a flag.
    pub probes_flagged: Gauge,
    /// Locate runs in progress.
    pub locates_in_flight: Gauge,
    /// Duration of locate runs by outcome (`located` or the failure code), seconds.
    pub locate_seconds: Family<Label, Histogram, fn() -> Histogram>,
    /// Packets the own probes reported sending (every measurement, locate and vetting).
    pub packets_sent: Counter,
    /// Requests to the own probes by how they ended (`answered`, `no-reply`, ...).
    pub measurements: Family<Label, Counter>,
    /// Requests to the own probes that failed, by kind (`timeout`, `disconnected`,
    /// `probe-error`, `rejected`); a silent target (`no-reply`) is not an error.
    pub measurement_errors: Family<Label, Counter>,
    /// Raw measurement rows deleted by the retention (`raw-retention-days`).
    pub retention_deleted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            probes_connected: Gauge::default(),
            probes_healthy: Gauge::default(),
            probes_flagged: Gauge::default(),
            locates_in_flight: Gauge::default(),
            locate_seconds: Family::new_with_constructor(locate_histogram),
            packets_sent: Counter::default(),
            measurements: Family::default(),
            measurement_errors: Family::default(),
            retention_deleted: Counter::default(),
        }
    }
}

impl Metrics {
    /// Counts one answered (or failed) request to an own probe.
    pub fn observe_measurement(&self, outcome: MeasurementOutcome, packets: u64) {
        self.packets_sent.inc_by(packets);
        self.measurements
            .get_or_create(&[("outcome", outcome.as_str())])
            .inc();
        if !matches!(
            outcome,
            MeasurementOutcome::Answered | MeasurementOutcome::NoReply
        ) {
            self.measurement_errors
                .get_or_create(&[("kind", outcome.as_str())])
                .inc();
        }
    }

    /// Records a finished locate run.
    pub fn observe_locate(&self, outcome: &'static str, took: Duration) {
        self.locate_seconds
            .get_or_create(&[("outcome", outcome)])
            .observe(took.as_secs_f64());
    }

    /// Adds these metrics to `registry` under the `geoloc_coordinator_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("geoloc_coordinator");
        r.register(
            "probes_connected",
            "Probes with an open session",
            self.probes_connected.clone(),
        );
        r.register(
            "probes_healthy",
            "Probes connected, heartbeating and not flagged (usable for locating)",
            self.probes_healthy.clone(),
        );
        r.register(
            "probes_flagged",
            "Known probes excluded from solving by a flag",
            self.probes_flagged.clone(),
        );
        r.register(
            "locates_in_flight",
            "Locate runs in progress",
            self.locates_in_flight.clone(),
        );
        r.register(
            "locate_duration_seconds",
            "Duration of locate runs by outcome (located or the failure code)",
            self.locate_seconds.clone(),
        );
        r.register(
            "packets_sent",
            "Packets the own probes reported sending",
            self.packets_sent.clone(),
        );
        r.register(
            "measurements",
            "Requests to the own probes by how they ended",
            self.measurements.clone(),
        );
        r.register(
            "measurement_errors",
            "Requests to the own probes that failed, by kind",
            self.measurement_errors.clone(),
        );
        r.register(
            "retention_deleted_rows",
            "Raw measurement rows deleted by the retention",
            self.retention_deleted.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_kind_and_silence_is_not_an_error() {
        let m = Metrics::default();
        m.observe_measurement(MeasurementOutcome::Answered, 3);
        m.observe_measurement(MeasurementOutcome::NoReply, 3);
        m.observe_measurement(MeasurementOutcome::Timeout, 0);
        assert_eq!(m.packets_sent.get(), 6);
        assert_eq!(
            m.measurement_errors
                .get_or_create(&[("kind", "timeout")])
                .get(),
            1
        );
        assert_eq!(
            m.measurement_errors
                .get_or_create(&[("kind", "no-reply")])
                .get(),
            0
        );
        let mut r = Registry::default();
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("geoloc_coordinator_packets_sent_total 6"),
            "{text}"
        );
        assert!(
            text.contains("geoloc_coordinator_measurement_errors_total{kind=\"timeout\"} 1"),
            "{text}"
        );
    }
}
