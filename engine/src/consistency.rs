//! When sound constraints contradict each other: the largest consistent set, the landmarks
//! left out, and whether the contradiction means a misplaced landmark or an anycast target.
//!
//! Under the sound bound, discs from a unicast target's landmarks always share a point
//! (the target). When they do not:
//! - the heaviest consistent set is searched ([`crate::region`]'s branch and bound); the
//!   discs outside it miss its region entirely;
//! - among those, the heaviest consistent set is searched again, and so on. A second group
//!   of at least [`min_group`] landmarks that agree with each other but not with the first
//!   means the address answers from several places: anycast. A leftover smaller than that
//!   is a landmark (or two) whose declared position is wrong;
//! - unless nothing breaks the tie: when a left-out landmark belongs to another consistent
//!   set as heavy as the first (two landmarks that contradict each other and no third that
//!   sides with one), the data cannot say which is wrong, or whether the address answers
//!   from two places (anycast). Such landmarks are listed in [`Analysis::ties`] so that the
//!   answer says so instead of blaming one.

use crate::region::{self, Constraint, Prepared};
use crate::sphere::{distance_km, LatLon};

/// A set of landmarks consistent with each other, and a point inside all their discs.
#[derive(Debug, Clone)]
pub struct Group {
    pub members: Vec<usize>,
    pub point: LatLon,
}

/// The outcome of the consistency analysis.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Consistent groups, heaviest first; never empty for a non-empty input.
    pub groups: Vec<Group>,
    /// Landmarks in no group of at least [`min_group`] members, with the distance by which
    /// their disc misses the first group's point, km.
    pub outliers: Vec<(usize, f64)>,
    /// Two or more groups of at least [`min_group`] landmarks with disjoint regions.
    pub anycast: bool,
    /// Outliers that are in a consistent set as heavy as the first group (nothing breaks
    /// the tie), with the first group's members whose disc misses theirs.
    pub ties: Vec<(usize, Vec<usize>)>,
}

/// Outliers checked for a tie (each check is one branch and bound over all discs).
const MAX_TIE_CHECKS: usize = 16;

/// Smallest second group that means anycast rather than misplaced landmarks: 3 landmarks,
/// or 2% of them when there are more than 150.
pub fn min_group(n: usize) -> usize {
    3.max((n as f64 * 0.02).ceil() as usize)
}

/// Analyses `discs` (sound bounds) at resolution `res`.
pub fn analyze(discs: &[Constraint], res: h3o::Resolution) -> Analysis {
    let n = discs.len();
    let prepared = Prepared::new(discs, res);
    let all: Vec<usize> = (0..n).collect();
    let whole = region::intersect_subset(&prepared, &all);
    if let Some(point) = whole.centroid().filter(|_| !whole.is_empty()) {
        return Analysis {
            groups: vec![Group {
                members: all,
                point,
            }],
            outliers: vec![],
            anycast: false,
            ties: vec![],
        };
    }
    let mut remaining = all;
    let mut groups: Vec<Group> = Vec::new();
    while !remaining.is_empty() {
        let Some(best) = region::heaviest_point(&prepared, &remaining) else {
            break;
        };
        if !groups.is_empty() && best.satisfied.len() < min_group(n) {
            break;
        }
        remaining.retain(|i| !best.satisfied.contains(i));
        groups.push(Group {
            members: best.satisfied,
            point: best.point,
        });
        // Two groups decide anycast; instances are enumerated separately (iGreedy).
        if groups.len() == 2 {
            break;
        }
    }
    let anycast = groups.len() >= 2;
    let outliers = if anycast {
        vec![]
    } else {
        let p = groups[0].point;
        remaining
            .iter()
            .map(|&i| {
                (
                    i,
                    (distance_km(discs[i].center, p) - discs[i].max_km).max(0.0),
                )
            })
            .collect()
    };
    let ties = ties(discs, res, &groups[0].members, &outliers);
    Analysis {
        groups,
        outliers,
        anycast,
        ties,
    }
}

/// Landmarks that [`small_split`] leaves out at most to try to remove a split.
pub const MAX_COLLUDERS: usize = 2;

