//! The web interface in a real browser (headless Chromium driven through chromedriver by
//! fantoccini) on the lab: `geoloc web` and chromedriver run in the coordinator's network
//! namespace, and so does the thread that drives the browser (it `setns`es first), so
//! nothing listens outside the lab.
//!
//! Needs root, /dev/net/tun, the workspace binaries and Debian's `chromium` +
//! `chromium-driver`; skips (fails under `GEOLOC_REQUIRE_ENV=1`) otherwise.
//! Screenshots and figures go to target/web-screenshots/.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use geoloc_e2e::{require_lab, serial, skip, small};
use geoloc_lab::demo::{DemoWorld, TargetKind, COORDINATOR_HOST};
use serde_json::{json, Value};

const WEB: &str = "http://127.0.0.1:8080";
const DRIVER_PORT: u16 = 9515;

fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let d = target.join("web-screenshots");
    std::fs::create_dir_all(&d).expect("create target/web-screenshots");
    d
}

fn which(b: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(b))
            .find(|f| f.is_file())
    })
}

/// What the browser saw, handed back to the test thread.
#[derive(Debug, Default)]
struct Seen {
    fleet_ids: Vec<String>,
    fleet_markers: usize,
    located: Value,
    answer_result_id: String,
    region_paths: usize,
    estimate_markers: usize,
    lit_probes: usize,
    probe_updates: Value,
    first_map_paint_ms: f64,
    page_bytes: f64,
    shared_result_id: String,
    audit_csv: String,
    history_links: usize,
}

