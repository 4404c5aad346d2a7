//! Probe registry: who is registered, who has a live session, liveness from heartbeats, and
//! the request/answer plumbing over each probe's session. A session is a channel of
//! [`SessionCommand`]s (domain values); the gRPC adapter turns them into wire messages.
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::core::measurement::{MeasurementRequest, MeasurementResult};
use crate::core::rows::ProbeRow;
use crate::core::source::VantagePoint;
use crate::unix_ms;

/// What the coordinator tells a probe over its session.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    /// Measure this.
    Measure(MeasurementRequest),
    /// Stop working on `request_id` (nobody waits for it any more).
    Cancel { request_id: String, reason: String },
}

/// Commands sent down a probe's session.
pub type Outbound = mpsc::Sender<SessionCommand>;

/// What came back for one measurement request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// An answer that passed the checks at the edge.
    Answer(Box<MeasurementResult>),
    /// The probe reported it could not carry out the request.
    ProbeError(String),
    /// The answer failed the checks at the edge (`crate::grpc::validate`): counted as the probe's
    /// error, nothing of it is stored or solved.
    Rejected(String),
    /// No answer within the budget.
    Timeout,
    /// The session ended before the answer came.
    Disconnected,
    /// The probe has no open session.
    NotConnected,
}

/// Snapshot of one probe: its stored record plus its live state. Reads of the record's
/// fields go through `Deref` (`snapshot.probe_id`, `snapshot.lat`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSnapshot {
    /// The record as stored (position, addresses, flag, last seen).
    pub row: ProbeRow,
    /// An open session.
    pub connected: bool,
    /// Connected, heartbeating and not flagged: usable for locating.
    pub healthy: bool,
}

impl ProbeSnapshot {
    /// This probe as a place to measure from.
    pub fn vantage_point(&self) -> VantagePoint {
        VantagePoint {
            id: self.row.probe_id.clone(),
            pos: self.row.pos(),
        }
    }
}

impl std::ops::Deref for ProbeSnapshot {
    type Target = ProbeRow;
    fn deref(&self) -> &ProbeRow {
        &self.row
    }
}

struct Session {
    id: u64,
    tx: Outbound,
    /// Waiting requests: who waits, and the request (answers are checked against it).
    pending: HashMap<String, (oneshot::Sender<Outcome>, MeasurementRequest)>,
}

/// Asks a probe whose session another cluster replica holds (cluster mode; implemented
/// outside the core, on the shared database).
pub trait RemoteDispatch: Send + Sync {
    /// Has the replica holding `probe_id` send `req` to it; waits at most `budget`.
    fn measure(
        &self,
        probe_id: &str,
        req: MeasurementRequest,
        budget: Duration,
    ) -> futures::future::BoxFuture<'static, Outcome>;
}

/// A probe whose session another replica holds, as last read from the shared database.
struct Remote {
    replica_id: String,
    /// When the cluster view last saw it there.
    seen: Instant,
}

/// A remote probe not seen again by the cluster view for this long is no longer healthy.
const REMOTE_FRESH: Duration = Duration::from_secs(5);

struct ProbeState {
    row: ProbeRow,
    token: Option<String>,
    session: Option<Session>,
    /// Held by another replica (cluster mode); a local session takes precedence.
    remote: Option<Remote>,
    last_seen: Option<Instant>,
    /// Answers rejected at the edge since this process started.
    rejected: u64,
}

impl ProbeState {
    /// A probe known from its record only: no token, no session, never seen by this process.
    fn new(row: ProbeRow) -> ProbeState {
        ProbeState {
            row,
            token: None,
            session: None,
            remote: None,
            last_seen: None,
            rejected: 0,
        }
    }
}

struct Inner {
    probes: BTreeMap<String, ProbeState>,
    next_session: u64,
}

/// The registry. Locks are held only for map updates, never across an await.
pub struct Registry {
    inner: std::sync::Mutex<Inner>,
    heartbeat_interval: Duration,
    /// How probes held by other replicas are asked (cluster mode only).
    remote: std::sync::OnceLock<std::sync::Arc<dyn RemoteDispatch>>,
}

impl Registry {
    pub fn new(heartbeat_interval: Duration) -> Registry {
        Registry {
            inner: std::sync::Mutex::new(Inner {
                probes: BTreeMap::new(),
                next_session: 1,
            }),
            heartbeat_interval,
            remote: std::sync::OnceLock::new(),
        }
    }

    /// Installs the cluster's way of asking probes held by other replicas (once).
    pub fn set_remote_dispatch(&self, d: std::sync::Arc<dyn RemoteDispatch>) {
        let _ = self.remote.set(d);
    }

