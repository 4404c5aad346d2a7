//! Idempotency keys of locate runs (issue 11: "no locate lost, none answered twice, no
//! probe measuring a target twice for one job").
//!
//! A locate asked with a key ([`LocateParams::job_key`], scoped to the caller's API key)
//! stores the key and what was asked with its run. Asking again with the key
//! ([`follow`]):
//! - of a finished run returns its answer (or its failure), measuring nothing;
//! - of a run still running on a live replica (or in this process) waits for it;
//! - of a run nobody finishes (interrupted, or its replica's heartbeat stopped) takes it over
//!   and runs it again under the same result id ([`resume`]).
//!
//! In cluster mode a live replica's sweeper also takes over such runs without waiting for
//! the client (`crate::cluster`). A run taken over asks its probes with the same request
//! ids as before (`{result_id}.{probe}.{n}`), so a probe that measured already
//! answers from its cache of recent requests instead of measuring the target again.
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::core::locate::{FailureCode, LocateFailure, LocateParams, Located, Progress};
use crate::core::rows::ResultStatus;
use crate::core::sources::SourceChoice;
use crate::storage::cluster::REPLICA_TTL;
use crate::storage::jobs::StoredJob;
use crate::{unix_ms, Coordinator};

/// Longest key, characters.
pub const MAX_KEY_LEN: usize = 64;
/// How long a client asking again waits for a run that is still running elsewhere.
pub const MAX_FOLLOW: Duration = Duration::from_secs(600);
/// How often a waiting client looks at the run again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Checks a client's key: 1 to [`MAX_KEY_LEN`] characters of `[A-Za-z0-9._:/-]`.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "job key of {} characters: use 1 to {MAX_KEY_LEN}",
            key.chars().count()
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:/-".contains(*c)))
    {
        return Err(format!(
            "job key {key:?} has {c:?}: use letters, digits, '.', '_', ':', '/' or '-'"
        ));
    }
    Ok(())
}

/// The key as stored: scoped to the caller (one API key cannot read another's runs by
/// guessing keys). `|` cannot occur in a client's key.
pub fn scoped(caller_name: &str, key: &str) -> String {
    format!("{caller_name}|{key}")
}

/// What a keyed run asked beyond its result row (address and resolved mode are the row's),
/// as stored in `results.job_json`: enough to run it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub timeout_ms: u32,
    pub k: u32,
    pub ping_count: u32,
    pub budget: u32,
    pub source: String,
}

impl JobSpec {
    pub fn of(p: &LocateParams) -> JobSpec {
        JobSpec {
            timeout_ms: p.timeout_ms,
            k: p.k,
            ping_count: p.ping_count,
            budget: p.budget,
            source: p.source.as_str().to_string(),
        }
    }
}

/// The parameters that run `job` again under its result id (admission was done when it
/// was first asked).
fn resume_params(job: &StoredJob) -> Result<LocateParams, LocateFailure> {
    let spec: JobSpec = serde_json::from_str(&job.job_json).map_err(|e| {
        LocateFailure::new(
            FailureCode::Internal,
            format!("stored job {}: unreadable: {e}", job.row.result_id),
        )
    })?;
    let source = [SourceChoice::Fleet, SourceChoice::Atlas, SourceChoice::Both]
        .into_iter()
        .find(|s| s.as_str() == spec.source)
        .unwrap_or_default();
    let key = job.key.split_once('|').map(|(_, k)| k.to_string());
    Ok(LocateParams {
        ip: job.row.ip.clone(),
        mode: crate::core::locate::mode_from_name(&job.row.mode),
        timeout_ms: spec.timeout_ms,
        k: spec.k,
        reuse_stored: false,
        ping_count: spec.ping_count,
        caller: crate::core::access::Caller {
            name: job.row.requested_by.clone(),
            ..Default::default()
        },
        source,
        budget: spec.budget,
        job_key: key,
        resume: Some(crate::core::locate::Resume(job.row.clone())),
    })
}

