//! A local stand-in for the RIPE Atlas v2 REST API, for tests and figures (feature
//! `stand-in`). It binds 127.0.0.1 only and answers from the lab's fitted delay model
//! ([`geoloc_lab::geo::DelayModel`]: per-host access delays plus great-circle distance in
//! fibre inflated by a drawn path factor), so RTTs behave like the lab's emulated Internet.
//!
//! It speaks the documented formats:
//! - `GET /api/v2/probes/` (`page`, `page_size` ≤ 500, `id__in`, `is_anchor`, `status`,
//!   `country_code`), paginated with absolute `next`/`previous` URLs;
//! - `POST /api/v2/measurements/`: needs `Authorization: Key <key>` (or `?key=`): without
//!   it 403 `{"error": {"status": 403, "code": 104, "title": "Forbidden", "detail":
//!   "Authentication credentials were not provided."}}`; a bad body is 400 with the
//!   documented error body and one `{"source": {"pointer": ..}, "detail": ..}` per field;
//!   a cost above the balance is 400. Only one-off ping and traceroute to IP addresses;
//!   probe specifications `probes`, `area`, `country`, `asn` with `requested`. Answers
//!   201 `{"measurements": [id, ..]}`;
//! - `GET /api/v2/measurements/{id}/` (`status` 2 Ongoing until every result is out, then
//!   4 Stopped; 6 No suitable probes), `GET /api/v2/measurements/{id}/results/` (results
//!   appear one by one over [`StandInConfig::result_spread`]);
//! - `GET /api/v2/credits/` (`current_balance`, charged per delivered result at the
//!   documented unit cost × 2 for one-offs).
//!
//! Areas are approximated from positions: `West` (lon < −30), `North-Central`/
//! `South-Central` (−30 ≤ lon < 60, north/south of the equator), `North-East`/`South-East`
//! (lon ≥ 60).
//!
//! A probe's `actual` position sets its RTTs; its `meta.pos` is what it declares (set them
//! apart to model a misplaced probe). [`StandInConfig::mesh_msm_id`] publishes a finished
//! ping measurement among anchors (the anchors' mesh: each pings
//! [`StandInConfig::mesh_partners`] others), readable without a key.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use geoloc_engine::LatLon;
use geoloc_lab::geo::DelayModel;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::probes::{Probe, ProbeStatus};

/// Which results a probe spoils (for tests of the parser behind the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A negative RTT.
    NegativeRtt,
    /// A `dst_addr` other than the target.
    WrongDst,
}

/// One probe of the stand-in.
#[derive(Debug, Clone)]
pub struct StandInProbe {
    /// What the API says about it (declared position included).
    pub meta: Probe,
    /// Where it really is: its RTTs are computed from here.
    pub actual: LatLon,
    pub fault: Option<Fault>,
}

/// The stand-in's world.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    pub probes: Vec<StandInProbe>,
    /// Hosts it can measure besides the probes: address → position.
    pub targets: Vec<(IpAddr, LatLon)>,
    /// The one valid API key.
    pub key: String,
    pub seed: u64,
    pub model: DelayModel,
    /// Per-packet jitter (exponential, this mean), ms.
    pub jitter_ms: f64,
    /// Results of a measurement appear evenly over this time after creation.
    pub result_spread: Duration,
    /// Starting credit balance.
    pub credits: f64,
    pub mesh_msm_id: Option<u64>,
    /// In the mesh, each anchor pings this many other anchors (seeded choice; all of them
    /// when there are fewer).
    pub mesh_partners: usize,
}

impl StandInConfig {
    /// A config with the lab's default delay model, 1 ms jitter, results over 1 s,
    /// 1,000,000 credits, the anchors' mesh as measurement 1000 (each anchor pinging 12
    /// others).
    pub fn new(probes: Vec<StandInProbe>, targets: Vec<(IpAddr, LatLon)>, key: &str) -> Self {
        Self {
            probes,
            targets,
            key: key.to_string(),
            seed: 1,
            model: DelayModel::default(),
            jitter_ms: 1.0,
            result_spread: Duration::from_secs(1),
            credits: 1_000_000.0,
            mesh_msm_id: Some(1000),
            mesh_partners: 12,
        }
    }
}

