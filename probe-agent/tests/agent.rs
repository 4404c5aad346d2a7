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
}

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
async fn keeps_retrying_while_the_coordinator_is_down_and_stops_on_signal() {
    // Nothing listens on this port: the agent retries with backoff until told to stop.
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let agent = Agent::new(Measurer::new(Arc::new(agent_config(addr, "x")))).unwrap();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move { agent.run(rx).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!task.is_finished(), "the agent must keep retrying");
    tx.send(true).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops promptly")
        .unwrap();
    assert!(out.is_ok());
}
