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
/// all of them.
pub async fn run_locates(
    client: LocateServiceClient<Channel>,
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
        let mut client = client.clone();
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

/// An audit: `n` new addresses in one `LocateBatch` measured `concurrency` at a time.
pub async fn run_audit(
    mut client: LocateServiceClient<Channel>,
    world: Arc<World>,
    shared: Arc<Shared>,
    n: u64,
    concurrency: u32,
    load: LocateLoad,
    first_target: u64,
) -> Tally {
    let mut ips = Vec::with_capacity(n as usize);
    for k in 0..n {
        let index = first_target + k;
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
    let req = pb::LocateBatchRequest {
        ips,
        timeout_ms: load.timeout_ms,
        budget: load.budget,
        concurrency,
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut t = Tally {
        asked: n,
        ..Tally::default()
    };
    match client.locate_batch(req).await {
        Ok(r) => follow(r.into_inner(), &mut t, t0).await,
        Err(s) => {
            t.errors
                .push(format!("LocateBatch: {} ({:?})", s.message(), s.code()));
        }
    }
    t.failed = n.saturating_sub(t.answered);
    t.wall = t0.elapsed();
    t
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