/// A probe at `pos` with id `id`, address 10.x.y.z (from the id), Connected.
pub fn probe_at(id: u32, pos: LatLon, is_anchor: bool) -> StandInProbe {
    StandInProbe {
        meta: Probe {
            id,
            pos: Some(pos),
            status: ProbeStatus::Connected,
            asn_v4: Some(64_496 + id % 10),
            asn_v6: Some(64_496 + id % 10),
            country: None,
            is_anchor,
            address_v4: Some(Ipv4Addr::from(0x0a00_0000 | (id & 0x00ff_ffff))),
            address_v6: Some(std::net::Ipv6Addr::new(
                0x2001,
                0xdb8,
                0xa71a,
                0,
                0,
                0,
                (id >> 16) as u16,
                id as u16,
            )),
        },
        actual: pos,
        fault: None,
    }
}

struct Msm {
    id: u64,
    kind: String,
    af: u8,
    target: String,
    packets: u32,
    unit: u64,
    requested: u64,
    results: Vec<(Instant, Value)>,
    created: Instant,
}

struct Inner {
    cfg: StandInConfig,
    url: String,
    /// One-way delays among [targets..., probes...], ms, row-major.
    oneway: Vec<f64>,
    n: usize,
    index: BTreeMap<IpAddr, usize>,
    msms: BTreeMap<u64, Msm>,
    next_id: u64,
    requests: Vec<Value>,
}

impl Inner {
    fn charged(&self, now: Instant) -> f64 {
        self.msms
            .values()
            .filter(|m| Some(m.id) != self.cfg.mesh_msm_id)
            .map(|m| (m.results.iter().filter(|(t, _)| *t <= now).count() as u64 * m.unit) as f64)
            .sum()
    }
}

/// A running stand-in.
pub struct StandIn {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// Starts the stand-in on 127.0.0.1 (a free port).
    pub async fn start(cfg: StandInConfig) -> std::io::Result<StandIn> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let mut positions = Vec::new();
        let mut index = BTreeMap::new();
        for (ip, pos) in &cfg.targets {
            index.insert(*ip, positions.len());
            positions.push(geoloc_lab::geo::LatLon {
                lat: pos.lat,
                lon: pos.lon,
            });
        }
        for p in &cfg.probes {
            for a in [
                p.meta.address_v4.map(IpAddr::V4),
                p.meta.address_v6.map(IpAddr::V6),
            ]
            .into_iter()
            .flatten()
            {
                index.insert(a, positions.len());
            }
            positions.push(geoloc_lab::geo::LatLon {
                lat: p.actual.lat,
                lon: p.actual.lon,
            });
        }
        let n = positions.len();
        let (_, oneway) = cfg.model.matrix(&positions, cfg.seed);
        let mut inner = Inner {
            cfg,
            url: url.clone(),
            oneway,
            n,
            index,
            msms: BTreeMap::new(),
            next_id: 5_000_001,
            requests: Vec::new(),
        };
        if let Some(mid) = inner.cfg.mesh_msm_id {
            let now = Instant::now();
            let anchors: Vec<usize> = (0..inner.cfg.probes.len())
                .filter(|&i| inner.cfg.probes[i].meta.is_anchor)
                .collect();
            let mut results = Vec::new();
            let mut rng = StdRng::seed_from_u64(inner.cfg.seed ^ mid);
            for &i in &anchors {
                let mut others: Vec<usize> = anchors.iter().copied().filter(|&j| j != i).collect();
                for k in (1..others.len()).rev() {
                    let j = rng.random_range(0..=k);
                    others.swap(k, j);
                }
                others.truncate(inner.cfg.mesh_partners);
                for j in others {
                    let Some(dst) = inner.cfg.probes[j].meta.address_v4 else {
                        continue;
                    };
                    let r = ping_result(&inner, mid, i, IpAddr::V4(dst), 3);
                    results.push((now, r));
                }
            }
            inner.msms.insert(
                mid,
                Msm {
                    id: mid,
                    kind: "ping".into(),
                    af: 4,
                    target: "anchors".into(),
                    packets: 3,
                    unit: 0,
                    requested: anchors.len() as u64,
                    results,
                    created: now,
                },
            );
        }
        let inner = Arc::new(Mutex::new(inner));
        let app = Router::new()
            .route("/api/v2/probes/", get(probes))
            .route("/api/v2/measurements/", axum::routing::post(create))
            .route("/api/v2/measurements/{id}/", get(measurement))
            .route("/api/v2/measurements/{id}/results/", get(results))
            .route("/api/v2/credits/", get(credits))
            .with_state(inner.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(StandIn {
            url,
            inner,
            shutdown: Some(tx),
            task,
        })
    }

