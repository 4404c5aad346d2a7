//! Test harness: an in-process coordinator on loopback and FAKE probe clients built from the
//! generated gRPC client. The fake probes send no packets: they answer every measurement
//! request with an RTT computed from great-circle distance (fixed, deterministic), which
//! makes these PROTOCOL tests of the coordinator (the real agent is tested elsewhere).
#![allow(dead_code)]
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
/// The admin API key every harness coordinator knows (name `test-admin`), sent by every
/// client of [`geoloc_client::connect`] in these tests.
pub const TEST_KEY: &str = "gk_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Creates the `test-admin` key on `storage` (once) and makes the clients send it.
pub async fn ensure_test_key(storage: &geoloc_coordinator::storage::Storage) {
    use geoloc_coordinator::core::access::{create_key_with_secret, NewKey, Quotas, Scope};
    if storage.get_api_key("test-admin").await.unwrap().is_none() {
        let new = NewKey {
            name: "test-admin".into(),
            scopes: vec![Scope::Admin],
            quotas: Quotas {
                addresses_per_hour: 1_000_000,
                concurrent: 256,
            },
        };
        create_key_with_secret(storage, &new, TEST_KEY)
            .await
            .unwrap();
    }
    geoloc_client::set_api_key(Some(TEST_KEY.into()));
}

/// An in-process coordinator on `storage` with the test settings (private targets allowed,
/// short heartbeats and budgets, no landmark checks), changed by `tweak`; no gRPC server.
pub async fn coordinator(
    storage: geoloc_coordinator::storage::Storage,
    tweak: impl FnOnce(&mut Config),
) -> Arc<Coordinator> {
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
    ensure_test_key(&storage).await;
    Coordinator::with_storage(config, storage)
        .await
        .expect("coordinator starts")
}

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
        let coord = coordinator(storage, tweak).await;
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

    pub async fn client(&self) -> geoloc_client::Grpc {
        geoloc_client::connect(&self.url).await.unwrap()
    }

    /// A client sending `key` (None: no key).
    pub async fn client_with_key(&self, key: Option<&str>) -> geoloc_client::Grpc {
        geoloc_client::connect_with(
            &self.url,
            &geoloc_client::ConnectOptions::default().with_key(key),
        )
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
    /// Honest for targets it has an RTT to; never answers a request for any other target
    /// (the request stays in flight until the probe or the coordinator goes away).
    HangOnUnknown,
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

/// What a scripted probe sends for one request (any number of messages, maybe none).
pub type Script = Arc<dyn Fn(&pb::MeasurementRequest) -> Vec<pb::ProbeMessage> + Send + Sync>;

/// A registration as the fake probes send it.
pub fn registration(id: &str, pos: (f64, f64), ipv4: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        probe_id: id.into(),
        lat: pos.0,
        lon: pos.1,
        credential: TOKEN.into(),
        agent_version: "fake-0".into(),
        allow_private: true,
        ipv4: ipv4.into(),
        ipv6: String::new(),
    }
}

/// A probe-service client that accepts large messages (hostile tests read big replies).
pub async fn probe_client(
    url: &str,
) -> pb::probe_service_client::ProbeServiceClient<tonic::transport::Channel> {
    pb::probe_service_client::ProbeServiceClient::connect(url.to_string())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
}

/// Registers, waiting out the registration rate limit (bounded).
pub async fn register_retrying(
    pc: &mut pb::probe_service_client::ProbeServiceClient<tonic::transport::Channel>,
    reg: pb::RegisterRequest,
) -> pb::RegisterReply {
    for _ in 0..300 {
        match pc.register(reg.clone()).await {
            Ok(r) => return r.into_inner(),
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("registration refused: {s}"),
        }
    }
    panic!("registration still throttled after 30 s");
}

