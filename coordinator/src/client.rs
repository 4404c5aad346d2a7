//! Client commands of the `geoloc` binary that talk to a coordinator: `geoloc locate`,
//! `geoloc audit` (see [`crate::audit`]) and `geoloc probes`.
use std::time::Duration;

use clap::Args;
use geoloc_proto::v1 as pb;
use pb::locate_service_client::LocateServiceClient;
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};

pub use crate::audit::{run_audit, AuditArgs};
use crate::config::Mode;

/// Default coordinator URL.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7470";
/// Longest wait for the next event of a locate stream.
const EVENT_TIMEOUT: Duration = Duration::from_secs(180);

/// `geoloc locate IP...`
#[derive(Debug, Args)]
pub struct LocateArgs {
    /// Addresses to locate (IPv4 or IPv6).
    #[arg(required = true, value_name = "IP")]
    pub ips: Vec<String>,
    /// Coordinator URL.
    #[arg(long, env = "GEOLOC_COORDINATOR", default_value = DEFAULT_COORDINATOR, value_name = "URL")]
    pub coordinator: String,
    /// Print one JSON object per address (schema: coordinator/README.md).
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
}

/// `geoloc probes`
#[derive(Debug, Args)]
pub struct ProbesArgs {
    /// Coordinator URL.
    #[arg(long, env = "GEOLOC_COORDINATOR", default_value = DEFAULT_COORDINATOR, value_name = "URL")]
    pub coordinator: String,
    /// Print a JSON array (schema: coordinator/README.md).
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

/// Connects to a coordinator, with a clear error when it cannot be reached.
pub async fn connect(url: &str) -> anyhow::Result<LocateServiceClient<Channel>> {
    let ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| {
            anyhow::anyhow!(
                "bad coordinator URL {url:?}: {e} (expected e.g. {DEFAULT_COORDINATOR})"
            )
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    let ch = ep.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the coordinator at {url}: {e}{}",
            source_chain(&e)
        )
    })?;
    Ok(LocateServiceClient::new(ch).max_decoding_message_size(64 << 20))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Addresses were not located (exit code 1; every other error exits 2). See the README's
/// table of exit codes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotLocated(pub String);