    /// Credits charged so far (delivered results × unit cost × 2).
    pub fn credits_charged(&self) -> f64 {
        self.inner
            .lock()
            .expect("stand-in lock")
            .charged(Instant::now())
    }

    /// Every measurement creation body received (valid or not).
    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().expect("stand-in lock").requests.clone()
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn error(status: StatusCode, code: u32, detail: &str, errors: Vec<(String, String)>) -> Response {
    let mut e = json!({
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
        "title": status.canonical_reason().unwrap_or(""),
    });
    if !errors.is_empty() {
        e["errors"] = errors
            .into_iter()
            .map(|(p, d)| json!({"source": {"pointer": p}, "detail": d}))
            .collect();
    }
    (status, Json(json!({ "error": e }))).into_response()
}

fn authorised(
    st: &Inner,
    headers: &HeaderMap,
    q: &BTreeMap<String, String>,
) -> Result<(), Box<Response>> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Key "))
        .map(str::to_string)
        .or_else(|| q.get("key").cloned());
    match given {
        None => Err(Box::new(error(
            StatusCode::FORBIDDEN,
            104,
            "Authentication credentials were not provided.",
            vec![],
        ))),
        Some(k) if k.trim() != st.cfg.key => Err(Box::new(error(
            StatusCode::FORBIDDEN,
            104,
            "The provided API key is not valid.",
            vec![],
        ))),
        Some(_) => Ok(()),
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn probe_json(p: &Probe) -> Value {
    let status_id = match p.status {
        ProbeStatus::NeverConnected => 0,
        ProbeStatus::Connected => 1,
        ProbeStatus::Disconnected => 2,
        _ => 3,
    };
    json!({
        "id": p.id,
        "address_v4": p.address_v4.map(|a| a.to_string()),
        "address_v6": p.address_v6.map(|a| a.to_string()),
        "asn_v4": p.asn_v4,
        "asn_v6": p.asn_v6,
        "country_code": p.country,
        "description": format!("stand-in probe {}", p.id),
        "geometry": p.pos.map(|q| json!({"type": "Point", "coordinates": [q.lon, q.lat]})),
        "is_anchor": p.is_anchor,
        "is_public": true,
        "status": {"id": status_id, "name": p.status.name(), "since": "2026-11-01T00:00:00Z"},
        "tags": [],
        "type": "Probe",
    })
}

async fn probes(
    State(st): State<Arc<Mutex<Inner>>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let st = st.lock().expect("stand-in lock");
    let mut bad = Vec::new();
    let page: usize = q
        .get("page")
        .map_or(Ok(1), |p| p.parse())
        .unwrap_or_else(|_| {
            bad.push(("page".to_string(), "not a number".to_string()));
            1
        });
    let size: usize = q
        .get("page_size")
        .map_or(Ok(50), |p| p.parse())
        .unwrap_or(0);
    if !(1..=500).contains(&size) {
        bad.push(("page_size".into(), "between 1 and 500".into()));
    }
    if page == 0 {
        bad.push(("page".into(), "from 1".into()));
    }
    let ids: Option<BTreeSet<u32>> = q
        .get("id__in")
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    if !bad.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"status": 400, "code": 102, "title": "Bad Request", "detail": "Invalid query parameters",
                "errors": bad.into_iter().map(|(p, d)| json!({"source": {"parameter": p}, "detail": d})).collect::<Vec<_>>()}})),
        )
            .into_response();
    }
    let list: Vec<&Probe> = st
        .cfg
        .probes
        .iter()
        .map(|p| &p.meta)
        .filter(|p| ids.as_ref().is_none_or(|s| s.contains(&p.id)))
        .filter(|p| {
            q.get("is_anchor")
                .is_none_or(|v| (v == "true" || v == "1") == p.is_anchor)
        })
        .filter(|p| {
            q.get("status")
                .is_none_or(|v| v != "1" || p.status == ProbeStatus::Connected)
        })
        .filter(|p| {
            q.get("country_code")
                .is_none_or(|c| p.country.as_deref() == Some(c.as_str()))
        })
        .collect();
    let count = list.len();
    let start = (page - 1) * size;
    let results: Vec<Value> = list
        .iter()
        .skip(start)
        .take(size)
        .map(|p| probe_json(p))
        .collect();
    let link = |p: usize| {
        let mut qq: Vec<String> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "page")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        qq.push(format!("page={p}"));
        format!("{}/api/v2/probes/?{}", st.url, qq.join("&"))
    };
    let next = (start + size < count).then(|| link(page + 1));
    let previous = (page > 1).then(|| link(page - 1));
    Json(json!({"count": count, "next": next, "previous": previous, "results": results}))
        .into_response()
}

