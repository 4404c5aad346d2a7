//! Cluster mode (`cluster = true`): several coordinator replicas share one PostgreSQL
//! database. Each replica
//! - writes its heartbeat every [`TICK`] and publishes which probes' sessions it holds;
//! - reads the probes held by the other live replicas into its registry, so a locate it
//!   accepts measures from every probe of the cluster ([`crate::core::registry::RemoteDispatch`]);
//! - asks such a probe by queuing a work item (`NOTIFY geoloc_work`) and waiting for its
//!   answer (`NOTIFY geoloc_done`, with a poll as fallback);
//! - takes the work items of its own probes with a lease (`FOR UPDATE SKIP LOCKED`), has
//!   the probe measure, and stores the answer once;
//! - marks the running results of replicas whose heartbeat stopped [`REPLICA_TTL`] ago as
//!   interrupted and forgets their sessions (their probes reconnect to another replica).
//!
//! A lease runs [`LEASE`]: a request whose replica died while its probe measured is taken
//! again, once its lease expired, by the replica the probe reconnected to, if its origin
//! still waits.
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::{oneshot, Notify};

use crate::core::measurement::{Kinds, MeasurementRequest, MeasurementResult};
use crate::core::registry::{Outcome, RemoteDispatch};
use crate::storage::cluster::{DONE_CHANNEL, WORK_CHANNEL};
use crate::storage::Storage;
use crate::{unix_ms, Coordinator, Result};

/// Heartbeat, session publishing and cluster view period.
pub const TICK: Duration = Duration::from_millis(1000);
/// A replica whose heartbeat is older than this is dead.
pub use crate::storage::cluster::REPLICA_TTL;
/// How long a taken request stays with its replica: a replica that died holding it (its
/// heartbeat stops, its probes reconnect elsewhere) loses it after this, and the replica
/// the probe moved to takes it again if its origin still waits. A live replica never takes
/// its own request again.
pub const LEASE: Duration = Duration::from_secs(8);
/// Keyed runs older than this are not taken over any more (their clients gave up).
pub const JOB_TAKEOVER_WINDOW: Duration = Duration::from_secs(3600);
/// Most keyed runs one replica takes over per sweep.
const TAKEOVER_LIMIT: i64 = 64;
/// How long an answer is tried again while the database does not take it.
const FINISH_RETRY_FOR: Duration = Duration::from_secs(20);
const FINISH_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Work items older than this are deleted.
const WORK_KEEP: Duration = Duration::from_secs(600);
/// Most work items taken at once.
const CLAIM_LIMIT: i64 = 512;
/// Waiting origins look for answers this often even without a notification.
const POLL: Duration = Duration::from_millis(500);

/// Last successful heartbeat, unix ms (0 = never; single node: unused).
static LAST_HEARTBEAT: AtomicI64 = AtomicI64::new(0);
/// Since when every heartbeat reached the database, unix ms (0 = the last one failed).
/// A replica judges others dead only once it has itself been connected for
/// [`REPLICA_TTL`]: after a database outage (a PostgreSQL restart) every heartbeat is old,
/// and the first replica back must not reap the others before they could write theirs.
static STEADY_SINCE: AtomicI64 = AtomicI64::new(0);
static CLUSTER_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this replica is fit to take traffic as far as the cluster goes: always on a
/// single node; in cluster mode, when its heartbeat reached the database within
/// [`REPLICA_TTL`] (a replica cut off from the database cannot see the others' probes).
pub fn healthy() -> bool {
    !CLUSTER_ON.load(Ordering::SeqCst)
        || unix_ms() - LAST_HEARTBEAT.load(Ordering::SeqCst) < REPLICA_TTL.as_millis() as i64
}

/// The id this replica uses: `replica-id`, or a random one.
pub fn choose_replica_id(configured: Option<&str>) -> String {
    match configured {
        Some(id) => id.to_string(),
        None => format!("r-{}", &crate::new_id()[..12]),
    }
}

/// A request as stored in `work_items.request_json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRequest {
    request_id: String,
    target: IpAddr,
    ping: bool,
    tcp: bool,
    traceroute: bool,
    ping_count: u32,
    interval_ms: u32,
    timeout_ms: u64,
    tcp_ports: Vec<u32>,
    max_ttl: u32,
    allow_private: bool,
}

impl From<&MeasurementRequest> for StoredRequest {
    fn from(r: &MeasurementRequest) -> Self {
        StoredRequest {
            request_id: r.request_id.clone(),
            target: r.target,
            ping: r.kinds.ping,
            tcp: r.kinds.tcp,
            traceroute: r.kinds.traceroute,
            ping_count: r.ping_count,
            interval_ms: r.interval_ms,
            timeout_ms: r.timeout.as_millis() as u64,
            tcp_ports: r.tcp_ports.clone(),
            max_ttl: r.max_ttl,
            allow_private: r.allow_private,
        }
    }
}

