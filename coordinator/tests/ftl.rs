//! The speed-of-light rules of `landmarks/README.md`, over real gRPC with FAKE probes
//! (tests/common) whose RTTs follow their real positions: a probe faster than light with one
//! other landmark is not flagged (a single pair cannot tell who lies), with two it is; once
//! cleared, only evidence newer than the clearing counts; a flag survives a re-registration
//! at a new position (only an admin clears it), and evidence counts only for the position it
//! was measured at; only vetted probes measure a locate's target, the others are listed with
//! the reason; a declared position far from the landmarks file's is flagged at registration.
//!
//! Each test waits for the landmark measurements it needs (counted in storage), then runs the
//! evaluation itself (`Coordinator::evaluate_flags`, the same one a connecting probe
//! triggers), so what is flagged never depends on timing.
mod common;

use std::sync::Arc;

use common::*;
use geoloc_coordinator::Coordinator;
use geoloc_engine::LatLon;
use geoloc_proto::v1 as pb;

/// Where the liar really is (Brussels) and what it declares (Sydney), and its address.
const LIAR_REAL: (f64, f64) = (50.85, 4.35);
const SYDNEY: (f64, f64) = (-33.87, 151.2);
const LIAR_IP: &str = "127.0.1.99";

async fn landmark_rows(coord: &Coordinator) -> usize {
    coord.storage.landmark_measurements().await.unwrap().len()
}

/// Waits until `n` landmark measurements are stored.
async fn wait_landmark_rows(coord: &Arc<Coordinator>, n: usize) {
    let c = Arc::clone(coord);
    wait_until(&format!("{n} landmark measurements"), 30, move || {
        let c = Arc::clone(&c);
        async move { landmark_rows(&c).await >= n }
    })
    .await;
    assert_eq!(
        landmark_rows(coord).await,
        n,
        "more landmark measurements than expected"
    );
}

fn flagged(coord: &Coordinator) -> Vec<String> {
    coord
        .fleet
        .registry
        .snapshot()
        .into_iter()
        .filter(|p| p.flagged)
        .map(|p| p.probe_id.clone())
        .collect()
}

async fn wait_flagged(coord: &Arc<Coordinator>, id: &'static str) {
    let c = Arc::clone(coord);
    wait_until(&format!("{id} flagged"), 30, move || {
        let c = Arc::clone(&c);
        async move { c.fleet.registry.get(id).is_some_and(|p| p.flagged) }
    })
    .await;
}

async fn start_liar(srv: &Server, w: &World, declared: (f64, f64)) -> FakeProbe {
    w.lock().unwrap().insert(
        LIAR_IP.into(),
        LatLon {
            lat: LIAR_REAL.0,
            lon: LIAR_REAL.1,
        },
    );
    FakeProbe::start(
        &srv.url,
        "liar",
        declared,
        LIAR_REAL,
        LIAR_IP,
        w.clone(),
        Behaviour::Honest,
    )
    .await
}

async fn checking_server(dir: &tempfile::TempDir) -> Server {
    Server::start(&sqlite_url(dir), |c| c.landmark_checks = true).await
}

#[tokio::test]
async fn one_faster_than_light_partner_is_not_enough_two_are() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = checking_server(&dir).await;
        let w = world(&[]);
        let _paris = honest_fleet_checked(&srv, &w, 1).await;
        let _liar = start_liar(&srv, &w, SYDNEY).await;
        // liar -> paris and paris -> liar: one faster-than-light pair.
        wait_landmark_rows(&srv.coord, 2).await;
        assert_eq!(
            srv.coord.evaluate_flags().await.unwrap(),
            Vec::<String>::new()
        );
        assert!(flagged(&srv.coord).is_empty(), "one pair flags nobody");
        assert!(srv.coord.fleet.registry.get("liar").unwrap().healthy);

        // A second honest probe: the liar is faster than light with two landmarks now.
        let (id, lat, lon, ip) = FLEET[5];
        w.lock().unwrap().insert(ip.into(), LatLon { lat, lon });
        let _london = FakeProbe::start(
            &srv.url,
            id,
            (lat, lon),
            (lat, lon),
            ip,
            w.clone(),
            Behaviour::Honest,
        )
        .await;
        wait_landmark_rows(&srv.coord, 6).await;
        srv.coord.evaluate_flags().await.unwrap();
        assert_eq!(
            flagged(&srv.coord),
            ["liar"],
            "only the liar, not its honest peers"
        );
        let liar = srv.coord.fleet.registry.get("liar").unwrap();
        assert!(!liar.healthy);
        assert!(
            liar.flag_reason.contains("to paris is faster than light")
                && liar.flag_reason.contains("to london is faster than light"),
            "{}",
            liar.flag_reason
        );
        srv.stop().await;
    })
    .await;
}

