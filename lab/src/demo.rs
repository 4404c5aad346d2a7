//! `geoloc lab demo`: the whole system on the emulated Internet.
//!
//! Brings up the emulator with a coordinator host, N probe agents in cities spread over the
//! world and M targets at known positions (some dropping ICMP, one silent, one anycast, one
//! located over IPv6), writes a City `.mmdb` for the targets in which some entries are
//! deliberately wrong, starts the real `geoloc-coordinator` (SQLite in a temporary folder,
//! `--allow-private`) and `geoloc-probe-agent`s in their namespaces, locates every target
//! with the real `geoloc locate --json`, and compares each answer with the truth.
//! Everything (processes, namespaces, temporary files) is removed at the end, on error and
//! on Ctrl-C / SIGTERM.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use geoloc_client::LocateLine;

use crate::geo::{self, distance_km, City, DelayModel, LatLon};
use crate::world::{self, Placement, World};
use crate::{Behaviour, Lab};

/// gRPC port of the coordinator inside its namespace.
pub const COORDINATOR_PORT: u16 = 7470;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Probe agents, spread over the world. 50 by default: with 20 the lab's regions are
    /// continent-sized (seed 1: median error 1023 km, 2 of 8 time zones right), with 50
    /// they are not (320 km, 6 of 8), for the same run time (about 23 s).
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

/// How a demo target behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Normal,
    DropIcmp,
    Silent,
    Anycast,
    Ipv6,
}

/// One target as planned: the truth the answers are checked against.
#[derive(Debug, Clone, Serialize)]
pub struct TargetPlan {
    pub name: String,
    pub kind: TargetKind,
    /// Where it is (for anycast: every instance).
    pub cities: Vec<City>,
    /// The position the lab's `.mmdb` gives it.
    pub maxmind: City,
    /// True when that position was chosen deliberately wrong (>= 5,000 km away).
    pub maxmind_wrong: bool,
}

/// One located target (a row of the table and of the JSON `rows`).
#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    pub name: String,
    pub ip: String,
    pub kind: TargetKind,
    pub true_city: String,
    pub true_lat: f64,
    pub true_lon: f64,
    pub true_tz: String,
    pub estimate_lat: Option<f64>,
    pub estimate_lon: Option<f64>,
    pub estimate_city: Option<String>,
    /// Distance from the estimate to the truth (anycast: to the nearest instance), km.
    pub error_km: Option<f64>,
    pub radius_km: Option<f64>,
    pub region_km2: Option<f64>,
    /// The true position lies inside the reported region (anycast: any instance).
    pub contained: bool,
    pub tz: Option<String>,
    pub tz_match: bool,
    pub anycast_reported: bool,
    pub instances_true: usize,
    pub instances_reported: usize,
    pub maxmind_city: String,
    pub maxmind_wrong: bool,
    pub maxmind_verdict: Option<String>,
    pub probes_used: Option<u64>,
    pub locate_ms: f64,
    pub error: Option<String>,
}

/// Durations of the demo's stages, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub lab_up_ms: f64,
    pub coordinator_ready_ms: f64,
    pub probes_ready_ms: f64,
    pub locate_total_ms: f64,
    pub locate_median_ms: f64,
    pub teardown_ms: f64,
}

/// The JSON summary (`--json`). Schema: lab/README.md.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub seed: u64,
    pub probes: usize,
    pub targets: usize,
    pub located: usize,
    pub median_km: Option<f64>,
    pub p80_km: Option<f64>,
    /// Targets whose true position is inside the reported region.
    pub contained: usize,
    /// Targets whose reported IANA time zone is the true one.
    pub tz_match: usize,
    /// Targets whose MaxMind entry came out `provably-wrong`.
    pub maxmind_flagged: usize,
    /// Targets given a deliberately wrong MaxMind entry.
    pub maxmind_wrong: usize,
    pub rows: Vec<TargetRow>,
    pub timings: Timings,
    pub emulator: crate::emulator::StatsSnapshot,
}

/// Percentile (nearest rank) of a sorted slice.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Plans the targets: kinds in the order ICMP-silent, silent, anycast,
/// IPv6, then normal; cities drawn (seeded) from `pool`; every third MaxMind entry
/// (index 1, 4, 7, ...) deliberately put at a city at least 5,000 km away.
pub fn plan_targets(
    pool: &[City],
    m: usize,
    anycast_instances: usize,
    seed: u64,
) -> anyhow::Result<Vec<TargetPlan>> {
    if pool.len() < 10 {
        bail!("need at least 10 candidate cities, have {}", pool.len());
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x07a2_6e75);
    let pick = |rng: &mut StdRng| pool[rng.random_range(0..pool.len())].clone();
    let kinds = [
        TargetKind::DropIcmp,
        TargetKind::Silent,
        TargetKind::Anycast,
        TargetKind::Ipv6,
    ];
    let mut out = Vec::with_capacity(m);
    for i in 0..m {
        let kind = kinds.get(i).copied().unwrap_or(TargetKind::Normal);
        let cities = if kind == TargetKind::Anycast {
            world::spread(
                &anycast_hubs(),
                anycast_instances.clamp(2, ANYCAST_HUBS.len()),
                rng.random(),
            )?
        } else {
            vec![pick(&mut rng)]
        };
        let wrong = i % 3 == 1;
        let maxmind = if wrong {
            let mut c = pick(&mut rng);
            let mut tries = 0;
            while cities.iter().any(|t| distance_km(t.pos, c.pos) < 5000.0) && tries < 1000 {
                c = pick(&mut rng);
                tries += 1;
            }
            c
        } else {
            cities[0].clone()
        };
        out.push(TargetPlan {
            name: format!("t{i}"),
            kind,
            cities,
            maxmind,
            maxmind_wrong: wrong,
        });
    }
    Ok(out)
}