async fn wait_js(c: &Client, cond: &str, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if c.execute(&format!("return !!({cond});"), vec![]).await? == Value::Bool(true) {
            return Ok(());
        }
        if start.elapsed() > limit {
            anyhow::bail!("timed out after {limit:?} waiting for `{cond}`");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn shot(c: &Client, name: &str) -> anyhow::Result<()> {
    std::fs::write(out_dir().join(name), c.screenshot().await?)?;
    Ok(())
}

async fn drive(target_ip: String, audit_ips: Vec<String>, n_probes: usize) -> anyhow::Result<Seen> {
    let caps = json!({
        "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]
        }
    });
    let caps = match caps {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let start = Instant::now();
    let c = loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
            .await
        {
            Ok(c) => break c,
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                anyhow::bail!("chromedriver: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut seen = Seen::default();
    let r = async {
        // Fleet: every probe in the table and on the map.
        c.goto(&format!("{WEB}/#/fleet")).await?;
        wait_js(
            &c,
            &format!(
                "document.querySelectorAll('#fleet-table tr[data-probe-id]').length >= {n_probes}"
            ),
            Duration::from_secs(30),
        )
        .await?;
        for tr in c
            .find_all(Locator::Css("#fleet-table tr[data-probe-id]"))
            .await?
        {
            seen.fleet_ids
                .push(tr.attr("data-probe-id").await?.unwrap_or_default());
        }
        seen.fleet_markers = c
            .find_all(Locator::Css("path.geoloc-fleet-probe"))
            .await?
            .len();
        shot(&c, "fleet.png").await?;

        // Locate: a fresh page load, so the timings are those of a first visit.
        c.goto(&format!("{WEB}/#/locate")).await?;
        wait_js(
            &c,
            "window.geoloc && window.geoloc.firstMapPaintMs !== null",
            Duration::from_secs(30),
        )
        .await?;
        c.find(Locator::Css("#locate-ip"))
            .await?
            .send_keys(&target_ip)
            .await?;
        c.find(Locator::Css("#locate-go")).await?.click().await?;
        wait_js(
            &c,
            "!document.getElementById('answer').hidden",
            Duration::from_secs(120),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        seen.located = c
            .execute("return window.geoloc.lastResult.located;", vec![])
            .await?;
        seen.answer_result_id = c
            .find(Locator::Css("#answer"))
            .await?
            .attr("data-result-id")
            .await?
            .unwrap_or_default();
        seen.region_paths = c.find_all(Locator::Css("path.geoloc-region")).await?.len();
        seen.estimate_markers = c
            .find_all(Locator::Css("path.geoloc-estimate"))
            .await?
            .len();
        seen.lit_probes = c
            .find_all(Locator::Css("path.geoloc-probe.lit"))
            .await?
            .len();
        seen.probe_updates = c
            .execute("return window.geoloc.probeUpdates;", vec![])
            .await?;
        seen.first_map_paint_ms = c
            .execute("return window.geoloc.firstMapPaintMs;", vec![])
            .await?
            .as_f64()
            .unwrap_or(f64::NAN);
        seen.page_bytes = c
            .execute(
                "const n = performance.getEntriesByType('navigation')[0]; \
                 return performance.getEntriesByType('resource') \
                   .filter(e => !e.name.includes('/api/')) \
                   .reduce((s, e) => s + e.transferSize, n ? n.transferSize : 0);",
                vec![],
            )
            .await?
            .as_f64()
            .unwrap_or(f64::NAN);
        shot(&c, "locate.png").await?;

        // The shareable URL of the result, in a fresh page.
        c.goto(&format!("{WEB}/#/history")).await?;
        wait_js(
            &c,
            "document.querySelectorAll('#history-table a').length > 0",
            Duration::from_secs(10),
        )
        .await?;
        seen.history_links = c.find_all(Locator::Css("#history-table a")).await?.len();
        shot(&c, "history.png").await?;
        c.goto(&format!("{WEB}/")).await?;
        c.goto(&format!("{WEB}/#/result/{}", seen.answer_result_id))
            .await?;
        c.refresh().await?;
        wait_js(
            &c,
            "!document.getElementById('answer').hidden",
            Duration::from_secs(30),
        )
        .await?;
        seen.shared_result_id = c
            .find(Locator::Css("#answer"))
            .await?
            .attr("data-result-id")
            .await?
            .unwrap_or_default();

        // Audit from the page, then its CSV download.
        c.goto(&format!("{WEB}/#/audit")).await?;
        c.execute(
            "document.getElementById('audit-input').value = arguments[0];",
            vec![json!(audit_ips.join("\n"))],
        )
        .await?;
        c.find(Locator::Css("#audit-go")).await?.click().await?;
        wait_js(
            &c,
            "document.getElementById('audit-progress').dataset.finished === 'true'",
            Duration::from_secs(240),
        )
        .await?;
        shot(&c, "audit.png").await?;
        let href = c
            .find(Locator::Css("#dl-csv"))
            .await?
            .attr("href")
            .await?
            .unwrap_or_default();
        seen.audit_csv = c
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 fetch(arguments[0]).then(r => r.text()).then(done, e => done('ERROR ' + e));",
                vec![json!(href)],
            )
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string();
        anyhow::Ok(())
    }
    .await;
    let _ = c.close().await;
    r.map(|()| seen)
}

/// Runs `f` on a thread inside network namespace `ns`, with its own runtime.
fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path)?;
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("browser thread panicked"))?
}

/// When the coordinator stored each probe's RTT of a locate run (`measurements`).
fn stored_at(db: &Path, result_id: &str) -> Vec<(String, i64)> {
    use sqlx::{ConnectOptions, Row};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true)
            .connect()
            .await
            .expect("open the coordinator database");
        sqlx::query(
            "SELECT probe_id, created_unix_ms FROM measurements \
             WHERE result_id = ? AND purpose = 'locate' AND outcome = 'answered'",
        )
        .bind(result_id)
        .fetch_all(&mut conn)
        .await
        .expect("read measurements")
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect()
    })
}

/// JSON equality with numbers compared as f64 (the browser hands 1234.0 back as 1234).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