/// Runs the taken-over `job` again under its result id.
pub async fn resume(
    coord: &Coordinator,
    job: &StoredJob,
    progress: Progress<'_>,
) -> Result<Located, LocateFailure> {
    let p = resume_params(job)?;
    tracing::info!(result_id = %job.row.result_id, ip = %job.row.ip, from = %job.owner_replica, "taking over a keyed run");
    let r = Box::pin(coord.locate(p, progress)).await;
    if let Err(f) = &r {
        // A run that ended before measuring (no vantage point, say) is still `running`:
        // it ends here, or every client asking with its key would wait. An interrupted
        // one stays for the next replica.
        if !f.is_interrupted() {
            if let Err(e) = coord
                .storage
                .fail_running_job(&job.row.result_id, f.code.as_str(), &f.message, unix_ms())
                .await
            {
                tracing::warn!(error = %e, result_id = %job.row.result_id, "could not end a run taken over");
            }
        }
    }
    r
}

/// The failure a stored failed run answers with.
fn stored_failure(job: &StoredJob) -> LocateFailure {
    let code = FailureCode::parse(&job.row.error_code).unwrap_or(FailureCode::Internal);
    LocateFailure::new(code, job.row.error.clone())
}

/// Answers a locate whose key names the stored run `job` (see the module docs).
pub async fn follow(
    coord: &Coordinator,
    mut job: StoredJob,
    ip: &str,
    progress: Progress<'_>,
) -> Result<Located, LocateFailure> {
    let started = Instant::now();
    loop {
        if job.row.ip != ip {
            return Err(LocateFailure::new(
                FailureCode::InvalidArgument,
                format!(
                    "job key {:?} was used for {}, not {ip}",
                    job.key.split_once('|').map_or("", |(_, k)| k),
                    job.row.ip
                ),
            ));
        }
        let nobody_finishes = match job.row.status {
            ResultStatus::Done => {
                return Ok(crate::core::locate::located(&coord.storage, &job.row, true).await?)
            }
            // A reason that may have passed (no probe then, a quota) is run again; any
            // other failure is the answer.
            ResultStatus::Failed => {
                if !matches!(
                    FailureCode::parse(&job.row.error_code),
                    Some(FailureCode::NoProbes | FailureCode::QuotaExceeded)
                ) {
                    return Err(stored_failure(&job));
                }
                true
            }
            ResultStatus::Interrupted => true,
            ResultStatus::Running => {
                !coord
                    .storage
                    .job_owner_alive(
                        &job.owner_replica,
                        unix_ms() - REPLICA_TTL.as_millis() as i64,
                    )
                    .await?
            }
        };
        if nobody_finishes
            && coord
                .storage
                .take_over_job(&job.row.result_id, &job.owner_replica)
                .await?
        {
            return resume(coord, &job, progress).await;
        }
        if job.row.status == ResultStatus::Failed {
            // Someone else took it over first: its stored failure is the answer now.
            return Err(stored_failure(&job));
        }
        if started.elapsed() >= MAX_FOLLOW {
            return Err(LocateFailure::new(
                FailureCode::Interrupted,
                format!(
                    "run {} of this key is still running after {} s; ask again",
                    job.row.result_id,
                    MAX_FOLLOW.as_secs()
                ),
            ));
        }
        if coord.is_shutting_down() {
            return Err(LocateFailure::new(
                FailureCode::Interrupted,
                "the coordinator is shutting down",
            ));
        }
        tokio::time::sleep(FOLLOW_POLL).await;
        job = coord.storage.job(&job.key).await?.ok_or_else(|| {
            LocateFailure::new(FailureCode::Internal, "the keyed run disappeared")
        })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("audit-1f2e/12345").is_ok());
        assert!(check_key("a.b_c:d/e-f").is_ok());
        assert!(check_key("").unwrap_err().contains("1 to 64"));
        assert!(check_key(&"x".repeat(65))
            .unwrap_err()
            .contains("65 characters"));
        assert!(check_key("a|b").unwrap_err().contains("'|'"));
        assert!(check_key("a b").is_err());
        assert!(check_key("é").is_err());
        assert_eq!(scoped("team", "k1"), "team|k1");
    }

    #[test]
    fn a_spec_survives_its_json() {
        let p = LocateParams {
            ip: "192.0.2.1".into(),
            timeout_ms: 900,
            k: 3,
            ping_count: 2,
            budget: 7,
            ..Default::default()
        };
        let spec = JobSpec::of(&p);
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&text).unwrap(), spec);
        assert!(serde_json::from_str::<JobSpec>(r#"{"ip":"x"}"#).is_err());
    }
}
