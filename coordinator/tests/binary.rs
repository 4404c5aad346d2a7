//! The real `geoloc-coordinator` binary on loopback: configuration errors, start, serving
//! FAKE probes (protocol-level, tests/common), SIGTERM, restart on the same database.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use geoloc_proto::v1 as pb;
use geoloc_testenv::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_geoloc-coordinator");

fn start(db: &str, extra: &[&str]) -> (Daemon, String) {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--database",
        db,
        "--allow-private",
        "--probe-token",
        TOKEN,
    ])
    .args([
        "--heartbeat-interval-ms",
        "300",
        "--probe-timeout-ms",
        "1500",
        "--ping-interval-ms",
        "0",
    ])
    .args(extra)
    .env_remove("GEOLOC_COORDINATOR_CONFIG");
    let d = Daemon::spawn_echoing("geoloc-coordinator", &mut cmd);
    let addr = d.stdout_after("listening on ", Duration::from_secs(30));
    (d, format!("http://{addr}"))
}

fn wait_exit(p: &mut Daemon, within: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Some(s) = p.child().try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn bad_configuration_exits_64_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "lissten = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("c.toml") && err.contains("unknown field `lissten`"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["--database", "mysql://x/y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected sqlite://FILE or postgres://"));
    let lm = dir.path().join("lm.csv");
    std::fs::write(&lm, "id,lat,lon,ip,kind\nx,100,0,,probe\n").unwrap();
    let db = format!("sqlite://{}", dir.path().join("x.sqlite").display());
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
            "--landmarks",
            lm.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lm.csv:2: position 100,0 out of range"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_stops_on_sigterm_and_keeps_results_across_restart() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_url(&dir);
        let landmarks = concat!(env!("CARGO_MANIFEST_DIR"), "/../landmarks/landmarks.csv");
        let (mut p, url) = start(&db, &["--landmarks", landmarks]);
        // An admin key made by the binary's own `keys create` on the same database.
        let out = Command::new(BIN)
            .args([
                "keys",
                "--database",
                &db,
                "create",
                "--name",
                "ops",
                "--scope",
                "admin",
            ])
            .env_remove("GEOLOC_COORDINATOR_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(key.starts_with("gk_") && key.len() == 67, "{key}");
        geoloc_client::set_api_key(Some(key));
        let w = world(&[("127.0.0.50", 45.764, 4.8357)]);
        let probes = fleet(&url, &w, 5).await;
        let mut c = geoloc_client::connect(&url).await.unwrap();
        // Wait for the fleet to be healthy.
        let healthy = || {
            let url = url.clone();
            async move {
                let mut c = geoloc_client::connect(&url).await.unwrap();
                let ps = c.list_probes(pb::ListProbesRequest {}).await.unwrap();
                ps.into_inner().probes.iter().filter(|p| p.healthy).count() == 5
            }
        };
        wait_until("5 healthy probes", 30, healthy).await;
        let mut s = c
            .locate(pb::LocateRequest {
                ip: "127.0.0.50".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut result = None;
        while let Some(ev) = s.message().await.unwrap() {
            if let Some(pb::locate_event::Event::Result(r)) = ev.event {
                result = Some(r);
            }
        }
        let result = result.expect("located");
        assert_eq!(result.nearest_probe, "paris");
        // SIGTERM with probe sessions open: a clean, prompt exit.
        let t0 = Instant::now();
        let st = Command::new("kill")
            .args(["-TERM", &p.child().id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let status = tokio::task::block_in_place(|| wait_exit(&mut p, Duration::from_secs(10)))
            .expect("exits after SIGTERM");
        assert!(status.success(), "{status:?}");
        assert!(t0.elapsed() < Duration::from_secs(8));
        drop(probes);
        // Restart on the same database: the stored result is there, probes are remembered.
        let (_p2, url2) = start(&db, &[]);
        let mut c2 = geoloc_client::connect(&url2).await.unwrap();
        let got = c2
            .get_result(pb::GetResultRequest {
                key: Some(pb::get_result_request::Key::Ip("127.0.0.50".into())),
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        assert_eq!(got.result_id, result.result_id);
        assert_eq!(got.solution, result.solution);
        let ps = c2
            .list_probes(pb::ListProbesRequest {})
            .await
            .unwrap()
            .into_inner()
            .probes;
        assert_eq!(ps.len(), 5);
        assert!(ps
            .iter()
            .all(|p| !p.connected && !p.healthy && p.last_seen_unix_ms > 0));
    })
    .await
    .expect("bounded");
}
