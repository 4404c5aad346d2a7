//! The one conversion between the engine's types and the wire messages, in both directions.
//!
//! - Engine → wire ([`TryFrom<&Solution>`] for [`pb::Solution`], [`From<&Measurement>`] for
//!   [`pb::ProbeRtt`]): used by the coordinator's gRPC adapter. Fails only on a region outline
//!   that is not a GeoJSON `MultiPolygon` (the engine never makes one).
//! - Wire → engine ([`TryFrom<&pb::Solution>`] for [`Solution`], [`TryFrom<&pb::ProbeRtt>`]
//!   for [`Measurement`]): used by clients. Every value is hostile until checked: a missing
//!   part, an unspecified enum, a non-finite number or a position outside [-90, 90] ×
//!   [-180, 180] is a [`ConvertError`] naming the field, never a panic.
//!
//! What does not cross the wire: the region's exact constraints
//! (`Solution::region_constraints`, `region_tolerance`), which are not part of the answer's
//! JSON either; a converted solution has them empty.

use geoloc_engine::{
    Collusion, Dropped, Instance, Kind, LatLon, MaxmindComparison, Measurement, Method, Place,
    Ruling, Solution, Timezone, TzShare, Verdict,
};
use serde_json::Value;

use crate::v1 as pb;

/// A wire message that cannot be turned into the engine's type (or the reverse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConvertError {
    /// Path of the offending field, e.g. `solution.instances[2].position`.
    pub field: String,
    pub reason: String,
}

/// Result of a conversion.
pub type Result<T> = std::result::Result<T, ConvertError>;

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConvertError {
    ConvertError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn missing(field: &str) -> ConvertError {
    err(field, "missing")
}

// ---- small pieces ---------------------------------------------------------------------------

impl From<LatLon> for pb::LatLon {
    fn from(p: LatLon) -> Self {
        pb::LatLon {
            lat: p.lat,
            lon: p.lon,
        }
    }
}

/// A position from the wire: present, finite and in range.
fn position(field: &str, p: Option<&pb::LatLon>) -> Result<LatLon> {
    let p = p.ok_or_else(|| missing(field))?;
    LatLon::checked(p.lat, p.lon).map_err(|e| err(field, e))
}

/// A distance, area, share or RTT from the wire: finite and not negative.
fn non_negative(field: &str, x: f64) -> Result<f64> {
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(err(field, format!("{x} is not a finite number >= 0")))
    }
}

fn opt_non_negative(field: &str, x: Option<f64>) -> Result<Option<f64>> {
    x.map(|x| non_negative(field, x)).transpose()
}

/// Largest UTC offset of any time zone, seconds (UTC+14, with a margin).
const MAX_UTC_OFFSET_S: i32 = 18 * 3600;

impl From<Method> for pb::SolveMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::Bestline => pb::SolveMethod::Bestline,
            Method::Cbg => pb::SolveMethod::Cbg,
            Method::ShortestPing => pb::SolveMethod::ShortestPing,
        }
    }
}

fn method(field: &str, m: i32) -> Result<Method> {
    match pb::SolveMethod::try_from(m) {
        Ok(pb::SolveMethod::Bestline) => Ok(Method::Bestline),
        Ok(pb::SolveMethod::Cbg) => Ok(Method::Cbg),
        Ok(pb::SolveMethod::ShortestPing) => Ok(Method::ShortestPing),
        _ => Err(err(field, format!("unknown or unspecified method {m}"))),
    }
}

impl From<Verdict> for pb::Verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Consistent => pb::Verdict::Consistent,
            Verdict::ProvablyWrong => pb::Verdict::ProvablyWrong,
            Verdict::NoData => pb::Verdict::NoData,
            Verdict::LikelyWrong => pb::Verdict::LikelyWrong,
        }
    }
}

fn verdict(field: &str, v: i32) -> Result<Verdict> {
    match pb::Verdict::try_from(v) {
        Ok(pb::Verdict::Consistent) => Ok(Verdict::Consistent),
        Ok(pb::Verdict::ProvablyWrong) => Ok(Verdict::ProvablyWrong),
        Ok(pb::Verdict::NoData) => Ok(Verdict::NoData),
        Ok(pb::Verdict::LikelyWrong) => Ok(Verdict::LikelyWrong),
        _ => Err(err(field, format!("unknown or unspecified verdict {v}"))),
    }
}

