//! [`Coordinator`]: the state shared by the adapters, composed of parts that each own their
//! state (the [`Fleet`] with its registry and throttle, the [`Vetting`] of positions, the
//! store, landmarks and GeoIP database); every `impl Coordinator` is in this file.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use geoloc_engine::{Calibration, Solution};

use crate::config::Config;
use crate::core::access::Access;
use crate::core::fleet::Fleet;
use crate::core::geoip::GeoIp;
use crate::core::identity::{self, EnrolError, Enrolled, Principal, Revocations};
use crate::core::landmarks::{self, Landmark};
use crate::core::locate::{self, LocateFailure, LocateParams, Located, Progress};
use crate::core::measurement::RequestDefaults;
use crate::core::metrics::Metrics;
use crate::core::register::{self, RegisterError, Registered, Registration};
use crate::core::registry::Registry;
use crate::core::rows::ResultRow;
use crate::core::source::MeasurementSource;
use crate::core::throttle::Throttle;
use crate::core::vetting::Vetting;
use crate::storage::Storage;
use crate::{unix_ms, Result};

/// A probe last seen this recently before a start is expected to reconnect, ms.
const RECENTLY_SEEN_MS: i64 = 3_600_000;

/// The coordinator's state, shared by the gRPC services.
pub struct Coordinator {
    pub config: Config,
    pub storage: Storage,
    /// The own probes: registry, registration limits, how they are asked. The first
    /// [`MeasurementSource`].
    pub fleet: Fleet,
    /// Speed-of-light checks and the fitted delay model.
    pub vetting: Vetting,
    pub landmarks: Vec<Landmark>,
    pub geoip: Option<GeoIp>,
    /// API keys and abuse limits.
    pub access: Access,
    /// Revoked probes as last read from the store ([`identity::watch_revocations`]).
    pub revocations: Revocations,
    shutting_down: AtomicBool,
    /// Locate runs in progress (landmark checks yield to them).
    locates_in_flight: AtomicUsize,
    /// What the core counts for operators (shared with the fleet).
    pub metrics: Arc<Metrics>,
    /// RIPE Atlas as a second source (`atlas-base-url`); None when not configured.
    pub atlas: Option<crate::core::atlas_source::Atlas>,
    /// This coordinator, for background work started by a locate (known-answer checks).
    this: std::sync::Weak<Coordinator>,
}

impl Coordinator {
    /// Opens the database (applying migrations), loads landmarks, the GeoIP database and the
    /// known probes; runs left `running` by a previous process are marked `interrupted`.
    pub async fn new(config: Config) -> Result<Arc<Coordinator>> {
        let storage = Storage::connect(&config.database).await?;
        Self::with_storage(config, storage).await
    }

