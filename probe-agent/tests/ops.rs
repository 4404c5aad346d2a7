//! Operations of the agent (issue 8): its `/metrics` follow what it does (measurements,
//! packets, errors, connected state), `/healthz`, and `--log-format json` writes one JSON
//! object per line. Against a minimal in-process `geoloc.v1.ProbeService` on loopback; the
//! measurements are TCP handshakes to a closed loopback port (no privilege needed).

use std::collections::HashMap;
use std::net::SocketAddr;
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

/// Accepts every registration; on each session: an ack, one TCP request to `port` on
/// loopback and one request it cannot parse. When `stop` turns true every session ends
/// (so that the server's graceful shutdown does not wait for the agent's open stream).
struct Stub {
    port: u32,
    results: mpsc::UnboundedSender<pb::MeasurementResult>,
    stop: watch::Receiver<bool>,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ProbeService for Stub {
    async fn enroll(
        &self,
        _: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollReply>, Status> {
        Err(Status::unimplemented("no enrolment here"))
    }

    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        Ok(Response::new(pb::RegisterReply {
            session_token: "s".into(),
            heartbeat_interval_ms: 200,
            coordinator_version: "stub".into(),
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
        let results = self.results.clone();
        let port = self.port;
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let request =
                |id: &str, target: &str, kind: pb::MeasurementKind| pb::CoordinatorMessage {
                    kind: Some(pb::coordinator_message::Kind::MeasurementRequest(
                        pb::MeasurementRequest {
                            request_id: id.into(),
                            target: target.into(),
                            kinds: vec![kind as i32],
                            timeout_ms: 5000,
                            tcp_ports: vec![port],
                            allow_private: true,
                            ..Default::default()
                        },
                    )),
                };
            let ack = pb::CoordinatorMessage {
                kind: Some(pb::coordinator_message::Kind::Ack(pb::Ack::default())),
            };
            for m in [
                ack,
                request("tcp", "127.0.0.1", pb::MeasurementKind::Tcp),
                request("bad", "not-an-ip", pb::MeasurementKind::Ping),
            ] {
                let _ = tx.send(Ok(m)).await;
            }
            loop {
                tokio::select! {
                    m = inbound.next() => match m {
                        Some(Ok(m)) => {
                            if let Some(pb::probe_message::Kind::MeasurementResult(r)) = m.kind {
                                let _ = results.send(r);
                            }
                        }
                        _ => break,
                    },
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            // Dropping `tx` ends the stream to the agent.
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves the stub on loopback until the sender fires.
async fn stub() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<pb::MeasurementResult>,
    oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A closed port: the handshake ends with RST at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = u32::from(closed.local_addr().unwrap().port());
    drop(closed);
    let (results_tx, results) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (stopping_tx, stopping) = watch::channel(false);
    let svc = ProbeServiceServer::new(Stub {
        port,
        results: results_tx,
        stop: stopping,
    });
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stop_rx.await;
                    let _ = stopping_tx.send(true);
                },
            )
            .await;
    });
    (addr, results, stop_tx)
}

/// `GET path` on loopback: (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || geoloc_testenv::http::get(addr, &path))
        .await
        .unwrap()
}

use geoloc_testenv::http::sample;

async fn wait_metric(addr: SocketAddr, series: &str, value: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200);
        if sample(&text, series) == Some(value) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never became {value}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_measurements_errors_and_the_session() {
    let (coordinator, mut results, stop_coordinator) = stub().await;
    let flags = ConfigFlags {
        id: Some("ops-probe".into()),
        lat: Some(48.85),
        lon: Some(2.35),
        coordinator: Some(format!("http://{coordinator}")),
        allow_private: Some(true),
        reconnect_min_ms: Some(50),
        reconnect_max_ms: Some(200),
        ..Default::default()
    };
    let cfg = AgentConfig::resolve(&flags, &FileConfig::default(), &HashMap::new()).unwrap();
    let agent = Agent::new(Measurer::new(Arc::new(cfg))).unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    agent.metrics().register(&mut registry);
    let stop = geoloc_rt::CancellationToken::new();
    let stopping = stop.clone();
    let state = geoloc_rt::ops::OpsState::new(registry, move || !stopping.is_cancelled());
    let ops = geoloc_rt::ops::spawn("127.0.0.1:0".parse().unwrap(), state, stop.clone())
        .await
        .unwrap();

    let (_, text) = http_get(ops, "/metrics").await;
    assert_eq!(sample(&text, "geoloc_agent_connected"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "geoloc_agent_packets_sent_total"),
        Some(0.0),
        "{text}"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(async move { agent.run(shutdown_rx).await });
    let r = tokio::time::timeout(Duration::from_secs(30), results.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.request_id, "tcp");
    let text = wait_metric(ops, "geoloc_agent_measurements_total{result=\"ok\"}", 1.0).await;
    assert_eq!(sample(&text, "geoloc_agent_connected"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "geoloc_agent_packets_sent_total"),
        Some(1.0),
        "one SYN: {text}"
    );
    wait_metric(
        ops,
        "geoloc_agent_errors_total{kind=\"invalid-request\"}",
        1.0,
    )
    .await;

    // The coordinator goes away: not connected, a session error counted.
    stop_coordinator.send(()).unwrap();
    let text = wait_metric(ops, "geoloc_agent_connected", 0.0).await;
    assert!(
        sample(&text, "geoloc_agent_errors_total{kind=\"session\"}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );

    assert_eq!(http_get(ops, "/healthz").await, (200, "ok\n".to_string()));
    shutdown_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_metrics_and_logs_json_lines() {
    const TEST: &str = "the_binary_serves_metrics_and_logs_json_lines";
    if !geoloc_probe_agent::privileges::probe_icmp_access().can_ping() {
        geoloc_testenv::skip(TEST, "no ICMP permission (needs root or ping_group_range)");
        return;
    }
    let (coordinator, mut results, _stop) = stub().await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_geoloc-probe-agent"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GEOLOC_PROBE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info")
        .args(["run", "--id", "json-probe", "--lat", "1.5", "--lon", "2.5"])
        .args(["--coordinator", &format!("http://{coordinator}")])
        .args(["--allow-private", "true", "--log-format", "json"])
        .args(["--metrics-listen", "127.0.0.1:0"]);
    let daemon = Arc::new(geoloc_testenv::Daemon::spawn(
        "geoloc-probe-agent",
        &mut cmd,
    ));
    let d = daemon.clone();
    let ops: SocketAddr = tokio::task::spawn_blocking(move || {
        d.stdout_after("metrics listening on ", Duration::from_secs(30))
    })
    .await
    .unwrap()
    .parse()
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), results.recv())
        .await
        .unwrap()
        .unwrap();
    wait_metric(ops, "geoloc_agent_measurements_total{result=\"ok\"}", 1.0).await;
    wait_metric(ops, "geoloc_agent_connected", 1.0).await;

    let d = daemon.clone();
    let lines =
        tokio::task::spawn_blocking(move || d.stderr_until("registered", Duration::from_secs(5)))
            .await
            .unwrap();
    assert!(lines.iter().any(|l| l.contains("registered")), "{lines:?}");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
    }
}
