//! The simulated probes: each one registers with the fleet token and keeps its own
//! `Session` stream, exactly as `geoloc-probe-agent` does (Register, then Hello with the
//! session token, an Ack, Heartbeats, one MeasurementResult per MeasurementRequest). Many
//! probes share one HTTP/2 connection (at most [`PROBES_PER_CHANNEL`] streams on each, below
//! the coordinator's 256 per connection); each connection comes from its own loopback
//! source address (127.0.x.y) so the per-address registration rate is not the bottleneck.
//! A probe is one tokio task; its pending answers wait in that task, not in tasks of their
//! own.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{FuturesUnordered, StreamExt};
use geoloc_proto::v1 as pb;
use pb::probe_service_client::ProbeServiceClient;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::delay::{Host, Role, World};
use crate::error::{Error, Result};
use crate::requests::{RequestCache, Seen};

/// Probe sessions sharing one connection.
pub const PROBES_PER_CHANNEL: usize = 200;
/// Registrations in flight at a time.
const REGISTER_CONCURRENCY: usize = 64;
/// A refused (throttled) registration is retried after this long, up to the ramp timeout.
const REGISTER_RETRY: Duration = Duration::from_millis(250);
/// Echo requests when a request leaves the count to the agent (as the agent's default).
const DEFAULT_PINGS: u32 = 3;
/// Most echo requests simulated for one request (the coordinator's ping-count bound).
const MAX_PINGS: u32 = 100;
/// Version string the simulated probes announce.
const AGENT_VERSION: &str = concat!("geoloc-loadtest/", env!("CARGO_PKG_VERSION"));

/// A target the clients are about to locate: where it is and when its locate started
/// (None for audit addresses, whose dispatch is queued behind the batch on purpose).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub index: u64,
    pub host: Host,
    pub started: Option<Instant>,
}

/// What the clients and the probes share: the targets by address and the counters.
#[derive(Default)]
pub struct Shared {
    targets: Mutex<HashMap<IpAddr, Target>>,
    /// Locate start to request at a probe, ms, for every request about a locate's target.
    dispatch_ms: Mutex<Vec<f64>>,
    pub requests: AtomicU64,
    pub results_sent: AtomicU64,
    pub unknown_targets: AtomicU64,
    pub sessions_open: AtomicUsize,
    pub sessions_lost: AtomicUsize,
    /// Sessions a probe opened on another replica after its session ended.
    pub sessions_moved: AtomicU64,
    /// New simulated measurements (a request id the probe did not have).
    pub measurements: AtomicU64,
    /// Requests whose id the probe had (answered again, or waiting, without measuring).
    pub repeated_requests: AtomicU64,
    /// (probe, audit target) pairs measured more than once.
    pub double_measurements: AtomicU64,
}

impl Shared {
    /// Announces target `ip` before it is located.
    pub fn add_target(&self, ip: IpAddr, t: Target) {
        if let Ok(mut m) = self.targets.lock() {
            m.insert(ip, t);
        }
    }

    fn target(&self, ip: &IpAddr) -> Option<Target> {
        self.targets.lock().ok()?.get(ip).copied()
    }

    fn note_dispatch(&self, ms: f64) {
        if let Ok(mut v) = self.dispatch_ms.lock() {
            v.push(ms);
        }
    }

    /// The dispatch latencies so far (ms), taken out.
    pub fn take_dispatch(&self) -> Vec<f64> {
        self.dispatch_ms
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// Target indices: locates from 0 (at most 60,000 a minute for an hour: 3.6 M), the audit
/// from [`AUDIT_FIRST_TARGET`] (at most 100,000); all below [`MAX_TARGETS`].
pub const AUDIT_FIRST_TARGET: u64 = 8 << 20;
/// Addresses in 10.64.0.0 - 10.255.255.255.
pub const MAX_TARGETS: u64 = 12 << 20;

/// The target address of index `k`: 10.64.0.0 + k, always inside 10.0.0.0/8 (private:
/// nothing is ever sent to it, and the coordinator runs with `allow-private`); indices past
/// [`MAX_TARGETS`] wrap inside 10.64.0.0 - 10.255.255.255.
pub fn target_ip(k: u64) -> IpAddr {
    let base = u32::from(Ipv4Addr::new(10, 64, 0, 0));
    IpAddr::V4(Ipv4Addr::from(base + (k % MAX_TARGETS) as u32))
}

/// The loopback source address of connection `i` (127.0.x.y, never 127.0.0.0/24's .0 or
/// .255 ends).
fn source_ip(i: usize) -> IpAddr {
    let i = i as u32;
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (i / 250) as u8,
        0,
        1 + (i % 250) as u8,
    ))
}

