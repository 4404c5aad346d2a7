//! Per-probe identity: one-time enrolment tokens exchanged for a per-probe credential, its
//! revocation, and the position an administrator approved.
//!
//! A probe's identity is its credential, not the id it claims: a registration presenting an
//! enrolled credential registers as that credential's probe, and an enrolled probe's id
//! cannot be used with any other credential (not even the lab's shared fleet token). Only
//! SHA-256 hashes of tokens and credentials are stored.
//!
//! Revocation is read from the store, so a revoke done by another process (the CLI, another
//! replica on the same PostgreSQL) is seen: on every registration and hello, and by
//! [`watch_revocations`] which polls every second and closes revoked probes' sessions.
use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use geoloc_engine::{distance_km, LatLon};
use sha2::{Digest, Sha256};

use crate::core::Coordinator;
use crate::{unix_ms, CoordinatorError, Result};

/// How long an enrolment token can be exchanged, ms (24 h).
pub const ENROLMENT_TTL_MS: i64 = 24 * 3_600_000;
/// A declared position farther than this from the approved one needs approval, km.
pub const POSITION_TOLERANCE_KM: f64 = 1.0;
/// How often the store is polled for revocations.
pub const REVOCATION_POLL: Duration = Duration::from_secs(1);
/// Prefix of enrolment tokens (recognisable in logs and support requests; not secret).
const TOKEN_PREFIX: &str = "gle_";
/// Prefix of per-probe credentials.
const CREDENTIAL_PREFIX: &str = "glc_";

/// An enrolled probe as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityRow {
    pub probe_id: String,
    /// SHA-256 (hex) of the credential; None until the enrolment token was exchanged.
    pub credential_hash: Option<String>,
    pub created_unix_ms: i64,
    pub enrolled_unix_ms: Option<i64>,
    pub revoked_unix_ms: Option<i64>,
    pub approved: Option<LatLon>,
    pub approved_unix_ms: Option<i64>,
    pub pending: Option<LatLon>,
    pub pending_unix_ms: Option<i64>,
}

impl IdentityRow {
    pub fn revoked(&self) -> bool {
        self.revoked_unix_ms.is_some()
    }
}

/// A one-time enrolment token as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrolmentRow {
    pub token_hash: String,
    pub probe_id: String,
    pub created_unix_ms: i64,
    pub expires_unix_ms: i64,
    pub used_unix_ms: Option<i64>,
}

/// SHA-256 of a secret, lower-case hex.
pub fn hash_secret(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random secret of 256 bits, hex, after `prefix`.
fn random_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// A new one-time enrolment token (256 random bits).
pub fn new_enrolment_token() -> String {
    random_secret(TOKEN_PREFIX)
}

/// A new per-probe credential (256 random bits).
pub fn new_credential() -> String {
    random_secret(CREDENTIAL_PREFIX)
}

/// Why an enrolment token was not exchanged.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("unknown enrolment token")]
    Unknown,
    #[error("enrolment token for probe {0:?} was already used: ask the administrator for a new one (geoloc-coordinator probes enroll --id {0})")]
    Used(String),
    #[error("enrolment token for probe {0:?} expired: ask the administrator for a new one (geoloc-coordinator probes enroll --id {0})")]
    Expired(String),
    #[error("probe {0:?} was revoked")]
    Revoked(String),
    #[error(transparent)]
    Internal(#[from] CoordinatorError),
}

/// What an agent gets for its enrolment token.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrolled {
    pub probe_id: String,
    pub credential: String,
}

/// Exchanges a one-time enrolment token for a new per-probe credential (the token is used
/// up, whoever asks again gets [`EnrolError::Used`]).
pub async fn enroll(cx: &Coordinator, token: &str) -> std::result::Result<Enrolled, EnrolError> {
    let now = unix_ms();
    let hash = hash_secret(token);
    let Some(e) = cx.storage.enrolment(&hash).await? else {
        return Err(EnrolError::Unknown);
    };
    if e.used_unix_ms.is_some() {
        return Err(EnrolError::Used(e.probe_id));
    }
    if e.expires_unix_ms <= now {
        return Err(EnrolError::Expired(e.probe_id));
    }
    let credential = new_credential();
    // Atomic: of two agents presenting the same token at once, one wins.
    if !cx
        .storage
        .use_enrolment(&hash, &hash_secret(&credential), now)
        .await?
    {
        return Err(EnrolError::Used(e.probe_id));
    }
    tracing::info!(probe = %e.probe_id, "probe enrolled: enrolment token exchanged for a per-probe credential");
    Ok(Enrolled {
        probe_id: e.probe_id,
        credential,
    })
}

/// Who a registration's credential says the probe is.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// The lab's shared fleet token: any id that is not enrolled.
    SharedToken,
    /// An enrolled probe's own credential.
    Probe(IdentityRow),
}

