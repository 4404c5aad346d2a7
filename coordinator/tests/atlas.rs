//! RIPE Atlas as a measurement source of the coordinator, through the same seam as the
//! fleet: a coordinator configured with the loopback stand-in of the Atlas API
//! (`geoloc_atlas::standin`, RTTs from the lab's delay model) answers `source = atlas` within
//! a budget of vantage points and its `atlas-max-credits`; a locate over that limit is
//! refused before anything is created or spent; `both` merges the fleet's probes (FAKE probe
//! clients, tests/common) with Atlas probes in one solve; bad requests get INVALID_ARGUMENT
//! or FAILED_PRECONDITION naming the key. Nothing leaves 127.0.0.1.
mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use geoloc_atlas::standin::{scatter_probes, StandIn, StandInConfig};
use geoloc_engine::distance_km;
use geoloc_proto::v1 as pb;

const ATLAS_KEY: &str = "0b3c6a2e-1d4f-4a5b-9c8d-7e6f5a4b3c2d";

/// A stand-in with 5 probes around each of the lab's 68 cities (340 probes, one anchor per
/// city), the target TARGET in Lyon, results delivered over 300 ms.
async fn standin() -> StandIn {
    let probes = scatter_probes(&geoloc_lab::geo::builtin_cities(), 5, 300.0, 7);
    let target: IpAddr = TARGET.parse().unwrap();
    let mut cfg = StandInConfig::new(probes, vec![(target, lyon())], ATLAS_KEY);
    cfg.result_spread = Duration::from_millis(300);
    StandIn::start(cfg).await.unwrap()
}

/// A coordinator using `s` as RIPE Atlas with `max_credits`.
async fn server(dir: &tempfile::TempDir, s: &StandIn, max_credits: u64) -> Server {
    let key = dir.path().join("atlas.key");
    std::fs::write(&key, format!("{ATLAS_KEY}\n")).unwrap();
    let url = s.url.clone();
    Server::start(&sqlite_url(dir), move |c| {
        c.atlas_base_url = Some(url);
        c.atlas_key_file = Some(key);
        c.atlas_max_credits = max_credits;
        c.atlas_wait_ms = 20_000;
        c.atlas_mesh_msm = vec![1000];
    })
    .await
}

fn atlas_req(source: pb::LocateSource, budget: u32) -> pb::LocateRequest {
    pb::LocateRequest {
        source: source as i32,
        budget,
        ..req(TARGET)
    }
}

/// The status a Locate call failed with.
async fn refused(c: &mut geoloc_client::Grpc, r: pb::LocateRequest) -> tonic::Status {
    match c.locate(r).await {
        Err(s) => s,
        Ok(stream) => {
            let mut s = stream.into_inner();
            loop {
                match s.message().await {
                    Err(st) => return st,
                    Ok(Some(pb::LocateEvent {
                        event: Some(pb::locate_event::Event::Progress(_)),
                        ..
                    })) => continue,
                    Ok(other) => panic!("expected a refused call, got {other:?}"),
                }
            }
        }
    }
}

