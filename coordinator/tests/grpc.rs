//! PROTOCOL tests of the coordinator over real gRPC on loopback, with FAKE probe clients
//! (tests/common): registration, sessions, scheduling, timeouts, speed-of-light flagging,
//! storage across restarts, invalid input. The real probe agent is exercised by the
//! end-to-end tests in `tests/` at the workspace root.
mod common;

use std::time::Duration;

use common::*;
use geoloc_engine::{distance_km, LatLon};
use geoloc_proto::v1 as pb;

/// Every test is bounded.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    common::bounded(60, f).await
}

#[tokio::test]
async fn locate_all_with_progress_stores_and_recomputes() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&srv.url, &w, 6).await;
        wait_healthy(&srv.coord, 6).await;
        let mut c = srv.client().await;
        let (progress, res) = locate(&mut c, req(TARGET)).await;
        let r = res.expect("located");
        assert_eq!(progress.len(), 6, "one progress event per probe");
        assert_eq!(progress.last().unwrap().done, 6);
        assert!(progress
            .iter()
            .all(|p| p.total == 6 && p.min_rtt_ms.is_some()));
        assert_eq!(r.probes_asked, 6);
        assert_eq!(r.nearest_probe, "paris");
        assert_eq!(r.locate_mode(), pb::LocateMode::All);
        assert_eq!(r.packets_sent, 6 * 3);
        let sol = solution(&r);
        let err = distance_km(
            sol.estimate,
            LatLon {
                lat: LYON.0,
                lon: LYON.1,
            },
        );
        assert!(
            err < 500.0,
            "estimate {:?} is {err:.0} km from Lyon",
            sol.estimate
        );
        // Stored: fetch by ip and by id; recompute from raw rows gives the same answer.
        let by_ip = c
            .get_result(pb::GetResultRequest {
                key: Some(pb::get_result_request::Key::Ip(TARGET.into())),
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        assert_eq!(by_ip.result_id, r.result_id);
        assert_eq!(by_ip.solution, r.solution);
        // The live answer is built from what the run holds, the stored one from the rows
        // read back: they are the same answer (per-probe RTTs, counters, spending).
        assert!(!r.cached && by_ip.cached);
        assert_eq!(
            pb::LocateResult {
                cached: false,
                ..by_ip.clone()
            },
            r
        );
        let again = srv.coord.recompute(&r.result_id).await.unwrap();
        assert_eq!(Some(pb::Solution::try_from(&again).unwrap()), r.solution);
        // The region's constraints are not serialised: test it on the recomputed solution
        // (same JSON, so the same region). It holds the target and is not the whole of
        // Europe: Paris measured 6 ms (sound bound 600 km), so Rome (1,100 km from Paris)
        // is out, and so is Tokyo.
        assert!(!again.region_constraints.is_empty());
        assert!(again.region_contains(lyon()), "Lyon is outside the region");
        for (name, lat, lon) in [("Rome", 41.9, 12.5), ("Tokyo", 35.68, 139.65)] {
            assert!(
                !again.region_contains(LatLon { lat, lon }),
                "{name} is inside the region"
            );
        }
        assert!(sol.radius_km < 1000.0, "radius {:.0} km", sol.radius_km);
        let rows = srv
            .coord
            .storage
            .measurements_for_result(&r.result_id)
            .await
            .unwrap();
        assert_eq!(rows.len(), 6);
        assert!(rows
            .iter()
            .all(|m| m.outcome == "answered" && m.raw_json.contains("rtts_ms")));
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn two_stage_spends_fewer_packets() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| {
            c.two_stage_first = 3;
            c.two_stage_k = 3;
        })
        .await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&srv.url, &w, 10).await;
        wait_healthy(&srv.coord, 10).await;
        let mut c = srv.client().await;
        let (_, all) = locate(&mut c, req(TARGET)).await;
        let all = all.unwrap();
        let mut r2 = req(TARGET);
        r2.mode = pb::LocateMode::TwoStage as i32;
        let (progress, two) = locate(&mut c, r2).await;
        let two = two.unwrap();
        assert_eq!(two.locate_mode(), pb::LocateMode::TwoStage);
        assert_eq!(two.probes_asked, 6);
        assert!(progress.iter().any(|p| p.stage == 2));
        assert!(two.packets_sent < all.packets_sent, "{} vs {}", two.packets_sent, all.packets_sent);
        // One echo request per first-stage probe, the configured count (3) in the second.
        let rows = srv.coord.storage.measurements_for_result(&two.result_id).await.unwrap();
        let sent = |stage: i64| rows.iter().filter(|m| m.stage == stage).map(|m| m.packets_sent).collect::<Vec<_>>();
        assert_eq!(sent(1), vec![1; 3]);
        assert_eq!(sent(2), vec![3; 3]);
        assert_eq!(two.packets_sent, 3 + 9);
        // The second stage went to the probes near the target.
        let stage2: Vec<&str> = progress.iter().filter(|p| p.stage == 2).map(|p| p.probe_id.as_str()).collect();
        assert!(stage2.contains(&"frankfurt") || stage2.contains(&"london"), "{stage2:?}");
        let truth = LatLon { lat: LYON.0, lon: LYON.1 };
        let e_all = distance_km(solution(&all).estimate, truth);
        let e_two = distance_km(solution(&two).estimate, truth);
        println!(
            "trade-off: all = {} probes, {} packets, error {e_all:.0} km; two-stage = {} probes, {} packets, error {e_two:.0} km",
            all.probes_asked, all.packets_sent, two.probes_asked, two.packets_sent
        );
        assert!(e_two < 500.0, "two-stage error {e_two:.0} km");
        srv.stop().await;
    })
    .await;
}