/// Largest group [`small_split`] examines ("a few probes"; at most 10 re-analyses). In
/// fleets of more than 200 landmarks [`min_group`] exceeds it: a fake second site already
/// needs 2% of the landmarks, and real anycast sites are often seen by only a few more
/// than that (edgecast in `../shared/data/anycast-igreedy`: 259 vantage points, sites seen
/// by 6 or 7), which a larger limit would call collusion.
pub const MAX_SUSPECT_GROUP: usize = 4;

/// Whether `discs` split into two disjoint consistent groups of at least [`min_group`]
/// landmarks (the anycast test of [`analyze`], without the outliers and ties).
fn splits(discs: &[Constraint], res: h3o::Resolution) -> bool {
    let n = discs.len();
    let prepared = Prepared::new(discs, res);
    let all: Vec<usize> = (0..n).collect();
    if !region::intersect_subset(&prepared, &all).is_empty() {
        return false;
    }
    let Some(first) = region::heaviest_point(&prepared, &all) else {
        return false;
    };
    let rest: Vec<usize> = all
        .into_iter()
        .filter(|i| !first.satisfied.contains(i))
        .collect();
    region::heaviest_point(&prepared, &rest).is_some_and(|g| g.satisfied.len() >= min_group(n))
}

/// For an anycast split: the group (index into `a.groups`) whose split disappears when some
/// [`MAX_COLLUDERS`] or fewer of its landmarks are left out, if any. A few probes that
/// report short RTTs to a unicast target can fake such a split; the answer then says
/// "anycast or colluding probes" and names the group instead of calling it anycast.
/// The smaller group is tried first; only groups of fewer than `min_group + MAX_COLLUDERS`
/// landmarks can vanish that way, and only groups of at most [`MAX_SUSPECT_GROUP`] are
/// examined, so at most 10 re-analyses are run.
pub fn small_split(discs: &[Constraint], res: h3o::Resolution, a: &Analysis) -> Option<usize> {
    if !a.anycast {
        return None;
    }
    let n = discs.len();
    for g in (0..a.groups.len()).rev() {
        let members = &a.groups[g].members;
        if members.len() >= min_group(n) + MAX_COLLUDERS || members.len() > MAX_SUSPECT_GROUP {
            continue;
        }
        let without = |gone: &[usize]| -> Vec<Constraint> {
            (0..n)
                .filter(|i| !gone.contains(i))
                .map(|i| discs[i])
                .collect()
        };
        let mut sets: Vec<Vec<usize>> = members.iter().map(|&i| vec![i]).collect();
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                sets.push(vec![i, j]);
            }
        }
        if sets.iter().any(|s| !splits(&without(s), res)) {
            return Some(g);
        }
    }
    None
}

