//! `Trace` through the real gRPC server on loopback with FAKE probes (tests/common: they
//! answer a traceroute with one hop, 10.9.9.9): the request is a traceroute alone with the
//! TTL asked; the reply carries the probe, its position, the rule that chose it and the
//! hops; admission is a locate's (`locate` scope, private targets, the per-target packet
//! budget shared with locates); bad probe ids and TTLs are INVALID_ARGUMENT naming the
//! value. The real agent's trace is in tests/tests/trace_e2e.rs.
mod common;

use common::*;
use geoloc_coordinator::core::access::{self, NewKey, Quotas, Scope};
use geoloc_coordinator::storage::Storage;
use geoloc_proto::v1 as pb;
use tonic::Code;

fn trace_req(ip: &str, probe_id: &str, max_ttl: u32) -> pb::TraceRequest {
    pb::TraceRequest {
        ip: ip.into(),
        probe_id: probe_id.into(),
        max_ttl,
        timeout_ms: 0,
    }
}

async fn start(
    dir: &tempfile::TempDir,
    tweak: impl FnOnce(&mut geoloc_coordinator::config::Config),
) -> Server {
    let storage = Storage::connect(&sqlite_url(dir)).await.unwrap();
    Server::start_with("127.0.0.1:0".parse().unwrap(), storage, tweak).await
}

fn code_of(s: &tonic::Status) -> &str {
    s.metadata()
        .get("geoloc-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_returns_the_probes_hops_and_how_it_was_chosen() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let s = start(&dir, |_| {}).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let probes = fleet(&s.url, &w, 3).await;
        wait_healthy(&s.coord, 3).await;
        let mut c = s.client().await;

        // Nothing known of the address: the first vetted probe by id.
        let r = c
            .trace(trace_req(TARGET, "", 12))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.probe_id, "newyork");
        assert_eq!(r.probe_choice, pb::TraceProbeChoice::First as i32);
        assert_eq!(r.ip, TARGET);
        assert_eq!(r.max_ttl, 12);
        assert_eq!(r.hops.len(), 1);
        assert_eq!(r.hops[0].ttl, 1);
        assert_eq!(r.hops[0].address, "10.9.9.9");
        assert_eq!(r.hops[0].rtt_ms.len(), 1);
        assert!(!r.reached);
        assert_eq!(r.packets_sent, 1);
        let pos = r.probe_position.unwrap();
        assert!((pos.lat - 40.7128).abs() < 1e-9, "{pos:?}");
        // The probe was asked for a traceroute alone, with the TTL given.
        let asked = probes[1].requests.lock().unwrap().clone();
        let t = asked.last().unwrap();
        assert_eq!(t.kinds, vec![pb::MeasurementKind::Traceroute as i32]);
        assert_eq!((t.max_ttl, t.ping_count), (12, 0));

        // A probe named: that one; max_ttl 0 is the default 30.
        let r = c
            .trace(trace_req(TARGET, "tokyo", 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.probe_id, "tokyo");
        assert_eq!(r.probe_choice, pb::TraceProbeChoice::Requested as i32);
        assert_eq!(r.max_ttl, 30);

        // After a locate, the probe nearest the stored estimate (Lyon: Paris).
        let (_, located) = locate(&mut c, req(TARGET)).await;
        located.unwrap();
        let r = c
            .trace(trace_req(TARGET, "", 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.probe_id, "paris");
        assert_eq!(r.probe_choice, pb::TraceProbeChoice::NearestStored as i32);

        // The typed client converts it.
        let mut tc = geoloc_client::Client::connect(&s.url).await.unwrap();
        let t = tc.trace(TARGET, Some("paris"), 5).await.unwrap();
        assert_eq!(t.probe_choice, "requested");
        assert_eq!(t.path().split(':').next(), Some("1"));
        s.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_refuses_bad_arguments_with_a_clear_message() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let s = start(&dir, |_| {}).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&s.url, &w, 2).await;
        wait_healthy(&s.coord, 2).await;
        let mut c = s.client().await;
        let cases = [
            (trace_req(TARGET, "", 65), "max_ttl 65 above 64"),
            (
                trace_req(TARGET, "no such/probe", 0),
                "bad probe_id \"no such/probe\"",
            ),
            (trace_req(TARGET, "mars", 0), "unknown probe \"mars\""),
            (trace_req("not-an-ip", "", 0), "not-an-ip"),
            (
                pb::TraceRequest {
                    timeout_ms: 120_001,
                    ..trace_req(TARGET, "", 0)
                },
                "timeout_ms 120001 above 120000",
            ),
        ];
        for (r, want) in cases {
            let e = c.trace(r.clone()).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{r:?}: {e:?}");
            assert!(e.message().contains(want), "{r:?}: {}", e.message());
        }
        // Nothing was asked of any probe.
        assert!(_probes
            .iter()
            .all(|p| p.requests.lock().unwrap().is_empty()));
        s.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_is_admitted_like_a_locate() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        // Private targets refused; a budget of 40 packets per target and hour.
        let s = start(&dir, |c| {
            c.allow_private = false;
            c.per_target_packets_per_hour = 40;
        })
        .await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let probes = fleet(&s.url, &w, 1).await;
        wait_healthy(&s.coord, 1).await;
        let mut c = s.client().await;

        // A private target: INVALID_ARGUMENT, code bogon, nothing sent.
        let e = c.trace(trace_req("10.1.2.3", "", 0)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(code_of(&e), "bogon", "{e:?}");
        assert!(probes[0].requests.lock().unwrap().is_empty());

        // A `read` key may not trace.
        let read = access::create_key(
            &s.coord.storage,
            &NewKey {
                name: "reader".into(),
                scopes: vec![Scope::Read],
                quotas: Quotas::default(),
            },
        )
        .await
        .unwrap();
        let mut rc = s.client_with_key(Some(&read)).await;
        let e = rc.trace(trace_req("81.2.69.142", "", 0)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("`locate`"), "{}", e.message());
        // Without a key at all.
        let mut nc = s.client_with_key(None).await;
        let e = nc.trace(trace_req("81.2.69.142", "", 0)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

        // The packet budget (40): a trace reserves its max_ttl and keeps what the probe
        // reports (the fake probe: one hop, one packet). 0 + 25 and 1 + 25 fit, 2 + 39
        // does not and is refused before anything is sent.
        let target = "81.2.69.142";
        w.lock().unwrap().insert(target.into(), lyon());
        let r = c
            .trace(trace_req(target, "", 25))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.packets_sent, 1);
        let r = c
            .trace(trace_req(target, "", 25))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.packets_sent, 1);
        let used = s
            .coord
            .access
            .target_packets(&s.coord.storage, target)
            .await
            .unwrap();
        assert_eq!(used, 2);
        let before = probes[0].count(target);
        let e = c.trace(trace_req(target, "", 39)).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("per-target-packets-per-hour"),
            "{}",
            e.message()
        );
        assert_eq!(probes[0].count(target), before, "nothing sent when refused");
        // A locate's packets count against the same budget: 3 echo requests.
        let (_, l) = locate(&mut c, req(target)).await;
        l.unwrap();
        let used = s
            .coord
            .access
            .target_packets(&s.coord.storage, target)
            .await
            .unwrap();
        assert_eq!(used, 5);
        let e = c.trace(trace_req(target, "", 36)).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        c.trace(trace_req(target, "", 35)).await.unwrap();
        s.stop().await;
    })
    .await
}