impl From<StoredRequest> for MeasurementRequest {
    fn from(r: StoredRequest) -> Self {
        MeasurementRequest {
            request_id: r.request_id,
            target: r.target,
            kinds: Kinds {
                ping: r.ping,
                tcp: r.tcp,
                traceroute: r.traceroute,
            },
            ping_count: r.ping_count,
            interval_ms: r.interval_ms,
            timeout: Duration::from_millis(r.timeout_ms),
            tcp_ports: r.tcp_ports,
            max_ttl: r.max_ttl,
            allow_private: r.allow_private,
        }
    }
}

/// An outcome as stored in `work_items.outcome_json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
enum StoredOutcome {
    Answer(Box<MeasurementResult>),
    ProbeError(String),
    Rejected(String),
    Timeout,
    Disconnected,
    NotConnected,
}

impl From<Outcome> for StoredOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Answer(r) => StoredOutcome::Answer(r),
            Outcome::ProbeError(m) => StoredOutcome::ProbeError(m),
            Outcome::Rejected(m) => StoredOutcome::Rejected(m),
            Outcome::Timeout => StoredOutcome::Timeout,
            Outcome::Disconnected => StoredOutcome::Disconnected,
            Outcome::NotConnected => StoredOutcome::NotConnected,
        }
    }
}

impl From<StoredOutcome> for Outcome {
    fn from(o: StoredOutcome) -> Self {
        match o {
            StoredOutcome::Answer(r) => Outcome::Answer(r),
            StoredOutcome::ProbeError(m) => Outcome::ProbeError(m),
            StoredOutcome::Rejected(m) => Outcome::Rejected(m),
            StoredOutcome::Timeout => Outcome::Timeout,
            StoredOutcome::Disconnected => Outcome::Disconnected,
            StoredOutcome::NotConnected => Outcome::NotConnected,
        }
    }
}

fn decode_outcome(json: &str) -> Outcome {
    match serde_json::from_str::<StoredOutcome>(json) {
        Ok(o) => o.into(),
        Err(e) => Outcome::ProbeError(format!("unreadable answer from another replica: {e}")),
    }
}

/// The cluster side of one replica: asking remote probes and answering for local ones.
pub struct Cluster {
    storage: Storage,
    me: String,
    /// Requests this replica waits for, by request id.
    waiters: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// Wakes the worker (a work notification for one of this replica's probes).
    work: Notify,
}

impl Cluster {
    fn waiting(&self) -> Vec<String> {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn deliver(&self, request_id: &str, outcome: Outcome) {
        let tx = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(request_id);
        if let Some(tx) = tx {
            let _ = tx.send(outcome);
        }
    }

    /// Looks up the answers of `ids` and hands them to their waiters.
    async fn collect(&self, ids: &[String]) {
        match self.storage.work_outcomes(ids).await {
            Ok(done) => {
                for (id, json) in done {
                    self.deliver(&id, decode_outcome(&json));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cluster: reading answers"),
        }
    }

    async fn ask(
        self: Arc<Self>,
        probe_id: String,
        req: MeasurementRequest,
        budget: Duration,
    ) -> Outcome {
        let request_id = req.request_id.clone();
        let json = match serde_json::to_string(&StoredRequest::from(&req)) {
            Ok(j) => j,
            Err(e) => return Outcome::ProbeError(format!("cannot queue request: {e}")),
        };
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request_id.clone(), tx);
        let now = unix_ms();
        let deadline = now + budget.as_millis() as i64;
        if let Err(e) = self
            .storage
            .enqueue_work(&request_id, &probe_id, &self.me, &json, deadline, now)
            .await
        {
            self.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&request_id);
            tracing::warn!(error = %e, probe = %probe_id, "cluster: cannot queue a request");
            return Outcome::ProbeError(format!("cannot reach the probe's replica: {e}"));
        }
        let outcome = tokio::time::timeout(budget, rx).await;
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&request_id);
        match outcome {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => Outcome::Disconnected,
            Err(_) => Outcome::Timeout,
        }
    }
}

/// The [`RemoteDispatch`] the registry calls.
struct Dispatch(Arc<Cluster>);

impl RemoteDispatch for Dispatch {
    fn measure(
        &self,
        probe_id: &str,
        req: MeasurementRequest,
        budget: Duration,
    ) -> BoxFuture<'static, Outcome> {
        Box::pin(Arc::clone(&self.0).ask(probe_id.to_string(), req, budget))
    }
}

