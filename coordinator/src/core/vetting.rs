//! Speed-of-light checks: probes measure the other landmarks (probes with an address and
//! passive landmarks); a landmark pair whose RTT is faster than light in fibre for the two
//! declared positions means one of them lies about its position. The landmark involved in
//! most such pairs is flagged first (greedy), so one misplaced probe does not take its honest
//! peers down with it; it is flagged only when faster than light with two others or more (a
//! single pair cannot tell which one lies). Flagged probes are left out of solving
//! until cleared (`ClearFlag`); clearing discards older evidence; a move keeps the flag, and
//! evidence only counts for the position it was measured at.
//!
//! Vetting: a probe's RTTs enter an answer only when it is *vetted*: not flagged, and at its
//! current declared position it passed known-answer checks (an echo RTT that light in fibre
//! allows for both declared positions) with at least `vetting-min-checks` distinct landmarks
//! (passive ones or unflagged probes). Checks run when a probe connects (it measures a
//! sample of landmarks, a sample of live probes measure it) and, mixed into real work at
//! random, during locates (`known-answer-percent` of a locate's vantage points, each checked
//! against a landmark drawn at random among those it was not checked against in its last
//! [`KNOWN_ANSWER_MEMORY`] checks, so that a few checks meet many landmarks): the probe is
//! sent the same request as for a locate (same builder, kinds, counts and budget, random
//! request id; the wire carries no purpose), so it cannot answer checks honestly and lie on
//! real work without risking a faster-than-light pair.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use geoloc_engine::delay::MIN_CALIBRATION_POINTS;
use geoloc_engine::{
    distance_km, violates_speed_of_light, Calibration, Dropped, LandmarkRtt, LatLon,
    FIBRE_KM_PER_MS_RTT,
};

use crate::core::landmarks::LandmarkKind;
use crate::core::measurement::Purpose;
use crate::core::registry::ProbeSnapshot;
use crate::core::rows::LandmarkRttRow;
use crate::core::source::VantagePoint;
use crate::core::target;
use crate::{unix_ms, Coordinator};

/// (landmark a, landmark b) with a < b -> (min RTT ms, position of a, position of b).
pub type PairMap = BTreeMap<(String, String), (f64, LatLon, LatLon)>;

/// Landmark measurements one probe runs at a time.
const LANDMARK_SLOTS_PER_PROBE: usize = 2;
/// Distinct landmarks a probe must be faster than light with before it is flagged.
const MIN_VIOLATION_PARTNERS: usize = 2;
/// Longest a landmark measurement waits for running locates to finish.
const LANDMARK_MAX_YIELD: Duration = Duration::from_secs(10);
/// Longest a locate waits for the connect checks of unvetted probes to finish.
pub const VETTING_WAIT: Duration = Duration::from_secs(30);
/// Prefix of the reasons of probes left out of a locate before measuring (unvetted or
/// flagged); such entries of `Solution::dropped` are carried over by a recompute.
pub const LEFT_OUT: &str = "left out before measuring: ";
/// Landmark measurements started per connecting probe (half by it, half of it).
pub const LANDMARK_CHECKS_PER_CONNECT: usize = 16;
/// A probe in the fleet this long without a flag is established (its evidence counts against
/// established probes), ms.
pub const ESTABLISHED_AFTER_MS: i64 = 24 * 3_600_000;
/// Declared positions that moved less than this still match stored evidence, km.
const SAME_POSITION_KM: f64 = 1.0;
/// Known-answer checks remembered per probe: a locate's check avoids the landmarks of the
/// probe's last this many checks (a rotation), so a lie that only some landmarks can expose
/// meets them within a few locates instead of when the dice allow.
pub const KNOWN_ANSWER_MEMORY: usize = 32;

/// One faster-than-light observation.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub a: String,
    pub b: String,
    pub rtt_ms: f64,
    pub distance_km: f64,
}

impl Violation {
    fn describe(&self, me: &str) -> String {
        let other = if self.a == me { &self.b } else { &self.a };
        format!(
            "RTT {:.2} ms to {} is faster than light in fibre for the declared positions {:.0} km apart (needs at least {:.2} ms)",
            self.rtt_ms,
            other,
            self.distance_km,
            self.distance_km / FIBRE_KM_PER_MS_RTT
        )
    }
}

/// A landmark that can be measured: id, declared position, address.
#[derive(Debug, Clone)]
pub struct Measurable {
    id: String,
    pos: LatLon,
    ip: std::net::IpAddr,
}

