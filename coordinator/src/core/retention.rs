//! Retention of raw measurements (`raw-retention-days`): a background task that, once an
//! hour, deletes the raw rows older than the retention that no stored result needs (what
//! is kept and why: `crate::storage` `purge_raw_measurements`). 0 days keeps everything.
use std::sync::Arc;
use std::time::Duration;

use crate::{unix_ms, Coordinator};

/// Between two retention passes (the first runs at start).
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
/// One day, ms.
const DAY_MS: i64 = 86_400_000;

impl Coordinator {
    /// One retention pass: deletes the raw rows older than `raw-retention-days` that no
    /// result needs; returns how many (0 when the retention is off).
    pub async fn apply_retention(&self) -> crate::Result<u64> {
        let days = self.config.raw_retention_days;
        if days == 0 {
            return Ok(0);
        }
        let before = unix_ms().saturating_sub(i64::from(days).saturating_mul(DAY_MS));
        let n = self.storage.purge_raw_measurements(before).await?;
        self.metrics.retention_deleted.inc_by(n);
        if n > 0 {
            tracing::info!(
                deleted = n,
                days,
                "raw measurements past the retention deleted"
            );
        }
        Ok(n)
    }
}

/// Runs [`Coordinator::apply_retention`] now and every [`RETENTION_INTERVAL`] until `stop`
/// (nothing when the retention is off).
pub fn spawn(coord: Arc<Coordinator>, stop: geoloc_rt::CancellationToken) {
    if coord.config.raw_retention_days == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RETENTION_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Err(e) = coord.apply_retention().await {
                tracing::error!(error = %e, "retention pass failed");
            }
        }
    });
}
