//! Which [`MeasurementSource`] a locate uses: the own fleet, RIPE Atlas, or both merged into
//! one selection and one solve; and what each source's vantage points spent, read from the
//! stored rows (so a stored result says the same as the live one).
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};

use crate::core::atlas_source::{self, ATLAS_PREFIX};
use crate::core::locate::{self, FailureCode, LocateFailure, LocateParams, Located, Progress};
use crate::core::rows::MeasurementRow;
use crate::core::source::{MeasureSpec, MeasurementSource, VantagePoint, VantageResult};
use crate::Coordinator;

/// Where a locate's vantage points come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SourceChoice {
    /// The probes connected to this coordinator.
    #[default]
    Fleet,
    /// RIPE Atlas probes (needs `atlas-base-url`).
    Atlas,
    /// Both sets merged.
    Both,
}

impl SourceChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceChoice::Fleet => "fleet",
            SourceChoice::Atlas => "atlas",
            SourceChoice::Both => "both",
        }
    }

    /// Whether RIPE Atlas must be configured.
    pub fn needs_atlas(self) -> bool {
        self != SourceChoice::Fleet
    }
}

/// Whether a vantage point id is a RIPE Atlas probe's (`atlas:<id>`; fleet ids have no `:`).
pub fn is_atlas(id: &str) -> bool {
    id.starts_with(ATLAS_PREFIX)
}

/// What a locate's vantage points spent, by source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// RIPE Atlas credits: results delivered x unit cost x 2 (one-off).
    pub atlas_credits: u64,
    pub fleet_probes_asked: u32,
    pub atlas_probes_asked: u32,
}

impl Spent {
    /// Counted from the stored rows of one result.
    pub fn of_rows(rows: &[MeasurementRow]) -> Spent {
        let mut fleet = std::collections::BTreeSet::new();
        let mut atlas = std::collections::BTreeSet::new();
        let mut credits = 0u64;
        for r in rows {
            if is_atlas(&r.probe_id) {
                atlas.insert(r.probe_id.as_str());
                credits += atlas_source::credits_of_result(r.packets_sent.max(0) as u64);
            } else {
                fleet.insert(r.probe_id.as_str());
            }
        }
        Spent {
            atlas_credits: credits,
            fleet_probes_asked: fleet.len() as u32,
            atlas_probes_asked: atlas.len() as u32,
        }
    }
}

/// The fleet's and another source's vantage points as one source: both lists offered to the
/// selection, each vantage point measured by the source it came from, answers merged as they
/// arrive.
pub struct Both<'a> {
    pub fleet: &'a dyn MeasurementSource,
    pub atlas: &'a dyn MeasurementSource,
}

impl MeasurementSource for Both<'_> {
    fn name(&self) -> &'static str {
        "both"
    }

    fn has_fleet_probes(&self) -> bool {
        true
    }

    fn vantage_points(&self) -> BoxFuture<'_, Vec<VantagePoint>> {
        Box::pin(async move {
            let (mut f, a) =
                futures::join!(self.fleet.vantage_points(), self.atlas.vantage_points());
            // Ids cannot collide (fleet ids have no ':'), but a duplicate would be measured
            // twice: keep the first.
            f.retain(|p| !is_atlas(&p.id));
            f.extend(a.into_iter().filter(|p| is_atlas(&p.id)));
            f
        })
    }

    fn none_available(&self) -> String {
        format!(
            "{}; {}",
            self.fleet.none_available(),
            self.atlas.none_available()
        )
    }

    fn measure(&self, spec: MeasureSpec, from: Vec<VantagePoint>) -> BoxStream<'_, VantageResult> {
        let (atlas, fleet): (Vec<_>, Vec<_>) = from.into_iter().partition(|p| is_atlas(&p.id));
        let f = self.fleet.measure(spec.clone(), fleet);
        let a = self.atlas.measure(spec, atlas);
        futures::stream::select(f, a).boxed()
    }

    fn check_credits(&self, vantage_points: usize, ping_count: u32) -> Result<u64, String> {
        // An upper bound: every vantage point asked could be an Atlas probe.
        self.atlas.check_credits(vantage_points, ping_count)
    }
}

/// Locates with the source `p.source` names (see [`Coordinator::locate`]).
pub(crate) async fn locate(
    coord: &Coordinator,
    p: LocateParams,
    progress: Progress<'_>,
) -> Result<Located, LocateFailure> {
    let started = Instant::now();
    let atlas = match (p.source.needs_atlas(), coord.atlas.as_ref()) {
        (false, _) => None,
        (true, Some(a)) => Some(a.for_locate()),
        (true, None) => {
            return Err(LocateFailure::new(
                FailureCode::NoProbes,
                atlas_source::NOT_CONFIGURED,
            ))
        }
    };
    let r = match (p.source, &atlas) {
        (SourceChoice::Atlas, Some(a)) => locate::run(coord, a, p, progress).await,
        (SourceChoice::Both, Some(a)) => {
            let both = Both {
                fleet: &coord.fleet,
                atlas: a,
            };
            locate::run(coord, &both, p, progress).await
        }
        _ => locate::run(coord, &coord.fleet, p, progress).await,
    };
    if let Some(a) = &atlas {
        tracing::debug!(
            credits = a.spent(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "atlas credits spent by this locate"
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atlas_ids_are_told_apart_from_fleet_ids() {
        assert!(is_atlas(&geoloc_atlas::probes::landmark(6001)));
        assert!(!is_atlas("paris-1"));
        // A fleet id cannot carry the prefix: ':' is not allowed in one.
        assert!(!crate::core::landmarks::valid_id("atlas:1"));
    }
}
