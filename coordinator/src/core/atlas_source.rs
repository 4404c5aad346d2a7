//! RIPE Atlas as a [`MeasurementSource`], through `geoloc_atlas`'s client of the v2 API.
//!
//! - Vantage points: the connected probes of the probe list (`status=1`), fetched once and
//!   kept for [`PROBES_TTL`], vetted as `geoloc_atlas::vet` does: probes on the exclusion
//!   list (`atlas-exclude-file`), without a position, or blamed by the speed-of-light check
//!   on the RTTs among probes of the measurements `atlas-mesh-msm` are left out. Ids are
//!   `atlas:<probe id>`.
//! - Measuring: one one-off ping measurement per call (probes by id, at most 1,000 each),
//!   `ping_count` packets of 48 bytes, results polled until every probe answered, the
//!   measurement stopped, or `max(budget, atlas-wait-ms)` passed. Each probe's minimum RTT
//!   becomes an observation (`rtts_ms` holds that one value: Atlas results are reduced to
//!   their minimum); a result without a reply is `no-reply`; a probe without a result by the
//!   deadline is `timeout`; a malformed result is `rejected` (it was charged).
//! - Credits: [`AtlasRun::check_credits`] refuses a locate whose upper bound (vantage points
//!   x unit cost x 2) exceeds `atlas-max-credits`, before anything is spent; each
//!   measurement is also created only within what is left of that limit (the client checks
//!   its estimate before sending). What a result costs is [`credits_of_result`].
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use geoloc_atlas::request::{Definition, MeasurementRequest, MeasurementType, ProbeSpec};
use geoloc_atlas::request::{MAX_PACKETS, MAX_REQUESTED, ONE_OFF_FACTOR};
use geoloc_atlas::results::{Expect, RttKind};
use geoloc_atlas::{ApiKey, AtlasClient, AtlasError, ProbeSet};

use crate::config::Config;
use crate::core::measurement::{MeasurementOutcome, MeasurementResult, RawPing};
use crate::core::source::{
    Cost, MeasureSpec, MeasurementSource, Observation, VantagePoint, VantageResult,
};
use crate::error::{CoordinatorError, Result};
use crate::{new_id, unix_ms};

/// Prefix of the ids of Atlas vantage points (`geoloc_atlas::probes::landmark`).
pub const ATLAS_PREFIX: &str = "atlas:";
/// How long the probe list (and the mesh vetting) is reused.
pub const PROBES_TTL: Duration = Duration::from_secs(3600);
/// Most probes read from the probe list.
pub const MAX_PROBES: usize = 100_000;
/// Timeout of one API request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// What a locate asking for Atlas says when the coordinator has no Atlas account.
pub const NOT_CONFIGURED: &str = "RIPE Atlas is not configured on this coordinator: set \
     atlas-base-url (and atlas-key-file or RIPE_ATLAS_KEY) to use source atlas or both";