fn area_of(p: LatLon) -> &'static str {
    if p.lon < -30.0 {
        "West"
    } else if p.lon < 60.0 {
        if p.lat >= 0.0 {
            "North-Central"
        } else {
            "South-Central"
        }
    } else if p.lat >= 0.0 {
        "North-East"
    } else {
        "South-East"
    }
}

fn rng_for(seed: u64, msm: u64, probe: u32) -> StdRng {
    StdRng::seed_from_u64(
        seed ^ msm.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (probe as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f),
    )
}

/// Base RTT (no jitter) from probe `i` to `dst`, if the stand-in knows where `dst` is.
fn base_rtt(st: &Inner, i: usize, dst: IpAddr) -> Option<f64> {
    let row = st.cfg.targets.len() + i;
    let col = *st.index.get(&dst)?;
    if row == col {
        return Some(0.05);
    }
    Some(2.0 * st.oneway[row * st.n + col])
}

fn src_of(p: &Probe, af: u8) -> String {
    if af == 4 {
        p.address_v4.map_or("0.0.0.0".into(), |a| a.to_string())
    } else {
        p.address_v6.map_or("::".into(), |a| a.to_string())
    }
}

fn ping_result(st: &Inner, msm: u64, i: usize, dst: IpAddr, packets: u32) -> Value {
    let p = &st.cfg.probes[i];
    let af = if dst.is_ipv4() { 4 } else { 6 };
    let mut rng = rng_for(st.cfg.seed, msm, p.meta.id);
    let base = base_rtt(st, i, dst);
    let mut replies = Vec::new();
    let mut rtts = Vec::new();
    for _ in 0..packets {
        match base {
            Some(b) => {
                let j = -st.cfg.jitter_ms * (1.0 - rng.random::<f64>()).ln();
                let r = ((b + j) * 1000.0).round() / 1000.0;
                rtts.push(r);
                replies.push(json!({"rtt": r}));
            }
            None => replies.push(json!({"x": "*"})),
        }
    }
    let (min, avg, max) = if rtts.is_empty() {
        (-1.0, -1.0, -1.0)
    } else {
        (
            rtts.iter().copied().fold(f64::INFINITY, f64::min),
            rtts.iter().sum::<f64>() / rtts.len() as f64,
            rtts.iter().copied().fold(0.0, f64::max),
        )
    };
    let mut dst_addr = dst.to_string();
    match p.fault {
        Some(Fault::NegativeRtt) if !replies.is_empty() => replies[0] = json!({"rtt": -4.5}),
        Some(Fault::WrongDst) => {
            dst_addr = if af == 4 {
                "192.0.2.250".into()
            } else {
                "2001:db8::250".into()
            }
        }
        _ => {}
    }
    json!({
        "af": af, "avg": avg, "dst_addr": dst_addr, "dst_name": dst.to_string(), "dup": 0,
        "from": src_of(&p.meta, af), "fw": 5080, "lts": 12, "max": max, "min": min,
        "msm_id": msm, "msm_name": "Ping", "prb_id": p.meta.id, "proto": "ICMP",
        "rcvd": rtts.len(), "result": replies, "sent": packets, "size": 48,
        "src_addr": src_of(&p.meta, af), "step": null, "timestamp": now_s(), "ttl": 54, "type": "ping",
    })
}

