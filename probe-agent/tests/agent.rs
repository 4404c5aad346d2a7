//! The agent loop against a real in-process gRPC server implementing `geoloc.v1.ProbeService`
//! (a minimal stand-in for the coordinator): register, hello/ack, a measurement request and
//! its result, heartbeats, a coordinator restart on the same port, a rejected credential,
//! and graceful shutdown. Uses TCP measurements to loopback, which need no privilege.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use geoloc_probe_agent::agent::Agent;
use geoloc_probe_agent::config::{AgentConfig, ConfigFlags, FileConfig};
use geoloc_probe_agent::measure::Measurer;
use geoloc_proto::v1 as pb;
use pb::probe_service_server::{ProbeService, ProbeServiceServer};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// What the stand-in coordinator saw.
#[derive(Debug)]
enum Seen {
    Registered(pb::RegisterRequest),
    Message(pb::ProbeMessage),
    SessionClosed,
}

struct Coordinator {
    token: String,
    /// Port the measurement request asks for (a closed port on loopback: RST).
    tcp_port: u32,
    generation: u32,
    seen: mpsc::UnboundedSender<Seen>,
    /// Turns true to emulate a crash: sessions end with UNAVAILABLE.
    kill: watch::Receiver<bool>,
    /// The one-time enrolment token `ENROLMENT_TOKEN` was exchanged.
    enrolled: std::sync::atomic::AtomicBool,
}

/// The enrolment token the stand-in coordinator accepts once (for the probe `test-probe`;
/// the credential it gives is the coordinator's `token`).
const ENROLMENT_TOKEN: &str = "gle_test-enrolment";

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ProbeService for Coordinator {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let r = request.into_inner();
        let ok = r.credential == self.token;
        let _ = self.seen.send(Seen::Registered(r));
        if !ok {
            return Err(Status::unauthenticated("wrong probe credential"));
        }
        Ok(Response::new(pb::RegisterReply {
            session_token: format!("session-{}", self.generation),
            heartbeat_interval_ms: 200,
            coordinator_version: "test".into(),
            flagged: false,
            flag_reason: String::new(),
        }))
    }

    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollReply>, Status> {
        if request.get_ref().enrolment_token != ENROLMENT_TOKEN {
            return Err(Status::unauthenticated("unknown enrolment token"));
        }
        if self
            .enrolled
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Status::unauthenticated(
                "enrolment token for probe \"test-probe\" was already used",
            ));
        }
        Ok(Response::new(pb::EnrollReply {
            probe_id: "test-probe".into(),
            credential: self.token.clone(),
        }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::ProbeMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let seen = self.seen.clone();
        let generation = self.generation;
        let port = self.tcp_port;
        let mut kill = self.kill.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let m = tokio::select! {
                    m = inbound.next() => match m {
                        Some(Ok(m)) => m,
                        _ => break,
                    },
                    _ = kill.changed() => {
                        let _ = tx.send(Err(Status::unavailable("coordinator going down"))).await;
                        break;
                    }
                };
                if first {
                    first = false;
                    if let Some(pb::probe_message::Kind::Hello(h)) = &m.kind {
                        assert_eq!(h.session_token, format!("session-{generation}"));
                    }
                    let ack = pb::CoordinatorMessage {
                        kind: Some(pb::coordinator_message::Kind::Ack(pb::Ack::default())),
                    };
                    let req = pb::CoordinatorMessage {
                        kind: Some(pb::coordinator_message::Kind::MeasurementRequest(
                            pb::MeasurementRequest {
                                request_id: format!("req-{generation}"),
                                target: "127.0.0.1".into(),
                                kinds: vec![pb::MeasurementKind::Tcp as i32],
                                timeout_ms: 5000,
                                tcp_ports: vec![port],
                                allow_private: true,
                                ..Default::default()
                            },
                        )),
                    };
                    let bad = pb::CoordinatorMessage {
                        kind: Some(pb::coordinator_message::Kind::MeasurementRequest(
                            pb::MeasurementRequest {
                                request_id: format!("bad-{generation}"),
                                target: "not-an-ip".into(),
                                kinds: vec![pb::MeasurementKind::Ping as i32],
                                ..Default::default()
                            },
                        )),
                    };
                    for m in [ack, req, bad] {
                        let _ = tx.send(Ok(m)).await;
                    }
                }
                let _ = seen.send(Seen::Message(m));
            }
            let _ = seen.send(Seen::SessionClosed);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves a coordinator on `addr` until the returned sender fires (which first ends every
/// open session with UNAVAILABLE, as a crashing coordinator would).
async fn serve(
    addr: SocketAddr,
    token: &str,
    tcp_port: u32,
    generation: u32,
    seen: mpsc::UnboundedSender<Seen>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (kill_tx, kill) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind coordinator");
    let svc = ProbeServiceServer::new(Coordinator {
        token: token.into(),
        tcp_port,
        generation,
        seen,
        kill,
        enrolled: std::sync::atomic::AtomicBool::new(false),
    });
    let handle = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stop_rx.await;
                    let _ = kill_tx.send(true);
                },
            )
            .await
            .expect("serve");
    });
    (stop_tx, handle)
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn agent_config(coordinator: SocketAddr, token: &str) -> AgentConfig {
    let flags = ConfigFlags {
        id: Some("test-probe".into()),
        lat: Some(48.85),
        lon: Some(2.35),
        coordinator: Some(format!("http://{coordinator}")),
        token: Some(token.into()),
        allow_private: Some(true),
        reconnect_min_ms: Some(50),
        reconnect_max_ms: Some(400),
        ..Default::default()
    };
    AgentConfig::resolve(&flags, &FileConfig::default(), &HashMap::new()).unwrap()
}