/// Where anycast instances go: big interconnection hubs (built-in city names), spread
/// over the world by farthest-point sampling. Real anycast networks sit where many networks
/// meet, which is also where probes are dense enough to tell the instances apart.
pub const ANYCAST_HUBS: &[&str] = &["Frankfurt", "Washington", "Singapore", "London", "Tokyo"];

fn anycast_hubs() -> Vec<City> {
    geo::builtin_cities()
        .into_iter()
        .filter(|c| ANYCAST_HUBS.contains(&c.name.as_str()))
        .collect()
}

/// Writes a GeoIP2-City `.mmdb` with one /32 (and /128) per target.
pub fn write_mmdb(path: &Path, entries: &[(IpAddr, &City)]) -> anyhow::Result<()> {
    let mut w = mmdb_writer::Writer::new("GeoIP2-City");
    for (ip, city) in entries {
        // Typed values: the GeoIP2 schema wants accuracy_radius as uint16, a serde
        // integer would be written as a wider type readers reject.
        use mmdb_writer::Value as V;
        let record = V::map([
            (
                "city",
                V::map([("names", V::map([("en", V::from(city.name.as_str()))]))]),
            ),
            (
                "country",
                V::map([("iso_code", V::from(city.country.as_str()))]),
            ),
            (
                "location",
                V::map([
                    ("latitude", V::Double(city.pos.lat)),
                    ("longitude", V::Double(city.pos.lon)),
                    ("accuracy_radius", V::U16(20)),
                    ("time_zone", V::from(city.tz.as_str())),
                ]),
            ),
        ]);
        w.insert_value(*ip, record)
            .with_context(|| format!("mmdb entry for {ip}"))?;
    }
    std::fs::write(path, w.to_bytes()?).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Finds `name` in `bin_dir`, next to the running executable (or its parent, for test
/// binaries in `target/*/deps`), then on PATH.
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = bin_dir {
        dirs.push(d.to_path_buf());
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            dirs.push(d.to_path_buf());
            if let Some(p) = d.parent() {
                dirs.push(p.to_path_buf());
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "`{name}` not found (build it: cargo build --workspace --bins; or pass --bin-dir)"
            )
        })
}

/// Point in polygon (ray casting on lon/lat) for a GeoJSON Polygon, MultiPolygon or
/// GeometryCollection (anything else, or null, contains nothing); a region crossing the
/// antimeridian is tested with the point's longitude shifted by 360°.
pub fn region_contains(region: &Value, p: LatLon) -> bool {
    match geojson::Geometry::try_from(region.clone()) {
        Ok(g) => geometry_contains(&g.value, p),
        Err(_) => false,
    }
}

fn geometry_contains(g: &geojson::Value, p: LatLon) -> bool {
    fn ring_contains(ring: &[Vec<f64>], x: f64, y: f64) -> bool {
        let pts: Vec<(f64, f64)> = ring
            .iter()
            .filter_map(|c| Some((*c.first()?, *c.get(1)?)))
            .collect();
        let mut inside = false;
        let n = pts.len();
        for i in 0..n {
            let (xi, yi) = pts[i];
            let (xj, yj) = pts[(i + n - 1) % n];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
        }
        inside
    }
    fn polygon_contains(rings: &[Vec<Vec<f64>>], x: f64, y: f64) -> bool {
        let mut it = rings.iter();
        let Some(outer) = it.next() else { return false };
        ring_contains(outer, x, y) && !it.any(|hole| ring_contains(hole, x, y))
    }
    let polys: Vec<&Vec<Vec<Vec<f64>>>> = match g {
        geojson::Value::Polygon(rings) => vec![rings],
        geojson::Value::MultiPolygon(polys) => polys.iter().collect(),
        geojson::Value::GeometryCollection(gs) => {
            return gs.iter().any(|g| geometry_contains(&g.value, p))
        }
        _ => Vec::new(),
    };
    [p.lon, p.lon + 360.0, p.lon - 360.0]
        .iter()
        .any(|&x| polys.iter().any(|poly| polygon_contains(poly, x, p.lat)))
}

/// Runs a command with a hard timeout, returning its stdout (error with stderr on failure).
fn output_within(mut cmd: Command, limit: Duration) -> anyhow::Result<String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let start = Instant::now();
    // Read stdout on a thread so a large output never blocks the child.
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out_t.join().unwrap_or_default();
    let err = err_t.join().unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?}: {status}: {}", err.trim());
    }
    Ok(out)
}

