//! A located address as clients use it: the wire's `LocateResult` converted once.
use geoloc_engine::{Measurement, Solution};
use geoloc_proto::v1 as pb;
use geoloc_proto::ConvertError;
use serde::{Deserialize, Serialize};

/// How the coordinator chooses probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every healthy probe.
    All,
    /// A few probes spread over the world, then the K nearest the first region.
    TwoStage,
    /// A few spread probes, then round by round the probes nearest the shrinking region,
    /// within --budget (chosen by a budget without a mode).
    Phased,
}

impl Mode {
    /// The wire value of an optional mode (None = the coordinator's default).
    pub fn to_pb(m: Option<Mode>) -> pb::LocateMode {
        match m {
            None => pb::LocateMode::Unspecified,
            Some(Mode::All) => pb::LocateMode::All,
            Some(Mode::TwoStage) => pb::LocateMode::TwoStage,
            Some(Mode::Phased) => pb::LocateMode::Phased,
        }
    }
}

/// Where the coordinator's vantage points come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The probes connected to the coordinator.
    Fleet,
    /// RIPE Atlas probes through the coordinator's Atlas account (costs credits).
    Atlas,
    /// Both, merged into one solve.
    Both,
}

impl Source {
    /// The wire value of an optional source (None = the fleet).
    pub fn to_pb(s: Option<Source>) -> pb::LocateSource {
        match s {
            None => pb::LocateSource::Unspecified,
            Some(Source::Fleet) => pb::LocateSource::Fleet,
            Some(Source::Atlas) => pb::LocateSource::Atlas,
            Some(Source::Both) => pb::LocateSource::Both,
        }
    }
}

/// For `skip_serializing_if`: a counter left at zero is not written.
fn is_zero<T: Default + PartialEq>(x: &T) -> bool {
    *x == T::default()
}

/// One located address. Its JSON form is a line of `geoloc locate --json`
/// (schema: client/README.md); the lab reads those lines back into this type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Located {
    /// The address (canonical form from the coordinator; `geoloc locate` prints it as typed).
    pub ip: String,
    pub result_id: String,
    /// When the result was computed, ms since the Unix epoch.
    pub created_at_unix_ms: i64,
    /// A stored result returned because the client asked to reuse one.
    pub cached: bool,
    pub mode: Mode,
    pub probes_asked: u32,
    pub probes_used: u32,
    pub packets_sent: u64,
    /// Smallest RTT any probe measured, ms, and the probe.
    pub min_rtt_ms: Option<f64>,
    pub nearest_probe: String,
    pub solution: Solution,
    /// The RTT of each probe that got one, as given to the engine. Not in the `--json`
    /// output (its schema is unchanged).
    #[serde(skip)]
    pub probe_rtts: Vec<Measurement>,
    /// Name of the API key that asked for the result (absent when none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub requested_by: String,
    /// RIPE Atlas credits spent on the address (absent when 0: the fleet alone).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub atlas_credits: u64,
    /// Of `probes_asked`, the RIPE Atlas probes (absent when 0); the rest are the fleet's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub atlas_probes_asked: u32,
}

impl TryFrom<&pb::LocateResult> for Located {
    type Error = ConvertError;
    fn try_from(r: &pb::LocateResult) -> Result<Self, ConvertError> {
        let bad = |field: &str, reason: String| ConvertError {
            field: field.to_string(),
            reason,
        };
        let mode = match pb::LocateMode::try_from(r.locate_mode) {
            Ok(pb::LocateMode::All) => Mode::All,
            Ok(pb::LocateMode::TwoStage) => Mode::TwoStage,
            Ok(pb::LocateMode::Phased) => Mode::Phased,
            _ => {
                return Err(bad(
                    "result.locate_mode",
                    format!("unknown or unspecified mode {}", r.locate_mode),
                ))
            }
        };
        let solution = r
            .solution
            .as_ref()
            .ok_or_else(|| bad("result.solution", "missing".into()))?;
        if let Some(x) = r.min_rtt_ms.filter(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(bad(
                "result.min_rtt_ms",
                format!("{x} is not a finite number >= 0"),
            ));
        }
        Ok(Located {
            ip: r.ip.clone(),
            result_id: r.result_id.clone(),
            created_at_unix_ms: r.created_at_unix_ms,
            cached: r.cached,
            mode,
            probes_asked: r.probes_asked,
            probes_used: r.probes_used,
            packets_sent: r.packets_sent,
            min_rtt_ms: r.min_rtt_ms,
            nearest_probe: r.nearest_probe.clone(),
            solution: Solution::try_from(solution)?,
            probe_rtts: r
                .probe_rtts
                .iter()
                .map(Measurement::try_from)
                .collect::<Result<_, _>>()?,
            requested_by: r.requested_by.clone(),
            atlas_credits: r.atlas_credits,
            atlas_probes_asked: r.atlas_probes_asked,
        })
    }
}

