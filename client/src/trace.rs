//! A traceroute toward one address from one probe of the coordinator's fleet (`Trace`):
//! the typed result ([`Traced`], JSON schema in client/README.md, "Traceroute"), its text
//! form, and the `traceroute` column group of `geoloc audit --know` ([`TRACE_COLUMNS`],
//! [`trace_cells`]). The reply is checked once here: a coordinator is a peer like any
//! other.
use std::net::IpAddr;
use std::time::Duration;

use geoloc_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{invalid_code, printable, Client, Failure};

/// Most hops a reply may carry (a TTL is one byte).
pub const MAX_HOPS: usize = 255;
/// Most RTTs one hop may carry.
pub const MAX_RTTS_PER_HOP: usize = 16;
/// Largest RTT accepted, ms.
const MAX_RTT_MS: f64 = 60_000.0;
/// Longest probe id / error text kept from a reply.
const MAX_ID_LEN: usize = 64;
const MAX_ERROR_LEN: usize = 512;
/// Longest wait for the reply (the coordinator's largest probe budget and some grace).
const CALL_TIMEOUT: Duration = Duration::from_secs(150);

/// One TTL of the path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceHop {
    pub ttl: u32,
    /// Who answered; null for a silent TTL (`*`).
    pub address: Option<String>,
    /// RTTs of the answers, ms (ascending; empty for a silent TTL).
    pub rtt_ms: Vec<f64>,
}

impl TraceHop {
    /// The smallest RTT of this hop.
    pub fn min_rtt_ms(&self) -> Option<f64> {
        self.rtt_ms.iter().copied().reduce(f64::min)
    }
}

/// A traceroute as clients use it (the JSON of `geoloc know --traceroute --json`'s
/// `traceroute` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Traced {
    /// The target, canonical text.
    pub ip: String,
    /// The probe that traced, its declared position (degrees), and how it was chosen:
    /// `requested`, `nearest-stored`, `nearest-geoip`, `first`.
    pub probe_id: String,
    pub probe_lat: f64,
    pub probe_lon: f64,
    pub probe_choice: String,
    /// The largest TTL allowed.
    pub max_ttl: u32,
    /// The target itself answered.
    pub reached: bool,
    /// Probe packets counted against the target's hourly budget.
    pub packets_sent: u64,
    /// Ascending TTLs, each once.
    pub hops: Vec<TraceHop>,
    /// Why the probe ended the trace early; absent when it did not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// When the probe finished, ms since the Unix epoch.
    pub finished_unix_ms: i64,
}

fn bad(m: String) -> Failure {
    Failure::new("bad-result", m)
}

impl TryFrom<&pb::TraceReply> for Traced {
    type Error = Failure;

    /// Checks every value: an address target, a bounded printable probe id, a position on
    /// Earth, at most [`MAX_HOPS`] hops with ascending TTLs, addresses that parse, finite
    /// RTTs in [0, 60 000] ms.
    fn try_from(r: &pb::TraceReply) -> Result<Traced, Failure> {
        let ip: IpAddr = r.ip.parse().map_err(|_| {
            bad(format!(
                "trace target {:?} is not an address",
                printable(&r.ip)
            ))
        })?;
        if r.probe_id.is_empty()
            || r.probe_id.len() > MAX_ID_LEN
            || r.probe_id.chars().any(char::is_control)
        {
            return Err(bad(format!(
                "trace probe id {:?}",
                printable(&r.probe_id.chars().take(80).collect::<String>())
            )));
        }
        let pos = r
            .probe_position
            .as_ref()
            .ok_or_else(|| bad("trace without the probe's position".into()))?;
        let pos = geoloc_engine::LatLon::checked(pos.lat, pos.lon)
            .map_err(|e| bad(format!("trace probe position: {e}")))?;
        let choice = match pb::TraceProbeChoice::try_from(r.probe_choice) {
            Ok(pb::TraceProbeChoice::Requested) => "requested",
            Ok(pb::TraceProbeChoice::NearestStored) => "nearest-stored",
            Ok(pb::TraceProbeChoice::NearestGeoip) => "nearest-geoip",
            Ok(pb::TraceProbeChoice::First) => "first",
            _ => "unspecified",
        };
        if r.hops.len() > MAX_HOPS {
            return Err(bad(format!(
                "{} trace hops (at most {MAX_HOPS})",
                r.hops.len()
            )));
        }
        let mut hops = Vec::with_capacity(r.hops.len());
        let mut prev = 0;
        for h in &r.hops {
            if h.ttl <= prev || h.ttl as usize > MAX_HOPS {
                return Err(bad(format!(
                    "trace hop TTL {} after {prev} (TTLs ascend in 1..=255)",
                    h.ttl
                )));
            }
            prev = h.ttl;
            let address = match h.address.as_str() {
                "" => None,
                a => Some(
                    a.parse::<IpAddr>()
                        .map_err(|_| {
                            bad(format!(
                                "trace hop {} address {:?}",
                                h.ttl,
                                printable(&a.chars().take(80).collect::<String>())
                            ))
                        })?
                        .to_string(),
                ),
            };
            if h.rtt_ms.len() > MAX_RTTS_PER_HOP {
                return Err(bad(format!(
                    "{} RTTs at trace hop {}",
                    h.rtt_ms.len(),
                    h.ttl
                )));
            }
            if let Some(x) = h
                .rtt_ms
                .iter()
                .find(|x| !(x.is_finite() && (0.0..=MAX_RTT_MS).contains(*x)))
            {
                return Err(bad(format!("trace hop {} RTT {x} ms", h.ttl)));
            }
            let mut rtt_ms = h.rtt_ms.clone();
            rtt_ms.sort_by(f64::total_cmp);
            hops.push(TraceHop {
                ttl: h.ttl,
                address,
                rtt_ms,
            });
        }
        Ok(Traced {
            ip: ip.to_string(),
            probe_id: r.probe_id.clone(),
            probe_lat: pos.lat,
            probe_lon: pos.lon,
            probe_choice: choice.to_string(),
            max_ttl: r.max_ttl,
            reached: r.reached,
            packets_sent: r.packets_sent,
            hops,
            error: printable(&r.error.chars().take(MAX_ERROR_LEN).collect::<String>()),
            finished_unix_ms: r.finished_unix_ms,
        })
    }
}