impl From<Kind> for pb::RttKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Echo => pb::RttKind::Echo,
            Kind::LastHop => pb::RttKind::LastHop,
        }
    }
}

fn kind(field: &str, k: i32) -> Result<Kind> {
    match pb::RttKind::try_from(k) {
        Ok(pb::RttKind::Echo) => Ok(Kind::Echo),
        Ok(pb::RttKind::LastHop) => Ok(Kind::LastHop),
        _ => Err(err(field, format!("unknown or unspecified RTT kind {k}"))),
    }
}

fn notes_to_pb(ds: &[Dropped]) -> Vec<pb::LandmarkNote> {
    ds.iter()
        .map(|d| pb::LandmarkNote {
            landmark: d.landmark.clone(),
            reason: d.reason.clone(),
        })
        .collect()
}

fn notes_from_pb(ns: &[pb::LandmarkNote]) -> Vec<Dropped> {
    ns.iter()
        .map(|n| Dropped {
            landmark: n.landmark.clone(),
            reason: n.reason.clone(),
        })
        .collect()
}

// ---- per-probe RTTs -------------------------------------------------------------------------

impl From<&Measurement> for pb::ProbeRtt {
    fn from(m: &Measurement) -> Self {
        pb::ProbeRtt {
            probe_id: m.landmark.clone(),
            position: Some(m.pos.into()),
            rtt_ms: m.rtt_ms,
            kind: pb::RttKind::from(m.kind) as i32,
            source: pb::LocateSource::of_vantage_point(&m.landmark) as i32,
        }
    }
}

impl TryFrom<&pb::ProbeRtt> for Measurement {
    type Error = ConvertError;
    fn try_from(p: &pb::ProbeRtt) -> Result<Self> {
        Ok(Measurement {
            landmark: p.probe_id.clone(),
            pos: position("probe_rtt.position", p.position.as_ref())?,
            rtt_ms: non_negative("probe_rtt.rtt_ms", p.rtt_ms)?,
            kind: kind("probe_rtt.kind", p.kind)?,
        })
    }
}

// ---- the region outline ---------------------------------------------------------------------

/// The engine's GeoJSON `MultiPolygon` (or null) as a typed region.
fn region_to_pb(v: &Value) -> Result<Option<pb::Region>> {
    const F: &str = "solution.region";
    if v.is_null() {
        return Ok(None);
    }
    if v.get("type").and_then(Value::as_str) != Some("MultiPolygon") {
        return Err(err(F, "not a GeoJSON MultiPolygon"));
    }
    let polys = v
        .get("coordinates")
        .and_then(Value::as_array)
        .ok_or_else(|| err(F, "MultiPolygon without coordinates"))?;
    let mut polygons = Vec::with_capacity(polys.len());
    for poly in polys {
        let rings = poly
            .as_array()
            .ok_or_else(|| err(F, "a polygon is not an array of rings"))?;
        let mut out = Vec::with_capacity(rings.len());
        for ring in rings {
            let pts = ring
                .as_array()
                .ok_or_else(|| err(F, "a ring is not an array of positions"))?;
            let points = pts
                .iter()
                .map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([lon, lat]) => match (lon.as_f64(), lat.as_f64()) {
                        (Some(lon), Some(lat)) => Ok(pb::LatLon { lat, lon }),
                        _ => Err(err(F, "a position is not two numbers")),
                    },
                    _ => Err(err(F, "a position is not [lon, lat]")),
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(pb::Ring { points });
        }
        polygons.push(pb::Polygon { rings: out });
    }
    Ok(Some(pb::Region { polygons }))
}

