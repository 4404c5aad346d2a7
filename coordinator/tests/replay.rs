//! The measurement-source seam: the locate flow run on recorded RTTs ([`Replay`]) instead of
//! the probe fleet. Same flow (stages, progress, stored rows, solve, recompute), no probe and
//! no packet; and the same RTTs give the same answer whichever source they come from.
mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use common::*;
use geoloc_coordinator::core::locate::{FailureCode, LocateEvent, LocateParams};
use geoloc_coordinator::core::measurement::MeasurementOutcome;
use geoloc_coordinator::core::replay::Replay;
use geoloc_coordinator::core::source::VantagePoint;
use geoloc_coordinator::Mode;
use geoloc_engine::{distance_km, LatLon};

/// FLEET's probes as vantage points, with the fake network's RTT to Lyon from each but
/// `silent` (which recorded no answer).
fn recorded(silent: &[&str]) -> Replay {
    let target: IpAddr = TARGET.parse().unwrap();
    let points: Vec<VantagePoint> = FLEET
        .iter()
        .map(|&(id, lat, lon, _)| VantagePoint {
            id: id.into(),
            pos: LatLon { lat, lon },
        })
        .collect();
    let rtts: Vec<((String, IpAddr), f64)> = points
        .iter()
        .filter(|p| !silent.contains(&p.id.as_str()))
        .map(|p| ((p.id.clone(), target), fake_rtt_ms(p.pos, lyon())))
        .collect();
    Replay::new(points, rtts).unwrap()
}

fn params(mode: Mode) -> LocateParams {
    LocateParams {
        ip: TARGET.into(),
        mode: Some(mode),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_locate_flow_runs_on_replayed_rtts() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let storage = geoloc_coordinator::storage::Storage::connect(&sqlite_url(&dir))
            .await
            .unwrap();
        let coord = coordinator(storage, |_| {}).await;
        let replay = recorded(&["sydney"]);
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = Arc::clone(&events);
        let progress = move |e: LocateEvent| ev.lock().unwrap().push(e);
        let l = coord
            .locate_with(&replay, params(Mode::All), &progress)
            .await
            .unwrap();

        let off = distance_km(l.solution.estimate, lyon());
        assert!(off < 500.0, "estimate {off:.0} km from Lyon");
        assert_eq!((l.probes_asked, l.probe_rtts.len()), (10, 9));
        assert!(!l.cached);
        // Recorded answers carry the pings they stand for: 3 per vantage point.
        assert_eq!(l.packets_sent, 30);

        let events = events.lock().unwrap().clone();
        assert_eq!(
            events[0],
            LocateEvent::StageStarted {
                stage: 1,
                vantage_points: 10
            }
        );
        let done: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                LocateEvent::Measured(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(done.len(), 10);
        let sydney = done.iter().find(|p| p.probe_id == "sydney").unwrap();
        assert_eq!(sydney.outcome, Some(MeasurementOutcome::NoReply));
        assert_eq!(
            (sydney.min_rtt_ms, sydney.error.as_str()),
            (None, "no-reply")
        );
        assert!(done
            .iter()
            .filter(|p| p.probe_id != "sydney")
            .all(|p| p.outcome == Some(MeasurementOutcome::Answered) && p.min_rtt_ms.is_some()));

        // Stored like any run: one row per request, and the result recomputes from them.
        let rows = coord
            .storage
            .measurements_for_result(&l.result_id)
            .await
            .unwrap();
        assert_eq!(rows.len(), 10);
        // (Compared as JSON: the region's constraints are not serialised.)
        let again = coord.recompute(&l.result_id).await.unwrap();
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&l.solution).unwrap()
        );
        coord.storage.close().await;
    })
    .await;
}

#[tokio::test]
async fn two_stages_and_an_empty_source_on_replay() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let storage = geoloc_coordinator::storage::Storage::connect(&sqlite_url(&dir))
            .await
            .unwrap();
        let coord = coordinator(storage, |c| {
            c.two_stage_first = 4;
            c.two_stage_k = 3;
        })
        .await;
        let events = Mutex::new(Vec::new());
        let progress = |e: LocateEvent| events.lock().unwrap().push(e);
        let l = coord
            .locate_with(&recorded(&[]), params(Mode::TwoStage), &progress)
            .await
            .unwrap();
        assert_eq!(l.probes_asked, 7);
        let stages: Vec<_> = events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                LocateEvent::StageStarted {
                    stage,
                    vantage_points,
                } => Some((*stage, *vantage_points)),
                _ => None,
            })
            .collect();
        assert_eq!(stages, [(1, 4), (2, 3)]);
        // The second stage went where the first stage's RTTs pointed: Europe.
        let second: Vec<String> = events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                LocateEvent::Measured(p) if p.stage == 2 => Some(p.probe_id.clone()),
                _ => None,
            })
            .collect();
        for id in &second {
            assert!(
                ["paris", "london", "frankfurt"].contains(&id.as_str()),
                "second stage asked {second:?}"
            );
        }

        let none = Replay::new(Vec::new(), []).unwrap();
        let e = coord
            .locate_with(&none, params(Mode::All), &|_| {})
            .await
            .unwrap_err();
        assert_eq!(e.code, FailureCode::NoProbes);
        assert!(e.message.contains("replay"), "{}", e.message);
        coord.storage.close().await;
    })
    .await;
}

/// The seam holds: the same RTTs through the fleet (fake probes over gRPC) and through a
/// replay give the same estimate.
#[tokio::test]
async fn fleet_and_replay_agree_on_the_same_rtts() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&srv.url, &w, FLEET.len()).await;
        wait_healthy(&srv.coord, FLEET.len()).await;
        let mut client = srv.client().await;
        let (_, r) = locate(&mut client, req(TARGET)).await;
        let by_fleet = solution(&r.unwrap());
        let by_replay = srv
            .coord
            .locate_with(&recorded(&[]), params(Mode::All), &|_| {})
            .await
            .unwrap()
            .solution;
        let (a, b) = (by_fleet.estimate, by_replay.estimate);
        assert!(
            (a.lat - b.lat).abs() < 1e-9 && (a.lon - b.lon).abs() < 1e-9,
            "fleet {a:?} vs replay {b:?}"
        );
        assert_eq!(by_fleet.used, by_replay.used);
        srv.stop().await;
    })
    .await;
}
