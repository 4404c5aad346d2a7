//! From Atlas results to the engine's answer: offline (downloaded files) and live (a
//! one-off measurement through the API).
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use geoloc_engine::{Solution, SolveOptions};
use serde::Serialize;

use crate::client::AtlasClient;
use crate::error::{AtlasError, Result};
use crate::probes::ProbeSet;
use crate::request::{CostEstimate, MeasurementRequest};
use crate::results::{Expect, ParseReport, Parsed};
use crate::vet::{mesh_pairs, vet, Vetted};

/// Solves from vetted measurements: the mesh calibration (if any) is used, and the probes
/// left out by vetting are listed in the answer's `dropped` beside the engine's own.
pub fn solve_vetted(v: &Vetted, mut opts: SolveOptions) -> Result<Solution> {
    if opts.calibration.is_none() {
        opts.calibration = v.calibration.clone();
    }
    let mut sol = geoloc_engine::solve(&v.measurements, &opts)?;
    sol.dropped.extend(v.dropped.iter().cloned());
    sol.dropped.sort_by(|a, b| a.landmark.cmp(&b.landmark));
    Ok(sol)
}

/// The one target of `parsed`: `target` when given, else the single `dst_addr` found.
pub fn single_target(parsed: &Parsed, target: Option<IpAddr>) -> Result<IpAddr> {
    if let Some(t) = target {
        return Ok(t);
    }
    let found: BTreeSet<IpAddr> = parsed.rtts.iter().map(|r| r.dst_addr).collect();
    match found.len() {
        1 => Ok(*found.iter().next().expect("one")),
        0 => Err(AtlasError::Malformed {
            what: "results".into(),
            reason: "no usable result".into(),
        }),
        n => Err(AtlasError::Malformed {
            what: "results".into(),
            reason: format!(
                "results for {n} targets ({}): name one with --target",
                found
                    .iter()
                    .take(5)
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// An offline solve from downloaded files.
#[derive(Debug, Clone)]
pub struct Imported {
    pub target: IpAddr,
    pub solution: Solution,
    pub report: ParseReport,
    pub vetted: Vetted,
}

/// Solves offline: `results` (one measurement's results), `probes` (metadata), `mesh`
/// (parsed probe-to-probe ping results, may be empty), `exclude`d probe ids.
pub fn import(
    results: &[u8],
    what: &str,
    probes: &ProbeSet,
    mesh: &[Parsed],
    exclude: &BTreeSet<u32>,
    target: Option<IpAddr>,
    opts: SolveOptions,
) -> Result<Imported> {
    let first = crate::results::parse_results(
        results,
        what,
        &Expect {
            target,
            ..Default::default()
        },
    )?;
    let target = single_target(&first, target)?;
    // Again with the target fixed, so results to other addresses are reported.
    let parsed = crate::results::parse_results(
        results,
        what,
        &Expect {
            target: Some(target),
            ..Default::default()
        },
    )?;
    let pairs = mesh_pairs(probes, mesh);
    let vetted = vet(probes, &parsed.rtts, &pairs, exclude);
    let solution = solve_vetted(&vetted, opts)?;
    Ok(Imported {
        target,
        solution,
        report: parsed.report,
        vetted,
    })
}

/// A live one-off measurement.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub request: MeasurementRequest,
    pub max_credits: u64,
    /// How long to wait for results.
    pub deadline: Duration,
    /// Time between polls.
    pub poll: Duration,
    pub exclude: BTreeSet<u32>,
    /// Existing measurements of pings among probes (e.g. the anchors' mesh) whose results
    /// vet the probes' positions; reading them costs nothing.
    pub mesh_msm_ids: Vec<u64>,
    /// Probe metadata known beforehand (e.g. an archive file); missing probes are fetched.
    pub probes: ProbeSet,
}

/// What a live measurement cost and gave.
#[derive(Debug, Clone, Serialize)]
pub struct LiveSummary {
    pub msm_ids: Vec<u64>,
    pub estimate: CostEstimate,
    /// Results delivered × unit cost × one-off factor: what Atlas charges for them.
    pub credits_charged: u64,
    pub results: usize,
    pub probes_with_rtt: usize,
    pub timed_out: bool,
    pub polls: u32,
    /// From creating the measurement to the last result read, s.
    pub wait_s: f64,
    pub report: ParseReport,
}

/// A live measurement's outcome, before solving.
#[derive(Debug, Clone)]
pub struct Live {
    pub summary: LiveSummary,
    pub vetted: Vetted,
    pub probes: ProbeSet,
}

/// Estimates, checks the budget, creates the measurement, waits for its results, fetches
/// the missing probe metadata and the mesh, and vets. `on_estimate` sees the cost before
/// anything is spent.
pub async fn live(
    client: &AtlasClient,
    opts: &LiveOptions,
    on_estimate: impl FnOnce(&CostEstimate),
) -> Result<Live> {
    let def = opts
        .request
        .definitions
        .first()
        .ok_or_else(|| AtlasError::InvalidRequest("no definition".into()))?;
    let target = def.target;
    let unit = def.unit_cost() * crate::request::ONE_OFF_FACTOR;
    let (ids, estimate) = client
        .create(&opts.request, opts.max_credits, on_estimate)
        .await?;
    let t0 = Instant::now();
    let want: usize = opts
        .request
        .probes
        .iter()
        .map(|p| p.requested() as usize)
        .sum();
    let expect = Expect {
        target: Some(target),
        msm_ids: vec![ids[0]],
    };
    let waited = client
        .wait_results(ids[0], &expect, want, t0 + opts.deadline, opts.poll)
        .await?;
    let wait_s = t0.elapsed().as_secs_f64();
    // Metadata for every probe that answered and is not known yet.
    let mut probes = opts.probes.clone();
    let mut mesh: Vec<Parsed> = Vec::new();
    for &m in &opts.mesh_msm_ids {
        mesh.push(
            client
                .results(
                    m,
                    &Expect {
                        target: None,
                        msm_ids: vec![m],
                    },
                )
                .await?,
        );
    }
    let mut need: BTreeSet<u32> = waited.parsed.rtts.iter().map(|r| r.probe_id).collect();
    for p in &mesh {
        need.extend(p.rtts.iter().map(|r| r.probe_id));
    }
    need.retain(|id| probes.get(*id).is_none());
    if !need.is_empty() {
        let v: Vec<u32> = need.into_iter().collect();
        probes.extend(client.probes_by_id(&v).await?);
    }
    let pairs = mesh_pairs(&probes, &mesh);
    let vetted = vet(&probes, &waited.parsed.rtts, &pairs, &opts.exclude);
    let results = waited.parsed.report.accepted + waited.parsed.report.no_reply.len();
    Ok(Live {
        summary: LiveSummary {
            msm_ids: ids,
            estimate,
            credits_charged: results as u64 * unit,
            results: waited.parsed.report.results,
            probes_with_rtt: waited.parsed.report.probes,
            timed_out: waited.timed_out,
            polls: waited.polls,
            wait_s,
            report: waited.parsed.report,
        },
        vetted,
        probes,
    })
}