/// The error code of an INVALID_ARGUMENT status (`bogon`, `invalid-address`, ...), sent by
/// the coordinator in the `geoloc-error-code` metadata.
pub fn invalid_code(s: &tonic::Status) -> String {
    s.metadata()
        .get("geoloc-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("invalid-argument")
        .to_string()
}

/// A gRPC status as a one-line message.
pub fn status_msg(s: &tonic::Status) -> String {
    match s.code() {
        tonic::Code::Unavailable => format!("coordinator unavailable: {}", s.message()),
        tonic::Code::InvalidArgument => s.message().to_string(),
        c => format!("{c:?}: {}", s.message()),
    }
}

pub(crate) fn mode_pb(m: Option<Mode>) -> i32 {
    match m {
        None => pb::LocateMode::Unspecified as i32,
        Some(Mode::All) => pb::LocateMode::All as i32,
        Some(Mode::TwoStage) => pb::LocateMode::TwoStage as i32,
    }
}

/// The JSON object printed by `geoloc locate --json` for one located address.
pub fn result_json(ip: &str, r: &pb::LocateResult) -> Value {
    let solution: Value = serde_json::from_str(&r.solution_json).unwrap_or(Value::Null);
    json!({
        "ip": ip,
        "result_id": r.result_id,
        "created_at_unix_ms": r.created_at_unix_ms,
        "cached": r.cached,
        "mode": r.mode,
        "probes_asked": r.probes_asked,
        "probes_used": r.probes_used,
        "packets_sent": r.packets_sent,
        "min_rtt_ms": r.min_rtt_ms,
        "nearest_probe": r.nearest_probe,
        "solution": solution,
    })
}

/// The JSON object printed by `geoloc locate --json` for an address that failed.
pub fn error_json(ip: &str, code: &str, message: &str) -> Value {
    json!({ "ip": ip, "error": { "code": code, "message": message } })
}

fn human(ip: &str, r: &pb::LocateResult) -> String {
    let s: Value = serde_json::from_str(&r.solution_json).unwrap_or(Value::Null);
    let f = |v: &Value| v.as_f64().map_or("?".to_string(), |x| format!("{x:.4}"));
    let st = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut out = format!(
        "{ip}: {}, {} ({}, {}) within {} km",
        st(&s["place"]["city"]),
        st(&s["place"]["country"]),
        f(&s["estimate"]["lat"]),
        f(&s["estimate"]["lon"]),
        s["radius_km"]
            .as_f64()
            .map_or("?".into(), |x| format!("{x:.0}")),
    );
    out.push_str(&format!(
        "\n  time zone: {} (UTC{})",
        st(&s["timezone"]["iana"]),
        st(&s["timezone"]["utc_offset"])
    ));
    if s["anycast"].as_bool() == Some(true) {
        let n = s["instances"].as_array().map_or(0, Vec::len);
        out.push_str(&format!("\n  anycast: yes, {n} instances"));
    }
    out.push_str(&format!(
        "\n  probes: {} used of {} asked, {} packets; min RTT {} ({})",
        r.probes_used,
        r.probes_asked,
        r.packets_sent,
        r.min_rtt_ms.map_or("-".into(), |x| format!("{x:.2} ms")),
        r.nearest_probe
    ));
    if let Some(m) = s.get("maxmind").filter(|m| !m.is_null()) {
        out.push_str(&format!(
            "\n  MaxMind: {} {} ({}, {}), {} km from the estimate: {}",
            st(&m["city"]),
            st(&m["country"]),
            f(&m["lat"]),
            f(&m["lon"]),
            m["distance_km"]
                .as_f64()
                .map_or("?".into(), |x| format!("{x:.0}")),
            st(&m["verdict"])
        ));
    }
    if r.cached {
        out.push_str(&format!(
            "\n  (stored result {} from {} ms since epoch)",
            r.result_id, r.created_at_unix_ms
        ));
    }
    out
}

/// The features `geoloc locate --geojson` prints for one located address.
pub fn geojson_features(ip: &str, r: &pb::LocateResult) -> Vec<Value> {
    let s: Value = serde_json::from_str(&r.solution_json).unwrap_or(Value::Null);
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
    if let (Some(lat), Some(lon)) = (s["estimate"]["lat"].as_f64(), s["estimate"]["lon"].as_f64()) {
        let mut p = props;
        p["feature"] = json!("estimate");
        out.push(json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]}, "properties": p}));
    }
    out
}

