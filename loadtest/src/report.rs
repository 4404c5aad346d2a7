//! The report of a run: printed as a table and written as JSON (`--json FILE`). The JSON
//! schema (`schema: "geoloc-loadtest/1"`) is documented in the crate's README.md and pinned
//! by a snapshot test; fields are only ever added.
use serde::Serialize;

/// Identifies the JSON layout.
pub const SCHEMA: &str = "geoloc-loadtest/1";

/// Everything measured in one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema: &'static str,
    /// "sqlite" or "postgres".
    pub backend: String,
    /// Coordinator replicas (1: one process).
    pub replicas: u32,
    /// Simulated probes asked for.
    pub probes: u64,
    /// Probes the coordinator listed as connected and healthy (ListProbes) once all had
    /// connected, and at the end of the run.
    pub probes_held: u64,
    pub probes_held_end: u64,
    /// From the first registration to the last session acked, s.
    pub ramp_s: f64,
    pub memory: Memory,
    pub locates: Calls,
    pub audit: Option<Calls>,
    pub results: Results,
    /// Locate start (the client sends the call) to the request's arrival at a simulated
    /// probe, over every request of every locate (audit addresses excluded: they queue).
    pub dispatch_ms: Latency,
    pub cpu: Cpu,
    /// First few errors the clients saw.
    pub errors: Vec<String>,
    /// Each replica's memory and CPU (`memory` and `cpu` above are their sums).
    pub replica_usage: Vec<ReplicaUsage>,
    /// Sessions the simulated probes opened on another replica after theirs ended.
    pub probe_sessions_moved: u64,
    /// Per audit address, how often it was answered (None without --audit).
    pub audit_answers: Option<AuditAnswers>,
    /// The replica killed during the audit (--kill-one-at), or None.
    pub kill: Option<Kill>,
    /// --compare-kill: the same audit without the kill, run first on a fresh schema.
    pub compare_kill: Option<CompareKill>,
}

/// One replica's resource use; a killed replica's end figures are from just before the
/// kill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaUsage {
    /// `lt-r0`, ... (`single` without cluster mode).
    pub replica_id: String,
    pub idle_rss_bytes: u64,
    pub held_rss_bytes: u64,
    pub end_rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// User + system CPU during the workload, s.
    pub cpu_seconds: f64,
    pub killed: bool,
}

/// The audit's addresses by how often a result came for each (over every ask), as the
/// audit client counts them.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct AuditAnswers {
    /// Addresses with exactly one result event.
    pub answered_once: u64,
    /// Addresses with more than one result event (also across re-asks).
    pub answered_more_than_once: u64,
    /// Addresses with no result event (an error event, or nothing at all).
    pub never_answered: u64,
    /// Result events beyond the first of an address.
    pub duplicate_results: u64,
    /// Addresses that got an error event.
    pub error_events: u64,
    /// `LocateBatch` calls after the first (the stream had failed).
    pub reconnects: u64,
    /// Addresses asked again, over every re-ask.
    pub re_asked: u64,
}

/// The replica SIGKILLed during the audit: the one the audit client was connected to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kill {
    pub replica_id: String,
    /// --kill-one-at.
    pub at_fraction: f64,
    /// Audit start to the kill, s.
    pub at_s: f64,
    /// Audit addresses answered at the kill.
    pub answered_at_kill: u64,
    /// Kill to the audit's next result (from another replica), s; None when none came.
    pub stall_s: Option<f64>,
    /// Addresses the audit asked again after the kill.
    pub re_asked: u64,
}

/// --compare-kill: the same audit run twice in one invocation, each on a fresh schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareKill {
    pub without_kill_audit_wall_s: f64,
    pub with_kill_audit_wall_s: f64,
    /// with / without (the issue asks <= 1.5).
    pub ratio: f64,
    /// The whole report of the run without the kill.
    pub without_kill: Box<Report>,
}

/// The coordinator's memory, bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    /// VmRSS after start, before any probe.
    pub idle_rss_bytes: u64,
    /// VmRSS with every probe connected, before the workload.
    pub held_rss_bytes: u64,
    /// VmRSS at the end of the workload.
    pub end_rss_bytes: u64,
    /// VmHWM (peak) at the end.
    pub peak_rss_bytes: u64,
    /// (held - idle) / probes.
    pub per_probe_bytes: f64,
}

/// Locate calls (or the audit's addresses).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calls {
    pub asked: u64,
    pub answered: u64,
    pub failed: u64,
    /// Answered per second of wall time (first start to last end).
    pub per_s: f64,
    pub wall_s: f64,
    /// Call start to result, ms.
    pub latency_ms: Latency,
}

