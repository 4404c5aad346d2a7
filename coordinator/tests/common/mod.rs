//! Test harness: an in-process coordinator on loopback and FAKE probe clients built from the
//! generated gRPC client. The fake probes send no packets: they answer every measurement
//! request with an RTT computed from great-circle distance (fixed, deterministic), which
//! makes these PROTOCOL tests of the coordinator (the real agent is tested elsewhere).
#![allow(dead_code)]
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geoloc_coordinator::config::{Args, Config, FileConfig};
use geoloc_coordinator::{server, Coordinator};
use geoloc_engine::{distance_km, LatLon, FIBRE_KM_PER_MS_RTT};
use geoloc_proto::v1 as pb;
use pb::probe_message::Kind as PKind;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

pub const TOKEN: &str = "test-token";

/// A running in-process coordinator.
pub struct Server {
    pub addr: SocketAddr,
    pub url: String,
    pub coord: Arc<Coordinator>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(database: &str, tweak: impl FnOnce(&mut Config)) -> Server {
        Self::start_at("127.0.0.1:0".parse().unwrap(), database, tweak).await
    }

    /// Like [`Server::start`] on a given address (to restart on the same port).
    pub async fn start_at(
        addr: SocketAddr,
        database: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Server {
        let storage = geoloc_coordinator::storage::Storage::connect(database)
            .await
            .expect("database");
        Self::start_with(addr, storage, tweak).await
    }

    /// Like [`Server::start`] with an already opened store.
    pub async fn start_with(
        addr: SocketAddr,
        storage: geoloc_coordinator::storage::Storage,
        tweak: impl FnOnce(&mut Config),
    ) -> Server {
        let database = "sqlite://unused";
        let mut config = Config::merge(Args::default(), FileConfig::default()).unwrap();
        config.database = database.to_string();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.allow_private = true;
        config.probe_token = Some(TOKEN.into());
        config.heartbeat_interval_ms = 300;
        config.probe_timeout_ms = 1500;
        config.ping_count = 3;
        config.ping_interval_ms = 0;
        config.landmark_checks = false;
        tweak(&mut config);
        let coord = Coordinator::with_storage(config, storage)
            .await
            .expect("coordinator starts");
        let (listener, addr) = server::bind(addr).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let c = Arc::clone(&coord);
        let task = tokio::spawn(async move {
            let c2 = Arc::clone(&c);
            let shutdown = async move {
                let _ = rx.await;
                c2.begin_shutdown();
            };
            server::serve(c, listener, shutdown).await.expect("serve");
        });
        Server {
            addr,
            url: format!("http://{addr}"),
            coord,
            stop: Some(tx),
            task,
        }
    }

    /// Graceful stop; waits (bounded) for the server task to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.task.abort();
        self.coord.storage.close().await;
    }

    pub async fn client(
        &self,
    ) -> pb::locate_service_client::LocateServiceClient<tonic::transport::Channel> {
        geoloc_coordinator::client::connect(&self.url)
            .await
            .unwrap()
    }
}

/// How a fake probe behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// Answers with the distance-derived RTT.
    Honest,
    /// Never answers measurement requests (but heartbeats).
    Silent,
    /// Answers pings with no reply (target silent) and traceroutes with a last hop.
    TargetSilent,
    /// The target drops ICMP but answers TCP SYNs (RST), 0.2 ms slower than ping would be.
    IcmpSilent,
    /// Honest, after this many ms.
    Delayed(u64),
}

/// RTT from a fake probe to a target address, ms.
pub type RttFn = Arc<dyn Fn(&str) -> Option<f64> + Send + Sync>;

/// Where every address really is (what the fake probes use to compute RTTs).
pub type World = Arc<Mutex<HashMap<String, LatLon>>>;