/// A typed region from the wire as the engine's GeoJSON `MultiPolygon` (absent = null).
fn region_from_pb(r: Option<&pb::Region>) -> Result<Value> {
    let Some(r) = r else {
        return Ok(Value::Null);
    };
    let mut polys = Vec::with_capacity(r.polygons.len());
    for (i, poly) in r.polygons.iter().enumerate() {
        let mut rings = Vec::with_capacity(poly.rings.len());
        for (j, ring) in poly.rings.iter().enumerate() {
            let mut pts = Vec::with_capacity(ring.points.len());
            for (k, p) in ring.points.iter().enumerate() {
                let f = || format!("solution.region.polygons[{i}].rings[{j}].points[{k}]");
                let ll = LatLon::checked(p.lat, p.lon).map_err(|e| err(f(), e))?;
                pts.push(vec![ll.lon, ll.lat]);
            }
            rings.push(pts);
        }
        polys.push(rings);
    }
    let outline = geojson::Geometry::new(geojson::Value::MultiPolygon(polys));
    Ok(Value::Object(geojson::JsonObject::from(&outline)))
}

// ---- the solution ---------------------------------------------------------------------------

impl TryFrom<&Solution> for pb::Solution {
    type Error = ConvertError;
    fn try_from(s: &Solution) -> Result<Self> {
        let count = |field: &str, n: usize| {
            u64::try_from(n).map_err(|_| err(field, format!("{n} does not fit 64 bits")))
        };
        Ok(pb::Solution {
            method: pb::SolveMethod::from(s.method) as i32,
            estimate: Some(s.estimate.into()),
            radius_km: s.radius_km,
            region_km2: s.region_km2,
            timezone: Some(pb::Timezone {
                iana: s.timezone.iana.clone(),
                utc_offset: s.timezone.utc_offset.clone(),
                utc_offset_s: s.timezone.utc_offset_s,
            }),
            timezones: s
                .timezones
                .iter()
                .map(|t| pb::TimezoneShare {
                    iana: t.iana.clone(),
                    share: t.share,
                })
                .collect(),
            place: Some(pb::Place {
                city: s.place.city.clone(),
                country: s.place.country.clone(),
                distance_km: s.place.distance_km,
            }),
            anycast: s.anycast,
            instances: s
                .instances
                .iter()
                .map(|i| pb::AnycastInstance {
                    position: Some(pb::LatLon {
                        lat: i.lat,
                        lon: i.lon,
                    }),
                    city: i.city.clone(),
                    country: i.country.clone(),
                    landmark: i.landmark.clone(),
                    radius_km: i.radius_km,
                })
                .collect(),
            dropped: notes_to_pb(&s.dropped),
            loosened: notes_to_pb(&s.loosened),
            maxmind: s
                .maxmind
                .as_ref()
                .map(|m| -> Result<pb::MaxmindComparison> {
                    Ok(pb::MaxmindComparison {
                        lat: m.lat,
                        lon: m.lon,
                        city: m.city.clone(),
                        country: m.country.clone(),
                        accuracy_radius_km: m.accuracy_radius_km,
                        distance_km: m.distance_km,
                        verdict: pb::Verdict::from(m.verdict) as i32,
                        ruled_out_by: m.ruled_out_by.clone(),
                        excess_km: m.excess_km,
                        rulings: m
                            .rulings
                            .iter()
                            .map(|r| pb::Ruling {
                                landmark: r.landmark.clone(),
                                distance_km: r.distance_km,
                                bound_km: r.bound_km,
                            })
                            .collect(),
                        rulings_total: count("solution.maxmind.rulings_total", m.rulings_total)?,
                        assumption: m.assumption.clone(),
                    })
                })
                .transpose()?,
            collusion: s.collusion.as_ref().map(|c| pb::Collusion {
                landmarks: c.landmarks.clone(),
                reason: c.reason.clone(),
            }),
            landmarks: count("solution.landmarks", s.landmarks)?,
            used: count("solution.used", s.used)?,
            min_rtt_ms: s.min_rtt_ms,
            nearest_landmark: s.nearest_landmark.clone(),
            region: region_to_pb(&s.region)?,
            radius_50_km: s.radius_50_km,
            radius_90_km: s.radius_90_km,
        })
    }
}

