//! What the agent counts for operators, served at `/metrics` by the operations listener
//! (`--metrics-listen`, `geoloc_rt::ops`): measurements run, packets sent, errors, and
//! whether a session with the coordinator is open.
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::measure::MeasureResult;

/// One label, as `[("name", "value")]`.
pub type Label = [(&'static str, &'static str); 1];

/// The agent's metrics (names in `README.md`, "Operations").
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Measurement requests carried out, by result (`ok` or `error`).
    pub measurements: Family<Label, Counter>,
    /// Probe packets sent (echo requests, TCP SYNs, traceroute probes).
    pub packets_sent: Counter,
    /// Errors by kind: `invalid-request` (refused before measuring), `measurement` (the
    /// measurement reported an error), `session` (the session with the coordinator ended
    /// or could not be opened).
    pub errors: Family<Label, Counter>,
    /// 1 while a session with the coordinator is open, else 0.
    pub connected: Gauge,
    /// Requests asked again with a request id already measured (a coordinator replica
    /// took a run over), answered without measuring again.
    pub repeated_requests: Counter,
}

impl AgentMetrics {
    /// Counts one finished measurement.
    pub fn observe(&self, r: &MeasureResult) {
        let ping = r.ping.as_ref().map_or(0, |p| u64::from(p.sent));
        let tcp = r.tcp.as_ref().map_or(0, |t| t.ports.len() as u64);
        let trace = r.traceroute.as_ref().map_or(0, |t| t.hops.len() as u64);
        self.packets_sent.inc_by(ping + tcp + trace);
        let failed = r.error.is_some();
        self.measurements
            .get_or_create(&[("result", if failed { "error" } else { "ok" })])
            .inc();
        if failed {
            self.error("measurement");
        }
    }

    /// Counts a request asked again (same request id) and answered from the recent
    /// answers, without measuring.
    pub fn repeated(&self) {
        self.repeated_requests.inc();
    }

    /// Counts one error of `kind`.
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// Records whether a session is open.
    pub fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    /// Adds these metrics to `registry` under the `geoloc_agent_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("geoloc_agent");
        r.register(
            "measurements",
            "Measurement requests carried out, by result",
            self.measurements.clone(),
        );
        r.register(
            "packets_sent",
            "Probe packets sent",
            self.packets_sent.clone(),
        );
        r.register("errors", "Errors by kind", self.errors.clone());
        r.register(
            "repeated_requests",
            "Requests asked again and answered from the recent answers, not measured again",
            self.repeated_requests.clone(),
        );
        r.register(
            "connected",
            "1 while a session with the coordinator is open",
            self.connected.clone(),
        );
    }
}
