//! Attacks on the coordinator over loopback (issue 14): fake probes that answer with values
//! no honest agent sends, and clients that push the limits. Each test reproduces one attack
//! and checks that the coordinator refuses it, names the probe, and keeps serving the
//! honest ones. Honest and hostile fake probes both come from `tests/common`
//! (`FakeProbe::start` and `FakeProbe::start_scripted`, one session loop).
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use geoloc_coordinator::core::MeasurementSource;
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

/// A registration as the hostile probes send it.
fn registration(id: &str, pos: (f64, f64), ipv4: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        agent_version: "hostile-0".into(),
        ..common::registration(id, pos, ipv4)
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

type Client = geoloc_client::Grpc;

/// Locates `ip` with the coordinator's defaults (the shared helper takes a whole request).
async fn locate(
    client: &mut Client,
    ip: &str,
) -> (Vec<pb::Progress>, Result<pb::LocateResult, pb::LocateError>) {
    let req = pb::LocateRequest {
        ip: ip.into(),
        ..Default::default()
    };
    common::locate(client, req).await
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
        let logs = LogBuf::default();
        let _g = logs.install();
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let (_w, _honest) = honest_fleet(&srv.url).await;
        let mut c = srv.client().await;
        for (name, forge) in cases {
            let id = format!("liar-{name}");
            let script: Script = Arc::new(move |q| result_msg(forge(q)));
            // The liar claims to sit on the target: a believed lie would decide the answer.
            let liar =
                FakeProbe::start_scripted(&srv.url, registration(&id, LYON, ""), script).await;
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
            assert_eq!(srv.coord.fleet.registry.rejected(&id), 1, "{name}");
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
                serde_json::to_string(&common::solution(&r)).unwrap(),
                "{name}"
            );
            assert!(!liar.requests.lock().unwrap().is_empty());
            let named = format!("probe={id}");
            assert!(
                logs.text()
                    .lines()
                    .any(|l| l.contains("answer rejected") && l.contains(&named)),
                "{name}: the rejection is not logged with the probe's name"
            );
            drop(liar);
            // Its session ends; wait until it no longer counts as healthy.
            for _ in 0..200 {
                if srv.coord.fleet.registry.healthy().len() == 4 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        srv.stop().await;
    })
    .await;
}

/// Defect 3: oversized answers are not stored whole. A near-4 MiB answer (500k RTTs) is
/// over the probe message limit and ends that probe's session; a 20k-RTT answer within the
/// limit is rejected by the count checks; a 200 KB error text is cut. Every stored row of
/// the liars stays small and the locate succeeds with the honest answers.
#[tokio::test]
async fn oversized_answers_are_not_stored() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let (_w, _honest) = honest_fleet(&srv.url).await;
        let huge: Script = Arc::new(|q| result_msg(ping_answer(q, vec![12.5; 500_000])));
        let many: Script = Arc::new(|q| result_msg(ping_answer(q, vec![12.5; 20_000])));
        let chatty: Script = Arc::new(|q| {
            vec![pb::ProbeMessage {
                kind: Some(PKind::Error(pb::ProbeError {
                    request_id: q.request_id.clone(),
                    message: "e".repeat(200_000),
                })),
            }]
        });
        let liars = [
            FakeProbe::start_scripted(&srv.url, registration("huge", LYON, ""), huge).await,
            FakeProbe::start_scripted(&srv.url, registration("many", LYON, ""), many).await,
            FakeProbe::start_scripted(&srv.url, registration("chatty", LYON, ""), chatty).await,
        ];
        wait_healthy(&srv.coord, 7).await;
        let mut c = srv.client().await;
        let (_, res) = locate(&mut c, TARGET).await;
        let r = res.expect("located with the honest answers");
        assert_eq!(r.probes_used, 4);
        for id in ["huge", "many", "chatty"] {
            let rows = rows_of(&srv, &r.result_id, id).await;
            assert_eq!(rows.len(), 1, "{id}");
            let size = rows[0].raw_json.len() + rows[0].error.len();
            eprintln!(
                "figure: stored row of {id}: {size} bytes ({}: {})",
                rows[0].outcome,
                &rows[0].error[..rows[0].error.len().min(100)]
            );
            assert!(size < 2048, "{id}: a {size}-byte row");
            assert_ne!(rows[0].outcome, "answered", "{id}");
        }
        // The 4 MiB message ended its sender's session.
        assert!(liars[0].closed.load(std::sync::atomic::Ordering::SeqCst));
        srv.stop().await;
    })
    .await;
}

