//! The client against the local stand-in (loopback only): create with the cost shown
//! first, refusal over `max_credits`, polling, results, 403/400, timeout, pagination,
//! malformed results from the API, and a live locate with vetting.
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use geoloc_atlas::locate::{live, solve_vetted, LiveOptions};
use geoloc_atlas::request::{Definition, MeasurementRequest, MeasurementType, ProbeSpec};
use geoloc_atlas::results::Expect;
use geoloc_atlas::standin::{probe_at, scatter_probes, Fault, StandIn, StandInConfig};
use geoloc_atlas::{ApiKey, AtlasClient, AtlasError, ProbeSet};
use geoloc_engine::{distance_km, LatLon, SolveOptions};

const KEY: &str = "0b3c6a2e-1d4f-4a5b-9c8d-7e6f5a4b3c2d";
const FRANKFURT: LatLon = LatLon::new(50.11, 8.68);

fn target() -> IpAddr {
    "192.0.2.77".parse().unwrap()
}

fn world(per_city: usize) -> StandInConfig {
    let probes = scatter_probes(&geoloc_lab::geo::builtin_cities(), per_city, 60.0, 7);
    let mut cfg = StandInConfig::new(
        probes,
        vec![
            (target(), FRANKFURT),
            ("2001:db8:f00::77".parse().unwrap(), FRANKFURT),
        ],
        KEY,
    );
    cfg.result_spread = Duration::from_millis(300);
    cfg
}

fn client(s: &StandIn, key: Option<&str>) -> AtlasClient {
    AtlasClient::new(
        &s.url,
        key.map(|k| ApiKey::new(k).unwrap()),
        Duration::from_secs(10),
    )
    .unwrap()
}

fn ping_ww(n: u32) -> MeasurementRequest {
    MeasurementRequest {
        definitions: vec![Definition::new(MeasurementType::Ping, target())],
        probes: vec![ProbeSpec::Area {
            area: "WW".into(),
            requested: n,
        }],
    }
}

#[tokio::test]
async fn cost_is_shown_before_creation_then_results_are_polled() {
    let s = StandIn::start(world(2)).await.unwrap();
    let c = client(&s, Some(KEY));
    let before = c.credits().await.unwrap();
    let mut shown = None;
    let (ids, est) = c
        .create(&ping_ww(20), 120, |e| {
            // Nothing was sent yet when the estimate is shown.
            shown = Some((e.total_credits, s.requests().len()));
        })
        .await
        .unwrap();
    assert_eq!(shown, Some((120, 0)));
    assert_eq!(est.total_credits, 120);
    assert_eq!(ids.len(), 1);
    let body = &s.requests()[0];
    assert_eq!(body["probes"][0]["requested"], 20);
    assert_eq!(body["definitions"][0]["type"], "ping");
    let expect = Expect {
        target: Some(target()),
        msm_ids: ids.clone(),
    };
    let w = c
        .wait_results(
            ids[0],
            &expect,
            20,
            Instant::now() + Duration::from_secs(10),
            Duration::from_millis(50),
        )
        .await
        .unwrap();
    assert!(w.complete && !w.timed_out);
    assert!(w.polls > 1, "results arrive over time: {} polls", w.polls);
    assert_eq!(w.parsed.report.probes, 20);
    assert!(w.parsed.report.malformed.is_empty());
    assert!(c.measurement(ids[0]).await.unwrap().finished());
    // What the stand-in charged is what was estimated (every probe answered).
    assert_eq!(s.credits_charged(), 120.0);
    assert_eq!(before - c.credits().await.unwrap(), 120.0);
    s.stop().await;
}