/// Credits one delivered ping result of `packets` echo requests (48 bytes) costs in a
/// one-off measurement: the documented unit cost x 2. 0 packets (no result) cost nothing.
pub fn credits_of_result(packets: u64) -> u64 {
    if packets == 0 {
        return 0;
    }
    let mut d = Definition::new(MeasurementType::Ping, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    d.packets = packets.min(u64::from(MAX_PACKETS)) as u32;
    d.unit_cost() * ONE_OFF_FACTOR
}

/// Echo requests per Atlas result for a locate's `ping_count` (Atlas accepts 1 to 16).
pub fn packets_for(ping_count: u32) -> u32 {
    ping_count.clamp(1, MAX_PACKETS)
}

/// The Atlas keys of a configuration that cannot work: the key at fault and why.
pub fn config_problem(c: &Config) -> Option<(&'static str, String)> {
    if c.atlas_max_credits == 0 {
        return Some((
            "atlas-max-credits",
            "atlas-max-credits must be at least 1 (a one-off ping result costs 2 credits or more)"
                .into(),
        ));
    }
    if !(1_000..=3_600_000).contains(&c.atlas_wait_ms) {
        return Some((
            "atlas-wait-ms",
            format!("atlas-wait-ms {} not in 1000..=3600000", c.atlas_wait_ms),
        ));
    }
    if let Some(u) = &c.atlas_base_url {
        if let Err(e) = AtlasClient::new(u, None, HTTP_TIMEOUT) {
            return Some(("atlas-base-url", format!("atlas-base-url: {e}")));
        }
    } else if c.atlas_key_file.is_some()
        || c.atlas_exclude_file.is_some()
        || !c.atlas_mesh_msm.is_empty()
    {
        return Some((
            "atlas-base-url",
            "atlas-key-file, atlas-exclude-file or atlas-mesh-msm is set without \
             atlas-base-url (https://atlas.ripe.net for the real API)"
                .into(),
        ));
    }
    None
}

/// The probe list as last read, vetted.
struct Probes {
    at: Instant,
    points: Vec<VantagePoint>,
    /// How many were left out by vetting (the first few are logged with why).
    dropped: usize,
}

/// The coordinator's RIPE Atlas account: client, limits, vetting inputs, the probe list.
pub struct Atlas {
    client: AtlasClient,
    max_credits: u64,
    exclude: BTreeSet<u32>,
    mesh_msm: Vec<u64>,
    wait: Duration,
    probes: tokio::sync::Mutex<Option<Probes>>,
}

impl Atlas {
    /// From the configuration; None without `atlas-base-url`. The key comes from
    /// `atlas-key-file`, else `RIPE_ATLAS_KEY`; without one, locates with Atlas are refused
    /// by the client before anything is sent.
    pub fn from_config(c: &Config) -> Result<Option<Atlas>> {
        let Some(url) = &c.atlas_base_url else {
            return Ok(None);
        };
        let bad = |key: &str, e: AtlasError| CoordinatorError::InvalidConfig(format!("{key}: {e}"));
        let key = ApiKey::from_file_or_env(c.atlas_key_file.as_deref())
            .map_err(|e| bad("atlas-key-file", e))?;
        if key.is_none() {
            tracing::warn!("atlas-base-url is set but no RIPE Atlas key (atlas-key-file or RIPE_ATLAS_KEY): locates with source atlas will fail");
        }
        let exclude = match &c.atlas_exclude_file {
            None => BTreeSet::new(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| CoordinatorError::Io {
                    path: p.clone(),
                    source,
                })?;
                geoloc_atlas::vet::parse_exclusions(&text, &p.display().to_string())
                    .map_err(|e| bad("atlas-exclude-file", e))?
            }
        };
        let client =
            AtlasClient::new(url, key, HTTP_TIMEOUT).map_err(|e| bad("atlas-base-url", e))?;
        Ok(Some(Atlas {
            client,
            max_credits: c.atlas_max_credits,
            exclude,
            mesh_msm: c.atlas_mesh_msm.clone(),
            wait: Duration::from_millis(u64::from(c.atlas_wait_ms)),
            probes: tokio::sync::Mutex::new(None),
        }))
    }

    /// A source for one locate, counting the credits it spends against `atlas-max-credits`.
    pub fn for_locate(&self) -> AtlasRun<'_> {
        AtlasRun {
            atlas: self,
            spent: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The vetted vantage points (the list is read again after [`PROBES_TTL`]).
    async fn points(&self) -> std::result::Result<Vec<VantagePoint>, String> {
        let mut cache = self.probes.lock().await;
        if let Some(p) = cache.as_ref().filter(|p| p.at.elapsed() < PROBES_TTL) {
            return Ok(p.points.clone());
        }
        let probes = self
            .client
            .probes(&[("status", "1".to_string())], MAX_PROBES)
            .await
            .map_err(|e| format!("reading the RIPE Atlas probe list: {e}"))?;
        let fresh = self.vet(probes).await?;
        tracing::info!(
            vantage_points = fresh.points.len(),
            left_out = fresh.dropped,
            "RIPE Atlas probe list read"
        );
        let points = fresh.points.clone();
        *cache = Some(fresh);
        Ok(points)
    }

    /// Exclusion list, position, speed of light among probes (`geoloc_atlas::vet::vet_probes`).
    async fn vet(&self, probes: ProbeSet) -> std::result::Result<Probes, String> {
        let mut mesh = Vec::new();
        for &m in &self.mesh_msm {
            let expect = Expect {
                target: None,
                msm_ids: vec![m],
            };
            mesh.push(
                self.client
                    .results(m, &expect)
                    .await
                    .map_err(|e| format!("reading the probes' mesh measurement {m}: {e}"))?,
            );
        }
        let pairs = geoloc_atlas::vet::mesh_pairs(&probes, &mesh);
        let ids = probes.probes.keys().copied().collect();
        let v = geoloc_atlas::vet::vet_probes(&probes, &ids, &pairs, &self.exclude);
        for d in v.dropped.iter().take(20) {
            tracing::info!(probe = %d.landmark, reason = %d.reason, "RIPE Atlas probe left out");
        }
        Ok(Probes {
            at: Instant::now(),
            points: v
                .kept
                .iter()
                .map(|(&id, &pos)| VantagePoint {
                    id: geoloc_atlas::probes::landmark(id),
                    pos,
                })
                .collect(),
            dropped: v.dropped.len(),
        })
    }
}

/// RIPE Atlas for one locate: its credits are counted here.
pub struct AtlasRun<'a> {
    atlas: &'a Atlas,
    spent: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl AtlasRun<'_> {
    /// Credits spent so far by this locate (results delivered).
    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::SeqCst)
    }

    fn failed_all(
        &self,
        from: &[(VantagePoint, u32)],
        target: IpAddr,
        outcome: MeasurementOutcome,
        error: &str,
    ) -> Vec<VantageResult> {
        from.iter()
            .map(|(vp, _)| VantageResult {
                vantage_point: vp.clone(),
                observations: vec![Observation::failed(
                    vp.clone(),
                    target,
                    new_id(),
                    outcome,
                    error.to_string(),
                )],
                cost: Cost::default(),
            })
            .collect()
    }

    /// One measurement from `chunk` (at most [`MAX_REQUESTED`] probes).
    async fn measure_chunk(
        &self,
        spec: &MeasureSpec,
        chunk: &[(VantagePoint, u32)],
    ) -> Vec<VantageResult> {
        let a = self.atlas;
        let packets = packets_for(spec.ping_count);
        let mut def = Definition::new(MeasurementType::Ping, spec.target);
        def.packets = packets;
        let req = MeasurementRequest {
            definitions: vec![def],
            probes: vec![ProbeSpec::Ids(chunk.iter().map(|(_, id)| *id).collect())],
        };
        let left = a.max_credits.saturating_sub(self.spent());
        let (ids, estimate) = match a.client.create(&req, left, |_| {}).await {
            Ok(x) => x,
            Err(AtlasError::OverBudget {
                estimated,
                max_credits,
                ..
            }) => {
                let m = format!(
                    "not measured: {estimated} RIPE Atlas credits would exceed the {max_credits} left of atlas-max-credits {}",
                    a.max_credits
                );
                return self.failed_all(chunk, spec.target, MeasurementOutcome::Rejected, &m);
            }
            Err(e) => {
                let m = format!("RIPE Atlas: {e}");
                tracing::warn!(error = %m, "creating an Atlas measurement");
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(m.clone());
                return self.failed_all(chunk, spec.target, MeasurementOutcome::ProbeError, &m);
            }
        };
        let msm = ids[0];
        let wait = spec.budget.max(a.wait);
        let poll = (wait / 60).clamp(Duration::from_millis(250), Duration::from_secs(5));
        let expect = Expect {
            target: Some(spec.target),
            msm_ids: vec![msm],
        };
        let waited = a
            .client
            .wait_results(msm, &expect, chunk.len(), Instant::now() + wait, poll)
            .await;
        let parsed = match waited {
            Ok(w) => w.parsed,
            Err(e) => {
                // Created, so possibly charged; nothing came back that can be counted.
                let m = format!("RIPE Atlas measurement {msm}: {e}");
                tracing::warn!(error = %m, estimated_credits = estimate.total_credits, "Atlas results");
                return self.failed_all(chunk, spec.target, MeasurementOutcome::Timeout, &m);
            }
        };
        let asked: BTreeMap<u32, &VantagePoint> = chunk.iter().map(|(v, id)| (*id, v)).collect();
        let mut rtt: BTreeMap<u32, f64> = BTreeMap::new();
        for r in parsed.rtts.iter().filter(|r| r.kind == RttKind::Echo) {
            if asked.contains_key(&r.probe_id) {
                let e = rtt.entry(r.probe_id).or_insert(r.rtt_ms);
                *e = e.min(r.rtt_ms);
            } else {
                tracing::warn!(
                    probe = r.probe_id,
                    msm,
                    "a result from a probe not asked: ignored"
                );
            }
        }
        let probe_of = |p: Option<u64>| p.and_then(|p| u32::try_from(p).ok());
        let silent: BTreeSet<u32> = parsed
            .report
            .no_reply
            .iter()
            .filter_map(|i| probe_of(i.probe_id))
            .collect();
        let malformed: BTreeMap<u32, String> = parsed
            .report
            .malformed
            .iter()
            .filter_map(|i| Some((probe_of(i.probe_id)?, i.problem.clone())))
            .collect();
        let mut out = Vec::with_capacity(chunk.len());
        let mut credits = 0u64;
        for (vp, id) in chunk {
            let request_id = format!("{msm}:{id}");
            let delivered = |rtts: Vec<f64>, error: String| MeasurementResult {
                request_id: request_id.clone(),
                target: spec.target.to_string(),
                ping: Some(RawPing {
                    min_rtt_ms: rtts.first().copied(),
                    received: rtts.len() as u32,
                    rtts_ms: rtts,
                    sent: packets,
                    error,
                }),
                ..MeasurementResult::default()
            };
            let (outcome, error, result) = if let Some(&r) = rtt.get(id) {
                (
                    MeasurementOutcome::Answered,
                    String::new(),
                    delivered(vec![r], String::new()),
                )
            } else if let Some(problem) = malformed.get(id) {
                let e = format!("malformed RIPE Atlas result: {problem}");
                (
                    MeasurementOutcome::Rejected,
                    e.clone(),
                    delivered(Vec::new(), e),
                )
            } else if silent.contains(id) {
                (
                    MeasurementOutcome::NoReply,
                    String::new(),
                    delivered(Vec::new(), String::new()),
                )
            } else {
                let o = Observation::failed(
                    vp.clone(),
                    spec.target,
                    request_id.clone(),
                    MeasurementOutcome::Timeout,
                    format!(
                        "no result in RIPE Atlas measurement {msm} within {} s",
                        wait.as_secs()
                    ),
                );
                out.push(VantageResult {
                    vantage_point: vp.clone(),
                    observations: vec![o],
                    cost: Cost::default(),
                });
                continue;
            };
            let cost = Cost {
                packets: u64::from(packets),
                credits: credits_of_result(u64::from(packets)),
            };
            credits += cost.credits;
            out.push(VantageResult {
                vantage_point: vp.clone(),
                observations: vec![Observation {
                    request_id,
                    vantage_point: vp.clone(),
                    target: spec.target,
                    outcome,
                    error,
                    result,
                    at_unix_ms: unix_ms(),
                }],
                cost,
            });
        }
        self.spent.fetch_add(credits, Ordering::SeqCst);
        tracing::info!(
            msm,
            probes = chunk.len(),
            answered = rtt.len(),
            credits,
            "RIPE Atlas measurement done"
        );
        out
    }

    async fn measure_all(&self, spec: MeasureSpec, from: Vec<VantagePoint>) -> Vec<VantageResult> {
        let mut out = Vec::new();
        let mut ok: Vec<(VantagePoint, u32)> = Vec::new();
        let mut seen = BTreeSet::new();
        for vp in from {
            match vp
                .id
                .strip_prefix(ATLAS_PREFIX)
                .and_then(|s| s.parse::<u32>().ok())
                .filter(|&id| id > 0)
            {
                Some(id) if seen.insert(id) => ok.push((vp, id)),
                _ => out.extend(self.failed_all(
                    &[(vp, 0)],
                    spec.target,
                    MeasurementOutcome::Rejected,
                    "not a RIPE Atlas probe id (atlas:<id>), or asked twice",
                )),
            }
        }
        for chunk in ok.chunks(MAX_REQUESTED as usize) {
            out.extend(self.measure_chunk(&spec, chunk).await);
        }
        out
    }
}

