//! The agent loop: register with the coordinator, hold the `Session` stream, heartbeat,
//! execute measurement requests concurrently (bounded), stream results back, reconnect
//! with capped exponential backoff and jitter, shut down gracefully.
//!
//! Which gRPC failures are fatal is decided in one place, [`is_fatal_register_status`]:
//! a `Register` or `Enroll` answered with `UNAUTHENTICATED`, `PERMISSION_DENIED`,
//! `INVALID_ARGUMENT` or `FAILED_PRECONDITION` stops the agent (retrying a wrong, used or
//! revoked credential helps nobody); everything else (coordinator down, restarting, session
//! dropped, also a session ended because the probe was revoked) is retried, and the next
//! `Register` says whether the probe may still come back.
//!
//! The credential: with `state-dir`, the probe's own one kept in `STATE_DIR/credential`;
//! missing, it is obtained once with `enrolment-token` (`Enroll`) and saved there (0600);
//! without `state-dir`, the lab's shared fleet `token`.
//!
//! Every request runs in one concurrency pool (`max-concurrent-measurements`): the agent is
//! not told why it measures (the coordinator mixes known-answer checks into real work and
//! sends both as the same request), so it treats all requests alike. The coordinator
//! bounds its own background checks per probe and lets locates go first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoloc_proto::v1 as pb;
use pb::probe_service_client::ProbeServiceClient;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::config::{defaults, TracerouteProtocol};
use crate::error::{Error, Result};
use crate::measure::{unix_ms_u64, MeasureRequest, MeasureResult, Measurer};
use crate::metrics::AgentMetrics;
use crate::tcp::TcpOutcomeKind;

/// How long in-flight measurements may run after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long, after the last result of a shutdown, the coordinator has to read them and
/// close the session.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// Connection timeout to the coordinator.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of the `Register` call.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// File in the state folder holding the probe's own credential.
pub const CREDENTIAL_FILE: &str = "credential";

/// Reconnect delays ([`backon`]): attempt `k` (0-based) waits `b/2 + U[0,1)·b/2` where
/// `b = min · 2^k` capped at `max` ("equal jitter": at least half of it, never above
/// `max`). Never runs out.
pub fn reconnect_backoff(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder as _;
    reconnect_backoff_builder(min, max).build()
}

fn reconnect_backoff_builder(min: Duration, max: Duration) -> backon::ExponentialBuilder {
    // backon's jitter adds U[0,1)·d to d: halving both bounds gives equal jitter.
    backon::ExponentialBuilder::default()
        .with_min_delay(min / 2)
        .with_max_delay(max / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// gRPC statuses from `Register` that stop the agent instead of being retried.
pub fn is_fatal_register_status(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(
        status.code(),
        Unauthenticated | PermissionDenied | InvalidArgument | FailedPrecondition
    )
}

/// Converts a coordinator request; the error text goes back as a `ProbeError`.
pub fn request_from_proto(
    req: &pb::MeasurementRequest,
) -> std::result::Result<MeasureRequest, String> {
    let target: IpAddr = req
        .target
        .trim()
        .parse()
        .map_err(|_| format!("target {:?} is not an IP address literal", req.target))?;
    let mut out = MeasureRequest::new(req.request_id.clone(), target);
    for &k in &req.kinds {
        match pb::MeasurementKind::try_from(k) {
            Ok(pb::MeasurementKind::Ping) => out.ping = true,
            Ok(pb::MeasurementKind::Tcp) => out.tcp = true,
            Ok(pb::MeasurementKind::Traceroute) => out.traceroute = true,
            Ok(pb::MeasurementKind::Unspecified) => {}
            Err(_) => return Err(format!("unknown measurement kind {k}")),
        }
    }
    if !(out.ping || out.tcp || out.traceroute) {
        return Err("no measurement kind requested".into());
    }
    out.ping_count = (req.ping_count > 0).then_some(req.ping_count);
    out.interval = (req.interval_ms > 0).then(|| Duration::from_millis(req.interval_ms.into()));
    out.timeout = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms.into()));
    if !req.tcp_ports.is_empty() {
        let ports = req
            .tcp_ports
            .iter()
            .map(|&p| match u16::try_from(p) {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(format!("tcp port {p} is not within 1..=65535")),
            })
            .collect::<std::result::Result<Vec<u16>, String>>()?;
        out.tcp_ports = Some(ports);
    }
    out.max_ttl = (req.max_ttl > 0).then(|| req.max_ttl.min(255) as u8);
    out.allow_private = req.allow_private;
    Ok(out)
}

