//! Attacks on the coordinator over loopback (issue 14): fake probes that answer with values
//! no honest agent sends, and clients that push the limits. Each test reproduces one attack
//! and checks that the coordinator refuses it, names the probe, and keeps serving the
//! honest ones. Honest fake probes come from `tests/common`; the hostile ones are built here
//! from the generated gRPC client, answering whatever the test scripts.
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use geoloc_engine::LatLon;
use geoloc_proto::v1 as pb;
use pb::probe_message::Kind as PKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Every test is bounded.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test took more than 120 s")
}

// Target: a host in Lyon at 127.0.0.50 (loopback: the fake probes send nothing).
const TARGET: &str = "127.0.0.50";
const LYON: (f64, f64) = (45.764, 4.8357);

/// What a hostile probe sends for one request (any number of messages, maybe none).
type Script = Arc<dyn Fn(&pb::MeasurementRequest) -> Vec<pb::ProbeMessage> + Send + Sync>;

/// A registered probe with an open session that answers as scripted.
struct Hostile {
    requests: Arc<Mutex<Vec<pb::MeasurementRequest>>>,
    task: tokio::task::JoinHandle<()>,
    /// Set when the session ended.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn registration(id: &str, pos: (f64, f64), ipv4: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        probe_id: id.into(),
        lat: pos.0,
        lon: pos.1,
        credential: TOKEN.into(),
        agent_version: "hostile-0".into(),
        allow_private: true,
        ipv4: ipv4.into(),
        ipv6: String::new(),
    }
}

async fn probe_client(
    url: &str,
) -> pb::probe_service_client::ProbeServiceClient<tonic::transport::Channel> {
    pb::probe_service_client::ProbeServiceClient::connect(url.to_string())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
}

impl Hostile {
    async fn start(url: &str, reg: pb::RegisterRequest, script: Script) -> Hostile {
        let mut pc = probe_client(url).await;
        let id = reg.probe_id.clone();
        let reply = pc.register(reg).await.unwrap().into_inner();
        let (tx, rx) = mpsc::channel::<pb::ProbeMessage>(64);
        tx.send(pb::ProbeMessage {
            kind: Some(PKind::Hello(pb::Hello {
                session_token: reply.session_token.clone(),
                probe_id: id,
            })),
        })
        .await
        .unwrap();
        let mut inbound = pc
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = inbound.message().await.unwrap().unwrap();
        assert!(matches!(
            first.kind,
            Some(pb::coordinator_message::Kind::Ack(_))
        ));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = Arc::clone(&requests);
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cl = Arc::clone(&closed);
        let hb = Duration::from_millis(u64::from(reply.heartbeat_interval_ms));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(hb);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let m = pb::ProbeMessage { kind: Some(PKind::Heartbeat(pb::Heartbeat { unix_ms: 0, in_flight: 0 })) };
                        if tx.send(m).await.is_err() { break; }
                    }
                    msg = inbound.message() => {
                        let Ok(Some(msg)) = msg else { break };
                        let Some(pb::coordinator_message::Kind::MeasurementRequest(req)) = msg.kind else { continue };
                        reqs.lock().unwrap().push(req.clone());
                        for m in script(&req) {
                            if tx.send(m).await.is_err() { break; }
                        }
                    }
                }
            }
            cl.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Hostile {
            requests,
            task,
            closed,
        }
    }
}

/// An honest-looking ping answer with the given RTTs.
fn ping_answer(req: &pb::MeasurementRequest, rtts: Vec<f64>) -> pb::MeasurementResult {
    pb::MeasurementResult {
        request_id: req.request_id.clone(),
        target: req.target.clone(),
        ping: Some(pb::PingResult {
            min_rtt_ms: rtts.iter().copied().reduce(f64::min),
            received: rtts.len() as u32,
            sent: req.ping_count,
            rtts_ms: rtts,
            error: String::new(),
        }),
        ..Default::default()
    }
}

fn result_msg(r: pb::MeasurementResult) -> Vec<pb::ProbeMessage> {
    vec![pb::ProbeMessage {
        kind: Some(PKind::MeasurementResult(r)),
    }]
}

/// Three honest probes around Lyon's target plus the world they measure.
async fn honest_fleet(url: &str) -> (World, Vec<FakeProbe>) {
    let w = world(&[(TARGET, LYON.0, LYON.1)]);
    let mut v = Vec::new();
    for &(id, lat, lon, ip) in &FLEET[..4] {
        w.lock()
            .unwrap()
            .insert(ip.to_string(), LatLon { lat, lon });
        v.push(
            FakeProbe::start(
                url,
                id,
                (lat, lon),
                (lat, lon),
                ip,
                w.clone(),
                Behaviour::Honest,
            )
            .await,
        );
    }
    (w, v)
}

type Client = pb::locate_service_client::LocateServiceClient<tonic::transport::Channel>;