    /// Replaces the cluster view: `remote` are the probes (with their record as stored)
    /// whose session another live replica holds. Probes with a local session keep it.
    pub fn set_remote(&self, remote: Vec<(ProbeRow, String)>) {
        let now = Instant::now();
        let mut g = self.lock();
        let mut seen = std::collections::HashSet::new();
        for (row, replica_id) in remote {
            seen.insert(row.probe_id.clone());
            let e = g
                .probes
                .entry(row.probe_id.clone())
                .or_insert_with(|| ProbeState::new(row.clone()));
            if e.session.is_none() {
                e.row = row;
            }
            e.remote = Some(Remote {
                replica_id,
                seen: now,
            });
        }
        for (id, p) in g.probes.iter_mut() {
            if !seen.contains(id) {
                p.remote = None;
            }
        }
    }

    /// Ids of the probes whose session this process holds and that are live (connected,
    /// heartbeating).
    pub fn local_sessions(&self) -> Vec<String> {
        let g = self.lock();
        g.probes
            .iter()
            .filter(|(_, p)| {
                p.session.is_some()
                    && p.last_seen
                        .is_some_and(|t| t.elapsed() < self.heartbeat_interval * 3)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The replica holding `probe_id`'s session, when another one does.
    pub fn remote_holder(&self, probe_id: &str) -> Option<String> {
        let g = self.lock();
        g.probes
            .get(probe_id)
            .filter(|p| p.session.is_none())
            .and_then(|p| p.remote.as_ref())
            .map(|r| r.replica_id.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds probes known from the database (not connected).
    pub fn load(&self, rows: Vec<ProbeRow>) {
        let mut g = self.lock();
        for row in rows {
            g.probes
                .entry(row.probe_id.clone())
                .or_insert_with(|| ProbeState::new(row));
        }
    }

    /// Records a registration and its session token (an open session stays open).
    pub fn register(&self, row: ProbeRow, token: String) {
        let mut g = self.lock();
        let e = g
            .probes
            .entry(row.probe_id.clone())
            .or_insert_with(|| ProbeState::new(row.clone()));
        e.row = row;
        e.token = Some(token);
        e.last_seen = Some(Instant::now());
    }

    /// The probe id whose current token is `token`, if `probe_id` matches it.
    pub fn check_token(&self, probe_id: &str, token: &str) -> bool {
        let g = self.lock();
        g.probes.get(probe_id).and_then(|p| p.token.as_deref()) == Some(token)
    }

    /// Opens a session for a probe (replacing any previous one, whose pending requests then
    /// fail as disconnected). Returns the session id.
    pub fn attach(&self, probe_id: &str, tx: Outbound) -> Option<u64> {
        let mut g = self.lock();
        let id = g.next_session;
        g.next_session += 1;
        let p = g.probes.get_mut(probe_id)?;
        p.session = Some(Session {
            id,
            tx,
            pending: HashMap::new(),
        });
        p.last_seen = Some(Instant::now());
        p.row.last_seen_unix_ms = unix_ms();
        Some(id)
    }

    /// Closes a session if it is still the current one.
    pub fn detach(&self, probe_id: &str, session_id: u64) {
        let mut g = self.lock();
        if let Some(p) = g.probes.get_mut(probe_id) {
            if p.session.as_ref().is_some_and(|s| s.id == session_id) {
                p.session = None;
            }
        }
    }

    /// Ends the probe's session and forgets its session token (revocation); pending
    /// requests fail as disconnected. True if a session was open.
    pub fn end_session(&self, probe_id: &str) -> bool {
        let mut g = self.lock();
        match g.probes.get_mut(probe_id) {
            Some(p) => {
                p.token = None;
                p.session.take().is_some()
            }
            None => false,
        }
    }

    /// Ends every session (shutdown); pending requests fail as disconnected.
    pub fn close_all(&self) {
        let mut g = self.lock();
        for p in g.probes.values_mut() {
            p.session = None;
        }
    }

    /// Notes that a message arrived from the probe.
    pub fn seen(&self, probe_id: &str) -> i64 {
        let now = unix_ms();
        let mut g = self.lock();
        if let Some(p) = g.probes.get_mut(probe_id) {
            p.last_seen = Some(Instant::now());
            p.row.last_seen_unix_ms = now;
        }
        now
    }

    /// Hands an answer to whoever waits for `request_id`. False if nobody waits (late,
    /// cancelled or unknown).
    pub fn deliver(
        &self,
        probe_id: &str,
        session_id: u64,
        request_id: &str,
        outcome: Outcome,
    ) -> bool {
        self.take_pending(probe_id, session_id, request_id)
            .is_some_and(|(tx, _)| tx.send(outcome).is_ok())
    }

    /// Removes the waiting request `request_id` of the session and returns who waits for it
    /// and the request itself (to check the answer against). None if nobody waits.
    pub fn take_pending(
        &self,
        probe_id: &str,
        session_id: u64,
        request_id: &str,
    ) -> Option<(oneshot::Sender<Outcome>, MeasurementRequest)> {
        let mut g = self.lock();
        g.probes
            .get_mut(probe_id)
            .and_then(|p| p.session.as_mut())
            .filter(|s| s.id == session_id)
            .and_then(|s| s.pending.remove(request_id))
    }

    /// Counts an answer of `probe_id` rejected at the edge; returns its count so far.
    pub fn count_rejected(&self, probe_id: &str) -> u64 {
        let mut g = self.lock();
        g.probes.get_mut(probe_id).map_or(0, |p| {
            p.rejected += 1;
            p.rejected
        })
    }

    /// Answers of `probe_id` rejected at the edge since this process started.
    pub fn rejected(&self, probe_id: &str) -> u64 {
        self.lock().probes.get(probe_id).map_or(0, |p| p.rejected)
    }

    pub fn set_flag(
        &self,
        probe_id: &str,
        flagged: bool,
        reason: &str,
        epoch_unix_ms: Option<i64>,
    ) {
        let mut g = self.lock();
        if let Some(p) = g.probes.get_mut(probe_id) {
            p.row.flagged = flagged;
            p.row.flag_reason = reason.to_string();
            if let Some(e) = epoch_unix_ms {
                p.row.flag_epoch_unix_ms = e;
            }
        }
    }

    fn snapshot_of(&self, p: &ProbeState) -> ProbeSnapshot {
        let remote_fresh = p.session.is_none()
            && self.remote.get().is_some()
            && p.remote
                .as_ref()
                .is_some_and(|r| r.seen.elapsed() < REMOTE_FRESH);
        let connected = p.session.is_some() || remote_fresh;
        let fresh = remote_fresh
            || p.last_seen
                .is_some_and(|t| t.elapsed() < self.heartbeat_interval * 3);
        ProbeSnapshot {
            row: p.row.clone(),
            connected,
            healthy: connected && fresh && !p.row.flagged,
        }
    }

    /// Number of known probes.
    pub fn len(&self) -> usize {
        self.lock().probes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every known probe, by id.
    pub fn snapshot(&self) -> Vec<ProbeSnapshot> {
        let g = self.lock();
        g.probes.values().map(|p| self.snapshot_of(p)).collect()
    }

    pub fn get(&self, probe_id: &str) -> Option<ProbeSnapshot> {
        let g = self.lock();
        g.probes.get(probe_id).map(|p| self.snapshot_of(p))
    }

    /// Probes that can measure now: connected, heartbeating, not flagged.
    pub fn healthy(&self) -> Vec<ProbeSnapshot> {
        self.snapshot().into_iter().filter(|p| p.healthy).collect()
    }

    /// Probes with an open session and fresh heartbeats, flagged or not (landmark checks
    /// still use flagged probes).
    pub fn live(&self) -> Vec<ProbeSnapshot> {
        self.snapshot()
            .into_iter()
            .filter(|p| p.connected && (p.healthy || p.flagged))
            .collect()
    }

    /// Sends `req` to the probe and waits at most `budget` for its answer; on timeout the
    /// probe is told to cancel. A probe whose session another cluster replica holds is
    /// asked through that replica.
    pub async fn measure(
        &self,
        probe_id: &str,
        req: MeasurementRequest,
        budget: Duration,
    ) -> Outcome {
        let remote = {
            let g = self.lock();
            g.probes
                .get(probe_id)
                .filter(|p| p.session.is_none() && p.remote.is_some())
                .and_then(|_| self.remote.get().cloned())
        };
        match remote {
            Some(d) => d.measure(probe_id, req, budget).await,
            None => self.measure_local(probe_id, req, budget).await,
        }
    }

    /// [`Registry::measure`] over this process's own session only (NotConnected without).
    pub async fn measure_local(
        &self,
        probe_id: &str,
        req: MeasurementRequest,
        budget: Duration,
    ) -> Outcome {
        let request_id = req.request_id.clone();
        let (otx, orx) = oneshot::channel();
        let (tx, session_id) = {
            let mut g = self.lock();
            let Some(s) = g.probes.get_mut(probe_id).and_then(|p| p.session.as_mut()) else {
                return Outcome::NotConnected;
            };
            s.pending.insert(request_id.clone(), (otx, req.clone()));
            (s.tx.clone(), s.id)
        };
        let deadline = tokio::time::Instant::now() + budget;
        match tokio::time::timeout_at(deadline, tx.send(SessionCommand::Measure(req))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                self.forget(probe_id, session_id, &request_id);
                return Outcome::Disconnected;
            }
            Err(_) => {
                self.forget(probe_id, session_id, &request_id);
                return Outcome::Timeout;
            }
        }
        match tokio::time::timeout_at(deadline, orx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Disconnected,
            Err(_) => {
                self.forget(probe_id, session_id, &request_id);
                let _ = tx.try_send(SessionCommand::Cancel {
                    request_id,
                    reason: format!("no answer within {} ms", budget.as_millis()),
                });
                Outcome::Timeout
            }
        }
    }

    fn forget(&self, probe_id: &str, session_id: u64, request_id: &str) {
        let mut g = self.lock();
        if let Some(s) = g
            .probes
            .get_mut(probe_id)
            .and_then(|p| p.session.as_mut())
            .filter(|s| s.id == session_id)
        {
            s.pending.remove(request_id);
        }
    }
}