/// Waits for the next event matching `pred`, failing after `limit`.
async fn expect_event(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    limit: Duration,
    what: &str,
    mut pred: impl FnMut(&Seen) -> bool,
) -> Seen {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if pred(&ev) => return ev,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event channel closed while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

fn result_of(ev: &Seen) -> Option<&pb::MeasurementResult> {
    match ev {
        Seen::Message(pb::ProbeMessage {
            kind: Some(pb::probe_message::Kind::MeasurementResult(r)),
        }) => Some(r),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_measures_survives_a_restart_and_shuts_down() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let closed_port = u32::from(free_port());
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (stop1, server1) = serve(addr, "s3cret", closed_port, 1, seen_tx.clone()).await;

    let measurer = Measurer::new(Arc::new(agent_config(addr, "s3cret")));
    let agent = Agent::new(measurer).unwrap();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let agent_task = tokio::spawn(async move { agent.run(shutdown_rx).await });

    // Registration carries identity, position, credential, lab mode.
    let ev = expect_event(&mut seen, Duration::from_secs(10), "register", |e| {
        matches!(e, Seen::Registered(_))
    })
    .await;
    let Seen::Registered(r) = ev else {
        unreachable!()
    };
    assert_eq!(r.probe_id, "test-probe");
    assert_eq!((r.lat, r.lon), (48.85, 2.35));
    assert!(r.allow_private);

    // The measurement result (RST from the closed port counts, with an RTT) and the
    // ProbeError for the invalid request, in whichever order they come.
    let mut result = None;
    let mut probe_error = None;
    while result.is_none() || probe_error.is_none() {
        let ev = expect_event(
            &mut seen,
            Duration::from_secs(10),
            "result 1 and probe error",
            |e| matches!(e, Seen::Message(_)),
        )
        .await;
        if let Some(r) = result_of(&ev) {
            result = Some(r.clone());
        } else if let Seen::Message(pb::ProbeMessage {
            kind: Some(pb::probe_message::Kind::Error(err)),
        }) = ev
        {
            probe_error = Some(err);
        }
    }
    let res = result.unwrap();
    assert_eq!(res.request_id, "req-1");
    assert_eq!(res.error, "");
    assert_eq!(res.tcp.len(), 1);
    assert_eq!(res.tcp[0].outcome, pb::TcpOutcome::Rst as i32);
    assert!(res.tcp[0].rtt_ms.is_some());
    let err = probe_error.unwrap();
    assert_eq!(err.request_id, "bad-1");
    assert!(err.message.contains("not-an-ip"), "{}", err.message);

    // Heartbeats every 200 ms.
    expect_event(&mut seen, Duration::from_secs(5), "heartbeat", |e| {
        matches!(
            e,
            Seen::Message(pb::ProbeMessage {
                kind: Some(pb::probe_message::Kind::Heartbeat(_))
            })
        )
    })
    .await;

    // Coordinator restart: stop it, wait a bit, start a new one on the same port.
    let _ = stop1.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (stop2, server2) = serve(addr, "s3cret", closed_port, 2, seen_tx.clone()).await;
    let ev = expect_event(
        &mut seen,
        Duration::from_secs(15),
        "result after restart",
        |e| result_of(e).is_some_and(|r| r.request_id == "req-2"),
    )
    .await;
    assert_eq!(
        result_of(&ev).unwrap().tcp[0].outcome,
        pb::TcpOutcome::Rst as i32
    );

    // Graceful shutdown: run() returns Ok and the session closes.
    shutdown_tx.send(true).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(15), agent_task)
        .await
        .expect("agent stops in time")
        .expect("agent task");
    assert!(out.is_ok(), "{out:?}");
    expect_event(&mut seen, Duration::from_secs(5), "session closed", |e| {
        matches!(e, Seen::SessionClosed)
    })
    .await;
    let _ = stop2.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_stops_the_agent() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (seen_tx, _seen) = mpsc::unbounded_channel();
    let (stop, server) = serve(addr, "right", 1, 1, seen_tx).await;
    let agent = Agent::new(Measurer::new(Arc::new(agent_config(addr, "wrong")))).unwrap();
    let (_tx, rx) = watch::channel(false);
    let out = tokio::time::timeout(Duration::from_secs(10), agent.run(rx))
        .await
        .expect("agent gives up in time");
    let err = out.unwrap_err().to_string();
    assert!(err.contains("wrong probe credential"), "{err}");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrols_once_keeps_the_credential_private_and_reuses_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (stop, server) = serve(addr, "own-credential", 1, 1, seen_tx).await;
    let state = tempfile::tempdir().unwrap();
    let enrolling = |dir: &std::path::Path| {
        let mut cfg = agent_config(addr, "");
        cfg.enrolment_token = Some(ENROLMENT_TOKEN.into());
        cfg.state_dir = Some(dir.to_path_buf());
        cfg.validate().unwrap();
        Agent::new(Measurer::new(Arc::new(cfg))).unwrap()
    };
    // First start: the token is exchanged, the credential saved (0600) and registered with.
    for start in ["first", "second"] {
        let agent = enrolling(state.path());
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move { agent.run(rx).await });
        let ev = expect_event(&mut seen, Duration::from_secs(20), "a registration", |e| {
            matches!(e, Seen::Registered(_))
        })
        .await;
        let Seen::Registered(r) = ev else {
            unreachable!()
        };
        assert_eq!(r.credential, "own-credential", "{start} start");
        let file = state
            .path()
            .join(geoloc_probe_agent::agent::CREDENTIAL_FILE);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        // The second start works although the token is used up: the stored credential is used.
        tx.send(true).unwrap();
        let out = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("stops")
            .unwrap();
        assert!(out.is_ok(), "{start} start: {out:?}");
    }
    // Another host replaying the used token is refused, and stops with the reason.
    let other = tempfile::tempdir().unwrap();
    let agent = enrolling(other.path());
    let (_tx, rx) = watch::channel(false);
    let out = tokio::time::timeout(Duration::from_secs(10), agent.run(rx))
        .await
        .expect("gives up in time");
    let err = out.unwrap_err().to_string();
    assert!(err.contains("already used"), "{err}");
    assert!(!other
        .path()
        .join(geoloc_probe_agent::agent::CREDENTIAL_FILE)
        .exists());
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

/// A coordinator that is starting up: every `Register` fails with UNAVAILABLE (retried by
/// the agent); each call's arrival time goes to `calls`.
struct Unavailable {
    calls: mpsc::UnboundedSender<tokio::time::Instant>,
}

#[tonic::async_trait]
impl ProbeService for Unavailable {
    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let _ = self.calls.send(tokio::time::Instant::now());
        Err(Status::unavailable("starting up"))
    }

    async fn enroll(
        &self,
        _: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollReply>, Status> {
        Err(Status::unimplemented("no enrolment here"))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        _: Request<Streaming<pb::ProbeMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        Err(Status::unavailable("starting up"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_retrying_with_backoff_while_the_coordinator_is_unavailable_and_stops_on_signal() {
    // Every attempt reaches the coordinator's Register and fails there: the server sees
    // (and timestamps) each one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (calls_tx, mut accepted) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(ProbeServiceServer::new(Unavailable { calls: calls_tx }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    let cfg = agent_config(addr, "x");
    let (min, max) = (cfg.reconnect_min, cfg.reconnect_max);
    let agent = Agent::new(Measurer::new(Arc::new(cfg))).unwrap();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move { agent.run(rx).await });

    // Five attempts (a hanging agent makes one, a stopped agent stops counting). Backoff
    // 50..400 ms: they come within a second or two; the deadline is for a loaded machine.
    let mut at = Vec::new();
    while at.len() < 5 {
        match tokio::time::timeout(Duration::from_secs(20), accepted.recv()).await {
            Ok(Some(t)) => at.push(t),
            _ => panic!(
                "the agent made {} attempts to register in 20 s, not 5 (finished: {})",
                at.len(),
                task.is_finished()
            ),
        }
    }
    assert!(!task.is_finished(), "the agent must keep retrying");
    // With backoff: the gap after failure k is at least the fixed half of attempt k's
    // delay (25, 50, 100, 200 ms). Load only lengthens the gaps; a tight loop fails here.
    for (k, w) in at.windows(2).enumerate() {
        // geoloc_probe_agent::agent::reconnect_backoff: at least half of min * 2^k (<= max).
        let floor = min.saturating_mul(1 << k).min(max) / 2;
        let gap = w[1] - w[0];
        assert!(
            gap + Duration::from_millis(2) >= floor,
            "attempt {}: {gap:?} after the previous one, backoff floor {floor:?}",
            k + 1
        );
    }
    tx.send(true).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops promptly")
        .unwrap();
    assert!(out.is_ok(), "{out:?}");
    server.abort();
}

/// A coordinator whose session sends an Ack and then whatever the test pushes into
/// `outbound`; it registers any credential and reports what the agent sends.
struct ScriptedCoordinator {
    seen: mpsc::UnboundedSender<Seen>,
    outbound: std::sync::Mutex<Option<mpsc::UnboundedReceiver<pb::CoordinatorMessage>>>,
}

#[tonic::async_trait]
impl ProbeService for ScriptedCoordinator {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let _ = self.seen.send(Seen::Registered(request.into_inner()));
        Ok(Response::new(pb::RegisterReply {
            session_token: "scripted".into(),
            heartbeat_interval_ms: 100,
            coordinator_version: "test".into(),
            flagged: false,
            flag_reason: String::new(),
        }))
    }

    async fn enroll(
        &self,
        _: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollReply>, Status> {
        Err(Status::unimplemented("no enrolment here"))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::ProbeMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let mut outbound = self
            .outbound
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| Status::unavailable("one session only"))?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            let ack = pb::CoordinatorMessage {
                kind: Some(pb::coordinator_message::Kind::Ack(pb::Ack::default())),
            };
            let _ = tx.send(Ok(ack)).await;
            loop {
                tokio::select! {
                    m = inbound.next() => match m {
                        Some(Ok(m)) => { let _ = seen.send(Seen::Message(m)); }
                        _ => break,
                    },
                    Some(m) = outbound.recv() => { let _ = tx.send(Ok(m)).await; }
                }
            }
            let _ = seen.send(Seen::SessionClosed);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves a [`ScriptedCoordinator`] on loopback; returns its address, the events it saw,
/// the sender of its session's messages and the server task.
async fn serve_scripted() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Seen>,
    mpsc::UnboundedSender<pb::CoordinatorMessage>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let svc = ProbeServiceServer::new(ScriptedCoordinator {
        seen: seen_tx,
        outbound: std::sync::Mutex::new(Some(out_rx)),
    });
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (addr, seen, out_tx, server)
}

/// A TCP measurement request to closed ports of `target` (RST: answered at once).
fn tcp_request(id: &str, target: &str, ports: &[u16]) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage {
        kind: Some(pb::coordinator_message::Kind::MeasurementRequest(
            pb::MeasurementRequest {
                request_id: id.into(),
                target: target.into(),
                kinds: vec![pb::MeasurementKind::Tcp as i32],
                timeout_ms: 60_000,
                tcp_ports: ports.iter().map(|&p| u32::from(p)).collect(),
                allow_private: true,
                ..Default::default()
            },
        )),
    }
}

fn heartbeat_in_flight(ev: &Seen) -> Option<u32> {
    match ev {
        Seen::Message(pb::ProbeMessage {
            kind: Some(pb::probe_message::Kind::Heartbeat(h)),
        }) => Some(h.in_flight),
        _ => None,
    }
}

/// An agent with one measurement slot whose second SYN to the same target waits
/// `1 / target_pps` seconds for a packet token: a request for two ports of one target runs
/// that long.
fn slow_agent_config(coordinator: SocketAddr, target_pps: f64) -> AgentConfig {
    let flags = ConfigFlags {
        id: Some("test-probe".into()),
        lat: Some(48.85),
        lon: Some(2.35),
        coordinator: Some(format!("http://{coordinator}")),
        token: Some("t".into()),
        allow_private: Some(true),
        max_concurrent_measurements: Some(1),
        target_packets_per_second: Some(target_pps),
        target_packet_burst: Some(1.0),
        reconnect_min_ms: Some(50),
        reconnect_max_ms: Some(400),
        ..Default::default()
    };
    AgentConfig::resolve(&flags, &FileConfig::default(), &HashMap::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_measurement_and_frees_its_slot() {
    let (addr, mut seen, out, server) = serve_scripted().await;
    // One slot; "long" holds it for 30 s (its second SYN waits for a token).
    let agent = Agent::new(Measurer::new(Arc::new(slow_agent_config(addr, 1.0 / 30.0)))).unwrap();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let agent_task = tokio::spawn(async move { agent.run(shutdown_rx).await });
    let (p1, p2) = (free_port(), free_port());
    out.send(tcp_request("long", "127.0.0.1", &[p1, p2]))
        .unwrap();
    expect_event(&mut seen, Duration::from_secs(20), "long in flight", |e| {
        heartbeat_in_flight(e) == Some(1)
    })
    .await;
    out.send(pb::CoordinatorMessage {
        kind: Some(pb::coordinator_message::Kind::Cancel(pb::Cancel {
            request_id: "long".into(),
            reason: "test".into(),
        })),
    })
    .unwrap();
    // Another target (its own packet bucket): measured at once if "long" let go of the
    // only slot, not before "long" would have ended (30 s) otherwise.
    out.send(tcp_request("short", "127.0.0.2", &[p1])).unwrap();
    let ev = expect_event(
        &mut seen,
        Duration::from_secs(15),
        "the result of the request sent after the cancel",
        |e| {
            if let Some(r) = result_of(e) {
                assert_ne!(r.request_id, "long", "a cancelled request reported: {r:?}");
            }
            result_of(e).is_some()
        },
    )
    .await;
    let short = result_of(&ev).unwrap();
    assert_eq!(short.request_id, "short");
    assert_eq!(
        short.tcp[0].outcome,
        pb::TcpOutcome::Rst as i32,
        "{short:?}"
    );
    // Nothing runs any more.
    expect_event(&mut seen, Duration::from_secs(5), "in_flight 0", |e| {
        if let Some(r) = result_of(e) {
            panic!("a cancelled request reported: {r:?}");
        }
        heartbeat_in_flight(e) == Some(0)
    })
    .await;
    shutdown_tx.send(true).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(15), agent_task)
        .await
        .expect("agent stops in time")
        .unwrap();
    assert!(out.is_ok(), "{out:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_running_measurement_finish_and_send_its_result() {
    let (addr, mut seen, out, server) = serve_scripted().await;
    // "slow" takes 4 s (its second SYN waits for a token): well within the 10 s grace.
    let agent = Agent::new(Measurer::new(Arc::new(slow_agent_config(addr, 0.25)))).unwrap();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let agent_task = tokio::spawn(async move { agent.run(shutdown_rx).await });
    let (p1, p2) = (free_port(), free_port());
    out.send(tcp_request("slow", "127.0.0.1", &[p1, p2]))
        .unwrap();
    expect_event(&mut seen, Duration::from_secs(20), "slow in flight", |e| {
        assert!(
            result_of(e).is_none(),
            "finished before the shutdown: {e:?}"
        );
        heartbeat_in_flight(e) == Some(1)
    })
    .await;
    shutdown_tx.send(true).unwrap();
    let ev = expect_event(
        &mut seen,
        Duration::from_secs(20),
        "the in-flight result after the shutdown signal",
        |e| {
            assert!(
                !matches!(e, Seen::SessionClosed),
                "session closed before the in-flight result was sent"
            );
            result_of(e).is_some()
        },
    )
    .await;
    let r = result_of(&ev).unwrap();
    assert_eq!(r.request_id, "slow");
    assert_eq!(r.error, "");
    let outcomes: Vec<i32> = r.tcp.iter().map(|t| t.outcome).collect();
    assert_eq!(
        outcomes,
        vec![pb::TcpOutcome::Rst as i32; 2],
        "both ports measured: {r:?}"
    );
    // Then the session ends cleanly and run() returns Ok.
    expect_event(&mut seen, Duration::from_secs(10), "session closed", |e| {
        matches!(e, Seen::SessionClosed)
    })
    .await;
    let out = tokio::time::timeout(Duration::from_secs(15), agent_task)
        .await
        .expect("agent stops in time")
        .unwrap();
    assert!(out.is_ok(), "{out:?}");
    server.abort();
}

/// The binary, with a clean `GEOLOC_PROBE_*` environment.
fn agent_binary() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_geoloc-probe-agent"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GEOLOC_PROBE_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

/// Waits for `child` to exit (killing it after `limit`); returns its exit code and stderr.
async fn exit_of(mut child: std::process::Child, limit: Duration) -> (Option<i32>, String) {
    let deadline = tokio::time::Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (status.and_then(|s| s.code()), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_78_when_rejected_and_0_on_sigterm() {
    const TEST: &str = "the_binary_exits_78_when_rejected_and_0_on_sigterm";
    // `run` checks ICMP permission before it connects (root, or ping_group_range open).
    if !geoloc_probe_agent::privileges::probe_icmp_access().can_ping() {
        geoloc_testenv::skip(TEST, "no ICMP permission (needs root or ping_group_range)");
        return;
    }
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (stop, server) = serve(addr, "right", u32::from(free_port()), 1, seen_tx).await;
    let run = |token: &str| {
        agent_binary()
            .args(["run", "--id", "bin-probe", "--lat", "1.5", "--lon", "2.5"])
            .args(["--coordinator", &format!("http://{addr}"), "--token", token])
            .args(["--allow-private", "true"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A rejected credential: 78 (EX_CONFIG), with the coordinator's reason.
    let (code, err) = exit_of(run("wrong"), Duration::from_secs(30)).await;
    assert_eq!(code, Some(78), "stderr: {err}");
    assert!(err.contains("wrong probe credential"), "{err}");
    // Accepted, then SIGTERM: a clean stop, exit 0.
    let child = run("right");
    let pid = child.id();
    expect_event(
        &mut seen,
        Duration::from_secs(30),
        "the agent's hello",
        |e| {
            matches!(
                e,
                Seen::Message(pb::ProbeMessage {
                    kind: Some(pb::probe_message::Kind::Hello(_))
                })
            )
        },
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (code, err) = exit_of(child, Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "stderr: {err}");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_asked_again_is_answered_without_measuring_again() {
    let (addr, mut seen, out, server) = serve_scripted().await;
    // One slot; a request for two ports of one target runs ~1 s (its second SYN waits).
    let agent = Agent::new(Measurer::new(Arc::new(slow_agent_config(addr, 1.0)))).unwrap();
    let metrics = agent.metrics();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let agent_task = tokio::spawn(async move { agent.run(shutdown_rx).await });
    let (p1, p2) = (free_port(), free_port());
    // Asked twice while it runs (a replica that took the run over asks with the same id),
    // then once more after it answered.
    out.send(tcp_request("run1.1.test-probe.0", "127.0.0.1", &[p1, p2]))
        .unwrap();
    out.send(tcp_request("run1.1.test-probe.0", "127.0.0.1", &[p1, p2]))
        .unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let ev = expect_event(&mut seen, Duration::from_secs(20), "an answer", |e| {
            result_of(e).is_some()
        })
        .await;
        answers.push(result_of(&ev).unwrap().clone());
    }
    out.send(tcp_request("run1.1.test-probe.0", "127.0.0.1", &[p1, p2]))
        .unwrap();
    let ev = expect_event(&mut seen, Duration::from_secs(5), "the third answer", |e| {
        result_of(e).is_some()
    })
    .await;
    answers.push(result_of(&ev).unwrap().clone());
    for a in &answers {
        assert_eq!(a, &answers[0], "the same answer each time");
        assert_eq!(a.tcp.len(), 2, "{a:?}");
    }
    let measured = metrics
        .measurements
        .get_or_create(&[("result", "ok")])
        .get();
    assert_eq!(measured, 1, "measured once");
    assert_eq!(metrics.repeated_requests.get(), 2, "two repeats");
    // Another id is measured.
    out.send(tcp_request("run1.2.test-probe.0", "127.0.0.1", &[p1]))
        .unwrap();
    expect_event(
        &mut seen,
        Duration::from_secs(10),
        "a new request's answer",
        |e| result_of(e).is_some_and(|r| r.request_id == "run1.2.test-probe.0"),
    )
    .await;
    assert_eq!(
        metrics
            .measurements
            .get_or_create(&[("result", "ok")])
            .get(),
        2
    );
    shutdown_tx.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(15), agent_task).await;
    server.abort();
}
