//! The running system: the lab, the coordinator and the probe agents in their namespaces,
//! brought up, driven with the real `geoloc` binary, and torn down.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use super::args::DemoArgs;
use super::mmdb::write_mmdb;
use super::plan::{host_of, plan_targets, TargetKind, TargetPlan};
use super::process::{find_binary, output_within};
use super::report::{percentile, Timings};
use super::score::{compare, json_line, TargetRow};
use crate::geo::{self, City, DelayModel};
use crate::world::{self, Placement, World};
use crate::{Behaviour, Lab};

/// gRPC port of the coordinator inside its namespace.
pub const COORDINATOR_PORT: u16 = 7470;

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
    /// The admin API key the lab's clients send (GEOLOC_API_KEY), created on the
    /// coordinator's database with `geoloc-coordinator keys create`.
    pub api_key: String,
    pub tmp: tempfile::TempDir,
    pub timings: Timings,
    /// Extra `geoloc locate` flags for every locate of [`DemoWorld::locate`].
    pub locate_flags: Vec<String>,
    /// Extra environment of the coordinator (kept for restarts).
    pub coordinator_env: Vec<(String, String)>,
}

pub const COORDINATOR_HOST: &str = "coordinator";

/// The coordinator's database in the lab's temporary directory.
fn database_url(tmp: &Path) -> String {
    format!("sqlite://{}?mode=rwc", tmp.join("geoloc.sqlite").display())
}

/// Creates the lab's admin API key on the coordinator's database (before the coordinator
/// starts) and returns it: the lab exercises the real key check rather than turning it off.
fn create_api_key(coordinator_bin: &Path, database: &str) -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new(coordinator_bin);
    cmd.args([
        "keys",
        "--database",
        database,
        "create",
        "--name",
        "lab",
        "--scope",
        "admin",
        "--addresses-per-hour",
        "1000000",
        "--concurrent",
        "256",
    ]);
    let out = output_within(cmd, Duration::from_secs(60)).context("creating the lab's API key")?;
    let key = out.lines().next().unwrap_or("").trim().to_string();
    if key.is_empty() {
        bail!("`geoloc-coordinator keys create` printed no key");
    }
    Ok(key)
}

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
        let api_key = create_api_key(&coordinator_bin, &database_url(tmp.path()))?;
        let mut me = Self {
            lab,
            world,
            plans,
            probes,
            geoloc,
            coordinator_bin,
            agent_bin,
            token,
            api_key,
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join("coordinator.log"))?;
        let args: Vec<String> = vec![
            "--listen".into(),
            format!("0.0.0.0:{COORDINATOR_PORT}"),
            "--database".into(),
            database_url(self.tmp.path()),
            "--geoip".into(),
            mmdb.display().to_string(),
            "--probe-token".into(),
            self.token.clone(),
            "--allow-private".into(),
            // The lab's own namespaces only: plaintext on 0.0.0.0 is refused without it.
            "--insecure-plaintext".into(),
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
        self.start_agent_with(name, &self.agent_bin, pos, &[])
    }

    /// Starts an agent binary `bin` on host `name` declaring position `pos`, with extra
    /// environment `env` (tests: a fault-injection build, a probe that moved).
    pub fn start_agent_with(
        &self,
        name: &str,
        bin: &Path,
        pos: geo::LatLon,
        env: &[(String, String)],
    ) -> anyhow::Result<()> {
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
        let mut cmd = self.lab.command(name, bin, &args)?;
        cmd.stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "warn")
            .env("GEOLOC_PROBE_TOKEN", &self.token)
            .envs(env.iter().map(|(k, v)| (k, v)));
        self.lab.spawn(name, cmd)?;
        Ok(())
    }

    /// `geoloc <args>` run inside the coordinator's namespace against the coordinator.
    pub fn geoloc(&self, args: &[&str], limit: Duration) -> anyhow::Result<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.push("--coordinator".into());
        all.push(format!("http://127.0.0.1:{COORDINATOR_PORT}"));
        let mut cmd = self.lab.command(COORDINATOR_HOST, &self.geoloc, &all)?;
        cmd.env("GEOLOC_API_KEY", &self.api_key);
        output_within(cmd, limit)
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
