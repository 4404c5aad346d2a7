//! `LocateService`: what clients call. Converts requests to [`crate::core::locate::LocateParams`], runs the
//! core's locate jobs, and streams their events and results back as wire messages.
use std::collections::HashMap;
use std::sync::Arc;

use geoloc_proto::v1 as pb;
use pb::locate_service_server::LocateService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{convert, internal, invalid, truncate, BoxStream};
use crate::core::access::{AuthError, Caller, Scope};
use crate::core::locate::{FailureCode, LocateEvent, LocateFailure, Located};
use crate::core::rows::ResultStatus;
use crate::core::target;
use crate::storage::{HistoryCursor, ResultSummary};
use crate::Coordinator;

/// Most addresses in one LocateBatch.
pub const MAX_BATCH: usize = 100_000;
/// An open batch checks its key again before a new address at most this often.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(200);

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
        pb::locate_event::Event::Error(convert::locate_error(f)),
    )
}

/// A located address as a result event (an internal error if it does not convert).
fn result_event(ip: &str, index: u32, l: &Located) -> pb::LocateEvent {
    match convert::located(l) {
        Ok(r) => event(ip, index, pb::locate_event::Event::Result(r)),
        Err(e) => {
            tracing::error!(error = %e, "a result did not convert to its wire form");
            failure_event(ip, index, LocateFailure::from(e))
        }
    }
}

/// The status of a refused call: UNAUTHENTICATED (no, unknown or revoked key) or
/// PERMISSION_DENIED (missing scope).
pub(crate) fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Forbidden { .. } => Status::permission_denied(e.to_string()),
        AuthError::Store(_) => {
            tracing::error!(error = %e, "internal error");
            Status::internal(e.to_string())
        }
        _ => Status::unauthenticated(e.to_string()),
    }
}

/// RESOURCE_EXHAUSTED with the code `quota-exceeded` in the `geoloc-error-code` metadata.
fn exhausted(message: impl Into<String>) -> Status {
    let mut s = Status::resource_exhausted(message);
    s.metadata_mut().insert(
        "geoloc-error-code",
        tonic::metadata::MetadataValue::from_static("quota-exceeded"),
    );
    s
}

/// `s` with `code` (`no-probes`, `no-answer`) in the `geoloc-error-code` metadata.
fn coded(mut s: Status, code: FailureCode) -> Status {
    s.metadata_mut().insert(
        "geoloc-error-code",
        tonic::metadata::MetadataValue::from_static(code.as_str()),
    );
    s
}

impl LocateSvc {
    /// Who makes the call `req`, if allowed to do what needs `needed`.
    async fn caller<T>(&self, req: &Request<T>, needed: Scope) -> Result<Caller, Status> {
        let auth = match req.metadata().get("authorization") {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| auth_status(AuthError::Malformed))?),
        };
        let caller = self
            .0
            .access
            .authorize(&self.0.storage, auth, needed)
            .await
            .map_err(auth_status)?;
        Ok(caller)
    }
}

#[tonic::async_trait]
impl LocateService for LocateSvc {
    type LocateStream = BoxStream<pb::LocateEvent>;