/// A probe that never answers times out; a probe killed while it holds a request counts as
/// disconnected at once (not after the time budget); the others' answers are solved.
#[tokio::test]
async fn silent_and_killed_probes_time_out_and_the_rest_is_solved() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        // A budget long enough that a disconnect noticed at once cannot pass for a timeout.
        let srv = Server::start(&sqlite_url(&dir), |c| c.probe_timeout_ms = 3000).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&srv.url, &w, 4).await;
        let silent_probe = |i: usize| {
            let (id, lat, lon, ip) = FLEET[i];
            FakeProbe::start(
                &srv.url,
                id,
                (lat, lon),
                (lat, lon),
                ip,
                w.clone(),
                Behaviour::Silent,
            )
        };
        let _silent = silent_probe(5).await; // london: never answers
        let victim = silent_probe(6).await; // frankfurt: killed holding the request
        wait_healthy(&srv.coord, 6).await;
        let mut c = srv.client().await;
        let mut s = c.locate(req(TARGET)).await.unwrap().into_inner();
        wait_for("the victim holds the request", 20, || {
            victim.count(TARGET) == 1
        })
        .await;
        victim.kill();
        let mut progress = Vec::new();
        let result = loop {
            let ev = s.message().await.unwrap().expect("answer");
            match ev.event.unwrap() {
                pb::locate_event::Event::Progress(p) => progress.push(p),
                pb::locate_event::Event::Result(r) => break r,
                pb::locate_event::Event::Error(e) => panic!("{e:?}"),
            }
        };
        assert_eq!(progress.len(), 6);
        let pos = |id: &str| progress.iter().position(|p| p.probe_id == id).unwrap();
        let (silent, killed) = (&progress[pos("london")], &progress[pos("frankfurt")]);
        assert!(
            silent.min_rtt_ms.is_none() && silent.error.starts_with("timeout"),
            "{silent:?}"
        );
        assert!(
            killed.min_rtt_ms.is_none() && killed.error.starts_with("disconnected"),
            "{killed:?}"
        );
        assert!(
            pos("frankfurt") < pos("london"),
            "the dead session was noticed before the silent probe's budget ran out: {progress:?}"
        );
        assert_eq!(result.probes_asked, 6);
        let sol = solution(&result);
        assert_eq!(sol.landmarks, 4, "the four answers are solved");
        assert!(result.probes_used >= 3, "{result:?}");
        let rows = srv
            .coord
            .storage
            .measurements_for_result(&result.result_id)
            .await
            .unwrap();
        let outcome = |id: &str| {
            rows.iter()
                .filter(|r| r.probe_id == id)
                .map(|r| r.outcome.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(outcome("london"), ["timeout"]);
        assert_eq!(outcome("frankfurt"), ["disconnected"]);
        assert_eq!(outcome("paris"), ["answered"]);
        assert!(!srv.coord.fleet.registry.get("frankfurt").unwrap().connected);
        srv.stop().await;
    })
    .await;
}