/// Joins the cluster: installs the remote dispatch in `coord`'s registry and starts the
/// heartbeat/view, notification and worker tasks until `stop`. The first heartbeat and
/// view are written before it returns (a replica is visible once it listens).
pub async fn start(
    coord: Arc<Coordinator>,
    stop: geoloc_rt::CancellationToken,
) -> Result<Arc<Cluster>> {
    let me = crate::storage::cluster::replica_id().to_string();
    let cluster = Arc::new(Cluster {
        storage: coord.storage.clone(),
        me: me.clone(),
        waiters: Mutex::new(HashMap::new()),
        work: Notify::new(),
    });
    coord
        .fleet
        .registry
        .set_remote_dispatch(Arc::new(Dispatch(Arc::clone(&cluster))));
    CLUSTER_ON.store(true, Ordering::SeqCst);
    let started = unix_ms();
    let mut published: HashSet<String> = HashSet::new();
    view_tick(&coord, &cluster, started, &mut published, true).await?;
    let listener = PgListener::connect_with(&coord.storage.pg_pool()?)
        .await
        .map_err(crate::error::q("cluster listen"))?;
    tokio::spawn(view_loop(
        Arc::clone(&coord),
        Arc::clone(&cluster),
        started,
        published,
        stop.clone(),
    ));
    tokio::spawn(listen_loop(
        Arc::clone(&coord),
        Arc::clone(&cluster),
        listener,
        stop.clone(),
    ));
    tokio::spawn(work_loop(
        Arc::clone(&coord),
        Arc::clone(&cluster),
        stop.clone(),
    ));
    tokio::spawn(poll_loop(Arc::clone(&cluster), stop));
    tracing::info!(replica = %me, "cluster mode: replica joined");
    Ok(cluster)
}

/// One heartbeat: write it, publish session changes, read the other replicas' probes,
/// and (when `reap`) take over dead replicas and prune old work.
async fn view_tick(
    coord: &Arc<Coordinator>,
    cluster: &Cluster,
    started: i64,
    published: &mut HashSet<String>,
    reap: bool,
) -> Result<()> {
    let s = &coord.storage;
    let now = unix_ms();
    if let Err(e) = s.replica_heartbeat(&cluster.me, started, now).await {
        STEADY_SINCE.store(0, Ordering::SeqCst);
        return Err(e);
    }
    LAST_HEARTBEAT.store(now, Ordering::SeqCst);
    let _ = STEADY_SINCE.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    let local: HashSet<String> = coord.fleet.registry.local_sessions().into_iter().collect();
    // Every few seconds all sessions are written again: a probe that left for another
    // replica and came back between two ticks is claimed back from the row the other
    // replica wrote (and then deleted when it lost the probe).
    let add: Vec<String> = if reap {
        local.iter().cloned().collect()
    } else {
        local.difference(published).cloned().collect()
    };
    let remove: Vec<String> = published.difference(&local).cloned().collect();
    if !add.is_empty() || !remove.is_empty() {
        s.publish_sessions(&cluster.me, &add, &remove, now).await?;
        *published = local;
    }
    let alive_after = now - REPLICA_TTL.as_millis() as i64;
    let steady = now - STEADY_SINCE.load(Ordering::SeqCst) >= REPLICA_TTL.as_millis() as i64;
    if reap && steady {
        let dead = s.reap_replicas(alive_after, now).await?;
        if !dead.is_empty() {
            tracing::warn!(replicas = ?dead, "cluster: replicas stopped heartbeating; their runs marked interrupted, their probes forgotten");
        }
        s.prune_work(now - WORK_KEEP.as_millis() as i64).await?;
        take_over_jobs(coord, now, alive_after).await?;
    }
    let remote = s.remote_probes(&cluster.me, alive_after).await?;
    coord.fleet.registry.set_remote(remote);
    Ok(())
}

/// Takes over keyed runs nobody finishes (their replica died, or stopped while running
/// them) and runs each again in its own task (see `core::jobs`): no locate is lost, and
/// its client, asking again with its key on any replica, gets the answer.
async fn take_over_jobs(coord: &Arc<Coordinator>, now: i64, alive_after: i64) -> Result<()> {
    if coord.is_shutting_down() {
        return Ok(());
    }
    let since = now - JOB_TAKEOVER_WINDOW.as_millis() as i64;
    let jobs = coord
        .storage
        .claim_orphan_jobs(alive_after, since, TAKEOVER_LIMIT)
        .await?;
    for job in jobs {
        let coord = Arc::clone(coord);
        tokio::spawn(async move {
            let quiet = |_: crate::core::locate::LocateEvent| {};
            match crate::core::jobs::resume(&coord, &job, &quiet).await {
                Ok(l) => {
                    tracing::info!(result_id = %l.result_id, ip = %l.ip, "cluster: finished a run taken over")
                }
                Err(f) => {
                    tracing::info!(result_id = %job.row.result_id, code = f.code.as_str(), reason = %f.message, "cluster: a run taken over ended without an answer")
                }
            }
        });
    }
    Ok(())
}