impl MeasurementSource for AtlasRun<'_> {
    fn name(&self) -> &'static str {
        "atlas"
    }

    fn vantage_points(&self) -> BoxFuture<'_, Vec<VantagePoint>> {
        Box::pin(async move {
            match self.atlas.points().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "RIPE Atlas vantage points");
                    *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    Vec::new()
                }
            }
        })
    }

    fn none_available(&self) -> String {
        match self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            Some(e) => format!("no RIPE Atlas vantage point: {e}"),
            None => "no RIPE Atlas vantage point: no connected probe with a position passed \
                     the vetting (exclusion list, speed of light among probes)"
                .into(),
        }
    }

    fn measure(&self, spec: MeasureSpec, from: Vec<VantagePoint>) -> BoxStream<'_, VantageResult> {
        if from.is_empty() {
            return stream::empty().boxed();
        }
        stream::once(self.measure_all(spec, from))
            .flat_map(stream::iter)
            .boxed()
    }

    fn check_credits(
        &self,
        vantage_points: usize,
        ping_count: u32,
    ) -> std::result::Result<u64, String> {
        let unit = credits_of_result(u64::from(packets_for(ping_count)));
        let most = vantage_points as u64 * unit;
        let max = self.atlas.max_credits;
        if most > max {
            return Err(format!(
                "this locate may cost up to {most} RIPE Atlas credits ({vantage_points} probes x \
                 {unit} credits per one-off ping result of {} packets), more than \
                 atlas-max-credits {max}; nothing was measured or spent (ask for a smaller \
                 --budget, at most {})",
                packets_for(ping_count),
                max / unit.max(1)
            ));
        }
        Ok(most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_follow_the_documented_unit_cost() {
        assert_eq!(credits_of_result(3), 6);
        assert_eq!(credits_of_result(1), 2);
        assert_eq!(credits_of_result(0), 0);
        assert_eq!(credits_of_result(40), 32);
        assert_eq!(packets_for(0), 1);
        assert_eq!(packets_for(20), 16);
        assert_eq!(
            geoloc_atlas::probes::landmark(7),
            format!("{ATLAS_PREFIX}7")
        );
    }

    #[test]
    fn atlas_keys_from_the_file_and_the_environment() {
        use crate::config::{FileConfig, Settings};
        let file: FileConfig = toml::from_str(
            "atlas-base-url = \"https://atlas.ripe.net\"\natlas-key-file = \"/etc/geoloc/atlas.key\"\n\
             atlas-max-credits = 600\natlas-mesh-msm = [1000, 1001]\n",
        )
        .unwrap();
        let none = std::collections::HashMap::new();
        let c = Config::resolve(&Settings::default(), &file, None, &none).unwrap();
        assert_eq!(c.atlas_base_url.as_deref(), Some("https://atlas.ripe.net"));
        assert_eq!(
            (c.atlas_max_credits, c.atlas_mesh_msm.clone()),
            (600, vec![1000, 1001])
        );
        // The environment gives lists as comma-separated text.
        let env = std::collections::HashMap::from([(
            "GEOLOC_COORDINATOR_ATLAS_MESH_MSM".to_string(),
            "7, 8".to_string(),
        )]);
        let c = Config::resolve(&Settings::default(), &file, None, &env).unwrap();
        assert_eq!(c.atlas_mesh_msm, vec![7, 8]);
        // The key itself is never part of the configuration: only its file is printed.
        let text = c.to_redacted_toml().unwrap();
        assert!(
            text.contains("atlas-key-file = \"/etc/geoloc/atlas.key\""),
            "{text}"
        );
        let bad: FileConfig = toml::from_str("atlas-max-credits = 0\n").unwrap();
        let e = Config::resolve(&Settings::default(), &bad, Some("c.toml"), &none).unwrap_err();
        assert!(e.to_string().contains("atlas-max-credits"), "{e}");
    }

    #[test]
    fn config_problems_name_the_key() {
        let mut c = Config::default();
        assert!(config_problem(&c).is_none());
        c.atlas_key_file = Some("/k".into());
        assert_eq!(config_problem(&c).unwrap().0, "atlas-base-url");
        c.atlas_base_url = Some("ftp://x".into());
        assert_eq!(config_problem(&c).unwrap().0, "atlas-base-url");
        c.atlas_base_url = Some("http://127.0.0.1:9".into());
        assert!(config_problem(&c).is_none());
        c.atlas_max_credits = 0;
        assert_eq!(config_problem(&c).unwrap().0, "atlas-max-credits");
    }
}