    /// Like [`Coordinator::new`] with an already opened store.
    pub async fn with_storage(config: Config, storage: Storage) -> Result<Arc<Coordinator>> {
        config.validate()?;
        let landmarks = match &config.landmarks {
            Some(p) => landmarks::load(p)?,
            None => Vec::new(),
        };
        let geoip = match &config.geoip {
            Some(p) => Some(GeoIp::open(p)?),
            None => None,
        };
        let interrupted = storage.mark_interrupted(unix_ms()).await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "runs left unfinished by a previous coordinator marked interrupted"
            );
        }
        let registry = Registry::new(Duration::from_millis(u64::from(
            config.heartbeat_interval_ms,
        )));
        let known = storage.list_probes().await?;
        let now = unix_ms();
        // Unflagged probes seen in the hour before this start: after a restart, locates
        // wait (up to `reconnect_grace_ms`) for this many to be healthy again.
        let expected = known
            .iter()
            .filter(|p| !p.flagged && now - p.last_seen_unix_ms < RECENTLY_SEEN_MS)
            .count();
        registry.load(known);
        // Landmark evidence of rows stored before the evidence table existed.
        let indexed = storage.backfill_landmark_rtts().await?;
        if indexed > 0 {
            tracing::info!(
                indexed,
                "landmark measurements indexed for the speed-of-light checks"
            );
        }
        let mut fleet = Fleet::new(
            registry,
            RequestDefaults {
                ping_interval_ms: config.ping_interval_ms,
                allow_private: config.allow_private,
            },
            Duration::from_millis(u64::from(config.reconnect_grace_ms)),
            expected,
        );
        fleet.throttle = Throttle::new(config.new_probes_per_s, config.max_probes);
        let access = Access::new(
            config.auth == crate::config::Auth::Keys,
            config.per_target_packets_per_hour,
        );
        let metrics = Arc::clone(&fleet.metrics);
        let atlas = crate::core::atlas_source::Atlas::from_config(&config)?;
        let coord = Arc::new_cyclic(|this| Coordinator {
            access,
            config,
            storage,
            fleet,
            vetting: Vetting::default(),
            landmarks,
            geoip,
            revocations: Revocations::default(),
            shutting_down: AtomicBool::new(false),
            locates_in_flight: AtomicUsize::new(0),
            metrics,
            atlas,
            this: this.clone(),
        });
        identity::sweep_revocations(&coord).await?;
        identity::spawn_revocation_watch(&coord);
        Ok(coord)
    }

    // ---- lifecycle ------------------------------------------------------------------------

    /// Starts stopping: no new locate runs, probe sessions closed; runs in flight end as
    /// `interrupted` (clients see UNAVAILABLE and retry; their finished results are stored).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.fleet.close();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Locate runs in progress.
    pub fn locates_in_flight(&self) -> usize {
        self.locates_in_flight.load(Ordering::SeqCst)
    }

    /// Counts a locate run until the guard is dropped.
    pub(crate) fn locate_guard(&self) -> InFlight<'_> {
        self.locates_in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(&self.locates_in_flight)
    }

    // ---- locating -------------------------------------------------------------------------

    /// Locates one address with the source `p.source` names (the own fleet, RIPE Atlas, or
    /// both). `progress` hears every stage and every vantage point that finished.
    pub async fn locate(
        &self,
        p: LocateParams,
        progress: Progress<'_>,
    ) -> std::result::Result<Located, LocateFailure> {
        let start = std::time::Instant::now();
        let r = crate::core::sources::locate(self, p, progress).await;
        self.observe_locate(&r, start);
        r
    }

    /// Like [`Coordinator::locate`] with measurements from `source` (a replay, a platform).
    pub async fn locate_with(
        &self,
        source: &dyn MeasurementSource,
        p: LocateParams,
        progress: Progress<'_>,
    ) -> std::result::Result<Located, LocateFailure> {
        let start = std::time::Instant::now();
        let r = locate::run(self, source, p, progress).await;
        self.observe_locate(&r, start);
        r
    }

    /// A traceroute toward `p.ip` from one vetted probe, admitted like a locate (see
    /// [`crate::core::trace`]).
    pub async fn trace(
        &self,
        p: crate::core::trace::TraceParams,
    ) -> std::result::Result<crate::core::trace::Traced, LocateFailure> {
        crate::core::trace::run(self, p).await
    }

    fn observe_locate(
        &self,
        r: &std::result::Result<Located, LocateFailure>,
        start: std::time::Instant,
    ) {
        let outcome = match r {
            Ok(_) => "located",
            Err(f) => f.code.as_str(),
        };
        self.metrics.observe_locate(outcome, start.elapsed());
    }

    // ---- operations -----------------------------------------------------------------------

    /// Sets the gauges that mirror state (probes connected / healthy / flagged, locates in
    /// flight) from that state; called before each `/metrics` answer.
    pub fn refresh_metrics(&self) {
        let probes = self.fleet.registry.snapshot();
        let count = |f: fn(&crate::core::registry::ProbeSnapshot) -> bool| {
            probes.iter().filter(|p| f(p)).count() as i64
        };
        self.metrics.probes_connected.set(count(|p| p.connected));
        self.metrics.probes_healthy.set(count(|p| p.healthy));
        self.metrics.probes_flagged.set(count(|p| p.flagged));
        self.metrics
            .locates_in_flight
            .set(self.locates_in_flight() as i64);
    }

    /// A finished result read back from the store.
    pub async fn stored(&self, row: &ResultRow) -> Result<Located> {
        locate::located(&self.storage, row, true).await
    }

    /// Recomputes a stored result from its measurement rows (same derivation, same GeoIP
    /// record, same instant for UTC offsets).
    pub async fn recompute(&self, result_id: &str) -> Result<Solution> {
        locate::recompute(&self.storage, result_id).await
    }

    // ---- the fleet ------------------------------------------------------------------------

    /// Rate and credential checks of a registration, before its fields are read; says who
    /// the credential is.
    pub async fn admit(
        &self,
        peer: Option<std::net::IpAddr>,
        credential: &str,
        probe_id: &str,
    ) -> std::result::Result<Principal, RegisterError> {
        register::admit(self, peer, credential, probe_id).await
    }

    /// An enrolled probe's declared position against its approved one.
    pub async fn check_position(
        &self,
        who: &Principal,
        pos: geoloc_engine::LatLon,
    ) -> std::result::Result<(), RegisterError> {
        register::check_position(self, who, pos).await
    }

    /// Records a registration; returns the session token and flag state.
    pub async fn register(
        &self,
        r: Registration,
    ) -> std::result::Result<Registered, RegisterError> {
        register::register(self, r).await
    }

    /// Exchanges a one-time enrolment token for a per-probe credential.
    pub async fn enroll(&self, token: &str) -> std::result::Result<Enrolled, EnrolError> {
        identity::enroll(self, token).await
    }

    /// Whether `probe_id` is revoked, read from the store (another process may have revoked
    /// it a moment ago).
    pub async fn is_revoked(&self, probe_id: &str) -> Result<bool> {
        let revoked = self
            .storage
            .identity(probe_id)
            .await?
            .is_some_and(|i| i.revoked());
        if revoked {
            self.revocations.note(probe_id);
        }
        Ok(revoked)
    }

    // ---- vetting --------------------------------------------------------------------------

    /// After `probe_id` connected: it measures other landmarks, other live probes measure
    /// it; then flags are re-evaluated. Bounded by `budget` per measurement.
    pub async fn check_landmarks_for(&self, probe_id: &str, budget: Duration) {
        self.vetting
            .check_landmarks_for(self, probe_id, budget)
            .await
    }

    /// Re-reads all landmark measurements and flags the landmarks to blame. Returns the
    /// probes newly flagged.
    pub async fn evaluate_flags(&self) -> Result<Vec<String>> {
        self.vetting.evaluate_flags(self).await
    }

    /// The delay model fitted on the landmark RTTs, if calibration is on and there is one.
    pub async fn calibration(&self) -> Result<Option<Calibration>> {
        self.vetting.calibration(self).await
    }

    /// Mixes known-answer checks into a locate stage measured from `chosen` with `pings`
    /// echo requests and `budget`, for `percent` of them (see
    /// [`Vetting::pick_known_answers`]); they run in the background, interleaved with the
    /// stage's requests.
    pub(crate) fn mix_known_answers(
        &self,
        chosen: &[crate::core::source::VantagePoint],
        pings: u32,
        budget: Duration,
        percent: u32,
    ) {
        let jobs = self
            .vetting
            .pick_known_answers(self, chosen, budget, percent);
        if jobs.is_empty() {
            return;
        }
        let Some(me) = self.this.upgrade() else {
            return;
        };
        tracing::debug!(
            checks = jobs.len(),
            "known-answer checks mixed into a locate"
        );
        tokio::spawn(async move {
            me.vetting.run_known_answers(&me, jobs, pings, budget).await;
        });
    }

    /// Clears a probe's flag; returns whether it was flagged, None for an unknown probe.
    pub async fn clear_flag(&self, probe_id: &str) -> Result<Option<bool>> {
        self.vetting.clear_flag(self, probe_id).await
    }
}

/// Decrements the locate counter when dropped.
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