/// The running demo world: lab + coordinator + agents, torn down on drop.
pub struct DemoWorld {
    pub lab: Lab,
    pub world: World,
    pub plans: Vec<TargetPlan>,
    /// Host names of the probes, in order.
    pub probes: Vec<String>,
    pub geoloc: PathBuf,
    pub coordinator_bin: PathBuf,
    pub agent_bin: PathBuf,
    pub token: String,
    pub tmp: tempfile::TempDir,
    pub timings: Timings,
    /// Extra `geoloc locate` flags for every locate of [`DemoWorld::locate`].
    pub locate_flags: Vec<String>,
    /// Extra environment of the coordinator (kept for restarts).
    pub coordinator_env: Vec<(String, String)>,
}

pub const COORDINATOR_HOST: &str = "coordinator";

impl DemoWorld {
    /// Brings everything up and waits until every probe is healthy.
    pub fn up(a: &DemoArgs) -> anyhow::Result<Self> {
        if a.probes < 3 {
            bail!(
                "--probes {} is too few: at least 3 are needed to locate anything",
                a.probes
            );
        }
        let geoloc = find_binary("geoloc", a.bin_dir.as_deref())?;
        let coordinator_bin = find_binary("geoloc-coordinator", a.bin_dir.as_deref())?;
        let agent_bin = find_binary("geoloc-probe-agent", a.bin_dir.as_deref())?;
        let builtin = geo::builtin_cities();
        let pool = if a.geonames.is_file() {
            geo::geonames_cities(&a.geonames, 1_000_000)?
        } else {
            builtin.clone()
        };
        let replay = a.replay.as_deref().map(geo::read_rtt_set).transpose()?;
        let (probe_cities, target_pool) = match &replay {
            Some(set) => {
                let mut reference = builtin.clone();
                reference.extend(pool.iter().cloned());
                let nodes = geo::rtt_set_cities(set, &reference);
                let probe_cities = world::spread(&nodes, a.probes, a.seed)?;
                let rest: Vec<City> = nodes
                    .into_iter()
                    .filter(|c| !probe_cities.iter().any(|p| p.name == c.name))
                    .collect();
                (probe_cities, rest)
            }
            None => {
                let probe_pool = if a.probes <= builtin.len() {
                    builtin.clone()
                } else {
                    pool.clone()
                };
                (world::spread(&probe_pool, a.probes, a.seed)?, pool.clone())
            }
        };
        let plans = plan_targets(&target_pool, a.targets, a.anycast_instances, a.seed)?;
        let coord_city = builtin
            .iter()
            .find(|c| c.name == "Frankfurt")
            .cloned()
            .unwrap_or_else(|| builtin[0].clone());

        let mut placements = vec![Placement {
            name: COORDINATOR_HOST.into(),
            city: coord_city,
            behaviour: Behaviour::Normal,
            anycast_group: None,
        }];
        let probes: Vec<String> = (0..a.probes).map(|i| format!("p{i:03}")).collect();
        for (name, city) in probes.iter().zip(&probe_cities) {
            placements.push(Placement {
                name: name.clone(),
                city: city.clone(),
                behaviour: Behaviour::Normal,
                anycast_group: None,
            });
        }
        for t in &plans {
            let behaviour = match t.kind {
                TargetKind::DropIcmp => Behaviour::DropIcmp,
                TargetKind::Silent => Behaviour::Silent,
                _ => Behaviour::Normal,
            };
            for (k, city) in t.cities.iter().enumerate() {
                let name = if t.cities.len() > 1 {
                    format!("{}-{k}", t.name)
                } else {
                    t.name.clone()
                };
                let anycast_group = (t.kind == TargetKind::Anycast).then(|| t.name.clone());
                placements.push(Placement {
                    name,
                    city: city.clone(),
                    behaviour,
                    anycast_group,
                });
            }
        }
        let world = match (&replay, &a.replay) {
            (Some(set), Some(dir)) => {
                let names: std::collections::HashMap<String, usize> =
                    geo::rtt_set_cities(set, &builtin)
                        .into_iter()
                        .enumerate()
                        .map(|(i, c)| (c.name, i))
                        .collect();
                let node_of: Vec<Option<usize>> = placements
                    .iter()
                    .map(|p| names.get(&p.city.name).copied())
                    .collect();
                eprintln!(
                    "replaying {}: {} of {} hosts at measured nodes",
                    dir.display(),
                    node_of.iter().flatten().count(),
                    placements.len()
                );
                World::replayed(
                    placements,
                    set,
                    &node_of,
                    &DelayModel::default(),
                    a.seed,
                    a.jitter_ms,
                )?
            }
            _ => World::build(placements, &DelayModel::default(), a.seed, a.jitter_ms)?,
        };
        let tmp = tempfile::Builder::new()
            .prefix("geoloc-lab-demo-")
            .tempdir()?;
        let mut timings = Timings::default();

        let t = Instant::now();
        let lab = Lab::up(world.topology.clone(), a.seed).context("bringing the lab up")?;
        timings.lab_up_ms = t.elapsed().as_secs_f64() * 1e3;

        // The lab's MaxMind database.
        let mut entries: Vec<(IpAddr, &City)> = Vec::new();
        for t in &plans {
            let h = lab.host(&host_of(t))?;
            entries.push((IpAddr::V4(h.v4), &t.maxmind));
            entries.push((IpAddr::V6(h.v6), &t.maxmind));
        }
        let mmdb = tmp.path().join("lab.mmdb");
        write_mmdb(&mmdb, &entries)?;

        let token = format!("lab-{}-{}", std::process::id(), a.seed);
        let locate_flags = a
            .mode
            .iter()
            .flat_map(|m| ["--mode".to_string(), m.clone()])
            .collect();
        let mut me = Self {
            lab,
            world,
            plans,
            probes,
            geoloc,
            coordinator_bin,
            agent_bin,
            token,
            tmp,
            timings,
            locate_flags,
            coordinator_env: a.coordinator_env.clone(),
        };
        let t = Instant::now();
        me.start_coordinator(&mmdb)?;
        me.wait_coordinator(Duration::from_secs(60))?;
        me.timings.coordinator_ready_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        for name in me.probes.clone() {
            me.start_agent(&name)?;
        }
        me.wait_probes(me.probes.len(), Duration::from_secs(120))?;
        me.timings.probes_ready_ms = t.elapsed().as_secs_f64() * 1e3;
        std::thread::sleep(Duration::from_secs(a.settle_secs));
        Ok(me)
    }

