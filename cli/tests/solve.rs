//! `geoloc solve` through the real binary: known truths, MaxMind verdicts against MaxMind's
//! own test database, the JSON schema (snapshot), and bad input.
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
fn test_mmdb() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../geoip/tests/data/GeoIP2-City-Test.mmdb")
}

fn geoloc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_geoloc"))
        .args(args)
        .output()
        .expect("run geoloc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn solve_json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = geoloc(args);
    assert_eq!(code, 0, "stderr: {err}");
    serde_json::from_str(&out).expect("JSON on stdout")
}

#[test]
fn landmarks_around_mumbai_give_kolkata_time() {
    let f = fixture("mumbai.csv");
    let v = solve_json(&["solve", "--input", f.to_str().unwrap(), "--method", "cbg"]);
    assert_eq!(v["timezone"]["iana"], "Asia/Kolkata");
    assert_eq!(v["timezone"]["utc_offset"], "+05:30");
    assert_eq!(v["place"]["country"], "IN");
    assert_eq!(v["anycast"], false);
    let (lat, lon) = (
        v["estimate"]["lat"].as_f64().unwrap(),
        v["estimate"]["lon"].as_f64().unwrap(),
    );
    let d = geoloc_engine::distance_km(
        geoloc_engine::LatLon::new(lat, lon),
        geoloc_engine::LatLon::new(19.076, 72.878),
    );
    assert!(
        d < v["radius_km"].as_f64().unwrap(),
        "Mumbai is {d} km from the estimate, outside the radius"
    );
    // Pune's 315 km disc reaches over the Arabian Sea (Etc/GMT-5): Kolkata still dominates.
    assert_eq!(v["timezones"][0]["iana"], "Asia/Kolkata");
    let total: f64 = v["timezones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["share"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 0.01, "{total}");
}

#[test]
fn json_schema_snapshot() {
    let f = fixture("mumbai.csv");
    let mut v = solve_json(&["solve", "--input", f.to_str().unwrap(), "--method", "cbg"]);
    // The outline is long; its shape is checked, its coordinates are not snapshotted.
    assert_eq!(v["region"]["type"], "MultiPolygon");
    v["region"] = serde_json::json!("<MultiPolygon>");
    insta::assert_json_snapshot!("solve_mumbai_cbg", v);
}

#[test]
fn maxmind_verdicts_with_the_test_database() {
    let db = test_mmdb();
    let db = db.to_str().unwrap();
    // MaxMind's test database puts 81.2.69.142 in London.
    let london = fixture("london.csv");
    let v = solve_json(&[
        "solve",
        "--input",
        london.to_str().unwrap(),
        "--ip",
        "81.2.69.142",
        "--geoip",
        db,
    ]);
    assert_eq!(v["maxmind"]["verdict"], "consistent");
    assert_eq!(v["maxmind"]["city"], "London");
    assert_eq!(v["maxmind"]["accuracy_radius_km"], 10.0);
    // Measured from Japan with short RTTs, London is impossible: proved by a named landmark.
    let tokyo = fixture("tokyo.csv");
    let v = solve_json(&[
        "solve",
        "--input",
        tokyo.to_str().unwrap(),
        "--ip",
        "81.2.69.142",
        "--geoip",
        db,
    ]);
    assert_eq!(v["maxmind"]["verdict"], "provably-wrong");
    assert_eq!(v["maxmind"]["ruled_out_by"], "osaka");
    assert!(v["maxmind"]["excess_km"].as_f64().unwrap() > 8000.0);
    // No record for this address.
    let v = solve_json(&[
        "solve",
        "--input",
        tokyo.to_str().unwrap(),
        "--ip",
        "192.0.2.1",
        "--geoip",
        db,
    ]);
    assert_eq!(v["maxmind"]["verdict"], "no-data");
}

#[test]
fn geojson_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.geojson");
    let f = fixture("london.csv");
    let v = solve_json(&[
        "solve",
        "--input",
        f.to_str().unwrap(),
        "--geojson",
        out.to_str().unwrap(),
    ]);
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    assert_eq!(g["type"], "FeatureCollection");
    // The file holds the answer printed on stdout: its region and its estimate.
    let region = &g["features"][0];
    assert_eq!(region["geometry"]["type"], "MultiPolygon");
    assert_eq!(region["geometry"], v["region"]);
    assert_eq!(region["properties"]["region_km2"], v["region_km2"]);
    let point = &g["features"][1];
    assert_eq!(point["geometry"]["type"], "Point");
    assert_eq!(
        point["geometry"]["coordinates"],
        serde_json::json!([v["estimate"]["lon"], v["estimate"]["lat"]])
    );
    assert_eq!(point["properties"]["radius_km"], v["radius_km"]);
    assert_eq!(point["properties"]["city"], v["place"]["city"]);
    // Landmarks around London: the estimate is in England.
    assert_eq!(v["place"]["country"], "GB");
}

