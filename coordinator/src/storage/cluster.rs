//! The tables of cluster mode (`migrations/20261207000001_cluster.sql`): replica
//! heartbeats, who holds which probe's session, and measurement requests for probes held
//! by another replica, taken with leases (`FOR UPDATE SKIP LOCKED`). PostgreSQL only: a
//! cluster on SQLite is refused by the configuration.
use std::sync::OnceLock;

use sqlx::postgres::PgPool;
use sqlx::Row;

use super::Storage;
use crate::core::rows::ProbeRow;
use crate::error::{q, CoordinatorError, Result};

/// Channel of "a request waits for probe <payload>".
pub const WORK_CHANNEL: &str = "geoloc_work";
/// Channel of "request <payload> is answered".
pub const DONE_CHANNEL: &str = "geoloc_done";

/// A replica whose heartbeat is older than this is dead.
pub const REPLICA_TTL: std::time::Duration = std::time::Duration::from_secs(6);

static REPLICA_ID: OnceLock<String> = OnceLock::new();

/// This process's replica id ('' on a single node): results it starts carry it.
pub fn replica_id() -> &'static str {
    REPLICA_ID.get().map_or("", String::as_str)
}

/// Sets this process's replica id, once, before the store is used (cluster mode).
pub fn set_replica_id(id: &str) -> Result<()> {
    REPLICA_ID.set(id.to_string()).map_err(|_| {
        CoordinatorError::InvalidConfig(format!(
            "replica id already set to {:?}, cannot set {id:?}",
            replica_id()
        ))
    })
}

/// A request taken by this replica for one of its probes.
#[derive(Debug, Clone)]
pub struct ClaimedItem {
    pub request_id: String,
    pub probe_id: String,
    pub request_json: String,
    pub deadline_unix_ms: i64,
}

impl Storage {
    pub(super) fn pg(&self) -> Result<&PgPool> {
        match self {
            Storage::Postgres(p) => Ok(p),
            Storage::Sqlite(_) => Err(CoordinatorError::InvalidConfig(
                "cluster mode needs a postgres:// database".into(),
            )),
        }
    }

    /// The PostgreSQL pool (cluster mode's LISTEN connections).
    pub fn pg_pool(&self) -> Result<PgPool> {
        self.pg().cloned()
    }

    /// Writes this replica's heartbeat.
    pub async fn replica_heartbeat(&self, replica: &str, started: i64, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO replicas (replica_id, started_unix_ms, heartbeat_unix_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (replica_id) DO UPDATE SET heartbeat_unix_ms = excluded.heartbeat_unix_ms",
        )
        .bind(replica)
        .bind(started)
        .bind(now)
        .execute(self.pg()?)
        .await
        .map_err(q("replica heartbeat"))?;
        Ok(())
    }

