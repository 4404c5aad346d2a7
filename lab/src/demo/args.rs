//! The demo's parameters: `geoloc lab demo` flags, also filled in by the tests and examples.
use std::path::PathBuf;

use clap::Args;

use crate::geo;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Probe agents, spread over the world. 50 by default: with 20 the lab's regions are
    /// continent-sized (seed 1: median error 1023 km, 5 of 8 time zones right), with 50
    /// they are not (320 km, 7 of 8), for the same run time (about 23 s).
    #[arg(long, default_value_t = 50)]
    pub probes: usize,
    /// Targets to locate (the first ones are: ICMP-silent, fully silent, anycast, IPv6).
    #[arg(long, default_value_t = 8)]
    pub targets: usize,
    /// Seed for places, delays, jitter and wrong MaxMind entries.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the JSON summary here.
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Write a GeoJSON FeatureCollection (truth, estimates, regions) here.
    #[arg(long, value_name = "OUT")]
    pub geojson: Option<PathBuf>,
    /// Mean per-packet jitter, ms (exponential).
    #[arg(long, default_value_t = 0.05)]
    pub jitter_ms: f64,
    /// Folder with `geoloc`, `geoloc-coordinator` and `geoloc-probe-agent` (default: the
    /// folder of the running `geoloc`, then PATH).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// GeoNames cities15000.zip for target cities (the built-in list when absent).
    #[arg(long, default_value = geo::GEONAMES_DEFAULT)]
    pub geonames: PathBuf,
    /// Instances of the anycast target (cities spread over the world).
    #[arg(long, default_value_t = 3)]
    pub anycast_instances: usize,
    /// Replay a measured RTT matrix (folder with nodes.csv/rtts.csv, e.g.
    /// ../shared/data/wondernetwork-train): probes and targets are placed at its nodes and
    /// every measured pair gets its measured delay.
    #[arg(long, value_name = "DIR")]
    pub replay: Option<PathBuf>,
    /// `geoloc locate --mode` (all | two-stage; default: the coordinator's).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// Seconds to wait after every probe is healthy before locating (lets the coordinator
    /// measure probe-to-probe RTTs for its calibration and faster-than-light checks).
    #[arg(long, default_value_t = 0)]
    pub settle_secs: u64,
    /// Extra environment for the coordinator (e.g. `GEOLOC_COORDINATOR_CALIBRATE=false`);
    /// for tests, not on the command line.
    #[arg(skip)]
    pub coordinator_env: Vec<(String, String)>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            probes: 50,
            targets: 8,
            seed: 1,
            json: None,
            geojson: None,
            jitter_ms: 0.05,
            bin_dir: None,
            geonames: geo::GEONAMES_DEFAULT.into(),
            mode: None,
            replay: None,
            coordinator_env: Vec::new(),
            settle_secs: 0,
            anycast_instances: 3,
            timeout_secs: 900,
        }
    }
}
