//! `geoloc import atlas` and `geoloc atlas locate` through the real binary; the live path
//! against the RIPE Atlas stand-in on 127.0.0.1 (nothing leaves the machine).
use std::path::{Path, PathBuf};
use std::time::Duration;

use geoloc_atlas::standin::{scatter_probes, StandIn, StandInConfig};
use geoloc_engine::{distance_km, LatLon};

const KEY: &str = "0b3c6a2e-1d4f-4a5b-9c8d-7e6f5a4b3c2d";
/// A target between the stand-in's probe cities (Paris 390 km, Frankfurt 560 km away).
const LYON: LatLon = LatLon::new(45.76, 4.84);
const FRANKFURT: LatLon = LatLon::new(50.11, 8.68);

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../atlas/tests/data")
        .join(name)
}

async fn geoloc(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_geoloc"))
        .args(args)
        .env("RIPE_ATLAS_KEY", KEY)
        .output()
        .await
        .expect("run geoloc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn estimate(sol: &serde_json::Value) -> LatLon {
    LatLon::new(
        sol["estimate"]["lat"].as_f64().unwrap(),
        sol["estimate"]["lon"].as_f64().unwrap(),
    )
}

async fn stand_in() -> StandIn {
    let probes = scatter_probes(&geoloc_lab::geo::builtin_cities(), 3, 60.0, 7);
    let mut cfg = StandInConfig::new(probes, vec![("192.0.2.9".parse().unwrap(), LYON)], KEY);
    cfg.result_spread = Duration::from_millis(500);
    StandIn::start(cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_locate_through_the_stand_in_lands_near_the_target() {
    let s = stand_in().await;
    let (code, out, err) = geoloc(&[
        "atlas",
        "locate",
        "192.0.2.9",
        "--base-url",
        &s.url,
        "--area",
        "North-Central",
        "--requested",
        "50",
        "--max-credits",
        "300",
        "--poll-s",
        "0.1",
        "--deadline-s",
        "20",
        "--mesh-msm",
        "1000",
    ])
    .await;
    assert_eq!(code, 0, "stderr: {err}");
    // The cost was shown before the measurement was created, then what was charged.
    let cost = err.find("total: at most 300 credits").expect(&err);
    let made = err.find("measurement 5000001").expect(&err);
    assert!(cost < made, "{err}");
    assert!(err.contains("credits: 300 charged"), "{err}");
    assert_eq!(s.credits_charged(), 300.0);
    let sol: serde_json::Value = serde_json::from_str(&out).expect("Solution JSON");
    let km = distance_km(estimate(&sol), LYON);
    eprintln!("live locate through the stand-in: {km:.0} km from the target");
    assert!(km < 400.0, "{km:.0} km from the target: {err}");
    assert_eq!(sol["landmarks"], 50);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_locate_refuses_beyond_max_credits() {
    let s = stand_in().await;
    let (code, out, err) = geoloc(&[
        "atlas",
        "locate",
        "192.0.2.9",
        "--base-url",
        &s.url,
        "--requested",
        "50",
        "--max-credits",
        "299",
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("total: at most 300 credits"), "{err}");
    assert!(err.contains("more than --max-credits 299"), "{err}");
    assert!(s.requests().is_empty(), "nothing was sent");
    // The estimate alone needs no key and spends nothing.
    let (code, out, _) = geoloc(&[
        "atlas",
        "estimate",
        "192.0.2.9",
        "--type",
        "traceroute",
        "--requested",
        "10",
    ])
    .await;
    assert_eq!(code, 0);
    assert!(
        out.contains("10 probes x 30 credits/result x 2 (one-off) = 600 credits"),
        "{out}"
    );
    s.stop().await;
}

#[tokio::test]
async fn import_solves_downloaded_results_offline() {
    let (code, out, err) = geoloc(&[
        "import",
        "atlas",
        data("ping-v4.json").to_str().unwrap(),
        "--probes",
        data("probes.json").to_str().unwrap(),
        "--mesh",
        data("mesh-v4.json").to_str().unwrap(),
        "--exclude",
        "6039",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("11 results: 9 probes with an RTT, 1 without reply, 0 malformed"),
        "{err}"
    );
    let sol: serde_json::Value = serde_json::from_str(&out).unwrap();
    let km = distance_km(estimate(&sol), FRANKFURT);
    assert!(km < 150.0, "{km:.0} km from Frankfurt");
    let dropped: Vec<serde_json::Value> = sol["dropped"].as_array().unwrap().clone();
    insta::assert_json_snapshot!(
        "import_atlas_dropped",
        serde_json::json!({
            "landmarks": sol["landmarks"],
            "dropped": dropped,
        })
    );
    // A results file that is not Atlas JSON: exit 2 and a clear error.
    let (code, _, err) = geoloc(&[
        "import",
        "atlas",
        data("README.md").to_str().unwrap(),
        "--probes",
        data("probes.json").to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("neither a JSON array of results"), "{err}");
}

#[tokio::test]
async fn probes_from_a_file_as_json() {
    let (code, out, err) = geoloc(&[
        "atlas",
        "probes",
        "--file",
        data("probes.json").to_str().unwrap(),
        "--country",
        "de",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    insta::assert_json_snapshot!("atlas_probes_de", v);
    let (code, out, _) = geoloc(&[
        "atlas",
        "probes",
        "--file",
        data("probes.json").to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 10, "{out}");
}
