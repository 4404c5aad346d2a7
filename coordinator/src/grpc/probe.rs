//! `ProbeService`: registrations and probe sessions. Checks every field a probe sends,
//! converts it to the core's types, and turns the core's [`SessionCommand`]s into wire
//! messages.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use geoloc_engine::LatLon;
use geoloc_proto::v1 as pb;
use pb::probe_service_server::ProbeService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{convert, internal, truncate, validate, BoxStream};
use crate::core::identity::{EnrolError, IdentityError};
use crate::core::landmarks::valid_id;
use crate::core::register::{RegisterError, Registration};
use crate::core::registry::{Outcome, SessionCommand};
use crate::{unix_ms, Coordinator, VERSION};

/// A probe must send `hello` this soon after opening its session.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted text fields from probes.
const MAX_FIELD_LEN: usize = 256;
/// Commands waiting to be sent down one session.
const SESSION_QUEUE: usize = 256;

/// `ProbeService`.
pub struct ProbeSvc(pub Arc<Coordinator>);

fn refused(e: RegisterError) -> Status {
    match e {
        RegisterError::Throttled(m) => Status::resource_exhausted(m),
        RegisterError::WrongCredential => Status::unauthenticated("wrong probe credential"),
        RegisterError::Identity(e) => {
            let m = e.to_string();
            match e {
                IdentityError::NotYourId { .. } | IdentityError::EnrolledId(_) => {
                    Status::permission_denied(m)
                }
                IdentityError::PositionPending { .. } => Status::failed_precondition(m),
                IdentityError::Internal(e) => internal(e),
                IdentityError::UnknownCredential | IdentityError::Revoked(_) => {
                    Status::unauthenticated(m)
                }
            }
        }
        RegisterError::Internal(e) => internal(e),
    }
}

fn enrol_refused(e: EnrolError) -> Status {
    match e {
        EnrolError::Internal(e) => internal(e),
        e => Status::unauthenticated(e.to_string()),
    }
}

/// Status ending the session of a revoked probe.
fn revoked_status(probe_id: &str) -> Status {
    Status::unauthenticated(format!(
        "probe {:?} was revoked: its credential is no longer accepted",
        truncate(probe_id)
    ))
}

/// The fields of a registration, checked: an id, a position on Earth, addresses that parse,
/// bounded printable texts.
fn registration(r: &pb::RegisterRequest) -> Result<Registration, Status> {
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
    let ipv4 = match r.ipv4.as_str() {
        "" => None,
        s => Some(
            s.parse::<std::net::Ipv4Addr>()
                .map_err(|_| Status::invalid_argument(format!("bad ipv4 {}", truncate(&r.ipv4))))?,
        ),
    };
    let ipv6 = match r.ipv6.as_str() {
        "" => None,
        s => Some(
            s.parse::<std::net::Ipv6Addr>()
                .map_err(|_| Status::invalid_argument(format!("bad ipv6 {}", truncate(&r.ipv6))))?,
        ),
    };
    Ok(Registration {
        probe_id: r.probe_id.clone(),
        pos,
        ipv4,
        ipv6,
        agent_version: r.agent_version.clone(),
    })
}

/// One registration, checked in the order that keeps guessing expensive: the source's rate
/// and the credential first, then the fields.
pub async fn register(
    coord: &Coordinator,
    r: &pb::RegisterRequest,
    peer: Option<std::net::IpAddr>,
) -> Result<pb::RegisterReply, Status> {
    let who = coord
        .admit(peer, &r.credential, &r.probe_id)
        .await
        .map_err(refused)?;
    let reg = registration(r)?;
    coord.check_position(&who, reg.pos).await.map_err(refused)?;
    let done = coord.register(reg).await.map_err(refused)?;
    Ok(pb::RegisterReply {
        session_token: done.session_token,
        heartbeat_interval_ms: done.heartbeat_interval_ms,
        coordinator_version: VERSION.to_string(),
        flagged: done.flagged,
        flag_reason: done.flag_reason,
    })
}