/// The first `n` honest probes of FLEET, one at a time: each is measured by and measures
/// the ones before it (2 x k rows for the k-th) before the next connects, so the number of
/// landmark measurements is exact.
async fn honest_fleet_checked(srv: &Server, w: &World, n: usize) -> Vec<FakeProbe> {
    let mut v = Vec::new();
    let mut rows = landmark_rows(&srv.coord).await;
    for (k, &(id, lat, lon, ip)) in FLEET[..n].iter().enumerate() {
        w.lock().unwrap().insert(ip.into(), LatLon { lat, lon });
        v.push(
            FakeProbe::start(
                &srv.url,
                id,
                (lat, lon),
                (lat, lon),
                ip,
                w.clone(),
                Behaviour::Honest,
            )
            .await,
        );
        rows += 2 * k;
        wait_landmark_rows(&srv.coord, rows).await;
    }
    v
}

/// Three honest probes and the liar, flagged.
async fn fleet_with_flagged_liar(srv: &Server, w: &World) -> (Vec<FakeProbe>, FakeProbe) {
    let honest = honest_fleet_checked(srv, w, 3).await;
    let liar = start_liar(srv, w, SYDNEY).await;
    // 3 x 2 among the honest ones, then 3 from and 3 to the liar.
    wait_landmark_rows(&srv.coord, 12).await;
    srv.coord.evaluate_flags().await.unwrap();
    assert_eq!(flagged(&srv.coord), ["liar"]);
    (honest, liar)
}

