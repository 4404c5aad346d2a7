//! Client API keys and abuse limits through the real gRPC server on loopback (FAKE probes,
//! tests/common), each test on SQLite and on PostgreSQL (a schema of its own; skipped through
//! `geoloc_testenv::skip` when no server answers): no key is refused with a clear error; a
//! `read` key can list but cannot locate or clear flags; a revoked key is refused at once,
//! also on an open LocateBatch; per-key quotas and the per-target packet budget refuse what
//! exceeds them and count nothing twice.
mod common;

use common::*;
use geoloc_coordinator::core::access::{self, NewKey, Quotas, Scope};
use geoloc_coordinator::core::locate::FailureCode;
use geoloc_coordinator::keys_cmd::{KeysAction, KeysCommand};
use geoloc_coordinator::storage::Storage;
use geoloc_proto::v1 as pb;
use tonic::Code;

/// A store of each kind: SQLite in `dir`, or PostgreSQL in a fresh schema.
async fn store(pg: bool, test: &str, dir: &tempfile::TempDir) -> Option<(Storage, Option<String>)> {
    if pg {
        let (s, schema) = postgres_store(test).await?;
        Some((s, Some(schema)))
    } else {
        Some((Storage::connect(&sqlite_url(dir)).await.unwrap(), None))
    }
}

async fn new_key(storage: &Storage, name: &str, scopes: &[Scope], q: Quotas) -> String {
    access::create_key(
        storage,
        &NewKey {
            name: name.into(),
            scopes: scopes.to_vec(),
            quotas: q,
        },
    )
    .await
    .unwrap()
}

/// Drops the PostgreSQL schema of a test (the servers are left to the end of the test's
/// runtime: stopping one closes the shared pool).
async fn cleanup(storage: &Storage, schema: Option<String>) {
    if let Some(s) = schema {
        drop_pg_schema(storage, &s).await;
    }
}

fn keys_cmd(action: KeysAction) -> KeysCommand {
    KeysCommand {
        config: None,
        database: None,
        action,
    }
}

/// The answer of a Locate call: its result, or the status that ended it.
async fn locate_status(
    c: &mut geoloc_client::Grpc,
    r: pb::LocateRequest,
) -> Result<pb::LocateResult, tonic::Status> {
    let mut s = c.locate(r).await?.into_inner();
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(pb::locate_event::Event::Result(r)) => return Ok(r),
            Some(pb::locate_event::Event::Error(e)) => {
                return Err(tonic::Status::unknown(format!("error event {e:?}")))
            }
            _ => {}
        }
    }
    Err(tonic::Status::unknown("stream ended without an answer"))
}

macro_rules! both_backends {
    ($name:ident, $tag:literal) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(false, concat!($tag, "_sqlite")).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(true, concat!($tag, "_pg")).await
            }
        }
    };
}

both_backends!(scopes_and_revocation, "keys_scopes");
both_backends!(revoked_key_stops_an_open_batch, "keys_revoke");
both_backends!(quotas_and_budget_count_nothing_twice, "keys_quota");

