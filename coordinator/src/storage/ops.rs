//! Storage for operations (issue 8): the landmark-RTT index the speed-of-light checks
//! read, the retention of raw measurements, and the storage latency histogram.
//!
//! Retention (`raw-retention-days`, [`Storage::purge_raw_measurements`]) deletes raw rows
//! older than the cut-off that **no stored result needs**: a result is recomputed from its
//! own measurement rows, so rows with a `result_id` whose result exists are kept as long
//! as the result; the landmark rows of a probe that is flagged now (measuring or measured)
//! are kept as the evidence of its flag. What goes: landmark (vetting) measurements of
//! unflagged probes, and rows of results that no longer exist.
use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use sqlx::Row;

use super::{Storage, MEAS_COLS};
use crate::core::rows::{LandmarkRttRow, MeasurementRow};
use crate::error::{q, Result};

/// Rows deleted per statement by the retention (short write locks on SQLite).
const PURGE_BATCH: i64 = 5_000;
/// Measurements indexed per batch when rows stored before the index are added.
const BACKFILL_BATCH: i64 = 1_000;

fn storage_histogram() -> Histogram {
    // 0.5 ms .. 8 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// One label, as `[("name", "value")]`.
type Label = [(&'static str, &'static str); 1];

/// Histograms by one label.
pub type HistogramFamily = Family<Label, Histogram, fn() -> Histogram>;

/// Duration of storage calls by backend, seconds (one process-wide family: every store of
/// the process records into it).
pub static STORAGE_SECONDS: LazyLock<HistogramFamily> =
    LazyLock::new(|| Family::new_with_constructor(storage_histogram));

/// Times one storage call (`with_pool!`) until dropped.
pub struct QueryTimer {
    backend: &'static str,
    start: Instant,
}

impl QueryTimer {
    pub fn start(s: &Storage) -> QueryTimer {
        QueryTimer {
            backend: s.backend(),
            start: Instant::now(),
        }
    }
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        STORAGE_SECONDS
            .get_or_create(&[("backend", self.backend)])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

const LANDMARK_RTT_COLS: &str = "measurement_id, probe_id, landmark, from_lat, from_lon, to_lat, \
     to_lon, rtt_ms, created_unix_ms";

macro_rules! landmark_rtt_from_row {
    ($r:expr) => {{
        let r = $r;
        (|| -> std::result::Result<LandmarkRttRow, sqlx::Error> {
            Ok(LandmarkRttRow {
                measurement_id: r.try_get("measurement_id")?,
                probe_id: r.try_get("probe_id")?,
                landmark: r.try_get("landmark")?,
                from_lat: r.try_get("from_lat")?,
                from_lon: r.try_get("from_lon")?,
                to_lat: r.try_get("to_lat")?,
                to_lon: r.try_get("to_lon")?,
                rtt_ms: r.try_get("rtt_ms")?,
                created_unix_ms: r.try_get("created_unix_ms")?,
            })
        })()
    }};
}

impl Storage {
    /// Adds `m` to the landmark-RTT index if it is a landmark measurement (called by
    /// [`Storage::insert_measurement`]; idempotent).
    pub(crate) async fn index_landmark_rtt(&self, m: &MeasurementRow) -> Result<()> {
        let Some(l) = m.landmark_rtt() else {
            return Ok(());
        };
        let sql = format!(
            "INSERT INTO landmark_rtts ({LANDMARK_RTT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (measurement_id) DO NOTHING"
        );
        with_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(&l.measurement_id).bind(&l.probe_id).bind(&l.landmark).bind(l.from_lat).bind(l.from_lon)
            .bind(l.to_lat).bind(l.to_lon).bind(l.rtt_ms).bind(l.created_unix_ms)
            .execute(pool).await.map_err(q("index landmark rtt"))?.rows_affected());
        Ok(())
    }

    /// Indexes the landmark measurements stored before the index existed (or whose index
    /// row failed to be written); returns how many. Run at start.
    pub async fn backfill_landmark_rtts(&self) -> Result<u64> {
        let sql = format!(
            "SELECT {MEAS_COLS} FROM measurements m WHERE purpose = 'landmark' \
             AND target_landmark IS NOT NULL AND target_lat IS NOT NULL AND target_lon IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM landmark_rtts l WHERE l.measurement_id = m.measurement_id) \
             ORDER BY created_unix_ms, measurement_id LIMIT $1"
        );
        let mut total = 0u64;
        loop {
            let rows: Vec<MeasurementRow> = with_pool!(self, pool => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(BACKFILL_BATCH).fetch_all(pool).await.map_err(q("landmark rows to index"))?;
                rows.iter().map(|r| meas_from_row!(r)).collect::<std::result::Result<Vec<_>, _>>().map_err(q("decode measurement"))?
            });
            for m in &rows {
                self.index_landmark_rtt(m).await?;
            }
            total += rows.len() as u64;
            if (rows.len() as i64) < BACKFILL_BATCH {
                return Ok(total);
            }
        }
    }

    /// The evidence the speed-of-light checks and the calibration need, in one indexed
    /// query: per (probe, landmark, both declared positions), the fastest echo RTT among the
    /// landmark measurements newer than both flag epochs (`probes.flag_epoch_unix_ms`; 0
    /// for a landmark that is not a probe); ties go to the oldest. Oldest first.
    pub async fn landmark_evidence(&self) -> Result<Vec<LandmarkRttRow>> {
        let sql = format!(
            "SELECT {LANDMARK_RTT_COLS} FROM (\
               SELECT l.measurement_id, l.probe_id, l.landmark, l.from_lat, l.from_lon, l.to_lat, l.to_lon, \
                 l.rtt_ms, l.created_unix_ms, ROW_NUMBER() OVER (PARTITION BY l.probe_id, l.landmark, \
                 l.from_lat, l.from_lon, l.to_lat, l.to_lon ORDER BY l.rtt_ms, l.created_unix_ms, \
                 l.measurement_id) AS rn \
               FROM landmark_rtts l \
               LEFT JOIN probes pf ON pf.probe_id = l.probe_id \
               LEFT JOIN probes pt ON pt.probe_id = l.landmark \
               WHERE l.rtt_ms IS NOT NULL \
                 AND l.created_unix_ms >= COALESCE(pf.flag_epoch_unix_ms, 0) \
                 AND l.created_unix_ms >= COALESCE(pt.flag_epoch_unix_ms, 0)\
             ) best WHERE rn = 1 ORDER BY created_unix_ms, measurement_id"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).fetch_all(pool).await.map_err(q("landmark evidence"))?;
            rows.iter().map(|r| landmark_rtt_from_row!(r)).collect::<std::result::Result<Vec<_>, _>>().map_err(q("decode landmark evidence"))
        })
    }

    /// Number of rows of the landmark-RTT index.
    pub async fn count_landmark_rtts(&self) -> Result<i64> {
        let sql = "SELECT COUNT(*) AS n FROM landmark_rtts";
        with_pool!(self, pool => {
            let row = sqlx::query(sql).fetch_one(pool).await.map_err(q("count landmark rtts"))?;
            row.try_get::<i64, _>("n").map_err(q("count landmark rtts"))
        })
    }

    /// Deletes raw measurement rows created before `before_unix_ms` that no stored result
    /// needs and that are not the evidence of a current flag (see the module doc), with
    /// their landmark-index rows; returns how many raw rows were deleted.
    pub async fn purge_raw_measurements(&self, before_unix_ms: i64) -> Result<u64> {
        let select = "SELECT m.measurement_id FROM measurements m WHERE m.created_unix_ms < $1 \
             AND (m.result_id IS NULL OR NOT EXISTS (SELECT 1 FROM results r WHERE r.result_id = m.result_id)) \
             AND NOT EXISTS (SELECT 1 FROM probes p WHERE p.flagged \
                 AND (p.probe_id = m.probe_id OR p.probe_id = m.target_landmark)) \
             LIMIT $2";
        let delete_raw = format!("DELETE FROM measurements WHERE measurement_id IN ({select})");
        let mut total = 0u64;
        loop {
            let n = with_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(delete_raw.clone()))
                .bind(before_unix_ms).bind(PURGE_BATCH)
                .execute(pool).await.map_err(q("purge raw measurements"))?.rows_affected());
            total += n;
            if n < PURGE_BATCH as u64 {
                break;
            }
        }
        let delete_index = "DELETE FROM landmark_rtts WHERE created_unix_ms < $1 AND NOT EXISTS \
             (SELECT 1 FROM measurements m WHERE m.measurement_id = landmark_rtts.measurement_id)";
        with_pool!(self, pool => sqlx::query(delete_index).bind(before_unix_ms)
            .execute(pool).await.map_err(q("purge landmark index"))?.rows_affected());
        Ok(total)
    }
}