/// The running simulated fleet.
pub struct Fleet {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How the fleet is brought up.
pub struct FleetSpec {
    /// Every replica's gRPC address: probe i starts on replica i mod N and moves to the
    /// next one (round robin) when its session ends.
    pub coordinators: Vec<SocketAddr>,
    pub probes: usize,
    pub token: String,
    pub world: Arc<World>,
    pub shared: Arc<Shared>,
    /// Give up bringing the fleet up after this long.
    pub ramp_timeout: Duration,
}

impl Fleet {
    /// Makes the channels, then starts every probe; returns once all sessions are open
    /// (the coordinator acked their hello) or fails after the ramp timeout.
    ///
    /// Every replica gets `ceil(probes / 200)` channels; probe i uses channel i / 200 of
    /// whichever replica it is on, so no connection carries more than 200 sessions even
    /// when the probes of a dead replica have moved onto another one. The channels connect
    /// on first use.
    pub async fn start(spec: FleetSpec) -> Result<Fleet> {
        let n_channels = spec.probes.div_ceil(PROBES_PER_CHANNEL).max(1);
        let mut channels: Vec<Vec<Channel>> = Vec::with_capacity(spec.coordinators.len());
        for (r, addr) in spec.coordinators.iter().enumerate() {
            let url = format!("http://{addr}");
            let mut per = Vec::with_capacity(n_channels);
            for c in 0..n_channels {
                let ch = Endpoint::from_shared(url.clone())
                    .map_err(|e| Error::Probes(format!("endpoint {url}: {e}")))?
                    .local_address(Some(source_ip(r * n_channels + c)))
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(10))
                    .connect_lazy();
                per.push(ch);
            }
            channels.push(per);
        }
        let (stop, stop_rx) = watch::channel(false);
        let (up_tx, mut up_rx) = mpsc::channel::<std::result::Result<(), String>>(1024);
        let gate = Arc::new(Semaphore::new(REGISTER_CONCURRENCY));
        let deadline = Instant::now() + spec.ramp_timeout;
        let mut tasks = Vec::with_capacity(spec.probes);
        for i in 0..spec.probes {
            let probe = Probe {
                index: i as u64,
                id: format!("lt-{i:05}"),
                host: spec.world.host(Role::Probe, i as u64),
                world: Arc::clone(&spec.world),
                shared: Arc::clone(&spec.shared),
            };
            let clients: Vec<ProbeServiceClient<Channel>> = channels
                .iter()
                .map(|per| {
                    ProbeServiceClient::new(per[i / PROBES_PER_CHANNEL].clone())
                        .max_decoding_message_size(geoloc_proto::limits::MAX_PROBE_MESSAGE)
                        .max_encoding_message_size(geoloc_proto::limits::MAX_PROBE_MESSAGE)
                })
                .collect();
            let token = spec.token.clone();
            let stop_rx = stop_rx.clone();
            let up_tx = up_tx.clone();
            let gate = Arc::clone(&gate);
            tasks.push(tokio::spawn(async move {
                probe
                    .run(clients, token, gate, deadline, up_tx, stop_rx)
                    .await;
            }));
        }
        drop(up_tx);
        let mut up = 0;
        while up < spec.probes {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, up_rx.recv()).await {
                Ok(Some(Ok(()))) => up += 1,
                Ok(Some(Err(e))) => {
                    let _ = stop.send(true);
                    return Err(Error::Probes(e));
                }
                Ok(None) | Err(_) => {
                    let _ = stop.send(true);
                    return Err(Error::Probes(format!(
                        "only {up} of {} probe sessions open after {:?}",
                        spec.probes, spec.ramp_timeout
                    )));
                }
            }
        }
        Ok(Fleet { stop, tasks })
    }

    /// Closes every session and waits (bounded) for the probes to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let all = futures::future::join_all(self.tasks);
        let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
    }
}