fn router(af: u8, k: u32) -> String {
    if af == 4 {
        format!("198.18.{}.{}", k / 250, 1 + k % 250)
    } else {
        format!("2001:db8:ffff::{k:x}")
    }
}

fn traceroute_result(st: &Inner, msm: u64, i: usize, dst: IpAddr, packets: u32) -> Value {
    let p = &st.cfg.probes[i];
    let af = if dst.is_ipv4() { 4 } else { 6 };
    let mut rng = rng_for(st.cfg.seed, msm, p.meta.id);
    let base = base_rtt(st, i, dst);
    let mut hops = Vec::new();
    let total = base.unwrap_or(80.0);
    let n_mid = 4u32;
    for h in 1..=n_mid {
        let share = h as f64 / (n_mid + 1) as f64;
        let addr = router(af, p.meta.id % 1000 * 5 + h);
        let replies: Vec<Value> = (0..packets)
            .map(|_| {
                let r = total * share + -st.cfg.jitter_ms * (1.0 - rng.random::<f64>()).ln();
                json!({"from": addr, "rtt": (r * 1000.0).round() / 1000.0, "size": 76, "ttl": 255 - h})
            })
            .collect();
        hops.push(json!({"hop": h, "result": replies}));
    }
    let last: Vec<Value> = (0..packets)
        .map(|_| match base {
            Some(b) => {
                let mut r = b + -st.cfg.jitter_ms * (1.0 - rng.random::<f64>()).ln();
                if p.fault == Some(Fault::NegativeRtt) {
                    r = -4.5;
                }
                json!({"from": dst.to_string(), "rtt": (r * 1000.0).round() / 1000.0, "size": 28, "ttl": 50})
            }
            None => json!({"x": "*"}),
        })
        .collect();
    hops.push(json!({"hop": if base.is_some() { n_mid + 1 } else { 255 }, "result": last}));
    let dst_addr = if p.fault == Some(Fault::WrongDst) {
        if af == 4 {
            "192.0.2.250".to_string()
        } else {
            "2001:db8::250".into()
        }
    } else {
        dst.to_string()
    };
    json!({
        "af": af, "dst_addr": dst_addr, "dst_name": dst.to_string(), "endtime": now_s() + 2,
        "from": src_of(&p.meta, af), "fw": 5080, "lts": 12, "msm_id": msm, "msm_name": "Traceroute",
        "paris_id": 1, "prb_id": p.meta.id, "proto": "ICMP", "result": hops, "size": 48,
        "src_addr": src_of(&p.meta, af), "timestamp": now_s(), "type": "traceroute",
    })
}

#[allow(clippy::type_complexity)]
fn validate(
    body: &Value,
) -> Result<
    (
        Vec<(String, u8, IpAddr, u32, u32)>,
        Vec<(String, String, u64)>,
    ),
    Vec<(String, String)>,
> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let mut defs = Vec::new();
    let mut specs = Vec::new();
    let Some(o) = body.as_object() else {
        return Err(vec![(
            "/".into(),
            "The request body must be a JSON object.".into(),
        )]);
    };
    match o.get("definitions").and_then(Value::as_array) {
        Some(d) if !d.is_empty() => {
            for (i, def) in d.iter().enumerate() {
                let at = |f: &str| format!("/definitions/{i}/{f}");
                let t = def.get("type").and_then(Value::as_str).unwrap_or("");
                if !["ping", "traceroute"].contains(&t) {
                    errs.push((at("type"), format!("\"{t}\" is not a measurement type this stand-in runs (ping, traceroute).")));
                }
                let af = def.get("af").and_then(Value::as_u64);
                if !matches!(af, Some(4) | Some(6)) {
                    errs.push((
                        at("af"),
                        "This field is required and must be 4 or 6.".into(),
                    ));
                }
                let target = def
                    .get("target")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<IpAddr>().ok());
                match target {
                    None => errs.push((
                        at("target"),
                        "This field is required (an IP address: the stand-in resolves no names)."
                            .into(),
                    )),
                    Some(ip)
                        if matches!(af, Some(4) | Some(6)) && (af == Some(4)) != ip.is_ipv4() =>
                    {
                        errs.push((
                            at("af"),
                            "The target's address family does not match af.".into(),
                        ))
                    }
                    _ => {}
                }
                if def
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s.trim().is_empty())
                {
                    errs.push((at("description"), "This field is required.".into()));
                }
                let packets = match def.get("packets") {
                    None => 3,
                    Some(v) => match v.as_u64() {
                        Some(p @ 1..=16) => p as u32,
                        _ => {
                            errs.push((
                                at("packets"),
                                "Ensure this value is between 1 and 16.".into(),
                            ));
                            3
                        }
                    },
                };
                let size = match def.get("size") {
                    None => 48,
                    Some(v) => match v.as_u64() {
                        Some(s @ 1..=2048) => s as u32,
                        _ => {
                            errs.push((
                                at("size"),
                                "Ensure this value is between 1 and 2048.".into(),
                            ));
                            48
                        }
                    },
                };
                if let (Some(af), Some(ip)) = (af, target) {
                    defs.push((t.to_string(), af as u8, ip, packets, size));
                }
            }
        }
        _ => errs.push((
            "/definitions".into(),
            "At least one definition is required.".into(),
        )),
    }
    match o.get("probes").and_then(Value::as_array) {
        Some(p) if !p.is_empty() => {
            for (i, spec) in p.iter().enumerate() {
                let at = |f: &str| format!("/probes/{i}/{f}");
                let t = spec.get("type").and_then(Value::as_str).unwrap_or("");
                if !["probes", "area", "country", "asn"].contains(&t) {
                    errs.push((
                        at("type"),
                        format!("\"{t}\" is not a valid probe selection type."),
                    ));
                }
                let value = match spec.get("value") {
                    Some(Value::String(s)) if !s.is_empty() => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => {
                        errs.push((at("value"), "This field is required.".into()));
                        String::new()
                    }
                };
                let requested = match spec.get("requested").and_then(Value::as_u64) {
                    Some(r @ 1..=1000) => r,
                    None if t == "probes" => value.split(',').count() as u64,
                    _ => {
                        errs.push((
                            at("requested"),
                            "Ensure this value is between 1 and 1000.".into(),
                        ));
                        0
                    }
                };
                specs.push((t.to_string(), value, requested));
            }
        }
        _ => errs.push((
            "/probes".into(),
            "At least one probe source is required.".into(),
        )),
    }
    if o.get("is_oneoff").and_then(Value::as_bool) != Some(true) {
        errs.push((
            "/is_oneoff".into(),
            "The stand-in runs one-off measurements only: set is_oneoff to true.".into(),
        ));
    }
    if errs.is_empty() {
        Ok((defs, specs))
    } else {
        Err(errs)
    }
}

