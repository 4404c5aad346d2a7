//! End-to-end: a dishonest probe cannot game its checks. One lab agent is replaced by a
//! build with the test-only `fault-injection` feature that answers the targets it believes
//! are checks (the other probes' addresses) honestly and subtracts delay on every other
//! target. The coordinator mixes known-answer checks (passive landmarks: hosts of known
//! position that it cannot tell from real targets) into real work: the probe is flagged and
//! left out of answers within a few locates, and its flag survives its re-registration at
//! another position.
//!
//! Needs root, /dev/net/tun and the workspace binaries (`cargo build --workspace --bins`);
//! the test builds the fault-injection agent itself, into its own target directory
//! (`target/fault-injection`) so the normal agent never contains that code (or takes
//! `GEOLOC_FAULT_AGENT=/path/to/it`). Skips, printing why, otherwise (fails under
//! `GEOLOC_REQUIRE_ENV=1`).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use geoloc_e2e::{require_lab, serial, skip, small};
use geoloc_lab::demo::{DemoWorld, TargetKind};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};

/// Locates allowed before the dishonest probe must be flagged.
const LOCATES_TO_QUARANTINE: usize = 12;
/// The dishonest agent answers everything honestly this long after its start (it passes its
/// connect checks), ms.
const HONEST_FOR_MS: u64 = 20_000;