async fn scopes_and_revocation(pg: bool, test: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some((storage, schema)) = store(pg, test, &dir).await else {
        return;
    };
    bounded(60, async {
        let srv = Server::start_with("127.0.0.1:0".parse().unwrap(), storage.clone(), |_| {}).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&srv.url, &w, 4).await;
        wait_healthy(&srv.coord, 4).await;

        // No key: UNAUTHENTICATED, saying how to pass one.
        let mut none = srv.client_with_key(None).await;
        let e = none
            .list_probes(pb::ListProbesRequest {})
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert!(
            e.message().contains("authorization: Bearer") && e.message().contains("GEOLOC_API_KEY"),
            "{}",
            e.message()
        );
        let e = none.locate(req(TARGET)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        // A key nobody made.
        let mut bogus = srv.client_with_key(Some(&access::new_secret())).await;
        let e = bogus
            .list_probes(pb::ListProbesRequest {})
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unauthenticated, "unknown API key")
        );

        // A read key: fleet view and results, nothing else.
        let read = new_key(&storage, "reader", &[Scope::Read], Quotas::default()).await;
        let mut rc = srv.client_with_key(Some(&read)).await;
        let ps = rc
            .list_probes(pb::ListProbesRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ps.probes.len(), 4);
        let e = rc.locate(req(TARGET)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("`locate`") && e.message().contains("reader"),
            "{}",
            e.message()
        );
        let e = rc
            .locate_batch(pb::LocateBatchRequest {
                ips: vec![TARGET.into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let e = rc
            .clear_flag(pb::ClearFlagRequest {
                probe_id: "paris".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.message().contains("`admin`"), "{}", e.message());

        // A locate key locates (the result names it) but does not read the fleet.
        let loc = new_key(&storage, "locator", &[Scope::Locate], Quotas::default()).await;
        let mut lc = srv.client_with_key(Some(&loc)).await;
        let r = locate_status(&mut lc, req(TARGET)).await.unwrap();
        assert_eq!(r.requested_by, "locator");
        let row = storage.get_result(&r.result_id).await.unwrap().unwrap();
        assert_eq!(row.requested_by, "locator");
        let e = lc.list_probes(pb::ListProbesRequest {}).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        // The read key reads that result, with who asked for it.
        let got = rc
            .get_result(pb::GetResultRequest {
                key: Some(pb::get_result_request::Key::ResultId(r.result_id.clone())),
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        assert_eq!(got.requested_by, "locator");

        // `keys list` shows names and quotas, never a key.
        let mut out = Vec::new();
        keys_cmd(KeysAction::List { json: true })
            .run_on(&storage, &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\"name\":\"locator\"") && text.contains("\"name\":\"reader\""),
            "{text}"
        );
        assert!(!text.contains(&loc) && !text.contains(&read), "{text}");
        assert!(!text.contains("gk_"), "{text}");

        // Revoked by the command's code: refused at the next call.
        let mut out = Vec::new();
        keys_cmd(KeysAction::Revoke {
            name: "locator".into(),
        })
        .run_on(&storage, &mut out)
        .await
        .unwrap();
        let e = lc.locate(req(TARGET)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(e.message().contains("revoked"), "{}", e.message());
        // Twice: a clear error.
        let e = keys_cmd(KeysAction::Revoke {
            name: "locator".into(),
        })
        .run_on(&storage, &mut Vec::new())
        .await
        .unwrap_err();
        assert!(e.to_string().contains("revoked already"), "{e}");
    })
    .await;
    cleanup(&storage, schema).await;
}

async fn revoked_key_stops_an_open_batch(pg: bool, test: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some((storage, schema)) = store(pg, test, &dir).await else {
        return;
    };
    bounded(90, async {
        let srv = Server::start_with("127.0.0.1:0".parse().unwrap(), storage.clone(), |_| {}).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        // Probes that never answer for unknown targets: every address of the batch takes
        // its whole per-probe budget.
        let probes = fleet_as(&srv.url, &w, 3, Behaviour::HangOnUnknown).await;
        wait_healthy(&srv.coord, 3).await;
        let key = new_key(
            &storage,
            "batcher",
            &[Scope::Locate],
            Quotas {
                addresses_per_hour: 1000,
                concurrent: 1,
            },
        )
        .await;
        let mut c = srv.client_with_key(Some(&key)).await;
        let ips: Vec<String> = (1..=30).map(|i| format!("127.0.3.{i}")).collect();
        let mut s = c
            .locate_batch(pb::LocateBatchRequest {
                ips: ips.clone(),
                timeout_ms: 1500,
                concurrency: 8,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // While the batch holds the key's only concurrent slot, a second locate is refused.
        wait_for("the first address asked of a probe", 20, || {
            probes[0].count("127.0.3.1") > 0
        })
        .await;
        let e = locate_status(&mut c, req(TARGET)).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("`concurrent`") && e.message().contains("1 of 1"),
            "{}",
            e.message()
        );
        // The first address ends; then the key is revoked.
        let mut done = 0;
        loop {
            let ev = s.message().await.unwrap().expect("an event");
            if matches!(
                ev.event,
                Some(pb::locate_event::Event::Error(_)) | Some(pb::locate_event::Event::Result(_))
            ) {
                done += 1;
                break;
            }
        }
        assert!(storage
            .revoke_api_key("batcher", geoloc_coordinator::unix_ms())
            .await
            .unwrap());
        let end = loop {
            match s.message().await {
                Ok(Some(ev)) => {
                    if matches!(
                        ev.event,
                        Some(pb::locate_event::Event::Error(_))
                            | Some(pb::locate_event::Event::Result(_))
                    ) {
                        done += 1;
                    }
                }
                Ok(None) => {
                    panic!("the batch ended without saying the key was revoked ({done} done)")
                }
                Err(st) => break st,
            }
        };
        assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
        assert!(end.message().contains("revoked"), "{}", end.message());
        // At most the address running when the key was revoked finished after it.
        assert!(done <= 3, "{done} addresses done");
        let asked: usize = ips.iter().map(|ip| probes[0].count(ip)).sum();
        assert!(asked <= 3, "{asked} addresses measured");
    })
    .await;
    cleanup(&storage, schema).await;
}

async fn quotas_and_budget_count_nothing_twice(pg: bool, test: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some((storage, schema)) = store(pg, test, &dir).await else {
        return;
    };
    bounded(90, async {
        // 3 probes x 3 echo requests = 9 packets a locate; 15 a target and hour.
        let srv = Server::start_with("127.0.0.1:0".parse().unwrap(), storage.clone(), |c| {
            c.per_target_packets_per_hour = 15;
        })
        .await;
        let other = "127.0.0.51";
        let third = "127.0.0.52";
        let w = world(&[
            (TARGET, LYON.0, LYON.1),
            (other, 48.0, 2.0),
            (third, 40.0, -3.0),
        ]);
        let _probes = fleet(&srv.url, &w, 3).await;
        wait_healthy(&srv.coord, 3).await;
        let key = new_key(
            &storage,
            "quota",
            &[Scope::Locate],
            Quotas {
                addresses_per_hour: 2,
                concurrent: 4,
            },
        )
        .await;
        let mut c = srv.client_with_key(Some(&key)).await;
        let coord = srv.coord.clone();
        let used = || async { coord.access.key_addresses(&storage, "quota").await.unwrap() };
        let packets = |t: &'static str| {
            let storage = storage.clone();
            let coord = coord.clone();
            async move { coord.access.target_packets(&storage, t).await.unwrap() }
        };

        let r = locate_status(&mut c, req(TARGET)).await.unwrap();
        assert_eq!(used().await, 1);
        assert!(r.packets_sent > 0);
        assert_eq!(
            packets(TARGET).await,
            r.packets_sent as i64,
            "settled to what was sent"
        );
        // A stored answer sends nothing and counts nothing.
        let cached = locate_status(
            &mut c,
            pb::LocateRequest {
                reuse_stored: true,
                ..req(TARGET)
            },
        )
        .await
        .unwrap();
        assert!(cached.cached);
        assert_eq!(used().await, 1);
        assert_eq!(packets(TARGET).await, r.packets_sent as i64);
        // The target's budget refuses a second measurement; the refusal counts nothing.
        let e = locate_status(&mut c, req(TARGET)).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        let m = e.message();
        assert!(
            m.contains("per-target-packets-per-hour")
                && m.contains(&format!("{} of 15", r.packets_sent))
                && m.contains("resets at"),
            "{m}"
        );
        assert_eq!(
            e.metadata()
                .get("geoloc-error-code")
                .and_then(|v| v.to_str().ok()),
            Some("quota-exceeded")
        );
        assert_eq!(used().await, 1);
        assert_eq!(packets(TARGET).await, r.packets_sent as i64);
        // Another target: the key's second address of the hour.
        locate_status(&mut c, req(other)).await.unwrap();
        assert_eq!(used().await, 2);
        // The third is over the key's quota: refused, nothing counted, nothing sent.
        let e = locate_status(&mut c, req(third)).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(
            e.message().contains("addresses-per-hour")
                && e.message().contains("2 of 2")
                && e.message().contains("resets at"),
            "{}",
            e.message()
        );
        assert_eq!(used().await, 2);
        assert_eq!(packets(third).await, 0);
        // In a batch: an error event with the code.
        let mut s = c
            .locate_batch(pb::LocateBatchRequest {
                ips: vec![third.into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut codes = Vec::new();
        while let Some(ev) = s.message().await.unwrap() {
            if let Some(pb::locate_event::Event::Error(e)) = ev.event {
                codes.push((e.error_code, e.message));
            }
        }
        assert_eq!(codes.len(), 1);
        assert_eq!(codes[0].0, pb::ErrorCode::QuotaExceeded as i32, "{codes:?}");
        assert!(codes[0].1.contains("addresses-per-hour"), "{codes:?}");
        assert_eq!(used().await, 2);

        // The counters live in the store: a new coordinator on it (a restart, another
        // replica) refuses the same key and target.
        let coord2 = coordinator(storage.clone(), |c| c.reconnect_grace_ms = 0).await;
        let caller = coord2
            .access
            .authorize(&storage, Some(&format!("Bearer {key}")), Scope::Locate)
            .await
            .unwrap();
        let f = coord2
            .access
            .admit(&storage, &caller, third, 9, geoloc_coordinator::unix_ms())
            .await
            .unwrap_err();
        assert_eq!(f.code, FailureCode::QuotaExceeded, "{f:?}");
        assert_eq!(
            coord2
                .access
                .target_packets(&storage, TARGET)
                .await
                .unwrap(),
            r.packets_sent as i64
        );
    })
    .await;
    cleanup(&storage, schema).await;
}

#[test]
fn auth_none_needs_a_loopback_address() {
    use geoloc_coordinator::config::{Args, Config, FileConfig};
    let file: FileConfig =
        toml::from_str("listen = \"0.0.0.0:7470\"\nauth = \"none\"\ninsecure-plaintext = true\n")
            .unwrap();
    let e = Config::merge(Args::default(), file)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("auth = \"none\" is only accepted on a loopback"),
        "{e}"
    );
    let file: FileConfig =
        toml::from_str("listen = \"127.0.0.1:7470\"\nauth = \"none\"\n").unwrap();
    Config::merge(Args::default(), file).unwrap();
}
