//! Per-probe identity on real SQLite and PostgreSQL: enrolment tokens exchanged once for a
//! per-probe credential, a probe's id bound to its credential, revocation by a separate
//! `geoloc-coordinator probes revoke` process closing an open session, and position changes
//! awaiting `probes approve-position`. Probes are protocol-level clients (tests/common).
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use geoloc_coordinator::storage::Storage;
use geoloc_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_geoloc-coordinator");

/// Runs `geoloc-coordinator probes --database DB ARGS...` as its own process; its stdout,
/// or a panic with its stderr.
fn admin(db: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["probes", "--database", db])
        .args(args)
        .env_remove("GEOLOC_COORDINATOR_CONFIG")
        .env_remove("GEOLOC_COORDINATOR_DATABASE")
        .output()
        .expect("run geoloc-coordinator probes");
    assert!(
        out.status.success(),
        "probes {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn reg(id: &str, pos: (f64, f64), credential: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        credential: credential.into(),
        ..registration(id, pos, "")
    }
}

async fn enroll(url: &str, token: &str) -> Result<pb::EnrollReply, tonic::Status> {
    probe_client(url)
        .await
        .enroll(pb::EnrollRequest {
            enrolment_token: token.into(),
            agent_version: "test".into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn register(url: &str, r: pb::RegisterRequest) -> Result<pb::RegisterReply, tonic::Status> {
    let mut pc = probe_client(url).await;
    for _ in 0..300 {
        match pc.register(r.clone()).await {
            Err(s) if s.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other.map(|r| r.into_inner()),
        }
    }
    panic!("registration still throttled after 30 s");
}

/// An open session: the stream from the coordinator (the hello's ack already read) and the
/// sender that keeps the probe's half open.
struct Session {
    inbound: tonic::Streaming<pb::CoordinatorMessage>,
    _tx: mpsc::Sender<pb::ProbeMessage>,
}

async fn open_session(url: &str, id: &str, session_token: &str) -> Result<Session, tonic::Status> {
    let mut pc = probe_client(url).await;
    let (tx, rx) = mpsc::channel(8);
    tx.send(pb::ProbeMessage {
        kind: Some(pb::probe_message::Kind::Hello(pb::Hello {
            session_token: session_token.into(),
            probe_id: id.into(),
        })),
    })
    .await
    .unwrap();
    let mut inbound = pc.session(ReceiverStream::new(rx)).await?.into_inner();
    let first = inbound.message().await?.expect("an ack");
    assert!(matches!(
        first.kind,
        Some(pb::coordinator_message::Kind::Ack(_))
    ));
    Ok(Session { inbound, _tx: tx })
}

fn enrol_token(db: &str, args: &[&str]) -> String {
    let mut all = vec!["enroll"];
    all.extend_from_slice(args);
    let out = admin(db, &all);
    let token = out.trim().to_string();
    assert!(token.starts_with("gle_") && token.len() >= 4 + 32, "{out}");
    token
}

fn expect_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, text: &str) {
    match r {
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert!(
                s.message().contains(text),
                "{:?} lacks {text:?}",
                s.message()
            );
        }
        Ok(v) => panic!("expected {code:?} ({text}), got {v:?}"),
    }
}

/// The whole story on one store, `db` being the URL the admin process uses for it.
async fn scenario(storage: Storage, db: &str) {
    // Per-probe credentials only: no shared token.
    let srv = Server::start_with("127.0.0.1:0".parse().unwrap(), storage, |c| {
        c.probe_token = None
    })
    .await;
    let url = srv.url.clone();
    const PARIS: (f64, f64) = (48.8566, 2.3522);

    // Enrol: a one-time token, exchanged once for the probe's own credential.
    let token = enrol_token(db, &["--id", "p1", "--lat", "48.8566", "--lon", "2.3522"]);
    let p1 = enroll(&url, &token).await.expect("token exchanged");
    assert_eq!(p1.probe_id, "p1");
    assert!(p1.credential.len() >= 64, "{}", p1.credential);
    expect_code(
        enroll(&url, &token).await,
        Code::Unauthenticated,
        "already used",
    );
    expect_code(
        enroll(&url, "gle_made-up").await,
        Code::Unauthenticated,
        "unknown",
    );
    // A probe credential grants no client API access.
    let mut as_client = srv.client_with_key(Some(&p1.credential)).await;
    let e = as_client
        .list_probes(pb::ListProbesRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // An expired token is refused too.
    let now = geoloc_coordinator::unix_ms();
    let old = geoloc_coordinator::core::identity::hash_secret("gle_old");
    srv.coord
        .storage
        .create_enrolment("p3", &old, None, now - 10, now - 1)
        .await
        .unwrap();
    expect_code(
        enroll(&url, "gle_old").await,
        Code::Unauthenticated,
        "expired",
    );

    // Register with it and hold a session.
    let reply = register(&url, reg("p1", PARIS, &p1.credential))
        .await
        .unwrap();
    let mut session = open_session(&url, "p1", &reply.session_token)
        .await
        .unwrap();
    assert!(srv.coord.fleet.registry.get("p1").unwrap().connected);

    // Unknown credentials are refused; so is the shared-token mode's empty credential.
    expect_code(
        register(&url, reg("p1", PARIS, "glc_guess")).await,
        Code::Unauthenticated,
        "wrong probe credential",
    );
    expect_code(
        register(&url, reg("p9", PARIS, "")).await,
        Code::Unauthenticated,
        "wrong probe credential",
    );

    // A second enrolled agent claiming p1's id with its own credential cannot take p1's
    // registration nor its session.
    let token2 = enrol_token(db, &["--id", "p2"]);
    let p2 = enroll(&url, &token2).await.unwrap();
    expect_code(
        register(&url, reg("p1", PARIS, &p2.credential)).await,
        Code::PermissionDenied,
        "belongs to probe \"p2\"",
    );
    assert!(srv.coord.fleet.registry.get("p1").unwrap().connected);
    // p1's session token is still the one it got.
    assert!(srv
        .coord
        .fleet
        .registry
        .check_token("p1", &reply.session_token));

    // Position: p2's first registration sets its approved position; a move of more than
    // 1 km is refused and recorded until an administrator approves it.
    register(&url, reg("p2", (52.52, 13.405), &p2.credential))
        .await
        .unwrap();
    register(&url, reg("p2", (52.5201, 13.4051), &p2.credential))
        .await
        .unwrap();
    expect_code(
        register(&url, reg("p2", (52.62, 13.405), &p2.credential)).await,
        Code::FailedPrecondition,
        "awaits an admin's approval: geoloc-coordinator probes approve-position p2",
    );
    let list = admin(db, &["list"]);
    let line = list
        .lines()
        .find(|l| l.starts_with("p2 "))
        .expect("p2 listed");
    assert!(
        line.contains("52.6200,13.4050") && line.contains("enrolled"),
        "{list}"
    );
    // Still refused on a retry, then approved.
    expect_code(
        register(&url, reg("p2", (52.62, 13.405), &p2.credential)).await,
        Code::FailedPrecondition,
        "position change",
    );
    // p2 was flagged at its old position: the approved move keeps the flag and its epoch
    // (only an admin clears it; the evidence stays tied to where it was measured).
    let before = srv.coord.storage.get_probe("p2").await.unwrap().unwrap();
    srv.coord
        .storage
        .set_probe_flag("p2", true, "test: faster than light", None)
        .await
        .unwrap();
    let out = admin(db, &["approve-position", "p2"]);
    assert!(out.contains("approved"), "{out}");
    let moved = register(&url, reg("p2", (52.62, 13.405), &p2.credential))
        .await
        .unwrap();
    assert!(moved.flagged, "the flag survives the move: {moved:?}");
    assert_eq!(moved.flag_reason, "test: faster than light");
    let after = srv.coord.storage.get_probe("p2").await.unwrap().unwrap();
    assert!(
        after.flagged && (after.lat - 52.62).abs() < 1e-9,
        "{after:?}"
    );
    assert_eq!(after.flag_epoch_unix_ms, before.flag_epoch_unix_ms);
    let id2 = srv.coord.storage.identity("p2").await.unwrap().unwrap();
    assert_eq!(id2.approved.map(|p| p.lat), Some(52.62));
    assert!(id2.pending.is_none() && id2.approved_unix_ms.is_some());

    // Revoke p1 from another process: its open session ends with UNAUTHENTICATED soon
    // after, and its credential is refused.
    admin(db, &["revoke", "p1"]);
    let revoked_at = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match session.inbound.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(s) => return Some(s),
            }
        }
    })
    .await
    .expect("the revoked probe's session ends");
    let closed_after = revoked_at.elapsed();
    eprintln!(
        "revoked session closed {} ms after `probes revoke` exited",
        closed_after.as_millis()
    );
    let status = end.expect("ended with a status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    assert!(
        closed_after < Duration::from_millis(2500),
        "{closed_after:?}"
    );
    assert!(!srv.coord.fleet.registry.get("p1").unwrap().connected);
    expect_code(
        register(&url, reg("p1", PARIS, &p1.credential)).await,
        Code::Unauthenticated,
        "revoked",
    );
    let list = admin(db, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("p1 ") && l.contains("revoked")),
        "{list}"
    );

    // Re-enrolling issues a new credential; the old one stays refused.
    let token3 = enrol_token(db, &["--id", "p1"]);
    let p1b = enroll(&url, &token3).await.unwrap();
    expect_code(
        register(&url, reg("p1", PARIS, &p1.credential)).await,
        Code::Unauthenticated,
        "wrong probe credential",
    );
    register(&url, reg("p1", PARIS, &p1b.credential))
        .await
        .unwrap();

    // Only hashes are stored.
    let ids = srv.coord.storage.list_identities().await.unwrap();
    for i in &ids {
        let h = i.credential_hash.as_deref().unwrap_or("");
        assert!(!h.contains(&p1b.credential) && !h.contains(&p2.credential));
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_register_impersonate_move_revoke_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let storage = Storage::connect(&db).await.unwrap();
    scenario(storage, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_register_impersonate_move_revoke_on_postgres() {
    let Some((storage, schema)) = postgres_store("identity").await else {
        return;
    };
    // The admin process reaches the same schema through the URL's search_path.
    let url = pg_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    let keep = storage.clone();
    scenario(storage, &db).await;
    let cleanup = Storage::connect_in_schema(&pg_url(), Some(&schema))
        .await
        .unwrap();
    drop(keep);
    drop_pg_schema(&cleanup, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_shared_token_cannot_take_an_enrolled_or_revoked_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let srv = Server::start(&db, |_| {}).await;
    let url = srv.url.clone();
    // The shared token registers ids that are not enrolled (the lab's mode)...
    register(&url, registration("lab-1", (1.0, 2.0), ""))
        .await
        .unwrap();
    // ...but not an enrolled probe's id, before or after the token was exchanged.
    let token = enrol_token(&db, &["--id", "own-1"]);
    register(&url, registration("own-1", (1.0, 2.0), ""))
        .await
        .unwrap();
    let own = enroll(&url, &token).await.unwrap();
    expect_code(
        register(&url, registration("own-1", (1.0, 2.0), "")).await,
        Code::PermissionDenied,
        "registers with its own credential only",
    );
    register(&url, reg("own-1", (1.0, 2.0), &own.credential))
        .await
        .unwrap();
    // A revoked lab probe is refused too.
    admin(&db, &["revoke", "lab-1"]);
    expect_code(
        register(&url, registration("lab-1", (1.0, 2.0), "")).await,
        Code::Unauthenticated,
        "revoked",
    );
    srv.stop().await;
}

#[test]
fn admin_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(["probes", "--database", &db])
            .args(args)
            .env_remove("GEOLOC_COORDINATOR_CONFIG")
            .output()
            .unwrap()
    };
    let out = run(&["revoke", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
    let out = run(&["enroll", "--id", "bad id!"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad probe id"));
    let out = run(&["enroll", "--id", "p", "--lat", "95", "--lon", "0"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let out = run(&["approve-position", "nobody"]);
    assert!(!out.status.success());
}