/// Converts a result for the coordinator.
pub fn result_to_proto(r: &MeasureResult) -> pb::MeasurementResult {
    pb::MeasurementResult {
        request_id: r.request_id.clone(),
        target: r.target.to_string(),
        ping: r.ping.as_ref().map(|p| pb::PingResult {
            rtts_ms: p.rtts_ms.clone(),
            sent: p.sent,
            received: p.received,
            min_rtt_ms: p.min_rtt_ms,
            error: p.error.clone().unwrap_or_default(),
        }),
        tcp: r
            .tcp
            .as_ref()
            .map(|t| {
                t.ports
                    .iter()
                    .map(|p| pb::TcpResult {
                        port: p.port.into(),
                        rtt_ms: p.rtt_ms,
                        outcome: match p.outcome {
                            TcpOutcomeKind::SynAck => pb::TcpOutcome::SynAck,
                            TcpOutcomeKind::Rst => pb::TcpOutcome::Rst,
                            TcpOutcomeKind::Timeout => pb::TcpOutcome::Timeout,
                            TcpOutcomeKind::Error => pb::TcpOutcome::Error,
                        } as i32,
                        error: p.error.clone().unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        traceroute: r.traceroute.as_ref().map(|t| pb::TracerouteResult {
            protocol: match t.protocol {
                TracerouteProtocol::Icmp => pb::TracerouteProtocol::Icmp,
                TracerouteProtocol::Udp => pb::TracerouteProtocol::Udp,
                TracerouteProtocol::Tcp => pb::TracerouteProtocol::Tcp,
            } as i32,
            hops: t
                .hops
                .iter()
                .map(|h| pb::Hop {
                    ttl: h.ttl.into(),
                    address: h.address.map(|a| a.to_string()).unwrap_or_default(),
                    rtt_ms: h.rtt_ms,
                })
                .collect(),
            reached: t.reached,
            last_hop: t.last_hop.as_ref().map(|l| pb::LastHop {
                address: l.address.to_string(),
                rtt_ms: l.rtt_ms,
            }),
            error: t.error.clone().unwrap_or_default(),
        }),
        error: r.error.clone().unwrap_or_default(),
        started_unix_ms: r.started_unix_ms,
        finished_unix_ms: r.finished_unix_ms,
    }
}

fn msg(kind: pb::probe_message::Kind) -> pb::ProbeMessage {
    pb::ProbeMessage { kind: Some(kind) }
}

/// How a session ended.
enum SessionEnd {
    /// Shutdown was requested and handled.
    Shutdown,
    /// The session failed; `established` tells whether it got as far as the hello's Ack.
    Failed { error: Error, established: bool },
}

/// The agent: a measurer plus the coordinator connection.
pub struct Agent {
    measurer: Measurer,
    id: String,
    lat: f64,
    lon: f64,
    /// Measurement slots (`max-concurrent-measurements`).
    pool: Arc<Semaphore>,
    /// The coordinator endpoints (TLS set up from `ca` for https:// URLs), built once: one,
    /// or a cluster's replicas tried in turn.
    endpoints: Vec<(String, Endpoint)>,
    /// Index in `endpoints` of the one in use; moves on when a session ends.
    current: std::sync::atomic::AtomicUsize,
    /// What `/metrics` shows ([`Agent::metrics`]).
    metrics: Arc<AgentMetrics>,
    /// The probe's own credential once read from the state folder or enrolled.
    credential: tokio::sync::Mutex<Option<String>>,
    /// Answers of recent requests, across sessions ([`crate::recent`]).
    recent: std::sync::Mutex<crate::recent::Recent>,
}

impl Agent {
    /// Builds the agent; fails when id/lat/lon are missing, the coordinator URL is bad or
    /// the `ca` file cannot be used.
    pub fn new(measurer: Measurer) -> Result<Self> {
        let (id, lat, lon) = measurer.config().identity()?;
        let permits = measurer.config().max_concurrent_measurements;
        let mut endpoints = Vec::new();
        for url in measurer.config().coordinators() {
            let endpoint = geoloc_rt::tls::endpoint(url, measurer.config().ca.as_deref())
                .map_err(|e| Error::Config(e.to_string()))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_keepalive(Some(Duration::from_secs(30)))
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(10));
            if geoloc_rt::tls::plaintext_to_remote(url) {
                warn!(
                    coordinator = %url,
                    "plaintext http:// to a coordinator that is not on this machine: the probe \
                     credential and measurements cross the network in clear; use https:// (lab only)"
                );
            }
            endpoints.push((url.to_string(), endpoint));
        }
        if endpoints.is_empty() {
            return Err(Error::Config("coordinator: no URL given".into()));
        }
        Ok(Agent {
            endpoints,
            current: std::sync::atomic::AtomicUsize::new(0),
            measurer,
            id,
            lat,
            lon,
            pool: Arc::new(Semaphore::new(permits)),
            metrics: Arc::new(AgentMetrics::default()),
            credential: tokio::sync::Mutex::new(None),
            recent: std::sync::Mutex::default(),
        })
    }

    /// The agent's metrics (register them to serve them).
    pub fn metrics(&self) -> Arc<AgentMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs until `shutdown` turns true (Ok) or the coordinator rejects the agent (Err).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let cfg = self.measurer.config();
        let mut attempt: u32 = 0;
        let mut delays = reconnect_backoff(cfg.reconnect_min, cfg.reconnect_max);
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let end = self.session(&mut shutdown).await;
            self.metrics.set_connected(false);
            if matches!(end, SessionEnd::Failed { .. }) {
                self.metrics.error("session");
            }
            match end {
                SessionEnd::Shutdown => return Ok(()),
                SessionEnd::Failed {
                    error: e @ Error::Rejected(_),
                    ..
                } => return Err(e),
                SessionEnd::Failed { error, established } => {
                    if self.endpoints.len() > 1 {
                        // A cluster: the next replica (the one that failed may be gone).
                        let next = (self.current.load(std::sync::atomic::Ordering::SeqCst) + 1)
                            % self.endpoints.len();
                        self.current
                            .store(next, std::sync::atomic::Ordering::SeqCst);
                        info!(coordinator = %self.endpoints[next].0, "trying the next coordinator");
                    }
                    if established {
                        attempt = 0;
                        delays = reconnect_backoff(cfg.reconnect_min, cfg.reconnect_max);
                    }
                    let delay = delays.next().unwrap_or(cfg.reconnect_max);
                    attempt = attempt.saturating_add(1);
                    warn!(
                        error = %error,
                        retry_in_ms = delay.as_millis() as u64,
                        attempt,
                        "coordinator session ended; reconnecting"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return Ok(()),
                    }
                }
            }
        }
    }

    /// The coordinator in use: its URL and endpoint.
    fn endpoint(&self) -> &(String, Endpoint) {
        let i = self.current.load(std::sync::atomic::Ordering::SeqCst) % self.endpoints.len();
        &self.endpoints[i]
    }

    async fn connect(&self) -> Result<ProbeServiceClient<Channel>> {
        let cfg = self.measurer.config();
        let (url, endpoint) = self.endpoint();
        let channel = endpoint.clone().connect().await.map_err(|e| {
            Error::Coordinator(format!(
                "connect to {url}: {}",
                geoloc_rt::tls::explain(url, cfg.ca.as_deref(), &e)
            ))
        })?;
        Ok(ProbeServiceClient::new(channel)
            .max_decoding_message_size(geoloc_proto::limits::MAX_PROBE_MESSAGE)
            .max_encoding_message_size(geoloc_proto::limits::MAX_PROBE_MESSAGE))
    }

    /// The credential to register with: the probe's own one from the state folder; else,
    /// with an enrolment token, the one it is exchanged for (then saved); else the shared
    /// fleet token (lab).
    async fn credential(&self, client: &mut ProbeServiceClient<Channel>) -> Result<String> {
        let cfg = self.measurer.config();
        let mut cached = self.credential.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let Some(dir) = &cfg.state_dir else {
            return Ok(cfg.token.clone());
        };
        if let Some(stored) = load_credential(dir).map_err(|e| Error::Rejected(e.to_string()))? {
            if stored.probe_id != self.id {
                return Err(Error::Rejected(format!(
                    "{} holds the credential of probe {:?}, but this agent's id is {:?}",
                    dir.join(CREDENTIAL_FILE).display(),
                    stored.probe_id,
                    self.id
                )));
            }
            if cfg.enrolment_token.is_some() {
                info!("using the stored credential; the enrolment token is not needed any more");
            }
            *cached = Some(stored.credential.clone());
            return Ok(stored.credential);
        }
        let Some(token) = &cfg.enrolment_token else {
            if cfg.token.is_empty() {
                return Err(Error::Rejected(format!(
                    "probe {:?} is not enrolled: no credential in {} and no enrolment-token \
                     (the coordinator's admin makes one: geoloc-coordinator probes enroll --id {})",
                    self.id,
                    dir.join(CREDENTIAL_FILE).display(),
                    self.id
                )));
            }
            return Ok(cfg.token.clone());
        };
        let mut req = tonic::Request::new(pb::EnrollRequest {
            enrolment_token: token.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        });
        req.set_timeout(REGISTER_TIMEOUT);
        let reply = match client.enroll(req).await {
            Ok(r) => r.into_inner(),
            Err(status) if is_fatal_register_status(&status) => {
                return Err(Error::Rejected(format!(
                    "enrolment refused: {} ({:?})",
                    status.message(),
                    status.code()
                )))
            }
            Err(status) => {
                return Err(Error::Coordinator(format!(
                    "enroll: {} ({:?})",
                    status.message(),
                    status.code()
                )))
            }
        };
        if reply.probe_id != self.id {
            return Err(Error::Rejected(format!(
                "the enrolment token was issued for probe {:?}, but this agent's id is {:?}",
                reply.probe_id, self.id
            )));
        }
        let stored = StoredCredential {
            probe_id: reply.probe_id,
            credential: reply.credential,
        };
        save_credential(dir, &stored).map_err(|e| {
            Error::Rejected(format!(
                "enrolled, but the credential could not be saved ({e}): fix {} and enrol again with a new token",
                dir.display()
            ))
        })?;
        info!(path = %dir.join(CREDENTIAL_FILE).display(), "enrolled: credential saved");
        *cached = Some(stored.credential.clone());
        Ok(stored.credential)
    }

    async fn register(
        &self,
        client: &mut ProbeServiceClient<Channel>,
    ) -> Result<pb::RegisterReply> {
        let cfg = self.measurer.config();
        let credential = self.credential(client).await?;
        let mut req = tonic::Request::new(pb::RegisterRequest {
            probe_id: self.id.clone(),
            lat: self.lat,
            lon: self.lon,
            credential,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            allow_private: cfg.allow_private,
            ipv4: cfg
                .advertise_ipv4
                .map(|a| a.to_string())
                .unwrap_or_default(),
            ipv6: cfg
                .advertise_ipv6
                .map(|a| a.to_string())
                .unwrap_or_default(),
        });
        req.set_timeout(REGISTER_TIMEOUT);
        match client.register(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(status) if is_fatal_register_status(&status) => Err(Error::Rejected(format!(
                "{} ({:?})",
                status.message(),
                status.code()
            ))),
            Err(status) => Err(Error::Coordinator(format!(
                "register: {}{} ({:?})",
                geoloc_rt::tls::hint(&self.endpoint().0, cfg.ca.as_deref(), &status)
                    .map(|h| format!("{h}: "))
                    .unwrap_or_default(),
                status.message(),
                status.code()
            ))),
        }
    }

    async fn session(&self, shutdown: &mut watch::Receiver<bool>) -> SessionEnd {
        let fail = |error: Error, established: bool| SessionEnd::Failed { error, established };
        // Connecting and registering can take seconds: a shutdown signal interrupts them.
        let setup = async {
            let mut client = match self.connect().await {
                Ok(c) => c,
                Err(e @ Error::Config(_)) => return Err(Error::Rejected(e.to_string())),
                Err(e) => return Err(e),
            };
            let reply = self.register(&mut client).await?;
            Ok((client, reply))
        };
        let (mut client, reply) = tokio::select! {
            r = setup => match r {
                Ok(ok) => ok,
                Err(e) => return fail(e, false),
            },
            _ = shutdown.changed() => return SessionEnd::Shutdown,
        };
        if reply.flagged {
            warn!(reason = %reply.flag_reason, "the coordinator currently excludes this probe from solving");
        }
        let heartbeat_every = match reply.heartbeat_interval_ms {
            0 => Duration::from_millis(defaults::HEARTBEAT_INTERVAL_MS),
            ms => Duration::from_millis(ms.into()),
        };
        info!(
            probe_id = %self.id,
            coordinator = %self.endpoint().0,
            coordinator_version = %reply.coordinator_version,
            heartbeat_ms = heartbeat_every.as_millis() as u64,
            "registered"
        );

        let (tx, rx) = mpsc::channel::<pb::ProbeMessage>(256);
        let hello = msg(pb::probe_message::Kind::Hello(pb::Hello {
            session_token: reply.session_token.clone(),
            probe_id: self.id.clone(),
        }));
        if tx.send(hello).await.is_err() {
            return fail(Error::Coordinator("session channel closed".into()), false);
        }
        let mut inbound = match client.session(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return fail(
                    Error::Coordinator(format!(
                        "session: {} ({:?})",
                        status.message(),
                        status.code()
                    )),
                    false,
                )
            }
        };

        self.metrics.set_connected(true);
        let mut established = false;
        let mut tasks: JoinSet<String> = JoinSet::new();
        // Per request: the task sending its answer on this session, and the measurement
        // itself (None for a repeat answered from `recent`). A session that ends aborts
        // only the senders: the measurements finish into `recent`.
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + heartbeat_every,
            heartbeat_every,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let end = loop {
            tokio::select! {
                _ = shutdown.changed() => break None,
                _ = heartbeat.tick() => {
                    let hb = msg(pb::probe_message::Kind::Heartbeat(pb::Heartbeat {
                        unix_ms: unix_ms_u64(),
                        in_flight: running.len() as u32,
                    }));
                    if tx.send(hb).await.is_err() {
                        break Some(Error::Coordinator("session closed while sending heartbeat".into()));
                    }
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(id) = done {
                        running.remove(&id);
                    }
                }
                incoming = inbound.message() => match incoming {
                    Ok(Some(m)) => match m.kind {
                        Some(pb::coordinator_message::Kind::MeasurementRequest(req)) => {
                            established = true;
                            self.start_request(req, &tx, &mut tasks, &mut running).await;
                        }
                        Some(pb::coordinator_message::Kind::Cancel(c)) => {
                            if let Some(h) = running.remove(&c.request_id) {
                                h.sender.abort();
                                if let Some(m) = h.measurement {
                                    m.abort();
                                    self.lock_recent().remove(&c.request_id);
                                }
                                debug!(request_id = %c.request_id, reason = %c.reason, "cancelled");
                            }
                        }
                        Some(pb::coordinator_message::Kind::Ack(a)) => {
                            if a.request_id.is_empty() && !established {
                                info!("session established");
                            }
                            established = true;
                        }
                        None => {}
                    },
                    Ok(None) => break Some(Error::Coordinator("the coordinator closed the session".into())),
                    Err(status) => break Some(Error::Coordinator(format!(
                        "session stream: {} ({:?})", status.message(), status.code()
                    ))),
                }
            }
        };
        match end {
            Some(error) => {
                tasks.abort_all();
                fail(error, established)
            }
            None => {
                info!(
                    in_flight = running.len(),
                    "shutting down: finishing in-flight measurements"
                );
                let drain = async { while tasks.join_next().await.is_some() {} };
                if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
                    warn!("in-flight measurements did not finish in time; abandoning them");
                    tasks.abort_all();
                }
                // Dropping the sender closes our half of the stream cleanly, but the
                // results just sent may still sit in the stream's buffers: returning now
                // would drop the connection and lose them. The coordinator closes its half
                // once it has read ours to the end; wait for that (bounded).
                drop(tx);
                let flushed = async { while let Ok(Some(_)) = inbound.message().await {} };
                if tokio::time::timeout(SHUTDOWN_FLUSH, flushed).await.is_err() {
                    warn!("the coordinator did not close the session in time; results sent during shutdown may be lost");
                }
                SessionEnd::Shutdown
            }
        }
    }

    async fn start_request(
        &self,
        req: pb::MeasurementRequest,
        tx: &mpsc::Sender<pb::ProbeMessage>,
        tasks: &mut JoinSet<String>,
        running: &mut HashMap<String, Running>,
    ) {
        let request_id = req.request_id.clone();
        let known = self.lock_recent().get(&request_id, Instant::now());
        if let Some(answer) = known {
            // Asked again (a replica took over a run): the answer measured once, without
            // measuring the target again.
            debug!(request_id = %request_id, "repeated request: answering from the recent answers");
            self.metrics.repeated();
            let sender = send_when_answered(tasks, tx, request_id.clone(), answer);
            running.insert(
                request_id,
                Running {
                    sender,
                    measurement: None,
                },
            );
            return;
        }
        let parsed = match request_from_proto(&req) {
            Ok(p) => p,
            Err(message) => {
                warn!(request_id = %request_id, %message, "invalid measurement request");
                self.metrics.error("invalid-request");
                let _ = tx
                    .send(msg(pb::probe_message::Kind::Error(pb::ProbeError {
                        request_id,
                        message,
                    })))
                    .await;
                return;
            }
        };
        let measurer = self.measurer.clone();
        let metrics = Arc::clone(&self.metrics);
        let semaphore = self.pool.clone();
        let id = request_id.clone();
        let received = Instant::now();
        let (answer_tx, answer_rx) = watch::channel(None);
        self.lock_recent()
            .insert(&request_id, answer_rx.clone(), received);
        // The measurement runs detached from the session: if the session ends meanwhile,
        // its answer still lands in `recent` for the replica that asks again.
        let measurement = tokio::spawn(async move {
            let Ok(_permit) = semaphore.acquire_owned().await else {
                return;
            };
            let started = Instant::now();
            let queued = started - received;
            if queued > Duration::from_millis(50) {
                warn!(
                    request_id = %id,
                    queued_ms = queued.as_millis() as u64,
                    "request waited for a measurement slot"
                );
            }
            let result = measurer.run(&parsed).await;
            #[cfg(feature = "fault-injection")]
            let result = crate::fault::apply(result);
            metrics.observe(&result);
            debug!(
                request_id = %id,
                target = %parsed.target,
                elapsed_ms = started.elapsed().as_millis() as u64,
                error = ?result.error,
                "measurement done"
            );
            answer_tx.send_replace(Some(result_to_proto(&result)));
        });
        let sender = send_when_answered(tasks, tx, request_id.clone(), answer_rx);
        running.insert(
            request_id,
            Running {
                sender,
                measurement: Some(measurement.abort_handle()),
            },
        );
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, crate::recent::Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sends `answer` on the session `tx` once it is there (nothing for a measurement that was
/// abandoned); the task's output is the request id.
fn send_when_answered(
    tasks: &mut JoinSet<String>,
    tx: &mpsc::Sender<pb::ProbeMessage>,
    request_id: String,
    answer: crate::recent::Answer,
) -> tokio::task::AbortHandle {
    let tx = tx.clone();
    tasks.spawn(async move {
        if let Some(r) = crate::recent::wait(answer).await {
            let _ = tx
                .send(msg(pb::probe_message::Kind::MeasurementResult(r)))
                .await;
        }
        request_id
    })
}

/// One request in progress on a session.
struct Running {
    /// Sends the answer on this session.
    sender: tokio::task::AbortHandle,
    /// The measurement (None: a repeat answered from the recent answers).
    measurement: Option<tokio::task::AbortHandle>,
}

/// The probe's own credential as kept in its state folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StoredCredential {
    pub probe_id: String,
    pub credential: String,
}

/// Reads `DIR/credential`; None when there is none yet.
pub fn load_credential(dir: &std::path::Path) -> Result<Option<StoredCredential>> {
    let path = dir.join(CREDENTIAL_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Config(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Writes `DIR/credential` (mode 0600, the folder created 0700 if missing), atomically.
pub fn save_credential(dir: &std::path::Path, c: &StoredCredential) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let text = toml::to_string(c).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{CREDENTIAL_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(CREDENTIAL_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_file_is_private_and_reads_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(load_credential(&state).unwrap(), None);
        let c = StoredCredential {
            probe_id: "par-1".into(),
            credential: "glc_x".into(),
        };
        save_credential(&state, &c).unwrap();
        let mode = std::fs::metadata(state.join(CREDENTIAL_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_credential(&state).unwrap(), Some(c));
        std::fs::write(state.join(CREDENTIAL_FILE), "nonsense").unwrap();
        assert!(load_credential(&state)
            .unwrap_err()
            .to_string()
            .contains(CREDENTIAL_FILE));
    }

    #[test]
    fn backoff_is_exponential_capped_and_jittered() {
        let min = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        let mut seen_jitter = false;
        for seed in 0..20 {
            use backon::BackoffBuilder as _;
            let delays: Vec<Duration> = reconnect_backoff_builder(min, max)
                .with_jitter_seed(seed)
                .build()
                .take(100)
                .collect();
            assert_eq!(delays.len(), 100, "never runs out");
            for (k, d) in delays.iter().enumerate() {
                // b = min * 2^k capped at max; the delay is in [b/2, b).
                let base = min
                    .saturating_mul(2u32.saturating_pow(k.min(31) as u32))
                    .min(max);
                assert!(
                    *d >= base / 2 && *d <= base,
                    "seed {seed} attempt {k}: {d:?} not in [{:?}, {base:?}]",
                    base / 2
                );
                seen_jitter |= *d != base / 2;
            }
        }
        assert!(seen_jitter, "delays are jittered");
        // Without jitter the halves double: 250, 500, 1000, 2000 ms ... capped at 15 s.
        use backon::BackoffBuilder as _;
        let plain: Vec<Duration> = backon::ExponentialBuilder::default()
            .with_min_delay(min / 2)
            .with_max_delay(max / 2)
            .without_max_times()
            .build()
            .take(8)
            .collect();
        assert_eq!(plain[0], Duration::from_millis(250));
        assert_eq!(plain[3], Duration::from_millis(2000));
        assert_eq!(plain[7], Duration::from_millis(15_000));
    }

    #[test]
    fn fatal_statuses() {
        assert!(is_fatal_register_status(&tonic::Status::unauthenticated(
            "x"
        )));
        assert!(is_fatal_register_status(&tonic::Status::invalid_argument(
            "x"
        )));
        assert!(!is_fatal_register_status(&tonic::Status::unavailable("x")));
        assert!(!is_fatal_register_status(&tonic::Status::internal("x")));
    }

    #[test]
    fn request_conversion() {
        let req = pb::MeasurementRequest {
            request_id: "r9".into(),
            target: "2001:db8::1".into(),
            kinds: vec![
                pb::MeasurementKind::Ping as i32,
                pb::MeasurementKind::Traceroute as i32,
            ],
            ping_count: 3,
            interval_ms: 0,
            timeout_ms: 5000,
            tcp_ports: vec![443],
            max_ttl: 999,
            allow_private: true,
        };
        let r = request_from_proto(&req).unwrap();
        assert!(r.ping && r.traceroute && !r.tcp);
        assert_eq!(r.ping_count, Some(3));
        assert_eq!(r.interval, None);
        assert_eq!(r.timeout, Some(Duration::from_secs(5)));
        assert_eq!(r.tcp_ports, Some(vec![443]));
        assert_eq!(r.max_ttl, Some(255));
        assert!(r.allow_private);

        let bad = pb::MeasurementRequest {
            target: "example.com".into(),
            ..req.clone()
        };
        assert!(request_from_proto(&bad)
            .unwrap_err()
            .contains("example.com"));
        let bad = pb::MeasurementRequest {
            kinds: vec![],
            ..req.clone()
        };
        assert!(request_from_proto(&bad).is_err());
        let bad = pb::MeasurementRequest {
            tcp_ports: vec![70000],
            ..req
        };
        assert!(request_from_proto(&bad).unwrap_err().contains("70000"));
    }
}