/// The landmark for a known-answer check among `candidates`: at random among those not in
/// `recent` (the probe's last checks, oldest first); when every candidate is there, the one
/// checked longest ago. None when there is no candidate.
fn pick_rotating<'a, R: rand::Rng + ?Sized>(
    candidates: &[&'a Measurable],
    recent: &VecDeque<String>,
    rng: &mut R,
) -> Option<&'a Measurable> {
    use rand::seq::IndexedRandom;
    let fresh: Vec<&Measurable> = candidates
        .iter()
        .copied()
        .filter(|m| !recent.contains(&m.id))
        .collect();
    if let Some(m) = fresh.choose(rng) {
        return Some(m);
    }
    candidates
        .iter()
        .copied()
        .min_by_key(|m| recent.iter().position(|r| *r == m.id))
}

/// Records a check against `id` as the newest in `recent`, keeping at most
/// [`KNOWN_ANSWER_MEMORY`] entries, each once.
fn remember(recent: &mut VecDeque<String>, id: &str) {
    recent.retain(|r| r != id);
    recent.push_back(id.to_string());
    while recent.len() > KNOWN_ANSWER_MEMORY {
        recent.pop_front();
    }
}

/// Which landmarks to blame for `violations` (greedy, most violations first; ties all
/// blamed). Returns landmark id -> the violations that convicted it.
pub fn blame(violations: &[Violation]) -> BTreeMap<String, Vec<Violation>> {
    let mut left: Vec<&Violation> = violations.iter().collect();
    let mut out: BTreeMap<String, Vec<Violation>> = BTreeMap::new();
    while !left.is_empty() {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &left {
            *count.entry(&v.a).or_default() += 1;
            *count.entry(&v.b).or_default() += 1;
        }
        let max = count.values().copied().max().unwrap_or(0);
        let worst: BTreeSet<String> = count
            .iter()
            .filter(|(_, &c)| c == max)
            .map(|(k, _)| k.to_string())
            .collect();
        for w in &worst {
            let vs: Vec<Violation> = left
                .iter()
                .filter(|v| &v.a == w || &v.b == w)
                .map(|v| (*v).clone())
                .collect();
            out.insert(w.clone(), vs);
        }
        left.retain(|v| !worst.contains(&v.a) && !worst.contains(&v.b));
    }
    out
}

/// The state of vetting the fleet: who measures whom, the evaluations' coalescing, and the
/// delay model fitted on the landmark RTTs. Its methods read the fleet and the store through
/// the [`Coordinator`] that owns it.
#[derive(Default)]
pub struct Vetting {
    /// Serialises speed-of-light evaluations.
    lock: tokio::sync::Mutex<()>,
    /// Latest fitted calibration (None = not fitted yet); see [`Vetting::calibration`].
    calibration_cache: RwLock<Option<Option<Calibration>>>,
    /// Landmark-check rounds finished / covered by the latest evaluation (coalescing).
    landmark_generation: AtomicU64,
    evaluated_generation: AtomicU64,
    /// Per measuring probe, the landmark measurements allowed at a time. Like the next
    /// map, never pruned: keyed by registered probes only (here or, in a cluster, on
    /// another replica), which the registry keeps for good; each replica refuses new ones
    /// past `max-probes` (`core::register`), so both stay within that bound per replica.
    landmark_slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Per probe, the landmarks of its last known-answer checks mixed into locates, oldest
    /// first (at most [`KNOWN_ANSWER_MEMORY`]; see [`pick_rotating`]).
    known_answer_recent: Mutex<HashMap<String, VecDeque<String>>>,
    /// Per probe, the position its checks were counted at and how many distinct landmarks
    /// it passed a known-answer check with there (refreshed by every evaluation).
    passed: RwLock<HashMap<String, (LatLon, usize)>>,
    /// Probes whose connect checks are running (a locate waits for them, bounded).
    checking: Mutex<HashMap<String, usize>>,
    /// `passed` was computed at least once by this process.
    passed_ready: std::sync::atomic::AtomicBool,
}

/// Marks a probe's connect checks as running until dropped.
struct Checking<'a>(&'a Vetting, String);

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        let mut c = self.0.checking.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.1);
            }
        }
    }
}

