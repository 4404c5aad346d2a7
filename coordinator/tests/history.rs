//! The stored-results listing (`Storage::list_results`, the `ListResults` RPC behind the
//! History page), identically on SQLite (a temporary file) and PostgreSQL (schema of its own;
//! skips only when the server cannot be reached, see `common::postgres_store`).
mod common;

use geoloc_coordinator::storage::{HistoryCursor, ResultRow, ResultStatus, Storage};

async fn sqlite() -> (Storage, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.sqlite").display());
    (Storage::connect(&url).await.unwrap(), dir)
}

fn row(id: &str, ip: &str, created: i64, status: ResultStatus) -> ResultRow {
    let done = status == ResultStatus::Done;
    ResultRow {
        result_id: id.into(),
        ip: ip.into(),
        mode: "all".into(),
        status,
        // A listing reads only these fields of the stored solution.
        solution_json: done.then(|| {
            format!(
                r#"{{"estimate":{{"lat":45.5,"lon":{created}.25}},"radius_km":120.5,
                   "place":{{"city":"Lyon","country":"FR","distance_km":3.0}},"method":"x"}}"#
            )
        }),
        error_code: if done { "" } else { "no-probes" }.into(),
        error: if done { "" } else { "no probe answered" }.into(),
        geoip_json: None,
        calibration_json: None,
        probes_asked: 0,
        probes_used: 0,
        packets_sent: 0,
        min_rtt_ms: None,
        nearest_probe: String::new(),
        created_at_unix_ms: created,
        finished_unix_ms: None,
        requested_by: String::new(),
    }
}

async fn listing_pages_newest_first(s: &Storage) {
    let (page, next) = s.list_results(None, 10, None).await.unwrap();
    assert!(page.is_empty() && next.is_none());
    // Two results at the same millisecond: the result id breaks the tie.
    let rows = [
        row("r1", "192.0.2.1", 1, ResultStatus::Done),
        row("r2", "192.0.2.2", 2, ResultStatus::Failed),
        row("r3a", "192.0.2.1", 3, ResultStatus::Done),
        row("r3b", "2001:db8::1", 3, ResultStatus::Done),
        row("r5", "192.0.2.1", 5, ResultStatus::Done),
    ];
    for r in &rows {
        s.insert_result(r).await.unwrap();
    }
    let ids = |v: &[geoloc_coordinator::storage::ResultSummary]| {
        v.iter().map(|r| r.result_id.clone()).collect::<Vec<_>>()
    };
    // Everything, two per page.
    let mut all = Vec::new();
    let mut cursor: Option<HistoryCursor> = None;
    let mut pages = 0;
    loop {
        let (page, next) = s.list_results(None, 2, cursor.as_ref()).await.unwrap();
        all.extend(ids(&page));
        pages += 1;
        assert!(pages <= 3, "too many pages");
        match next {
            // Tokens cross the wire as text.
            Some(c) => cursor = Some(HistoryCursor::parse(&c.to_token()).unwrap()),
            None => break,
        }
    }
    assert_eq!(all, ["r5", "r3b", "r3a", "r2", "r1"]);
    assert_eq!(pages, 3);
    // One address.
    let (page, next) = s.list_results(Some("192.0.2.1"), 0, None).await.unwrap();
    assert_eq!(ids(&page), ["r5", "r3a", "r1"]);
    assert!(next.is_none());
    let (page, next) = s.list_results(Some("192.0.2.1"), 1, None).await.unwrap();
    assert_eq!(ids(&page), ["r5"]);
    let (page, _) = s
        .list_results(Some("192.0.2.1"), 5, next.as_ref())
        .await
        .unwrap();
    assert_eq!(ids(&page), ["r3a", "r1"]);
    let (page, _) = s.list_results(Some("198.51.100.7"), 5, None).await.unwrap();
    assert!(page.is_empty());
    // What a summary carries.
    let (page, _) = s.list_results(None, 500, None).await.unwrap();
    let done = page.iter().find(|r| r.result_id == "r5").unwrap();
    assert_eq!(done.status, ResultStatus::Done);
    assert_eq!(done.estimate, Some((45.5, 5.25)));
    assert_eq!(done.radius_km, Some(120.5));
    assert_eq!((done.country.as_str(), done.city.as_str()), ("FR", "Lyon"));
    assert_eq!(done.created_at_unix_ms, 5);
    let failed = page.iter().find(|r| r.result_id == "r2").unwrap();
    assert_eq!(failed.status, ResultStatus::Failed);
    assert_eq!(failed.estimate, None);
    assert_eq!(failed.error_code, "no-probes");
    // A limit above the bound is cut to it (here: everything fits).
    let (page, next) = s.list_results(None, u32::MAX, None).await.unwrap();
    assert_eq!(page.len(), 5);
    assert!(next.is_none());
}

#[tokio::test]
async fn listing_sqlite() {
    let (s, _dir) = sqlite().await;
    listing_pages_newest_first(&s).await;
    s.close().await;
}

#[tokio::test]
async fn listing_postgres() {
    let Some((s, schema)) = common::postgres_store("history_listing").await else {
        return;
    };
    listing_pages_newest_first(&s).await;
    common::drop_pg_schema(&s, &schema).await;
    s.close().await;
}

#[tokio::test]
async fn listing_is_bounded_at_500() {
    let (s, _dir) = sqlite().await;
    for i in 0..510 {
        s.insert_result(&row(
            &format!("r{i:04}"),
            "192.0.2.1",
            i,
            ResultStatus::Failed,
        ))
        .await
        .unwrap();
    }
    let (page, next) = s.list_results(None, 100_000, None).await.unwrap();
    assert_eq!(page.len(), 500);
    assert_eq!(page[0].result_id, "r0509");
    let (rest, end) = s.list_results(None, 100_000, next.as_ref()).await.unwrap();
    assert_eq!(rest.len(), 10);
    assert!(end.is_none());
    s.close().await;
}
