//! Client API keys (hashes only) and the hourly usage counters of the abuse limits
//! (migration `20261129000002_keys.sql`).
use sqlx::Row;

use super::Storage;
use crate::core::access::{parse_scopes, scopes_text, ApiKeyRow};
use crate::error::{q, CoordinatorError, Result};

const KEY_COLS: &str = "name, key_hash, scopes, addresses_per_hour, concurrent, created_unix_ms, \
     last_used_unix_ms, revoked_unix_ms";

macro_rules! key_from_row {
    ($r:expr) => {{
        let r = $r;
        (|| -> std::result::Result<(ApiKeyRow, String), sqlx::Error> {
            Ok((
                ApiKeyRow {
                    name: r.try_get("name")?,
                    key_hash: r.try_get("key_hash")?,
                    scopes: Vec::new(),
                    addresses_per_hour: r.try_get("addresses_per_hour")?,
                    concurrent: r.try_get("concurrent")?,
                    created_unix_ms: r.try_get("created_unix_ms")?,
                    last_used_unix_ms: r.try_get("last_used_unix_ms")?,
                    revoked_unix_ms: r.try_get("revoked_unix_ms")?,
                },
                r.try_get::<String, _>("scopes")?,
            ))
        })()
    }};
}

fn finish_key(pair: (ApiKeyRow, String)) -> Result<ApiKeyRow> {
    let (mut row, scopes) = pair;
    row.scopes = parse_scopes(&scopes).map_err(|detail| CoordinatorError::Corrupt {
        what: "api_keys.scopes",
        detail: format!("key {}: {detail}", row.name),
    })?;
    Ok(row)
}

impl Storage {
    // ---- API keys -------------------------------------------------------------------------

    pub async fn insert_api_key(&self, k: &ApiKeyRow) -> Result<()> {
        let sql = "INSERT INTO api_keys (name, key_hash, scopes, addresses_per_hour, concurrent, \
                   created_unix_ms, last_used_unix_ms, revoked_unix_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        with_pool!(self, pool => sqlx::query(sql)
            .bind(&k.name).bind(&k.key_hash).bind(scopes_text(&k.scopes)).bind(k.addresses_per_hour)
            .bind(k.concurrent).bind(k.created_unix_ms).bind(k.last_used_unix_ms).bind(k.revoked_unix_ms)
            .execute(pool).await.map_err(q("insert api key"))?.rows_affected());
        Ok(())
    }

    /// The key whose secret hashes to `key_hash` (revoked or not).
    pub async fn get_api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRow>> {
        let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE key_hash = $1");
        let pair = with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(key_hash).fetch_optional(pool).await.map_err(q("get api key"))?;
            row.map(|r| key_from_row!(&r)).transpose().map_err(q("decode api key"))?
        });
        pair.map(finish_key).transpose()
    }

    pub async fn get_api_key(&self, name: &str) -> Result<Option<ApiKeyRow>> {
        let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE name = $1");
        let pair = with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(name).fetch_optional(pool).await.map_err(q("get api key"))?;
            row.map(|r| key_from_row!(&r)).transpose().map_err(q("decode api key"))?
        });
        pair.map(finish_key).transpose()
    }

    /// Every key (revoked ones too), by name.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        let sql = format!("SELECT {KEY_COLS} FROM api_keys ORDER BY name");
        let pairs = with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).fetch_all(pool).await.map_err(q("list api keys"))?;
            rows.iter().map(|r| key_from_row!(r)).collect::<std::result::Result<Vec<_>, _>>().map_err(q("decode api key"))?
        });
        pairs.into_iter().map(finish_key).collect()
    }

    /// Revokes a key; false when there is no such key or it was revoked already.
    pub async fn revoke_api_key(&self, name: &str, now_unix_ms: i64) -> Result<bool> {
        let sql =
            "UPDATE api_keys SET revoked_unix_ms = $1 WHERE name = $2 AND revoked_unix_ms IS NULL";
        let n = with_pool!(self, pool => sqlx::query(sql).bind(now_unix_ms).bind(name)
            .execute(pool).await.map_err(q("revoke api key"))?.rows_affected());
        Ok(n > 0)
    }

    pub async fn touch_api_key(&self, name: &str, now_unix_ms: i64) -> Result<()> {
        let sql = "UPDATE api_keys SET last_used_unix_ms = $1 WHERE name = $2";
        with_pool!(self, pool => sqlx::query(sql).bind(now_unix_ms).bind(name)
            .execute(pool).await.map_err(q("touch api key"))?.rows_affected());
        Ok(())
    }

    // ---- usage counters -------------------------------------------------------------------

    /// Adds `amount` to a counter if the sum stays within `limit`, in one statement (safe
    /// against concurrent calls and replicas). Err(current count) when it would not.
    pub async fn usage_try_add(
        &self,
        kind: &str,
        subject: &str,
        window_unix_ms: i64,
        amount: i64,
        limit: i64,
    ) -> Result<std::result::Result<(), i64>> {
        if amount <= limit {
            let sql = "INSERT INTO usage_counters (kind, subject, window_unix_ms, used) VALUES ($1, $2, $3, $4) \
                       ON CONFLICT (kind, subject, window_unix_ms) DO UPDATE SET used = usage_counters.used + excluded.used \
                       WHERE usage_counters.used + excluded.used <= $5";
            let n = with_pool!(self, pool => sqlx::query(sql)
                .bind(kind).bind(subject).bind(window_unix_ms).bind(amount).bind(limit)
                .execute(pool).await.map_err(q("add usage"))?.rows_affected());
            if n > 0 {
                return Ok(Ok(()));
            }
        }
        Ok(Err(self.usage_get(kind, subject, window_unix_ms).await?))
    }

    /// Adds `delta` (may be negative; the count stays >= 0) to a counter, creating it.
    pub async fn usage_add(
        &self,
        kind: &str,
        subject: &str,
        window_unix_ms: i64,
        delta: i64,
    ) -> Result<()> {
        let sql = "INSERT INTO usage_counters (kind, subject, window_unix_ms, used) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (kind, subject, window_unix_ms) DO UPDATE SET used = \
                   CASE WHEN usage_counters.used + $5 < 0 THEN 0 ELSE usage_counters.used + $5 END";
        with_pool!(self, pool => sqlx::query(sql)
            .bind(kind).bind(subject).bind(window_unix_ms).bind(delta.max(0)).bind(delta)
            .execute(pool).await.map_err(q("add usage"))?.rows_affected());
        Ok(())
    }

    /// A counter's value (0 when absent).
    pub async fn usage_get(&self, kind: &str, subject: &str, window_unix_ms: i64) -> Result<i64> {
        let sql = "SELECT used FROM usage_counters WHERE kind = $1 AND subject = $2 AND window_unix_ms = $3";
        with_pool!(self, pool => {
            let row = sqlx::query(sql).bind(kind).bind(subject).bind(window_unix_ms)
                .fetch_optional(pool).await.map_err(q("get usage"))?;
            row.map(|r| r.try_get::<i64, _>("used")).transpose().map_err(q("get usage")).map(|v| v.unwrap_or(0))
        })
    }

    /// Drops counters of windows before `window_unix_ms`; returns how many.
    pub async fn usage_purge(&self, window_unix_ms: i64) -> Result<u64> {
        let sql = "DELETE FROM usage_counters WHERE window_unix_ms < $1";
        Ok(
            with_pool!(self, pool => sqlx::query(sql).bind(window_unix_ms)
            .execute(pool).await.map_err(q("purge usage"))?.rows_affected()),
        )
    }
}
