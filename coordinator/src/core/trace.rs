//! A client's traceroute toward one address from one probe of the fleet (`Trace`, `geoloc
//! know IP --traceroute`). Admitted exactly like a locate run: the caller's key and quotas,
//! the target policy, the target's packet budget, and only vetted, unflagged, healthy probes
//! ([`crate::core::vetting::Vetting::keep_vetted`]). The request is built by the fleet's one
//! builder ([`crate::core::measurement::RequestDefaults::traceroute`]) and the answer was
//! checked at the gRPC edge like every other answer (`crate::grpc::validate::answer`:
//! matching request id and target, hops within the TTL asked, finite RTTs). Nothing is
//! stored but the budget counters.
use std::net::IpAddr;
use std::time::Duration;

use geoloc_engine::{distance_km, LatLon, Solution};

use crate::core::access::Caller;
use crate::core::locate::{FailureCode, LocateFailure, MAX_TIMEOUT_MS};
use crate::core::measurement::{MeasurementOutcome, FALLBACK_MAX_TTL, MAX_TRACE_TTL};
use crate::core::source::VantagePoint;
use crate::core::target;
use crate::{unix_ms, Coordinator};

/// What a client asks.
#[derive(Debug, Clone, Default)]
pub struct TraceParams {
    /// The target, an address literal.
    pub ip: String,
    /// The probe to trace from; '' = chosen by [`ProbeChoice`]'s rules.
    pub probe_id: String,
    /// Largest TTL, 0 = [`FALLBACK_MAX_TTL`]; above [`MAX_TRACE_TTL`] is refused.
    pub max_ttl: u32,
    /// The probe's budget, ms; 0 = the coordinator's probe timeout.
    pub timeout_ms: u32,
    /// Who asks.
    pub caller: Caller,
}

/// How the probe was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeChoice {
    /// The client named it.
    Requested,
    /// Nearest the estimate of the address's newest stored result.
    NearestStored,
    /// Nearest the address's GeoIP position.
    NearestGeoIp,
    /// Nothing known of the address: the first healthy vetted probe by id.
    First,
}

impl ProbeChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeChoice::Requested => "requested",
            ProbeChoice::NearestStored => "nearest-stored",
            ProbeChoice::NearestGeoIp => "nearest-geoip",
            ProbeChoice::First => "first",
        }
    }
}

/// One TTL of the path.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceHop {
    pub ttl: u32,
    /// Who answered; None for a silent TTL.
    pub address: Option<IpAddr>,
    /// RTTs of the answers, ms.
    pub rtt_ms: Vec<f64>,
}

/// A finished trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Traced {
    /// The target, canonical text.
    pub ip: String,
    pub probe: VantagePoint,
    pub choice: ProbeChoice,
    /// Ascending TTLs, each once.
    pub hops: Vec<TraceHop>,
    /// The target answered.
    pub reached: bool,
    pub packets_sent: u64,
    pub max_ttl: u32,
    /// Why the probe ended early ('' when it did not).
    pub error: String,
    pub finished_unix_ms: i64,
}

fn invalid(m: String) -> LocateFailure {
    LocateFailure::new(FailureCode::InvalidArgument, m)
}

/// Checks what a client asks before anything else: (max TTL, budget, probe id).
fn check(p: &TraceParams) -> Result<(u32, u32), LocateFailure> {
    if p.max_ttl > MAX_TRACE_TTL {
        return Err(invalid(format!(
            "max_ttl {} above {MAX_TRACE_TTL}",
            p.max_ttl
        )));
    }
    if p.timeout_ms > MAX_TIMEOUT_MS {
        return Err(invalid(format!(
            "timeout_ms {} above {MAX_TIMEOUT_MS}",
            p.timeout_ms
        )));
    }
    if !p.probe_id.is_empty() && !crate::core::landmarks::valid_id(&p.probe_id) {
        return Err(invalid(format!(
            "bad probe_id {:?}: 1..=64 characters of A-Z a-z 0-9 . _ -",
            crate::core::text::bounded_text(&p.probe_id, 80)
        )));
    }
    let max_ttl = if p.max_ttl == 0 {
        FALLBACK_MAX_TTL
    } else {
        p.max_ttl
    };
    Ok((max_ttl, p.timeout_ms))
}

