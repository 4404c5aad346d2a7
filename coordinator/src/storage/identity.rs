//! Storage of per-probe identities and enrolment tokens (`core::identity`); only hashes of
//! secrets are stored.
use geoloc_engine::LatLon;
use sqlx::Row;

use super::Storage;
use crate::core::identity::{EnrolmentRow, IdentityRow};
use crate::error::{q, Result};

const IDENTITY_COLS: &str = "probe_id, credential_hash, created_unix_ms, enrolled_unix_ms, \
     revoked_unix_ms, approved_lat, approved_lon, approved_unix_ms, pending_lat, pending_lon, \
     pending_unix_ms";

macro_rules! identity_from_row {
    ($r:expr) => {{
        let r = $r;
        (|| -> std::result::Result<IdentityRow, sqlx::Error> {
            let pos = |lat: Option<f64>, lon: Option<f64>| match (lat, lon) {
                (Some(lat), Some(lon)) => Some(LatLon { lat, lon }),
                _ => None,
            };
            Ok(IdentityRow {
                probe_id: r.try_get("probe_id")?,
                credential_hash: r.try_get("credential_hash")?,
                created_unix_ms: r.try_get("created_unix_ms")?,
                enrolled_unix_ms: r.try_get("enrolled_unix_ms")?,
                revoked_unix_ms: r.try_get("revoked_unix_ms")?,
                approved: pos(r.try_get("approved_lat")?, r.try_get("approved_lon")?),
                approved_unix_ms: r.try_get("approved_unix_ms")?,
                pending: pos(r.try_get("pending_lat")?, r.try_get("pending_lon")?),
                pending_unix_ms: r.try_get("pending_unix_ms")?,
            })
        })()
    }};
}