/// Why an address was not located: the coordinator's code (`ErrorCode` by its short name,
/// e.g. `no-probes`) or a client-side one (`unreachable`, `timeout`, ...), and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Failure {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// A coordinator's error event.
    pub fn from_pb(e: &pb::LocateError) -> Self {
        let code = pb::ErrorCode::try_from(e.error_code)
            .map(pb::ErrorCode::code)
            .unwrap_or("unspecified");
        Failure::new(code, e.message.clone())
    }
}

/// One line of `geoloc locate --json`: a located address or, for one that failed,
/// `{"ip": ..., "error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LocateLine {
    Located(Box<Located>),
    Failed { ip: String, error: Failure },
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use geoloc_engine::{solve, Kind, LatLon, SolveOptions};

    /// A real solution (Lyon seen from six European cities) and its wire form.
    pub(crate) fn located() -> (Located, pb::LocateResult) {
        let lyon = LatLon::new(45.764, 4.8357);
        let ms: Vec<Measurement> = [
            ("paris", 48.8566, 2.3522),
            ("london", 51.5074, -0.1278),
            ("berlin", 52.52, 13.405),
            ("madrid", 40.4168, -3.7038),
            ("rome", 41.9028, 12.4964),
            ("vienna", 48.2082, 16.3738),
        ]
        .iter()
        .map(|&(name, lat, lon)| {
            let pos = LatLon::new(lat, lon);
            Measurement {
                landmark: name.into(),
                pos,
                rtt_ms: 1.0 + 3.0 * geoloc_engine::distance_km(pos, lyon) / 199.86,
                kind: Kind::Echo,
            }
        })
        .collect();
        let sol = solve(
            &ms,
            &SolveOptions {
                at_unix_s: Some(1_767_225_600),
                geoip_checked: true,
                ..Default::default()
            },
        )
        .unwrap();
        let wire = pb::LocateResult {
            result_id: "0123456789abcdef0123456789abcdef".into(),
            ip: "81.2.69.142".into(),
            solution: Some(pb::Solution::try_from(&sol).unwrap()),
            probes_used: sol.used as u32,
            created_at_unix_ms: 1_700_000_000_000,
            cached: false,
            locate_mode: pb::LocateMode::All as i32,
            packets_sent: 18,
            min_rtt_ms: Some(sol.min_rtt_ms),
            nearest_probe: sol.nearest_landmark.clone(),
            probes_asked: 6,
            probe_rtts: ms.iter().map(pb::ProbeRtt::from).collect(),
            requested_by: String::new(),
            ..Default::default()
        };
        let l = Located::try_from(&wire).unwrap();
        assert_eq!(l.probe_rtts, ms);
        assert_eq!(
            serde_json::to_value(&l.solution).unwrap(),
            serde_json::to_value(&sol).unwrap()
        );
        (l, wire)
    }

    #[test]
    fn a_json_line_reads_back_into_the_same_typed_result() {
        let (l, _) = located();
        let text = crate::locate::result_json("81.2.69.142", &l).to_string();
        let back: LocateLine = serde_json::from_str(&text).unwrap();
        // What the JSON does not carry: the per-probe RTTs.
        let expected = Located {
            probe_rtts: vec![],
            ..l
        };
        assert_eq!(back, LocateLine::Located(Box::new(expected)));
        let text = crate::locate::error_json("10.0.0.1", "bogon", "private").to_string();
        let back: LocateLine = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back,
            LocateLine::Failed {
                ip: "10.0.0.1".into(),
                error: Failure::new("bogon", "private")
            }
        );
    }

    #[test]
    fn a_hostile_result_is_an_error_not_a_panic() {
        let (_, wire) = located();
        type Breaker = fn(&mut pb::LocateResult);
        let cases: Vec<(&str, Breaker)> = vec![
            ("result.solution", |r| r.solution = None),
            ("result.locate_mode", |r| r.locate_mode = 0),
            ("result.locate_mode", |r| r.locate_mode = 42),
            ("result.min_rtt_ms", |r| r.min_rtt_ms = Some(f64::NAN)),
            ("solution.estimate", |r| {
                r.solution.as_mut().unwrap().estimate = Some(pb::LatLon {
                    lat: f64::INFINITY,
                    lon: 0.0,
                })
            }),
            ("probe_rtt.position", |r| {
                r.probe_rtts[0].position = Some(pb::LatLon {
                    lat: 0.0,
                    lon: -180.5,
                })
            }),
        ];
        for (field, break_it) in cases {
            let mut r = wire.clone();
            break_it(&mut r);
            let e = Located::try_from(&r).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn error_codes_of_the_wire_keep_their_short_names() {
        let e = pb::LocateError {
            error_code: pb::ErrorCode::NoProbes as i32,
            message: "none".into(),
        };
        assert_eq!(Failure::from_pb(&e), Failure::new("no-probes", "none"));
        let e = pb::LocateError {
            error_code: 99,
            message: "?".into(),
        };
        assert_eq!(Failure::from_pb(&e).code, "unspecified");
    }
}
