//! Keyed locate runs (`migrations/20261208000001_jobs.sql`): a run asked with an
//! idempotency key stores it with the run, so asking again returns that run, and a run whose
//! replica died can be taken over (by the client asking again, or by a cluster replica's
//! sweeper) instead of being lost or measured a second time.
use sqlx::{AssertSqlSafe, Row};

use super::{cluster, finish_result, Storage, RESULT_COLS};
use crate::core::rows::{ResultRow, ResultStatus};
use crate::error::{q, Result};

/// A keyed run as stored: its result row, the replica running it ('' on a single node) and
/// what was asked (JSON of `core::jobs::JobSpec`).
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub row: ResultRow,
    pub key: String,
    pub owner_replica: String,
    pub job_json: String,
}

/// What a claimed or taken-over run becomes: running again, on this replica.
const RUN_AGAIN: &str = "status = 'running', error_code = '', error = '', finished_unix_ms = NULL";

macro_rules! job_from_row {
    ($r:expr) => {{
        let r = $r;
        (|| -> std::result::Result<((ResultRow, String), String, String, String), sqlx::Error> {
            Ok((
                result_from_row!(r)?,
                r.try_get::<String, _>("job_key")?,
                r.try_get::<String, _>("owner_replica")?,
                r.try_get::<String, _>("job_json")?,
            ))
        })()
    }};
}

fn stored(t: ((ResultRow, String), String, String, String)) -> Result<StoredJob> {
    let (pair, key, owner_replica, job_json) = t;
    Ok(StoredJob {
        row: finish_result(pair)?,
        key,
        owner_replica,
        job_json,
    })
}

impl Storage {
    /// Inserts `r` as the run of `key` (owned by this replica); false, with nothing written,
    /// when `key` already names a run.
    pub async fn insert_keyed_result(
        &self,
        r: &ResultRow,
        key: &str,
        job_json: &str,
    ) -> Result<bool> {
        let n = self.insert_result_row(r, Some((key, job_json))).await?;
        Ok(n == 1)
    }

    /// The run `key` names, if any.
    pub async fn job(&self, key: &str) -> Result<Option<StoredJob>> {
        let sql = format!(
            "SELECT {RESULT_COLS}, job_key, owner_replica, job_json FROM results WHERE job_key = $1"
        );
        let t = with_pool!(self, pool => {
            let row = sqlx::query(AssertSqlSafe(sql.clone())).bind(key).fetch_optional(pool).await.map_err(q("get job"))?;
            row.map(|r| job_from_row!(&r)).transpose().map_err(q("decode job"))?
        });
        t.map(stored).transpose()
    }

    /// Takes the keyed run `result_id` over from `from` (its dead replica, or an interrupted
    /// run of this one, or one that failed for a reason that may have passed: no probe, a
    /// quota): running again, owned by this replica. False when it finished or someone else
    /// took it first.
    pub async fn take_over_job(&self, result_id: &str, from: &str) -> Result<bool> {
        let sql = format!(
            "UPDATE results SET owner_replica = $1, {RUN_AGAIN} WHERE result_id = $2 AND owner_replica = $3 \
             AND job_key IS NOT NULL AND (status IN ('running', 'interrupted') \
             OR (status = 'failed' AND error_code IN ('no-probes', 'quota-exceeded')))"
        );
        let n = with_pool!(self, pool => sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(cluster::replica_id()).bind(result_id).bind(from)
            .execute(pool).await.map_err(q("take over job"))?.rows_affected());
        Ok(n == 1)
    }

    /// Whether the run of `owner` is alive: on a single node (and for this replica's own
    /// runs) a `running` run is this process's; in cluster mode another replica's is alive
    /// while its heartbeat is newer than `alive_after` (unix ms).
    pub async fn job_owner_alive(&self, owner: &str, alive_after: i64) -> Result<bool> {
        if owner == cluster::replica_id() {
            return Ok(true);
        }
        // Another replica's run in a SQLite store (it was a cluster's once): nobody runs it.
        let Ok(pool) = self.pg() else {
            return Ok(false);
        };
        let row = sqlx::query("SELECT heartbeat_unix_ms FROM replicas WHERE replica_id = $1")
            .bind(owner)
            .fetch_optional(pool)
            .await
            .map_err(q("replica alive"))?;
        Ok(match row {
            Some(r) => {
                r.try_get::<i64, _>("heartbeat_unix_ms")
                    .map_err(q("replica alive"))?
                    >= alive_after
            }
            None => false,
        })
    }

    /// Cluster sweeper: takes up to `limit` keyed runs created after `since` that nobody
    /// finishes (interrupted, or running on a replica whose heartbeat is older than
    /// `alive_after`), skipping rows another replica is taking at the same moment. They are
    /// running again, owned by this replica.
    pub async fn claim_orphan_jobs(
        &self,
        alive_after: i64,
        since: i64,
        limit: i64,
    ) -> Result<Vec<StoredJob>> {
        let pool = self.pg()?;
        let sql = format!(
            "UPDATE results SET owner_replica = $1, {RUN_AGAIN} WHERE result_id IN ( \
               SELECT result_id FROM results WHERE job_key IS NOT NULL AND created_at_unix_ms >= $2 \
               AND (status = 'interrupted' OR (status = 'running' AND owner_replica <> $1 AND owner_replica NOT IN \
                    (SELECT replica_id FROM replicas WHERE heartbeat_unix_ms >= $3))) \
               ORDER BY created_at_unix_ms LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING {RESULT_COLS}, job_key, owner_replica, job_json"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(cluster::replica_id())
            .bind(since)
            .bind(alive_after)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(q("claim orphan jobs"))?;
        rows.iter()
            .map(|r| job_from_row!(r).map_err(q("decode job")).and_then(stored))
            .collect()
    }

    /// Marks the keyed run `result_id` failed with `code` and `message` if it is still
    /// `running` (a run taken over that ended before measuring: no vantage point, a limit).
    pub async fn fail_running_job(
        &self,
        result_id: &str,
        code: &str,
        message: &str,
        now_unix_ms: i64,
    ) -> Result<()> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE results SET status = 'failed', error_code = $1, error = $2, finished_unix_ms = $3 \
             WHERE result_id = $4 AND status = 'running'")
            .bind(code).bind(message).bind(now_unix_ms).bind(result_id)
            .execute(pool).await.map_err(q("fail job"))?.rows_affected());
        Ok(())
    }

    /// Deletes the measurement rows of run `result_id` (a taken-over run measures again;
    /// its probes answer a repeated request from their cache).
    pub async fn delete_result_measurements(&self, result_id: &str) -> Result<u64> {
        Ok(
            with_pool!(self, pool => sqlx::query("DELETE FROM measurements WHERE result_id = $1")
            .bind(result_id).execute(pool).await.map_err(q("delete run measurements"))?.rows_affected()),
        )
    }
}