/// A fake probe with a live session: registered, heartbeating, answering every measurement
/// request as its script says. Honest ones come from [`FakeProbe::start`], hostile ones
/// from [`FakeProbe::start_scripted`]; both run the one session loop here.
pub struct FakeProbe {
    pub id: String,
    pub requests: Arc<Mutex<Vec<pb::MeasurementRequest>>>,
    /// Set when the session ended.
    pub closed: Arc<AtomicBool>,
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
        let script: Script = Arc::new(move |req| {
            if behaviour == Behaviour::Silent {
                return Vec::new();
            }
            let rtt = rtt(&req.target);
            if behaviour == Behaviour::HangOnUnknown && rtt.is_none() {
                return Vec::new();
            }
            vec![pb::ProbeMessage {
                kind: Some(PKind::MeasurementResult(answer(req, rtt, behaviour))),
            }]
        });
        let delay = match behaviour {
            Behaviour::Delayed(ms) => Duration::from_millis(ms),
            _ => Duration::ZERO,
        };
        Self::session(url, registration(id, declared, ipv4), delay, script).await
    }

    /// Registers `reg` (retrying while throttled), opens the session and sends what `script`
    /// returns for every request, until dropped/killed.
    pub async fn start_scripted(url: &str, reg: pb::RegisterRequest, script: Script) -> FakeProbe {
        Self::session(url, reg, Duration::ZERO, script).await
    }

    /// The session loop: heartbeats, records every request, answers as scripted (after
    /// `delay`, without holding up the next request).
    async fn session(
        url: &str,
        reg: pb::RegisterRequest,
        delay: Duration,
        script: Script,
    ) -> FakeProbe {
        let mut pc = probe_client(url).await;
        let id = reg.probe_id.clone();
        let reply = register_retrying(&mut pc, reg).await;
        let (tx, rx) = mpsc::channel::<pb::ProbeMessage>(64);
        tx.send(pb::ProbeMessage {
            kind: Some(PKind::Hello(pb::Hello {
                session_token: reply.session_token.clone(),
                probe_id: id.clone(),
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
        let closed = Arc::new(AtomicBool::new(false));
        let cl = Arc::clone(&closed);
        let hb_interval = Duration::from_millis(u64::from(reply.heartbeat_interval_ms));
        let task = tokio::spawn(async move {
            let mut hb = tokio::time::interval(hb_interval);
            'session: loop {
                tokio::select! {
                    _ = hb.tick() => {
                        let m = pb::ProbeMessage { kind: Some(PKind::Heartbeat(pb::Heartbeat { unix_ms: 0, in_flight: 0 })) };
                        if tx.send(m).await.is_err() { break; }
                    }
                    msg = inbound.message() => {
                        let Ok(Some(msg)) = msg else { break };
                        let Some(pb::coordinator_message::Kind::MeasurementRequest(req)) = msg.kind else { continue };
                        reqs.lock().unwrap().push(req.clone());
                        let out = script(&req);
                        if delay.is_zero() {
                            for m in out {
                                if tx.send(m).await.is_err() { break 'session; }
                            }
                        } else {
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                for m in out {
                                    let _ = tx.send(m).await;
                                }
                            });
                        }
                    }
                }
            }
            cl.store(true, Ordering::SeqCst);
        });
        FakeProbe {
            id,
            requests,
            closed,
            task,
        }
    }

    /// Kills the probe (its session ends abruptly).
    pub fn kill(&self) {
        self.task.abort();
    }

    /// Different request ids this probe was asked for `target` (a request asked again
    /// with the same id is answered by a real agent from its recent answers, without
    /// measuring again).
    pub fn distinct(&self, target: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.target == target)
            .map(|r| r.request_id.clone())
            .collect::<std::collections::HashSet<_>>()
            .len()
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
                    (
                        Some(x),
                        Behaviour::Honest | Behaviour::Delayed(_) | Behaviour::HangOnUnknown,
                    ) => (0..req.ping_count)
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
        if coord.fleet.registry.healthy().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "only {} probes healthy, wanted {n}",
        coord.fleet.registry.healthy().len()
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

/// Runs `f`, failing the test when it takes more than `secs` seconds (every test is bounded).
pub async fn bounded<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test took more than {secs} s"))
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `secs` seconds. For
/// waiting on a state, never on the clock.
pub async fn wait_until<F, Fut>(what: &str, secs: u64, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {secs} s for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first `n` probes of FLEET, honest, each placed in `w` at its position.
pub async fn fleet(url: &str, w: &World, n: usize) -> Vec<FakeProbe> {
    fleet_as(url, w, n, Behaviour::Honest).await
}

/// The first `n` probes of FLEET, all behaving as `b`.
pub async fn fleet_as(url: &str, w: &World, n: usize, b: Behaviour) -> Vec<FakeProbe> {
    let mut v = Vec::new();
    for &(id, lat, lon, ip) in &FLEET[..n] {
        w.lock()
            .unwrap()
            .insert(ip.to_string(), LatLon { lat, lon });
        v.push(FakeProbe::start(url, id, (lat, lon), (lat, lon), ip, w.clone(), b).await);
    }
    v
}

/// The usual target: a host in Lyon at 127.0.0.50 (loopback: the fake probes send nothing).
pub const TARGET: &str = "127.0.0.50";
pub const LYON: (f64, f64) = (45.764, 4.8357);

pub fn lyon() -> LatLon {
    LatLon {
        lat: LYON.0,
        lon: LYON.1,
    }
}

pub fn req(ip: &str) -> pb::LocateRequest {
    pb::LocateRequest {
        ip: ip.into(),
        ..Default::default()
    }
}

/// One Locate call: the progress events and the answer.
pub async fn locate(
    client: &mut geoloc_client::Grpc,
    req: pb::LocateRequest,
) -> (Vec<pb::Progress>, Result<pb::LocateResult, pb::LocateError>) {
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

/// The typed solution of a result, converted as a client does.
pub fn solution(r: &pb::LocateResult) -> geoloc_engine::Solution {
    geoloc_engine::Solution::try_from(r.solution.as_ref().expect("a solution")).unwrap()
}

/// The PostgreSQL test server: `GEOLOC_TEST_PG_URL`, default the local one.
pub fn pg_url() -> String {
    std::env::var("GEOLOC_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A PostgreSQL store in a schema of its own (`drop_pg_schema` removes it), or None when the
/// server cannot be reached at all: then the test is reported through
/// `geoloc_testenv::skip` (a failure under `GEOLOC_REQUIRE_ENV=1`). Any other error
/// (authentication, a migration that fails on PostgreSQL, ...) fails the test.
pub async fn postgres_store(test: &str) -> Option<(geoloc_coordinator::storage::Storage, String)> {
    use geoloc_coordinator::storage::Storage;
    use geoloc_coordinator::CoordinatorError;
    let url = pg_url();
    let schema = format!(
        "geoloc_t_{test}_{}_{}",
        std::process::id(),
        &geoloc_coordinator::new_id()[..8]
    );
    let connect = Storage::connect_in_schema(&url, Some(&schema));
    match tokio::time::timeout(Duration::from_secs(20), connect).await {
        Ok(Ok(s)) => Some((s, schema)),
        Ok(Err(CoordinatorError::DatabaseConnect { source, .. }))
            if matches!(
                source,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)
            ) =>
        {
            geoloc_testenv::skip(
                test,
                &format!("cannot connect to PostgreSQL at {url}: {source}"),
            );
            None
        }
        Ok(Err(e)) => panic!("{test}: PostgreSQL store at {url}: {e}"),
        Err(_) => {
            geoloc_testenv::skip(test, &format!("PostgreSQL at {url} did not answer in 20 s"));
            None
        }
    }
}

/// Drops a schema made by [`postgres_store`].
pub async fn drop_pg_schema(storage: &geoloc_coordinator::storage::Storage, schema: &str) {
    if let geoloc_coordinator::storage::Storage::Postgres(pool) = storage {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(pool)
        .await
        .unwrap();
    }
}

/// [`wait_until`] for a condition that needs no `await`.
pub async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    wait_until(what, secs, || std::future::ready(cond())).await
}

/// `run_audit` builds its own runtime: run it on a plain thread.
pub async fn run_audit(args: geoloc_client::audit::AuditArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || geoloc_client::audit::run_audit(args))
            .join()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `geoloc audit` of `file` into `out` against `url`: two at a time, a 5 s retry window.
pub fn audit_args(
    url: &str,
    file: &std::path::Path,
    out: &std::path::Path,
) -> geoloc_client::audit::AuditArgs {
    geoloc_client::audit::AuditArgs {
        file: file.to_path_buf(),
        output: out.to_path_buf(),
        columns: None,
        coordinator: url.to_string(),
        ca: Default::default(),
        mode: None,
        timeout_ms: None,
        concurrency: Some(2),
        source: None,
        budget: None,
        retry_failed: false,
        fresh: false,
        retry_for_s: 5,
    }
}

/// A cluster replica (`bin` = the `geoloc-coordinator` binary, run with `--cluster`) named
/// `name` on `db`, with the test settings; returns it and its gRPC URL.
pub fn cluster_replica(bin: &str, db: &str, name: &str) -> (geoloc_testenv::Daemon, String) {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--database", db])
        .args(["--cluster", "--replica-id", name])
        .args(["--allow-private", "--probe-token", TOKEN])
        .args([
            "--heartbeat-interval-ms",
            "300",
            "--probe-timeout-ms",
            "1500",
        ])
        .args(["--ping-interval-ms", "0", "--landmark-checks=false"])
        .env_remove("GEOLOC_COORDINATOR_CONFIG");
    let d = geoloc_testenv::Daemon::spawn_echoing(name, &mut cmd);
    let addr = d.stdout_after("listening on ", Duration::from_secs(30));
    (d, format!("http://{addr}"))
}

/// The probes `url` lists as healthy.
pub async fn healthy_at(url: &str) -> Vec<String> {
    let mut c = geoloc_client::connect(url).await.unwrap();
    c.list_probes(pb::ListProbesRequest {})
        .await
        .unwrap()
        .into_inner()
        .probes
        .into_iter()
        .filter(|p| p.healthy)
        .map(|p| p.probe_id)
        .collect()
}