#[tokio::test]
async fn atlas_with_a_budget_of_50_answers_within_the_budget_and_the_credits() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let s = standin().await;
        let srv = server(&dir, &s, 300).await;
        let mut c = srv.client().await;
        let (progress, res) = locate(&mut c, atlas_req(pb::LocateSource::Atlas, 50)).await;
        let r = res.expect("located");
        assert_eq!(r.locate_mode(), pb::LocateMode::Phased);
        assert!(r.probes_asked <= 50, "{} probes asked", r.probes_asked);
        assert!(r.probes_asked >= 10, "{} probes asked", r.probes_asked);
        assert_eq!(
            (r.fleet_probes_asked, r.atlas_probes_asked),
            (0, r.probes_asked)
        );
        assert!(r
            .probe_rtts
            .iter()
            .all(|p| p.source() == pb::LocateSource::Atlas && p.probe_id.starts_with("atlas:")));
        // What the coordinator says it spent is what the stand-in charged, within the limit.
        assert!(
            r.atlas_credits > 0 && r.atlas_credits <= 300,
            "{}",
            r.atlas_credits
        );
        assert_eq!(r.atlas_credits as f64, s.credits_charged());
        assert_eq!(r.packets_sent, u64::from(r.probes_asked) * 3);
        // Phased: the spread first round, then at least one round near the region.
        let rounds = progress.iter().map(|p| p.stage).max().unwrap_or(0);
        assert!(rounds >= 2, "{rounds} rounds");
        let asked: usize = s
            .requests()
            .iter()
            .map(|b| b["probes"][0]["value"].as_str().unwrap().split(',').count())
            .sum();
        assert_eq!(asked, r.probes_asked as usize);
        let err = distance_km(solution(&r).estimate, lyon());
        assert!(err < 300.0, "estimate {err:.0} km from Lyon");
        // A stored result says the same.
        let stored = c
            .get_result(pb::GetResultRequest {
                key: Some(pb::get_result_request::Key::ResultId(r.result_id.clone())),
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        assert_eq!(stored.atlas_credits, r.atlas_credits);
        assert_eq!(stored.atlas_probes_asked, r.atlas_probes_asked);
        assert_eq!(stored.locate_mode(), pb::LocateMode::Phased);
        srv.stop().await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_locate_over_atlas_max_credits_is_refused_and_spends_nothing() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let s = standin().await;
        let srv = server(&dir, &s, 299).await;
        let mut c = srv.client().await;
        // 50 probes x 3 packets x 2 = 300 credits at most: one more than allowed.
        let st = refused(&mut c, atlas_req(pb::LocateSource::Atlas, 50)).await;
        assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{st:?}");
        assert!(
            st.message().contains("300") && st.message().contains("atlas-max-credits 299"),
            "{}",
            st.message()
        );
        assert!(s.requests().is_empty(), "a measurement was created");
        assert_eq!(s.credits_charged(), 0.0);
        // Within the limit it runs.
        let (_, res) = locate(&mut c, atlas_req(pb::LocateSource::Atlas, 49)).await;
        let r = res.expect("located");
        assert!(r.atlas_credits <= 299);
        srv.stop().await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn both_merges_fleet_and_atlas_vantage_points_in_one_solve() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let s = standin().await;
        let srv = server(&dir, &s, 1000).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&srv.url, &w, 10).await;
        wait_healthy(&srv.coord, 10).await;
        let mut c = srv.client().await;
        let (_, res) = locate(&mut c, atlas_req(pb::LocateSource::Both, 60)).await;
        let r = res.expect("located");
        assert!(r.probes_asked <= 60);
        assert!(r.fleet_probes_asked > 0, "{r:?}");
        assert!(r.atlas_probes_asked > 0, "{r:?}");
        assert_eq!(r.fleet_probes_asked + r.atlas_probes_asked, r.probes_asked);
        let sources: std::collections::BTreeSet<i32> =
            r.probe_rtts.iter().map(|p| p.source).collect();
        assert_eq!(
            sources,
            [
                pb::LocateSource::Fleet as i32,
                pb::LocateSource::Atlas as i32
            ]
            .into()
        );
        assert_eq!(r.atlas_credits as f64, s.credits_charged());
        let err = distance_km(solution(&r).estimate, lyon());
        assert!(err < 300.0, "estimate {err:.0} km from Lyon");
        srv.stop().await;
        s.stop().await;
    })
    .await;
}

