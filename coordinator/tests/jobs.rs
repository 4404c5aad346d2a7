//! Idempotency keys on a single node (SQLite): asked again, a keyed locate returns its run;
//! a key is bound to its address; a run interrupted by a stop is taken over after the
//! restart with the same request ids; LocateBatch's keys are checked and honoured.
mod common;

use common::*;
use geoloc_proto::v1 as pb;

fn keyed(ip: &str, key: &str) -> pb::LocateRequest {
    let mut r = req(ip);
    r.job_key = key.into();
    r
}

/// Every event of a batch, as (index, result id or error code).
async fn batch(
    c: &mut geoloc_client::Grpc,
    r: pb::LocateBatchRequest,
) -> Result<Vec<(u32, String)>, tonic::Status> {
    let mut s = c.locate_batch(r).await?.into_inner();
    let mut out = Vec::new();
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(pb::locate_event::Event::Result(r)) => out.push((ev.index, r.result_id)),
            Some(pb::locate_event::Event::Error(e)) => {
                out.push((ev.index, format!("error {}", e.message)))
            }
            _ => {}
        }
    }
    out.sort();
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_locate_asked_again_returns_its_run() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let w = world(&[(TARGET, LYON.0, LYON.1), ("127.0.0.51", 48.8, 2.3)]);
        let probes = fleet(&srv.url, &w, 6).await;
        wait_healthy(&srv.coord, 6).await;
        let mut c = srv.client().await;
        let (_, r1) = locate(&mut c, keyed(TARGET, "k-1")).await;
        let r1 = r1.expect("located");
        let (progress, r2) = locate(&mut c, keyed(TARGET, "k-1")).await;
        let r2 = r2.expect("the stored run");
        assert_eq!(r2.result_id, r1.result_id);
        assert!(progress.is_empty(), "nothing measured: {progress:?}");
        for p in &probes {
            assert_eq!(p.count(TARGET), 1, "{} measured once", p.id);
        }
        assert_eq!(srv.coord.storage.count_results(TARGET).await.unwrap(), 1);
        // Another key is another run.
        let (_, r3) = locate(&mut c, keyed(TARGET, "k-2")).await;
        assert_ne!(r3.expect("located").result_id, r1.result_id);
        // A key is bound to its address.
        let mut s = c
            .locate(keyed("127.0.0.51", "k-1"))
            .await
            .unwrap()
            .into_inner();
        let e = s.message().await.expect_err("key of another address");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains(&format!("was used for {TARGET}")),
            "{}",
            e.message()
        );
        for bad in ["", "a b", "x|y"] {
            if bad.is_empty() {
                continue; // empty = no key
            }
            let e = c.locate(keyed(TARGET, bad)).await.expect_err(bad);
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        let long = "k".repeat(65);
        let e = c.locate(keyed(TARGET, &long)).await.expect_err("long");
        assert!(e.message().contains("65 characters"), "{}", e.message());
        srv.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_run_interrupted_by_a_stop_is_taken_over_after_the_restart() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_url(&dir);
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let srv = Server::start(&db, |c| c.probe_timeout_ms = 20_000).await;
        // The probes answer after 3 s: the coordinator stops while they measure.
        let slow = fleet_as(&srv.url, &w, 6, Behaviour::Delayed(3000)).await;
        wait_healthy(&srv.coord, 6).await;
        let url = srv.url.clone();
        let first = tokio::spawn(async move {
            let mut c = geoloc_client::connect(&url).await.unwrap();
            let mut s = c
                .locate(keyed(TARGET, "restart-1"))
                .await
                .unwrap()
                .into_inner();
            loop {
                match s.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        });
        wait_for("the run started", 20, || {
            slow.iter().all(|p| p.count(TARGET) == 1)
        })
        .await;
        let ids: Vec<String> = slow
            .iter()
            .map(|p| p.requests.lock().unwrap()[0].request_id.clone())
            .collect();
        let addr = srv.addr;
        srv.stop().await;
        let e = first.await.unwrap().expect_err("interrupted");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        drop(slow);

        let srv = Server::start_at(addr, &db, |_| {}).await;
        let probes = fleet(&srv.url, &w, 6).await;
        wait_healthy(&srv.coord, 6).await;
        let mut c = srv.client().await;
        let (_, r) = locate(&mut c, keyed(TARGET, "restart-1")).await;
        let r = r.expect("the run taken over after the restart");
        assert_eq!(r.probes_used, 6, "{r:?}");
        assert_eq!(srv.coord.storage.count_results(TARGET).await.unwrap(), 1);
        // The same request ids as before the stop: an agent that had measured answers
        // them from its recent answers.
        for (p, id) in probes.iter().zip(&ids) {
            let got: Vec<String> = p
                .requests
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.request_id.clone())
                .collect();
            assert_eq!(got, vec![id.clone()], "{}", p.id);
        }
        srv.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_keys_are_checked_and_a_batch_asked_again_returns_its_runs() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let ips = ["127.0.0.61", "127.0.0.62", "127.0.0.63"];
        let w = world(&[
            (ips[0], LYON.0, LYON.1),
            (ips[1], 48.8, 2.3),
            (ips[2], 52.5, 13.4),
        ]);
        let probes = fleet(&srv.url, &w, 6).await;
        wait_healthy(&srv.coord, 6).await;
        let mut c = srv.client().await;
        let req = |ips: &[&str], keys: &[&str]| pb::LocateBatchRequest {
            ips: ips.iter().map(|s| s.to_string()).collect(),
            job_keys: keys.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let e = batch(&mut c, req(&ips, &["a/0", "a/1"])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("2 job keys for 3 addresses"),
            "{}",
            e.message()
        );
        let e = batch(&mut c, req(&ips, &["a/0", "a/1", "a/0"]))
            .await
            .unwrap_err();
        assert!(
            e.message().contains("job_keys[2] \"a/0\" is given twice"),
            "{}",
            e.message()
        );
        let e = batch(&mut c, req(&ips, &["a/0", "a 1", "a/2"]))
            .await
            .unwrap_err();
        assert!(e.message().starts_with("job_keys[1]"), "{}", e.message());

        let all = batch(&mut c, req(&ips, &["a/0", "a/1", "a/2"]))
            .await
            .unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        // Asked again (a client that lost its replica asks what it has no answer for):
        // the same runs, nothing measured again.
        let again = batch(&mut c, req(&ips[1..], &["a/1", "a/2"]))
            .await
            .unwrap();
        assert_eq!(again[0].1, all[1].1);
        assert_eq!(again[1].1, all[2].1);
        for p in &probes {
            for ip in ips {
                assert_eq!(p.count(ip), 1, "{} measured {ip} once", p.id);
            }
        }
        srv.stop().await;
    })
    .await;
}