/// Four probes behaving as `b` locate TARGET (Lyon): the result, the kinds of request each
/// probe got, the stored rows and the RTTs derived from them.
async fn locate_with_fleet_behaving(
    b: Behaviour,
) -> (
    pb::LocateResult,
    Vec<Vec<Vec<i32>>>,
    Vec<geoloc_coordinator::storage::MeasurementRow>,
    geoloc_coordinator::core::solve::Inputs,
) {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
    let w = world(&[(TARGET, LYON.0, LYON.1)]);
    let probes = fleet_as(&srv.url, &w, 4, b).await;
    wait_healthy(&srv.coord, 4).await;
    let mut c = srv.client().await;
    let (_, r) = locate(&mut c, req(TARGET)).await;
    let r = r.unwrap();
    let kinds = probes
        .iter()
        .map(|p| {
            p.requests
                .lock()
                .unwrap()
                .iter()
                .map(|q| q.kinds.clone())
                .collect()
        })
        .collect();
    let rows = srv
        .coord
        .storage
        .measurements_for_result(&r.result_id)
        .await
        .unwrap();
    let inputs = geoloc_coordinator::core::solve::inputs_from_rows(&rows).unwrap();
    srv.stop().await;
    (r, kinds, rows, inputs)
}

#[tokio::test]
async fn silent_target_falls_back_to_traceroute_last_hop() {
    bounded(async {
        let (r, kinds, rows, inputs) = locate_with_fleet_behaving(Behaviour::TargetSilent).await;
        assert_eq!(r.probes_used, 4);
        let fallback = vec![
            pb::MeasurementKind::Tcp as i32,
            pb::MeasurementKind::Traceroute as i32,
        ];
        assert!(kinds.iter().all(|k| k.contains(&fallback)), "{kinds:?}");
        assert_eq!(
            rows.len(),
            8,
            "a ping row and a TCP+traceroute row per probe"
        );
        assert!(
            inputs
                .per_probe
                .iter()
                .all(|p| p.kind == geoloc_coordinator::core::measurement::RttKind::LastHop),
            "{:?}",
            inputs.per_probe
        );
    })
    .await;
}

#[tokio::test]
async fn icmp_silent_target_is_measured_with_tcp() {
    bounded(async {
        let (r, _, _, inputs) = locate_with_fleet_behaving(Behaviour::IcmpSilent).await;
        assert_eq!(r.probes_used, 4);
        // The TCP RTTs are the target's own: echo RTTs, not last hops.
        assert_eq!(inputs.per_probe.len(), 4);
        assert!(
            inputs
                .per_probe
                .iter()
                .all(|p| p.kind == geoloc_coordinator::core::measurement::RttKind::Echo),
            "{:?}",
            inputs.per_probe
        );
        let sol = solution(&r);
        let truth = geoloc_engine::LatLon {
            lat: LYON.0,
            lon: LYON.1,
        };
        assert!(
            geoloc_engine::distance_km(sol.estimate, truth) < 800.0,
            "{:?}",
            sol.estimate
        );
    })
    .await;
}