/// Probe results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Results {
    /// Results the simulated probes sent.
    pub sent: u64,
    /// Probe RTTs in the answers the clients received (`LocateResult.probe_rtts`: taken
    /// in, stored and solved with), locates and audit together.
    pub ingested: u64,
    /// Ingested per second of the workload's wall time.
    pub per_s: f64,
    /// Requests for addresses the probes were not told about (should be 0).
    pub unknown_targets: u64,
    /// New simulated measurements (a request id the probe had not seen).
    pub measurements: u64,
    /// Requests whose id the probe had already: answered again (or when ready) without
    /// measuring.
    pub repeated_requests: u64,
    /// (probe, audit address) pairs measured more than once (the issue asks 0).
    pub double_measurements: u64,
}

/// A latency distribution, ms; None when there was no sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// The coordinator's CPU time during the workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cpu {
    /// User + system, s.
    pub seconds: f64,
    /// Seconds per 1,000 ingested results (None when none were).
    pub per_1000_results: Option<f64>,
}

impl Latency {
    /// Nearest-rank percentiles of `v` (sorted here).
    pub fn of(mut v: Vec<f64>) -> Latency {
        v.retain(|x| x.is_finite());
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            Some(v[rank - 1])
        };
        Latency {
            samples: v.len() as u64,
            p50: pick(0.50),
            p99: pick(0.99),
            max: v.last().copied(),
        }
    }
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1} ms"))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

