//! Who asks, and how much they may ask: client API keys with scopes ([`Scope`], [`Caller`])
//! and the abuse limits of locate runs (per-key quotas, the fleet-wide packet budget per
//! target address). The gRPC edge reads the `authorization: Bearer <key>` metadata and calls
//! [`Access::authorize`]; a locate run charges the limits through [`Access::admit`] before
//! any packet is sent and settles them with what it really sent.
//!
//! Keys: a key is `gk_` followed by 64 hex digits (256 random bits). The store keeps only
//! the SHA-256 of the whole key. A slow password hash (argon2, bcrypt) is not needed: it
//! protects low-entropy secrets against guessing, while 256 random bits cannot be guessed
//! from a leaked hash, and a fast hash keeps the check of every call cheap.
//!
//! Every call looks the key up in the store (one indexed read; no cache), so a
//! `geoloc-coordinator keys revoke` run by another process on the same database, or by
//! another replica, takes effect at the next call, and at the next address of an open
//! `LocateBatch`.
//!
//! Limits: `addresses-per-hour` of a key and the packet budget of a target are counted in
//! fixed clock-hour windows in the store (a restart does not reset them; replicas on one
//! PostgreSQL share them). `concurrent` locates of a key are counted in memory: what runs is
//! per process, and a restart ends every run. A refused address consumes nothing; a stored
//! answer (`reuse_stored`) sends no packet and consumes neither quota nor budget.
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::core::locate::{FailureCode, LocateFailure};
use crate::error::CoordinatorError;
use crate::storage::Storage;

/// One hour, ms: the window of the hourly limits.
pub const HOUR_MS: i64 = 3_600_000;
/// Prefix of every key.
pub const KEY_PREFIX: &str = "gk_";
/// Longest key text read from a request (a longer one is refused before hashing).
const MAX_KEY_LEN: usize = 256;
/// `last_used` of a key is written at most this often, ms.
const LAST_USED_EVERY_MS: i64 = 60_000;
/// Counter kinds in the store.
const KIND_KEY_ADDRESSES: &str = "key-addresses";
const KIND_TARGET_PACKETS: &str = "target-packets";

/// What a key may do. `admin` implies `read` and `locate`; nothing else implies anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Results and the fleet view (GetResult, ListProbes).
    Read,
    /// Start measurements (Locate, LocateBatch, Trace).
    Locate,
    /// Keys, flags, probes (ClearFlag); implies `read` and `locate`.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Locate, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Locate => "locate",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scopes as stored: sorted, unique, comma-separated.
pub fn scopes_text(scopes: &[Scope]) -> String {
    let mut v = scopes.to_vec();
    v.sort();
    v.dedup();
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// Parses stored scopes; the error names the unknown one.
pub fn parse_scopes(text: &str) -> Result<Vec<Scope>, String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Scope::parse(s).ok_or_else(|| format!("unknown scope {s:?}")))
        .collect()
}

/// Per-key quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Addresses measured per clock hour (stored answers do not count).
    pub addresses_per_hour: u32,
    /// Locate runs at the same time.
    pub concurrent: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            addresses_per_hour: 1_000,
            concurrent: 4,
        }
    }
}

/// Who asks: a key's name, scopes and quotas. The default (no name, no scope, no quotas)
/// is the coordinator itself (tests, replays); [`Caller::open_access`] is a client when the
/// coordinator runs with `auth = "none"`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Caller {
    /// The key's name ('' without a key); stored with every result it asks for.
    pub name: String,
    pub scopes: Vec<Scope>,
    /// None: no per-key quota (no key).
    pub quotas: Option<Quotas>,
    /// SHA-256 of the key (hex), to check it again on open streams; '' without a key.
    pub(crate) key_hash: String,
}

impl Caller {
    /// A client of a coordinator that runs with `auth = "none"`: every scope, no quota.
    pub fn open_access() -> Caller {
        Caller {
            scopes: vec![Scope::Admin],
            ..Caller::default()
        }
    }