    pub fn coordinator_url(&self) -> anyhow::Result<String> {
        Ok(format!(
            "http://{}:{COORDINATOR_PORT}",
            self.lab.host(COORDINATOR_HOST)?.v4
        ))
    }

    /// The lab's `.mmdb`.
    pub fn mmdb_path(&self) -> PathBuf {
        self.tmp.path().join("lab.mmdb")
    }

    /// SIGKILLs the coordinator and starts it again on the same database.
    pub fn restart_coordinator(&self) -> anyhow::Result<()> {
        self.lab
            .signal_child(COORDINATOR_HOST, nix::sys::signal::Signal::SIGKILL)?;
        self.start_coordinator(&self.mmdb_path())?;
        self.wait_coordinator(Duration::from_secs(60))
    }

    /// Starts (or restarts) the coordinator in its namespace; its log goes to the temp dir.
    pub fn start_coordinator(&self, mmdb: &Path) -> anyhow::Result<()> {
        let db = self.tmp.path().join("geoloc.sqlite");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join("coordinator.log"))?;
        let args: Vec<String> = vec![
            "--listen".into(),
            format!("0.0.0.0:{COORDINATOR_PORT}"),
            "--database".into(),
            format!("sqlite://{}?mode=rwc", db.display()),
            "--geoip".into(),
            mmdb.display().to_string(),
            "--probe-token".into(),
            self.token.clone(),
            "--allow-private".into(),
        ];
        let mut cmd = self
            .lab
            .command(COORDINATOR_HOST, &self.coordinator_bin, &args)?;
        cmd.stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "warn")
            .envs(self.coordinator_env.iter().map(|(k, v)| (k, v)));
        self.lab.spawn(COORDINATOR_HOST, cmd)?;
        Ok(())
    }

    /// Starts the probe agent of host `name` at its city's position.
    pub fn start_agent(&self, name: &str) -> anyhow::Result<()> {
        let i = self
            .lab
            .topology()
            .index(name)
            .ok_or_else(|| anyhow::anyhow!("no host {name}"))?;
        let pos = self.world.placements[i].city.pos;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join(format!("{name}.log")))?;
        let h = self.lab.host(name)?;
        let args: Vec<String> = vec![
            "run".into(),
            "--id".into(),
            name.into(),
            "--advertise-ipv4".into(),
            h.v4.to_string(),
            "--advertise-ipv6".into(),
            h.v6.to_string(),
            format!("--lat={}", pos.lat),
            format!("--lon={}", pos.lon),
            "--coordinator".into(),
            self.coordinator_url()?,
            "--allow-private".into(),
        ];
        let mut cmd = self.lab.command(name, &self.agent_bin, &args)?;
        cmd.stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "warn")
            .env("GEOLOC_PROBE_TOKEN", &self.token);
        self.lab.spawn(name, cmd)?;
        Ok(())
    }

    /// `geoloc <args>` run inside the coordinator's namespace against the coordinator.
    pub fn geoloc(&self, args: &[&str], limit: Duration) -> anyhow::Result<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.push("--coordinator".into());
        all.push(format!("http://127.0.0.1:{COORDINATOR_PORT}"));
        output_within(
            self.lab.command(COORDINATOR_HOST, &self.geoloc, &all)?,
            limit,
        )
    }

    pub fn wait_coordinator(&self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            match self.geoloc(&["probes", "--json"], Duration::from_secs(10)) {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > limit => {
                    bail!(
                        "coordinator not answering after {limit:?}: {e:#}\nlog:\n{}",
                        self.log_tail("coordinator")
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Waits until at least `n` probes are healthy.
    pub fn wait_probes(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut healthy = 0;
        while start.elapsed() < limit {
            if let Ok(out) = self.geoloc(&["probes", "--json"], Duration::from_secs(10)) {
                let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
                healthy = v.as_array().map_or(0, |a| {
                    a.iter()
                        .filter(|p| p["healthy"] == Value::Bool(true))
                        .count()
                });
                if healthy >= n {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        bail!(
            "only {healthy} of {n} probes healthy after {limit:?}; first agent log:\n{}",
            self.log_tail(self.probes.first().map_or("p000", String::as_str))
        )
    }

    /// The last lines of a host's log.
    pub fn log_tail(&self, name: &str) -> String {
        let s = std::fs::read_to_string(self.tmp.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The address a target is located at (IPv6 for the IPv6 target).
    pub fn target_ip(&self, t: &TargetPlan) -> anyhow::Result<IpAddr> {
        let h = self.lab.host(&host_of(t))?;
        Ok(if t.kind == TargetKind::Ipv6 {
            IpAddr::V6(h.v6)
        } else {
            IpAddr::V4(h.v4)
        })
    }

    /// Locates one target with `geoloc locate --json` and compares with the truth.
    pub fn locate(&self, t: &TargetPlan) -> anyhow::Result<TargetRow> {
        self.locate_with(t, &[])
    }

    /// Like [`DemoWorld::locate`] with extra `geoloc locate` flags (e.g. `--mode all`).
    pub fn locate_with(&self, t: &TargetPlan, extra: &[&str]) -> anyhow::Result<TargetRow> {
        let ip = self.target_ip(t)?;
        let start = Instant::now();
        let ip_s = ip.to_string();
        let mut args = vec!["locate", "--json"];
        args.extend(self.locate_flags.iter().map(String::as_str));
        args.extend_from_slice(extra);
        args.push(&ip_s);
        let out = self.geoloc(&args, Duration::from_secs(240));
        let locate_ms = start.elapsed().as_secs_f64() * 1e3;
        let line = out.as_ref().ok().and_then(|s| json_line(s));
        Ok(compare(
            t,
            ip,
            line.as_ref(),
            locate_ms,
            out.err().map(|e| format!("{e:#}")),
        ))
    }

    /// Locates every target in turn.
    pub fn locate_all(&mut self) -> anyhow::Result<Vec<TargetRow>> {
        let start = Instant::now();
        let mut rows = Vec::new();
        for t in self.plans.clone() {
            let row = self.locate(&t)?;
            eprintln!(
                "  {} {:<10} {}",
                row.name,
                row.ip,
                row.error_km.map_or_else(
                    || row.error.clone().unwrap_or_default(),
                    |e| format!("{e:.0} km off")
                )
            );
            rows.push(row);
        }
        self.timings.locate_total_ms = start.elapsed().as_secs_f64() * 1e3;
        let mut times: Vec<f64> = rows.iter().map(|r| r.locate_ms).collect();
        times.sort_by(f64::total_cmp);
        self.timings.locate_median_ms = percentile(&times, 0.5).unwrap_or(0.0);
        Ok(rows)
    }

    /// Tears everything down, timing it.
    pub fn down(self) -> anyhow::Result<Timings> {
        let mut timings = self.timings.clone();
        let t = Instant::now();
        self.lab.down()?;
        timings.teardown_ms = t.elapsed().as_secs_f64() * 1e3;
        Ok(timings)
    }
}

/// The lab host name carrying a target's address (the first instance for anycast).
pub fn host_of(t: &TargetPlan) -> String {
    if t.cities.len() > 1 {
        format!("{}-0", t.name)
    } else {
        t.name.clone()
    }
}

/// The first line of `geoloc locate --json` output, typed; None when there is none or it
/// does not parse.
pub fn json_line(out: &str) -> Option<LocateLine> {
    out.lines()
        .find(|l| l.trim_start().starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
}

/// Checks one `geoloc locate --json` answer against the plan.
pub fn compare(
    t: &TargetPlan,
    ip: IpAddr,
    line: Option<&LocateLine>,
    locate_ms: f64,
    error: Option<String>,
) -> TargetRow {
    let (located, failure) = match line {
        Some(LocateLine::Located(l)) => (Some(l.as_ref()), None),
        Some(LocateLine::Failed { error, .. }) => (None, Some(error.message.clone())),
        None => (None, None),
    };
    let s = located.map(|l| &l.solution);
    let est = s.map(|s| LatLon {
        lat: s.estimate.lat,
        lon: s.estimate.lon,
    });
    let error_km = est.map(|e| {
        t.cities
            .iter()
            .map(|c| distance_km(e, c.pos))
            .fold(f64::INFINITY, f64::min)
    });
    let contained = s.is_some_and(|s| {
        !s.region.is_null() && t.cities.iter().any(|c| region_contains(&s.region, c.pos))
    });
    let tz = s.map(|s| s.timezone.iana.clone());
    let error = error.or(failure).or_else(|| {
        est.is_none()
            .then(|| "no estimate in the answer".to_string())
    });
    TargetRow {
        name: t.name.clone(),
        ip: ip.to_string(),
        kind: t.kind,
        true_city: t
            .cities
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" + "),
        true_lat: t.cities[0].pos.lat,
        true_lon: t.cities[0].pos.lon,
        true_tz: t.cities[0].tz.clone(),
        estimate_lat: est.map(|e| e.lat),
        estimate_lon: est.map(|e| e.lon),
        estimate_city: s.map(|s| s.place.city.clone()),
        error_km,
        radius_km: s.map(|s| s.radius_km),
        region_km2: s.map(|s| s.region_km2),
        contained,
        tz_match: tz
            .as_deref()
            .is_some_and(|z| t.cities.iter().any(|c| c.tz == z)),
        tz,
        anycast_reported: s.is_some_and(|s| s.anycast),
        instances_true: t.cities.len(),
        instances_reported: s.map_or(0, |s| s.instances.len()),
        maxmind_city: t.maxmind.name.clone(),
        maxmind_wrong: t.maxmind_wrong,
        maxmind_verdict: s
            .and_then(|s| s.maxmind.as_ref())
            .and_then(|m| serde_json::to_value(m.verdict).ok())
            .and_then(|v| v.as_str().map(String::from)),
        probes_used: located.map(|l| u64::from(l.probes_used)),
        locate_ms,
        error,
    }
}

/// Builds the summary from the rows.
pub fn summarize(
    a: &DemoArgs,
    rows: Vec<TargetRow>,
    timings: Timings,
    emulator: crate::emulator::StatsSnapshot,
) -> DemoReport {
    let mut errs: Vec<f64> = rows
        .iter()
        .filter(|r| r.kind != TargetKind::Anycast)
        .filter_map(|r| r.error_km)
        .collect();
    errs.sort_by(f64::total_cmp);
    DemoReport {
        seed: a.seed,
        probes: a.probes,
        targets: rows.len(),
        located: rows.iter().filter(|r| r.error_km.is_some()).count(),
        median_km: percentile(&errs, 0.5),
        p80_km: percentile(&errs, 0.8),
        contained: rows.iter().filter(|r| r.contained).count(),
        tz_match: rows.iter().filter(|r| r.tz_match).count(),
        maxmind_flagged: rows
            .iter()
            .filter(|r| r.maxmind_verdict.as_deref() == Some("provably-wrong"))
            .count(),
        maxmind_wrong: rows.iter().filter(|r| r.maxmind_wrong).count(),
        rows,
        timings,
        emulator,
    }
}

/// The GeoJSON written by `--geojson`: per target a `truth` point (each anycast instance),
/// an `estimate` point and its `region`.
pub fn geojson(rows: &[TargetRow], plans: &[TargetPlan], regions: &[Value]) -> Value {
    let mut features = Vec::new();
    for ((r, p), region) in rows.iter().zip(plans).zip(regions) {
        for c in &p.cities {
            features.push(json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [c.pos.lon, c.pos.lat]},
                "properties": {"feature": "truth", "target": r.name, "ip": r.ip, "city": c.name}}));
        }
        if let (Some(lat), Some(lon)) = (r.estimate_lat, r.estimate_lon) {
            features.push(json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                "properties": {"feature": "estimate", "target": r.name, "ip": r.ip, "error_km": r.error_km}}));
        }
        if !region.is_null() {
            features.push(json!({"type": "Feature", "geometry": region, "properties": {"feature": "region", "target": r.name, "ip": r.ip}}));
        }
    }
    json!({"type": "FeatureCollection", "features": features})
}

fn print_table(report: &DemoReport) {
    println!(
        "{:<4} {:<9} {:<22} {:<24} {:>8} {:>11} {:<5} {:<22}",
        "tgt", "kind", "true city", "estimate", "err km", "region km2", "tz", "MaxMind (verdict)"
    );
    for r in &report.rows {
        let kind = serde_json::to_value(r.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let est = match (r.estimate_city.as_deref(), r.estimate_lat) {
            (Some(c), _) => c.to_string(),
            (None, Some(lat)) => format!("{lat:.2},{:.2}", r.estimate_lon.unwrap_or(0.0)),
            _ => format!("FAILED: {}", r.error.as_deref().unwrap_or("?")),
        };
        let mut est = if r.anycast_reported {
            format!("anycast x{} ({est})", r.instances_reported)
        } else {
            est
        };
        est.truncate(24);
        let mut city = r.true_city.clone();
        city.truncate(22);
        println!(
            "{:<4} {:<9} {:<22} {:<24} {:>8} {:>11} {:<5} {:<22}",
            r.name,
            kind,
            city,
            est,
            r.error_km.map_or("-".into(), |e| format!("{e:.0}")),
            r.region_km2.map_or("-".into(), |a| format!("{a:.0}")),
            if r.tz_match { "ok" } else { "wrong" },
            format!(
                "{}{} ({})",
                r.maxmind_city,
                if r.maxmind_wrong { "*" } else { "" },
                r.maxmind_verdict.as_deref().unwrap_or("-")
            ),
        );
    }
    let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.0} km"));
    println!(
        "\n{} targets, {} located; median error {}, p80 {} (unicast); truth inside region: {}; time zone right: {}; \
         MaxMind flagged provably-wrong: {} (deliberately wrong, marked *: {})",
        report.targets,
        report.located,
        f(report.median_km),
        f(report.p80_km),
        report.contained,
        report.tz_match,
        report.maxmind_flagged,
        report.maxmind_wrong
    );
    let t = &report.timings;
    println!(
        "timings: lab up {:.0} ms, coordinator {:.0} ms, probes {:.0} ms, locating {:.0} ms (median {:.0} ms per target), teardown {:.0} ms",
        t.lab_up_ms, t.coordinator_ready_ms, t.probes_ready_ms, t.locate_total_ms, t.locate_median_ms, t.teardown_ms
    );
}

/// Runs the whole demo and returns its report (also used by the end-to-end tests).
pub fn run_demo(a: &DemoArgs) -> anyhow::Result<(DemoReport, Value)> {
    let mut w = DemoWorld::up(a)?;
    let plans = w.plans.clone();
    let rows = w.locate_all()?;
    // Regions for the GeoJSON: ask again for the stored results (no new measurement).
    let mut regions = Vec::new();
    for t in &plans {
        let ip = w.target_ip(t)?.to_string();
        let line = w
            .geoloc(
                &["locate", "--json", "--reuse", &ip],
                Duration::from_secs(60),
            )
            .ok()
            .and_then(|s| json_line(&s));
        regions.push(match line {
            Some(LocateLine::Located(l)) => l.solution.region,
            _ => Value::Null,
        });
    }
    let stats = w.lab.stats();
    let timings = w.down()?;
    let report = summarize(a, rows, timings, stats);
    let gj = geojson(&report.rows, &plans, &regions);
    Ok((report, gj))
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    crate::netns::check_privileges()?;
    crate::cli::cleanup_on_signal()?;
    let limit = Duration::from_secs(a.timeout_secs);
    let args = a.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run_demo(&args));
    });
    let (report, gj) = match rx.recv_timeout(limit) {
        Ok(r) => r?,
        Err(_) => {
            crate::netns::cleanup_registered();
            bail!("the demo did not finish within {limit:?}; everything was torn down");
        }
    };
    print_table(&report);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
        println!("summary: {}", p.display());
    }
    if let Some(p) = &a.geojson {
        std::fs::write(p, serde_json::to_string(&gj)?)
            .with_context(|| format!("writing {}", p.display()))?;
        println!("geojson: {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoloc_client::{Located, Mode};
    use geoloc_engine::{MaxmindComparison, Method, Place, Solution, Timezone, Verdict};

    /// A located answer with the fields `compare` reads; the rest empty.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        lat: f64,
        lon: f64,
        tz: &str,
        city: &str,
        country: &str,
        instances: &[(f64, f64)],
        verdict: Verdict,
        probes_used: u32,
    ) -> Located {
        Located {
            ip: "x".into(),
            result_id: String::new(),
            created_at_unix_ms: 0,
            cached: false,
            mode: Mode::All,
            probes_asked: probes_used,
            probes_used,
            packets_sent: 0,
            min_rtt_ms: None,
            nearest_probe: String::new(),
            probe_rtts: vec![],
            solution: Solution {
                method: Method::Bestline,
                estimate: geoloc_engine::LatLon { lat, lon },
                radius_km: 0.0,
                region_km2: 0.0,
                radius_50_km: None,
                radius_90_km: None,
                timezone: Timezone {
                    iana: tz.into(),
                    utc_offset: "+00:00".into(),
                    utc_offset_s: 0,
                },
                timezones: vec![],
                place: Place {
                    city: city.into(),
                    country: country.into(),
                    distance_km: 0.0,
                },
                anycast: instances.len() > 1,
                instances: instances
                    .iter()
                    .map(|&(lat, lon)| geoloc_engine::Instance {
                        lat,
                        lon,
                        city: String::new(),
                        country: String::new(),
                        landmark: String::new(),
                        radius_km: 0.0,
                    })
                    .collect(),
                dropped: vec![],
                loosened: vec![],
                maxmind: Some(MaxmindComparison {
                    verdict,
                    ..MaxmindComparison::no_data()
                }),
                landmarks: probes_used as usize,
                used: probes_used as usize,
                min_rtt_ms: 0.0,
                nearest_landmark: String::new(),
                region: Value::Null,
                region_constraints: vec![],
                region_tolerance: 0,
            },
        }
    }

    #[test]
    fn plans_cover_every_kind_and_wrong_entries_are_far() {
        let pool = geo::builtin_cities();
        let plans = plan_targets(&pool, 8, 3, 1).unwrap();
        assert_eq!(plans.len(), 8);
        let kinds: Vec<TargetKind> = plans.iter().map(|p| p.kind).collect();
        assert_eq!(
            &kinds[..5],
            &[
                TargetKind::DropIcmp,
                TargetKind::Silent,
                TargetKind::Anycast,
                TargetKind::Ipv6,
                TargetKind::Normal
            ]
        );
        assert_eq!(plans[2].cities.len(), 3);
        for p in &plans {
            if p.maxmind_wrong {
                assert!(
                    p.cities
                        .iter()
                        .all(|c| distance_km(c.pos, p.maxmind.pos) >= 5000.0),
                    "{p:?}"
                );
            } else {
                assert_eq!(p.maxmind, p.cities[0]);
            }
        }
        assert_eq!(plans.iter().filter(|p| p.maxmind_wrong).count(), 3);
    }

    #[test]
    fn region_contains_points() {
        let square = json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]]]});
        assert!(region_contains(&square, LatLon { lat: 5.0, lon: 5.0 }));
        assert!(!region_contains(
            &square,
            LatLon {
                lat: 15.0,
                lon: 5.0
            }
        ));
        let multi = json!({"type": "MultiPolygon", "coordinates": [[[[170.0, -20.0], [190.0, -20.0], [190.0, -10.0], [170.0, -10.0], [170.0, -20.0]]]]});
        assert!(
            region_contains(
                &multi,
                LatLon {
                    lat: -15.0,
                    lon: -175.0
                }
            ),
            "across the antimeridian"
        );
        assert!(!region_contains(
            &Value::Null,
            LatLon { lat: 0.0, lon: 0.0 }
        ));
    }

    #[test]
    fn compare_scores_an_answer() {
        let pool = geo::builtin_cities();
        let mut plans = plan_targets(&pool, 2, 3, 3).unwrap();
        let t = plans.remove(1);
        let c = t.cities[0].clone();
        let mut v = answer(
            c.pos.lat + 0.5,
            c.pos.lon,
            &c.tz,
            "X",
            "Y",
            &[],
            Verdict::ProvablyWrong,
            12,
        );
        v.solution.radius_km = 100.0;
        v.solution.region_km2 = 31400.0;
        v.solution.region = json!({"type": "Polygon", "coordinates": [[[c.pos.lon - 1.0, c.pos.lat - 1.0], [c.pos.lon + 1.0, c.pos.lat - 1.0],
                [c.pos.lon + 1.0, c.pos.lat + 1.0], [c.pos.lon - 1.0, c.pos.lat + 1.0], [c.pos.lon - 1.0, c.pos.lat - 1.0]]]});
        let v = LocateLine::Located(Box::new(v));
        let row = compare(&t, "10.77.1.9".parse().unwrap(), Some(&v), 1234.0, None);
        assert!((row.error_km.unwrap() - 55.6).abs() < 1.0, "{row:?}");
        assert!(row.contained && row.tz_match && row.error.is_none());
        assert_eq!(row.maxmind_verdict.as_deref(), Some("provably-wrong"));
        let report = summarize(
            &DemoArgs::default(),
            vec![row.clone(), row],
            Timings::default(),
            Default::default(),
        );
        assert_eq!(
            (
                report.contained,
                report.tz_match,
                report.maxmind_flagged,
                report.located
            ),
            (2, 2, 2, 2)
        );
        let failed = compare(
            &t,
            "10.77.1.9".parse().unwrap(),
            None,
            5.0,
            Some("timeout".into()),
        );
        assert_eq!(failed.error.as_deref(), Some("timeout"));
        assert!(failed.error_km.is_none() && !failed.contained);
    }

    /// The `--json` summary's schema (lab/README.md): a snapshot of a canned report.
    #[test]
    fn summary_json_snapshot() {
        let pool = geo::builtin_cities();
        let plans = plan_targets(&pool, 3, 3, 9).unwrap();
        let answer = |p: &TargetPlan, dlat: f64, verdict: Verdict| {
            let c = &p.cities[0];
            let instances: Vec<(f64, f64)> =
                p.cities.iter().map(|c| (c.pos.lat, c.pos.lon)).collect();
            let mut v = answer(
                c.pos.lat + dlat,
                c.pos.lon,
                &c.tz,
                &c.name,
                &c.country,
                &instances,
                verdict,
                20,
            );
            v.solution.radius_km = 250.0;
            v.solution.region_km2 = 196000.0;
            LocateLine::Located(Box::new(v))
        };
        let rows = vec![
            compare(
                &plans[0],
                "10.77.1.10".parse().unwrap(),
                Some(&answer(&plans[0], 0.5, Verdict::Consistent)),
                1200.0,
                None,
            ),
            compare(
                &plans[1],
                "10.77.1.11".parse().unwrap(),
                Some(&answer(&plans[1], 2.0, Verdict::ProvablyWrong)),
                1500.0,
                None,
            ),
            compare(
                &plans[2],
                "10.77.1.12".parse().unwrap(),
                None,
                3000.0,
                Some("no-probes: none".into()),
            ),
        ];
        let timings = Timings {
            lab_up_ms: 500.0,
            coordinator_ready_ms: 250.0,
            probes_ready_ms: 2000.0,
            locate_total_ms: 5700.0,
            locate_median_ms: 1500.0,
            teardown_ms: 900.0,
        };
        let report = summarize(
            &DemoArgs {
                probes: 20,
                targets: 3,
                seed: 9,
                ..DemoArgs::default()
            },
            rows,
            timings,
            Default::default(),
        );
        insta::assert_json_snapshot!(report);
    }

    #[test]
    fn mmdb_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lab.mmdb");
        let pool = geo::builtin_cities();
        write_mmdb(
            &p,
            &[
                ("10.77.1.5".parse().unwrap(), &pool[0]),
                ("fd77:0:0:1::5".parse().unwrap(), &pool[1]),
            ],
        )
        .unwrap();
        let r = maxminddb::Reader::open_readfile(&p).unwrap();
        let v: Value = r
            .lookup("10.77.1.5".parse().unwrap())
            .unwrap()
            .decode()
            .unwrap()
            .unwrap();
        assert_eq!(v["city"]["names"]["en"], pool[0].name.as_str());
        let v6: Value = r
            .lookup("fd77:0:0:1::5".parse().unwrap())
            .unwrap()
            .decode()
            .unwrap()
            .unwrap();
        assert_eq!(v6["location"]["latitude"].as_f64(), Some(pool[1].pos.lat));
        assert!(r
            .lookup("10.77.1.6".parse().unwrap())
            .unwrap()
            .decode::<Value>()
            .unwrap()
            .is_none());
        // The typed GeoIP2 City schema, as the coordinator reads it.
        let city: maxminddb::geoip2::City = r
            .lookup("10.77.1.5".parse().unwrap())
            .unwrap()
            .decode()
            .unwrap()
            .unwrap();
        assert_eq!(city.location.latitude, Some(pool[0].pos.lat));
        assert_eq!(city.location.accuracy_radius, Some(20));
        assert_eq!(city.country.iso_code, Some(pool[0].country.as_str()));
    }
}