impl TryFrom<&pb::Solution> for Solution {
    type Error = ConvertError;
    fn try_from(p: &pb::Solution) -> Result<Self> {
        let tz = p
            .timezone
            .as_ref()
            .ok_or_else(|| missing("solution.timezone"))?;
        if tz.utc_offset_s.unsigned_abs() > MAX_UTC_OFFSET_S.unsigned_abs() {
            return Err(err(
                "solution.timezone.utc_offset_s",
                format!("{} s is not a UTC offset", tz.utc_offset_s),
            ));
        }
        let place = p.place.as_ref().ok_or_else(|| missing("solution.place"))?;
        let timezones = p
            .timezones
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let f = format!("solution.timezones[{i}].share");
                match non_negative(&f, t.share)? {
                    s if s <= 1.0 => Ok(TzShare {
                        iana: t.iana.clone(),
                        share: s,
                    }),
                    s => Err(err(f, format!("{s} is not a share between 0 and 1"))),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let instances = p
            .instances
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let pos = position(
                    &format!("solution.instances[{i}].position"),
                    x.position.as_ref(),
                )?;
                Ok(Instance {
                    lat: pos.lat,
                    lon: pos.lon,
                    city: x.city.clone(),
                    country: x.country.clone(),
                    landmark: x.landmark.clone(),
                    radius_km: non_negative(
                        &format!("solution.instances[{i}].radius_km"),
                        x.radius_km,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let maxmind = p.maxmind.as_ref().map(maxmind_from_pb).transpose()?;
        let count = |field: &str, n: u64| {
            usize::try_from(n).map_err(|_| err(field, format!("{n} does not fit this machine")))
        };
        let landmarks = count("solution.landmarks", p.landmarks)?;
        let used = count("solution.used", p.used)?;
        if used > landmarks {
            return Err(err(
                "solution.used",
                format!("{used} landmarks used of {landmarks} given"),
            ));
        }
        Ok(Solution {
            method: method("solution.method", p.method)?,
            estimate: position("solution.estimate", p.estimate.as_ref())?,
            radius_km: non_negative("solution.radius_km", p.radius_km)?,
            region_km2: non_negative("solution.region_km2", p.region_km2)?,
            radius_50_km: opt_non_negative("solution.radius_50_km", p.radius_50_km)?,
            radius_90_km: opt_non_negative("solution.radius_90_km", p.radius_90_km)?,
            timezone: Timezone {
                iana: tz.iana.clone(),
                utc_offset: tz.utc_offset.clone(),
                utc_offset_s: tz.utc_offset_s,
            },
            timezones,
            place: Place {
                city: place.city.clone(),
                country: place.country.clone(),
                distance_km: non_negative("solution.place.distance_km", place.distance_km)?,
            },
            anycast: p.anycast,
            instances,
            collusion: p.collusion.as_ref().map(|c| Collusion {
                landmarks: c.landmarks.clone(),
                reason: c.reason.clone(),
            }),
            dropped: notes_from_pb(&p.dropped),
            loosened: notes_from_pb(&p.loosened),
            maxmind,
            landmarks,
            used,
            min_rtt_ms: non_negative("solution.min_rtt_ms", p.min_rtt_ms)?,
            nearest_landmark: p.nearest_landmark.clone(),
            region: region_from_pb(p.region.as_ref())?,
            region_constraints: Vec::new(),
            region_tolerance: 0,
        })
    }
}

fn maxmind_from_pb(m: &pb::MaxmindComparison) -> Result<MaxmindComparison> {
    const F: &str = "solution.maxmind";
    let (lat, lon) = match (m.lat, m.lon) {
        (Some(lat), Some(lon)) => {
            let p = LatLon::checked(lat, lon).map_err(|e| err(F, e))?;
            (Some(p.lat), Some(p.lon))
        }
        (None, None) => (None, None),
        _ => return Err(err(F, "lat and lon must be both present or both absent")),
    };
    Ok(MaxmindComparison {
        lat,
        lon,
        city: m.city.clone(),
        country: m.country.clone(),
        accuracy_radius_km: opt_non_negative(
            "solution.maxmind.accuracy_radius_km",
            m.accuracy_radius_km,
        )?,
        distance_km: opt_non_negative("solution.maxmind.distance_km", m.distance_km)?,
        verdict: verdict("solution.maxmind.verdict", m.verdict)?,
        ruled_out_by: m.ruled_out_by.clone(),
        excess_km: opt_non_negative("solution.maxmind.excess_km", m.excess_km)?,
        rulings: m
            .rulings
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let f = |x: &str| format!("solution.maxmind.rulings[{i}].{x}");
                Ok(Ruling {
                    landmark: r.landmark.clone(),
                    distance_km: non_negative(&f("distance_km"), r.distance_km)?,
                    bound_km: non_negative(&f("bound_km"), r.bound_km)?,
                })
            })
            .collect::<Result<Vec<_>>>()?,
        rulings_total: usize::try_from(m.rulings_total).map_err(|_| {
            err(
                "solution.maxmind.rulings_total",
                format!("{} does not fit this machine", m.rulings_total),
            )
        })?,
        assumption: m.assumption.clone(),
    })
}

// ---- names of the enums that scripts and storage read ---------------------------------------

impl pb::ErrorCode {
    /// Every code, for [`pb::ErrorCode::from_code`] and tests.
    pub const ALL: [pb::ErrorCode; 9] = [
        pb::ErrorCode::InvalidAddress,
        pb::ErrorCode::Bogon,
        pb::ErrorCode::InvalidArgument,
        pb::ErrorCode::NoProbes,
        pb::ErrorCode::NoAnswer,
        pb::ErrorCode::SolveFailed,
        pb::ErrorCode::Internal,
        pb::ErrorCode::Interrupted,
        pb::ErrorCode::QuotaExceeded,
    ];

    /// The short code printed by clients and stored with failed results
    /// (`invalid-address`, `no-probes`, ...); `unspecified` for the zero value.
    pub fn code(self) -> &'static str {
        match self {
            pb::ErrorCode::Unspecified => "unspecified",
            pb::ErrorCode::InvalidAddress => "invalid-address",
            pb::ErrorCode::Bogon => "bogon",
            pb::ErrorCode::InvalidArgument => "invalid-argument",
            pb::ErrorCode::NoProbes => "no-probes",
            pb::ErrorCode::NoAnswer => "no-answer",
            pb::ErrorCode::SolveFailed => "solve-failed",
            pb::ErrorCode::Internal => "internal",
            pb::ErrorCode::Interrupted => "interrupted",
            pb::ErrorCode::QuotaExceeded => "quota-exceeded",
        }
    }

    /// The enum value of a short code; None for an unknown one.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl pb::ProbeOutcome {
    /// Every outcome, for [`pb::ProbeOutcome::from_name`] and tests.
    pub const ALL: [pb::ProbeOutcome; 5] = [
        pb::ProbeOutcome::Answered,
        pb::ProbeOutcome::NoReply,
        pb::ProbeOutcome::Timeout,
        pb::ProbeOutcome::Disconnected,
        pb::ProbeOutcome::ProbeError,
    ];

    /// The name stored in `measurements.outcome` (`answered`, `no-reply`, ...).
    pub fn name(self) -> &'static str {
        match self {
            pb::ProbeOutcome::Unspecified => "unspecified",
            pb::ProbeOutcome::Answered => "answered",
            pb::ProbeOutcome::NoReply => "no-reply",
            pb::ProbeOutcome::Timeout => "timeout",
            pb::ProbeOutcome::Disconnected => "disconnected",
            pb::ProbeOutcome::ProbeError => "probe-error",
        }
    }