async fn create(
    State(st): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut st = st.lock().expect("stand-in lock");
    if let Err(r) = authorised(&st, &headers, &q) {
        return *r;
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                102,
                &format!("JSON parse error - {e}"),
                vec![],
            )
        }
    };
    st.requests.push(body.clone());
    let (defs, specs) = match validate(&body) {
        Ok(x) => x,
        Err(errs) => {
            return error(
                StatusCode::BAD_REQUEST,
                102,
                "There were problems with your request",
                errs,
            )
        }
    };
    // Select probes (each spec in turn; a probe is used once), seeded per request.
    let af = defs[0].1;
    let mut rng = StdRng::seed_from_u64(st.cfg.seed ^ st.next_id);
    let mut chosen: Vec<usize> = Vec::new();
    let mut requested_total = 0u64;
    for (t, value, requested) in &specs {
        requested_total += requested;
        let mut pool: Vec<usize> = (0..st.cfg.probes.len())
            .filter(|i| !chosen.contains(i))
            .filter(|&i| {
                let p = &st.cfg.probes[i].meta;
                p.status == ProbeStatus::Connected
                    && if af == 4 {
                        p.address_v4.is_some()
                    } else {
                        p.address_v6.is_some()
                    }
                    && match t.as_str() {
                        "probes" => value
                            .split(',')
                            .any(|x| x.trim().parse::<u32>().ok() == Some(p.id)),
                        "area" => value == "WW" || p.pos.is_some_and(|q| area_of(q) == value),
                        "country" => p.country.as_deref() == Some(value.as_str()),
                        "asn" => value.parse::<u32>().ok().is_some_and(|a| {
                            (if af == 4 { p.asn_v4 } else { p.asn_v6 }) == Some(a)
                        }),
                        _ => false,
                    }
            })
            .collect();
        // Fisher-Yates, then take what was requested.
        for k in (1..pool.len()).rev() {
            let j = rng.random_range(0..=k);
            pool.swap(k, j);
        }
        chosen.extend(pool.into_iter().take(*requested as usize));
    }
    // The documented unit costs, twice for one-offs: refuse beyond the balance.
    let units: Vec<u64> = defs
        .iter()
        .map(|(t, _, _, packets, size)| {
            let base = *packets as u64 * (*size as u64 / 1500 + 1);
            2 * if t == "traceroute" { 10 * base } else { base }
        })
        .collect();
    let cost: u64 = units.iter().map(|u| u * requested_total).sum();
    let balance = st.cfg.credits - st.charged(Instant::now());
    if cost as f64 > balance {
        return error(
            StatusCode::BAD_REQUEST,
            102,
            &format!("You do not have enough credits to schedule this measurement: it may cost {cost}, your balance is {balance:.0}."),
            vec![],
        );
    }
    let mut ids = Vec::new();
    let now = Instant::now();
    for ((t, af, target, packets, _), unit) in defs.into_iter().zip(units) {
        let id = st.next_id;
        st.next_id += 1;
        let n = chosen.len().max(1) as u32;
        let spread = st.cfg.result_spread;
        let results: Vec<(Instant, Value)> = chosen
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let at = now + spread * (k as u32 + 1) / n;
                let r = if t == "ping" {
                    ping_result(&st, id, i, target, packets)
                } else {
                    traceroute_result(&st, id, i, target, packets)
                };
                (at, r)
            })
            .collect();
        st.msms.insert(
            id,
            Msm {
                id,
                kind: t,
                af,
                target: target.to_string(),
                packets,
                unit,
                requested: requested_total,
                results,
                created: now,
            },
        );
        ids.push(id);
    }
    (StatusCode::CREATED, Json(json!({ "measurements": ids }))).into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, 404, "Not found.", vec![])
}

