//! The simulated clients: locates at a steady rate, each its own `Locate` call, and an
//! audit as one `LocateBatch`, through the coordinator's real client API. Every address is
//! announced to the probes (position, locate start) before its call is sent.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoloc_proto::v1 as pb;
use pb::locate_service_client::LocateServiceClient;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

use crate::delay::{Role, World};
use crate::error::{Error, Result};
use crate::fleet::{target_ip, Shared, Target};
use crate::report::AuditAnswers;

/// Locates in flight at a time; when all are busy the next waits (the achieved rate is
/// reported, not the asked one).
pub const MAX_IN_FLIGHT: usize = 1024;

/// What one locate or the audit's addresses ended as.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub asked: u64,
    pub answered: u64,
    /// Ended with an error event or a failed call.
    pub failed: u64,
    /// Probe RTTs in the answers (`LocateResult.probe_rtts`).
    pub probe_answers: u64,
    /// Start to result of each answered address, ms.
    pub latency_ms: Vec<f64>,
    /// First few failure messages.
    pub errors: Vec<String>,
    /// First start to last end.
    pub wall: Duration,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.asked += o.asked;
        self.answered += o.answered;
        self.failed += o.failed;
        self.probe_answers += o.probe_answers;
        self.latency_ms.extend(o.latency_ms);
        for e in o.errors {
            if self.errors.len() < 5 {
                self.errors.push(e);
            }
        }
    }
}

/// One client connection to the coordinator's `LocateService`.
pub async fn connect(addr: SocketAddr) -> Result<LocateServiceClient<Channel>> {
    let url = format!("http://{addr}");
    let ch = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::Client(format!("endpoint {url}: {e}")))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| Error::Client(format!("connecting to {url}: {e}")))?;
    Ok(LocateServiceClient::new(ch)
        .max_decoding_message_size(geoloc_proto::limits::MAX_REPLY_MESSAGE)
        .max_encoding_message_size(geoloc_proto::limits::MAX_CLIENT_MESSAGE))
}

/// How the locates are asked.
#[derive(Debug, Clone, Copy)]
pub struct LocateLoad {
    pub per_minute: u32,
    pub duration: Duration,
    /// Per-probe budget asked, ms (0 = coordinator default).
    pub timeout_ms: u32,
    /// Most vantage points per locate (0 = every healthy probe).
    pub budget: u32,
    /// Index of the first target (the audit takes the others).
    pub first_target: u64,
}

fn request(ip: String, load: &LocateLoad) -> pb::LocateRequest {
    pb::LocateRequest {
        ip,
        timeout_ms: load.timeout_ms,
        budget: load.budget,
        ..Default::default()
    }
}