/// The outliers for which a consistent set containing them weighs as much as `first`, with
/// the members of `first` whose disc does not meet theirs.
fn ties(
    discs: &[Constraint],
    res: h3o::Resolution,
    first: &[usize],
    outliers: &[(usize, f64)],
) -> Vec<(usize, Vec<usize>)> {
    let total: u64 = discs.iter().map(|c| c.weight as u64).sum();
    let first_w: u64 = first.iter().map(|&i| discs[i].weight as u64).sum();
    let mut out = Vec::new();
    for &(i, _) in outliers.iter().take(MAX_TIE_CHECKS) {
        // Disc i outweighs all others together: the heaviest set found contains it.
        let mut forced = discs.to_vec();
        forced[i].weight = u32::try_from(total + 1).unwrap_or(u32::MAX);
        let Some(best) = region::heaviest_consistent_point(&forced, res) else {
            continue;
        };
        let w: u64 = best.satisfied.iter().map(|&j| discs[j].weight as u64).sum();
        if best.satisfied.contains(&i) && w >= first_w {
            let against: Vec<usize> = first
                .iter()
                .copied()
                .filter(|&j| {
                    distance_km(discs[i].center, discs[j].center)
                        > discs[i].max_km + discs[j].max_km
                })
                .collect();
            out.push((i, against));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sphere::destination;
    use h3o::Resolution;

    fn ring(center: LatLon, n: usize, dist: f64, radius: f64) -> Vec<Constraint> {
        (0..n)
            .map(|i| {
                Constraint::disc(
                    destination(center, i as f64 * 360.0 / n as f64, dist),
                    radius,
                )
            })
            .collect()
    }

    #[test]
    fn one_misplaced_landmark_is_named_not_anycast() {
        let seoul = LatLon::new(37.57, 126.98);
        let mut discs = ring(seoul, 8, 800.0, 1000.0);
        // Declared in Paris, but answers in 5 ms: it is not where it says.
        discs.push(Constraint::disc(LatLon::new(48.86, 2.35), 500.0));
        let a = analyze(&discs, Resolution::Four);
        assert!(!a.anycast);
        assert_eq!(a.groups[0].members.len(), 8);
        assert_eq!(a.outliers.len(), 1);
        assert_eq!(a.outliers[0].0, 8);
        assert!(a.outliers[0].1 > 7000.0, "{:?}", a.outliers);
        assert!(a.ties.is_empty(), "8 landmarks against 1 is no tie");
    }

    #[test]
    fn two_contradicting_landmarks_and_no_third_is_a_tie_not_a_blame() {
        // Paris and Madrid, each within 300 km of the target: impossible together.
        let par = Constraint::disc(LatLon::new(48.86, 2.35), 300.0);
        let mad = Constraint::disc(LatLon::new(40.42, -3.70), 300.0);
        let a = analyze(&[par, mad], Resolution::Four);
        assert!(!a.anycast);
        assert_eq!(a.outliers.len(), 1);
        let out = a.outliers[0].0;
        assert_eq!(a.ties, vec![(out, vec![1 - out])]);
        // A third landmark that meets both discs cannot break the tie either.
        let bor = Constraint::disc(LatLon::new(44.84, -0.58), 700.0);
        let a = analyze(&[par, mad, bor], Resolution::Four);
        assert_eq!(a.ties.len(), 1, "{:?}", a.ties);
        // One that sides with Paris (meets Paris's disc only) does: Madrid is blamed.
        let lon = Constraint::disc(LatLon::new(51.5, -0.12), 600.0);
        let a = analyze(&[par, mad, lon], Resolution::Four);
        assert_eq!(a.outliers.iter().map(|o| o.0).collect::<Vec<_>>(), vec![1]);
        assert!(a.ties.is_empty(), "{:?}", a.ties);
    }

    #[test]
    fn two_disjoint_groups_are_anycast() {
        let mut discs = ring(LatLon::new(50.1, 8.7), 6, 300.0, 500.0);
        discs.extend(ring(LatLon::new(-33.9, 151.2), 5, 300.0, 500.0));
        let a = analyze(&discs, Resolution::Four);
        assert!(a.anycast);
        assert_eq!(a.groups[0].members.len(), 6);
        assert_eq!(a.groups[1].members.len(), 5);
        assert!(a.outliers.is_empty());
    }

    #[test]
    fn consistent_discs_form_one_group() {
        let discs = ring(LatLon::new(-18.14, 178.44), 5, 1000.0, 1200.0);
        let a = analyze(&discs, Resolution::Four);
        assert_eq!(a.groups.len(), 1);
        assert!(!a.anycast && a.outliers.is_empty());
        assert!(distance_km(a.groups[0].point, LatLon::new(-18.14, 178.44)) < 300.0);
    }

    #[test]
    fn three_colluders_make_a_small_split_a_real_site_does_not() {
        // Eight honest landmarks around Rome with loose discs; three probes near Oslo
        // report 1 ms (100 km discs): together a consistent group, disjoint from Rome.
        let rome = LatLon::new(41.9, 12.5);
        let oslo = LatLon::new(59.91, 10.75);
        let mut discs = ring(rome, 8, 600.0, 900.0);
        discs.extend(ring(oslo, 3, 30.0, 100.0));
        let a = analyze(&discs, Resolution::Four);
        assert!(a.anycast, "the split is there");
        assert_eq!(a.groups[1].members, vec![8, 9, 10]);
        assert_eq!(small_split(&discs, Resolution::Four, &a), Some(1));
        // A real second site seen by eight landmarks survives leaving any two out.
        let mut discs = ring(rome, 8, 600.0, 900.0);
        discs.extend(ring(oslo, 8, 30.0, 100.0));
        let a = analyze(&discs, Resolution::Four);
        assert!(a.anycast);
        assert_eq!(small_split(&discs, Resolution::Four, &a), None);
        // No split, nothing to suspect.
        let discs = ring(rome, 8, 600.0, 900.0);
        let a = analyze(&discs, Resolution::Four);
        assert_eq!(small_split(&discs, Resolution::Four, &a), None);
    }
}