#[tokio::test]
async fn faster_than_light_probe_is_flagged_and_left_out_until_cleared() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| c.landmark_checks = true).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _honest = fleet(&srv.url, &w, 4).await;
        // Declares Sydney, really sits in Brussels.
        let liar_ip = "127.0.1.99";
        w.lock().unwrap().insert(
            liar_ip.into(),
            LatLon {
                lat: 50.85,
                lon: 4.35,
            },
        );
        let _liar = FakeProbe::start(
            &srv.url,
            "liar",
            (-33.87, 151.2),
            (50.85, 4.35),
            liar_ip,
            w.clone(),
            Behaviour::Honest,
        )
        .await;
        let mut c = srv.client().await;
        let mut flagged = None;
        for _ in 0..100 {
            let ps = c
                .list_probes(pb::ListProbesRequest {})
                .await
                .unwrap()
                .into_inner()
                .probes;
            if let Some(p) = ps.iter().find(|p| p.flagged) {
                flagged = Some((p.clone(), ps.iter().filter(|p| p.flagged).count()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (p, n) = flagged.expect("the liar is flagged");
        assert_eq!(p.probe_id, "liar");
        assert_eq!(n, 1, "honest probes are not flagged");
        assert!(!p.healthy);
        assert!(
            p.flag_reason.contains("faster than light"),
            "{}",
            p.flag_reason
        );
        let (progress, r) = locate(&mut c, req(TARGET)).await;
        assert!(progress.iter().all(|p| p.probe_id != "liar"));
        let r = r.unwrap();
        assert_eq!(r.probes_asked, 4);
        // Flag persisted in the database.
        assert!(
            srv.coord
                .storage
                .get_probe("liar")
                .await
                .unwrap()
                .unwrap()
                .flagged
        );
        let cleared = c
            .clear_flag(pb::ClearFlagRequest {
                probe_id: "liar".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(cleared.was_flagged);
        assert!(srv.coord.fleet.registry.get("liar").unwrap().healthy);
        let e = c
            .clear_flag(pb::ClearFlagRequest {
                probe_id: "nobody".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn invalid_input_gets_clear_errors() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| c.allow_private = false).await;
        let mut c = srv.client().await;
        let e = c.locate(req("not-an-ip")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(e.message(), "not an IP address: \"not-an-ip\"");
        let e = c.locate(req("10.0.0.1")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("private") && e.message().contains("--allow-private"),
            "{}",
            e.message()
        );
        let huge = "1".repeat(10 << 20);
        let e = c.locate(req(&huge)).await.unwrap_err();
        assert!(
            matches!(
                e.code(),
                tonic::Code::InvalidArgument
                    | tonic::Code::OutOfRange
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Internal
            ),
            "{e:?}"
        );
        // No probes: a clear error event, not a hang.
        let (_, r) = locate(&mut c, req("81.2.69.142")).await;
        assert_eq!(r.unwrap_err().error_code(), pb::ErrorCode::NoProbes);
        // Batch: one event per index, bad ones included.
        let mut s = c
            .locate_batch(pb::LocateBatchRequest {
                ips: vec!["1.2.3".into(), "192.168.0.1".into(), "81.2.69.142".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut errors = std::collections::BTreeMap::new();
        while let Some(ev) = s.message().await.unwrap() {
            if let Some(pb::locate_event::Event::Error(e)) = ev.event {
                errors.insert(ev.index, e.error_code().code().to_string());
            }
        }
        assert_eq!(errors.get(&0).map(String::as_str), Some("invalid-address"));
        assert_eq!(errors.get(&1).map(String::as_str), Some("bogon"));
        assert_eq!(errors.get(&2).map(String::as_str), Some("no-probes"));
        // Wrong credential and bad registration fields.
        let mut pc = pb::probe_service_client::ProbeServiceClient::connect(srv.url.clone())
            .await
            .unwrap();
        let mut reg = pb::RegisterRequest {
            probe_id: "p1".into(),
            lat: 1.0,
            lon: 2.0,
            credential: "wrong".into(),
            ..Default::default()
        };
        assert_eq!(
            pc.register(reg.clone()).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        reg.credential = TOKEN.into();
        reg.lat = 95.0;
        assert_eq!(
            pc.register(reg.clone()).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        reg.lat = 1.0;
        reg.probe_id = "bad id!".into();
        assert_eq!(
            pc.register(reg).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // A session without hello/with a bogus token is refused.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(pb::ProbeMessage {
            kind: Some(pb::probe_message::Kind::Hello(pb::Hello {
                session_token: "forged".into(),
                probe_id: "p1".into(),
            })),
        })
        .await
        .unwrap();
        let e = pc
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn restart_keeps_results_and_does_not_measure_twice() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir);
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let first_id;
        {
            let srv = Server::start(&url, |_| {}).await;
            let _probes = fleet(&srv.url, &w, 4).await;
            wait_healthy(&srv.coord, 4).await;
            let mut c = srv.client().await;
            let (_, r) = locate(&mut c, req(TARGET)).await;
            first_id = r.unwrap().result_id;
            srv.stop().await;
        }
        let srv = Server::start(&url, |_| {}).await;
        // Probes known from the database, not connected yet.
        let ps = srv.coord.fleet.registry.snapshot();
        assert_eq!(ps.len(), 4);
        assert!(ps.iter().all(|p| !p.connected && !p.healthy));
        let probes = fleet(&srv.url, &w, 4).await;
        wait_healthy(&srv.coord, 4).await;
        let mut c = srv.client().await;
        let got = c
            .get_result(pb::GetResultRequest {
                key: Some(pb::get_result_request::Key::ResultId(first_id.clone())),
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        assert_eq!(got.ip, TARGET);
        let mut r = req(TARGET);
        r.reuse_stored = true;
        let (progress, res) = locate(&mut c, r).await;
        let res = res.unwrap();
        assert!(res.cached && progress.is_empty());
        assert_eq!(res.result_id, first_id);
        assert!(
            probes.iter().all(|p| p.count(TARGET) == 0),
            "nothing measured again"
        );
        assert_eq!(
            srv.coord
                .storage
                .count_locate_measurements(TARGET)
                .await
                .unwrap(),
            4
        );
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn locate_and_restart_on_postgres() {
    bounded(async {
        use geoloc_coordinator::storage::Storage;
        let Some((storage, schema)) = postgres_store("locate_and_restart_on_postgres").await else {
            return;
        };
        let url = pg_url();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let srv = Server::start_with(any, storage, |_| {}).await;
        assert_eq!(srv.coord.storage.backend(), "postgres");
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let probes = fleet(&srv.url, &w, 5).await;
        wait_healthy(&srv.coord, 5).await;
        let mut c = srv.client().await;
        let (progress, r) = locate(&mut c, req(TARGET)).await;
        let r = r.unwrap();
        assert_eq!(progress.len(), 5);
        let again = srv.coord.recompute(&r.result_id).await.unwrap();
        assert_eq!(Some(pb::Solution::try_from(&again).unwrap()), r.solution);
        srv.stop().await;
        drop(probes);
        // Restart on the same schema, selected through the URL alone (as the binary would).
        let url2 = format!("{url}?options=-csearch_path%3D{schema}");
        let srv = Server::start_with(any, Storage::connect(&url2).await.unwrap(), |_| {}).await;
        let mut c = srv.client().await;
        let got = c
            .get_result(pb::GetResultRequest {
                key: Some(pb::get_result_request::Key::Ip(TARGET.into())),
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        assert_eq!(got.result_id, r.result_id);
        assert_eq!(srv.coord.fleet.registry.snapshot().len(), 5);
        drop_pg_schema(&srv.coord.storage, &schema).await;
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn probe_to_probe_rtts_calibrate_the_solution_and_recompute_uses_them() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| {
            c.landmark_checks = true;
            // 7 probes have 6 RTTs each (the default asks for 40).
            c.calibration_min_rtts = 5;
        })
        .await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&srv.url, &w, 7).await;
        wait_healthy(&srv.coord, 7).await;
        // Every probe measured the others when it connected.
        let mut cal = None;
        for _ in 0..100 {
            cal = srv.coord.calibration().await.unwrap();
            if cal.as_ref().is_some_and(|c| c.len() == 7) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cal = cal.expect("calibrated");
        assert_eq!(cal.len(), 7, "a bestline per probe");
        assert!(
            srv.coord.fleet.registry.snapshot().iter().all(|p| !p.flagged),
            "honest probes are not flagged"
        );
        let mut c = srv.client().await;
        let (_, r) = locate(&mut c, req(TARGET)).await;
        let r = r.unwrap();
        let row = srv
            .coord
            .storage
            .get_result(&r.result_id)
            .await
            .unwrap()
            .unwrap();
        assert!(row.calibration_json.is_some());
        let again = srv.coord.recompute(&r.result_id).await.unwrap();
        assert_eq!(Some(pb::Solution::try_from(&again).unwrap()), r.solution);
        let sol = solution(&r);
        // The same answers solved without the calibration (the sound 2/3 c bound): the fake
        // network's paths are 1.4 x the great circle plus 0.5 ms, so the fitted bestlines are
        // much tighter than the sound bound. A solver that ignores the calibration gives the
        // sound region and fails here.
        let rows = srv
            .coord
            .storage
            .measurements_for_result(&r.result_id)
            .await
            .unwrap();
        let inputs = geoloc_coordinator::core::solve::inputs_from_rows(&rows).unwrap();
        let sound = geoloc_coordinator::core::solve::solve(
            &inputs,
            &None,
            r.created_at_unix_ms / 1000,
            None,
        )
        .unwrap();
        let err = distance_km(sol.estimate, lyon());
        println!(
            "calibrated: error {err:.0} km, radius {:.0} km, area {:.0} km2; sound bound: error {:.0} km, radius {:.0} km, area {:.0} km2",
            sol.radius_km,
            sol.region_km2,
            distance_km(sound.estimate, lyon()),
            sound.radius_km,
            sound.region_km2
        );
        assert!(err < 500.0, "{err:.0} km");
        assert!(
            sol.region_km2 < 0.1 * sound.region_km2,
            "calibrated area {:.0} km2 vs {:.0} km2 with the sound bound",
            sol.region_km2,
            sound.region_km2
        );
        // Tighter, and still right: the truth is inside the calibrated region.
        assert!(again.region_contains(lyon()), "Lyon is outside the calibrated region");
        srv.stop().await;
    })
    .await;
}

/// After a restart the probes reconnect with their own backoff: a locate that arrives first
/// waits for them (reconnect grace) instead of failing with `no-probes`; without a grace it
/// is refused at once.
#[tokio::test]
async fn locate_right_after_a_restart_waits_for_the_probes() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_url(&dir);
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let srv = Server::start(&db, |_| {}).await;
        let addr = srv.addr;
        let first = fleet(&srv.url, &w, 3).await;
        wait_healthy(&srv.coord, 3).await;
        srv.stop().await;
        drop(first);

        // No grace: refused at once.
        let srv = Server::start_at(addr, &db, |c| c.reconnect_grace_ms = 0).await;
        let mut c = srv.client().await;
        let (_, r) = locate(&mut c, req(TARGET)).await;
        assert_eq!(r.unwrap_err().error_code(), pb::ErrorCode::NoProbes);
        srv.stop().await;

        // With a grace: a locate that arrives while no probe is connected waits for all
        // three to come back. The probes reconnect only once the locate is known to be
        // running (waiting on that state, not on the clock).
        let srv = Server::start_at(addr, &db, |c| c.reconnect_grace_ms = 20_000).await;
        let mut c = srv.client().await;
        let pending = tokio::spawn(async move { locate(&mut c, req(TARGET)).await });
        wait_for("the locate is running", 20, || {
            srv.coord.locates_in_flight() == 1 || pending.is_finished()
        })
        .await;
        assert!(
            !pending.is_finished(),
            "the locate did not wait for the probes"
        );
        assert!(srv.coord.fleet.registry.healthy().is_empty());
        let late = fleet(&srv.url, &w, 3).await;
        let (_, r) = pending.await.unwrap();
        let r = r.expect("located after the probes reconnected");
        assert_eq!(r.probes_asked, 3);
        drop(late);
        srv.stop().await;
    })
    .await;
}

/// A busy database never holds up a probe session. Another connection holds SQLite's
/// write lock from 25 s to 45 s after the sessions opened: across their first last-seen
/// refresh (30 s) and past SQLite's 10 s busy timeout. The probes stay healthy the whole
/// time (their heartbeats are still read). When the refresh was awaited inside the
/// session's receive loop, every session stopped reading for the busy timeout and every
/// probe went stale (3 heartbeat intervals, 0.9 s here).
#[tokio::test]
async fn a_locked_database_does_not_stall_probe_sessions() {
    use sqlx::Connection;
    common::bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir);
        let srv = Server::start(&url, |_| {}).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let opened = tokio::time::Instant::now();
        let _probes = fleet(&srv.url, &w, 2).await;
        wait_healthy(&srv.coord, 2).await;
        tokio::time::sleep_until(opened + Duration::from_secs(25)).await;
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        while opened.elapsed() < Duration::from_secs(45) {
            assert_eq!(
                srv.coord.fleet.registry.healthy().len(),
                2,
                "a probe went stale {:?} after the sessions opened, the database locked",
                opened.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    })
    .await
}