    /// Replicas whose heartbeat is at least `alive_after`.
    pub async fn live_replicas(&self, alive_after: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT replica_id FROM replicas WHERE heartbeat_unix_ms >= $1 ORDER BY replica_id",
        )
        .bind(alive_after)
        .fetch_all(self.pg()?)
        .await
        .map_err(q("live replicas"))?;
        rows.iter()
            .map(|r| r.try_get("replica_id").map_err(q("live replicas")))
            .collect()
    }

    /// Records that `replica` now holds the sessions of `add` and no longer those of
    /// `remove` (a probe held by another replica since is not touched).
    pub async fn publish_sessions(
        &self,
        replica: &str,
        add: &[String],
        remove: &[String],
        now: i64,
    ) -> Result<()> {
        let pool = self.pg()?;
        if !add.is_empty() {
            sqlx::query(
                "INSERT INTO probe_sessions (probe_id, replica_id, since_unix_ms) \
                 SELECT p, $2, $3 FROM UNNEST($1::text[]) AS p \
                 ON CONFLICT (probe_id) DO UPDATE SET replica_id = excluded.replica_id, \
                 since_unix_ms = excluded.since_unix_ms",
            )
            .bind(add)
            .bind(replica)
            .bind(now)
            .execute(pool)
            .await
            .map_err(q("publish sessions"))?;
        }
        if !remove.is_empty() {
            sqlx::query(
                "DELETE FROM probe_sessions WHERE replica_id = $1 AND probe_id = ANY($2::text[])",
            )
            .bind(replica)
            .bind(remove)
            .execute(pool)
            .await
            .map_err(q("unpublish sessions"))?;
        }
        Ok(())
    }

    /// Probes whose session is held by a live replica other than `me`, with that replica.
    pub async fn remote_probes(
        &self,
        me: &str,
        alive_after: i64,
    ) -> Result<Vec<(ProbeRow, String)>> {
        let sql = format!(
            "SELECT {}, s.replica_id AS holder FROM probe_sessions s \
             JOIN replicas r ON r.replica_id = s.replica_id \
             JOIN probes p ON p.probe_id = s.probe_id \
             WHERE s.replica_id <> $1 AND r.heartbeat_unix_ms >= $2",
            super::PROBE_COLS
                .split(", ")
                .map(|c| format!("p.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(me)
            .bind(alive_after)
            .fetch_all(self.pg()?)
            .await
            .map_err(q("remote probes"))?;
        rows.iter()
            .map(|r| {
                let row = probe_from_row!(r).map_err(q("remote probes"))?;
                let holder: String = r.try_get("holder").map_err(q("remote probes"))?;
                Ok((row, holder))
            })
            .collect()
    }

    /// Replicas whose heartbeat is older than `alive_after`: their `running` results are
    /// marked interrupted, their sessions and their row removed. Returns their ids. Any
    /// replica may run it at any time (every statement is idempotent).
    pub async fn reap_replicas(&self, alive_after: i64, now: i64) -> Result<Vec<String>> {
        let pool = self.pg()?;
        let rows = sqlx::query("SELECT replica_id FROM replicas WHERE heartbeat_unix_ms < $1")
            .bind(alive_after)
            .fetch_all(pool)
            .await
            .map_err(q("dead replicas"))?;
        let mut dead = Vec::new();
        for r in rows {
            let id: String = r.try_get("replica_id").map_err(q("dead replicas"))?;
            // Keyed runs are left `running`: a live replica's sweeper takes them over.
            self.mark_interrupted_of(&id, now, false).await?;
            sqlx::query("DELETE FROM probe_sessions WHERE replica_id = $1")
                .bind(&id)
                .execute(pool)
                .await
                .map_err(q("reap sessions"))?;
            sqlx::query("DELETE FROM replicas WHERE replica_id = $1 AND heartbeat_unix_ms < $2")
                .bind(&id)
                .bind(alive_after)
                .execute(pool)
                .await
                .map_err(q("reap replica"))?;
            dead.push(id);
        }
        Ok(dead)
    }

    /// Queues a request for `probe_id` and wakes the replicas (`NOTIFY geoloc_work`).
    /// A request id already queued is not queued twice.
    pub async fn enqueue_work(
        &self,
        request_id: &str,
        probe_id: &str,
        origin: &str,
        request_json: &str,
        deadline_unix_ms: i64,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pg()?.begin().await.map_err(q("enqueue work"))?;
        sqlx::query(
            "INSERT INTO work_items (request_id, probe_id, origin_replica, request_json, state, \
             deadline_unix_ms, created_unix_ms) VALUES ($1, $2, $3, $4, 'queued', $5, $6) \
             ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(request_id)
        .bind(probe_id)
        .bind(origin)
        .bind(request_json)
        .bind(deadline_unix_ms)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(q("enqueue work"))?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WORK_CHANNEL)
            .bind(probe_id)
            .execute(&mut *tx)
            .await
            .map_err(q("notify work"))?;
        tx.commit().await.map_err(q("enqueue work"))?;
        Ok(())
    }

    /// Takes (at most `limit`) open requests for `probes` whose deadline is ahead: queued
    /// ones, and ones leased by another replica whose lease expired (that replica died or
    /// lost the probe before answering), for `lease_ms`.
    /// Rows another replica is taking at the same moment are skipped, not waited for.
    pub async fn claim_work(
        &self,
        me: &str,
        probes: &[String],
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedItem>> {
        if probes.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE work_items SET state = 'leased', lease_owner = $1, lease_until_unix_ms = $3 + $4 \
             WHERE request_id IN (SELECT request_id FROM work_items \
               WHERE probe_id = ANY($2::text[]) AND deadline_unix_ms > $3 \
               AND (state = 'queued' OR (state = 'leased' AND lease_until_unix_ms < $3 \
                    AND lease_owner <> $1)) \
               ORDER BY created_unix_ms LIMIT $5 FOR UPDATE SKIP LOCKED) \
             RETURNING request_id, probe_id, request_json, deadline_unix_ms",
        )
        .bind(me)
        .bind(probes)
        .bind(now)
        .bind(lease_ms)
        .bind(limit)
        .fetch_all(self.pg()?)
        .await
        .map_err(q("claim work"))?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedItem {
                    request_id: r.try_get("request_id").map_err(q("claim work"))?,
                    probe_id: r.try_get("probe_id").map_err(q("claim work"))?,
                    request_json: r.try_get("request_json").map_err(q("claim work"))?,
                    deadline_unix_ms: r.try_get("deadline_unix_ms").map_err(q("claim work"))?,
                })
            })
            .collect()
    }

    /// Stores the answer of a request leased by `me` (once: an answered request is never
    /// overwritten) and wakes its origin (`NOTIFY geoloc_done`). False when it was already
    /// answered or the lease went to another replica.
    pub async fn finish_work(
        &self,
        me: &str,
        request_id: &str,
        outcome_json: &str,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pg()?.begin().await.map_err(q("finish work"))?;
        let n = sqlx::query(
            "UPDATE work_items SET state = 'done', outcome_json = $3, finished_unix_ms = $4 \
             WHERE request_id = $1 AND state = 'leased' AND lease_owner = $2",
        )
        .bind(request_id)
        .bind(me)
        .bind(outcome_json)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(q("finish work"))?
        .rows_affected();
        if n > 0 {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(DONE_CHANNEL)
                .bind(request_id)
                .execute(&mut *tx)
                .await
                .map_err(q("notify done"))?;
        }
        tx.commit().await.map_err(q("finish work"))?;
        Ok(n > 0)
    }

    /// The answers among `request_ids`: (request id, outcome JSON).
    pub async fn work_outcomes(&self, request_ids: &[String]) -> Result<Vec<(String, String)>> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT request_id, outcome_json FROM work_items \
             WHERE request_id = ANY($1::text[]) AND state = 'done'",
        )
        .bind(request_ids)
        .fetch_all(self.pg()?)
        .await
        .map_err(q("work outcomes"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("request_id").map_err(q("work outcomes"))?,
                    r.try_get::<Option<String>, _>("outcome_json")
                        .map_err(q("work outcomes"))?
                        .unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// Deletes requests created before `before` (answered or abandoned long ago).
    pub async fn prune_work(&self, before: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM work_items WHERE created_unix_ms < $1")
                .bind(before)
                .execute(self.pg()?)
                .await
                .map_err(q("prune work"))?
                .rows_affected(),
        )
    }

    /// How many requests are in each state (tests, metrics).
    pub async fn work_states(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM work_items GROUP BY state ORDER BY state",
        )
        .fetch_all(self.pg()?)
        .await
        .map_err(q("work states"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("state").map_err(q("work states"))?,
                    r.try_get("n").map_err(q("work states"))?,
                ))
            })
            .collect()
    }
}