async fn locate(
    client: &mut Client,
    ip: &str,
) -> (Vec<pb::Progress>, Result<pb::LocateResult, pb::LocateError>) {
    let req = pb::LocateRequest {
        ip: ip.into(),
        ..Default::default()
    };
    let mut s = client.locate(req).await.unwrap().into_inner();
    let mut progress = Vec::new();
    while let Some(ev) = s.message().await.unwrap() {
        match ev.event.unwrap() {
            pb::locate_event::Event::Progress(p) => progress.push(p),
            pb::locate_event::Event::Result(r) => return (progress, Ok(r)),
            pb::locate_event::Event::Error(e) => return (progress, Err(e)),
        }
    }
    panic!("stream ended without an answer");
}

/// The liar's stored rows of a result.
async fn rows_of(
    srv: &Server,
    result_id: &str,
    probe: &str,
) -> Vec<geoloc_coordinator::storage::MeasurementRow> {
    srv.coord
        .storage
        .measurements_for_result(result_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.probe_id == probe)
        .collect()
}

/// Defect 1 and 2: a probe answering non-finite, zero, tiny, negative or absurd RTTs, or an
/// answer that does not match its request, is rejected at the edge (counted against it and
/// logged with its name); the locate succeeds with the honest answers and its stored rows
/// rebuild the same solution.
#[tokio::test]
async fn bad_answers_are_rejected_and_the_honest_ones_locate() {
    bounded(async {
        type Forge = fn(&pb::MeasurementRequest) -> pb::MeasurementResult;
        let cases: Vec<(&str, Forge)> = vec![
            ("nan", |q| ping_answer(q, vec![f64::NAN])),
            ("inf", |q| ping_answer(q, vec![f64::INFINITY])),
            ("neg-inf", |q| ping_answer(q, vec![f64::NEG_INFINITY, 5.0])),
            ("zero", |q| ping_answer(q, vec![0.0])),
            ("tiny", |q| ping_answer(q, vec![1e-300])),
            ("negative", |q| ping_answer(q, vec![-3.0, 0.7])),
            ("slow", |q| ping_answer(q, vec![1e9])),
            ("min-below-rtts", |q| {
                let mut a = ping_answer(q, vec![40.0]);
                a.ping.as_mut().unwrap().min_rtt_ms = Some(0.01);
                a
            }),
            ("other-target", |q| {
                let mut a = ping_answer(q, vec![0.3]);
                a.target = "127.0.0.99".into();
                a
            }),
            ("sent-max", |q| {
                let mut a = ping_answer(q, vec![0.3]);
                a.ping.as_mut().unwrap().sent = u32::MAX;
                a
            }),
            ("received-above-sent", |q| {
                let mut a = ping_answer(q, vec![0.3]);
                a.ping.as_mut().unwrap().received = q.ping_count + 5;
                a
            }),
            ("kind-not-asked", |q| {
                let mut a = ping_answer(q, vec![0.3]);
                a.traceroute = Some(pb::TracerouteResult {
                    protocol: 1,
                    reached: true,
                    hops: vec![pb::Hop {
                        ttl: 1,
                        address: q.target.clone(),
                        rtt_ms: Some(0.2),
                    }],
                    ..Default::default()
                });
                a
            }),
        ];
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let (_w, _honest) = honest_fleet(&srv.url).await;
        let mut c = srv.client().await;
        for (name, forge) in cases {
            let id = format!("liar-{name}");
            let script: Script = Arc::new(move |q| result_msg(forge(q)));
            // The liar claims to sit on the target: a believed lie would decide the answer.
            let liar = Hostile::start(&srv.url, registration(&id, LYON, ""), script).await;
            wait_healthy(&srv.coord, 5).await;
            let (progress, res) = locate(&mut c, TARGET).await;
            let r = res.unwrap_or_else(|e| panic!("{name}: locate failed: {e:?}"));
            let p = progress.iter().find(|p| p.probe_id == id).unwrap();
            assert!(p.min_rtt_ms.is_none(), "{name}: {p:?}");
            assert!(p.error.starts_with("rejected"), "{name}: {p:?}");
            assert_ne!(r.nearest_probe, id, "{name}");
            assert!(r.min_rtt_ms.is_some_and(|x| x > 1.0), "{name}: {r:?}");
            assert!(r.packets_sent < 100, "{name}: {} packets", r.packets_sent);
            assert_eq!(r.probes_used, 4, "{name}");
            assert_eq!(srv.coord.registry.rejected(&id), 1, "{name}");
            let rows = rows_of(&srv, &r.result_id, &id).await;
            assert_eq!(rows.len(), 1, "{name}");
            assert_eq!(rows[0].outcome, "rejected", "{name}");
            assert!(
                !rows[0].raw_json.contains("null"),
                "{name}: {}",
                rows[0].raw_json
            );
            let again = srv.coord.recompute(&r.result_id).await.unwrap();
            assert_eq!(
                serde_json::to_string(&again).unwrap(),
                r.solution_json,
                "{name}"
            );
            assert!(!liar.requests.lock().unwrap().is_empty());
            drop(liar);
            // Its session ends; wait until it no longer counts as healthy.
            for _ in 0..200 {
                if srv.coord.registry.healthy().len() == 4 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        srv.stop().await;
    })
    .await;
}