/// Where the target is thought to be, and by which rule: the newest stored result's
/// estimate, else the GeoIP position.
async fn known_position(
    coord: &Coordinator,
    ip: IpAddr,
    ip_s: &str,
) -> crate::Result<Option<(LatLon, ProbeChoice)>> {
    if let Some(r) = coord.storage.latest_done_result(ip_s).await? {
        let sol = r
            .solution_json
            .as_deref()
            .and_then(|t| serde_json::from_str::<Solution>(t).ok());
        if let Some(sol) = sol {
            return Ok(Some((sol.estimate, ProbeChoice::NearestStored)));
        }
    }
    let geo = coord.geoip.as_ref().and_then(|g| g.lookup(ip));
    Ok(geo
        .and_then(|g| LatLon::checked(g.lat, g.lon).ok())
        .map(|p| (p, ProbeChoice::NearestGeoIp)))
}

/// The vantage point nearest `pos` (ties: smallest id); the first by id without `pos`.
pub fn choose(vps: &[VantagePoint], pos: Option<LatLon>) -> Option<&VantagePoint> {
    let key = |v: &VantagePoint| pos.map_or(0.0, |p| distance_km(p, v.pos));
    vps.iter().min_by(|a, b| {
        key(a)
            .total_cmp(&key(b))
            .then_with(|| a.id.as_str().cmp(b.id.as_str()))
    })
}

/// Traces toward `p.ip` (see the module's documentation for the admission).
pub async fn run(coord: &Coordinator, p: TraceParams) -> Result<Traced, LocateFailure> {
    let ip = target::check(&p.ip, coord.config.allow_private).map_err(LocateFailure::refused)?;
    let (max_ttl, timeout_ms) = check(&p)?;
    let ip_s = target::canonical(ip);
    let _in_flight = coord.locate_guard();
    if coord.is_shutting_down() {
        return Err(LocateFailure::new(
            FailureCode::Interrupted,
            "the coordinator is shutting down",
        ));
    }
    if !p.probe_id.is_empty() && coord.fleet.registry.get(&p.probe_id).is_none() {
        return Err(invalid(format!("unknown probe {:?}", p.probe_id)));
    }
    let mut vps: Vec<VantagePoint> = coord
        .fleet
        .registry
        .healthy()
        .iter()
        .map(|s| s.vantage_point())
        .collect();
    let no_probe = |m: String| LocateFailure::new(FailureCode::NoProbes, m);
    if vps.is_empty() {
        return Err(no_probe(format!(
            "no healthy probe to trace from ({} known, none connected, heartbeating and unflagged)",
            coord.fleet.registry.len()
        )));
    }
    let left_out = coord
        .vetting
        .keep_vetted(coord, &mut vps)
        .await
        .map_err(no_probe)?;
    let (probe, choice) = if p.probe_id.is_empty() {
        let known = known_position(coord, ip, &ip_s).await?;
        let probe = choose(&vps, known.map(|k| k.0))
            .cloned()
            .ok_or_else(|| no_probe("no vetted probe to trace from".into()))?;
        (probe, known.map_or(ProbeChoice::First, |k| k.1))
    } else {
        match vps.iter().find(|v| v.id == p.probe_id) {
            Some(v) => (v.clone(), ProbeChoice::Requested),
            None => {
                let why = left_out
                    .iter()
                    .find(|d| d.landmark == p.probe_id)
                    .map(|d| d.reason.clone())
                    .unwrap_or_else(|| {
                        "not healthy (no session, heartbeats late, or flagged)".into()
                    });
                return Err(no_probe(format!(
                    "probe {:?} cannot trace: {why}",
                    p.probe_id
                )));
            }
        }
    };

    // Abuse limits before any packet, as a locate: a concurrent slot, one address of the
    // key's hour and the TTLs asked from the target's packet budget.
    let _slot = coord.access.hold_slot(&p.caller)?;
    let charge = coord
        .access
        .admit(
            &coord.storage,
            &p.caller,
            &ip_s,
            i64::from(max_ttl),
            unix_ms(),
        )
        .await?;
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    let budget = Duration::from_millis(u64::from(or(timeout_ms, coord.config.probe_timeout_ms)));
    let req = coord.fleet.defaults.traceroute(ip, max_ttl, budget);
    tracing::info!(ip = %ip_s, probe = %probe.id, choice = choice.as_str(), max_ttl, "tracing");
    let o = coord.fleet.ask(&probe, req, budget).await;
    let sent = o.result.packets_sent();
    coord
        .access
        .settle(&coord.storage, &charge, Some(sent as i64))
        .await;
    let failed = |what: &str| {
        LocateFailure::new(
            FailureCode::NoAnswer,
            format!("probe {} gave no traceroute of {ip_s}: {what}", probe.id),
        )
    };
    match o.outcome {
        MeasurementOutcome::Answered | MeasurementOutcome::NoReply => {}
        other => {
            let what = if o.error.is_empty() {
                other.as_str().to_string()
            } else {
                format!("{}: {}", other.as_str(), o.error)
            };
            return Err(failed(&what));
        }
    }
    let Some(t) = o.result.traceroute else {
        let what = if o.result.error.is_empty() {
            "the answer has no traceroute".to_string()
        } else {
            o.result.error.clone()
        };
        return Err(failed(&what));
    };
    Ok(Traced {
        ip: ip_s,
        probe,
        choice,
        hops: hops_of(&t.hops),
        reached: t.reached,
        packets_sent: sent,
        max_ttl,
        error: if t.error.is_empty() {
            o.result.error
        } else {
            t.error
        },
        finished_unix_ms: unix_ms(),
    })
}

