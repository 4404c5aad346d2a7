//! `geoloc locate IP...`: progress on stderr, the answer on stdout as text, JSON Lines
//! (`--json`) or one GeoJSON FeatureCollection (`--geojson`).
use clap::Args;
use geoloc_proto::v1 as pb;
use serde::Serialize;
use serde_json::Value;

use crate::{Client, Failure, LocateLine, Located, Mode, Source, DEFAULT_COORDINATOR};

/// `geoloc locate IP...`
#[derive(Debug, Args)]
pub struct LocateArgs {
    /// Addresses to locate (IPv4 or IPv6).
    #[arg(required = true, value_name = "IP")]
    pub ips: Vec<String>,
    /// Coordinator URL.
    #[arg(long, env = "GEOLOC_COORDINATOR", default_value = DEFAULT_COORDINATOR, value_name = "URL")]
    pub coordinator: String,
    #[command(flatten)]
    pub ca: crate::CaArg,
    /// Print one JSON object per address (schema: client/README.md).
    #[arg(long, conflicts_with = "geojson")]
    pub json: bool,
    /// Print a GeoJSON FeatureCollection (regions and estimates).
    #[arg(long)]
    pub geojson: bool,
    /// Scheduling mode (default: the coordinator's).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Per-probe timeout, ms (default: the coordinator's).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u32>,
    /// Two-stage: probes nearest the first region (default: the coordinator's).
    #[arg(long, value_name = "K")]
    pub k: Option<u32>,
    /// Return a stored result when the coordinator has one instead of measuring again.
    #[arg(long)]
    pub reuse: bool,
    /// Where the vantage points come from: the coordinator's fleet, RIPE Atlas (the
    /// coordinator's account, credits capped by its atlas-max-credits), or both merged
    /// (default: fleet).
    #[arg(long, value_enum)]
    pub source: Option<Source>,
    /// Most vantage points asked; the selection is then phased: a few spread probes, then
    /// round by round those nearest the shrinking region (default: no limit).
    #[arg(long, value_name = "N")]
    pub budget: Option<u32>,
    /// Also print the target's local time at this UTC instant (RFC 3339, e.g.
    /// 2026-03-14T02:30:00Z), in every candidate time zone with its share of the region.
    /// With --json: a `local_time_at` array (schema: client/README.md).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// The JSON object printed by `geoloc locate --json` for one located address (`ip` as the
/// user wrote it).
pub fn result_json(ip: &str, r: &Located) -> Value {
    let line = LocateLine::Located(Box::new(Located {
        ip: ip.to_string(),
        ..r.clone()
    }));
    serde_json::to_value(line).unwrap_or(Value::Null)
}

/// The JSON object printed by `geoloc locate --json` for an address that failed.
pub fn error_json(ip: &str, code: &str, message: &str) -> Value {
    let line = LocateLine::Failed {
        ip: ip.to_string(),
        error: Failure::new(code, message),
    };
    serde_json::to_value(line).unwrap_or(Value::Null)
}

fn human(ip: &str, r: &Located) -> String {
    let s = &r.solution;
    let mut out = format!(
        "{ip}: {}, {} ({:.4}, {:.4}) within {:.0} km",
        s.place.city, s.place.country, s.estimate.lat, s.estimate.lon, s.radius_km,
    );
    out.push_str(&format!(
        "\n  time zone: {} (UTC{})",
        s.timezone.iana, s.timezone.utc_offset
    ));
    if s.anycast {
        out.push_str(&format!(
            "\n  anycast: yes, {} instances",
            s.instances.len()
        ));
    }
    if let Some(c) = &s.collusion {
        out.push_str(&format!("\n  not called anycast: {}", c.reason));
    }
    out.push_str(&format!(
        "\n  probes: {} used of {} asked, {} packets; min RTT {} ({})",
        r.probes_used,
        r.probes_asked,
        r.packets_sent,
        r.min_rtt_ms.map_or("-".into(), |x| format!("{x:.2} ms")),
        r.nearest_probe
    ));
    if r.atlas_probes_asked > 0 || r.atlas_credits > 0 {
        out.push_str(&format!(
            "\n  sources: fleet {} asked, RIPE Atlas {} asked, {} Atlas credits spent",
            r.probes_asked.saturating_sub(r.atlas_probes_asked),
            r.atlas_probes_asked,
            r.atlas_credits
        ));
    }
    if let Some(m) = &s.maxmind {
        let f = |x: Option<f64>| x.map_or("?".to_string(), |x| format!("{x:.4}"));
        out.push_str(&format!(
            "\n  MaxMind: {} {} ({}, {}), {} km from the estimate: {}",
            m.city.as_deref().unwrap_or(""),
            m.country.as_deref().unwrap_or(""),
            f(m.lat),
            f(m.lon),
            m.distance_km.map_or("?".into(), |x| format!("{x:.0}")),
            m.verdict.name()
        ));
        if !m.rulings.is_empty() {
            let who: Vec<String> = m
                .rulings
                .iter()
                .map(|r| {
                    format!(
                        "{} ({:.0} km away, bound {:.0} km)",
                        r.landmark, r.distance_km, r.bound_km
                    )
                })
                .collect();
            let more = m.rulings_total.saturating_sub(m.rulings.len());
            out.push_str(&format!(
                "
    ruled out by: {}{}",
                who.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        if let Some(a) = &m.assumption {
            out.push_str(&format!(
                "
    assumes: {a}"
            ));
        }
    }
    if r.cached {
        out.push_str(&format!(
            "\n  (stored result {} from {} ms since epoch)",
            r.result_id, r.created_at_unix_ms
        ));
    }
    out
}

/// Properties of both features of one address in `--geojson`.
#[derive(Serialize)]
struct FeatureProps<'a> {
    ip: &'a str,
    result_id: &'a str,
    radius_km: f64,
    city: &'a str,
    country: &'a str,
    timezone: &'a str,
    anycast: bool,
    probes_used: u32,
    min_rtt_ms: Option<f64>,
    feature: &'a str,
}

/// The `region` (when the coordinator computed its outline) and `estimate` features of one
/// located address.
pub fn geojson_features(ip: &str, r: &Located) -> Vec<geojson::Feature> {
    let s = &r.solution;
    let props = |feature: &str| {
        let p = FeatureProps {
            ip,
            result_id: &r.result_id,
            radius_km: s.radius_km,
            city: &s.place.city,
            country: &s.place.country,
            timezone: &s.timezone.iana,
            anycast: s.anycast,
            probes_used: r.probes_used,
            min_rtt_ms: r.min_rtt_ms,
            feature,
        };
        match serde_json::to_value(p) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        }
    };
    let feature = |geometry: geojson::Geometry, kind: &str| geojson::Feature {
        bbox: None,
        geometry: Some(geometry),
        id: None,
        properties: props(kind),
        foreign_members: None,
    };
    let mut out = Vec::new();
    // The outline was checked on its way in (geoloc_proto::convert): a MultiPolygon or null.
    if let Ok(region) = geojson::Geometry::try_from(s.region.clone()) {
        out.push(feature(region, "region"));
    }
    let point = geojson::Value::Point(vec![s.estimate.lon, s.estimate.lat]);
    out.push(feature(geojson::Geometry::new(point), "estimate"));
    out
}

/// `geoloc locate`.
pub fn run_locate(args: LocateArgs) -> anyhow::Result<()> {
    for ip in &args.ips {
        geoloc_policy::parse_target(ip, true).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    if let Some(t) = &args.at {
        crate::localtime::parse_instant(t).map_err(|e| anyhow::anyhow!("--at: {e}"))?;
    }
    crate::runtime()?.block_on(locate_all(args))
}

/// The `--at` lines of the human output.
fn local_time_text(r: &Located, at: chrono::DateTime<chrono::Utc>) -> String {
    let zs = crate::localtime::local_times(&r.solution, at);
    let mut out = format!(
        "\n  local time at {}:",
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    for line in crate::localtime::describe(&zs) {
        out.push_str("\n    ");
        out.push_str(&line);
    }
    out
}

async fn locate_all(args: LocateArgs) -> anyhow::Result<()> {
    let at = match &args.at {
        Some(t) => Some(crate::localtime::parse_instant(t)?),
        None => None,
    };
    let mut client = Client::connect_with(&args.coordinator, &args.ca.options()).await?;
    let mut failed = 0usize;
    let mut features = Vec::new();
    for ip in &args.ips {
        let req = pb::LocateRequest {
            ip: ip.trim().to_string(),
            mode: Mode::to_pb(args.mode) as i32,
            timeout_ms: args.timeout_ms.unwrap_or(0),
            k: args.k.unwrap_or(0),
            reuse_stored: args.reuse,
            ping_count: 0,
            source: Source::to_pb(args.source) as i32,
            budget: args.budget.unwrap_or(0),
            job_key: crate::new_job_key("locate"),
        };
        eprintln!("locating {ip} ...");
        let outcome = client.locate(req, print_progress).await;
        match outcome {
            Ok(r) => {
                if args.json {
                    let mut v = result_json(ip, &r);
                    if let (Some(at), Value::Object(m)) = (at, &mut v) {
                        let zs = crate::localtime::local_times(&r.solution, at);
                        m.insert("local_time_at".into(), serde_json::to_value(zs)?);
                    }
                    println!("{v}");
                } else if args.geojson {
                    features.extend(geojson_features(ip, &r));
                } else {
                    let mut text = human(ip, &r);
                    if let Some(at) = at {
                        text.push_str(&local_time_text(&r, at));
                    }
                    println!("{text}");
                }
            }
            Err(Failure { code, message }) => {
                failed += 1;
                if args.json {
                    println!("{}", error_json(ip, &code, &message));
                }
                eprintln!("{ip}: not located: {message}");
                if code == "unreachable" {
                    break;
                }
            }
        }
    }
    if args.geojson {
        let fc = geojson::FeatureCollection {
            bbox: None,
            features,
            foreign_members: None,
        };
        // Through a Value: keys sorted, as every other JSON this client prints.
        println!("{}", serde_json::to_value(fc)?);
    }
    if failed > 0 {
        return Err(crate::NotLocated(format!(
            "{failed} of {} addresses could not be located",
            args.ips.len()
        ))
        .into());
    }
    Ok(())
}

fn print_progress(p: &pb::Progress) {
    let what = match p.min_rtt_ms {
        Some(r) => format!("{r:.2} ms"),
        None => format!("no RTT ({})", p.error),
    };
    eprintln!(
        "  [{}/{}] stage {} {}: {what}",
        p.done, p.total, p.stage, p.probe_id
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `--geojson` features as the client built them with `json!` before the typed
    /// result (kept here as the reference: the output must not change).
    fn old_features(ip: &str, r: &Located) -> Vec<Value> {
        let s = serde_json::to_value(&r.solution).unwrap();
        let mut out = Vec::new();
        let props = json!({
            "ip": ip, "result_id": r.result_id, "radius_km": s["radius_km"], "city": s["place"]["city"],
            "country": s["place"]["country"], "timezone": s["timezone"]["iana"], "anycast": s["anycast"],
            "probes_used": r.probes_used, "min_rtt_ms": r.min_rtt_ms,
        });
        if !s["region"].is_null() {
            let mut p = props.clone();
            p["feature"] = json!("region");
            out.push(json!({"type": "Feature", "geometry": s["region"], "properties": p}));
        }
        let (lat, lon) = (s["estimate"]["lat"].as_f64(), s["estimate"]["lon"].as_f64());
        let mut p = props;
        p["feature"] = json!("estimate");
        out.push(json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]}, "properties": p}));
        out
    }

    #[test]
    fn geojson_output_is_unchanged() {
        let (mut l, _) = crate::result::tests::located();
        for region in [true, false] {
            if !region {
                l.solution.region = Value::Null;
            }
            let new: Vec<Value> = geojson_features("81.2.69.142", &l)
                .into_iter()
                .map(|f| serde_json::to_value(f).unwrap())
                .collect();
            let old = old_features("81.2.69.142", &l);
            assert_eq!(new.len(), if region { 2 } else { 1 });
            assert_eq!(
                serde_json::to_string(&new).unwrap(),
                serde_json::to_string(&old).unwrap()
            );
        }
    }

    #[test]
    fn local_time_lines_name_every_zone() {
        let (mut l, _) = crate::result::tests::located();
        l.solution.timezones = vec![
            geoloc_engine::TzShare {
                iana: "Asia/Kolkata".into(),
                share: 0.6,
            },
            geoloc_engine::TzShare {
                iana: "Asia/Kathmandu".into(),
                share: 0.4,
            },
        ];
        let at = crate::localtime::parse_instant("2026-03-14T02:30:00Z").unwrap();
        assert_eq!(
            local_time_text(&l, at),
            "\n  local time at 2026-03-14T02:30:00Z:\
             \n    2026-03-14T08:00:00+05:30 IST Asia/Kolkata (60%)\
             \n    2026-03-14T08:15:00+05:45 +0545 Asia/Kathmandu (40%)"
        );
    }

    #[test]
    fn human_output_reads_the_typed_result() {
        let (l, _) = crate::result::tests::located();
        let text = human("81.2.69.142", &l);
        let s = &l.solution;
        assert!(
            text.starts_with(&format!(
                "81.2.69.142: {}, {} ({:.4}, {:.4}) within {:.0} km",
                s.place.city, s.place.country, s.estimate.lat, s.estimate.lon, s.radius_km
            )),
            "{text}"
        );
        assert!(
            text.contains("MaxMind:   (?, ?), ? km from the estimate: no-data"),
            "{text}"
        );
    }

    #[test]
    fn human_output_says_what_each_source_spent() {
        let (mut l, _) = crate::result::tests::located();
        assert!(!human("81.2.69.142", &l).contains("sources:"));
        l.probes_asked = 12;
        l.atlas_probes_asked = 7;
        l.atlas_credits = 42;
        let text = human("81.2.69.142", &l);
        assert!(
            text.contains("\n  sources: fleet 5 asked, RIPE Atlas 7 asked, 42 Atlas credits spent"),
            "{text}"
        );
    }

    #[test]
    fn human_output_names_the_ruling_probes_and_the_assumption() {
        let (mut l, _) = crate::result::tests::located();
        l.solution.maxmind = Some(geoloc_engine::MaxmindComparison {
            lat: Some(35.68),
            lon: Some(139.69),
            city: Some("Tokyo".into()),
            country: Some("JP".into()),
            distance_km: Some(9700.0),
            verdict: geoloc_engine::Verdict::ProvablyWrong,
            ruled_out_by: Some("paris".into()),
            excess_km: Some(9000.0),
            rulings: vec![
                geoloc_engine::Ruling {
                    landmark: "paris".into(),
                    distance_km: 9712.0,
                    bound_km: 712.0,
                },
                geoloc_engine::Ruling {
                    landmark: "rome".into(),
                    distance_km: 9860.0,
                    bound_km: 1000.0,
                },
            ],
            rulings_total: 3,
            assumption: Some("each of 3 landmarks alone rules the point out".into()),
            ..geoloc_engine::MaxmindComparison::no_data()
        });
        let text = human("81.2.69.142", &l);
        assert!(
            text.contains("km from the estimate: provably-wrong"),
            "{text}"
        );
        assert!(
            text.contains(
                "ruled out by: paris (9712 km away, bound 712 km), rome (9860 km away, bound 1000 km) and 1 more"
            ),
            "{text}"
        );
        assert!(
            text.contains("assumes: each of 3 landmarks alone rules the point out"),
            "{text}"
        );
    }
}