/// CPU time this thread has used, ns (`/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `n` distinct loopback addresses.
fn addresses(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("127.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256))
        .collect()
}

/// CPU time to get every answer of a batch of `n` addresses with no probe connected
/// (validation, grouping, queueing and one event per address: no measuring).
async fn batch_cpu_ns(c: &mut Client, n: usize) -> u64 {
    let req = pb::LocateBatchRequest {
        ips: addresses(n),
        ..Default::default()
    };
    let t0 = thread_cpu_ns();
    let mut s = c.locate_batch(req).await.unwrap().into_inner();
    let mut answered = 0;
    while let Some(ev) = s.message().await.unwrap() {
        if let Some(pb::locate_event::Event::Error(e)) = ev.event {
            assert_eq!(e.error_code(), pb::ErrorCode::NoProbes);
            answered += 1;
        }
    }
    assert_eq!(answered, n);
    thread_cpu_ns() - t0
}

/// Defect 4: a LocateBatch costs CPU in proportion to its size. The whole server runs on
/// this test's one thread (current-thread runtime), so the thread's CPU time is the cost;
/// 8 times the addresses must cost far less than 64 times the CPU (it was quadratic).
#[tokio::test]
async fn batch_cost_is_linear_in_its_size() {
    if !std::path::Path::new("/proc/thread-self/schedstat").exists() {
        geoloc_testenv::skip(
            "batch_cost_is_linear_in_its_size",
            "no /proc/thread-self/schedstat",
        );
        return;
    }
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let mut c = srv.client().await;
        batch_cpu_ns(&mut c, 200).await; // warm-up
        let small = batch_cpu_ns(&mut c, 2_000).await;
        let large = batch_cpu_ns(&mut c, 16_000).await;
        let ratio = large as f64 / small.max(1) as f64;
        eprintln!(
            "figure: batch CPU 2k {:.3} s, 16k {:.3} s, ratio {ratio:.1}",
            small as f64 / 1e9,
            large as f64 / 1e9
        );
        assert!(
            ratio < 24.0,
            "16k addresses cost {ratio:.1}x 2k (linear: 8x)"
        );
        srv.stop().await;
    })
    .await;
}

/// A coordinator served with explicit connection limits.
async fn start_limited(
    dir: &tempfile::TempDir,
    limits: geoloc_coordinator::server::Limits,
) -> (
    String,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
) {
    let srv = Server::start(&sqlite_url(dir), |_| {}).await;
    let coord = Arc::clone(&srv.coord);
    // Keep the database open; serve the same coordinator again with the limits.
    std::mem::forget(srv);
    let (listener, addr) = geoloc_coordinator::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        geoloc_coordinator::server::serve_with(coord, listener, limits, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (format!("http://{addr}"), addr, tx)
}

/// Waits (bounded) until the peer closes `s`; false if it stays open for `within`.
async fn closed_by_peer(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 64];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Defect 5: connections that never speak are closed after the handshake timeout, and at
/// most `max_connections` are held: one more is closed at once, and honest calls go
/// through again when the idle ones are gone.
#[tokio::test]
async fn idle_connections_are_closed_and_capped() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let limits = geoloc_coordinator::server::Limits {
            max_connections: 4,
            handshake_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
        };
        let (url, addr, _stop) = start_limited(&dir, limits).await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Give the accept loop time to take the four before the fifth arrives.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut fifth = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_by_peer(&mut fifth, Duration::from_secs(5)).await,
            "a connection over the cap is closed at once"
        );
        // The four idle ones are closed by the handshake timeout.
        for s in &mut idle {
            assert!(
                closed_by_peer(s, Duration::from_secs(30)).await,
                "idle connection still open"
            );
        }
        let mut c = geoloc_client::connect(&url).await.unwrap();
        c.list_probes(pb::ListProbesRequest {}).await.unwrap();
    })
    .await;
}

/// Log lines written while `f` runs on this thread (the current-thread runtime runs the
/// server here too).
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || me.clone())
            .finish();
        tracing::subscriber::set_default(sub)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Defect 6: a flood of registrations declaring attacker-chosen addresses is throttled and