impl Traced {
    /// The last hop that answered and is not the target (the router closest to it).
    pub fn last_router(&self) -> Option<&TraceHop> {
        self.hops
            .iter()
            .rev()
            .find(|h| h.address.as_deref().is_some_and(|a| a != self.ip))
    }

    /// The path as `ttl:address:rtt` items joined by `;` (`ttl:*` for a silent TTL; IPv6
    /// addresses in brackets; RTT the hop's smallest, ms, 3 decimals).
    pub fn path(&self) -> String {
        self.hops
            .iter()
            .map(|h| match (&h.address, h.min_rtt_ms()) {
                (None, _) => format!("{}:*", h.ttl),
                (Some(a), rtt) => {
                    let a = if a.contains(':') {
                        format!("[{a}]")
                    } else {
                        a.clone()
                    };
                    match rtt {
                        Some(r) => format!("{}:{a}:{r:.3}", h.ttl),
                        None => format!("{}:{a}:", h.ttl),
                    }
                }
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The trace as a traceroute prints it, one hop per line.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "Traceroute to {} from probe {} ({:.4}, {:.4}; {}), max {} hops\n",
            self.ip, self.probe_id, self.probe_lat, self.probe_lon, self.probe_choice, self.max_ttl
        );
        for h in &self.hops {
            let rtts: Vec<String> = h.rtt_ms.iter().map(|r| format!("{r:.3} ms")).collect();
            match &h.address {
                None => out.push_str(&format!("  {:>3}  *\n", h.ttl)),
                Some(a) => out.push_str(&format!("  {:>3}  {a}  {}\n", h.ttl, rtts.join("  "))),
            }
        }
        out.push_str(&format!(
            "  target {}, {} packet{}{}\n",
            if self.reached {
                "reached"
            } else {
                "not reached"
            },
            self.packets_sent,
            if self.packets_sent == 1 { "" } else { "s" },
            if self.error.is_empty() {
                String::new()
            } else {
                format!(", ended early: {}", self.error)
            }
        ));
        out
    }
}

/// The `traceroute` column group of `geoloc audit --know`, in output order.
pub const TRACE_COLUMNS: [&str; 6] = [
    "trace_probe",
    "trace_hops",
    "trace_reached",
    "trace_last_hop",
    "trace_path",
    "trace_status",
];

/// The cells of [`TRACE_COLUMNS`] for one address: the trace, or only the status
/// `error: <code>: <message>` (commas and line breaks replaced by spaces).
pub fn trace_cells(r: &Result<Traced, Failure>) -> Vec<String> {
    match r {
        Ok(t) => vec![
            t.probe_id.clone(),
            t.hops.len().to_string(),
            t.reached.to_string(),
            t.last_router()
                .and_then(|h| h.address.clone())
                .unwrap_or_default(),
            t.path(),
            "ok".into(),
        ],
        Err(f) => {
            let mut v = vec![String::new(); TRACE_COLUMNS.len() - 1];
            v.push(
                format!("error: {}: {}", f.code, printable(&f.message))
                    .replace(['\n', '\r', ','], " "),
            );
            v
        }
    }
}

impl Client {
    /// A traceroute toward `ip` from `probe_id` (None: the coordinator chooses), up to
    /// `max_ttl` (0: the coordinator's default of 30). Errors carry the coordinator's
    /// code (`bogon`, `invalid-argument`, `no-probes`, `no-answer`, `quota-exceeded`,
    /// `permission-denied`, ...) or `bad-result` for a reply that fails the checks.
    pub async fn trace(
        &mut self,
        ip: &str,
        probe_id: Option<&str>,
        max_ttl: u32,
    ) -> Result<Traced, Failure> {
        let req = pb::TraceRequest {
            ip: ip.to_string(),
            probe_id: probe_id.unwrap_or_default().to_string(),
            max_ttl,
            timeout_ms: 0,
        };
        let call = self.inner.trace(self.request(req));
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Err(_) => Err(Failure::new(
                "timeout",
                format!(
                    "no trace from the coordinator within {} s",
                    CALL_TIMEOUT.as_secs()
                ),
            )),
            Ok(Ok(r)) => Traced::try_from(&r.into_inner()),
            Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => {
                Err(Failure::new(&invalid_code(&s), s.message()))
            }
            Ok(Err(s)) => match s
                .metadata()
                .get("geoloc-error-code")
                .and_then(|v| v.to_str().ok())
            {
                Some(code) if s.code() != tonic::Code::ResourceExhausted => {
                    Err(Failure::new(code, printable(s.message())))
                }
                _ => Err(self.failure(&s)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> pb::TraceReply {
        pb::TraceReply {
            ip: "192.0.2.9".into(),
            probe_id: "paris".into(),
            probe_position: Some(pb::LatLon {
                lat: 48.8566,
                lon: 2.3522,
            }),
            probe_choice: pb::TraceProbeChoice::NearestGeoip as i32,
            hops: vec![
                pb::TraceHop {
                    ttl: 1,
                    address: "198.51.100.1".into(),
                    rtt_ms: vec![0.8124],
                },
                pb::TraceHop {
                    ttl: 2,
                    address: String::new(),
                    rtt_ms: vec![],
                },
                pb::TraceHop {
                    ttl: 3,
                    address: "2001:db8::1".into(),
                    rtt_ms: vec![4.5, 4.25],
                },
                pb::TraceHop {
                    ttl: 4,
                    address: "192.0.2.9".into(),
                    rtt_ms: vec![5.0],
                },
            ],
            reached: true,
            packets_sent: 4,
            max_ttl: 30,
            error: String::new(),
            finished_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn reply_converts_and_prints() {
        let t = Traced::try_from(&reply()).unwrap();
        assert_eq!(t.probe_choice, "nearest-geoip");
        assert_eq!(t.hops[2].rtt_ms, vec![4.25, 4.5]);
        assert_eq!(t.last_router().unwrap().ttl, 3);
        insta::assert_snapshot!("trace_text", t.render_text());
        insta::assert_json_snapshot!("trace_json", t);
    }

    #[test]
    fn hostile_replies_are_refused() {
        let mut r = reply();
        r.hops[1].ttl = 1;
        assert!(Traced::try_from(&r)
            .unwrap_err()
            .message
            .contains("TTL 1 after 1"));
        let mut r = reply();
        r.hops[0].rtt_ms = vec![f64::NAN];
        assert!(Traced::try_from(&r)
            .unwrap_err()
            .message
            .contains("RTT NaN"));
        let mut r = reply();
        r.hops[0].address = "\u{1b}[31mred".into();
        let e = Traced::try_from(&r).unwrap_err();
        assert_eq!(e.code, "bad-result");
        assert!(!e.message.contains('\u{1b}'), "{}", e.message);
        let mut r = reply();
        r.probe_position = Some(pb::LatLon {
            lat: 91.0,
            lon: 0.0,
        });
        assert!(Traced::try_from(&r).is_err());
        let mut r = reply();
        r.hops = (1..=256)
            .map(|ttl| pb::TraceHop {
                ttl,
                ..Default::default()
            })
            .collect();
        assert!(Traced::try_from(&r)
            .unwrap_err()
            .message
            .contains("256 trace hops"));
    }

    /// The `traceroute` column group as `geoloc audit --know traceroute` writes it: header,
    /// a traced address and a refused one.
    #[test]
    fn audit_traceroute_columns() {
        let t = Traced::try_from(&reply()).unwrap();
        let refused = Failure::new(
            "bogon",
            "10.1.2.3 is a private address, not measured (the coordinator runs without --allow-private)",
        );
        let rows = [
            TRACE_COLUMNS.join(","),
            trace_cells(&Ok(t)).join(","),
            trace_cells(&Err(refused)).join(","),
        ];
        insta::assert_snapshot!("audit_traceroute_columns", rows.join("\n"));
    }
}