async fn measurement(State(st): State<Arc<Mutex<Inner>>>, Path(id): Path<String>) -> Response {
    let st = st.lock().expect("stand-in lock");
    let Some(m) = id.parse::<u64>().ok().and_then(|id| st.msms.get(&id)) else {
        return not_found();
    };
    let now = Instant::now();
    let out = m.results.iter().filter(|(t, _)| *t <= now).count();
    let (sid, name) = if m.results.is_empty() {
        (6, "No suitable probes")
    } else if out == m.results.len() {
        (4, "Stopped")
    } else {
        (2, "Ongoing")
    };
    Json(json!({
        "id": m.id, "type": m.kind, "af": m.af, "target": m.target, "is_oneoff": true,
        "packets": m.packets, "probes_requested": m.requested, "probes_scheduled": m.results.len(),
        "participant_count": m.results.len(),
        "creation_time": now_s() - m.created.elapsed().as_secs(),
        "status": {"id": sid, "name": name},
        "result": format!("{}/api/v2/measurements/{}/results/", st.url, m.id),
    }))
    .into_response()
}

async fn results(State(st): State<Arc<Mutex<Inner>>>, Path(id): Path<String>) -> Response {
    let st = st.lock().expect("stand-in lock");
    let Some(m) = id.parse::<u64>().ok().and_then(|id| st.msms.get(&id)) else {
        return not_found();
    };
    let now = Instant::now();
    let out: Vec<&Value> = m
        .results
        .iter()
        .filter(|(t, _)| *t <= now)
        .map(|(_, v)| v)
        .collect();
    Json(out).into_response()
}

async fn credits(
    State(st): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let st = st.lock().expect("stand-in lock");
    if let Err(r) = authorised(&st, &headers, &q) {
        return *r;
    }
    let balance = st.cfg.credits - st.charged(Instant::now());
    Json(json!({
        "current_balance": balance,
        "estimated_daily_income": 0,
        "estimated_daily_expenditure": 0,
    }))
    .into_response()
}

/// `per_city` probes around each city (within about `radius_km`, seeded; ids from 1), the
/// first of each city an anchor with the city's country.
pub fn scatter_probes(
    cities: &[geoloc_lab::geo::City],
    per_city: usize,
    radius_km: f64,
    seed: u64,
) -> Vec<StandInProbe> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for c in cities {
        for k in 0..per_city {
            let id = out.len() as u32 + 1;
            let (dlat, dlon) = if k == 0 {
                (0.0, 0.0)
            } else {
                let r = radius_km * rng.random::<f64>().sqrt() / 111.2;
                let a = rng.random::<f64>() * std::f64::consts::TAU;
                (
                    r * a.sin(),
                    r * a.cos() / c.pos.lat.to_radians().cos().max(0.1),
                )
            };
            let pos = LatLon::new(
                (c.pos.lat + dlat).clamp(-89.9, 89.9),
                ((c.pos.lon + dlon + 540.0) % 360.0) - 180.0,
            );
            let mut p = probe_at(id, pos, k == 0);
            p.meta.country = (c.country.len() == 2).then(|| c.country.to_ascii_uppercase());
            out.push(p);
        }
    }
    out
}

/// Probes at the RIPE Atlas anchors of a CSV `id,ip,country,lat,lon` (as in
/// `../shared/data/ripe-atlas-2023/anchors.csv`), every one an anchor, with its real id,
/// IPv4 address and country. Rows that do not read are skipped.
pub fn anchors_from_csv(text: &str) -> Vec<StandInProbe> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 5 {
            continue;
        }
        let (Ok(id), Ok(ip), Ok(lat), Ok(lon)) = (
            f[0].parse::<u32>(),
            f[1].parse::<Ipv4Addr>(),
            f[3].parse::<f64>(),
            f[4].parse::<f64>(),
        ) else {
            continue;
        };
        let Ok(pos) = LatLon::checked(lat, lon) else {
            continue;
        };
        let mut p = probe_at(id, pos, true);
        p.meta.address_v4 = Some(ip);
        p.meta.country = (f[2].len() == 2).then(|| f[2].to_ascii_uppercase());
        out.push(p);
    }
    out
}