#[tonic::async_trait]
impl ProbeService for ProbeSvc {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let peer = req.remote_addr().map(|a| a.ip());
        register(&self.0, req.get_ref(), peer)
            .await
            .map(Response::new)
    }

    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollReply>, Status> {
        let peer = req.remote_addr().map(|a| a.ip());
        let r = req.get_ref();
        if !self.0.fleet.throttle.attempt(peer) {
            return Err(Status::resource_exhausted(
                "too many registration attempts from this address: retry in a few seconds",
            ));
        }
        if r.enrolment_token.is_empty() || r.enrolment_token.len() > MAX_FIELD_LEN {
            return Err(Status::unauthenticated(
                "enrolment_token empty or longer than 256 bytes",
            ));
        }
        let done = self
            .0
            .enroll(&r.enrolment_token)
            .await
            .map_err(enrol_refused)?;
        Ok(Response::new(pb::EnrollReply {
            probe_id: done.probe_id,
            credential: done.credential,
        }))
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
            .fleet
            .registry
            .check_token(&hello.probe_id, &hello.session_token)
        {
            return Err(Status::unauthenticated(format!(
                "unknown session token for probe {:?}: call Register again",
                truncate(&hello.probe_id)
            )));
        }
        // Revoked by another process since it registered: refused now, not at the next poll.
        if coord.is_revoked(&hello.probe_id).await.map_err(internal)? {
            coord.fleet.registry.end_session(&hello.probe_id);
            return Err(revoked_status(&hello.probe_id));
        }
        let probe_id = hello.probe_id.clone();
        let (tx, rx) = mpsc::channel::<SessionCommand>(SESSION_QUEUE);
        let session_id = coord
            .fleet
            .registry
            .attach(&probe_id, tx)
            .ok_or_else(|| Status::unauthenticated("probe not registered: call Register"))?;
        let ack = pb::CoordinatorMessage {
            kind: Some(pb::coordinator_message::Kind::Ack(pb::Ack {
                probe_id: probe_id.clone(),
                request_id: String::new(),
                message: "session open".into(),
                unix_ms: unix_ms() as u64,
            })),
        };
        // The ack first, then the core's commands as wire messages; a session ended by a
        // revocation ends with UNAUTHENTICATED.
        let end = {
            let coord = Arc::clone(&coord);
            let probe_id = probe_id.clone();
            futures::stream::once(async move {
                coord
                    .revocations
                    .is_revoked(&probe_id)
                    .then(|| revoked_status(&probe_id))
            })
            .filter_map(|s| std::future::ready(s.map(Err)))
        };
        let outbound = futures::stream::once(std::future::ready(Ok::<_, Status>(ack)))
            .chain(ReceiverStream::new(rx).map(|c| Ok(convert::command(c))))
            .chain(end);
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
            // The refresh in flight, if any.
            let mut touching: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(probe = %probe_id, error = %e, "probe session error");
                        break;
                    }
                };
                let now = coord.fleet.registry.seen(&probe_id);
                // The stored last-seen time is refreshed beside the session, never in its
                // way: awaited here, a busy database held up every session's heartbeats and
                // answers at once (their 30 s timers start together), until no probe was
                // fresh and locates failed with "no healthy probe". At most one refresh per
                // session is in flight.
                if last_db_touch.elapsed() > Duration::from_secs(30)
                    && touching.as_ref().is_none_or(|t| t.is_finished())
                {
                    last_db_touch = std::time::Instant::now();
                    let (storage, id) = (coord.storage.clone(), probe_id.clone());
                    touching = Some(tokio::spawn(async move {
                        let _ = storage.touch_probe(&id, now).await;
                    }));
                }
                match msg.kind {
                    Some(pb::probe_message::Kind::Heartbeat(_))
                    | Some(pb::probe_message::Kind::Hello(_))
                    | None => {}
                    Some(pb::probe_message::Kind::MeasurementResult(r)) => {
                        let Some((waiter, req)) =
                            coord
                                .fleet
                                .registry
                                .take_pending(&probe_id, session_id, &r.request_id)
                        else {
                            tracing::debug!(probe = %probe_id, request_id = %truncate(&r.request_id), "late or unknown result dropped");
                            continue;
                        };
                        // The edge: nothing from the answer is stored or solved unless it
                        // is about what was asked and physically possible.
                        let outcome = match validate::answer(&req, &r) {
                            Ok(()) => Outcome::Answer(Box::new(convert::result(&r))),
                            Err(why) => {
                                let n = coord.fleet.registry.count_rejected(&probe_id);
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
                            coord.fleet.registry.deliver(
                                &probe_id,
                                session_id,
                                &e.request_id,
                                Outcome::ProbeError(message),
                            );
                        }
                    }
                }
            }
            coord.fleet.registry.detach(&probe_id, session_id);
            let _ = coord.storage.touch_probe(&probe_id, unix_ms()).await;
            tracing::info!(probe = %probe_id, session_id, "probe session closed");
        });
        Ok(Response::new(Box::pin(outbound)))
    }
}