    async fn locate(
        &self,
        req: Request<pb::LocateRequest>,
    ) -> Result<Response<Self::LocateStream>, Status> {
        let caller = self.caller(&req, Scope::Locate).await?;
        let r = req.into_inner();
        let mut params = convert::params(&r);
        params.caller = caller;
        if let Some(k) = &params.job_key {
            crate::core::jobs::check_key(k).map_err(Status::invalid_argument)?;
        }
        super::locate_args::apply(&self.0, &mut params, r.source, r.budget)?;
        // Bad input fails the call itself.
        target::check(&r.ip, self.0.config.allow_private)
            .map_err(|e| invalid(e.code, e.message))?;
        let (tx, rx) = mpsc::channel(64);
        let coord = Arc::clone(&self.0);
        tokio::spawn(async move {
            let ip = r.ip.clone();
            let ptx = tx.clone();
            let pip = ip.clone();
            let progress = move |e: LocateEvent| {
                if let Some(p) = convert::event(e) {
                    let _ = ptx.try_send(Ok(event(&pip, 0, pb::locate_event::Event::Progress(p))));
                }
            };
            let ev = match coord.locate(params, &progress).await {
                Ok(res) => result_event(&ip, 0, &res),
                Err(f) if f.is_invalid_input() => {
                    let _ = tx.send(Err(invalid(f.code.as_str(), f.message))).await;
                    return;
                }
                Err(f) if f.is_interrupted() => {
                    let _ = tx.send(Err(Status::unavailable(f.message))).await;
                    return;
                }
                Err(f) if f.code == FailureCode::QuotaExceeded => {
                    let _ = tx.send(Err(exhausted(f.message))).await;
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
        let caller = self.caller(&req, Scope::Locate).await?;
        let mut r = req.into_inner();
        if r.ips.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} addresses in one batch (at most {MAX_BATCH})",
                r.ips.len()
            )));
        }
        check_job_keys(&r.job_keys, r.ips.len())?;
        // Source and budget checked once for the whole batch.
        super::locate_args::apply(
            &self.0,
            &mut crate::core::locate::LocateParams {
                mode: convert::mode_from_pb(r.mode),
                ..Default::default()
            },
            r.source,
            r.budget,
        )?;
        let coord = Arc::clone(&self.0);
        let concurrency = if r.concurrency == 0 {
            coord.config.batch_concurrency
        } else {
            r.concurrency.min(256)
        } as usize;
        // A batch alone never exceeds its key's concurrent quota.
        let concurrency = match caller.quotas {
            Some(q) => concurrency.min(q.concurrent.max(1) as usize),
            None => concurrency,
        };
        let (tx, rx) = mpsc::channel(256);
        // Shared by every address's task (a copy per address made a batch quadratic).
        let ips: Arc<Vec<String>> = Arc::new(std::mem::take(&mut r.ips));
        let job_keys = std::mem::take(&mut r.job_keys);
        tokio::spawn(async move {
            // Same address twice in a batch: measured once, answered for each index.
            let mut groups: HashMap<String, Vec<u32>> = HashMap::new();
            let mut order: Vec<String> = Vec::new();
            for (i, ip) in ips.iter().enumerate() {
                let key = match target::check(ip, coord.config.allow_private) {
                    Ok(a) => target::canonical(a),
                    Err(e) => {
                        let f = LocateFailure::refused(e);
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
            let mut checked: Option<std::time::Instant> = None;
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
                // A key revoked while the batch runs: no new address is started (checked
                // again at most every RECHECK, so a 100k batch is not 100k key reads).
                if checked.is_none_or(|t| t.elapsed() >= RECHECK) {
                    if let Err(e) = coord.access.recheck(&coord.storage, &caller).await {
                        let _ = tx.send(Err(auth_status(e))).await;
                        break;
                    }
                    checked = Some(std::time::Instant::now());
                }
                let coord = Arc::clone(&coord);
                let tx = tx.clone();
                let ips = Arc::clone(&ips);
                let mut params = convert::batch_params(&r, key.clone());
                params.caller = caller.clone();
                // The same address twice is measured once, under its first index's key.
                params.job_key = job_keys.get(indices[0] as usize).cloned();
                if let Err(s) = super::locate_args::apply(&coord, &mut params, r.source, r.budget) {
                    // Checked above; cannot fail here.
                    tracing::error!(error = %s.message(), "batch parameters");
                }
                set.spawn(async move {
                    let _permit = permit;
                    let first = indices[0];
                    let ptx = tx.clone();
                    let pip = ips[first as usize].clone();
                    let progress = move |e: LocateEvent| {
                        if let Some(p) = convert::event(e) {
                            let _ = ptx.try_send(Ok(event(
                                &pip,
                                first,
                                pb::locate_event::Event::Progress(p),
                            )));
                        }
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
                            Ok(res) => result_event(ip, i, res),
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
        self.caller(&req, Scope::Read).await?;
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
            Some(row) if row.status == ResultStatus::Done => {
                let stored = self.0.stored(&row).await.map_err(internal)?;
                let result = convert::located(&stored).map_err(internal)?;
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
        req: Request<pb::ListProbesRequest>,
    ) -> Result<Response<pb::ListProbesReply>, Status> {
        self.caller(&req, Scope::Read).await?;
        let probes = self
            .0
            .fleet
            .registry
            .snapshot()
            .into_iter()
            .map(convert::probe_info)
            .collect();
        Ok(Response::new(pb::ListProbesReply { probes }))
    }

    async fn list_results(
        &self,
        req: Request<pb::ListResultsRequest>,
    ) -> Result<Response<pb::ListResultsReply>, Status> {
        self.caller(&req, Scope::Read).await?;
        let r = req.into_inner();
        let ip = if r.ip.trim().is_empty() {
            None
        } else {
            let a = target::check(r.ip.trim(), true)
                .map_err(|e| invalid(e.code, format!("ip: {}", e.message)))?;
            Some(target::canonical(a))
        };
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(HistoryCursor::parse(&r.page_token).map_err(|e| invalid("invalid-argument", e))?)
        };
        let (rows, next) = self
            .0
            .storage
            .list_results(ip.as_deref(), r.limit, after.as_ref())
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListResultsReply {
            results: rows.into_iter().map(summary).collect(),
            next_page_token: next.map(|c| c.to_token()).unwrap_or_default(),
        }))
    }

    async fn trace(
        &self,
        req: Request<pb::TraceRequest>,
    ) -> Result<Response<pb::TraceReply>, Status> {
        let caller = self.caller(&req, Scope::Locate).await?;
        let mut params = convert::trace_params(req.get_ref());
        params.caller = caller;
        match self.0.trace(params).await {
            Ok(t) => Ok(Response::new(convert::traced(&t))),
            Err(f) if f.is_invalid_input() => Err(invalid(f.code.as_str(), f.message)),
            Err(f) if f.is_interrupted() => Err(Status::unavailable(f.message)),
            Err(f) => Err(match f.code {
                FailureCode::QuotaExceeded => exhausted(f.message),
                FailureCode::NoProbes => coded(Status::failed_precondition(f.message), f.code),
                FailureCode::NoAnswer => coded(Status::unavailable(f.message), f.code),
                _ => {
                    tracing::error!(error = %f.message, "trace failed");
                    Status::internal(f.message)
                }
            }),
        }
    }

    async fn clear_flag(
        &self,
        req: Request<pb::ClearFlagRequest>,
    ) -> Result<Response<pb::ClearFlagReply>, Status> {
        let caller = self.caller(&req, Scope::Admin).await?;
        let id = req.into_inner().probe_id;
        tracing::info!(key = %caller.name, probe = %truncate(&id), "clear flag asked");
        match self.0.clear_flag(&id).await.map_err(internal)? {
            Some(was_flagged) => Ok(Response::new(pb::ClearFlagReply { was_flagged })),
            None => Err(Status::not_found(format!(
                "unknown probe {:?}",
                truncate(&id)
            ))),
        }
    }
}

/// A listed result on the wire.
fn summary(r: ResultSummary) -> pb::ResultSummary {
    pb::ResultSummary {
        result_id: r.result_id,
        ip: r.ip,
        status: r.status.as_str().to_string(),
        created_at_unix_ms: r.created_at_unix_ms,
        estimate: r.estimate.map(|(lat, lon)| pb::LatLon { lat, lon }),
        radius_km: r.radius_km,
        country: r.country,
        city: r.city,
        error_code: r.error_code,
        error: r.error,
    }
}

/// A batch's idempotency keys: none, or one valid key per address, all different.
fn check_job_keys(keys: &[String], addresses: usize) -> Result<(), Status> {
    if keys.is_empty() {
        return Ok(());
    }
    if keys.len() != addresses {
        return Err(Status::invalid_argument(format!(
            "{} job keys for {addresses} addresses: give none or one per address",
            keys.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        crate::core::jobs::check_key(k)
            .map_err(|m| Status::invalid_argument(format!("job_keys[{i}]: {m}")))?;
        if !seen.insert(k.as_str()) {
            return Err(Status::invalid_argument(format!(
                "job_keys[{i}] {k:?} is given twice"
            )));
        }
    }
    Ok(())
}
