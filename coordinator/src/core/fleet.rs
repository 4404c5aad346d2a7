//! The own probe fleet as a [`MeasurementSource`]: the registry's healthy probes are the
//! vantage points; each is asked over its session, one request at a time.
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered, StreamExt};

use crate::core::measurement::{MeasurementOutcome, MeasurementRequest, RequestDefaults};
use crate::core::metrics::Metrics;
use crate::core::registry::{Outcome, Registry};
use crate::core::source::{Cost, MeasureSpec, MeasurementSource, Observation, VantagePoint};
use crate::core::throttle::Throttle;
use crate::unix_ms;

/// Time left below which no traceroute fallback is tried, ms.
const MIN_TRACEROUTE_BUDGET_MS: u64 = 300;

/// The probes that registered with this coordinator: who they are (the registry), how fast
/// they may register (the throttle), and how they are asked.
pub struct Fleet {
    pub registry: Registry,
    /// Registration rate limits.
    pub throttle: Throttle,
    /// What every request carries.
    pub defaults: RequestDefaults,
    /// After a restart, vantage points are awaited (up to this long from `started`) until
    /// `expected` probes are healthy again.
    reconnect_grace: Duration,
    started: Instant,
    expected: usize,
    closed: AtomicBool,
    /// Where every request's outcome and packets are counted.
    pub metrics: Arc<Metrics>,
}

impl Fleet {
    pub fn new(
        registry: Registry,
        defaults: RequestDefaults,
        reconnect_grace: Duration,
        expected: usize,
    ) -> Fleet {
        Fleet {
            registry,
            throttle: Throttle::default(),
            defaults,
            reconnect_grace,
            started: Instant::now(),
            expected,
            closed: AtomicBool::new(false),
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// Ends every session; vantage points are no longer awaited.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.registry.close_all();
    }

    /// Sends one request to `probe` and waits (budget + a small grace for transit); the
    /// outcome and the packets are counted in [`Fleet::metrics`].
    pub async fn ask(
        &self,
        probe: &VantagePoint,
        req: MeasurementRequest,
        budget: Duration,
    ) -> Observation {
        let o = self.ask_uncounted(probe, req, budget).await;
        self.metrics
            .observe_measurement(o.outcome, o.result.packets_sent());
        o
    }

    async fn ask_uncounted(
        &self,
        probe: &VantagePoint,
        req: MeasurementRequest,
        budget: Duration,
    ) -> Observation {
        let grace = (budget / 5).min(Duration::from_millis(1000));
        let request_id = req.request_id.clone();
        let target = req.target;
        let fail = |o: MeasurementOutcome, e: String| {
            Observation::failed(probe.clone(), target, request_id.clone(), o, e)
        };
        match self.registry.measure(&probe.id, req, budget + grace).await {
            Outcome::Answer(r) => {
                let mut result = *r;
                let outcome = if result.request_id != request_id {
                    MeasurementOutcome::ProbeError
                } else if result.best_rtt().is_some() {
                    MeasurementOutcome::Answered
                } else {
                    MeasurementOutcome::NoReply
                };
                if result.request_id.is_empty() {
                    result.request_id = request_id.clone();
                }
                if result.target.is_empty() {
                    result.target = target.to_string();
                }
                Observation {
                    error: result.error.clone(),
                    result,
                    request_id,
                    vantage_point: probe.clone(),
                    target,
                    outcome,
                    at_unix_ms: unix_ms(),
                }
            }
            Outcome::Rejected(m) => fail(MeasurementOutcome::Rejected, m),
            Outcome::ProbeError(m) => fail(MeasurementOutcome::ProbeError, m),
            Outcome::Timeout => fail(
                MeasurementOutcome::Timeout,
                format!("no answer within {} ms", budget.as_millis()),
            ),
            Outcome::Disconnected => fail(
                MeasurementOutcome::Disconnected,
                "probe session ended".to_string(),
            ),
            Outcome::NotConnected => fail(
                MeasurementOutcome::Disconnected,
                "probe not connected".to_string(),
            ),
        }
    }

    /// One probe, one target: a ping; if the target stays silent and time remains, a TCP
    /// handshake (targets that drop ICMP often answer SYNs, with SYN/ACK or RST) and a
    /// traceroute (its last hop, for a target that answers nothing) at the same time.
    pub(crate) async fn measure_target(
        &self,
        probe: VantagePoint,
        ip: IpAddr,
        budget: Duration,
        ping_count: u32,
        job: Option<&str>,
    ) -> super::source::VantageResult {
        let start = tokio::time::Instant::now();
        let deadline = start + budget;
        let mut measurements = Vec::new();
        // A keyed run's request ids are its own (see `MeasureSpec::job`).
        let id = |n: u32| job.map(|j| format!("{j}.{}.{n}", probe.id));
        let mut ping = self.defaults.ping(ip, ping_count, budget);
        if let Some(i) = id(0) {
            ping.request_id = i;
        }
        let first = self.ask(&probe, ping, budget).await;
        let target_silent = first.outcome == MeasurementOutcome::NoReply;
        // What the probe says its ping took. A request asked again (a keyed run taken over)
        // is answered at once from the probe's cache, but its run had only this much of
        // the budget left then: the fallback is decided as it was, so a taken-over run does
        // not send the probe a traceroute the first attempt never sent. Never more than
        // the time really left (a probe cannot buy itself time).
        let took = Duration::from_millis(
            first
                .result
                .finished_unix_ms
                .saturating_sub(first.result.started_unix_ms),
        )
        .min(budget);
        measurements.push(first);
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(budget - took);
        if target_silent && left.as_millis() as u64 >= MIN_TRACEROUTE_BUDGET_MS {
            let mut trace = self.defaults.tcp_and_traceroute(ip, left);
            if let Some(i) = id(1) {
                trace.request_id = i;
            }
            measurements.push(self.ask(&probe, trace, left).await);
        }
        let packets = measurements.iter().map(|m| m.result.packets_sent()).sum();
        super::source::VantageResult {
            vantage_point: probe,
            observations: measurements,
            cost: Cost {
                packets,
                credits: 0,
            },
        }
    }
}

impl MeasurementSource for Fleet {
    fn name(&self) -> &'static str {
        "fleet"
    }

    fn has_fleet_probes(&self) -> bool {
        true
    }

    /// The healthy probes. During the reconnect grace after a start, waits until the probes
    /// seen before the restart are back (or the grace ends), so a batch resumed right after
    /// a restart is neither refused nor measured from a handful.
    fn vantage_points(&self) -> BoxFuture<'_, Vec<VantagePoint>> {
        Box::pin(async move {
            loop {
                let healthy = self.registry.healthy();
                if healthy.len() >= self.expected
                    || self.started.elapsed() >= self.reconnect_grace
                    || self.closed.load(Ordering::SeqCst)
                {
                    return healthy.iter().map(|p| p.vantage_point()).collect();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    fn none_available(&self) -> String {
        format!(
            "no healthy probe to measure from ({} known, none connected, heartbeating and unflagged)",
            self.registry.len()
        )
    }

    fn measure(
        &self,
        spec: MeasureSpec,
        from: Vec<VantagePoint>,
    ) -> BoxStream<'_, super::source::VantageResult> {
        from.into_iter()
            .map(|vp| {
                let job = spec.job.clone();
                async move {
                    self.measure_target(
                        vp,
                        spec.target,
                        spec.budget,
                        spec.ping_count,
                        job.as_deref(),
                    )
                    .await
                }
            })
            .collect::<FuturesUnordered<_>>()
            .boxed()
    }
}