/// `both` must not let the fleet's unvetted probes in by the Atlas door: with landmark
/// checks on and more checks asked than any probe can pass, only Atlas probes measure and
/// every fleet probe is listed as left out.
#[tokio::test]
async fn both_leaves_out_unvetted_fleet_probes() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let s = standin().await;
        let key = dir.path().join("atlas.key");
        std::fs::write(&key, format!("{ATLAS_KEY}\n")).unwrap();
        let url = s.url.clone();
        let srv = Server::start(&sqlite_url(&dir), move |c| {
            c.atlas_base_url = Some(url);
            c.atlas_key_file = Some(key);
            c.atlas_wait_ms = 20_000;
            c.atlas_mesh_msm = vec![1000];
            c.landmark_checks = true;
            c.vetting_min_checks = 1000;
        })
        .await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&srv.url, &w, 10).await;
        wait_healthy(&srv.coord, 10).await;
        let mut c = srv.client().await;
        let (_, res) = locate(&mut c, atlas_req(pb::LocateSource::Both, 60)).await;
        let r = res.expect("located by Atlas probes alone");
        assert_eq!(r.fleet_probes_asked, 0, "{r:?}");
        assert!(r.atlas_probes_asked > 0, "{r:?}");
        let sol = solution(&r);
        let unvetted = sol
            .dropped
            .iter()
            .filter(|d| d.reason.contains("unvetted"))
            .count();
        assert_eq!(unvetted, 10, "{:?}", sol.dropped);
        srv.stop().await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_fleet_with_a_budget_is_phased_and_spends_no_credits() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&srv.url, &w, 10).await;
        wait_healthy(&srv.coord, 10).await;
        let mut c = srv.client().await;
        let (_, res) = locate(&mut c, atlas_req(pb::LocateSource::Fleet, 6)).await;
        let r = res.expect("located");
        assert_eq!(r.locate_mode(), pb::LocateMode::Phased);
        assert!(
            r.probes_asked <= 6 && r.probes_asked >= 3,
            "{}",
            r.probes_asked
        );
        assert_eq!((r.atlas_credits, r.atlas_probes_asked), (0, 0));
        assert_eq!(r.fleet_probes_asked, r.probes_asked);
        assert!(r
            .probe_rtts
            .iter()
            .all(|p| p.source() == pb::LocateSource::Fleet));
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_sources_and_budgets_are_refused_with_the_key_named() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let mut c = srv.client().await;
        for source in [pb::LocateSource::Atlas, pb::LocateSource::Both] {
            let st = refused(&mut c, atlas_req(source, 10)).await;
            assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
            assert!(st.message().contains("atlas-base-url"), "{}", st.message());
        }
        let mut bad = atlas_req(pb::LocateSource::Fleet, 0);
        bad.source = 42;
        let st = refused(&mut c, bad).await;
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
        assert!(st.message().contains("source 42"), "{}", st.message());
        let mut bad = atlas_req(pb::LocateSource::Fleet, 10);
        bad.mode = pb::LocateMode::TwoStage as i32;
        let st = refused(&mut c, bad).await;
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
        assert!(st.message().contains("budget"), "{}", st.message());
        let st = refused(&mut c, atlas_req(pb::LocateSource::Fleet, 5000)).await;
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
        // A batch is refused as a whole.
        let st = match c
            .locate_batch(pb::LocateBatchRequest {
                ips: vec![TARGET.into()],
                source: pb::LocateSource::Atlas as i32,
                ..Default::default()
            })
            .await
        {
            Err(s) => s,
            Ok(_) => panic!("batch accepted"),
        };
        assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn audit_with_source_atlas_and_a_budget_locates_every_row_through_atlas() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let probes = scatter_probes(&geoloc_lab::geo::builtin_cities(), 5, 300.0, 7);
        // Lyon and near Tokyo.
        let targets: Vec<(IpAddr, geoloc_engine::LatLon)> = vec![
            (TARGET.parse().unwrap(), lyon()),
            (
                "127.0.0.51".parse().unwrap(),
                geoloc_engine::LatLon::new(35.0, 135.0),
            ),
        ];
        let mut cfg = StandInConfig::new(probes, targets.clone(), ATLAS_KEY);
        cfg.result_spread = Duration::from_millis(300);
        let s = StandIn::start(cfg).await.unwrap();
        let srv = server(&dir, &s, 200).await;
        let input = dir.path().join("ips.txt");
        std::fs::write(&input, "127.0.0.50\n127.0.0.51\n").unwrap();
        let out = dir.path().join("out.csv");
        let args = geoloc_client::audit::AuditArgs {
            file: input,
            output: out.clone(),
            columns: Some("ip,lat,lon,nearest_probe,error".into()),
            coordinator: srv.url.clone(),
            ca: Default::default(),
            mode: None,
            timeout_ms: None,
            concurrency: Some(2),
            source: Some(geoloc_client::Source::Atlas),
            budget: Some(30),
            retry_failed: false,
            fresh: false,
            retry_for_s: 5,
        };
        tokio::task::spawn_blocking(move || geoloc_client::audit::run_audit(args))
            .await
            .unwrap()
            .expect("audit");
        let mut r = csv::Reader::from_path(&out).unwrap();
        let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
        assert_eq!(rows.len(), 2);
        for (row, (_, truth)) in rows.iter().zip(&targets) {
            assert_eq!(&row[4], "", "{row:?}");
            assert!(row[3].starts_with("atlas:"), "{row:?}");
            let est = geoloc_engine::LatLon::new(row[1].parse().unwrap(), row[2].parse().unwrap());
            let err = distance_km(est, *truth);
            assert!(err < 500.0, "{row:?}: {err:.0} km off");
        }
        // Two addresses, 30 probes at most each, 6 credits a result: within 2 x 180.
        assert!(s.credits_charged() <= 360.0, "{}", s.credits_charged());
        let asked: usize = s
            .requests()
            .iter()
            .map(|b| b["probes"][0]["value"].as_str().unwrap().split(',').count())
            .sum();
        assert!(asked <= 60, "{asked} probes asked");
        srv.stop().await;
        s.stop().await;
    })
    .await;
}