/// Runs `per_minute` locates a minute for `duration`, each of a new target, and waits for
/// all of them; locate k goes to replica k mod N (one that was killed fails it).
pub async fn run_locates(
    replicas: Vec<LocateServiceClient<Channel>>,
    world: Arc<World>,
    shared: Arc<Shared>,
    load: LocateLoad,
) -> Tally {
    let total = (f64::from(load.per_minute) * load.duration.as_secs_f64() / 60.0).round() as u64;
    let every = Duration::from_secs_f64(60.0 / f64::from(load.per_minute.max(1)));
    let gate = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut handles = Vec::with_capacity(total as usize);
    for k in 0..total {
        tick.tick().await;
        let Ok(permit) = Arc::clone(&gate).acquire_owned().await else {
            break;
        };
        let index = load.first_target + k;
        let ip = target_ip(index);
        let mut client = replicas[k as usize % replicas.len().max(1)].clone();
        let host = world.host(Role::Target, index);
        let shared = Arc::clone(&shared);
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            let t0 = Instant::now();
            shared.add_target(
                ip,
                Target {
                    index,
                    host,
                    started: Some(t0),
                },
            );
            let mut t = Tally {
                asked: 1,
                ..Tally::default()
            };
            match client.locate(request(ip.to_string(), &load)).await {
                Ok(r) => follow(r.into_inner(), &mut t, t0).await,
                Err(s) => {
                    t.failed += 1;
                    t.errors
                        .push(format!("{ip}: {} ({:?})", s.message(), s.code()));
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for h in handles {
        if let Ok(t) = h.await {
            all.add(t);
        }
    }
    all.wall = start.elapsed();
    all
}

/// Reads one call's events to the end, counting into `t` (start time `t0` of every
/// address).
async fn follow(mut events: tonic::Streaming<pb::LocateEvent>, t: &mut Tally, t0: Instant) {
    loop {
        match events.message().await {
            Ok(Some(ev)) => match ev.event {
                // Progress events are dropped by the coordinator when the client reads
                // too slowly: the result's RTT list is what was taken in.
                Some(pb::locate_event::Event::Progress(_)) => {}
                Some(pb::locate_event::Event::Result(r)) => {
                    t.probe_answers += r.probe_rtts.len() as u64;
                    t.answered += 1;
                    t.latency_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                Some(pb::locate_event::Event::Error(e)) => {
                    t.failed += 1;
                    if t.errors.len() < 5 {
                        t.errors.push(format!("{}: {}", ev.ip, e.message));
                    }
                }
                None => {}
            },
            Ok(None) => return,
            Err(s) => {
                if t.errors.len() < 5 {
                    t.errors
                        .push(format!("stream: {} ({:?})", s.message(), s.code()));
                }
                return;
            }
        }
    }
}

/// A client of the coordinator's `LocateService` at `addr` that connects on first use (a
/// replica that died makes its calls fail, not this).
pub fn connect_lazy(addr: SocketAddr) -> Result<LocateServiceClient<Channel>> {
    let url = format!("http://{addr}");
    let ch = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::Client(format!("endpoint {url}: {e}")))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    Ok(LocateServiceClient::new(ch)
        .max_decoding_message_size(geoloc_proto::limits::MAX_REPLY_MESSAGE)
        .max_encoding_message_size(geoloc_proto::limits::MAX_CLIENT_MESSAGE))
}

/// Kills replica `i` (the one the audit is connected to) and says which it was.
pub type Killer = Arc<dyn Fn(usize) -> Option<String> + Send + Sync>;

/// How the audit runs.
pub struct AuditSpec {
    /// One client per replica; the audit starts on the first and moves round robin when
    /// its stream fails.
    pub replicas: Vec<LocateServiceClient<Channel>>,
    pub n: u64,
    pub concurrency: u32,
    pub load: LocateLoad,
    pub first_target: u64,
    /// Prefix of the job keys (`{run_id}/{index}`).
    pub run_id: String,
    /// Kill the replica the audit is connected to once this fraction of the addresses is
    /// answered.
    pub kill_at: Option<f64>,
    pub killer: Option<Killer>,
    /// Give up re-asking after this long in all.
    pub timeout: Duration,
}

/// The kill, as the audit saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct KillSeen {
    /// The killed replica's index and id.
    pub replica: usize,
    pub replica_id: String,
    /// Since the audit's start, s.
    pub at_s: f64,
    /// Addresses answered when it was killed.
    pub answered_at_kill: u64,
    /// Kill to the next result event (on another replica), s; None when none came.
    pub stall_s: Option<f64>,
    /// Addresses asked again after the kill.
    pub re_asked: u64,
}

/// The outcome of an audit.
#[derive(Debug, Default, Clone)]
pub struct AuditOutcome {
    pub tally: Tally,
    pub counts: AuditAnswers,
    pub kill: Option<KillSeen>,
}

/// The job key of audit address `i`: `{run_id}/{i}` (1-64 characters of
/// `[A-Za-z0-9._:/-]`).
pub fn job_key(run_id: &str, i: usize) -> String {
    format!("{run_id}/{i}")
}

/// An audit: `n` new addresses in one `LocateBatch` measured `concurrency` at a time, each
/// with its job key. When the stream fails (its replica died), asks the next replica again
/// for the addresses it has no answer (nor error) for, with the same keys, until all are
/// answered or the timeout.
pub async fn run_audit(spec: AuditSpec, world: Arc<World>, shared: Arc<Shared>) -> AuditOutcome {
    let n = spec.n as usize;
    let mut ips = Vec::with_capacity(n);
    for k in 0..spec.n {
        let index = spec.first_target + k;
        let ip = target_ip(index);
        shared.add_target(
            ip,
            Target {
                index,
                host: world.host(Role::Target, index),
                started: None,
            },
        );
        ips.push(ip.to_string());
    }
    let keys: Vec<String> = (0..n).map(|i| job_key(&spec.run_id, i)).collect();
    let kill_after = spec
        .kill_at
        .map(|f| ((f * spec.n as f64).ceil() as u64).clamp(1, spec.n.max(1)));
    let mut results = vec![0u32; n];
    let mut errored = vec![false; n];
    let mut unique: u64 = 0;
    let mut t = Tally {
        asked: spec.n,
        ..Tally::default()
    };
    let mut counts = AuditAnswers::default();
    let mut kill: Option<(KillSeen, Instant)> = None;
    let replicas = spec.replicas.len().max(1);
    let mut at = 0usize;
    let t0 = Instant::now();
    let deadline = t0 + spec.timeout;
    let mut first = true;
    let mut wait = Duration::from_millis(100);
    loop {
        let todo: Vec<usize> = (0..n).filter(|&i| results[i] == 0 && !errored[i]).collect();
        if todo.is_empty() {
            break;
        }
        if !first {
            counts.reconnects += 1;
            counts.re_asked += todo.len() as u64;
            if let Some((k, _)) = &mut kill {
                k.re_asked += todo.len() as u64;
            }
        }
        first = false;
        let req = pb::LocateBatchRequest {
            ips: todo.iter().map(|&i| ips[i].clone()).collect(),
            job_keys: todo.iter().map(|&i| keys[i].clone()).collect(),
            timeout_ms: spec.load.timeout_ms,
            budget: spec.load.budget,
            concurrency: spec.concurrency,
            ..Default::default()
        };
        let mut client = spec.replicas[at].clone();
        let mut ended = false;
        match client.locate_batch(req).await {
            Ok(r) => {
                let mut events = r.into_inner();
                loop {
                    let next = tokio::time::timeout(
                        deadline.saturating_duration_since(Instant::now()),
                        events.message(),
                    )
                    .await;
                    match next {
                        Err(_) => {
                            t.errors
                                .push(format!("audit: timed out after {:?}", spec.timeout));
                            break;
                        }
                        Ok(Ok(Some(ev))) => {
                            let Some(&i) = todo.get(ev.index as usize) else {
                                continue;
                            };
                            match ev.event {
                                Some(pb::locate_event::Event::Result(r)) => {
                                    t.probe_answers += r.probe_rtts.len() as u64;
                                    t.latency_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                                    results[i] += 1;
                                    if results[i] == 1 {
                                        unique += 1;
                                    }
                                    if let Some((k, when)) = &mut kill {
                                        if k.stall_s.is_none() {
                                            k.stall_s = Some(when.elapsed().as_secs_f64());
                                        }
                                    }
                                    let due = kill_after.is_some_and(|a| unique >= a);
                                    if due && kill.is_none() {
                                        if let Some(killer) = &spec.killer {
                                            let when = Instant::now();
                                            if let Some(id) = killer(at) {
                                                kill = Some((
                                                    KillSeen {
                                                        replica: at,
                                                        replica_id: id,
                                                        at_s: t0.elapsed().as_secs_f64(),
                                                        answered_at_kill: unique,
                                                        stall_s: None,
                                                        re_asked: 0,
                                                    },
                                                    when,
                                                ));
                                            }
                                        }
                                    }
                                }
                                Some(pb::locate_event::Event::Error(e)) => {
                                    errored[i] = true;
                                    if t.errors.len() < 5 {
                                        t.errors.push(format!("{}: {}", ev.ip, e.message));
                                    }
                                }
                                _ => {}
                            }
                        }
                        Ok(Ok(None)) => {
                            ended = true;
                            break;
                        }
                        Ok(Err(s)) => {
                            if t.errors.len() < 5 {
                                t.errors.push(format!(
                                    "audit stream on replica {at}: {} ({:?})",
                                    s.message(),
                                    s.code()
                                ));
                            }
                            break;
                        }
                    }
                }
            }
            Err(s) => {
                if t.errors.len() < 5 {
                    t.errors.push(format!(
                        "LocateBatch on replica {at}: {} ({:?})",
                        s.message(),
                        s.code()
                    ));
                }
            }
        }
        // A stream that ended normally answered all it will: what is left is never
        // answered. A failed one is asked again on the next replica.
        if ended || Instant::now() >= deadline {
            break;
        }
        at = (at + 1) % replicas;
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
    for (&r, &e) in results.iter().zip(&errored) {
        match r {
            0 => counts.never_answered += 1,
            1 => counts.answered_once += 1,
            _ => {
                counts.answered_more_than_once += 1;
                counts.duplicate_results += u64::from(r - 1);
            }
        }
        if e {
            counts.error_events += 1;
        }
    }
    t.answered = unique;
    t.failed = spec.n.saturating_sub(unique);
    t.wall = t0.elapsed();
    AuditOutcome {
        tally: t,
        counts,
        kill: kill.map(|(k, _)| k),
    }
}

/// Probes the coordinator lists as connected and healthy.
pub async fn probes_held(client: &mut LocateServiceClient<Channel>) -> Result<u64> {
    let r = client
        .list_probes(pb::ListProbesRequest {})
        .await
        .map_err(|s| Error::Client(format!("ListProbes: {} ({:?})", s.message(), s.code())))?;
    Ok(r.into_inner()
        .probes
        .iter()
        .filter(|p| p.connected && p.healthy)
        .count() as u64)
}