#[tokio::test]
async fn a_cleared_flag_counts_only_evidence_measured_after_it() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = checking_server(&dir).await;
        let w = world(&[]);
        let (_honest, liar) = fleet_with_flagged_liar(&srv, &w).await;
        let mut c = srv.client().await;
        let cleared = c
            .clear_flag(pb::ClearFlagRequest {
                probe_id: "liar".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(cleared.was_flagged);
        // The stored faster-than-light pairs predate the clearing: they no longer count.
        assert_eq!(
            srv.coord.evaluate_flags().await.unwrap(),
            Vec::<String>::new()
        );
        assert!(flagged(&srv.coord).is_empty());
        assert!(srv.coord.fleet.registry.get("liar").unwrap().healthy);
        let stored = srv.coord.storage.get_probe("liar").await.unwrap().unwrap();
        assert!(!stored.flagged && stored.flag_epoch_unix_ms > 0);

        // New evidence (the liar reconnects and is measured again): flagged again.
        liar.kill();
        drop(liar);
        let _liar = start_liar(&srv, &w, SYDNEY).await;
        wait_landmark_rows(&srv.coord, 18).await;
        srv.coord.evaluate_flags().await.unwrap();
        wait_flagged(&srv.coord, "liar").await;
        assert_eq!(flagged(&srv.coord), ["liar"]);
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_flag_survives_a_move_and_evidence_counts_only_where_it_was_measured() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = checking_server(&dir).await;
        let w = world(&[]);
        let (honest, liar) = fleet_with_flagged_liar(&srv, &w).await;

        // The liar re-registers elsewhere (its real position): the flag stays, with its
        // reason, in the registry and the store; only an admin clears it. The evidence about
        // the old position does not count against the new one. (These fake probes use the
        // lab's shared token, so the move itself needs no approval; an enrolled probe's
        // move waits for `probes approve-position` and keeps its flag too: tests/identity.rs.)
        let reason = srv
            .coord
            .fleet
            .registry
            .get("liar")
            .unwrap()
            .flag_reason
            .clone();
        liar.kill();
        drop(liar);
        let _liar = start_liar(&srv, &w, LIAR_REAL).await;
        let now = srv.coord.fleet.registry.get("liar").unwrap();
        assert!(now.flagged && now.flag_reason == reason, "{now:?}");
        wait_landmark_rows(&srv.coord, 18).await;
        assert_eq!(
            srv.coord.evaluate_flags().await.unwrap(),
            Vec::<String>::new(),
            "no new evidence against the new position"
        );
        assert_eq!(flagged(&srv.coord), ["liar"]);
        let stored = srv.coord.storage.get_probe("liar").await.unwrap().unwrap();
        assert!(stored.flagged && stored.flag_reason == reason, "{stored:?}");
        assert!(srv
            .coord
            .vetting
            .vetting_status(&srv.coord, &now)
            .unwrap_err()
            .starts_with("flagged: "));

        // An honest, vetted probe: its evidence is about its position...
        let paris = srv.coord.fleet.registry.get("paris").unwrap();
        assert_eq!(srv.coord.vetting.vetting_status(&srv.coord, &paris), Ok(()));
        // ...so once it declares another one (Tokyo, falsely), that evidence no longer
        // vets it, and the new evidence flags it.
        honest[0].kill();
        let (id, lat, lon, ip) = FLEET[0];
        let _paris = FakeProbe::start(
            &srv.url,
            id,
            (35.68, 139.65),
            (lat, lon),
            ip,
            w.clone(),
            Behaviour::Honest,
        )
        .await;
        let moved = srv.coord.fleet.registry.get("paris").unwrap();
        let why = srv
            .coord
            .vetting
            .vetting_status(&srv.coord, &moved)
            .unwrap_err();
        assert!(
            why.starts_with("unvetted: ") || why.starts_with("flagged: "),
            "{why}"
        );
        wait_landmark_rows(&srv.coord, 24).await;
        srv.coord.evaluate_flags().await.unwrap();
        assert_eq!(flagged(&srv.coord), ["liar", "paris"]);
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn answers_come_only_from_vetted_probes() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| {
            c.landmark_checks = true;
            c.vetting_min_checks = 3;
            c.known_answer_percent = 0;
        })
        .await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let mut client = srv.client().await;
        // Three probes: each has passed checks with two landmarks, three are needed.
        let _three = honest_fleet_checked(&srv, &w, 3).await;
        srv.coord.evaluate_flags().await.unwrap();
        let (_, r) = locate(&mut client, req(TARGET)).await;
        let e = r.unwrap_err();
        assert_eq!(e.error_code(), pb::ErrorCode::NoProbes, "{e:?}");
        assert!(
            e.message.contains("no vetted probe")
                && e.message
                    .contains("unvetted: passed known-answer checks with 2 of the 3"),
            "{e:?}"
        );
        // A fourth: everyone has three now.
        let (id, lat, lon, ip) = FLEET[3];
        w.lock().unwrap().insert(ip.into(), LatLon { lat, lon });
        let _fourth = FakeProbe::start(
            &srv.url,
            id,
            (lat, lon),
            (lat, lon),
            ip,
            w.clone(),
            Behaviour::Honest,
        )
        .await;
        // 6 rows of the first three, 3 checks mixed into the refused locate, 6 for the
        // fourth (the mixed ones start at a random moment: wait for all).
        let c = Arc::clone(&srv.coord);
        wait_until("the fourth probe's checks", 30, move || {
            let c = Arc::clone(&c);
            async move { landmark_rows(&c).await >= 15 }
        })
        .await;
        srv.coord.evaluate_flags().await.unwrap();
        let (_, r) = locate(&mut client, req(TARGET)).await;
        let r = r.unwrap();
        assert_eq!(r.probes_used, 4, "{r:?}");
        assert!(solution(&r).region_contains(lyon()));
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn checks_and_real_work_are_the_same_request_on_the_wire() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| {
            c.landmark_checks = true;
            c.known_answer_percent = 100;
        })
        .await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let probes = honest_fleet_checked(&srv, &w, 4).await;
        srv.coord.evaluate_flags().await.unwrap();
        let mut client = srv.client().await;
        let (_, r) = locate(&mut client, req(TARGET)).await;
        assert_eq!(r.unwrap().probes_used, 4);
        // Every vantage point also got one known-answer check during the locate.
        wait_landmark_rows(&srv.coord, 12 + 4).await;
        let mut forms = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        let (mut checks, mut real) = (0, 0);
        for p in &probes {
            for r in p.requests.lock().unwrap().iter() {
                // Everything but the target and the id is the same for checks and locates.
                forms.insert(format!(
                    "{:?} {} {} {} {:?} {} {}",
                    r.kinds,
                    r.ping_count,
                    r.interval_ms,
                    r.timeout_ms,
                    r.tcp_ports,
                    r.max_ttl,
                    r.allow_private
                ));
                assert!(
                    r.request_id.len() == 32 && r.request_id.chars().all(|c| c.is_ascii_hexdigit()),
                    "{}",
                    r.request_id
                );
                assert!(ids.insert(r.request_id.clone()), "request id reused");
                if r.target == TARGET {
                    real += 1;
                } else {
                    checks += 1;
                }
            }
        }
        assert_eq!((real, checks), (4, 12 + 4));
        assert_eq!(forms.len(), 1, "{forms:?}");
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_flagged_probe_is_left_out_with_its_reason() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| {
            c.landmark_checks = true;
            c.known_answer_percent = 0;
        })
        .await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let (_honest, _liar) = fleet_with_flagged_liar(&srv, &w).await;
        let mut client = srv.client().await;
        let (progress, r) = locate(&mut client, req(TARGET)).await;
        let r = r.unwrap();
        assert!(progress.iter().all(|p| p.probe_id != "liar"));
        let sol = solution(&r);
        let d = sol
            .dropped
            .iter()
            .find(|d| d.landmark == "liar")
            .expect("the liar is listed as dropped");
        assert!(
            d.reason
                .starts_with("left out before measuring: flagged: RTT"),
            "{d:?}"
        );
        // A recompute from the stored rows gives the same answer, reason included.
        let again = srv.coord.recompute(&r.result_id).await.unwrap();
        assert_eq!(again.dropped, sol.dropped);
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_declared_position_far_from_the_landmarks_file_is_flagged_at_registration() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("landmarks.csv");
        std::fs::write(
            &file,
            "id,lat,lon,ip,kind\nparis,48.8566,2.3522,,probe\nlondon,51.5074,-0.1278,,probe\n",
        )
        .unwrap();
        let srv = Server::start(&sqlite_url(&dir), |c| c.landmarks = Some(file.clone())).await;
        let mut pc = pb::probe_service_client::ProbeServiceClient::connect(srv.url.clone())
            .await
            .unwrap();
        let register = |id: &str, lat: f64, lon: f64| pb::RegisterRequest {
            probe_id: id.into(),
            lat,
            lon,
            credential: TOKEN.into(),
            ..Default::default()
        };
        // Within 50 km of the file's position (Paris, 20 km off): fine. Not in the file: fine.
        let r = pc
            .register(register("paris", 48.98, 2.55))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.flagged, "{r:?}");
        let r = pc
            .register(register("tokyo", 35.68, 139.65))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.flagged, "{r:?}");
        // London declaring New York: flagged, with the reason.
        let r = pc
            .register(register("london", 40.71, -74.0))
            .await
            .unwrap()
            .into_inner();
        assert!(r.flagged);
        assert!(
            r.flag_reason
                .contains("km from the landmarks file's (51.5074, -0.1278)"),
            "{}",
            r.flag_reason
        );
        let p = srv
            .coord
            .storage
            .get_probe("london")
            .await
            .unwrap()
            .unwrap();
        assert!(p.flagged && p.flag_reason == r.flag_reason);
        assert_eq!(flagged(&srv.coord), ["london"]);
        // Clearing does not make the file agree: the next registration flags it again.
        let mut c = srv.client().await;
        c.clear_flag(pb::ClearFlagRequest {
            probe_id: "london".into(),
        })
        .await
        .unwrap();
        assert!(flagged(&srv.coord).is_empty());
        let r = pc
            .register(register("london", 40.71, -74.0))
            .await
            .unwrap()
            .into_inner();
        assert!(r.flagged, "{r:?}");
        // Moving to the file's position keeps the flag (only an admin clears it); cleared
        // there, it stays cleared.
        let r = pc
            .register(register("london", 51.5074, -0.1278))
            .await
            .unwrap()
            .into_inner();
        assert!(r.flagged, "{r:?}");
        c.clear_flag(pb::ClearFlagRequest {
            probe_id: "london".into(),
        })
        .await
        .unwrap();
        let r = pc
            .register(register("london", 51.5074, -0.1278))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.flagged, "{r:?}");
        srv.stop().await;
    })
    .await;
}
