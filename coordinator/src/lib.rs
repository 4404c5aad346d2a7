//! The coordinator (server). The client side of `geoloc locate|audit|probes` is the crate
//! `geoloc-client`, which talks to it over gRPC only.
//!
//! - [`Coordinator`]: probe registry with liveness ([`registry`]), landmark speed-of-light
//!   checks ([`ftl`]), scheduling ([`schedule`], [`locate`]), storage on SQLite or PostgreSQL
//!   ([`storage`]) and solving with `geoloc-engine` ([`solve`]).
//! - [`server`]: the two gRPC services of `geoloc-proto` on one port; results cross the wire
//!   typed (`geoloc_proto::convert`).
use std::sync::Arc;
use std::time::Duration;

pub mod config;
pub mod conn;
pub mod error;
pub mod ftl;
pub mod geoip;
pub mod landmarks;
pub mod locate;
pub mod raw;
pub mod registry;
pub mod schedule;
pub mod server;
pub mod solve;
pub mod storage;
pub mod target;
pub mod throttle;
pub mod validate;

pub use config::{Config, Mode};
pub use error::{CoordinatorError, Result};

use landmarks::Landmark;
use registry::Registry;
use storage::Storage;

/// Version of this coordinator.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use geoloc_rt::unix_ms;

/// A random 128-bit id in hex.
pub fn new_id() -> String {
    let v: u128 = rand::random();
    format!("{v:032x}")
}

/// The coordinator's state, shared by the gRPC services.
pub struct Coordinator {
    pub config: Config,
    pub storage: Storage,
    pub registry: Registry,
    pub landmarks: Vec<Landmark>,
    pub geoip: Option<geoip::GeoIp>,
    /// Registration rate limits.
    pub throttle: throttle::Throttle,
    /// Serialises speed-of-light evaluations.
    ftl_lock: tokio::sync::Mutex<()>,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Latest fitted calibration (None = not fitted yet); see `Coordinator::calibration`.
    calibration_cache: std::sync::RwLock<Option<Option<geoloc_engine::Calibration>>>,
    /// Landmark-check rounds finished / covered by the latest evaluation (coalescing).
    landmark_generation: std::sync::atomic::AtomicU64,
    evaluated_generation: std::sync::atomic::AtomicU64,
    /// Per measuring probe, the landmark measurements allowed at a time.
    landmark_slots:
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Locate runs in progress (landmark checks yield to them).
    locates_in_flight: std::sync::atomic::AtomicUsize,
    /// When this process started (for the reconnect grace).
    started: std::time::Instant,
    /// Unflagged probes seen in the hour before this start: after a restart, locates wait
    /// (up to `reconnect_grace_ms`) for this many to be healthy again.
    expected_probes: usize,
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
            Some(p) => Some(geoip::GeoIp::open(p)?),
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
        let expected_probes = known
            .iter()
            .filter(|p| !p.flagged && now - p.last_seen_unix_ms < RECENTLY_SEEN_MS)
            .count();
        registry.load(known);
        Ok(Arc::new(Coordinator {
            config,
            storage,
            registry,
            landmarks,
            geoip,
            throttle: throttle::Throttle::default(),
            ftl_lock: tokio::sync::Mutex::new(()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            calibration_cache: std::sync::RwLock::new(None),
            landmark_generation: std::sync::atomic::AtomicU64::new(0),
            evaluated_generation: std::sync::atomic::AtomicU64::new(0),
            landmark_slots: std::sync::Mutex::new(std::collections::HashMap::new()),
            locates_in_flight: std::sync::atomic::AtomicUsize::new(0),
            started: std::time::Instant::now(),
            expected_probes,
        }))
    }

    /// Starts stopping: no new locate runs, probe sessions closed; runs in flight end as
    /// `interrupted` (clients see UNAVAILABLE and retry; their finished results are stored).
    pub fn begin_shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.registry.close_all();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Locate runs in progress.
    pub fn locates_in_flight(&self) -> usize {
        self.locates_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts a locate run until the guard is dropped.
    pub(crate) fn locate_guard(&self) -> InFlight<'_> {
        self.locates_in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(&self.locates_in_flight)
    }

    /// The healthy probes to measure from. During the reconnect grace after a start, waits
    /// until the probes seen before the restart are back (or the grace ends), so a batch
    /// resumed right after a restart is neither refused nor measured from a handful.
    pub async fn probes_for_locate(&self) -> Vec<registry::ProbeSnapshot> {
        let grace = std::time::Duration::from_millis(u64::from(self.config.reconnect_grace_ms));
        loop {
            let healthy = self.registry.healthy();
            if healthy.len() >= self.expected_probes
                || self.started.elapsed() >= grace
                || self.is_shutting_down()
            {
                return healthy;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Decrements the locate counter when dropped.
pub(crate) struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A probe last seen this recently before a start is expected to reconnect, ms.
const RECENTLY_SEEN_MS: i64 = 3_600_000;
