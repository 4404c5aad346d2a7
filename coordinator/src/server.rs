//! The two gRPC services on one port: `ProbeService` (probe agents) and `LocateService`
//! (clients).
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use geoloc_engine::{distance_km, LatLon};
use geoloc_proto::v1 as pb;
use pb::locate_service_server::{LocateService, LocateServiceServer};
use pb::probe_service_server::{ProbeService, ProbeServiceServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use crate::conn::Limits;
use crate::landmarks::{valid_id, LandmarkKind};
use crate::locate::{result_to_pb, LocateFailure, LocateParams};
use crate::registry::{Outcome, ProbeSnapshot};
use crate::storage::ProbeRow;
use crate::{new_id, target, unix_ms, validate, Coordinator, CoordinatorError, VERSION};

/// A probe must send `hello` this soon after opening its session.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most addresses in one LocateBatch.
pub const MAX_BATCH: usize = 100_000;
/// Declared positions farther than this from the landmarks file are flagged, km.
const LANDMARK_FILE_TOLERANCE_KM: f64 = 50.0;
/// Largest accepted text fields from probes.
const MAX_FIELD_LEN: usize = 256;
/// Calls open at a time on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Serves both services on `listener` until `shutdown` resolves, with the default
/// [`Limits`].
pub async fn serve(
    coord: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::Result<()> {
    serve_with(coord, listener, Limits::default(), shutdown).await
}

/// Like [`serve`] with explicit connection limits.
pub async fn serve_with(
    coord: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::Result<()> {
    let incoming = crate::conn::accept(listener, &limits);
    let probes = ProbeServiceServer::new(ProbeSvc(Arc::clone(&coord)))
        .max_decoding_message_size(validate::MAX_PROBE_MESSAGE)
        .max_encoding_message_size(validate::MAX_PROBE_MESSAGE);
    let clients = LocateServiceServer::new(LocateSvc(coord))
        .max_decoding_message_size(validate::MAX_CLIENT_MESSAGE)
        .max_encoding_message_size(validate::MAX_REPLY_MESSAGE);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(Some(16 * 1024))
        .add_service(probes)
        .add_service(clients)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Binds `addr` (port 0 = any free port) and returns the listener and its real address.
pub async fn bind(addr: SocketAddr) -> crate::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CoordinatorError::Listen { addr, source })?;
    let a = l
        .local_addr()
        .map_err(|source| CoordinatorError::Listen { addr, source })?;
    Ok((l, a))
}

/// INVALID_ARGUMENT with the machine-readable code (`bogon`, `invalid-address`,
/// `invalid-argument`) in the `geoloc-error-code` metadata, as batch events carry it.
fn invalid(code: &str, message: impl Into<String>) -> Status {
    let mut s = Status::invalid_argument(message);
    if let Ok(v) = code.parse() {
        s.metadata_mut().insert("geoloc-error-code", v);
    }
    s
}

fn internal(e: CoordinatorError) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal(e.to_string())
}

// ---- probes ---------------------------------------------------------------------------------

/// `ProbeService`.
pub struct ProbeSvc(pub Arc<Coordinator>);

impl Coordinator {
    /// Validates and records a registration; returns the session token and flag state.
    /// `peer` is the address the call came from (None when unknown).
    pub async fn register(
        &self,
        r: &pb::RegisterRequest,
        peer: Option<std::net::IpAddr>,
    ) -> Result<pb::RegisterReply, Status> {
        if !self.throttle.attempt(peer) {
            return Err(Status::resource_exhausted(
                "too many registration attempts from this address: retry in a few seconds",
            ));
        }
        if let Some(tok) = &self.config.probe_token {
            if !constant_time_eq(tok.as_bytes(), r.credential.as_bytes()) {
                self.throttle.auth_failed(peer, &r.probe_id);
                return Err(Status::unauthenticated("wrong probe credential"));
            }
        }
        if !valid_id(&r.probe_id) {
            return Err(Status::invalid_argument(format!(
                "bad probe_id {:?}: 1..=64 characters of A-Z a-z 0-9 . _ -",
                truncate(&r.probe_id)
            )));
        }
        let pos = LatLon::checked(r.lat, r.lon)
            .map_err(|e| Status::invalid_argument(format!("bad position: {e}")))?;
        if r.ipv4.len() > MAX_FIELD_LEN
            || r.ipv6.len() > MAX_FIELD_LEN
            || r.agent_version.len() > MAX_FIELD_LEN
        {
            return Err(Status::invalid_argument(
                "ipv4, ipv6 or agent_version longer than 256 bytes",
            ));
        }
        if r.agent_version.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "agent_version {} contains control characters",
                truncate(&r.agent_version)
            )));
        }
        if !r.ipv4.is_empty() && r.ipv4.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "bad ipv4 {}",
                truncate(&r.ipv4)
            )));
        }
        if !r.ipv6.is_empty() && r.ipv6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "bad ipv6 {}",
                truncate(&r.ipv6)
            )));
        }
        let now = unix_ms();
        let old = self
            .storage
            .get_probe(&r.probe_id)
            .await
            .map_err(internal)?;
        if old.is_none() {
            if self.registry.len() >= crate::throttle::MAX_PROBES_PER_CREDENTIAL {
                return Err(Status::resource_exhausted(format!(
                    "{} probes are registered with this credential (at most {})",
                    self.registry.len(),
                    crate::throttle::MAX_PROBES_PER_CREDENTIAL
                )));
            }
            if !self.throttle.new_probe() {
                return Err(Status::resource_exhausted(
                    "too many new probes registering: retry in a few seconds",
                ));
            }
        }
        let moved = old
            .as_ref()
            .is_some_and(|o| distance_km(o.pos(), pos) > 1.0);
        let (mut flagged, mut flag_reason, epoch) = match &old {
            // A move discards the old flag and evidence: the new position is checked afresh.
            Some(_) if moved => (false, String::new(), now),
            Some(o) => (o.flagged, o.flag_reason.clone(), o.flag_epoch_unix_ms),
            None => (false, String::new(), now),
        };
        if let Some(l) = self
            .landmarks
            .iter()
            .find(|l| l.id == r.probe_id && l.kind == LandmarkKind::Probe)
        {
            let d = distance_km(
                LatLon {
                    lat: l.lat,
                    lon: l.lon,
                },
                pos,
            );
            if d > LANDMARK_FILE_TOLERANCE_KM && !flagged {
                flagged = true;
                flag_reason = format!(
                    "declared position ({:.4}, {:.4}) is {d:.0} km from the landmarks file's ({:.4}, {:.4})",
                    pos.lat, pos.lon, l.lat, l.lon
                );
            }
        }
        let row = ProbeRow {
            probe_id: r.probe_id.clone(),
            lat: pos.lat,
            lon: pos.lon,
            ipv4: r.ipv4.clone(),
            ipv6: r.ipv6.clone(),
            agent_version: r.agent_version.clone(),
            flagged,
            flag_reason: flag_reason.clone(),
            flag_epoch_unix_ms: epoch,
            first_seen_unix_ms: old.as_ref().map_or(now, |o| o.first_seen_unix_ms),
            // Seen means seen in a session: a registration alone (which anyone with the
            // credential can repeat) does not make a probe expected after a restart.
            last_seen_unix_ms: old.as_ref().map_or(0, |o| o.last_seen_unix_ms),
        };
        self.storage.upsert_probe(&row).await.map_err(internal)?;
        if moved || old.as_ref().is_some_and(|o| o.flagged != flagged) {
            self.storage
                .set_probe_flag(&row.probe_id, flagged, &flag_reason, Some(epoch))
                .await
                .map_err(internal)?;
        }
        let token = new_id();
        self.registry.register(row, token.clone());
        tracing::info!(probe = %r.probe_id, lat = pos.lat, lon = pos.lon, version = %validate::printable(&r.agent_version), flagged, "probe registered");
        Ok(pb::RegisterReply {
            session_token: token,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            coordinator_version: VERSION.to_string(),
            flagged,
            flag_reason,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A client- or probe-given text for a message or a log line: cut and escaped.
fn truncate(s: &str) -> String {
    validate::bounded_text(s, 80)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ProbeService for ProbeSvc {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let peer = req.remote_addr().map(|a| a.ip());
        self.0
            .register(req.get_ref(), peer)
            .await
            .map(Response::new)
    }

    type SessionStream = BoxStream<pb::CoordinatorMessage>;

    async fn session(
        &self,
        req: Request<Streaming<pb::ProbeMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let coord = Arc::clone(&self.0);
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10 s"))??;
        let hello = match first.and_then(|m| m.kind) {
            Some(pb::probe_message::Kind::Hello(h)) => h,
            _ => {
                return Err(Status::failed_precondition(
                    "the first message of a session must be hello",
                ))
            }
        };
        if !coord
            .registry
            .check_token(&hello.probe_id, &hello.session_token)
        {
            return Err(Status::unauthenticated(format!(
                "unknown session token for probe {:?}: call Register again",
                truncate(&hello.probe_id)
            )));
        }
        let probe_id = hello.probe_id.clone();
        let (tx, rx) = mpsc::channel(256);
        let session_id = coord
            .registry
            .attach(&probe_id, tx.clone())
            .ok_or_else(|| Status::unauthenticated("probe not registered: call Register"))?;
        let ack = pb::CoordinatorMessage {
            kind: Some(pb::coordinator_message::Kind::Ack(pb::Ack {
                probe_id: probe_id.clone(),
                request_id: String::new(),
                message: "session open".into(),
                unix_ms: unix_ms() as u64,
            })),
        };
        let _ = tx.send(Ok(ack)).await;
        drop(tx);
        let _ = coord.storage.touch_probe(&probe_id, unix_ms()).await;
        tracing::info!(probe = %probe_id, session_id, "probe session open");

        if coord.config.landmark_checks {
            let c = Arc::clone(&coord);
            let pid = probe_id.clone();
            let budget = Duration::from_millis(u64::from(c.config.probe_timeout_ms));
            tokio::spawn(async move { c.check_landmarks_for(&pid, budget).await });
        }

        tokio::spawn(async move {
            let mut last_db_touch = std::time::Instant::now();
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(probe = %probe_id, error = %e, "probe session error");
                        break;
                    }
                };
                let now = coord.registry.seen(&probe_id);
                if last_db_touch.elapsed() > Duration::from_secs(30) {
                    last_db_touch = std::time::Instant::now();
                    let _ = coord.storage.touch_probe(&probe_id, now).await;
                }
                match msg.kind {
                    Some(pb::probe_message::Kind::Heartbeat(_))
                    | Some(pb::probe_message::Kind::Hello(_))
                    | None => {}
                    Some(pb::probe_message::Kind::MeasurementResult(r)) => {
                        let Some((waiter, req)) =
                            coord
                                .registry
                                .take_pending(&probe_id, session_id, &r.request_id)
                        else {
                            tracing::debug!(probe = %probe_id, request_id = %truncate(&r.request_id), "late or unknown result dropped");
                            continue;
                        };
                        // The edge: nothing from the answer is stored or solved unless it
                        // is about what was asked and physically possible.
                        let outcome = match validate::answer(&req, &r) {
                            Ok(()) => Outcome::Answer(Box::new(r)),
                            Err(why) => {
                                let n = coord.registry.count_rejected(&probe_id);
                                tracing::warn!(probe = %probe_id, request_id = %req.request_id, reason = %why, rejected = n, "answer rejected");
                                Outcome::Rejected(why.0)
                            }
                        };
                        let _ = waiter.send(outcome);
                    }
                    Some(pb::probe_message::Kind::Error(e)) => {
                        let message = validate::bounded_text(&e.message, validate::MAX_ERROR_LEN);
                        if e.request_id.is_empty() {
                            tracing::warn!(probe = %probe_id, %message, "probe reported an error");
                        } else {
                            coord.registry.deliver(
                                &probe_id,
                                session_id,
                                &e.request_id,
                                Outcome::ProbeError(message),
                            );
                        }
                    }
                }
            }
            coord.registry.detach(&probe_id, session_id);
            let _ = coord.storage.touch_probe(&probe_id, unix_ms()).await;
            tracing::info!(probe = %probe_id, session_id, "probe session closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

// ---- clients --------------------------------------------------------------------------------

/// `LocateService`.
pub struct LocateSvc(pub Arc<Coordinator>);

fn event(ip: &str, index: u32, e: pb::locate_event::Event) -> pb::LocateEvent {
    pb::LocateEvent {
        ip: ip.to_string(),
        index,
        event: Some(e),
    }
}

fn failure_event(ip: &str, index: u32, f: LocateFailure) -> pb::LocateEvent {
    event(
        ip,
        index,
        pb::locate_event::Event::Error(pb::LocateError {
            error_code: pb::ErrorCode::from_code(&f.code).unwrap_or(pb::ErrorCode::Internal) as i32,
            message: f.message,
        }),
    )
}

#[tonic::async_trait]
impl LocateService for LocateSvc {
    type LocateStream = BoxStream<pb::LocateEvent>;

    async fn locate(
        &self,
        req: Request<pb::LocateRequest>,
    ) -> Result<Response<Self::LocateStream>, Status> {
        let r = req.into_inner();
        let params = LocateParams::from_request(&r);
        // Bad input fails the call itself.
        target::check(&r.ip, self.0.config.allow_private)
            .map_err(|e| invalid(e.code, e.message))?;
        let (tx, rx) = mpsc::channel(64);
        let coord = Arc::clone(&self.0);
        tokio::spawn(async move {
            let ip = r.ip.clone();
            let ptx = tx.clone();
            let pip = ip.clone();
            let progress = move |p: pb::Progress| {
                let _ = ptx.try_send(Ok(event(&pip, 0, pb::locate_event::Event::Progress(p))));
            };
            let ev = match coord.locate(params, &progress).await {
                Ok(res) => event(&ip, 0, pb::locate_event::Event::Result(res)),
                Err(f) if f.is_invalid_input() => {
                    let _ = tx.send(Err(invalid(&f.code, f.message))).await;
                    return;
                }
                Err(f) if f.is_interrupted() => {
                    let _ = tx.send(Err(Status::unavailable(f.message))).await;
                    return;
                }
                Err(f) => failure_event(&ip, 0, f),
            };
            // The client may be gone; the result is stored anyway.
            let _ = tx.send(Ok(ev)).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type LocateBatchStream = BoxStream<pb::LocateEvent>;

    async fn locate_batch(
        &self,
        req: Request<pb::LocateBatchRequest>,
    ) -> Result<Response<Self::LocateBatchStream>, Status> {
        let mut r = req.into_inner();
        if r.ips.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} addresses in one batch (at most {MAX_BATCH})",
                r.ips.len()
            )));
        }
        let coord = Arc::clone(&self.0);
        let concurrency = if r.concurrency == 0 {
            coord.config.batch_concurrency
        } else {
            r.concurrency.min(256)
        } as usize;
        let (tx, rx) = mpsc::channel(256);
        // Shared by every address's task (a copy per address made a batch quadratic).
        let ips: Arc<Vec<String>> = Arc::new(std::mem::take(&mut r.ips));
        tokio::spawn(async move {
            // Same address twice in a batch: measured once, answered for each index.
            let mut groups: HashMap<String, Vec<u32>> = HashMap::new();
            let mut order: Vec<String> = Vec::new();
            for (i, ip) in ips.iter().enumerate() {
                let key = match target::check(ip, coord.config.allow_private) {
                    Ok(a) => target::canonical(a),
                    Err(e) => {
                        let f = LocateFailure {
                            code: e.code.to_string(),
                            message: e.message,
                        };
                        let _ = tx.send(Ok(failure_event(&truncate(ip), i as u32, f))).await;
                        continue;
                    }
                };
                if !groups.contains_key(&key) {
                    order.push(key.clone());
                }
                groups.entry(key).or_default().push(i as u32);
            }
            let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
            let mut set = tokio::task::JoinSet::new();
            for key in order {
                let indices = groups.remove(&key).unwrap_or_default();
                let Ok(permit) = Arc::clone(&sem).acquire_owned().await else {
                    break;
                };
                if coord.is_shutting_down() {
                    let _ = tx
                        .send(Err(Status::unavailable("the coordinator is shutting down")))
                        .await;
                    break;
                }
                if tx.is_closed() {
                    // Client gone: do not start measuring more addresses.
                    break;
                }
                let coord = Arc::clone(&coord);
                let tx = tx.clone();
                let ips = Arc::clone(&ips);
                let params = LocateParams {
                    ip: key.clone(),
                    mode: crate::locate::mode_from_pb(r.mode),
                    timeout_ms: r.timeout_ms,
                    k: r.k,
                    reuse_stored: r.reuse_stored,
                    ping_count: r.ping_count,
                };
                set.spawn(async move {
                    let _permit = permit;
                    let first = indices[0];
                    let ptx = tx.clone();
                    let pip = ips[first as usize].clone();
                    let progress = move |p: pb::Progress| {
                        let _ = ptx.try_send(Ok(event(
                            &pip,
                            first,
                            pb::locate_event::Event::Progress(p),
                        )));
                    };
                    let outcome = coord.locate(params, &progress).await;
                    if let Err(f) = &outcome {
                        if f.is_interrupted() {
                            // Ends the stream: the client retries what is left.
                            let _ = tx.send(Err(Status::unavailable(f.message.clone()))).await;
                            return;
                        }
                    }
                    for &i in &indices {
                        let ip = &ips[i as usize];
                        let ev = match &outcome {
                            Ok(res) => event(ip, i, pb::locate_event::Event::Result(res.clone())),
                            Err(f) => failure_event(ip, i, f.clone()),
                        };
                        let _ = tx.send(Ok(ev)).await;
                    }
                });
            }
            while set.join_next().await.is_some() {}
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_result(
        &self,
        req: Request<pb::GetResultRequest>,
    ) -> Result<Response<pb::GetResultReply>, Status> {
        let r = req.into_inner();
        let row = match r.key {
            Some(pb::get_result_request::Key::ResultId(id)) => {
                if id.len() > 64 {
                    return Err(Status::invalid_argument(
                        "result_id longer than 64 characters",
                    ));
                }
                self.0.storage.get_result(&id).await.map_err(internal)?
            }
            Some(pb::get_result_request::Key::Ip(ip)) => {
                let a =
                    target::check(&ip, true).map_err(|e| Status::invalid_argument(e.message))?;
                self.0
                    .storage
                    .latest_done_result(&target::canonical(a))
                    .await
                    .map_err(internal)?
            }
            None => return Err(Status::invalid_argument("give an ip or a result_id")),
        };
        match row {
            Some(row) if row.status == crate::storage::ResultStatus::Done => {
                let result = result_to_pb(&self.0.storage, &row, true)
                    .await
                    .map_err(internal)?;
                Ok(Response::new(pb::GetResultReply {
                    result: Some(result),
                }))
            }
            Some(row) => Err(Status::not_found(format!(
                "result {} is {}: {}",
                row.result_id,
                row.status.as_str(),
                row.error
            ))),
            None => Err(Status::not_found("no stored result")),
        }
    }

    async fn list_probes(
        &self,
        _req: Request<pb::ListProbesRequest>,
    ) -> Result<Response<pb::ListProbesReply>, Status> {
        let probes = self
            .0
            .registry
            .snapshot()
            .into_iter()
            .map(
                |ProbeSnapshot {
                     row,
                     connected,
                     healthy,
                 }| pb::ProbeInfo {
                    probe_id: row.probe_id,
                    lat: row.lat,
                    lon: row.lon,
                    healthy,
                    flagged: row.flagged,
                    flag_reason: row.flag_reason,
                    last_seen_unix_ms: row.last_seen_unix_ms,
                    connected,
                    agent_version: row.agent_version,
                    ipv4: row.ipv4,
                    ipv6: row.ipv6,
                },
            )
            .collect();
        Ok(Response::new(pb::ListProbesReply { probes }))
    }

    async fn clear_flag(
        &self,
        req: Request<pb::ClearFlagRequest>,
    ) -> Result<Response<pb::ClearFlagReply>, Status> {
        let id = req.into_inner().probe_id;
        match self.0.clear_flag(&id).await.map_err(internal)? {
            Some(was_flagged) => Ok(Response::new(pb::ClearFlagReply { was_flagged })),
            None => Err(Status::not_found(format!(
                "unknown probe {:?}",
                truncate(&id)
            ))),
        }
    }
}