    /// The enum value of a stored name; None for an unknown one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// Prefix of the ids of RIPE Atlas vantage points (`atlas:<probe id>`). Fleet probe ids
/// are `[A-Za-z0-9._-]` only, so the prefix cannot be a fleet probe's.
pub const ATLAS_PREFIX: &str = "atlas:";

impl pb::LocateSource {
    /// The source of a vantage point by its id: [`ATLAS_PREFIX`] is RIPE Atlas, anything else
    /// the fleet.
    pub fn of_vantage_point(id: &str) -> Self {
        if id.starts_with(ATLAS_PREFIX) {
            pb::LocateSource::Atlas
        } else {
            pb::LocateSource::Fleet
        }
    }

    /// `fleet`, `atlas` or `both`; None for unspecified.
    pub fn name(self) -> Option<&'static str> {
        match self {
            pb::LocateSource::Unspecified => None,
            pb::LocateSource::Fleet => Some("fleet"),
            pb::LocateSource::Atlas => Some("atlas"),
            pb::LocateSource::Both => Some("both"),
        }
    }
}

impl pb::LocateMode {
    /// `all` or `two-stage`; None for unspecified.
    pub fn name(self) -> Option<&'static str> {
        match self {
            pb::LocateMode::Unspecified => None,
            pb::LocateMode::All => Some("all"),
            pb::LocateMode::TwoStage => Some("two-stage"),
            pb::LocateMode::Phased => Some("phased"),
        }
    }

    /// The enum value of `all` or `two-stage`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "all" => Some(pb::LocateMode::All),
            "two-stage" => Some(pb::LocateMode::TwoStage),
            "phased" => Some(pb::LocateMode::Phased),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoloc_engine::{distance_km, solve, GeoIpRecord, SolveOptions};
    use serde_json::json;

    /// RTTs a target at `t` would give landmarks at `ps` (path 1.5x the great circle, fibre
    /// at 2/3 c, plus 1 ms).
    fn rtts(t: LatLon, ps: &[(&str, f64, f64)]) -> Vec<Measurement> {
        ps.iter()
            .map(|&(name, lat, lon)| {
                let pos = LatLon::new(lat, lon);
                Measurement {
                    landmark: name.to_string(),
                    pos,
                    rtt_ms: 1.0 + 2.0 * 1.5 * distance_km(pos, t) / 199.86,
                    kind: Kind::Echo,
                }
            })
            .collect()
    }

    const EUROPE: &[(&str, f64, f64)] = &[
        ("paris", 48.8566, 2.3522),
        ("london", 51.5074, -0.1278),
        ("berlin", 52.52, 13.405),
        ("madrid", 40.4168, -3.7038),
        ("rome", 41.9028, 12.4964),
        ("vienna", 48.2082, 16.3738),
        ("amsterdam", 52.3676, 4.9041),
    ];

    fn opts() -> SolveOptions {
        SolveOptions {
            at_unix_s: Some(1_767_225_600),
            ..Default::default()
        }
    }

    fn round_trip(s: &Solution) -> Solution {
        let p = pb::Solution::try_from(s).unwrap();
        // Through the bytes too, as on the wire.
        let bytes = prost::Message::encode_to_vec(&p);
        let p: pb::Solution = prost::Message::decode(bytes.as_slice()).unwrap();
        Solution::try_from(&p).unwrap()
    }

    /// The solution without what does not cross the wire.
    fn answer(s: &Solution) -> Solution {
        Solution {
            region_constraints: Vec::new(),
            region_tolerance: 0,
            ..s.clone()
        }
    }

    #[test]
    fn a_real_solution_survives_the_round_trip() {
        let lyon = LatLon::new(45.764, 4.8357);
        let mut ms = rtts(lyon, EUROPE);
        // A landmark whose declared position is wrong (dropped), and a last-hop RTT.
        ms.push(Measurement {
            landmark: "liar".into(),
            pos: LatLon::new(-33.87, 151.21),
            rtt_ms: 3.0,
            kind: Kind::Echo,
        });
        ms[0].kind = Kind::LastHop;
        let s = solve(
            &ms,
            &SolveOptions {
                geoip: Some(GeoIpRecord {
                    lat: 40.7,
                    lon: -74.0,
                    city: Some("New York".into()),
                    country: Some("US".into()),
                    accuracy_radius_km: Some(20.0),
                }),
                geoip_checked: true,
                ..opts()
            },
        )
        .unwrap();
        // The test means something only if the solution carries every part.
        assert!(!s.dropped.is_empty(), "{:?}", s.dropped);
        assert!(!s.timezones.is_empty());
        assert!(s.region["coordinates"]
            .as_array()
            .is_some_and(|a| !a.is_empty()));
        let mm = s.maxmind.as_ref().unwrap();
        assert_eq!(mm.verdict, Verdict::ProvablyWrong);
        assert!(mm.ruled_out_by.is_some() && mm.excess_km.is_some());

        let back = round_trip(&s);
        assert_eq!(back, answer(&s));
        // The JSON printed by clients is the same as the engine's.
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&s).unwrap()
        );
        for m in &ms {
            let p = pb::ProbeRtt::from(m);
            assert_eq!(&Measurement::try_from(&p).unwrap(), m);
        }
    }

    #[test]
    fn an_anycast_solution_and_one_without_outline_survive_the_round_trip() {
        let lyon = LatLon::new(45.764, 4.8357);
        let tokyo = LatLon::new(35.68, 139.69);
        let mut ms = rtts(lyon, EUROPE);
        ms.extend(rtts(
            tokyo,
            &[
                ("tokyo", 35.68, 139.69),
                ("osaka", 34.69, 135.50),
                ("seoul", 37.57, 126.98),
                ("taipei", 25.03, 121.56),
            ],
        ));
        // Four Asian landmarks: leaving two out removes the split, so they are named as
        // possibly colluding instead of the address being called anycast.
        let s = solve(&ms, &opts()).unwrap();
        assert!(!s.anycast && s.collusion.is_some(), "{:?}", s.instances);
        assert_eq!(s.collusion.as_ref().unwrap().landmarks.len(), 4);
        assert_eq!(round_trip(&s), answer(&s));
        // Seven are enough for anycast.
        ms.extend(rtts(
            tokyo,
            &[
                ("shanghai", 31.23, 121.47),
                ("beijing", 39.90, 116.40),
                ("hongkong", 22.32, 114.17),
            ],
        ));
        let s = solve(&ms, &opts()).unwrap();
        assert!(s.anycast && s.instances.len() >= 2, "{:?}", s.instances);
        assert!(s.collusion.is_none());
        assert_eq!(round_trip(&s), answer(&s));

        let s = solve(
            &rtts(lyon, EUROPE),
            &SolveOptions {
                region_geometry: false,
                geoip_checked: true,
                method: Method::Cbg,
                ..opts()
            },
        )
        .unwrap();
        assert!(s.region.is_null());
        assert_eq!(s.maxmind.as_ref().unwrap().verdict, Verdict::NoData);
        let p = pb::Solution::try_from(&s).unwrap();
        assert!(p.region.is_none());
        assert_eq!(round_trip(&s), answer(&s));
    }

    #[test]
    fn calibrated_radii_cross_the_wire_and_may_be_absent() {
        let p = sample();
        let (r50, r90) = (p.radius_50_km.unwrap(), p.radius_90_km.unwrap());
        assert!(r50 > 0.0 && r90 > r50, "{r50} {r90}");
        // A server that predates the radii sends neither: the answer has none.
        let old = pb::Solution {
            radius_50_km: None,
            radius_90_km: None,
            ..p
        };
        let s = Solution::try_from(&old).unwrap();
        assert_eq!((s.radius_50_km, s.radius_90_km), (None, None));
    }

    fn sample() -> pb::Solution {
        let s = solve(&rtts(LatLon::new(45.764, 4.8357), EUROPE), &opts()).unwrap();
        pb::Solution::try_from(&s).unwrap()
    }

    fn refused(p: &pb::Solution, field: &str) {
        match Solution::try_from(p) {
            Ok(_) => panic!("accepted a solution with a bad {field}"),
            Err(e) => assert!(e.field.starts_with(field), "{e} (expected {field})"),
        }
    }

    #[test]
    fn hostile_positions_from_the_wire_are_errors() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 90.5, -1e308] {
            let mut p = sample();
            p.estimate = Some(pb::LatLon { lat: bad, lon: 0.0 });
            refused(&p, "solution.estimate");
            let mut p = sample();
            p.estimate = Some(pb::LatLon {
                lat: 0.0,
                lon: bad * 2.0,
            });
            refused(&p, "solution.estimate");
            let mut p = sample();
            p.region.as_mut().unwrap().polygons[0].rings[0].points[1].lon = bad * 2.0;
            refused(&p, "solution.region.polygons[0].rings[0].points[1]");
            let mut p = sample();
            p.instances.push(pb::AnycastInstance {
                position: Some(pb::LatLon { lat: bad, lon: 1.0 }),
                ..Default::default()
            });
            refused(&p, "solution.instances[0].position");
            let mut p = sample();
            p.maxmind = Some(pb::MaxmindComparison {
                lat: Some(bad),
                lon: Some(0.0),
                verdict: pb::Verdict::Consistent as i32,
                ..Default::default()
            });
            refused(&p, "solution.maxmind");
            let r = pb::ProbeRtt {
                probe_id: "x".into(),
                position: Some(pb::LatLon { lat: bad, lon: 0.0 }),
                rtt_ms: 1.0,
                kind: pb::RttKind::Echo as i32,
                ..Default::default()
            };
            assert!(Measurement::try_from(&r).is_err());
        }
    }

    #[test]
    fn hostile_numbers_missing_parts_and_unknown_enums_are_errors() {
        type Breaker = fn(&mut pb::Solution);
        let cases: Vec<(&str, Breaker)> = vec![
            ("solution.estimate", |p| p.estimate = None),
            ("solution.timezone", |p| p.timezone = None),
            ("solution.place", |p| p.place = None),
            ("solution.method", |p| p.method = 0),
            ("solution.method", |p| p.method = 99),
            ("solution.radius_km", |p| p.radius_km = f64::NAN),
            ("solution.radius_km", |p| p.radius_km = -1.0),
            ("solution.region_km2", |p| p.region_km2 = f64::INFINITY),
            ("solution.radius_50_km", |p| p.radius_50_km = Some(f64::NAN)),
            ("solution.radius_90_km", |p| p.radius_90_km = Some(-3.0)),
            ("solution.min_rtt_ms", |p| p.min_rtt_ms = -0.5),
            ("solution.used", |p| p.used = p.landmarks + 1),
            ("solution.timezone.utc_offset_s", |p| {
                p.timezone.as_mut().unwrap().utc_offset_s = i32::MIN
            }),
            ("solution.timezones[0].share", |p| {
                p.timezones[0].share = 1.5
            }),
            ("solution.place.distance_km", |p| {
                p.place.as_mut().unwrap().distance_km = f64::NAN
            }),
            ("solution.maxmind.verdict", |p| {
                p.maxmind = Some(pb::MaxmindComparison::default())
            }),
            ("solution.maxmind", |p| {
                p.maxmind = Some(pb::MaxmindComparison {
                    lat: Some(1.0),
                    verdict: pb::Verdict::NoData as i32,
                    ..Default::default()
                })
            }),
        ];
        for (field, break_it) in cases {
            let mut p = sample();
            assert!(Solution::try_from(&p).is_ok());
            break_it(&mut p);
            refused(&p, field);
        }
        let r = pb::ProbeRtt {
            probe_id: "x".into(),
            position: Some(pb::LatLon { lat: 1.0, lon: 2.0 }),
            rtt_ms: 1.0,
            kind: 7,
            ..Default::default()
        };
        assert!(Measurement::try_from(&r).is_err());
    }

    #[test]
    fn a_region_that_is_not_a_multipolygon_is_refused_on_the_way_out() {
        let s = solve(&rtts(LatLon::new(45.764, 4.8357), EUROPE), &opts()).unwrap();
        for bad in [
            json!({"type": "Polygon", "coordinates": []}),
            json!({"type": "MultiPolygon"}),
            json!({"type": "MultiPolygon", "coordinates": [[[[1.0]]]]}),
            json!({"type": "MultiPolygon", "coordinates": [[[["a", 1.0]]]]}),
        ] {
            let s = Solution {
                region: bad.clone(),
                ..s.clone()
            };
            assert!(pb::Solution::try_from(&s).is_err(), "{bad}");
        }
    }

    #[test]
    fn enum_names_match_the_codes_clients_print() {
        for c in pb::ErrorCode::ALL {
            assert_eq!(pb::ErrorCode::from_code(c.code()), Some(c));
        }
        assert_eq!(pb::ErrorCode::NoProbes.code(), "no-probes");
        assert_eq!(pb::ErrorCode::from_code("nope"), None);
        for o in pb::ProbeOutcome::ALL {
            assert_eq!(pb::ProbeOutcome::from_name(o.name()), Some(o));
        }
        for m in [pb::LocateMode::All, pb::LocateMode::TwoStage] {
            assert_eq!(pb::LocateMode::from_name(m.name().unwrap()), Some(m));
        }
        assert_eq!(pb::LocateMode::Unspecified.name(), None);
    }
}