/// Why a credential does not let a registration through.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("unknown probe credential")]
    UnknownCredential,
    #[error("probe {0:?} was revoked: its credential is no longer accepted")]
    Revoked(String),
    #[error("this credential belongs to probe {owner:?}, not {claimed:?}")]
    NotYourId { owner: String, claimed: String },
    #[error("probe {0:?} is enrolled: it registers with its own credential only")]
    EnrolledId(String),
    #[error("position change from {from} to {to} awaits an admin's approval: geoloc-coordinator probes approve-position {probe_id}")]
    PositionPending {
        probe_id: String,
        from: String,
        to: String,
    },
    #[error(transparent)]
    Internal(#[from] CoordinatorError),
}

/// Checks a registration's credential against the store: an enrolled credential must be
/// the claimed id's and not revoked; the shared token (`shared_ok`: it matched) may not
/// register an enrolled id.
pub async fn authenticate(
    cx: &Coordinator,
    credential: &str,
    claimed_id: &str,
    shared_ok: bool,
) -> std::result::Result<Principal, IdentityError> {
    if shared_ok {
        return match cx.storage.identity(claimed_id).await? {
            Some(i) if i.revoked() => Err(IdentityError::Revoked(i.probe_id)),
            Some(i) if i.credential_hash.is_some() => Err(IdentityError::EnrolledId(i.probe_id)),
            _ => Ok(Principal::SharedToken),
        };
    }
    let Some(i) = cx
        .storage
        .identity_by_credential(&hash_secret(credential))
        .await?
    else {
        return Err(IdentityError::UnknownCredential);
    };
    if i.revoked() {
        return Err(IdentityError::Revoked(i.probe_id));
    }
    if i.probe_id != claimed_id {
        return Err(IdentityError::NotYourId {
            owner: i.probe_id,
            claimed: claimed_id.to_string(),
        });
    }
    Ok(Principal::Probe(i))
}

fn fmt_pos(p: LatLon) -> String {
    format!("({:.4}, {:.4})", p.lat, p.lon)
}

/// The declared position of an enrolled probe against its approved one: the first one is
/// approved when none was given at enrolment; one more than [`POSITION_TOLERANCE_KM`] away
/// is recorded as pending and refused.
pub async fn check_position(
    cx: &Coordinator,
    id: &IdentityRow,
    declared: LatLon,
) -> std::result::Result<(), IdentityError> {
    let now = unix_ms();
    match id.approved {
        None => {
            cx.storage
                .approve_position(&id.probe_id, declared, now)
                .await?;
            Ok(())
        }
        Some(a) if distance_km(a, declared) <= POSITION_TOLERANCE_KM => Ok(()),
        Some(a) => {
            cx.storage
                .set_pending_position(&id.probe_id, declared, now)
                .await?;
            tracing::warn!(probe = %id.probe_id, approved = %fmt_pos(a), declared = %fmt_pos(declared),
                "registration refused: position change awaits approval");
            Err(IdentityError::PositionPending {
                probe_id: id.probe_id.clone(),
                from: fmt_pos(a),
                to: fmt_pos(declared),
            })
        }
    }
}

/// Revoked probes as last read from the store (sessions of these are closed).
#[derive(Debug, Default)]
pub struct Revocations {
    revoked: Mutex<HashSet<String>>,
}

impl Revocations {
    pub fn is_revoked(&self, probe_id: &str) -> bool {
        self.lock().contains(probe_id)
    }

    pub fn note(&self, probe_id: &str) {
        self.lock().insert(probe_id.to_string());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.revoked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the set; returns the ids that were not in it before.
    fn replace(&self, now: HashSet<String>) -> Vec<String> {
        let mut g = self.lock();
        let new = now.difference(&g).cloned().collect();
        *g = now;
        new
    }
}

/// Reads the revoked probes once, and ends the session of every connected one.
pub async fn sweep_revocations(cx: &Coordinator) -> Result<Vec<String>> {
    let revoked: HashSet<String> = cx.storage.revoked_probes().await?.into_iter().collect();
    let new = cx.revocations.replace(revoked.clone());
    for id in &new {
        tracing::warn!(probe = %id, "probe revoked");
    }
    let mut closed = Vec::new();
    for p in cx.fleet.registry.snapshot() {
        if revoked.contains(&p.probe_id) && cx.fleet.registry.end_session(&p.probe_id) {
            tracing::warn!(probe = %p.probe_id, "revoked probe's session closed");
            closed.push(p.probe_id.clone());
        }
    }
    Ok(closed)
}

/// Polls the store for revocations every [`REVOCATION_POLL`] until the coordinator is
/// dropped or shuts down.
pub async fn watch_revocations(cx: Weak<Coordinator>) {
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(cx) = cx.upgrade() else { return };
        if cx.is_shutting_down() {
            return;
        }
        if let Err(e) = sweep_revocations(&cx).await {
            tracing::warn!(error = %e, "reading revocations failed");
        }
    }
}

/// Starts [`watch_revocations`] on the current runtime.
pub fn spawn_revocation_watch(cx: &Arc<Coordinator>) {
    tokio::spawn(watch_revocations(Arc::downgrade(cx)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_256_bit_and_hashes_hex() {
        let a = new_enrolment_token();
        let b = new_enrolment_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert!(new_credential().starts_with(CREDENTIAL_PREFIX));
        let h = hash_secret("abc");
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
