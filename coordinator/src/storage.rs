//! Storage on SQLite (default, a file in WAL mode) or PostgreSQL, one schema
//! (`coordinator/migrations/`) applied at start with `sqlx::migrate!`, runtime queries only.
//!
//! Every query is written once with `$N` placeholders (both SQLite and PostgreSQL accept
//! them) and run on either pool through [`with_pool!`].
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

pub use crate::core::rows::{MeasurementRow, ProbeRow, ResultRow, ResultStatus};
use crate::error::{q, CoordinatorError, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A database of probes, raw measurements and results.
#[derive(Debug, Clone)]
pub enum Storage {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code on whichever pool backs the storage (timed: the storage latency
/// histogram of `/metrics`, `ops::STORAGE_SECONDS`).
macro_rules! with_pool {
    ($self:expr, $pool:ident => $body:expr) => {{
        let _timer = crate::storage::ops::QueryTimer::start($self);
        match $self {
            Storage::Sqlite($pool) => $body,
            Storage::Postgres($pool) => $body,
        }
    }};
}

const PROBE_COLS: &str = "probe_id, lat, lon, ipv4, ipv6, agent_version, flagged, flag_reason, \
     flag_epoch_unix_ms, first_seen_unix_ms, last_seen_unix_ms";
const RESULT_COLS: &str = "result_id, ip, mode, status, solution_json, error_code, error, geoip_json, \
     probes_asked, probes_used, packets_sent, min_rtt_ms, nearest_probe, created_at_unix_ms, finished_unix_ms, \
     calibration_json, requested_by";
/// Columns of [`MEAS_COLS`].
const MEAS_NCOLS: usize = 18;
/// Rows per multi-row measurement `INSERT` on SQLite (18 `?` binds each; SQLite allows
/// 32,766 per statement).
pub const MEAS_ROWS_PER_STATEMENT: usize = 128;
/// Rows a locate stores in one [`Storage::insert_measurements`] call (one transaction).
pub const MEAS_BATCH: usize = 500;
const MEAS_COLS: &str = "measurement_id, result_id, purpose, stage, request_id, probe_id, probe_lat, \
     probe_lon, target, target_landmark, target_lat, target_lon, outcome, error, excluded, packets_sent, \
     raw_json, created_unix_ms";

macro_rules! probe_from_row {
    ($r:expr) => {{
        let r = $r;
        (|| -> std::result::Result<ProbeRow, sqlx::Error> {
            Ok(ProbeRow {
                probe_id: r.try_get("probe_id")?,
                lat: r.try_get("lat")?,
                lon: r.try_get("lon")?,
                ipv4: r.try_get("ipv4")?,
                ipv6: r.try_get("ipv6")?,
                agent_version: r.try_get("agent_version")?,
                flagged: r.try_get("flagged")?,
                flag_reason: r.try_get("flag_reason")?,
                flag_epoch_unix_ms: r.try_get("flag_epoch_unix_ms")?,
                first_seen_unix_ms: r.try_get("first_seen_unix_ms")?,
                last_seen_unix_ms: r.try_get("last_seen_unix_ms")?,
            })
        })()
    }};
}

macro_rules! result_from_row {
    ($r:expr) => {{
        let r = $r;
        (|| -> std::result::Result<(ResultRow, String), sqlx::Error> {
            Ok((
                ResultRow {
                    result_id: r.try_get("result_id")?,
                    ip: r.try_get("ip")?,
                    mode: r.try_get("mode")?,
                    status: ResultStatus::Running,
                    solution_json: r.try_get("solution_json")?,
                    error_code: r.try_get("error_code")?,
                    error: r.try_get("error")?,
                    geoip_json: r.try_get("geoip_json")?,
                    calibration_json: r.try_get("calibration_json")?,
                    probes_asked: r.try_get("probes_asked")?,
                    probes_used: r.try_get("probes_used")?,
                    packets_sent: r.try_get("packets_sent")?,
                    min_rtt_ms: r.try_get("min_rtt_ms")?,
                    nearest_probe: r.try_get("nearest_probe")?,
                    created_at_unix_ms: r.try_get("created_at_unix_ms")?,
                    finished_unix_ms: r.try_get("finished_unix_ms")?,
                    requested_by: r.try_get("requested_by")?,
                },
                r.try_get::<String, _>("status")?,
            ))
        })()
    }};
}

macro_rules! meas_from_row {
    ($r:expr) => {{
        let r = $r;
        (|| -> std::result::Result<MeasurementRow, sqlx::Error> {
            Ok(MeasurementRow {
                measurement_id: r.try_get("measurement_id")?,
                result_id: r.try_get("result_id")?,
                purpose: r.try_get("purpose")?,
                stage: r.try_get("stage")?,
                request_id: r.try_get("request_id")?,
                probe_id: r.try_get("probe_id")?,
                probe_lat: r.try_get("probe_lat")?,
                probe_lon: r.try_get("probe_lon")?,
                target: r.try_get("target")?,
                target_landmark: r.try_get("target_landmark")?,
                target_lat: r.try_get("target_lat")?,
                target_lon: r.try_get("target_lon")?,
                outcome: r.try_get("outcome")?,
                error: r.try_get("error")?,
                excluded: r.try_get("excluded")?,
                packets_sent: r.try_get("packets_sent")?,
                raw_json: r.try_get("raw_json")?,
                created_unix_ms: r.try_get("created_unix_ms")?,
            })
        })()
    }};
}

fn finish_result(pair: (ResultRow, String)) -> Result<ResultRow> {
    let (mut row, status) = pair;
    row.status = ResultStatus::parse(&status)?;
    Ok(row)
}

pub mod cluster;
mod history;
mod identity;
pub mod jobs;
mod keys;
pub use history::{HistoryCursor, ResultSummary, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE};
mod ops;
pub use ops::STORAGE_SECONDS;

impl Storage {
    /// Opens `sqlite://FILE` (created if missing, WAL) or `postgres://...`, and applies the
    /// migrations.
    pub async fn connect(url: &str) -> Result<Storage> {
        Self::connect_in_schema(url, None).await
    }

    /// Like [`Storage::connect`]; on PostgreSQL, `schema` (created if missing) becomes the
    /// `search_path`, so that several independent stores can share one database (tests).
    pub async fn connect_in_schema(url: &str, schema: Option<&str>) -> Result<Storage> {
        let conn_err = |source| CoordinatorError::DatabaseConnect {
            url: redact(url),
            source,
        };
        let storage = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(conn_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(conn_err)?;
            Storage::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let mut opts = PgConnectOptions::from_str(url).map_err(conn_err)?;
            if let Some(schema) = schema {
                if !schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || schema.is_empty()
                {
                    return Err(CoordinatorError::InvalidConfig(format!(
                        "bad schema name {schema:?}"
                    )));
                }
                let bootstrap = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(opts.clone())
                    .await
                    .map_err(conn_err)?;
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS {schema}"
                )))
                .execute(&bootstrap)
                .await
                .map_err(q("create schema"))?;
                bootstrap.close().await;
                opts = opts.options([("search_path", schema)]);
            }
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(conn_err)?;
            Storage::Postgres(pool)
        } else {
            return Err(CoordinatorError::DatabaseUrl(redact(url)));
        };
        with_pool!(&storage, pool => MIGRATOR.run(pool).await)?;
        Ok(storage)
    }

    /// "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        match self {
            Storage::Sqlite(_) => "sqlite",
            Storage::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// SQLite journal mode ("wal" expected); None on PostgreSQL.
    pub async fn sqlite_journal_mode(&self) -> Result<Option<String>> {
        match self {
            Storage::Sqlite(pool) => {
                let row = sqlx::query("PRAGMA journal_mode")
                    .fetch_one(pool)
                    .await
                    .map_err(q("journal_mode"))?;
                Ok(Some(
                    row.try_get::<String, _>(0).map_err(q("journal_mode"))?,
                ))
            }
            Storage::Postgres(_) => Ok(None),
        }
    }

    // ---- probes -------------------------------------------------------------------------

    /// Inserts or updates a probe (identity, position, addresses, version, last seen). The
    /// flag and first-seen time of an existing probe are kept.
    pub async fn upsert_probe(&self, p: &ProbeRow) -> Result<()> {
        let sql = "INSERT INTO probes (probe_id, lat, lon, ipv4, ipv6, agent_version, flagged, flag_reason, \
                   flag_epoch_unix_ms, first_seen_unix_ms, last_seen_unix_ms) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                   ON CONFLICT (probe_id) DO UPDATE SET lat = excluded.lat, lon = excluded.lon, \
                   ipv4 = excluded.ipv4, ipv6 = excluded.ipv6, agent_version = excluded.agent_version, \
                   flag_epoch_unix_ms = excluded.flag_epoch_unix_ms, last_seen_unix_ms = excluded.last_seen_unix_ms";
        with_pool!(self, pool => sqlx::query(sql)
            .bind(&p.probe_id).bind(p.lat).bind(p.lon).bind(&p.ipv4).bind(&p.ipv6)
            .bind(&p.agent_version).bind(p.flagged).bind(&p.flag_reason).bind(p.flag_epoch_unix_ms)
            .bind(p.first_seen_unix_ms).bind(p.last_seen_unix_ms)
            .execute(pool).await.map_err(q("upsert probe"))?.rows_affected());
        Ok(())
    }

    pub async fn touch_probe(&self, probe_id: &str, last_seen_unix_ms: i64) -> Result<()> {
        let sql = "UPDATE probes SET last_seen_unix_ms = $1 WHERE probe_id = $2";
        with_pool!(self, pool => sqlx::query(sql).bind(last_seen_unix_ms).bind(probe_id)
            .execute(pool).await.map_err(q("touch probe"))?.rows_affected());
        Ok(())
    }

    /// Sets or clears the speed-of-light flag. Clearing also moves the probe's flag epoch to
    /// `epoch_unix_ms` so that older landmark measurements no longer count against it.
    pub async fn set_probe_flag(
        &self,
        probe_id: &str,
        flagged: bool,
        reason: &str,
        epoch_unix_ms: Option<i64>,
    ) -> Result<bool> {
        let n = match epoch_unix_ms {
            Some(epoch) => {
                let sql = "UPDATE probes SET flagged = $1, flag_reason = $2, flag_epoch_unix_ms = $3 WHERE probe_id = $4";
                with_pool!(self, pool => sqlx::query(sql).bind(flagged).bind(reason).bind(epoch).bind(probe_id)
                    .execute(pool).await.map_err(q("set flag"))?.rows_affected())
            }
            None => {
                let sql = "UPDATE probes SET flagged = $1, flag_reason = $2 WHERE probe_id = $3";
                with_pool!(self, pool => sqlx::query(sql).bind(flagged).bind(reason).bind(probe_id)
                    .execute(pool).await.map_err(q("set flag"))?.rows_affected())
            }
        };
        Ok(n > 0)
    }

    pub async fn get_probe(&self, probe_id: &str) -> Result<Option<ProbeRow>> {
        let sql = format!("SELECT {PROBE_COLS} FROM probes WHERE probe_id = $1");
        with_pool!(self, pool => {
            let row = sqlx::query(AssertSqlSafe(sql.clone())).bind(probe_id).fetch_optional(pool).await.map_err(q("get probe"))?;
            row.map(|r| probe_from_row!(&r)).transpose().map_err(q("decode probe"))
        })
    }

    pub async fn list_probes(&self) -> Result<Vec<ProbeRow>> {
        let sql = format!("SELECT {PROBE_COLS} FROM probes ORDER BY probe_id");
        with_pool!(self, pool => {
            let rows = sqlx::query(AssertSqlSafe(sql.clone())).fetch_all(pool).await.map_err(q("list probes"))?;
            rows.iter().map(|r| probe_from_row!(r)).collect::<std::result::Result<Vec<_>, _>>().map_err(q("decode probe"))
        })
    }

    // ---- results ------------------------------------------------------------------------

    pub async fn insert_result(&self, r: &ResultRow) -> Result<()> {
        self.insert_result_row(r, None).await.map(|_| ())
    }

    /// Inserts `r` owned by this replica; with `job` = (key, what was asked), as the run of
    /// that idempotency key, skipped (0 rows) when the key already names a run.
    pub(crate) async fn insert_result_row(
        &self,
        r: &ResultRow,
        job: Option<(&str, &str)>,
    ) -> Result<u64> {
        let on_conflict = if job.is_some() {
            " ON CONFLICT DO NOTHING"
        } else {
            ""
        };
        let sql = format!(
            "INSERT INTO results ({RESULT_COLS}, owner_replica, job_key, job_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20){on_conflict}"
        );
        Ok(
            with_pool!(self, pool => sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(&r.result_id).bind(&r.ip).bind(&r.mode).bind(r.status.as_str()).bind(&r.solution_json)
            .bind(&r.error_code).bind(&r.error).bind(&r.geoip_json).bind(r.probes_asked).bind(r.probes_used)
            .bind(r.packets_sent).bind(r.min_rtt_ms).bind(&r.nearest_probe).bind(r.created_at_unix_ms)
            .bind(r.finished_unix_ms).bind(&r.calibration_json).bind(&r.requested_by)
            .bind(cluster::replica_id()).bind(job.map(|j| j.0)).bind(job.map(|j| j.1))
            .execute(pool).await.map_err(q("insert result"))?.rows_affected()),
        )
    }

    /// Writes the outcome of a run (everything but id, ip, mode and creation time).
    pub async fn update_result(&self, r: &ResultRow) -> Result<()> {
        let sql = "UPDATE results SET status = $1, solution_json = $2, error_code = $3, error = $4, geoip_json = $5, \
                   probes_asked = $6, probes_used = $7, packets_sent = $8, min_rtt_ms = $9, nearest_probe = $10, \
                   finished_unix_ms = $11, calibration_json = $12 WHERE result_id = $13";
        with_pool!(self, pool => sqlx::query(sql)
            .bind(r.status.as_str()).bind(&r.solution_json).bind(&r.error_code).bind(&r.error).bind(&r.geoip_json)
            .bind(r.probes_asked).bind(r.probes_used).bind(r.packets_sent).bind(r.min_rtt_ms).bind(&r.nearest_probe)
            .bind(r.finished_unix_ms).bind(&r.calibration_json).bind(&r.result_id)
            .execute(pool).await.map_err(q("update result"))?.rows_affected());
        Ok(())
    }

    pub async fn get_result(&self, result_id: &str) -> Result<Option<ResultRow>> {
        let sql = format!("SELECT {RESULT_COLS} FROM results WHERE result_id = $1");
        let pair = with_pool!(self, pool => {
            let row = sqlx::query(AssertSqlSafe(sql.clone())).bind(result_id).fetch_optional(pool).await.map_err(q("get result"))?;
            row.map(|r| result_from_row!(&r)).transpose().map_err(q("decode result"))?
        });
        pair.map(finish_result).transpose()
    }

    /// The newest successful result for `ip` (canonical text form).
    pub async fn latest_done_result(&self, ip: &str) -> Result<Option<ResultRow>> {
        let sql = format!(
            "SELECT {RESULT_COLS} FROM results WHERE ip = $1 AND status = 'done' \
             ORDER BY created_at_unix_ms DESC, result_id DESC LIMIT 1"
        );
        let pair = with_pool!(self, pool => {
            let row = sqlx::query(AssertSqlSafe(sql.clone())).bind(ip).fetch_optional(pool).await.map_err(q("latest result"))?;
            row.map(|r| result_from_row!(&r)).transpose().map_err(q("decode result"))?
        });
        pair.map(finish_result).transpose()
    }

    pub async fn count_results(&self, ip: &str) -> Result<i64> {
        let sql = "SELECT COUNT(*) AS n FROM results WHERE ip = $1";
        with_pool!(self, pool => {
            let row = sqlx::query(sql).bind(ip).fetch_one(pool).await.map_err(q("count results"))?;
            row.try_get::<i64, _>("n").map_err(q("count results"))
        })
    }

    /// Marks runs left `running` by a previous process of this replica (single node: the
    /// one process) as `interrupted`; returns how many. Runs of other cluster replicas are
    /// left to [`Storage::reap_replicas`].
    pub async fn mark_interrupted(&self, now_unix_ms: i64) -> Result<u64> {
        self.mark_interrupted_of(cluster::replica_id(), now_unix_ms, true)
            .await
    }

    /// Marks the `running` runs started by `replica` as `interrupted` (with `keyed`, also
    /// the runs asked with an idempotency key; without, those stay `running` for another
    /// replica to take over).
    pub(crate) async fn mark_interrupted_of(
        &self,
        replica: &str,
        now_unix_ms: i64,
        keyed: bool,
    ) -> Result<u64> {
        let sql = if keyed {
            "UPDATE results SET status = 'interrupted', error_code = 'interrupted', \
             error = 'coordinator stopped during the measurement', finished_unix_ms = $1 \
             WHERE status = 'running' AND owner_replica = $2"
        } else {
            "UPDATE results SET status = 'interrupted', error_code = 'interrupted', \
             error = 'coordinator stopped during the measurement', finished_unix_ms = $1 \
             WHERE status = 'running' AND owner_replica = $2 AND job_key IS NULL"
        };
        Ok(
            with_pool!(self, pool => sqlx::query(sql).bind(now_unix_ms).bind(replica)
            .execute(pool).await.map_err(q("mark interrupted"))?.rows_affected()),
        )
    }

    // ---- measurements -------------------------------------------------------------------

    /// Stores one raw answer (and indexes it when it measured a landmark): a batch of one
    /// (the single `INSERT` path).
    pub async fn insert_measurement(&self, m: &MeasurementRow) -> Result<()> {
        self.insert_measurements(std::slice::from_ref(m)).await
    }

    /// Stores `rows` (indexing those that measured a landmark) in one transaction (one
    /// commit for the call instead of one per row: a locate's rows arrive together). All
    /// rows are stored or none is. SQLite gets multi-row `INSERT`s of
    /// [`MEAS_ROWS_PER_STATEMENT`] rows with anonymous `?` parameters; PostgreSQL one
    /// `INSERT ... SELECT FROM UNNEST` of one array per column (18 binds for any count).
    pub async fn insert_measurements(&self, rows: &[MeasurementRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let _timer = ops::QueryTimer::start(self);
        match self {
            Storage::Sqlite(pool) => {
                // `?`, not `$N`: sqlx-sqlite asks SQLite every parameter's name, which is a
                // linear scan of the statement's named parameters (a statement's cost grew
                // with the square of its binds); anonymous ones have no name to scan.
                let statement = |n: usize| -> String {
                    let one = format!("({})", vec!["?"; MEAS_NCOLS].join(", "));
                    format!(
                        "INSERT INTO measurements ({MEAS_COLS}) VALUES {}",
                        vec![one.as_str(); n].join(", ")
                    )
                };
                let full = statement(MEAS_ROWS_PER_STATEMENT);
                let mut tx = pool.begin().await.map_err(q("begin measurements"))?;
                for chunk in rows.chunks(MEAS_ROWS_PER_STATEMENT) {
                    let sql = if chunk.len() == MEAS_ROWS_PER_STATEMENT {
                        full.clone()
                    } else {
                        statement(chunk.len())
                    };
                    let mut query = sqlx::query(AssertSqlSafe(sql));
                    for m in chunk {
                        query = query
                            .bind(&m.measurement_id)
                            .bind(&m.result_id)
                            .bind(&m.purpose)
                            .bind(m.stage)
                            .bind(&m.request_id)
                            .bind(&m.probe_id)
                            .bind(m.probe_lat)
                            .bind(m.probe_lon)
                            .bind(&m.target)
                            .bind(&m.target_landmark)
                            .bind(m.target_lat)
                            .bind(m.target_lon)
                            .bind(&m.outcome)
                            .bind(&m.error)
                            .bind(&m.excluded)
                            .bind(m.packets_sent)
                            .bind(&m.raw_json)
                            .bind(m.created_unix_ms);
                    }
                    query
                        .execute(&mut *tx)
                        .await
                        .map_err(q("insert measurements"))?;
                }
                tx.commit().await.map_err(q("commit measurements"))?;
            }
            Storage::Postgres(pool) => {
                let col = |f: fn(&MeasurementRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
                let opt =
                    |f: fn(&MeasurementRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
                let int = |f: fn(&MeasurementRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
                let flt = |f: fn(&MeasurementRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
                let oflt =
                    |f: fn(&MeasurementRow) -> Option<f64>| rows.iter().map(f).collect::<Vec<_>>();
                let sql = format!(
                    "INSERT INTO measurements ({MEAS_COLS}) SELECT * FROM UNNEST($1::text[], $2::text[], \
                     $3::text[], $4::int8[], $5::text[], $6::text[], $7::float8[], $8::float8[], $9::text[], \
                     $10::text[], $11::float8[], $12::float8[], $13::text[], $14::text[], $15::text[], \
                     $16::int8[], $17::text[], $18::int8[])"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(col(|m| &m.measurement_id))
                    .bind(opt(|m| m.result_id.as_deref()))
                    .bind(col(|m| &m.purpose))
                    .bind(int(|m| m.stage))
                    .bind(col(|m| &m.request_id))
                    .bind(col(|m| &m.probe_id))
                    .bind(flt(|m| m.probe_lat))
                    .bind(flt(|m| m.probe_lon))
                    .bind(col(|m| &m.target))
                    .bind(opt(|m| m.target_landmark.as_deref()))
                    .bind(oflt(|m| m.target_lat))
                    .bind(oflt(|m| m.target_lon))
                    .bind(col(|m| &m.outcome))
                    .bind(col(|m| &m.error))
                    .bind(col(|m| &m.excluded))
                    .bind(int(|m| m.packets_sent))
                    .bind(col(|m| &m.raw_json))
                    .bind(int(|m| m.created_unix_ms))
                    .execute(pool)
                    .await
                    .map_err(q("insert measurements"))?;
            }
        }
        for m in rows {
            self.index_landmark_rtt(m).await?;
        }
        Ok(())
    }

    /// Raw rows of one locate run, in insertion-time order.
    pub async fn measurements_for_result(&self, result_id: &str) -> Result<Vec<MeasurementRow>> {
        let sql = format!(
            "SELECT {MEAS_COLS} FROM measurements WHERE result_id = $1 ORDER BY created_unix_ms, measurement_id"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(AssertSqlSafe(sql.clone())).bind(result_id).fetch_all(pool).await.map_err(q("measurements"))?;
            rows.iter().map(|r| meas_from_row!(r)).collect::<std::result::Result<Vec<_>, _>>().map_err(q("decode measurement"))
        })
    }

    /// Landmark (probe-to-landmark) measurements, oldest first. The checks read the index
    /// instead ([`Storage::landmark_evidence`]).
    pub async fn landmark_measurements(&self) -> Result<Vec<MeasurementRow>> {
        let sql = format!(
            "SELECT {MEAS_COLS} FROM measurements WHERE purpose = 'landmark' ORDER BY created_unix_ms, measurement_id"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(AssertSqlSafe(sql.clone())).fetch_all(pool).await.map_err(q("landmark measurements"))?;
            rows.iter().map(|r| meas_from_row!(r)).collect::<std::result::Result<Vec<_>, _>>().map_err(q("decode measurement"))
        })
    }

    /// Number of raw rows that measured `target` for locating (all runs).
    pub async fn count_locate_measurements(&self, target: &str) -> Result<i64> {
        let sql = "SELECT COUNT(*) AS n FROM measurements WHERE target = $1 AND purpose = 'locate'";
        with_pool!(self, pool => {
            let row = sqlx::query(sql).bind(target).fetch_one(pool).await.map_err(q("count measurements"))?;
            row.try_get::<i64, _>("n").map_err(q("count measurements"))
        })
    }
}

/// Hides a password in a database URL before it is printed.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((creds, host)) = rest.split_once('@') {
            if let Some((user, _pw)) = creds.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