/// The dishonest agent: `GEOLOC_FAULT_AGENT` if set, else built here (cargo, feature
/// `fault-injection`) into its own target directory `target/fault-injection`, so the agent
/// of `cargo build --workspace --bins` never contains that code and `cargo test
/// --workspace` (CI) needs no extra step. The first build compiles the agent's
/// dependencies again (minutes); later ones are no-ops. Err: why it cannot be had (a skip,
/// a failure under `GEOLOC_REQUIRE_ENV=1`); a failed build panics with cargo's output.
fn fault_agent() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("GEOLOC_FAULT_AGENT") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("GEOLOC_FAULT_AGENT={} is not a file", p.display()))
        };
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    // This test runs from <target>/<profile>/deps/.
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or_else(|| format!("no target directory above {}", exe.display()))?;
    let dir = target.join("fault-injection");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let t0 = Instant::now();
    let out = std::process::Command::new(&cargo)
        .current_dir(&ws)
        .args([
            "build",
            "--locked",
            "-p",
            "geoloc-probe-agent",
            "--bin",
            "geoloc-probe-agent",
            "--features",
            "fault-injection",
            "--target-dir",
        ])
        .arg(&dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    assert!(
        out.status.success(),
        "building the fault-injection agent failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "fault-injection agent built in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(dir.join("debug/geoloc-probe-agent"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The coordinator's SQLite database, read while it runs.
struct Db {
    rt: tokio::runtime::Runtime,
    conn: sqlx::SqliteConnection,
}

impl Db {
    fn open(w: &DemoWorld) -> Db {
        let db = w.tmp.path().join("geoloc.sqlite");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = rt
            .block_on(
                SqliteConnectOptions::new()
                    .filename(&db)
                    .read_only(true)
                    .busy_timeout(Duration::from_secs(10))
                    .connect(),
            )
            .expect("open the coordinator database");
        Db { rt, conn }
    }

    /// (flagged, flag reason, lat) of a probe.
    fn probe(&mut self, id: &str) -> (bool, String, f64) {
        let r = self
            .rt
            .block_on(
                sqlx::query("SELECT flagged, flag_reason, lat FROM probes WHERE probe_id = ?")
                    .bind(id)
                    .fetch_one(&mut self.conn),
            )
            .unwrap();
        (
            r.get::<bool, _>("flagged"),
            r.get::<String, _>("flag_reason"),
            r.get::<f64, _>("lat"),
        )
    }

    /// (rows, packets sent) of measurements with `purpose` stored since `since_ms`.
    fn packets_since(&mut self, purpose: &str, since_ms: i64) -> (i64, i64) {
        let r = self
            .rt
            .block_on(
                sqlx::query(
                    "SELECT COUNT(*) AS n, COALESCE(SUM(packets_sent), 0) AS p FROM measurements \
                     WHERE purpose = ? AND created_unix_ms >= ?",
                )
                .bind(purpose)
                .bind(since_ms)
                .fetch_one(&mut self.conn),
            )
            .unwrap();
        (r.get::<i64, _>("n"), r.get::<i64, _>("p"))
    }

    /// Probes flagged.
    fn flagged(&mut self) -> Vec<String> {
        self.rt
            .block_on(
                sqlx::query("SELECT probe_id FROM probes WHERE flagged ORDER BY probe_id")
                    .fetch_all(&mut self.conn),
            )
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("probe_id"))
            .collect()
    }

    /// The latest finished result for `ip`: (solution JSON, probes with a locate row in it).
    fn latest_result(&mut self, ip: &str) -> (String, Vec<String>) {
        let r = self
            .rt
            .block_on(
                sqlx::query(
                    "SELECT result_id, solution_json FROM results WHERE ip = ? AND status = 'done' \
                     ORDER BY created_at_unix_ms DESC LIMIT 1",
                )
                .bind(ip)
                .fetch_one(&mut self.conn),
            )
            .unwrap();
        let id: String = r.get("result_id");
        let sol: Option<String> = r.get("solution_json");
        let probes = self
            .rt
            .block_on(
                sqlx::query(
                    "SELECT DISTINCT probe_id FROM measurements \
                     WHERE result_id = ? AND purpose = 'locate'",
                )
                .bind(&id)
                .fetch_all(&mut self.conn),
            )
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("probe_id"))
            .collect();
        (sol.unwrap_or_default(), probes)
    }
}

/// Waits until `id` has an open session again (`geoloc probes --json`).
fn wait_connected(w: &DemoWorld, id: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    // The killed session must be gone first: the new agent logs its start.
    std::thread::sleep(Duration::from_secs(1));
    loop {
        let out = w
            .geoloc(&["probes", "--json"], Duration::from_secs(10))
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let up = v.as_array().is_some_and(|a| {
            a.iter()
                .any(|p| p["probe_id"] == id && p["connected"] == true)
        });
        if up {
            return;
        }
        assert!(
            Instant::now() < until,
            "{id} did not reconnect; log:\n{}",
            w.log_tail(id)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_probe_that_lies_on_real_work_is_quarantined_and_stays_flagged_after_moving() {
    require_lab!("a_probe_that_lies_on_real_work_is_quarantined_and_stays_flagged_after_moving");
    let bad_bin = match fault_agent() {
        Ok(p) => p,
        Err(why) => {
            skip(
                "a_probe_that_lies_on_real_work_is_quarantined_and_stays_flagged_after_moving",
                &why,
            );
            return;
        }
    };
    let _g = serial();
    let mut args = small(8, 16, 11);
    args.coordinator_env = vec![
        ("GEOLOC_COORDINATOR_CALIBRATE".into(), "false".into()),
        // Every vantage point of a locate also gets one known-answer check.
        (
            "GEOLOC_COORDINATOR_KNOWN_ANSWER_PERCENT".into(),
            "100".into(),
        ),
    ];
    let mut w = DemoWorld::up(&args).expect("world up");

    // The agent the lab runs has no fault-injection code; the other build has.
    let normal = std::fs::read(&w.agent_bin).unwrap();
    assert!(
        !contains(&normal, b"GEOLOC_FAULT_DELAY_MS"),
        "{} contains fault-injection code",
        w.agent_bin.display()
    );
    assert!(contains(
        &std::fs::read(&bad_bin).unwrap(),
        b"GEOLOC_FAULT_DELAY_MS"
    ));

    // Passive landmarks: the answering targets (hosts of known position that run no agent).
    let normal_targets: Vec<_> = w
        .plans
        .iter()
        .filter(|p| p.kind == TargetKind::Normal)
        .cloned()
        .collect();
    assert!(normal_targets.len() >= 3, "{:?}", w.plans);
    let mut csv = String::from("id,lat,lon,ip,kind\n");
    for t in &normal_targets {
        let c = &t.cities[0];
        let ip = w.target_ip(t).unwrap();
        csv.push_str(&format!(
            "{},{},{},{ip},passive\n",
            t.name, c.pos.lat, c.pos.lon
        ));
    }
    let landmarks = w.tmp.path().join("landmarks.csv");
    std::fs::write(&landmarks, csv).unwrap();
    w.coordinator_env.push((
        "GEOLOC_COORDINATOR_LANDMARKS".into(),
        landmarks.display().to_string(),
    ));
    w.restart_coordinator()
        .expect("coordinator restarts with landmarks");
    w.wait_probes(w.probes.len(), Duration::from_secs(120))
        .expect("probes back");

    let mut db = Db::open(&w);
    // p001 turns dishonest: honest towards the other probes, 200 ms faster elsewhere.
    let bad = w.probes[1].clone();
    let honest: Vec<String> = w
        .probes
        .iter()
        .filter(|p| **p != bad)
        .flat_map(|p| {
            let h = w.lab.host(p).unwrap();
            [h.v4.to_string(), h.v6.to_string()]
        })
        .collect();
    let fault_env = vec![
        ("GEOLOC_FAULT_HONEST_TARGETS".to_string(), honest.join(",")),
        ("GEOLOC_FAULT_DELAY_MS".to_string(), "-200".to_string()),
        (
            "GEOLOC_FAULT_HONEST_FOR_MS".to_string(),
            HONEST_FOR_MS.to_string(),
        ),
    ];
    let home = w.world.placements[w.lab.topology().index(&bad).unwrap()]
        .city
        .pos;
    w.lab
        .signal_child(&bad, nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let started = Instant::now();
    w.start_agent_with(&bad, &bad_bin, home, &fault_env)
        .unwrap();
    wait_connected(&w, &bad);
    assert!(
        w.log_tail(&bad).contains("FAULT INJECTION BUILD"),
        "{}",
        w.log_tail(&bad)
    );
    // Its connect checks, answered honestly, vet it; then it starts lying. Only the checks
    // mixed into real work can catch it now.
    let honest_until = started + Duration::from_millis(HONEST_FOR_MS + 1000);
    std::thread::sleep(honest_until.saturating_duration_since(Instant::now()));
    assert!(!db.probe(&bad).0, "flagged while it answered honestly");

    // Locate the targets in turn until the dishonest probe is flagged.
    let start = Instant::now();
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut locates = 0;
    while !db.probe(&bad).0 && locates < LOCATES_TO_QUARANTINE {
        let t = &normal_targets[locates % normal_targets.len()];
        let row = w.locate_with(t, &["--mode", "all"]).unwrap();
        eprintln!(
            "locate {}: {} {:?} {:?}",
            locates + 1,
            row.name,
            row.error_km,
            row.error
        );
        locates += 1;
        // Let the checks mixed into that locate finish and be evaluated.
        let until = Instant::now() + Duration::from_secs(10);
        while !db.probe(&bad).0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let (is_flagged, reason, _) = db.probe(&bad);
    eprintln!(
        "{bad} flagged: {is_flagged}, after {locates} locates ({:.1} s): {reason}",
        start.elapsed().as_secs_f64()
    );
    // The cost of the checks mixed in (known-answer-percent = 100: one per vantage point).
    let (lr, lp) = db.packets_since("locate", start_ms);
    let (kr, kp) = db.packets_since("landmark", start_ms);
    eprintln!(
        "during {locates} locates: {lr} locate measurements ({lp} packets), {kr} known-answer checks ({kp} packets)"
    );
    assert!(
        is_flagged,
        "{bad} not flagged after {locates} locates; coordinator log:\n{}",
        w.log_tail("coordinator")
    );
    assert!(reason.contains("faster than light"), "{reason}");
    // Nobody honest was taken down with it.
    assert_eq!(db.flagged(), vec![bad.clone()]);

    // Left out of answers, with the reason in the result.
    let t = &normal_targets[0];
    let ip = w.target_ip(t).unwrap().to_string();
    let row = w.locate_with(t, &["--mode", "all"]).unwrap();
    assert!(row.error.is_none(), "{row:?}");
    eprintln!(
        "after the flag: {} located {:?} km off without {bad}",
        row.name, row.error_km
    );
    let (sol, measured_from) = db.latest_result(&ip);
    assert!(!measured_from.contains(&bad), "{measured_from:?}");
    let sol: serde_json::Value = serde_json::from_str(&sol).unwrap();
    let dropped = sol["dropped"].as_array().cloned().unwrap_or_default();
    assert!(
        dropped.iter().any(|d| d["landmark"] == bad.as_str()
            && d["reason"].as_str().unwrap_or("").contains("flagged")),
        "{dropped:?}"
    );

    // It re-registers ~550 km away: the flag stays.
    w.lab
        .signal_child(&bad, nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let moved = geoloc_lab::geo::LatLon {
        lat: if home.lat > 80.0 {
            home.lat - 5.0
        } else {
            home.lat + 5.0
        },
        lon: home.lon,
    };
    w.start_agent_with(&bad, &bad_bin, moved, &fault_env)
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while (db.probe(&bad).2 - moved.lat).abs() > 1e-6 {
        assert!(
            Instant::now() < until,
            "{bad} did not re-register; log:\n{}",
            w.log_tail(&bad)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (still, reason_after, _) = db.probe(&bad);
    assert!(still, "the move cleared the flag");
    assert_eq!(reason_after, reason);
    let row = w.locate_with(t, &["--mode", "all"]).unwrap();
    assert!(row.error.is_none(), "{row:?}");
    let (_, measured_from) = db.latest_result(&ip);
    assert!(!measured_from.contains(&bad), "{measured_from:?}");
    w.down().unwrap();
}