pub fn run_locate(args: LocateArgs) -> anyhow::Result<()> {
    for ip in &args.ips {
        crate::target::check(ip, true).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    runtime()?.block_on(locate_all(args))
}

async fn locate_all(args: LocateArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.coordinator).await?;
    let mut failed = 0usize;
    let mut features = Vec::new();
    for ip in &args.ips {
        let req = pb::LocateRequest {
            ip: ip.trim().to_string(),
            mode: mode_pb(args.mode),
            timeout_ms: args.timeout_ms.unwrap_or(0),
            k: args.k.unwrap_or(0),
            reuse_stored: args.reuse,
            ping_count: 0,
        };
        eprintln!("locating {ip} ...");
        let outcome = locate_one(&mut client, req).await;
        match outcome {
            Ok(r) => {
                if args.json {
                    println!("{}", result_json(ip, &r));
                } else if args.geojson {
                    features.extend(geojson_features(ip, &r));
                } else {
                    println!("{}", human(ip, &r));
                }
            }
            Err((code, message)) => {
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
        println!(
            "{}",
            json!({"type": "FeatureCollection", "features": features})
        );
    }
    if failed > 0 {
        return Err(NotLocated(format!(
            "{failed} of {} addresses could not be located",
            args.ips.len()
        ))
        .into());
    }
    Ok(())
}

/// Runs one Locate call, printing progress on stderr. Errors are (code, message).
async fn locate_one(
    client: &mut LocateServiceClient<Channel>,
    req: pb::LocateRequest,
) -> Result<pb::LocateResult, (String, String)> {
    let mut stream = match client.locate(req).await {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            return Err((invalid_code(&s), s.message().into()))
        }
        Err(s) => return Err(("unreachable".into(), status_msg(&s))),
    };
    loop {
        let next = tokio::time::timeout(EVENT_TIMEOUT, stream.message()).await;
        let msg = match next {
            Err(_) => {
                return Err((
                    "timeout".into(),
                    format!(
                        "no news from the coordinator for {} s",
                        EVENT_TIMEOUT.as_secs()
                    ),
                ))
            }
            Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => {
                return Err((invalid_code(&s), s.message().into()))
            }
            Ok(Err(s)) => return Err(("unreachable".into(), status_msg(&s))),
            Ok(Ok(None)) => {
                return Err((
                    "internal".into(),
                    "the coordinator ended the stream without an answer".into(),
                ))
            }
            Ok(Ok(Some(m))) => m,
        };
        match msg.event {
            Some(pb::locate_event::Event::Progress(p)) => {
                let what = match p.min_rtt_ms {
                    Some(r) => format!("{r:.2} ms"),
                    None => format!("no RTT ({})", p.error),
                };
                eprintln!(
                    "  [{}/{}] stage {} {}: {what}",
                    p.done, p.total, p.stage, p.probe_id
                );
            }
            Some(pb::locate_event::Event::Result(r)) => return Ok(r),
            Some(pb::locate_event::Event::Error(e)) => return Err((e.code, e.message)),
            None => {}
        }
    }
}

pub fn run_probes(args: ProbesArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut client = connect(&args.coordinator).await?;
        let reply = client
            .list_probes(pb::ListProbesRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("listing probes: {}", status_msg(&s)))?
            .into_inner();
        let now = crate::unix_ms();
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&probes_json(&reply.probes))?
            );
            return Ok(());
        }
        println!(
            "{:<20} {:>9} {:>10} {:<12} {:>10} {:<10} note",
            "probe", "lat", "lon", "status", "last seen", "version"
        );
        for p in &reply.probes {
            let status = probe_status(p);
            let seen = if p.last_seen_unix_ms == 0 {
                "never".to_string()
            } else {
                ago(now - p.last_seen_unix_ms)
            };
            println!(
                "{:<20} {:>9.4} {:>10.4} {:<12} {:>10} {:<10} {}",
                printable(&p.probe_id),
                p.lat,
                p.lon,
                status,
                seen,
                printable(&p.agent_version),
                printable(&p.flag_reason)
            );
        }
        eprintln!(
            "{} probes, {} healthy",
            reply.probes.len(),
            reply.probes.iter().filter(|p| p.healthy).count()
        );
        Ok(())
    })
}

/// One word for a probe's state: healthy, flagged, stale (connected, heartbeats late) or
/// disconnected.
pub fn probe_status(p: &pb::ProbeInfo) -> &'static str {
    if p.flagged {
        "flagged"
    } else if p.healthy {
        "healthy"
    } else if p.connected {
        "stale"
    } else {
        "disconnected"
    }
}

/// The JSON printed by `geoloc probes --json`.
pub fn probes_json(ps: &[pb::ProbeInfo]) -> Value {
    Value::Array(
        ps.iter()
            .map(|p| {
                json!({
                    "probe_id": p.probe_id, "lat": p.lat, "lon": p.lon, "status": probe_status(p),
                    "healthy": p.healthy, "connected": p.connected, "flagged": p.flagged,
                    "flag_reason": p.flag_reason, "last_seen_unix_ms": p.last_seen_unix_ms,
                    "agent_version": p.agent_version, "ipv4": p.ipv4, "ipv6": p.ipv6,
                })
            })
            .collect(),
    )
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 120 {
        format!("{s} s ago")
    } else if s < 7200 {
        format!("{} min ago", s / 60)
    } else {
        format!("{} h ago", s / 3600)
    }
}

/// A text from the coordinator made safe for a terminal: control characters (escape
/// sequences, newlines) are shown escaped.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