/// A measurement in progress: its request id, the session it was started for, and the
/// answer when the simulated echo train ends.
type Answer =
    Pin<Box<dyn std::future::Future<Output = (String, u64, pb::MeasurementResult)> + Send>>;

fn msg(kind: pb::probe_message::Kind) -> pb::ProbeMessage {
    pb::ProbeMessage { kind: Some(kind) }
}

fn result_msg(r: pb::MeasurementResult) -> pb::ProbeMessage {
    msg(pb::probe_message::Kind::MeasurementResult(r))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One simulated probe.
struct Probe {
    index: u64,
    id: String,
    host: Host,
    world: Arc<World>,
    shared: Arc<Shared>,
}

/// An open session: what to send on, what comes in, how often to heartbeat.
struct Session {
    tx: mpsc::Sender<pb::ProbeMessage>,
    inbound: tonic::Streaming<pb::CoordinatorMessage>,
    heartbeat_every: Duration,
}

/// What a probe keeps across its sessions: the request-id cache, the measurements in
/// progress, and how often it measured each audit target.
#[derive(Default)]
struct Memory {
    cache: RequestCache,
    pending: FuturesUnordered<Answer>,
    audit_measured: HashMap<u64, u32>,
}

/// How a session ended.
enum Ended {
    Stopped,
    Lost,
}

/// First wait before registering with the next replica after a session ended (doubled up
/// to [`RECONNECT_MAX`] while registrations fail).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// How long a probe that lost its replica keeps retrying a throttled registration.
const REREGISTER_WINDOW: Duration = Duration::from_secs(60);

impl Probe {
    /// Registers (retrying while throttled, until `deadline`) with replica `self.index mod
    /// N`, opens the session, reports up (or why not) on `up`, then serves requests until
    /// `stop`. When a session ends, registers with the next replica (round robin) and
    /// serves there, keeping its request-id cache and measurements in progress.
    async fn run(
        self,
        mut clients: Vec<ProbeServiceClient<Channel>>,
        token: String,
        gate: Arc<Semaphore>,
        deadline: Instant,
        up: mpsc::Sender<std::result::Result<(), String>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let n = clients.len().max(1);
        let mut at = self.index as usize % n;
        let first = {
            let _permit = gate.acquire().await;
            self.open(&mut clients[at], &token, deadline).await
        };
        let mut session = match first {
            Ok(s) => s,
            Err(e) => {
                let _ = up.send(Err(e)).await;
                return;
            }
        };
        let _ = up.send(Ok(())).await;
        drop(up);
        let mut memory = Memory::default();
        let mut number: u64 = 1;
        let mut wait = RECONNECT_MIN;
        loop {
            self.shared.sessions_open.fetch_add(1, Ordering::Relaxed);
            let ended = self.serve(session, number, &mut memory, &mut stop).await;
            self.shared.sessions_open.fetch_sub(1, Ordering::Relaxed);
            if matches!(ended, Ended::Stopped) {
                return;
            }
            self.shared.sessions_lost.fetch_add(1, Ordering::Relaxed);
            // The next replica in the list, as the agent does with several URLs.
            loop {
                if *stop.borrow() {
                    return;
                }
                at = (at + 1) % n;
                let opened = {
                    let _permit = gate.acquire().await;
                    let until = Instant::now() + REREGISTER_WINDOW;
                    self.open(&mut clients[at], &token, until).await
                };
                match opened {
                    Ok(s) => {
                        session = s;
                        number += 1;
                        wait = RECONNECT_MIN;
                        self.shared.sessions_moved.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(_) => {
                        tokio::select! {
                            _ = stop.changed() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        wait = (wait * 2).min(RECONNECT_MAX);
                    }
                }
            }
        }
    }

    /// Register, Hello, Ack on `client`.
    async fn open(
        &self,
        client: &mut ProbeServiceClient<Channel>,
        token: &str,
        deadline: Instant,
    ) -> std::result::Result<Session, String> {
        let reply = loop {
            let req = pb::RegisterRequest {
                probe_id: self.id.clone(),
                lat: self.host.pos.lat,
                lon: self.host.pos.lon,
                credential: token.to_string(),
                agent_version: AGENT_VERSION.into(),
                allow_private: true,
                ipv4: String::new(),
                ipv6: String::new(),
            };
            match client.register(req).await {
                Ok(r) => break r.into_inner(),
                Err(s)
                    if s.code() == tonic::Code::ResourceExhausted
                        && Instant::now() + REGISTER_RETRY < deadline =>
                {
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
                Err(s) => {
                    return Err(format!(
                        "register {}: {} ({:?})",
                        self.id,
                        s.message(),
                        s.code()
                    ));
                }
            }
        };
        let heartbeat_every =
            Duration::from_millis(u64::from(reply.heartbeat_interval_ms.clamp(100, 600_000)));
        let (tx, rx) = mpsc::channel::<pb::ProbeMessage>(256);
        let hello = msg(pb::probe_message::Kind::Hello(pb::Hello {
            session_token: reply.session_token,
            probe_id: self.id.clone(),
        }));
        if tx.send(hello).await.is_err() {
            return Err(format!("session {}: closed before the hello", self.id));
        }
        let mut inbound = match client.session(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) => return Err(format!("session {}: {}", self.id, s.message())),
        };
        // The first message is the coordinator's ack of the hello.
        match inbound.message().await {
            Ok(Some(pb::CoordinatorMessage {
                kind: Some(pb::coordinator_message::Kind::Ack(_)),
            })) => Ok(Session {
                tx,
                inbound,
                heartbeat_every,
            }),
            other => Err(format!(
                "session {}: no ack of the hello ({other:?})",
                self.id
            )),
        }
    }

    /// Serves session `number` until `stop` or until it ends.
    async fn serve(
        &self,
        s: Session,
        number: u64,
        m: &mut Memory,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let Session {
            tx,
            mut inbound,
            heartbeat_every,
        } = s;
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + heartbeat_every,
            heartbeat_every,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return Ended::Stopped,
                _ = heartbeat.tick() => {
                    let hb = msg(pb::probe_message::Kind::Heartbeat(pb::Heartbeat {
                        unix_ms: unix_ms(),
                        in_flight: m.pending.len() as u32,
                    }));
                    if tx.send(hb).await.is_err() {
                        return Ended::Lost;
                    }
                }
                Some((id, origin, answer)) = m.pending.next(), if !m.pending.is_empty() => {
                    // Sent to this session if it (or, for an id the cache no longer holds,
                    // the session it was started for) waits for it.
                    let to = m.cache.complete(&id, &answer).unwrap_or_else(|| vec![origin]);
                    if to.contains(&number) {
                        if tx.send(result_msg(answer)).await.is_err() {
                            return Ended::Lost;
                        }
                        self.shared.results_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                incoming = inbound.message() => match incoming {
                    Ok(Some(pb::CoordinatorMessage {
                        kind: Some(pb::coordinator_message::Kind::MeasurementRequest(req)),
                    })) => {
                        let arrived = Instant::now();
                        self.shared.requests.fetch_add(1, Ordering::Relaxed);
                        match m.cache.on_request(&req.request_id, number, arrived) {
                            Seen::New => {
                                let a = self.answer(req, arrived, number, &mut m.audit_measured);
                                m.pending.push(a);
                            }
                            Seen::Done(r) => {
                                self.shared.repeated_requests.fetch_add(1, Ordering::Relaxed);
                                if tx.send(result_msg(*r)).await.is_err() {
                                    return Ended::Lost;
                                }
                                self.shared.results_sent.fetch_add(1, Ordering::Relaxed);
                            }
                            Seen::InFlight => {
                                self.shared.repeated_requests.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    // Cancels are not acted on: the answer comes anyway and the
                    // coordinator drops it as late, as it does for a real agent.
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return Ended::Lost,
                }
            }
        }
    }

    /// A new simulated measurement for `req` (counted), ready when the simulated echo
    /// train ends: echo `k` leaves at `k * interval` and returns after its RTT; replies
    /// after the budget are lost; the answer is sent when the last reply came or the
    /// budget ran out. `audit_measured` counts the measurements of each audit target.
    fn answer(
        &self,
        req: pb::MeasurementRequest,
        arrived: Instant,
        session: u64,
        audit_measured: &mut HashMap<u64, u32>,
    ) -> Answer {
        let started = unix_ms();
        let done = |error: String, ping: Option<pb::PingResult>, wait: Duration| -> Answer {
            let r = pb::MeasurementResult {
                request_id: req.request_id.clone(),
                target: req.target.clone(),
                ping,
                tcp: Vec::new(),
                traceroute: None,
                error,
                started_unix_ms: started,
                finished_unix_ms: started + wait.as_millis() as u64,
            };
            let id = req.request_id.clone();
            Box::pin(async move {
                tokio::time::sleep_until((arrived + wait).into()).await;
                (id, session, r)
            })
        };
        let target = req.target.parse::<IpAddr>().ok();
        let known = target.and_then(|ip| self.shared.target(&ip));
        let Some(t) = known else {
            self.shared.unknown_targets.fetch_add(1, Ordering::Relaxed);
            return done(
                "loadtest: not a simulated target".into(),
                None,
                Duration::ZERO,
            );
        };
        self.shared.measurements.fetch_add(1, Ordering::Relaxed);
        match t.started {
            Some(s) => self
                .shared
                .note_dispatch(arrived.duration_since(s).as_secs_f64() * 1e3),
            None => {
                let n = audit_measured.entry(t.index).or_insert(0);
                *n += 1;
                if *n == 2 {
                    self.shared
                        .double_measurements
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if !req.kinds.contains(&(pb::MeasurementKind::Ping as i32)) {
            return done(
                "loadtest: only ping is simulated".into(),
                None,
                Duration::ZERO,
            );
        }
        let count = match req.ping_count {
            0 => DEFAULT_PINGS,
            n => n.min(MAX_PINGS),
        };
        let budget_ms = f64::from(req.timeout_ms.max(1));
        let base = self.world.rtt_ms(self.index, &self.host, t.index, &t.host);
        let mut rtts = Vec::with_capacity(count as usize);
        let mut last_ms: f64 = 0.0;
        for k in 0..count {
            let rtt = self.world.echo_ms(base, self.index, t.index, k);
            let back = f64::from(k) * f64::from(req.interval_ms) + rtt;
            if back <= budget_ms {
                rtts.push(rtt);
                last_ms = last_ms.max(back);
            }
        }
        let wait_ms = if rtts.len() == count as usize {
            last_ms
        } else {
            budget_ms
        };
        let min = rtts.iter().copied().reduce(f64::min);
        let ping = pb::PingResult {
            sent: count,
            received: rtts.len() as u32,
            rtts_ms: rtts,
            min_rtt_ms: min,
            error: String::new(),
        };
        done(
            String::new(),
            Some(ping),
            Duration::from_secs_f64(wait_ms / 1e3),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_private_targets_and_loopback_sources() {
        assert_eq!(target_ip(0).to_string(), "10.64.0.0");
        assert_eq!(target_ip(65_537).to_string(), "10.65.0.1");
        assert_eq!(target_ip(AUDIT_FIRST_TARGET).to_string(), "10.192.0.0");
        assert_eq!(target_ip(MAX_TARGETS - 1).to_string(), "10.255.255.255");
        assert_eq!(target_ip(MAX_TARGETS), target_ip(0));
        let last_locate =
            u64::from(crate::limits::MAX_LOCATES_PER_MINUTE) * crate::limits::MAX_DURATION_S / 60;
        assert!(last_locate < AUDIT_FIRST_TARGET);
        const { assert!(AUDIT_FIRST_TARGET + crate::limits::MAX_AUDIT < MAX_TARGETS) };
        for i in [0, 1, 249, 250, 10_000] {
            let s = source_ip(i);
            assert!(s.is_loopback(), "{s}");
        }
        assert_ne!(source_ip(0), source_ip(250));
    }
}