impl Storage {
    /// Records a new enrolment token for `probe_id`, creating its identity if needed (with
    /// `approved` as its approved position when given). An existing identity is kept, but
    /// un-revoked: re-enrolling is how an administrator re-issues a credential; the old
    /// credential stays valid until the new token is exchanged.
    pub async fn create_enrolment(
        &self,
        probe_id: &str,
        token_hash: &str,
        approved: Option<LatLon>,
        now_unix_ms: i64,
        expires_unix_ms: i64,
    ) -> Result<()> {
        let (lat, lon, at) = match approved {
            Some(p) => (Some(p.lat), Some(p.lon), Some(now_unix_ms)),
            None => (None, None, None),
        };
        let upsert = "INSERT INTO probe_identities (probe_id, created_unix_ms, approved_lat, approved_lon, \
                      approved_unix_ms) VALUES ($1, $2, $3, $4, $5) \
                      ON CONFLICT (probe_id) DO UPDATE SET revoked_unix_ms = NULL, \
                      approved_lat = COALESCE(excluded.approved_lat, probe_identities.approved_lat), \
                      approved_lon = COALESCE(excluded.approved_lon, probe_identities.approved_lon), \
                      approved_unix_ms = COALESCE(excluded.approved_unix_ms, probe_identities.approved_unix_ms)";
        let token = "INSERT INTO probe_enrolments (token_hash, probe_id, created_unix_ms, expires_unix_ms) \
                     VALUES ($1, $2, $3, $4)";
        with_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(q("begin enrolment"))?;
            sqlx::query(upsert).bind(probe_id).bind(now_unix_ms).bind(lat).bind(lon).bind(at)
                .execute(&mut *tx).await.map_err(q("insert identity"))?;
            sqlx::query(token).bind(token_hash).bind(probe_id).bind(now_unix_ms).bind(expires_unix_ms)
                .execute(&mut *tx).await.map_err(q("insert enrolment"))?;
            tx.commit().await.map_err(q("commit enrolment"))?;
        });
        Ok(())
    }

    /// The enrolment token with this hash.
    pub async fn enrolment(&self, token_hash: &str) -> Result<Option<EnrolmentRow>> {
        let sql = "SELECT token_hash, probe_id, created_unix_ms, expires_unix_ms, used_unix_ms \
                   FROM probe_enrolments WHERE token_hash = $1";
        with_pool!(self, pool => {
            let row = sqlx::query(sql).bind(token_hash).fetch_optional(pool).await.map_err(q("enrolment"))?;
            row.map(|r| -> std::result::Result<EnrolmentRow, sqlx::Error> {
                Ok(EnrolmentRow {
                    token_hash: r.try_get("token_hash")?,
                    probe_id: r.try_get("probe_id")?,
                    created_unix_ms: r.try_get("created_unix_ms")?,
                    expires_unix_ms: r.try_get("expires_unix_ms")?,
                    used_unix_ms: r.try_get("used_unix_ms")?,
                })
            }).transpose().map_err(q("decode enrolment"))
        })
    }

    /// Uses up an unexpired, unused enrolment token and sets its probe's credential (and
    /// clears a revocation), in one transaction. False if the token was used (or expired)
    /// meanwhile.
    pub async fn use_enrolment(
        &self,
        token_hash: &str,
        credential_hash: &str,
        now_unix_ms: i64,
    ) -> Result<bool> {
        let take = "UPDATE probe_enrolments SET used_unix_ms = $2 \
                    WHERE token_hash = $1 AND used_unix_ms IS NULL AND expires_unix_ms > $2";
        let set = "UPDATE probe_identities SET credential_hash = $2, enrolled_unix_ms = $3, revoked_unix_ms = NULL \
                   WHERE probe_id = (SELECT probe_id FROM probe_enrolments WHERE token_hash = $1)";
        with_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(q("begin enrol"))?;
            let n = sqlx::query(take).bind(token_hash).bind(now_unix_ms)
                .execute(&mut *tx).await.map_err(q("use enrolment"))?.rows_affected();
            if n != 1 {
                tx.rollback().await.map_err(q("rollback enrol"))?;
                return Ok(false);
            }
            let n = sqlx::query(set).bind(token_hash).bind(credential_hash).bind(now_unix_ms)
                .execute(&mut *tx).await.map_err(q("set credential"))?.rows_affected();
            if n != 1 {
                tx.rollback().await.map_err(q("rollback enrol"))?;
                return Ok(false);
            }
            tx.commit().await.map_err(q("commit enrol"))?;
        });
        Ok(true)
    }

    /// The identity of `probe_id`, if enrolled.
    pub async fn identity(&self, probe_id: &str) -> Result<Option<IdentityRow>> {
        let sql = format!("SELECT {IDENTITY_COLS} FROM probe_identities WHERE probe_id = $1");
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(probe_id).fetch_optional(pool)
                .await.map_err(q("identity"))?;
            row.map(|r| identity_from_row!(r)).transpose().map_err(q("decode identity"))
        })
    }

    /// The identity whose credential hashes to `credential_hash`.
    pub async fn identity_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<IdentityRow>> {
        let sql =
            format!("SELECT {IDENTITY_COLS} FROM probe_identities WHERE credential_hash = $1");
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(credential_hash).fetch_optional(pool)
                .await.map_err(q("identity by credential"))?;
            row.map(|r| identity_from_row!(r)).transpose().map_err(q("decode identity"))
        })
    }

    /// Every enrolled probe, by id.
    pub async fn list_identities(&self) -> Result<Vec<IdentityRow>> {
        let sql = format!("SELECT {IDENTITY_COLS} FROM probe_identities ORDER BY probe_id");
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).fetch_all(pool)
                .await.map_err(q("identities"))?;
            rows.iter().map(|r| identity_from_row!(r)).collect::<std::result::Result<Vec<_>, _>>()
                .map_err(q("decode identity"))
        })
    }

    /// Revokes `probe_id`: its credential and unused enrolment tokens are refused from now
    /// on, and so is the shared fleet token for this id (a probe never enrolled gets a
    /// revoked identity). False if it was already revoked.
    pub async fn revoke_probe(&self, probe_id: &str, now_unix_ms: i64) -> Result<bool> {
        let sql = "INSERT INTO probe_identities (probe_id, created_unix_ms, revoked_unix_ms) VALUES ($1, $2, $2) \
                   ON CONFLICT (probe_id) DO UPDATE SET revoked_unix_ms = excluded.revoked_unix_ms \
                   WHERE probe_identities.revoked_unix_ms IS NULL";
        let tokens = "UPDATE probe_enrolments SET used_unix_ms = $2 \
                      WHERE probe_id = $1 AND used_unix_ms IS NULL";
        with_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(q("begin revoke"))?;
            let n = sqlx::query(sql).bind(probe_id).bind(now_unix_ms)
                .execute(&mut *tx).await.map_err(q("revoke probe"))?.rows_affected();
            sqlx::query(tokens).bind(probe_id).bind(now_unix_ms)
                .execute(&mut *tx).await.map_err(q("revoke tokens"))?;
            tx.commit().await.map_err(q("commit revoke"))?;
            Ok(n == 1)
        })
    }

    /// Ids of the revoked probes.
    pub async fn revoked_probes(&self) -> Result<Vec<String>> {
        let sql = "SELECT probe_id FROM probe_identities WHERE revoked_unix_ms IS NOT NULL";
        with_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await.map_err(q("revoked probes"))?;
            rows.iter().map(|r| r.try_get::<String, _>("probe_id")).collect::<std::result::Result<Vec<_>, _>>()
                .map_err(q("decode revoked probes"))
        })
    }

    /// Sets the approved position (and clears any pending one).
    pub async fn approve_position(
        &self,
        probe_id: &str,
        pos: LatLon,
        now_unix_ms: i64,
    ) -> Result<()> {
        let sql = "UPDATE probe_identities SET approved_lat = $2, approved_lon = $3, approved_unix_ms = $4, \
                   pending_lat = NULL, pending_lon = NULL, pending_unix_ms = NULL WHERE probe_id = $1";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(probe_id).bind(pos.lat).bind(pos.lon).bind(now_unix_ms)
                .execute(pool).await.map_err(q("approve position"))?;
        });
        Ok(())
    }

    /// Records a declared position awaiting approval.
    pub async fn set_pending_position(
        &self,
        probe_id: &str,
        pos: LatLon,
        now_unix_ms: i64,
    ) -> Result<()> {
        let sql =
            "UPDATE probe_identities SET pending_lat = $2, pending_lon = $3, pending_unix_ms = $4 \
                   WHERE probe_id = $1";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(probe_id).bind(pos.lat).bind(pos.lon).bind(now_unix_ms)
                .execute(pool).await.map_err(q("pending position"))?;
        });
        Ok(())
    }
}