/// capped; the next honest probe to connect is sent no request for those addresses and at
/// most the fixed landmark budget; after a restart, the registrations (never seen in a
/// session) do not hold locates for the reconnect grace.
#[tokio::test]
async fn registration_flood_is_throttled_and_steers_nothing() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let url_db = sqlite_url(&dir);
        let srv = Server::start(&url_db, |c| {
            c.landmark_checks = true;
            c.reconnect_grace_ms = 60_000;
        })
        .await;
        let mut pc = probe_client(&srv.url).await;
        let (mut accepted, mut throttled) = (0usize, 0usize);
        for i in 0..3_000u32 {
            let ip = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
            match pc
                .register(registration(&format!("sybil-{i}"), (10.0, 10.0), &ip))
                .await
            {
                Ok(_) => accepted += 1,
                Err(s) if s.code() == tonic::Code::ResourceExhausted => throttled += 1,
                Err(s) => panic!("{s}"),
            }
        }
        eprintln!("figure: 3000 registrations: {accepted} accepted, {throttled} throttled");
        assert!(
            accepted <= 1_000,
            "{accepted} of 3000 registrations accepted"
        );
        assert_eq!(accepted + throttled, 3_000);
        // An honest probe connects: it measures no sybil address and stays in budget.
        let asked = Arc::new(Mutex::new(Vec::<String>::new()));
        let a2 = Arc::clone(&asked);
        let honest: Script = Arc::new(move |q| {
            a2.lock().unwrap().push(q.target.clone());
            result_msg(ping_answer(q, vec![5.0]))
        });
        let p = FakeProbe::start_scripted(
            &srv.url,
            registration("honest", (48.85, 2.35), "127.0.1.1"),
            honest,
        )
        .await;
        // Landmark checks run in the background: give them time to be sent.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let targets = asked.lock().unwrap().clone();
        assert!(
            targets.iter().all(|t| !t.starts_with("10.")),
            "sent to sybil addresses: {} requests",
            targets.len()
        );
        assert!(
            targets.len() <= geoloc_coordinator::core::vetting::LANDMARK_CHECKS_PER_CONNECT,
            "{} landmark requests",
            targets.len()
        );
        // Let the honest probe's session be recorded, then restart.
        for _ in 0..100 {
            let seen = srv.coord.storage.get_probe("honest").await.unwrap();
            if seen.is_some_and(|r| r.last_seen_unix_ms > 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(p);
        let addr = srv.addr;
        srv.stop().await;
        let srv = Server::start_at(addr, &url_db, |c| c.reconnect_grace_ms = 60_000).await;
        let _p = FakeProbe::start_scripted(
            &srv.url,
            registration("honest", (48.85, 2.35), "127.0.1.1"),
            Arc::new(|q| result_msg(ping_answer(q, vec![5.0]))),
        )
        .await;
        // Only the honest probe is awaited: the grace (60 s) does not run out first.
        let probes =
            tokio::time::timeout(Duration::from_secs(30), srv.coord.fleet.vantage_points())
                .await
                .expect("locate held by probes that were never seen in a session");
        assert_eq!(probes.len(), 1);
        srv.stop().await;
    })
    .await;
}

/// A probe row that has been in the fleet for two days (vetted by age).
fn old_probe(id: &str, pos: (f64, f64), ipv4: &str) -> geoloc_coordinator::storage::ProbeRow {
    let now = geoloc_coordinator::unix_ms();
    geoloc_coordinator::storage::ProbeRow {
        probe_id: id.into(),
        lat: pos.0,
        lon: pos.1,
        ipv4: ipv4.into(),
        ipv6: String::new(),
        agent_version: "fake-0".into(),
        flagged: false,
        flag_reason: String::new(),
        flag_epoch_unix_ms: now - 2 * 86_400_000,
        first_seen_unix_ms: now - 2 * 86_400_000,
        last_seen_unix_ms: now - 60_000,
    }
}

/// Waits until `n` landmark measurements are stored.
async fn wait_landmark_rows(srv: &Server, n: usize) {
    for _ in 0..400 {
        let rows = srv.coord.storage.landmark_measurements().await.unwrap();
        if rows.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} landmark measurements stored");
}

