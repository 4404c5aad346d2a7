//! The stored-results listing (History): newest first, optionally of one address, a page at
//! a time with a keyset cursor (`created_at_unix_ms`, `result_id`), so a page costs the
//! same however far back it is and results stored meanwhile do not shift later pages.
use sqlx::{AssertSqlSafe, Row};

use super::{ResultStatus, Storage};
use crate::error::{q, CoordinatorError, Result};

/// Most results in one page.
pub const MAX_HISTORY_PAGE: u32 = 500;
/// Results in a page when the caller asks for none in particular.
pub const DEFAULT_HISTORY_PAGE: u32 = 50;

/// One stored result as a listing shows it (no region, no measurements).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSummary {
    pub result_id: String,
    pub ip: String,
    pub status: ResultStatus,
    pub created_at_unix_ms: i64,
    /// Estimate (lat, lon) and radius, km: only for `done` results.
    pub estimate: Option<(f64, f64)>,
    pub radius_km: Option<f64>,
    pub country: String,
    pub city: String,
    pub error_code: String,
    pub error: String,
}

/// Where a page of the listing starts: strictly older than this result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryCursor {
    pub created_at_unix_ms: i64,
    pub result_id: String,
}

impl HistoryCursor {
    /// The page token handed to clients: `h1.<created ms>.<result id>`.
    pub fn to_token(&self) -> String {
        format!("h1.{}.{}", self.created_at_unix_ms, self.result_id)
    }

    /// Reads a page token back; the error says what is wrong with it (tokens come from
    /// clients: hostile until checked).
    pub fn parse(token: &str) -> std::result::Result<HistoryCursor, String> {
        if token.len() > 100 {
            return Err(format!(
                "page token of {} bytes (a token is under 100)",
                token.len()
            ));
        }
        let rest = token
            .strip_prefix("h1.")
            .ok_or("page token does not start with h1. (pass next_page_token as given)")?;
        let (ms, id) = rest
            .split_once('.')
            .ok_or("page token has no result id part")?;
        let created_at_unix_ms: i64 = ms
            .parse()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or("page token time is not a non-negative integer")?;
        if id.is_empty()
            || id.len() > 64
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err("page token result id is not 1-64 letters, digits or '-'".into());
        }
        Ok(HistoryCursor {
            created_at_unix_ms,
            result_id: id.to_string(),
        })
    }
}

/// The few fields of a stored solution a listing shows (serde skips the rest).
#[derive(serde::Deserialize)]
struct Brief {
    estimate: geoloc_engine::LatLon,
    radius_km: f64,
    place: BriefPlace,
}

#[derive(serde::Deserialize)]
struct BriefPlace {
    city: String,
    country: String,
}

type RawSummary = (String, String, String, i64, Option<String>, String, String);

impl Storage {
    /// Up to `limit` (1..=[`MAX_HISTORY_PAGE`], 0 = [`DEFAULT_HISTORY_PAGE`]) stored results,
    /// newest first, of `ip` (canonical form) or of every address, older than `after`; and
    /// the cursor of the next page when there are more.
    pub async fn list_results(
        &self,
        ip: Option<&str>,
        limit: u32,
        after: Option<&HistoryCursor>,
    ) -> Result<(Vec<ResultSummary>, Option<HistoryCursor>)> {
        let limit = match limit {
            0 => DEFAULT_HISTORY_PAGE,
            n => n.min(MAX_HISTORY_PAGE),
        };
        let mut conds = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if ip.is_some() {
            conds.push(format!("ip = {}", next()));
        }
        if after.is_some() {
            let (a, b, c) = (next(), next(), next());
            conds.push(format!(
                "(created_at_unix_ms < {a} OR (created_at_unix_ms = {b} AND result_id < {c}))"
            ));
        }
        let lim = next();
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "SELECT result_id, ip, status, created_at_unix_ms, solution_json, error_code, error \
             FROM results {filter} ORDER BY created_at_unix_ms DESC, result_id DESC LIMIT {lim}"
        );
        let raw: Vec<RawSummary> = with_pool!(self, pool => {
            let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
            if let Some(ip) = ip {
                query = query.bind(ip);
            }
            if let Some(c) = after {
                query = query.bind(c.created_at_unix_ms).bind(c.created_at_unix_ms).bind(&c.result_id);
            }
            let rows = query.bind(i64::from(limit) + 1).fetch_all(pool).await.map_err(q("list results"))?;
            rows.iter().map(|r| Ok((
                r.try_get("result_id")?, r.try_get("ip")?, r.try_get("status")?,
                r.try_get("created_at_unix_ms")?, r.try_get("solution_json")?,
                r.try_get("error_code")?, r.try_get("error")?,
            ))).collect::<std::result::Result<Vec<_>, sqlx::Error>>().map_err(q("decode result summary"))?
        });
        let more = raw.len() > limit as usize;
        let mut out = Vec::with_capacity(raw.len().min(limit as usize));
        for (result_id, ip, status, created_at_unix_ms, solution_json, error_code, error) in
            raw.into_iter().take(limit as usize)
        {
            let status = ResultStatus::parse(&status)?;
            let brief = match (status, solution_json) {
                (ResultStatus::Done, Some(text)) => {
                    Some(serde_json::from_str::<Brief>(&text).map_err(|e| {
                        CoordinatorError::Corrupt {
                            what: "results.solution_json",
                            detail: format!("result {result_id}: {e}"),
                        }
                    })?)
                }
                _ => None,
            };
            out.push(ResultSummary {
                result_id,
                ip,
                status,
                created_at_unix_ms,
                estimate: brief.as_ref().map(|b| (b.estimate.lat, b.estimate.lon)),
                radius_km: brief.as_ref().map(|b| b.radius_km),
                country: brief
                    .as_ref()
                    .map(|b| b.place.country.clone())
                    .unwrap_or_default(),
                city: brief.map(|b| b.place.city).unwrap_or_default(),
                error_code,
                error,
            });
        }
        let cursor = match out.last() {
            Some(last) if more => Some(HistoryCursor {
                created_at_unix_ms: last.created_at_unix_ms,
                result_id: last.result_id.clone(),
            }),
            _ => None,
        };
        Ok((out, cursor))
    }
}

#[cfg(test)]
mod tests {
    use super::HistoryCursor;

    #[test]
    fn page_tokens_round_trip_and_hostile_ones_are_refused() {
        let c = HistoryCursor {
            created_at_unix_ms: 1_700_000_000_123,
            result_id: "0af3".into(),
        };
        assert_eq!(HistoryCursor::parse(&c.to_token()), Ok(c));
        let long_id = format!("h1.1.{}", "a".repeat(65));
        let long = "h".repeat(200);
        for bad in [
            "",
            "h2.1.x",
            "h1.",
            "h1.12",
            "h1.-5.abc",
            "h1.12.",
            "h1.12.a'b",
            "h1.99999999999999999999.a",
            long_id.as_str(),
            long.as_str(),
        ] {
            assert!(HistoryCursor::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