async fn view_loop(
    coord: Arc<Coordinator>,
    cluster: Arc<Cluster>,
    started: i64,
    mut published: HashSet<String>,
    stop: geoloc_rt::CancellationToken,
) {
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        n += 1;
        if let Err(e) = view_tick(
            &coord,
            &cluster,
            started,
            &mut published,
            n.is_multiple_of(5),
        )
        .await
        {
            tracing::warn!(error = %e, "cluster: heartbeat");
        }
    }
}

/// Reacts to notifications: work for a local probe wakes the worker; an answer this
/// replica waits for is collected. Reconnects after a lost connection.
async fn listen_loop(
    coord: Arc<Coordinator>,
    cluster: Arc<Cluster>,
    mut listener: PgListener,
    stop: geoloc_rt::CancellationToken,
) {
    loop {
        if let Err(e) = listener.listen_all([WORK_CHANNEL, DONE_CHANNEL]).await {
            tracing::warn!(error = %e, "cluster: LISTEN");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TICK) => continue,
            }
        }
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => return,
                n = listener.recv() => n,
            };
            match n {
                Ok(n) if n.channel() == WORK_CHANNEL => {
                    if coord.fleet.registry.remote_holder(n.payload()).is_none() {
                        cluster.work.notify_one();
                    }
                }
                Ok(n) if n.channel() == DONE_CHANNEL => {
                    let id = n.payload().to_string();
                    let waits = cluster
                        .waiters
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains_key(&id);
                    if waits {
                        cluster.collect(&[id]).await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: notifications lost; listening again");
                    // Answers that arrived meanwhile are found by the poll.
                    cluster.work.notify_one();
                    break;
                }
            }
        }
    }
}

/// Answers missed by the notifications (a reconnect) are found here.
async fn poll_loop(cluster: Arc<Cluster>, stop: geoloc_rt::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let ids = cluster.waiting();
        if !ids.is_empty() {
            cluster.collect(&ids).await;
        }
    }
}

/// Takes the work items of this replica's probes (on a notification, and every [`TICK`]
/// for expired leases and missed notifications) and answers each in its own task.
async fn work_loop(
    coord: Arc<Coordinator>,
    cluster: Arc<Cluster>,
    stop: geoloc_rt::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = cluster.work.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        let probes = coord.fleet.registry.local_sessions();
        if probes.is_empty() {
            continue;
        }
        let now = unix_ms();
        let claimed = match cluster
            .storage
            .claim_work(
                &cluster.me,
                &probes,
                now,
                LEASE.as_millis() as i64,
                CLAIM_LIMIT,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: taking work");
                continue;
            }
        };
        if claimed.len() as i64 == CLAIM_LIMIT {
            cluster.work.notify_one();
        }
        for item in claimed {
            let coord = Arc::clone(&coord);
            let cluster = Arc::clone(&cluster);
            tokio::spawn(async move {
                let outcome = match serde_json::from_str::<StoredRequest>(&item.request_json) {
                    Ok(req) => {
                        let left = (item.deadline_unix_ms - unix_ms()).max(0) as u64;
                        let req = MeasurementRequest::from(req);
                        if req.request_id != item.request_id {
                            Outcome::ProbeError("stored request id does not match".into())
                        } else {
                            coord
                                .fleet
                                .registry
                                .measure_local(&item.probe_id, req, Duration::from_millis(left))
                                .await
                        }
                    }
                    Err(e) => Outcome::ProbeError(format!("unreadable stored request: {e}")),
                };
                if matches!(outcome, Outcome::NotConnected | Outcome::Disconnected) {
                    // The probe left this replica meanwhile: its new replica takes the
                    // request once the lease expires, if the origin still waits.
                    return;
                }
                let json = match serde_json::to_string(&StoredOutcome::from(outcome)) {
                    Ok(j) => j,
                    Err(e) => {
                        tracing::error!(error = %e, "cluster: cannot store an answer");
                        return;
                    }
                };
                // The answer is kept while the database is away (a restart): tried again
                // for up to FINISH_RETRY_FOR, or it would be lost with the probe's work.
                let give_up = tokio::time::Instant::now() + FINISH_RETRY_FOR;
                while let Err(e) = cluster
                    .storage
                    .finish_work(&cluster.me, &item.request_id, &json, unix_ms())
                    .await
                {
                    if tokio::time::Instant::now() >= give_up {
                        tracing::warn!(error = %e, request = %item.request_id, "cluster: storing an answer; given up");
                        break;
                    }
                    tracing::warn!(error = %e, request = %item.request_id, "cluster: storing an answer; trying again");
                    tokio::time::sleep(FINISH_RETRY_PAUSE).await;
                }
            });
        }
    }
}