/// The path as the client sees it: ascending TTLs, each once (answers for one TTL merged,
/// RTTs ascending), addresses parsed (an unparsable one is a silent TTL).
fn hops_of(raw: &[crate::core::measurement::RawHop]) -> Vec<TraceHop> {
    let mut hops: Vec<TraceHop> = Vec::new();
    let mut sorted: Vec<&crate::core::measurement::RawHop> = raw.iter().collect();
    sorted.sort_by_key(|h| h.ttl);
    for h in sorted {
        let address = h.address.parse::<IpAddr>().ok();
        let rtt = h.rtt_ms.filter(|r| r.is_finite() && *r >= 0.0);
        match hops.last_mut() {
            Some(last) if last.ttl == h.ttl => {
                last.address = last.address.or(address);
                last.rtt_ms.extend(rtt);
                last.rtt_ms.sort_by(f64::total_cmp);
            }
            _ => hops.push(TraceHop {
                ttl: h.ttl,
                address,
                rtt_ms: rtt.into_iter().collect(),
            }),
        }
    }
    hops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::measurement::RawHop;

    fn vp(id: &str, lat: f64, lon: f64) -> VantagePoint {
        VantagePoint {
            id: id.into(),
            pos: LatLon { lat, lon },
        }
    }

    #[test]
    fn nearest_probe_else_first_by_id() {
        let vps = [
            vp("tokyo", 35.68, 139.69),
            vp("paris", 48.86, 2.35),
            vp("lima", -12.05, -77.04),
        ];
        let london = LatLon {
            lat: 51.5,
            lon: -0.12,
        };
        assert_eq!(choose(&vps, Some(london)).unwrap().id, "paris");
        assert_eq!(choose(&vps, None).unwrap().id, "lima");
        assert!(choose(&[], None).is_none());
    }

    #[test]
    fn checks_name_the_bad_value() {
        let p = |max_ttl, timeout_ms, probe_id: &str| TraceParams {
            ip: "192.0.2.1".into(),
            probe_id: probe_id.into(),
            max_ttl,
            timeout_ms,
            ..Default::default()
        };
        assert_eq!(check(&p(0, 0, "")).unwrap(), (FALLBACK_MAX_TTL, 0));
        assert_eq!(check(&p(64, 0, "a-1")).unwrap(), (64, 0));
        let e = check(&p(65, 0, "")).unwrap_err();
        assert_eq!(e.code, FailureCode::InvalidArgument);
        assert_eq!(e.message, "max_ttl 65 above 64");
        assert!(check(&p(0, 120_001, ""))
            .unwrap_err()
            .message
            .contains("timeout_ms 120001"));
        assert!(check(&p(0, 0, "a b"))
            .unwrap_err()
            .message
            .starts_with("bad probe_id \"a b\""));
    }

    #[test]
    fn hops_ascend_once_each() {
        let h = |ttl, a: &str, r: Option<f64>| RawHop {
            ttl,
            address: a.into(),
            rtt_ms: r,
        };
        let got = hops_of(&[
            h(2, "192.0.2.1", Some(3.0)),
            h(1, "", None),
            h(2, "", Some(2.5)),
            h(3, "nonsense", Some(f64::NAN)),
        ]);
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].ttl, got[0].address, got[0].rtt_ms.len()),
            (1, None, 0)
        );
        assert_eq!(got[1].address, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(got[1].rtt_ms, vec![2.5, 3.0]);
        assert_eq!((got[2].address, got[2].rtt_ms.len()), (None, 0));
    }
}