#[test]
fn web_interface_in_a_real_browser() {
    require_lab!("web_interface_in_a_real_browser");
    let (Some(chromium), Some(driver)) = (which("chromium"), which("chromedriver")) else {
        skip(
            "web_interface_in_a_real_browser",
            "chromium or chromedriver is not installed (apt-get install chromium chromium-driver)",
        );
        return;
    };
    let _ = chromium;
    let _g = serial();
    let n_probes = 12;
    let w = DemoWorld::up(&small(n_probes, 6, 5)).expect("world up");
    let ns = w
        .lab
        .host(COORDINATOR_HOST)
        .expect("coordinator host")
        .ns
        .clone();
    let log = |name: &str| {
        std::fs::File::create(w.tmp.path().join(format!("{name}.log"))).expect("log file")
    };
    let mut web = w
        .lab
        .command(
            COORDINATOR_HOST,
            &w.geoloc,
            [
                "web",
                "--listen",
                "127.0.0.1:8080",
                "--coordinator",
                "http://127.0.0.1:7470",
            ],
        )
        .expect("web command");
    web.stderr(log("web")).env("GEOLOC_API_KEY", &w.api_key);
    w.lab.spawn("web", web).expect("start geoloc web");
    let mut drv = w
        .lab
        .command(COORDINATOR_HOST, &driver, [format!("--port={DRIVER_PORT}")])
        .expect("chromedriver command");
    drv.stdout(log("chromedriver"))
        .stderr(log("chromedriver-err"));
    w.lab
        .spawn("chromedriver", drv)
        .expect("start chromedriver");

    // Refused outside loopback, with a clear error.
    let out = std::process::Command::new(&w.geoloc)
        .args(["web", "--listen", "0.0.0.0:8080"])
        .output()
        .expect("run geoloc web");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only listens on loopback"), "{err}");

    let normal: Vec<_> = w
        .plans
        .iter()
        .filter(|t| t.kind == TargetKind::Normal)
        .collect();
    let target = w.target_ip(normal[0]).expect("target ip").to_string();
    let audit_ips: Vec<String> = w
        .plans
        .iter()
        .take(5)
        .map(|t| w.target_ip(t).expect("ip").to_string())
        .collect();
    let (t2, a2) = (target.clone(), audit_ips.clone());
    let seen = in_namespace(&ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(drive(t2, a2, n_probes))
    })
    .unwrap_or_else(|e| panic!("browser: {e:#}\nweb log: {}", w.log_tail("web")));

    // Fleet: every lab probe.
    let mut ids = seen.fleet_ids.clone();
    ids.sort();
    let mut want = w.probes.clone();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(seen.fleet_markers, n_probes);

    // Locate: polygon, marker and panel, and the same result as `geoloc locate --json`.
    assert!(seen.region_paths >= 1, "no region polygon drawn");
    assert_eq!(seen.estimate_markers, 1);
    assert!(seen.lit_probes >= 3, "{} probes lit", seen.lit_probes);
    let cli = w
        .geoloc(
            &["locate", "--reuse", "--json", &target],
            Duration::from_secs(60),
        )
        .expect("geoloc locate --json");
    let cli: Value = serde_json::from_str(cli.trim()).expect("locate JSON");
    assert_eq!(cli["result_id"], Value::from(seen.answer_result_id.clone()));
    assert!(
        same(&cli["solution"], &seen.located["solution"]),
        "page solution differs from geoloc locate --json:\npage {}\ncli {}",
        seen.located["solution"],
        cli["solution"]
    );
    let differing: Vec<&String> = cli
        .as_object()
        .expect("locate JSON is an object")
        .iter()
        // `cached` differs by design: the CLI asked with --reuse and got the stored answer.
        .filter(|(k, _)| k.as_str() != "cached")
        .filter(|(k, v)| !seen.located.get(k.as_str()).is_some_and(|w| same(v, w)))
        .map(|(k, _)| k)
        .collect();
    assert!(
        differing.is_empty(),
        "page result differs from geoloc locate --json in {differing:?}:\npage {}\ncli {}",
        seen.located,
        cli
    );
    assert_eq!(seen.shared_result_id, seen.answer_result_id);
    assert!(seen.history_links >= 1);

    // Audit: the page's CSV equals `geoloc audit`'s.
    let input = w.tmp.path().join("audit-in.txt");
    let output = w.tmp.path().join("audit-out.csv");
    std::fs::write(&input, audit_ips.join("\n") + "\n").expect("write input");
    w.geoloc(
        &[
            "audit",
            "--file",
            &input.display().to_string(),
            "--output",
            &output.display().to_string(),
        ],
        Duration::from_secs(240),
    )
    .expect("geoloc audit");
    let csv = std::fs::read_to_string(&output).expect("audit output");
    assert_eq!(seen.audit_csv, csv, "page CSV differs from geoloc audit's");
    assert_eq!(csv.lines().count(), 6);

    // Figures (not asserted): RTT stored at the coordinator -> page updated.
    let mut lat = Vec::new();
    for (p, t) in stored_at(&w.tmp.path().join("geoloc.sqlite"), &seen.answer_result_id) {
        if let Some(page) = seen.probe_updates[&p]["page_unix_ms"].as_f64() {
            lat.push(page - t as f64);
        }
    }
    let figures = json!({
        "rtt_stored_to_page_ms_median": median(lat.clone()),
        "rtt_stored_to_page_ms_n": lat.len(),
        "page_bytes": seen.page_bytes,
        "first_map_paint_ms": seen.first_map_paint_ms,
    });
    eprintln!("web figures: {figures}");
    std::fs::write(out_dir().join("figures.json"), figures.to_string()).expect("figures");
    w.down().expect("down");
}