#[tokio::test]
async fn over_max_credits_is_refused_before_anything_is_sent() {
    let s = StandIn::start(world(1)).await.unwrap();
    let c = client(&s, Some(KEY));
    let err = c.create(&ping_ww(20), 119, |_| {}).await.unwrap_err();
    assert!(
        matches!(
            err,
            AtlasError::OverBudget {
                estimated: 120,
                max_credits: 119,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--max-credits 119"), "{err}");
    assert!(s.requests().is_empty());
    assert_eq!(s.credits_charged(), 0.0);
    s.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_key_is_403_with_the_documented_body() {
    let s = StandIn::start(world(1)).await.unwrap();
    // Without a key the client does not even try.
    let e = client(&s, None)
        .create(&ping_ww(2), 100, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, AtlasError::NoKey), "{e}");
    // A raw request without the header gets the documented 403 body.
    let body = ping_ww(2).to_json().unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v2/measurements/", s.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], 403);
    assert_eq!(
        v["error"]["detail"],
        "Authentication credentials were not provided."
    );
    // A wrong key: the client's error carries status and detail.
    let e = client(&s, Some("ffffffff-ffff-ffff-ffff-ffffffffffff"))
        .create(&ping_ww(2), 100, |_| {})
        .await
        .unwrap_err();
    match e {
        AtlasError::Api { status, detail, .. } => {
            assert_eq!(status, 403);
            assert!(detail.contains("not valid"), "{detail}");
        }
        other => panic!("{other}"),
    }
    assert!(s.requests().is_empty(), "refused before reading the body");
    s.stop().await;
}

#[tokio::test]
async fn bad_definitions_are_400_with_pointers() {
    let s = StandIn::start(world(1)).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v2/measurements/", s.url))
        .header("Authorization", format!("Key {KEY}"))
        .json(&serde_json::json!({
            "definitions": [{"type": "ping", "af": 5, "target": "192.0.2.77"}],
            "probes": [{"type": "area", "value": "WW", "requested": 0}],
            "is_oneoff": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    let pointers: Vec<&str> = v["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"]["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        [
            "/definitions/0/af",
            "/definitions/0/description",
            "/probes/0/requested"
        ]
    );
    // A request the client accepts but the API refuses (more than the balance): the
    // client's error carries the API's 400 detail.
    let mut cfg = world(1);
    cfg.credits = 50.0;
    let poor = StandIn::start(cfg).await.unwrap();
    let e = client(&poor, Some(KEY))
        .create(&ping_ww(20), 1000, |_| {})
        .await
        .unwrap_err();
    match e {
        AtlasError::Api { status, detail, .. } => {
            assert_eq!(status, 400);
            assert!(detail.contains("enough credits"), "{detail}");
        }
        other => panic!("{other}"),
    }
    s.stop().await;
    poor.stop().await;
}

#[tokio::test]
async fn the_deadline_returns_what_arrived() {
    let mut cfg = world(1);
    cfg.result_spread = Duration::from_secs(30);
    let s = StandIn::start(cfg).await.unwrap();
    let c = client(&s, Some(KEY));
    let (ids, _) = c.create(&ping_ww(30), 1000, |_| {}).await.unwrap();
    let t0 = Instant::now();
    let w = c
        .wait_results(
            ids[0],
            &Expect::default(),
            30,
            t0 + Duration::from_millis(2500),
            Duration::from_millis(200),
        )
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(w.timed_out && !w.complete);
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(
        (1..30).contains(&w.parsed.report.results),
        "{} results",
        w.parsed.report.results
    );
    // An unknown measurement: 404 through the client.
    let e = c.measurement(42).await.unwrap_err();
    assert!(matches!(e, AtlasError::Api { status: 404, .. }), "{e}");
    s.stop().await;
}

#[tokio::test]
async fn probes_are_read_across_pages() {
    let s = StandIn::start(world(9)).await.unwrap();
    let c = client(&s, None);
    let all = c.probes(&[], usize::MAX).await.unwrap();
    assert_eq!(all.len(), 68 * 9, "{} probes", all.len());
    assert!(all.issues.is_empty());
    let anchors = c
        .probes(&[("is_anchor", "true".into())], usize::MAX)
        .await
        .unwrap();
    assert_eq!(anchors.len(), 68);
    let some = c.probes_by_id(&[1, 2, 600, 99_999]).await.unwrap();
    assert_eq!(some.probes.keys().copied().collect::<Vec<_>>(), [1, 2, 600]);
    s.stop().await;
}

#[tokio::test]
async fn malformed_results_from_the_api_are_reported_by_probe() {
    let mut cfg = world(1);
    cfg.probes[3].fault = Some(Fault::NegativeRtt);
    cfg.probes[5].fault = Some(Fault::WrongDst);
    let bad: BTreeSet<u32> = [cfg.probes[3].meta.id, cfg.probes[5].meta.id].into();
    let s = StandIn::start(cfg).await.unwrap();
    let c = client(&s, Some(KEY));
    let ids: Vec<u32> = (1..=10).collect();
    for kind in [MeasurementType::Ping, MeasurementType::Traceroute] {
        let req = MeasurementRequest {
            definitions: vec![Definition::new(kind, target())],
            probes: vec![ProbeSpec::Ids(ids.clone())],
        };
        let (m, _) = c.create(&req, 10_000, |_| {}).await.unwrap();
        let w = c
            .wait_results(
                m[0],
                &Expect {
                    target: Some(target()),
                    msm_ids: m.clone(),
                },
                10,
                Instant::now() + Duration::from_secs(10),
                Duration::from_millis(50),
            )
            .await
            .unwrap();
        let named: BTreeSet<u32> = w
            .parsed
            .report
            .malformed
            .iter()
            .map(|i| i.probe_id.unwrap() as u32)
            .collect();
        assert_eq!(named, bad, "{kind:?}: {}", w.parsed.report);
        assert_eq!(w.parsed.report.probes, 8, "{kind:?}");
        let text = w.parsed.report.to_string();
        assert!(
            text.contains("rtt -4.5 ms") && text.contains("is not the target"),
            "{text}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn ipv6_traceroute_through_the_stand_in() {
    let s = StandIn::start(world(1)).await.unwrap();
    let c = client(&s, Some(KEY));
    let t6: IpAddr = "2001:db8:f00::77".parse().unwrap();
    let req = MeasurementRequest {
        definitions: vec![Definition::new(MeasurementType::Traceroute, t6)],
        probes: vec![ProbeSpec::Area {
            area: "North-Central".into(),
            requested: 5,
        }],
    };
    let (m, est) = c.create(&req, 300, |_| {}).await.unwrap();
    assert_eq!(est.total_credits, 300);
    let w = c
        .wait_results(
            m[0],
            &Expect {
                target: Some(t6),
                msm_ids: m.clone(),
            },
            5,
            Instant::now() + Duration::from_secs(10),
            Duration::from_millis(50),
        )
        .await
        .unwrap();
    assert_eq!(w.parsed.rtts.len(), 5);
    assert!(w
        .parsed
        .rtts
        .iter()
        .all(|r| r.af == 6 && r.kind == geoloc_atlas::RttKind::Echo));
    s.stop().await;
}

#[tokio::test]
async fn live_locate_vets_a_misplaced_probe_with_the_mesh() {
    let mut cfg = world(3);
    // Anchor 1 really sits in Frankfurt but declares Sydney.
    let liar = probe_at(9000, FRANKFURT, true);
    let mut liar = liar;
    liar.meta.pos = Some(LatLon::new(-33.87, 151.21));
    cfg.probes.push(liar);
    let s = StandIn::start(cfg).await.unwrap();
    let c = client(&s, Some(KEY));
    let mut ids: Vec<u32> = (1..=60).collect();
    ids.push(9000);
    let opts = LiveOptions {
        request: MeasurementRequest {
            definitions: vec![Definition::new(MeasurementType::Ping, target())],
            probes: vec![ProbeSpec::Ids(ids)],
        },
        max_credits: 1000,
        deadline: Duration::from_secs(10),
        poll: Duration::from_millis(50),
        exclude: BTreeSet::from([2]),
        mesh_msm_ids: vec![1000],
        probes: ProbeSet::default(),
    };
    let l = live(&c, &opts, |_| {}).await.unwrap();
    assert_eq!(l.summary.estimate.total_credits, 61 * 6);
    assert_eq!(l.summary.credits_charged, 61 * 6);
    let why = |name: &str| {
        l.vetted
            .dropped
            .iter()
            .find(|d| d.landmark == name)
            .map(|d| d.reason.clone())
    };
    assert!(why("atlas:9000").unwrap().contains("faster than light"));
    assert_eq!(why("atlas:2").unwrap(), "on the exclusion list");
    let sol = solve_vetted(&l.vetted, SolveOptions::default()).unwrap();
    let err = distance_km(sol.estimate, FRANKFURT);
    assert!(err < 800.0, "{err} km off: {sol:?}");
    assert!(sol.dropped.iter().any(|d| d.landmark == "atlas:9000"));
    s.stop().await;
}