impl Vetting {
    /// Landmarks that may be measured: passive landmarks from the operator's file and
    /// probes with a live session whose declared address passed the target checks and is
    /// declared by no other landmark (an address claimed twice is ambiguous: measuring it
    /// would let a newcomer turn a probe's RTT to itself into evidence against it).
    fn measurables(&self, cx: &Coordinator) -> Vec<Measurable> {
        let mut out: Vec<Measurable> = Vec::new();
        for p in cx.fleet.registry.live() {
            if let Some(ip) = p.address() {
                out.push(Measurable {
                    id: p.probe_id.clone(),
                    pos: p.pos(),
                    ip,
                });
            }
        }
        for l in &cx.landmarks {
            if l.kind == LandmarkKind::Passive && !out.iter().any(|m| m.id == l.id) {
                if let Some(ip) = l.ip {
                    out.push(Measurable {
                        id: l.id.clone(),
                        pos: LatLon {
                            lat: l.lat,
                            lon: l.lon,
                        },
                        ip,
                    });
                }
            }
        }
        // Every declared address, connected or not, counts for ambiguity.
        let mut claims: BTreeMap<std::net::IpAddr, usize> = BTreeMap::new();
        for p in cx.fleet.registry.snapshot() {
            for ip in p.addresses() {
                *claims.entry(ip).or_default() += 1;
            }
        }
        for l in &cx.landmarks {
            if l.kind == LandmarkKind::Passive {
                if let Some(ip) = l.ip {
                    *claims.entry(ip).or_default() += 1;
                }
            }
        }
        out.retain(|m| {
            let unique = claims.get(&m.ip).copied().unwrap_or(0) <= 1;
            if !unique {
                tracing::debug!(landmark = %m.id, ip = %m.ip, "address declared more than once: not measured");
            }
            unique && target::check(&m.ip.to_string(), cx.config.allow_private).is_ok()
        });
        out
    }