/// Defect 7a: three fresh probes answering 1 ms to a vetted probe's address cannot get it
/// flagged (their word does not count against a vetted probe); their lies about each other
/// still count among themselves.
#[tokio::test]
async fn fresh_probes_cannot_flag_a_vetted_one() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let storage = geoloc_coordinator::storage::Storage::connect(&sqlite_url(&dir))
            .await
            .unwrap();
        let paris = (48.8566, 2.3522);
        storage
            .upsert_probe(&old_probe("victim", paris, "127.0.1.1"))
            .await
            .unwrap();
        let srv = Server::start_with("127.0.0.1:0".parse().unwrap(), storage, |c| {
            c.landmark_checks = true;
        })
        .await;
        let w = world(&[("127.0.1.1", paris.0, paris.1)]);
        let _victim = FakeProbe::start(
            &srv.url,
            "victim",
            paris,
            paris,
            "127.0.1.1",
            w.clone(),
            Behaviour::Honest,
        )
        .await;
        let mut liars = Vec::new();
        for (i, pos) in [(35.68, 139.65), (-33.87, 151.21), (40.71, -74.0)]
            .into_iter()
            .enumerate()
        {
            let lie: Script = Arc::new(|q| result_msg(ping_answer(q, vec![1.0])));
            let reg = registration(&format!("liar{i}"), pos, &format!("127.0.2.{}", i + 1));
            liars.push(FakeProbe::start_scripted(&srv.url, reg, lie).await);
        }
        // Each liar measures the victim (and the others) at 1 ms.
        wait_landmark_rows(&srv, 3).await;
        for _ in 0..100 {
            let rows = srv.coord.storage.landmark_measurements().await.unwrap();
            let on_victim = rows
                .iter()
                .filter(|r| {
                    r.target_landmark.as_deref() == Some("victim") && r.probe_id.starts_with("liar")
                })
                .count();
            if on_victim >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        srv.coord.evaluate_flags().await.unwrap();
        let v = srv.coord.fleet.registry.get("victim").unwrap();
        assert!(!v.flagged, "victim flagged: {}", v.flag_reason);
        srv.stop().await;
    })
    .await;
}

/// Defect 7b: three probes declaring the victim's own address as theirs do not get it
/// flagged when it connects: an address claimed twice is measured by nobody, and a probe
/// never measures its own address.
#[tokio::test]
async fn impostors_declaring_a_probes_address_cannot_flag_it() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| c.landmark_checks = true).await;
        let mut impostors = Vec::new();
        for (i, pos) in [(35.68, 139.65), (-33.87, 151.21), (40.71, -74.0)]
            .into_iter()
            .enumerate()
        {
            let quiet: Script = Arc::new(|q| result_msg(ping_answer(q, vec![])));
            let reg = registration(&format!("impostor{i}"), pos, "127.0.1.1");
            impostors.push(FakeProbe::start_scripted(&srv.url, reg, quiet).await);
        }
        let paris = (48.8566, 2.3522);
        let w = world(&[("127.0.1.1", paris.0, paris.1)]);
        let victim = FakeProbe::start(
            &srv.url,
            "victim",
            paris,
            paris,
            "127.0.1.1",
            w.clone(),
            Behaviour::Honest,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        srv.coord.evaluate_flags().await.unwrap();
        assert_eq!(
            victim.count("127.0.1.1"),
            0,
            "the victim measured its own address"
        );
        let v = srv.coord.fleet.registry.get("victim").unwrap();
        assert!(!v.flagged, "victim flagged: {}", v.flag_reason);
        srv.stop().await;
    })
    .await;
}