impl Report {
    /// The human-readable summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<28} {v}\n"));
        line(
            "backend / replicas",
            format!("{} / {}", self.backend, self.replicas),
        );
        line(
            "probes held",
            format!(
                "{} of {} (end: {}), ramp {:.1} s",
                self.probes_held, self.probes, self.probes_held_end, self.ramp_s
            ),
        );
        line(
            "coordinator RSS",
            format!(
                "idle {}, held {}, end {}, peak {}",
                mib(self.memory.idle_rss_bytes),
                mib(self.memory.held_rss_bytes),
                mib(self.memory.end_rss_bytes),
                mib(self.memory.peak_rss_bytes)
            ),
        );
        line(
            "memory per probe",
            format!("{:.1} KiB", self.memory.per_probe_bytes / 1024.0),
        );
        line(
            "locates",
            format!(
                "{} asked, {} answered, {} failed, {:.2}/s, p50 {} p99 {}",
                self.locates.asked,
                self.locates.answered,
                self.locates.failed,
                self.locates.per_s,
                ms(self.locates.latency_ms.p50),
                ms(self.locates.latency_ms.p99)
            ),
        );
        if let Some(a) = &self.audit {
            line(
                "audit",
                format!(
                    "{} addresses, {} answered, {} failed, {:.1} s, {:.2}/s",
                    a.asked, a.answered, a.failed, a.wall_s, a.per_s
                ),
            );
        }
        line(
            "results ingested",
            format!(
                "{} ({} sent), {:.0}/s",
                self.results.ingested, self.results.sent, self.results.per_s
            ),
        );
        line(
            "dispatch latency",
            format!(
                "p50 {} p99 {} max {} ({} requests)",
                ms(self.dispatch_ms.p50),
                ms(self.dispatch_ms.p99),
                ms(self.dispatch_ms.max),
                self.dispatch_ms.samples
            ),
        );
        line(
            "coordinator CPU",
            format!(
                "{:.2} s, {} per 1,000 results",
                self.cpu.seconds,
                self.cpu
                    .per_1000_results
                    .map_or("-".into(), |v| format!("{v:.3} s"))
            ),
        );
        line(
            "probe measurements",
            format!(
                "{} new, {} repeated request ids, {} double (probe, audit address)",
                self.results.measurements,
                self.results.repeated_requests,
                self.results.double_measurements
            ),
        );
        if self.replica_usage.len() > 1 {
            for r in &self.replica_usage {
                line(
                    &format!("replica {}", r.replica_id),
                    format!(
                        "RSS held {}, end {}, CPU {:.2} s{}",
                        mib(r.held_rss_bytes),
                        mib(r.end_rss_bytes),
                        r.cpu_seconds,
                        if r.killed { " (killed)" } else { "" }
                    ),
                );
            }
            line(
                "probe sessions moved",
                self.probe_sessions_moved.to_string(),
            );
        }
        if let Some(a) = &self.audit_answers {
            line(
                "audit answers",
                format!(
                    "{} once, {} more than once, {} never; {} re-asked over {} reconnects",
                    a.answered_once,
                    a.answered_more_than_once,
                    a.never_answered,
                    a.re_asked,
                    a.reconnects
                ),
            );
        }
        if let Some(k) = &self.kill {
            line(
                "kill",
                format!(
                    "SIGKILL {} at {:.1} s ({} answered), stalled {}, {} re-asked",
                    k.replica_id,
                    k.at_s,
                    k.answered_at_kill,
                    k.stall_s.map_or("-".into(), |v| format!("{v:.2} s")),
                    k.re_asked
                ),
            );
        }
        if let Some(c) = &self.compare_kill {
            line(
                "audit wall, kill vs none",
                format!(
                    "{:.1} s vs {:.1} s: ratio {:.2}",
                    c.with_kill_audit_wall_s, c.without_kill_audit_wall_s, c.ratio
                ),
            );
        }
        for e in &self.errors {
            line("error", e.clone());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Report {
        let lat = Latency {
            samples: 100,
            p50: Some(2.5),
            p99: Some(9.0),
            max: Some(12.0),
        };
        Report {
            schema: SCHEMA,
            backend: "sqlite".into(),
            replicas: 1,
            probes: 50,
            probes_held: 50,
            probes_held_end: 50,
            ramp_s: 0.5,
            memory: Memory {
                idle_rss_bytes: 20 << 20,
                held_rss_bytes: 21 << 20,
                end_rss_bytes: 22 << 20,
                peak_rss_bytes: 23 << 20,
                per_probe_bytes: 20971.52,
            },
            locates: Calls {
                asked: 20,
                answered: 20,
                failed: 0,
                per_s: 1.0,
                wall_s: 20.0,
                latency_ms: lat.clone(),
            },
            audit: Some(Calls {
                asked: 10,
                answered: 10,
                failed: 0,
                per_s: 5.0,
                wall_s: 2.0,
                latency_ms: lat.clone(),
            }),
            results: Results {
                sent: 1500,
                ingested: 1500,
                per_s: 75.0,
                unknown_targets: 0,
                measurements: 1500,
                repeated_requests: 0,
                double_measurements: 0,
            },
            dispatch_ms: lat,
            cpu: Cpu {
                seconds: 1.5,
                per_1000_results: Some(1.0),
            },
            errors: Vec::new(),
            replica_usage: vec![ReplicaUsage {
                replica_id: "single".into(),
                idle_rss_bytes: 20 << 20,
                held_rss_bytes: 21 << 20,
                end_rss_bytes: 22 << 20,
                peak_rss_bytes: 23 << 20,
                cpu_seconds: 1.5,
                killed: false,
            }],
            probe_sessions_moved: 0,
            audit_answers: Some(AuditAnswers {
                answered_once: 10,
                answered_more_than_once: 0,
                never_answered: 0,
                duplicate_results: 0,
                error_events: 0,
                reconnects: 0,
                re_asked: 0,
            }),
            kill: None,
            compare_kill: None,
        }
    }

    /// Two replicas, one killed, compared with the run without the kill.
    pub(crate) fn sample_kill() -> Report {
        let base = sample();
        let mut r = sample();
        r.backend = "postgres".into();
        r.replicas = 2;
        r.replica_usage = vec![
            ReplicaUsage {
                replica_id: "lt-r0".into(),
                idle_rss_bytes: 20 << 20,
                held_rss_bytes: 21 << 20,
                end_rss_bytes: 21 << 20,
                peak_rss_bytes: 22 << 20,
                cpu_seconds: 0.5,
                killed: true,
            },
            ReplicaUsage {
                replica_id: "lt-r1".into(),
                idle_rss_bytes: 20 << 20,
                held_rss_bytes: 21 << 20,
                end_rss_bytes: 23 << 20,
                peak_rss_bytes: 24 << 20,
                cpu_seconds: 1.0,
                killed: false,
            },
        ];
        r.probe_sessions_moved = 25;
        r.results.repeated_requests = 3;
        r.results.double_measurements = 2;
        r.audit_answers = Some(AuditAnswers {
            answered_once: 9,
            answered_more_than_once: 1,
            never_answered: 0,
            duplicate_results: 1,
            error_events: 0,
            reconnects: 1,
            re_asked: 5,
        });
        r.kill = Some(Kill {
            replica_id: "lt-r0".into(),
            at_fraction: 0.5,
            at_s: 1.0,
            answered_at_kill: 5,
            stall_s: Some(0.75),
            re_asked: 5,
        });
        r.compare_kill = Some(CompareKill {
            without_kill_audit_wall_s: 2.0,
            with_kill_audit_wall_s: 2.5,
            ratio: 1.25,
            without_kill: Box::new(base),
        });
        r
    }

    #[test]
    fn json_schema_shape() {
        insta::assert_json_snapshot!(sample());
    }

    #[test]
    fn json_schema_shape_kill() {
        insta::assert_json_snapshot!(sample_kill());
    }

    #[test]
    fn text_names_every_figure() {
        let t = sample().text();
        for k in [
            "probes held",
            "memory per probe",
            "results ingested",
            "dispatch latency",
            "per 1,000 results",
            "probe measurements",
        ] {
            assert!(t.contains(k), "{k} missing from\n{t}");
        }
        let t = sample_kill().text();
        for k in [
            "replica lt-r1",
            "(killed)",
            "SIGKILL lt-r0",
            "re-asked",
            "ratio 1.25",
        ] {
            assert!(t.contains(k), "{k} missing from\n{t}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latency::of((1..=100).map(f64::from).collect());
        assert_eq!((l.p50, l.p99, l.max), (Some(50.0), Some(99.0), Some(100.0)));
        let one = Latency::of(vec![f64::NAN, 3.0]);
        assert_eq!((one.samples, one.p50, one.p99), (1, Some(3.0), Some(3.0)));
        assert_eq!(Latency::of(Vec::new()).p50, None);
    }
}