    /// Whether `p`'s RTTs may enter an answer (see the module doc): Ok, or the reason it is
    /// left out. With landmark checks off or `vetting-min-checks = 0`, every unflagged probe.
    pub fn vetting_status(&self, cx: &Coordinator, p: &ProbeSnapshot) -> Result<(), String> {
        if p.flagged {
            return Err(format!("flagged: {}", p.flag_reason));
        }
        let min = cx.config.vetting_min_checks as usize;
        if !cx.config.landmark_checks || min == 0 {
            return Ok(());
        }
        let passed = self
            .passed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p.probe_id)
            .filter(|(pos, _)| distance_km(*pos, p.pos()) <= SAME_POSITION_KM)
            .map_or(0, |(_, n)| *n);
        if passed >= min {
            return Ok(());
        }
        Err(format!(
            "unvetted: passed known-answer checks with {passed} of the {min} landmarks needed at its current position ({:.4}, {:.4})",
            p.lat, p.lon
        ))
    }

    /// Waits (at most `limit`) while connect checks are running and a probe among `ids` is
    /// unvetted (and unflagged): a locate right after probes joined uses them once vetted.
    pub async fn wait_for_checks(&self, cx: &Coordinator, ids: &[String], limit: Duration) {
        if cx.config.landmark_checks && !self.passed_ready.load(Ordering::SeqCst) {
            // First locate since the start: count the stored evidence once.
            if let Err(e) = self.evaluate_flags(cx).await {
                tracing::error!(error = %e, "speed-of-light evaluation failed");
            }
        }
        let until = tokio::time::Instant::now() + limit;
        loop {
            // Any connect check may vet any probe (pairs count for both ends).
            let running = !self
                .checking
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            let pending = running
                && ids.iter().any(|id| {
                    cx.fleet
                        .registry
                        .get(id)
                        .is_some_and(|p| !p.flagged && self.vetting_status(cx, &p).is_err())
                });
            if !pending || tokio::time::Instant::now() >= until {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Keeps the vetted fleet probes among `vps` (vantage points of other sources, `atlas:`
    /// ids, are kept as they are), after waiting (at most [`VETTING_WAIT`]) for running
    /// connect checks. Returns the probes left out, with why (unvetted, or flagged with a
    /// live session), for the answer's dropped landmarks; each unvetted one gets a
    /// known-answer check during the run, so a probe whose connect checks failed or whose
    /// flag was just cleared is vetted while the fleet works. Err (the message for the
    /// client) when no vantage point is left.
    pub(crate) async fn keep_vetted(
        &self,
        cx: &Coordinator,
        vps: &mut Vec<VantagePoint>,
    ) -> Result<Vec<Dropped>, String> {
        use crate::core::sources::is_atlas;
        let ids: Vec<String> = vps
            .iter()
            .filter(|v| !is_atlas(&v.id))
            .map(|v| v.id.clone())
            .collect();
        self.wait_for_checks(cx, &ids, VETTING_WAIT).await;
        let mut left_out: Vec<Dropped> = Vec::new();
        let mut unvetted: Vec<VantagePoint> = Vec::new();
        vps.retain(|v| {
            if is_atlas(&v.id) {
                return true;
            }
            let Some(p) = cx.fleet.registry.get(&v.id) else {
                return false;
            };
            match self.vetting_status(cx, &p) {
                Ok(()) => true,
                Err(reason) => {
                    if !p.flagged {
                        unvetted.push(v.clone());
                    }
                    left_out.push(Dropped {
                        landmark: v.id.clone(),
                        reason: format!("{LEFT_OUT}{reason}"),
                    });
                    false
                }
            }
        });
        // Flagged probes with a live session are not vantage points: say why.
        for p in cx.fleet.registry.live() {
            if p.flagged && !left_out.iter().any(|d| d.landmark == p.probe_id) {
                left_out.push(Dropped {
                    landmark: p.probe_id.clone(),
                    reason: format!("{LEFT_OUT}flagged: {}", p.flag_reason),
                });
            }
        }
        if !unvetted.is_empty() {
            cx.mix_known_answers(
                &unvetted,
                cx.config.ping_count,
                Duration::from_millis(u64::from(cx.config.probe_timeout_ms)),
                100,
            );
        }
        if vps.is_empty() {
            let why: Vec<String> = left_out
                .iter()
                .take(5)
                .map(|d| format!("{} ({})", d.landmark, d.reason))
                .collect();
            return Err(format!(
                "no vetted probe to measure from: {} left out: {}",
                left_out.len(),
                why.join("; ")
            ));
        }
        Ok(left_out)
    }

    /// A probe whose word counts against others: its position is in the operator's
    /// landmarks file, or it has been in the fleet for [`ESTABLISHED_AFTER_MS`] without a flag.
    fn established(&self, cx: &Coordinator, p: &ProbeSnapshot) -> bool {
        if p.flagged {
            return false;
        }
        let in_file = cx
            .landmarks
            .iter()
            .any(|l| l.id == p.probe_id && l.kind == LandmarkKind::Probe);
        in_file || unix_ms() - p.first_seen_unix_ms >= ESTABLISHED_AFTER_MS
    }

    /// After `probe_id` connected: it measures every other landmark, every other live probe
    /// measures it; then flags are re-evaluated. Bounded by `budget` per measurement.
    pub async fn check_landmarks_for(&self, cx: &Coordinator, probe_id: &str, budget: Duration) {
        let Some(me) = cx.fleet.registry.get(probe_id) else {
            return;
        };
        let _checking = {
            let mut c = self.checking.lock().unwrap_or_else(|e| e.into_inner());
            *c.entry(probe_id.to_string()).or_default() += 1;
            Checking(self, probe_id.to_string())
        };
        // Checks that vet a newcomer do not yield to locates: locates wait for them.
        let urgent = self.vetting_status(cx, &me).is_err();
        let mut targets = self.measurables(cx);
        let mine = targets.iter().find(|t| t.id == me.probe_id).cloned();
        let my_ips: Vec<std::net::IpAddr> = me.addresses().collect();
        targets.retain(|t| t.id != me.probe_id && !my_ips.contains(&t.ip));
        let mut live = cx.fleet.registry.live();
        live.retain(|p| p.probe_id != me.probe_id);
        // A fixed budget per connect, whatever the fleet's size: a random sample of the
        // landmarks for it to measure, and of the live probes to measure it.
        {
            use rand::seq::SliceRandom;
            let mut rng = rand::rng();
            targets.shuffle(&mut rng);
            live.shuffle(&mut rng);
        }
        targets.truncate(LANDMARK_CHECKS_PER_CONNECT / 2);
        live.truncate(LANDMARK_CHECKS_PER_CONNECT / 2);
        let mut jobs: Vec<(ProbeSnapshot, Measurable)> = Vec::new();
        for t in &targets {
            jobs.push((me.clone(), t.clone()));
        }
        if let Some(mine) = mine {
            for other in &live {
                jobs.push((other.clone(), mine.clone()));
            }
        }
        if jobs.is_empty() {
            return;
        }
        let futs = jobs.into_iter().map(|(from, to)| {
            async move {
                // At most LANDMARK_SLOTS_PER_PROBE of these per measuring probe at a time:
                // hundreds are queued when a fleet connects, and the budget should only
                // start counting once the request is actually sent.
                let slot = self.landmark_slot(&from.probe_id);
                let Ok(_permit) = slot.acquire_owned().await else {
                    return;
                };
                // Background work: let running locates have the probes and the CPU (for at
                // most LANDMARK_MAX_YIELD, so a busy coordinator still checks its fleet).
                let yield_until = tokio::time::Instant::now() + LANDMARK_MAX_YIELD;
                while !urgent
                    && cx.locates_in_flight() > 0
                    && tokio::time::Instant::now() < yield_until
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.known_answer(cx, from.vantage_point(), &to, cx.config.ping_count, budget)
                    .await;
            }
        });
        futures::future::join_all(futs).await;
        self.evaluate_after_checks(cx).await;
    }

    /// One known-answer check: `from` measures the landmark `to` exactly as it measures a
    /// locate's target ([`crate::core::fleet::Fleet::measure_target`]: same requests, same
    /// fallback), and the answers are stored as landmark rows.
    async fn known_answer(
        &self,
        cx: &Coordinator,
        from: VantagePoint,
        to: &Measurable,
        pings: u32,
        budget: Duration,
    ) {
        let v = cx
            .fleet
            .measure_target(from, to.ip, budget, pings, None)
            .await;
        for m in &v.observations {
            let row = m.to_row(None, Purpose::Landmark, 1, Some((&to.id, to.pos)));
            if let Err(e) = cx.storage.insert_measurement(&row).await {
                tracing::error!(error = %e, probe = %row.probe_id, "could not store a measurement");
            }
        }
    }

    /// The known-answer checks to mix into a locate stage measured from `chosen`: each
    /// vantage point with probability `percent`, a random landmark other than itself, a
    /// random start within the first half of the budget.
    pub fn pick_known_answers(
        &self,
        cx: &Coordinator,
        chosen: &[VantagePoint],
        budget: Duration,
        percent: u32,
    ) -> Vec<(VantagePoint, Measurable, Duration)> {
        use rand::Rng;
        let percent = percent.min(100);
        if !cx.config.landmark_checks || percent == 0 || chosen.is_empty() {
            return Vec::new();
        }
        let all = self.measurables(cx);
        let mut rng = rand::rng();
        let mut out = Vec::new();
        let mut recent = self
            .known_answer_recent
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for vp in chosen {
            if rng.random_range(0..100) >= percent {
                continue;
            }
            let my_ips: Vec<std::net::IpAddr> = cx
                .fleet
                .registry
                .get(&vp.id)
                .map(|p| p.addresses().collect())
                .unwrap_or_default();
            let others: Vec<&Measurable> = all
                .iter()
                .filter(|m| m.id != vp.id && !my_ips.contains(&m.ip))
                .collect();
            let mine = recent.entry(vp.id.clone()).or_default();
            let Some(to) = pick_rotating(&others, mine, &mut rng) else {
                continue;
            };
            remember(mine, &to.id);
            let half_ms = (budget.as_millis() / 2).max(1) as u64;
            let delay = Duration::from_millis(rng.random_range(0..half_ms));
            out.push((vp.clone(), to.clone(), delay));
        }
        out
    }

    /// Runs known-answer checks picked by [`Vetting::pick_known_answers`] (each after its
    /// delay), then re-evaluates flags and vetting.
    pub async fn run_known_answers(
        &self,
        cx: &Coordinator,
        jobs: Vec<(VantagePoint, Measurable, Duration)>,
        pings: u32,
        budget: Duration,
    ) {
        let futs = jobs.into_iter().map(|(from, to, delay)| async move {
            tokio::time::sleep(delay).await;
            self.known_answer(cx, from, &to, pings, budget).await;
        });
        futures::future::join_all(futs).await;
        self.evaluate_after_checks(cx).await;
    }

    /// Evaluates after new landmark rows, unless an evaluation that started after they were
    /// stored already covered them (a connecting fleet triggers one check per probe:
    /// coalesce them).
    async fn evaluate_after_checks(&self, cx: &Coordinator) {
        let mine = self.landmark_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let _g = self.lock.lock().await;
        if self.evaluated_generation.load(Ordering::SeqCst) >= mine {
            return;
        }
        if let Err(e) = self.evaluate_locked(cx).await {
            tracing::error!(error = %e, "speed-of-light evaluation failed");
        }
    }

    /// The semaphore bounding landmark measurements from `probe_id`.
    fn landmark_slot(&self, probe_id: &str) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self
            .landmark_slots
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        slots
            .entry(probe_id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(LANDMARK_SLOTS_PER_PROBE)))
            .clone()
    }

    /// Minimum echo RTT per unordered landmark pair, from the stored landmark measurements
    /// that are about the current declared positions and newer than both flag epochs.
    /// Values: (RTT ms, position of the first, position of the second). Reads the
    /// landmark-RTT index: one row per (probe, landmark, positions), no raw JSON.
    async fn current_pairs(
        &self,
        cx: &Coordinator,
    ) -> crate::Result<(PairMap, BTreeMap<String, ProbeSnapshot>)> {
        let evidence = cx.storage.landmark_evidence().await?;
        Ok(self.pairs_from(cx, &evidence))
    }

    /// The landmark pairs the checks use ([`Vetting::current_pairs`], from the index).
    pub async fn landmark_pairs(&self, cx: &Coordinator) -> crate::Result<PairMap> {
        Ok(self.current_pairs(cx).await?.0)
    }

    /// The same pairs computed the former way, from every raw landmark row re-read and
    /// re-parsed: the reference the indexed query is tested against.
    pub async fn landmark_pairs_reparsed(&self, cx: &Coordinator) -> crate::Result<PairMap> {
        let rows = cx.storage.landmark_measurements().await?;
        let evidence: Vec<LandmarkRttRow> = rows.iter().filter_map(|r| r.landmark_rtt()).collect();
        Ok(self.pairs_from(cx, &evidence).0)
    }

    /// The best RTT per pair from `evidence` (oldest first), keeping only rows about the
    /// current declared positions and newer than both flag epochs; with the fleet's
    /// snapshot.
    fn pairs_from(
        &self,
        cx: &Coordinator,
        evidence: &[LandmarkRttRow],
    ) -> (PairMap, BTreeMap<String, ProbeSnapshot>) {
        let probes: BTreeMap<String, ProbeSnapshot> = cx
            .fleet
            .registry
            .snapshot()
            .into_iter()
            .map(|p| (p.probe_id.clone(), p))
            .collect();
        let position_of = |id: &str| -> Option<(LatLon, i64)> {
            if let Some(p) = probes.get(id) {
                return Some((p.pos(), p.flag_epoch_unix_ms));
            }
            cx.landmarks.iter().find(|l| l.id == id).map(|l| {
                (
                    LatLon {
                        lat: l.lat,
                        lon: l.lon,
                    },
                    0,
                )
            })
        };
        let mut best: PairMap = BTreeMap::new();
        for r in evidence {
            let to = r.landmark.as_str();
            let Some(rtt) = r.rtt_ms else {
                continue;
            };
            let (from_pos, to_pos) = (
                LatLon {
                    lat: r.from_lat,
                    lon: r.from_lon,
                },
                LatLon {
                    lat: r.to_lat,
                    lon: r.to_lon,
                },
            );
            // Only evidence about the current declared positions, newer than the epochs.
            let (Some((cur_from, ep_from)), Some((cur_to, ep_to))) =
                (position_of(&r.probe_id), position_of(to))
            else {
                continue;
            };
            if r.created_unix_ms < ep_from.max(ep_to)
                || distance_km(cur_from, from_pos) > SAME_POSITION_KM
                || distance_km(cur_to, to_pos) > SAME_POSITION_KM
            {
                continue;
            }
            let key = if r.probe_id.as_str() < to {
                (r.probe_id.clone(), to.to_string())
            } else {
                (to.to_string(), r.probe_id.clone())
            };
            let (pa, pb) = if r.probe_id.as_str() < to {
                (from_pos, to_pos)
            } else {
                (to_pos, from_pos)
            };
            let e = best.entry(key).or_insert((rtt, pa, pb));
            if rtt < e.0 {
                *e = (rtt, pa, pb);
            }
        }
        (best, probes)
    }

    /// The delay model fitted on the landmark RTTs (pairs with a flagged probe or a
    /// faster-than-light RTT left out); None when calibration is off or there are fewer than
    /// `MIN_CALIBRATION_POINTS` pairs. Cached: refitted by every speed-of-light evaluation
    /// and flag change, so a locate does not re-read the landmark measurements.
    pub async fn calibration(&self, cx: &Coordinator) -> crate::Result<Option<Calibration>> {
        if !cx.config.calibrate {
            return Ok(None);
        }
        if let Some(c) = self.cached_calibration() {
            return Ok(c);
        }
        // Not fitted yet. An evaluation in progress will fit it: do not wait for it (the
        // locate goes on with the sound bound; the model used is stored with the result).
        let Ok(_g) = self.lock.try_lock() else {
            return Ok(None);
        };
        if let Some(c) = self.cached_calibration() {
            return Ok(c);
        }
        let (pairs, probes) = self.current_pairs(cx).await?;
        let cal = fit_calibration(pairs, &probes, cx.config.calibration_min_rtts as usize);
        self.store_calibration(cal.clone());
        Ok(cal)
    }

    fn cached_calibration(&self) -> Option<Option<Calibration>> {
        self.calibration_cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn store_calibration(&self, cal: Option<Calibration>) {
        self.set_cached_calibration(Some(cal));
    }

    /// Sets the cache: `None` = refit on the next use.
    fn set_cached_calibration(&self, cached: Option<Option<Calibration>>) {
        *self
            .calibration_cache
            .write()
            .unwrap_or_else(|e| e.into_inner()) = cached;
    }

    /// Re-reads all landmark measurements and flags the landmarks to blame. Flags are only
    /// ever added here; `ClearFlag` removes them. Returns the probes newly flagged.
    pub async fn evaluate_flags(&self, cx: &Coordinator) -> crate::Result<Vec<String>> {
        let _g = self.lock.lock().await;
        self.evaluate_locked(cx).await
    }

    /// [`Coordinator::evaluate_flags`] with `ftl_lock` held; also refits the calibration.
    async fn evaluate_locked(&self, cx: &Coordinator) -> crate::Result<Vec<String>> {
        self.evaluated_generation.store(
            self.landmark_generation.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        let t0 = std::time::Instant::now();
        let (best, mut probes) = self.current_pairs(cx).await?;
        tracing::debug!(
            pairs = best.len(),
            ms = t0.elapsed().as_millis() as u64,
            "landmark pairs read"
        );
        let violations: Vec<Violation> = best
            .iter()
            .filter(|(_, (rtt, a, b))| violates_speed_of_light(*a, *b, *rtt))
            .map(|((a, b), (rtt, pa, pb))| Violation {
                a: a.clone(),
                b: b.clone(),
                rtt_ms: *rtt,
                distance_km: distance_km(*pa, *pb),
            })
            .collect();
        let mut newly = Vec::new();
        for (id, vs) in blame(&violations) {
            let Some(p) = probes.get(&id) else {
                tracing::warn!(landmark = %id, "passive landmark involved in faster-than-light RTTs: check its position");
                continue;
            };
            if p.flagged {
                continue;
            }
            // One faster-than-light pair cannot tell which of the two lies (and while a
            // fleet connects, the first pair measured with a misplaced newcomer would take
            // an honest probe down with it): flag only on evidence from two others or more.
            let partners: BTreeSet<&str> = vs
                .iter()
                .map(|v| {
                    if v.a == id {
                        v.b.as_str()
                    } else {
                        v.a.as_str()
                    }
                })
                .collect();
            // Evidence against an established probe counts only from established probes and
            // passive landmarks: fresh registrations cannot take an established probe down.
            if self.established(cx, p) {
                let heard: BTreeSet<&str> = partners
                    .iter()
                    .copied()
                    .filter(|o| probes.get(*o).is_none_or(|q| self.established(cx, q)))
                    .collect();
                if heard.len() < partners.len() {
                    tracing::warn!(probe = %id, unestablished = partners.len() - heard.len(), "faster-than-light evidence from new probes against an established one ignored");
                }
                if heard.len() < MIN_VIOLATION_PARTNERS {
                    continue;
                }
            }
            if partners.len() < MIN_VIOLATION_PARTNERS {
                tracing::info!(probe = %id, "one faster-than-light pair: waiting for more evidence before flagging");
                continue;
            }
            let reason = vs
                .iter()
                .map(|v| v.describe(&id))
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(probe = %id, %reason, "probe flagged");
            cx.storage.set_probe_flag(&id, true, &reason, None).await?;
            cx.fleet.registry.set_flag(&id, true, &reason, None);
            if let Some(p) = probes.get_mut(&id) {
                p.row.flagged = true;
            }
            newly.push(id);
        }
        // Vetting: per probe, the distinct landmarks (passive, or unflagged probes) it has a
        // consistent echo RTT with at its current position (`best` holds only such pairs).
        let mut passed: HashMap<String, (LatLon, BTreeSet<&str>)> = HashMap::new();
        let unflagged = |id: &str| probes.get(id).is_none_or(|p| !p.flagged);
        for ((a, b), (rtt, pa, pb)) in &best {
            if violates_speed_of_light(*pa, *pb, *rtt) || !unflagged(a) || !unflagged(b) {
                continue;
            }
            for (me, pos, other) in [(a, *pa, b), (b, *pb, a)] {
                if probes.contains_key(me.as_str()) {
                    passed
                        .entry(me.clone())
                        .or_insert_with(|| (pos, BTreeSet::new()))
                        .1
                        .insert(other.as_str());
                }
            }
        }
        *self.passed.write().unwrap_or_else(|e| e.into_inner()) = passed
            .into_iter()
            .map(|(id, (pos, others))| (id, (pos, others.len())))
            .collect();
        self.passed_ready.store(true, Ordering::SeqCst);
        if cx.config.calibrate {
            self.store_calibration(fit_calibration(
                best,
                &probes,
                cx.config.calibration_min_rtts as usize,
            ));
        }
        Ok(newly)
    }

    /// Clears a probe's flag; older evidence no longer counts against it. Returns whether
    /// it was flagged, None for an unknown probe.
    pub async fn clear_flag(
        &self,
        cx: &Coordinator,
        probe_id: &str,
    ) -> crate::Result<Option<bool>> {
        let _g = self.lock.lock().await;
        let Some(p) = cx.fleet.registry.get(probe_id) else {
            return Ok(None);
        };
        let now = unix_ms();
        cx.storage
            .set_probe_flag(probe_id, false, "", Some(now))
            .await?;
        cx.fleet.registry.set_flag(probe_id, false, "", Some(now));
        // The evidence counted changed: refit on the next use.
        self.set_cached_calibration(None);
        Ok(Some(p.flagged))
    }
}

/// Fits the calibration on landmark pairs, leaving out pairs with a flagged probe and
/// faster-than-light pairs; only probes with `min_rtts` pairs get a model; None below
/// `MIN_CALIBRATION_POINTS` pairs or when no probe has enough.
fn fit_calibration(
    pairs: PairMap,
    probes: &BTreeMap<String, ProbeSnapshot>,
    min_rtts: usize,
) -> Option<Calibration> {
    let flagged = |id: &str| probes.get(id).is_some_and(|p| p.flagged);
    let rtts: Vec<LandmarkRtt> = pairs
        .into_iter()
        .filter(|((a, b), (rtt, pa, pb))| {
            !flagged(a) && !flagged(b) && !violates_speed_of_light(*pa, *pb, *rtt)
        })
        .map(|((a, b), (rtt, pa, pb))| LandmarkRtt {
            from: a,
            from_pos: pa,
            to: b,
            to_pos: pb,
            rtt_ms: rtt,
        })
        .collect();
    if rtts.len() < MIN_CALIBRATION_POINTS {
        return None;
    }
    let cal = Calibration::fit_with_min(&rtts, min_rtts);
    (!cal.is_empty()).then_some(cal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &str, b: &str) -> Violation {
        Violation {
            a: a.into(),
            b: b.into(),
            rtt_ms: 1.0,
            distance_km: 5000.0,
        }
    }

    #[test]
    fn one_liar_takes_the_blame() {
        let b = blame(&[
            v("honest1", "liar"),
            v("honest2", "liar"),
            v("honest3", "liar"),
        ]);
        assert_eq!(b.keys().collect::<Vec<_>>(), ["liar"]);
        assert_eq!(b["liar"].len(), 3);
    }

    #[test]
    fn isolated_pair_blames_both_and_nothing_blames_none() {
        let b = blame(&[v("a", "b")]);
        assert_eq!(b.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(blame(&[]).is_empty());
    }

    fn landmarks(n: usize) -> Vec<Measurable> {
        (0..n)
            .map(|i| Measurable {
                id: format!("l{i:02}"),
                pos: LatLon { lat: 0.0, lon: 0.0 },
                ip: std::net::IpAddr::from([10, 0, 0, i as u8]),
            })
            .collect()
    }

    /// Runs `checks` rotating picks among `n` landmarks; the ids picked, in order.
    fn rotate(n: usize, checks: usize, seed: u64) -> Vec<String> {
        use rand::SeedableRng;
        let all = landmarks(n);
        let cands: Vec<&Measurable> = all.iter().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut recent = VecDeque::new();
        (0..checks)
            .map(|_| {
                let m = pick_rotating(&cands, &recent, &mut rng).expect("a candidate");
                remember(&mut recent, &m.id);
                assert!(recent.len() <= KNOWN_ANSWER_MEMORY);
                m.id.clone()
            })
            .collect()
    }

    #[test]
    fn known_answer_checks_rotate_over_the_landmarks() {
        for seed in 0..50 {
            // Fewer landmarks than the memory: every round of n checks meets all of them.
            let n = 19;
            let picks = rotate(n, 3 * n, seed);
            for round in picks.chunks(n) {
                let distinct: BTreeSet<&String> = round.iter().collect();
                assert_eq!(distinct.len(), n, "seed {seed}: {round:?}");
            }
            // More landmarks than the memory: any window of KNOWN_ANSWER_MEMORY consecutive
            // checks meets distinct landmarks, and the choice stays random.
            let picks = rotate(100, 200, seed);
            for w in picks.windows(KNOWN_ANSWER_MEMORY) {
                let distinct: BTreeSet<&String> = w.iter().collect();
                assert_eq!(distinct.len(), KNOWN_ANSWER_MEMORY, "seed {seed}");
            }
            assert_ne!(picks, rotate(100, 200, seed + 1000));
        }
        assert!(pick_rotating(&[], &VecDeque::new(), &mut rand::rng()).is_none());
    }

    #[test]
    fn description_has_units() {
        let s = v("a", "b").describe("a");
        assert!(s.contains("1.00 ms to b") && s.contains("5000 km"), "{s}");
    }
}
