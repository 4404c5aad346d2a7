//! Registering a probe: who may (credential, rate limits, fleet size), and what its declared
//! position means (an enrolled probe's move needs an admin's approval, [`check_position`]; a
//! move keeps the flag, which only an admin clears, and the evidence, which stays tied to the
//! position it was measured at, so the new position starts unvetted; a position far from the
//! landmarks file's is flagged). The gRPC adapter checks the wire fields and calls [`admit`],
//! [`check_position`], then [`register`].
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use geoloc_engine::{distance_km, LatLon};

use crate::core::identity::{self, IdentityError, Principal};
use crate::core::landmarks::LandmarkKind;
use crate::core::rows::ProbeRow;
use crate::core::text::printable;
use crate::{new_id, unix_ms, Coordinator, CoordinatorError};

/// Declared positions farther than this from the landmarks file are flagged, km.
const LANDMARK_FILE_TOLERANCE_KM: f64 = 50.0;
/// A declared position that moved more than this is a move, km.
const MOVED_KM: f64 = 1.0;

/// A probe asking to join, its fields already checked at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub probe_id: String,
    pub pos: LatLon,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Printable, at most 256 bytes.
    pub agent_version: String,
}

/// A registered probe: its session token and flag state.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub session_token: String,
    pub heartbeat_interval_ms: u32,
    pub flagged: bool,
    pub flag_reason: String,
}

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Too many attempts or new probes: retry later.
    #[error("{0}")]
    Throttled(String),
    #[error("wrong probe credential")]
    WrongCredential,
    /// The per-probe identity checks refused it (revoked, someone else's id, a position
    /// awaiting approval).
    #[error(transparent)]
    Identity(IdentityError),
    #[error(transparent)]
    Internal(#[from] CoordinatorError),
}

/// The first checks of a registration, before its fields are read: the source address's
/// rate (`peer`; None when unknown) and the credential: the lab's shared fleet token (when
/// configured; it cannot register an enrolled probe's id) or an enrolled probe's own
/// credential, which must be the claimed id's and not revoked.
pub async fn admit(
    cx: &Coordinator,
    peer: Option<IpAddr>,
    credential: &str,
    probe_id: &str,
) -> Result<Principal, RegisterError> {
    if !cx.fleet.throttle.attempt(peer) {
        return Err(RegisterError::Throttled(
            "too many registration attempts from this address: retry in a few seconds".into(),
        ));
    }
    let shared_ok = cx
        .config
        .probe_token
        .as_ref()
        .is_some_and(|tok| constant_time_eq(tok.as_bytes(), credential.as_bytes()));
    match identity::authenticate(cx, credential, probe_id, shared_ok).await {
        Ok(p) => Ok(p),
        Err(IdentityError::UnknownCredential) => {
            cx.fleet.throttle.auth_failed(peer, probe_id);
            Err(RegisterError::WrongCredential)
        }
        Err(IdentityError::Internal(e)) => Err(RegisterError::Internal(e)),
        Err(e) => {
            cx.fleet.throttle.auth_failed(peer, probe_id);
            if let IdentityError::Revoked(id) = &e {
                cx.revocations.note(id);
            }
            Err(RegisterError::Identity(e))
        }
    }
}

/// The declared position of an enrolled probe checked against its approved one
/// ([`identity::check_position`]); the shared token's probes are not checked here.
pub async fn check_position(
    cx: &Coordinator,
    who: &Principal,
    pos: LatLon,
) -> Result<(), RegisterError> {
    match who {
        Principal::SharedToken => Ok(()),
        Principal::Probe(i) => identity::check_position(cx, i, pos)
            .await
            .map_err(|e| match e {
                IdentityError::Internal(e) => RegisterError::Internal(e),
                e => RegisterError::Identity(e),
            }),
    }
}

/// Records a registration (see the module doc) and returns its session token.
pub async fn register(cx: &Coordinator, r: Registration) -> Result<Registered, RegisterError> {
    let now = unix_ms();
    let registry = &cx.fleet.registry;
    let old = cx.storage.get_probe(&r.probe_id).await?;
    if old.is_none() {
        let max = cx.fleet.throttle.max_probes;
        if registry.len() >= max {
            return Err(RegisterError::Throttled(format!(
                "{} probes are registered (at most {max}: max-probes)",
                registry.len(),
            )));
        }
        if !cx.fleet.throttle.new_probe() {
            return Err(RegisterError::Throttled(
                "too many new probes registering: retry in a few seconds".into(),
            ));
        }
    }
    let pos = r.pos;
    let moved = old
        .as_ref()
        .is_some_and(|o| distance_km(o.pos(), pos) > MOVED_KM);
    // A move keeps the flag and its epoch: only `ClearFlag` clears them (re-registering
    // elsewhere must not launder a lying probe). The evidence stays in the store, tied to
    // the position it was measured at (vetting counts only evidence about the current
    // position), so the new position starts unvetted.
    let (mut flagged, mut flag_reason, epoch) = match &old {
        Some(o) => (o.flagged, o.flag_reason.clone(), o.flag_epoch_unix_ms),
        None => (false, String::new(), now),
    };
    if moved && flagged {
        tracing::warn!(probe = %r.probe_id, reason = %flag_reason,
            "flagged probe re-registered at another position: the flag stays until an admin clears it");
    }
    if let Some(l) = cx
        .landmarks
        .iter()
        .find(|l| l.id == r.probe_id && l.kind == LandmarkKind::Probe)
    {
        let d = distance_km(
            LatLon {
                lat: l.lat,
                lon: l.lon,
            },
            pos,
        );
        if d > LANDMARK_FILE_TOLERANCE_KM && !flagged {
            flagged = true;
            flag_reason = format!(
                "declared position ({:.4}, {:.4}) is {d:.0} km from the landmarks file's ({:.4}, {:.4})",
                pos.lat, pos.lon, l.lat, l.lon
            );
        }
    }
    let row = ProbeRow {
        probe_id: r.probe_id.clone(),
        lat: pos.lat,
        lon: pos.lon,
        ipv4: r.ipv4.map(|a| a.to_string()).unwrap_or_default(),
        ipv6: r.ipv6.map(|a| a.to_string()).unwrap_or_default(),
        agent_version: r.agent_version.clone(),
        flagged,
        flag_reason: flag_reason.clone(),
        flag_epoch_unix_ms: epoch,
        first_seen_unix_ms: old.as_ref().map_or(now, |o| o.first_seen_unix_ms),
        // Seen means seen in a session: a registration alone (which anyone with the
        // credential can repeat) does not make a probe expected after a restart.
        last_seen_unix_ms: old.as_ref().map_or(0, |o| o.last_seen_unix_ms),
    };
    cx.storage.upsert_probe(&row).await?;
    if old.as_ref().is_some_and(|o| o.flagged != flagged) {
        cx.storage
            .set_probe_flag(&row.probe_id, flagged, &flag_reason, Some(epoch))
            .await?;
    }
    let token = new_id();
    registry.register(row, token.clone());
    tracing::info!(probe = %r.probe_id, lat = pos.lat, lon = pos.lon, version = %printable(&r.agent_version), flagged, "probe registered");
    Ok(Registered {
        session_token: token,
        heartbeat_interval_ms: cx.config.heartbeat_interval_ms,
        flagged,
        flag_reason,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