/// Defects 8 and 9: control characters never reach the log raw (an agent_version with
/// escapes and newlines is refused; a probe's error text is escaped), and a flood of wrong
/// credentials is throttled and logged in a few summary lines.
#[tokio::test]
async fn log_injection_and_credential_guessing() {
    bounded(async {
        let logs = LogBuf::default();
        let _g = logs.install();
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let mut pc = probe_client(&srv.url).await;
        let mut forged = registration("forger", (1.0, 1.0), "");
        forged.agent_version =
            "1.0\n2026-01-01T00:00:00Z  INFO probe registered probe=root\u{1b}[2J".into();
        let e = pc.register(forged).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        let script: Script = Arc::new(|_| Vec::new());
        let p =
            FakeProbe::start_scripted(&srv.url, registration("shouter", (1.0, 1.0), ""), script)
                .await;
        drop(p);
        // A session-level error with a forged line in it.
        let mut pc2 = probe_client(&srv.url).await;
        let reply = register_retrying(&mut pc2, registration("shouter2", (1.0, 1.0), "")).await;
        let (tx, rx) = mpsc::channel::<pb::ProbeMessage>(4);
        tx.send(pb::ProbeMessage {
            kind: Some(PKind::Hello(pb::Hello {
                session_token: reply.session_token,
                probe_id: "shouter2".into(),
            })),
        })
        .await
        .unwrap();
        tx.send(pb::ProbeMessage {
            kind: Some(PKind::Error(pb::ProbeError {
                request_id: String::new(),
                message: "boom\nFORGED ERROR coordinator compromised\u{1b}[31m".into(),
            })),
        })
        .await
        .unwrap();
        let mut inbound = pc2
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let _ack = inbound.message().await.unwrap();
        for _ in 0..100 {
            if logs.text().contains("boom") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Credential guessing.
        let (mut unauth, mut throttled) = (0, 0);
        for i in 0..2_000 {
            let mut g = registration("victim", (1.0, 1.0), "");
            g.credential = format!("guess-{i}");
            match pc.register(g).await {
                Err(s) if s.code() == tonic::Code::Unauthenticated => unauth += 1,
                Err(s) if s.code() == tonic::Code::ResourceExhausted => throttled += 1,
                other => panic!("{other:?}"),
            }
        }
        let text = logs.text();
        let wrong = text.matches("wrong credential").count();
        eprintln!(
            "figure: 2000 guesses: {unauth} checked, {throttled} throttled, {wrong} log lines"
        );
        assert!(unauth <= 400, "{unauth} guesses checked");
        assert!(wrong <= 10, "{wrong} log lines for 2000 guesses");
        assert!(text.contains("boom"), "the probe's error was logged");
        for line in text.lines() {
            assert!(!line.starts_with("FORGED"), "forged log line: {line}");
            assert!(
                !line.contains('\u{1b}'),
                "escape sequence in the log: {line:?}"
            );
            assert!(!line.starts_with("2026-01-01"), "forged log line: {line}");
        }
        srv.stop().await;
    })
    .await;
}

/// Defect 10: a bogon is called `bogon` by Locate (in the status metadata) as by
/// LocateBatch, and `geoloc audit` fails (exit code 1) when every row failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_and_exit_status_agree() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| c.allow_private = false).await;
        let mut c = srv.client().await;
        let e = c
            .locate(pb::LocateRequest {
                ip: "10.1.2.3".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(geoloc_client::invalid_code(&e), "bogon");
        let mut s = c
            .locate_batch(pb::LocateBatchRequest {
                ips: vec!["10.1.2.3".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ev = s.message().await.unwrap().unwrap();
        let Some(pb::locate_event::Event::Error(be)) = ev.event else {
            panic!("{ev:?}")
        };
        assert_eq!(be.error_code(), pb::ErrorCode::Bogon);
        // An absurd position is refused without echoing hundreds of digits.
        let mut pc = probe_client(&srv.url).await;
        let e = pc
            .register(registration("far-out", (1e308, 0.0), ""))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("1e308") && e.message().len() < 100,
            "{}",
            e.message()
        );

        // Every row fails: no probes for the public one, bogons for the others.
        let input = dir.path().join("in.txt");
        std::fs::write(&input, "10.1.2.3\n192.168.7.7\n").unwrap();
        let out = dir.path().join("out.csv");
        let args = geoloc_client::audit::AuditArgs {
            file: input,
            output: out.clone(),
            columns: None,
            coordinator: srv.url.clone(),
            ca: Default::default(),
            mode: None,
            timeout_ms: None,
            concurrency: None,
            source: None,
            budget: None,
            retry_failed: false,
            fresh: false,
            retry_for_s: 5,
        };
        let res = tokio::task::spawn_blocking(move || geoloc_client::audit::run_audit(args))
            .await
            .unwrap();
        let err = res.expect_err("audit succeeded although every row failed");
        assert!(
            err.downcast_ref::<geoloc_client::NotLocated>().is_some(),
            "{err:#}"
        );
        let csv = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            csv.lines().filter(|l| l.contains("bogon")).count(),
            2,
            "{csv}"
        );
        srv.stop().await;
    })
    .await;
}

/// `max-probes` and `new-probes-per-s` set the registration limits: past `max-probes` a
/// new id is refused (a known id still re-registers), and new ids beyond the rate's burst
/// (ten times it) are throttled.
#[tokio::test]
async fn registration_limits_come_from_the_configuration() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| {
            c.max_probes = 5;
            c.new_probes_per_s = 1_000;
        })
        .await;
        let mut pc = probe_client(&srv.url).await;
        for i in 0..5 {
            pc.register(registration(&format!("p{i}"), (10.0, 10.0), ""))
                .await
                .unwrap();
        }
        let s = pc
            .register(registration("p5", (10.0, 10.0), ""))
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
        assert!(s.message().contains("at most 5: max-probes"), "{s:?}");
        pc.register(registration("p0", (10.0, 10.0), ""))
            .await
            .expect("a registered probe re-registers at the cap");
        srv.stop().await;

        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| {
            c.max_probes = 10_000;
            c.new_probes_per_s = 2;
        })
        .await;
        let mut pc = probe_client(&srv.url).await;
        let mut accepted = 0;
        for i in 0..60 {
            match pc
                .register(registration(&format!("q{i}"), (10.0, 10.0), ""))
                .await
            {
                Ok(_) => accepted += 1,
                Err(s) => assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}"),
            }
        }
        // A burst of 20 plus what 2/s adds while the loop runs.
        assert!((20..=30).contains(&accepted), "{accepted} of 60 accepted");
        srv.stop().await;
    })
    .await;
}