    /// Whether this caller may do what needs `scope` (`admin` implies every scope).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// A key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRow {
    pub name: String,
    /// SHA-256 of the key, hex.
    pub key_hash: String,
    pub scopes: Vec<Scope>,
    pub addresses_per_hour: i64,
    pub concurrent: i64,
    pub created_unix_ms: i64,
    pub last_used_unix_ms: Option<i64>,
    pub revoked_unix_ms: Option<i64>,
}

impl ApiKeyRow {
    fn caller(&self) -> Caller {
        Caller {
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            quotas: Some(Quotas {
                addresses_per_hour: self.addresses_per_hour.clamp(0, u32::MAX as i64) as u32,
                concurrent: self.concurrent.clamp(0, u32::MAX as i64) as u32,
            }),
            key_hash: self.key_hash.clone(),
        }
    }
}

/// A new key's name and rights.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub quotas: Quotas,
}

/// A fresh key: `gk_` and 64 hex digits from the OS-seeded CSPRNG.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    let mut s = String::with_capacity(KEY_PREFIX.len() + 64);
    s.push_str(KEY_PREFIX);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// SHA-256 of a key, hex: what the store keeps.
pub fn hash_secret(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a key name: 1 to 64 characters among letters, digits, `.`, `_`, `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("key name {name:?} must have 1 to 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "key name {name:?} has {c:?}: use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

fn invalid(m: String) -> CoordinatorError {
    CoordinatorError::InvalidConfig(m)
}

/// Creates a key and returns it (the only time it is seen: the store keeps its hash).
pub async fn create_key(storage: &Storage, new: &NewKey) -> crate::Result<String> {
    let secret = new_secret();
    create_key_with_secret(storage, new, &secret).await?;
    Ok(secret)
}

/// Like [`create_key`] with a given key (`gk_` and at least 32 hex digits): for tests and
/// for operators who generate keys elsewhere.
pub async fn create_key_with_secret(
    storage: &Storage,
    new: &NewKey,
    secret: &str,
) -> crate::Result<()> {
    check_name(&new.name).map_err(invalid)?;
    let hex = secret.strip_prefix(KEY_PREFIX).unwrap_or("");
    if hex.len() < 32 || hex.len() > 128 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "a key is {KEY_PREFIX} followed by 32 to 128 hex digits"
        )));
    }
    if new.scopes.is_empty() {
        return Err(invalid(format!(
            "key {:?} needs at least one --scope (read, locate, admin)",
            new.name
        )));
    }
    if new.quotas.addresses_per_hour == 0 || new.quotas.concurrent == 0 {
        return Err(invalid(
            "--addresses-per-hour and --concurrent must be at least 1".into(),
        ));
    }
    if new.quotas.concurrent > 256 {
        return Err(invalid(format!(
            "--concurrent {} above 256",
            new.quotas.concurrent
        )));
    }
    if storage.get_api_key(&new.name).await?.is_some() {
        return Err(invalid(format!(
            "a key named {:?} exists already (names stay taken after a revoke)",
            new.name
        )));
    }
    let mut scopes = new.scopes.clone();
    scopes.sort();
    scopes.dedup();
    storage
        .insert_api_key(&ApiKeyRow {
            name: new.name.clone(),
            key_hash: hash_secret(secret),
            scopes,
            addresses_per_hour: i64::from(new.quotas.addresses_per_hour),
            concurrent: i64::from(new.quotas.concurrent),
            created_unix_ms: crate::unix_ms(),
            last_used_unix_ms: None,
            revoked_unix_ms: None,
        })
        .await
}

/// Why a call is refused before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `authorization` metadata.
    Missing,
    /// Not `Bearer <key>` or not a key.
    Malformed,
    /// No such key.
    Unknown,
    Revoked {
        name: String,
    },
    /// The key lacks the scope the call needs.
    Forbidden {
        name: String,
        needed: Scope,
    },
    /// The store failed.
    Store(String),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => write!(
                f,
                "no API key: send one as gRPC metadata `authorization: Bearer <key>` (geoloc \
                 clients: set GEOLOC_API_KEY or pass --api-key-file FILE); an operator creates \
                 keys with `geoloc-coordinator keys create --name NAME --scope read|locate|admin`"
            ),
            AuthError::Malformed => write!(
                f,
                "the `authorization` metadata is not `Bearer {KEY_PREFIX}<hex digits>`"
            ),
            AuthError::Unknown => write!(f, "unknown API key"),
            AuthError::Revoked { name } => write!(f, "API key {name:?} was revoked"),
            AuthError::Forbidden { name, needed } => write!(
                f,
                "API key {name:?} lacks the scope `{needed}` this call needs"
            ),
            AuthError::Store(m) => write!(f, "checking the API key: {m}"),
        }
    }
}

/// A running locate of a key, counted until dropped.
pub struct Slot<'a> {
    access: &'a Access,
    name: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut running = self
            .access
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.name);
            }
        }
    }
}

/// What a locate run was charged, to settle when it ends.
#[derive(Debug, Clone)]
pub struct Charge {
    window: i64,
    target: String,
    packets_reserved: i64,
}

impl Charge {
    /// The charge of a run taken over from a replica that died before settling it: its
    /// estimate `packets_reserved` counts as reserved for `target` in the run's creation
    /// window (`created_unix_ms`), so settling adjusts it to the packets really sent.
    pub fn taken_over(target: &str, packets_reserved: i64, created_unix_ms: i64) -> Charge {
        Charge {
            window: created_unix_ms - created_unix_ms.rem_euclid(HOUR_MS),
            target: target.to_string(),
            packets_reserved,
        }
    }
}

/// The key checks and abuse limits of one coordinator.
pub struct Access {
    /// `auth = "keys"`: a call without a key is refused.
    required: bool,
    /// Fleet-wide packets per target address per clock hour.
    per_target_packets_per_hour: u32,
    /// Locate runs in progress per key name.
    running: Mutex<HashMap<String, u32>>,
    /// When `last_used` was last written, per key name.
    last_used: Mutex<HashMap<String, i64>>,
    /// The window whose older counters were last purged.
    purged: AtomicI64,
}

impl Access {
    pub fn new(required: bool, per_target_packets_per_hour: u32) -> Access {
        Access {
            required,
            per_target_packets_per_hour,
            running: Mutex::new(HashMap::new()),
            last_used: Mutex::new(HashMap::new()),
            purged: AtomicI64::new(0),
        }
    }

    /// Whether calls need a key.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The caller of a call given its `authorization` metadata (None when absent), if it
    /// may do what needs `needed`. Without metadata and with `auth = "none"`, an open
    /// caller; a key given is checked either way (and named on results).
    pub async fn authorize(
        &self,
        storage: &Storage,
        authorization: Option<&str>,
        needed: Scope,
    ) -> Result<Caller, AuthError> {
        let caller = match authorization {
            None if !self.required => return Ok(Caller::open_access()),
            None => return Err(AuthError::Missing),
            Some(h) => self.lookup(storage, bearer_key(h)?).await?,
        };
        if !caller.allows(needed) {
            return Err(AuthError::Forbidden {
                name: caller.name,
                needed,
            });
        }
        Ok(caller)
    }

    /// Checks again that `caller`'s key is valid (not revoked): for open streams, before
    /// each new address. Callers without a key always pass.
    pub async fn recheck(&self, storage: &Storage, caller: &Caller) -> Result<(), AuthError> {
        if caller.key_hash.is_empty() {
            return Ok(());
        }
        let row = storage
            .get_api_key_by_hash(&caller.key_hash)
            .await
            .map_err(|e| AuthError::Store(e.to_string()))?;
        match row {
            None => Err(AuthError::Unknown),
            Some(r) if r.revoked_unix_ms.is_some() => Err(AuthError::Revoked { name: r.name }),
            Some(_) => Ok(()),
        }
    }

    async fn lookup(&self, storage: &Storage, key: &str) -> Result<Caller, AuthError> {
        let row = storage
            .get_api_key_by_hash(&hash_secret(key))
            .await
            .map_err(|e| AuthError::Store(e.to_string()))?
            .ok_or(AuthError::Unknown)?;
        if row.revoked_unix_ms.is_some() {
            return Err(AuthError::Revoked { name: row.name });
        }
        let now = crate::unix_ms();
        let due = {
            let mut seen = self.last_used.lock().unwrap_or_else(|e| e.into_inner());
            let last = seen.get(&row.name).copied().unwrap_or(0);
            if now - last >= LAST_USED_EVERY_MS {
                seen.insert(row.name.clone(), now);
                true
            } else {
                false
            }
        };
        if due {
            if let Err(e) = storage.touch_api_key(&row.name, now).await {
                tracing::warn!(error = %e, key = %row.name, "could not record a key's last use");
            }
        }
        Ok(row.caller())
    }

    /// How many packets the budget of a target allows per hour.
    pub fn per_target_packets_per_hour(&self) -> u32 {
        self.per_target_packets_per_hour
    }

    /// Takes a concurrent-locate slot of `caller`'s key (None for a caller without quotas).
    pub fn hold_slot(&self, caller: &Caller) -> Result<Option<Slot<'_>>, LocateFailure> {
        let Some(q) = caller.quotas else {
            return Ok(None);
        };
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let n = running.entry(caller.name.clone()).or_insert(0);
        if *n >= q.concurrent {
            return Err(quota(format!(
                "quota `concurrent` of API key {:?} reached: {} of {} locates running; \
                 retry when one of them ends",
                caller.name, *n, q.concurrent
            )));
        }
        *n += 1;
        Ok(Some(Slot {
            access: self,
            name: caller.name.clone(),
        }))
    }

    /// Charges one address to `caller`'s hourly quota and `packets` (the run's estimate) to
    /// the target's hourly budget, both or neither.
    pub async fn admit(
        &self,
        storage: &Storage,
        caller: &Caller,
        target: &str,
        packets: i64,
        now_unix_ms: i64,
    ) -> Result<Charge, LocateFailure> {
        let window = now_unix_ms - now_unix_ms.rem_euclid(HOUR_MS);
        self.purge(storage, window).await;
        let resets = reset_text(window, now_unix_ms);
        if let Some(q) = caller.quotas {
            let limit = i64::from(q.addresses_per_hour);
            if let Err(used) = storage
                .usage_try_add(KIND_KEY_ADDRESSES, &caller.name, window, 1, limit)
                .await?
            {
                return Err(quota(format!(
                    "quota `addresses-per-hour` of API key {:?} reached: {used} of {limit} \
                     addresses measured this hour; {resets}",
                    caller.name
                )));
            }
        }
        let budget = i64::from(self.per_target_packets_per_hour);
        let packets = packets.max(0);
        let refused = if packets > budget {
            Some(
                storage
                    .usage_get(KIND_TARGET_PACKETS, target, window)
                    .await?,
            )
        } else {
            storage
                .usage_try_add(KIND_TARGET_PACKETS, target, window, packets, budget)
                .await?
                .err()
        };
        if let Some(used) = refused {
            if caller.quotas.is_some() {
                // Nothing is counted for a refused address.
                storage
                    .usage_add(KIND_KEY_ADDRESSES, &caller.name, window, -1)
                    .await?;
            }
            return Err(quota(format!(
                "budget `per-target-packets-per-hour` of {target} reached: {used} of {budget} \
                 packets sent to it this hour by the whole fleet, this locate needs about \
                 {packets}; {resets}"
            )));
        }
        Ok(Charge {
            window,
            target: target.to_string(),
            packets_reserved: packets,
        })
    }

    /// Replaces a run's packet estimate by what it really sent (None: unknown, keep it).
    pub async fn settle(&self, storage: &Storage, charge: &Charge, sent: Option<i64>) {
        let Some(sent) = sent else { return };
        let delta = sent.max(0) - charge.packets_reserved;
        if delta == 0 {
            return;
        }
        if let Err(e) = storage
            .usage_add(KIND_TARGET_PACKETS, &charge.target, charge.window, delta)
            .await
        {
            tracing::warn!(error = %e, target = %charge.target, "could not settle a packet budget");
        }
    }

    /// Packets counted against `target` in the current hour.
    pub async fn target_packets(&self, storage: &Storage, target: &str) -> crate::Result<i64> {
        let now = crate::unix_ms();
        storage
            .usage_get(KIND_TARGET_PACKETS, target, now - now.rem_euclid(HOUR_MS))
            .await
    }

    /// Addresses counted against key `name` in the current hour.
    pub async fn key_addresses(&self, storage: &Storage, name: &str) -> crate::Result<i64> {
        let now = crate::unix_ms();
        storage
            .usage_get(KIND_KEY_ADDRESSES, name, now - now.rem_euclid(HOUR_MS))
            .await
    }

    /// Drops the counters of past windows, once per window.
    async fn purge(&self, storage: &Storage, window: i64) {
        if self.purged.swap(window, Ordering::SeqCst) == window {
            return;
        }
        if let Err(e) = storage.usage_purge(window).await {
            tracing::warn!(error = %e, "could not purge old usage counters");
        }
    }
}

/// The key of `Bearer <key>`.
fn bearer_key(h: &str) -> Result<&str, AuthError> {
    let (scheme, key) = h.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || key.len() > MAX_KEY_LEN
        || !key.starts_with(KEY_PREFIX)
    {
        return Err(AuthError::Malformed);
    }
    Ok(key)
}

fn quota(message: String) -> LocateFailure {
    LocateFailure::new(FailureCode::QuotaExceeded, message)
}

/// "resets at 15:00:00 UTC (in 1234 s)" for the window starting at `window`.
fn reset_text(window: i64, now: i64) -> String {
    let end = window + HOUR_MS;
    let s = (end / 1000).rem_euclid(86_400);
    format!(
        "resets at {:02}:{:02}:{:02} UTC (in {} s)",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        ((end - now) + 999) / 1000
    )
}

/// Packets a locate run is expected to send: echo requests per vantage point asked (the
/// two-stage first stage sends one each). Traceroute toward a silent target may add some;
/// the run is settled with what it really sent.
pub fn packet_estimate(
    two_stage: Option<(usize, usize)>,
    vantage_points: usize,
    ping_count: u32,
) -> i64 {
    let pings = i64::from(ping_count);
    match two_stage {
        None => vantage_points as i64 * pings,
        Some((first, k)) => {
            let first = first.min(vantage_points);
            let second = k.min(vantage_points.saturating_sub(first));
            first as i64 + second as i64 * pings
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_bearer() {
        assert_eq!(
            scopes_text(&[Scope::Locate, Scope::Read, Scope::Locate]),
            "read,locate"
        );
        assert_eq!(
            parse_scopes("read,admin").unwrap(),
            vec![Scope::Read, Scope::Admin]
        );
        assert!(parse_scopes("read,root").unwrap_err().contains("root"));
        let admin = Caller {
            scopes: vec![Scope::Admin],
            ..Caller::default()
        };
        assert!(admin.allows(Scope::Locate) && admin.allows(Scope::Read));
        let read = Caller {
            scopes: vec![Scope::Read],
            ..Caller::default()
        };
        assert!(!read.allows(Scope::Locate) && !read.allows(Scope::Admin));
        assert_eq!(bearer_key("Bearer gk_00").unwrap(), "gk_00");
        assert_eq!(bearer_key("bearer  gk_00 ").unwrap(), "gk_00");
        assert_eq!(bearer_key("Basic gk_00"), Err(AuthError::Malformed));
        assert_eq!(bearer_key("Bearer sk_00"), Err(AuthError::Malformed));
        let s = new_secret();
        assert!(s.starts_with(KEY_PREFIX) && s.len() == 67, "{s}");
        assert_ne!(s, new_secret());
        assert_eq!(hash_secret(&s).len(), 64);
        assert!(check_name("lab-1.a_b").is_ok());
        assert!(check_name("a b").is_err() && check_name("").is_err());
    }

    #[test]
    fn estimates_and_reset_text() {
        assert_eq!(packet_estimate(None, 10, 3), 30);
        assert_eq!(packet_estimate(Some((8, 24)), 10, 3), 8 + 2 * 3);
        assert_eq!(packet_estimate(Some((8, 24)), 100, 3), 8 + 24 * 3);
        assert_eq!(
            reset_text(HOUR_MS * 10, HOUR_MS * 10 + 1_000),
            "resets at 11:00:00 UTC (in 3599 s)"
        );
    }
}