/// A ground-truth folder as `geoloc eval-anycast` reads it: one target answered from
/// Frankfurt and Tokyo (the engine's fixture, `engine/tests/data/anycast/README.md`).
fn anycast_dir(dir: &Path) {
    let src = geoloc_testenv::workspace_root().join("engine/tests/data/anycast");
    std::fs::create_dir_all(dir.join("measurements")).unwrap();
    for f in ["airports.csv", "measurements/two-sites"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn eval_anycast_prints_readmes_table() {
    let tmp = tempfile::tempdir().unwrap();
    anycast_dir(tmp.path());
    let json = tmp.path().join("out.json");
    let (code, out, err) = geoloc(&[
        "eval-anycast",
        "--dir",
        tmp.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "| target | VPs | anycast | instances | GT sites | right city | mean error km |"
    );
    assert!(
        lines[2].starts_with("| two-sites | 16 | yes | 2 | 2 | 2/2 | "),
        "{out}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("all targets: 1/1 detected as anycast, 2/2 instances in the right city (100.0%)")
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(v["rows"][0]["instances"], 2);
    assert_eq!(v["right_city"], 2);
    // Bad input names the file and the line.
    std::fs::write(
        tmp.path().join("measurements/zz-bad"),
        "a\t1\t2\tfra\t3\nb\t1\t2\tfra\n",
    )
    .unwrap();
    let (code, _, err) = geoloc(&["eval-anycast", "--dir", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "zz-bad line 2: expected hostname, lat, lon, site, min_rtt_ms: found 4 field(s)"
        ),
        "{err}"
    );
    let (code, _, err) = geoloc(&["eval-anycast", "--dir", "/nonexistent"]);
    assert_eq!(code, 2);
    assert!(err.contains("reading /nonexistent/airports.csv"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("", "line 1: no measurements"),
        ("a,95,0,3\n", "line 1: latitude 95 is outside [-90, 90]"),
        (
            "a,1,2,3\nb,1,2,NaN\n",
            "line 2: rtt_ms \"NaN\" is not a finite number",
        ),
        ("a,1,2,-1\n", "line 1: rtt_ms -1 is negative"),
        (
            "a,1,2\n",
            "line 1: expected landmark,lat,lon,rtt_ms[,kind], found 3 field(s)",
        ),
        ("a,1,2,3,\"x\n", "line 1"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.csv"));
        std::fs::write(&p, text).unwrap();
        let (code, _, err) = geoloc(&["solve", "--input", p.to_str().unwrap()]);
        assert_eq!(code, 2, "{text:?}: {err}");
        assert!(err.contains(want), "{text:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let ok = dir.path().join("ok.csv");
    std::fs::write(&ok, "a,1,2,3\n").unwrap();
    let (code, _, err) = geoloc(&[
        "solve",
        "--input",
        ok.to_str().unwrap(),
        "--bestline-tolerance",
        "1.5",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "--bestline-tolerance: option bestline_tolerance: 1.5 is not a share between 0 and 1"
        ),
        "{err}"
    );
    let (code, _, err) = geoloc(&["solve", "--input", "/nonexistent.csv"]);
    assert_eq!(code, 2);
    assert!(err.contains("reading /nonexistent.csv"), "{err}");
    let (code, _, err) = geoloc(&[
        "eval",
        "--nodes",
        "/nonexistent",
        "--rtts",
        "/x",
        "--method",
        "magic",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown method \"magic\""), "{err}");
}