pub fn world(entries: &[(&str, f64, f64)]) -> World {
    Arc::new(Mutex::new(
        entries
            .iter()
            .map(|(ip, lat, lon)| {
                (
                    ip.to_string(),
                    LatLon {
                        lat: *lat,
                        lon: *lon,
                    },
                )
            })
            .collect(),
    ))
}

/// RTT the fake network gives between two points: fibre at 2/3 c, a 1.4 detour factor,
/// plus 0.5 ms.
pub fn fake_rtt_ms(a: LatLon, b: LatLon) -> f64 {
    distance_km(a, b) * 1.4 / FIBRE_KM_PER_MS_RTT + 0.5
}

/// A fake probe with a live session.
pub struct FakeProbe {
    pub id: String,
    pub requests: Arc<Mutex<Vec<pb::MeasurementRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeProbe {
    /// Registers (declared position `declared`, real position `real`), opens the session and
    /// answers requests until dropped/killed.
    pub async fn start(
        url: &str,
        id: &str,
        declared: (f64, f64),
        real: (f64, f64),
        ipv4: &str,
        world: World,
        behaviour: Behaviour,
    ) -> FakeProbe {
        let real = LatLon {
            lat: real.0,
            lon: real.1,
        };
        let rtt: RttFn = Arc::new(move |target: &str| {
            world
                .lock()
                .unwrap()
                .get(target)
                .map(|t| fake_rtt_ms(real, *t))
        });
        Self::start_with(url, id, declared, ipv4, rtt, behaviour).await
    }

    /// Like [`FakeProbe::start`] with RTTs from `rtt(target)` (None = the target is silent).
    pub async fn start_with(
        url: &str,
        id: &str,
        declared: (f64, f64),
        ipv4: &str,
        rtt: RttFn,
        behaviour: Behaviour,
    ) -> FakeProbe {
        let mut pc = pb::probe_service_client::ProbeServiceClient::connect(url.to_string())
            .await
            .unwrap();
        let reply = pc
            .register(pb::RegisterRequest {
                probe_id: id.into(),
                lat: declared.0,
                lon: declared.1,
                credential: TOKEN.into(),
                agent_version: "fake-0".into(),
                allow_private: true,
                ipv4: ipv4.into(),
                ipv6: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let (tx, rx) = mpsc::channel::<pb::ProbeMessage>(64);
        tx.send(pb::ProbeMessage {
            kind: Some(PKind::Hello(pb::Hello {
                session_token: reply.session_token.clone(),
                probe_id: id.into(),
            })),
        })
        .await
        .unwrap();
        let mut inbound = pc
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        // First message: the ack of hello.
        let first = tokio::time::timeout(Duration::from_secs(5), inbound.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            matches!(first.kind, Some(pb::coordinator_message::Kind::Ack(_))),
            "{first:?}"
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = Arc::clone(&requests);
        let hb_interval = Duration::from_millis(u64::from(reply.heartbeat_interval_ms));
        let task = tokio::spawn(async move {
            let mut hb = tokio::time::interval(hb_interval);
            loop {
                tokio::select! {
                    _ = hb.tick() => {
                        let m = pb::ProbeMessage { kind: Some(PKind::Heartbeat(pb::Heartbeat { unix_ms: 0, in_flight: 0 })) };
                        if tx.send(m).await.is_err() { break; }
                    }
                    msg = inbound.message() => {
                        let Ok(Some(msg)) = msg else { break };
                        let Some(pb::coordinator_message::Kind::MeasurementRequest(req)) = msg.kind else { continue };
                        reqs.lock().unwrap().push(req.clone());
                        if behaviour == Behaviour::Silent { continue; }
                        let answer = answer(&req, rtt(&req.target), behaviour);
                        let msg = pb::ProbeMessage { kind: Some(PKind::MeasurementResult(answer)) };
                        if let Behaviour::Delayed(ms) = behaviour {
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                                let _ = tx.send(msg).await;
                            });
                        } else if tx.send(msg).await.is_err() { break; }
                    }
                }
            }
        });
        FakeProbe {
            id: id.into(),
            requests,
            task,
        }
    }

    /// Kills the probe (its session ends abruptly).
    pub fn kill(&self) {
        self.task.abort();
    }

    pub fn count(&self, target: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.target == target)
            .count()
    }
}

impl Drop for FakeProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(req: &pb::MeasurementRequest, rtt: Option<f64>, b: Behaviour) -> pb::MeasurementResult {
    let mut r = pb::MeasurementResult {
        request_id: req.request_id.clone(),
        target: req.target.clone(),
        ..Default::default()
    };
    for k in &req.kinds {
        match pb::MeasurementKind::try_from(*k) {
            Ok(pb::MeasurementKind::Ping) => {
                let rtts: Vec<f64> = match (rtt, b) {
                    (Some(x), Behaviour::Honest | Behaviour::Delayed(_)) => (0..req.ping_count)
                        .map(|i| x + 0.1 * f64::from(i))
                        .collect(),
                    _ => Vec::new(),
                };
                r.ping = Some(pb::PingResult {
                    min_rtt_ms: rtts.iter().copied().reduce(f64::min),
                    received: rtts.len() as u32,
                    rtts_ms: rtts,
                    sent: req.ping_count,
                    error: String::new(),
                });
            }
            Ok(pb::MeasurementKind::Tcp) => {
                let answers = b == Behaviour::IcmpSilent;
                r.tcp = req
                    .tcp_ports
                    .iter()
                    .copied()
                    .chain(req.tcp_ports.is_empty().then_some(443))
                    .map(|port| pb::TcpResult {
                        port,
                        rtt_ms: rtt.filter(|_| answers).map(|x| x + 0.2),
                        outcome: if answers {
                            pb::TcpOutcome::Rst as i32
                        } else {
                            pb::TcpOutcome::Timeout as i32
                        },
                        error: String::new(),
                    })
                    .collect();
            }
            Ok(pb::MeasurementKind::Traceroute) => {
                let last = rtt.map(|x| pb::LastHop {
                    address: "10.9.9.9".into(),
                    rtt_ms: (x - 0.3).max(0.0),
                });
                r.traceroute = Some(pb::TracerouteResult {
                    protocol: pb::TracerouteProtocol::Icmp as i32,
                    hops: last
                        .iter()
                        .map(|l| pb::Hop {
                            ttl: 1,
                            address: l.address.clone(),
                            rtt_ms: Some(l.rtt_ms),
                        })
                        .collect(),
                    reached: false,
                    last_hop: last,
                    error: String::new(),
                });
            }
            _ => r.error = "unsupported kind".into(),
        }
    }
    r
}

/// Waits until `n` probes are healthy (bounded).
pub async fn wait_healthy(coord: &Coordinator, n: usize) {
    for _ in 0..100 {
        if coord.registry.healthy().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "only {} probes healthy, wanted {n}",
        coord.registry.healthy().len()
    );
}

/// A fleet around the world: (id, lat, lon, ipv4).
pub const FLEET: &[(&str, f64, f64, &str)] = &[
    ("paris", 48.8566, 2.3522, "127.0.1.1"),
    ("newyork", 40.7128, -74.0060, "127.0.1.2"),
    ("tokyo", 35.6762, 139.6503, "127.0.1.3"),
    ("sydney", -33.8688, 151.2093, "127.0.1.4"),
    ("saopaulo", -23.5505, -46.6333, "127.0.1.5"),
    ("london", 51.5074, -0.1278, "127.0.1.6"),
    ("frankfurt", 50.1109, 8.6821, "127.0.1.7"),
    ("singapore", 1.3521, 103.8198, "127.0.1.8"),
    ("johannesburg", -26.2041, 28.0473, "127.0.1.9"),
    ("chicago", 41.8781, -87.6298, "127.0.1.10"),
];

/// A SQLite URL in a fresh temporary directory.
pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("geoloc.sqlite").display())
}
