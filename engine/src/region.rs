//! Regions on the sphere as sets of H3 cells, refined only where a constraint's boundary
//! crosses them.
//!
//! A [`Constraint`] says "the target is between `min` and `max` km of this point" (a disc,
//! or an annulus for Octant-style negative constraints). Every cell of a hierarchical H3
//! grid is classified against each constraint using the cell's centre and a bound on its
//! circumradius: wholly inside, wholly outside, or crossed by the boundary. Only crossed
//! cells are refined, and a child only re-tests the constraints its parent was crossed by.
//! At the finest resolution a cell belongs to the region when its centre does.
//!
//! Everything is computed with unit vectors on the sphere, so the antimeridian, the poles
//! and discs up to the whole sphere need no special case.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::OnceLock;

use h3o::{CellIndex, LatLng, Resolution};

use crate::sphere::{km_to_rad, LatLon, EARTH_RADIUS_KM, V3};

/// "The target lies between `min_km` and `max_km` of `center`", with a weight used when
/// constraints contradict each other and the heaviest consistent set is searched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constraint {
    pub center: LatLon,
    /// Upper bound on the distance, km (≥ half the circumference: no upper bound).
    pub max_km: f64,
    /// Lower bound on the distance, km (0: none).
    pub min_km: f64,
    /// Weight in the search for the heaviest consistent set.
    pub weight: u32,
}

impl Constraint {
    /// A disc of radius `max_km` around `center`, weight 1.
    pub fn disc(center: LatLon, max_km: f64) -> Self {
        Self {
            center,
            max_km,
            min_km: 0.0,
            weight: 1,
        }
    }

    /// True when `p` satisfies the constraint (exact, not discretised).
    pub fn contains(&self, p: LatLon) -> bool {
        self.contains_vec(p.to_vec())
    }

    /// [`Constraint::contains`] for the unit vector `pv` of a point (`LatLon::to_vec`),
    /// which a caller testing one point against many constraints computes once. The same
    /// computation as `distance_km(center, p)`, so the same answer.
    pub fn contains_vec(&self, pv: crate::sphere::V3) -> bool {
        let d = self.center.to_vec().angle(pv) * crate::sphere::EARTH_RADIUS_KM;
        d <= self.max_km && d >= self.min_km
    }
}

/// Bound on the angular circumradius of any H3 cell at `res` (centre to farthest vertex),
/// radians. Checked against real cells, pentagons included, by a unit test.
pub fn circumradius_rad(res: Resolution) -> f64 {
    CIRCUMRADIUS_FACTOR * res.edge_length_rads()
}
const CIRCUMRADIUS_FACTOR: f64 = 1.9;

/// How a cell relates to one constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Inside,
    Outside,
    Crossed,
}

/// Constraints prepared for fast classification: dot-product thresholds per resolution.
pub(crate) struct Prepared {
    centers: Vec<V3>,
    weights: Vec<u32>,
    /// cos(max), cos(min): point test is `dot >= cos_max && dot <= cos_min`.
    cos_max: Vec<f64>,
    cos_min: Vec<f64>,
    /// Per resolution, per constraint: [inside_max, outside_max, inside_min, outside_min].
    thresholds: Vec<Vec<[f64; 4]>>,
    max_res: Resolution,
}

impl Prepared {
    pub(crate) fn new(cs: &[Constraint], max_res: Resolution) -> Self {
        let res_count = u8::from(max_res) as usize + 1;
        let mut thresholds = vec![Vec::with_capacity(cs.len()); res_count];
        for (r, th) in thresholds.iter_mut().enumerate() {
            let rho = circumradius_rad(Resolution::try_from(r as u8).expect("resolution ≤ 15"));
            for c in cs {
                let (mx, mn) = (km_to_rad(c.max_km), km_to_rad(c.min_km));
                let pi = std::f64::consts::PI;
                th.push([
                    // fully within max: d + rho <= mx
                    if mx - rho >= 0.0 {
                        (mx - rho).cos()
                    } else {
                        2.0
                    },
                    // fully beyond max: d - rho > mx
                    if mx + rho < pi {
                        (mx + rho).cos()
                    } else {
                        -2.0
                    },
                    // fully beyond min: d - rho >= mn
                    if mn <= 0.0 {
                        2.0
                    } else if mn + rho <= pi {
                        (mn + rho).cos()
                    } else {
                        -2.0
                    },
                    // fully within min (violated): d + rho < mn
                    if mn - rho > 0.0 {
                        (mn - rho).cos()
                    } else {
                        2.0
                    },
                ]);
            }
        }
        Self {
            centers: cs.iter().map(|c| c.center.to_vec()).collect(),
            weights: cs.iter().map(|c| c.weight).collect(),
            cos_max: cs.iter().map(|c| km_to_rad(c.max_km).cos()).collect(),
            cos_min: cs
                .iter()
                .map(|c| {
                    if c.min_km <= 0.0 {
                        2.0
                    } else {
                        km_to_rad(c.min_km).cos()
                    }
                })
                .collect(),
            thresholds,
            max_res,
        }
    }

    #[inline]
    fn classify(&self, i: usize, res: usize, center: V3) -> Class {
        let dot = center.dot(self.centers[i]);
        let [in_max, out_max, in_min, out_min] = self.thresholds[res][i];
        if dot < out_max || dot > out_min {
            Class::Outside
        } else if dot >= in_max && dot <= in_min {
            Class::Inside
        } else {
            Class::Crossed
        }
    }

    #[inline]
    fn point_in(&self, i: usize, p: V3) -> bool {
        let dot = p.dot(self.centers[i]);
        dot >= self.cos_max[i] && dot <= self.cos_min[i]
    }
}

fn cell_vec(cell: CellIndex) -> V3 {
    let ll = LatLng::from(cell);
    LatLon::new(ll.lat(), ll.lng()).to_vec()
}

/// A region: H3 cells of mixed resolutions (coarse inside, fine at the boundary).
#[derive(Debug, Clone, Default)]
pub struct Region {
    cells: Vec<CellIndex>,
    /// Finest resolution used.
    max_res: Option<Resolution>,
    /// The area once computed, km². h3o's exact cell area is the costliest step of a
    /// solve, which needs the region's area for its centroid, its time-zone samples and
    /// its outline; the cells never change after [`Region::new`].
    area_km2: OnceLock<f64>,
}

impl Region {
    /// The region made of `cells`, the finest at `max_res`.
    pub fn new(cells: Vec<CellIndex>, max_res: Option<Resolution>) -> Region {
        Region {
            cells,
            max_res,
            area_km2: OnceLock::new(),
        }
    }

    /// True when no cell is in the region.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Area, km² (computed once).
    pub fn area_km2(&self) -> f64 {
        *self
            .area_km2
            .get_or_init(|| self.cells.iter().map(|c| c.area_km2()).sum())
    }

    /// Area-weighted spherical centroid (normalised mean of unit vectors); `None` when the
    /// region is empty or symmetric about the Earth's centre (e.g. the whole sphere).
    pub fn centroid(&self) -> Option<LatLon> {
        self.area_and_centroid().1
    }

    /// [`Region::area_km2`] and [`Region::centroid`] in one pass: each cell's area is
    /// computed once (h3o's exact cell area is the costliest step of a solve). The same
    /// sums in the same order, so the same values as the two methods.
    pub fn area_and_centroid(&self) -> (f64, Option<LatLon>) {
        let mut s = V3([0.0; 3]);
        let mut total = 0.0;
        for &c in &self.cells {
            let a = c.area_km2();
            s = s.add_scaled(cell_vec(c), a);
            total += a;
        }
        let _ = self.area_km2.set(total);
        if total <= 0.0 || s.norm() < 1e-6 * total {
            return (total, None);
        }
        (total, s.to_latlon())
    }

    /// Radius of a circle around `p` that holds the whole region, km.
    pub fn radius_from_km(&self, p: LatLon) -> f64 {
        let pv = p.to_vec();
        self.cells
            .iter()
            .map(|&c| (pv.angle(cell_vec(c)) + circumradius_rad(c.resolution())) * EARTH_RADIUS_KM)
            .fold(0.0, f64::max)
            .min(crate::sphere::MAX_DISTANCE_KM)
    }

    /// The region at one resolution `res`: coarser cells are split into their children at
    /// `res`, finer ones replaced by their parent (which over-covers by less than a cell).
    pub fn at_resolution(&self, res: Resolution) -> Vec<CellIndex> {
        let mut out: Vec<CellIndex> = Vec::new();
        for &c in &self.cells {
            if c.resolution() <= res {
                out.extend(c.children(res));
            } else if let Some(p) = c.parent(res) {
                out.push(p);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The coarsest-to-finest resolution at which the region has about `max_cells` cells
    /// or fewer (never finer than the region's own finest resolution).
    pub fn resolution_for(&self, max_cells: f64) -> Resolution {
        let area = self.area_km2();
        let finest = self.max_res.unwrap_or(Resolution::Zero);
        let mut best = Resolution::Zero;
        for r in Resolution::range(Resolution::Zero, finest) {
            if area / r.area_km2() <= max_cells {
                best = r;
            } else {
                break;
            }
        }
        best
    }

    /// Sample points spread over the region with their share of its area (≤ about
    /// `max_samples` points).
    pub fn samples(&self, max_samples: f64) -> Vec<(LatLon, f64)> {
        let res = self.resolution_for(max_samples);
        let cells = self.at_resolution(res);
        // Each cell's area once (it is costly), then the same sum as before.
        let areas: Vec<f64> = cells.iter().map(|c| c.area_km2()).collect();
        let total: f64 = areas.iter().sum();
        cells
            .iter()
            .zip(areas)
            .map(|(&c, a)| {
                let ll = LatLng::from(c);
                (LatLon::new(ll.lat(), ll.lng()), a / total)
            })
            .collect()
    }

    /// The region's outline as a GeoJSON geometry (`MultiPolygon`, degrees), dissolved from
    /// at most about `max_cells` cells.
    pub fn geojson(&self, max_cells: f64) -> serde_json::Value {
        serde_json::Value::Object(geojson::JsonObject::from(&self.outline(max_cells)))
    }

    /// The region's outline as a typed GeoJSON `MultiPolygon` (positions `[lon, lat]` in
    /// degrees, rounded to 6 decimals), dissolved from at most about `max_cells` cells; no
    /// polygon for an empty region.
    pub fn outline(&self, max_cells: f64) -> geojson::Geometry {
        let multi = |polys: Vec<Vec<Vec<Vec<f64>>>>| {
            geojson::Geometry::new(geojson::Value::MultiPolygon(polys))
        };
        if self.cells.is_empty() {
            return multi(Vec::new());
        }
        let res = self.resolution_for(max_cells);
        let cells = self.at_resolution(res);
        let solvent = h3o::geom::SolventBuilder::new().build();
        let polys = match solvent.dissolve(cells.iter().copied()) {
            Ok(mp) => {
                mp.0.iter()
                    .map(|poly| {
                        let ring = |ls: &geo_types::LineString<f64>| -> Vec<Vec<f64>> {
                            ls.0.iter()
                                .map(|c| vec![round6(c.x), round6(c.y)])
                                .collect()
                        };
                        let mut rings = vec![ring(poly.exterior())];
                        rings.extend(poly.interiors().iter().map(ring));
                        rings
                    })
                    .collect()
            }
            // Dissolution can fail on exotic cell sets; fall back to one polygon per cell.
            Err(_) => cells
                .iter()
                .map(|c| {
                    let mut ring: Vec<Vec<f64>> = c
                        .boundary()
                        .iter()
                        .map(|ll| vec![round6(ll.lng()), round6(ll.lat())])
                        .collect();
                    if let Some(first) = ring.first().cloned() {
                        ring.push(first);
                    }
                    vec![ring]
                })
                .collect(),
        };
        multi(polys)
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Finest resolution worth using for constraints whose smallest upper bound is
/// `min_max_km`: cells about an eighth of that across, between resolutions 2 and 7.
pub fn resolution_for_radius(min_max_km: f64) -> Resolution {
    let mut res = Resolution::Two;
    for r in Resolution::range(Resolution::Two, Resolution::Seven) {
        res = r;
        if r.edge_length_km() <= min_max_km / 8.0 {
            break;
        }
    }
    res
}

/// The cells where **every** constraint holds.
pub fn intersect(cs: &[Constraint], max_res: Resolution) -> Region {
    let all: Vec<usize> = (0..cs.len()).collect();
    intersect_subset(&Prepared::new(cs, max_res), &all)
}

/// The cells where every constraint in `subset` (indices into the prepared set) holds.
pub(crate) fn intersect_subset(p: &Prepared, subset: &[usize]) -> Region {
    intersect_tolerant(p, subset, 0)
}

/// The cells where the constraints of `subset` that do **not** hold weigh at most
/// `tolerance` in total (0: every constraint holds). A constraint heavier than `tolerance`
/// is therefore hard.
pub(crate) fn intersect_tolerant(p: &Prepared, subset: &[usize], tolerance: u64) -> Region {
    let mut out = Vec::new();
    let mut stack: Vec<(CellIndex, u64, Vec<usize>)> = CellIndex::base_cells()
        .map(|c| (c, 0, subset.to_vec()))
        .collect();
    let max_res = u8::from(p.max_res) as usize;
    while let Some((cell, violated, active)) = stack.pop() {
        let res = u8::from(cell.resolution()) as usize;
        let v = cell_vec(cell);
        if res == max_res {
            let miss: u64 = active
                .iter()
                .filter(|&&i| !p.point_in(i, v))
                .map(|&i| p.weights[i] as u64)
                .sum();
            if violated + miss <= tolerance {
                out.push(cell);
            }
            continue;
        }
        let mut crossed = Vec::with_capacity(active.len());
        let mut crossed_w = 0u64;
        let mut violated = violated;
        for &i in &active {
            match p.classify(i, res, v) {
                Class::Outside => {
                    violated += p.weights[i] as u64;
                    if violated > tolerance {
                        break;
                    }
                }
                Class::Crossed => {
                    crossed.push(i);
                    crossed_w += p.weights[i] as u64;
                }
                Class::Inside => {}
            }
        }
        if violated > tolerance {
            continue;
        }
        if violated + crossed_w <= tolerance {
            out.push(cell);
            continue;
        }
        let child_res = Resolution::try_from(res as u8 + 1).expect("below max resolution");
        for child in cell.children(child_res) {
            stack.push((child, violated, crossed.clone()));
        }
    }
    Region::new(out, Some(p.max_res))
}

/// The point found with the heaviest set of satisfied constraints.
#[derive(Debug, Clone)]
pub struct BestPoint {
    pub point: LatLon,
    /// Total weight of the constraints satisfied at `point`.
    pub weight: u64,
    /// Indices (into the input) of the constraints satisfied at `point`.
    pub satisfied: Vec<usize>,
}

struct Node {
    upper: u64,
    sure: u64,
    cell: CellIndex,
    active: Vec<usize>,
}
impl PartialEq for Node {
    fn eq(&self, o: &Self) -> bool {
        self.upper == o.upper
    }
}
impl Eq for Node {}
impl PartialOrd for Node {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Node {
    fn cmp(&self, o: &Self) -> Ordering {
        self.upper
            .cmp(&o.upper)
            .then(self.cell.resolution().cmp(&o.cell.resolution()))
    }
}

/// Branch and bound over the H3 hierarchy for the point that satisfies the heaviest set of
/// constraints among `subset` (the largest consistent set when all weights are 1).
/// `None` only when `subset` is empty.
pub(crate) fn heaviest_point(p: &Prepared, subset: &[usize]) -> Option<BestPoint> {
    if subset.is_empty() {
        return None;
    }
    let max_res = u8::from(p.max_res) as usize;
    let mut heap = BinaryHeap::new();
    let total: u64 = subset.iter().map(|&i| p.weights[i] as u64).sum();
    for c in CellIndex::base_cells() {
        heap.push(Node {
            upper: total,
            sure: 0,
            cell: c,
            active: subset.to_vec(),
        });
    }
    let mut best: Option<(u64, V3)> = None;
    while let Some(node) = heap.pop() {
        if let Some((w, _)) = best {
            if node.upper <= w {
                break;
            }
        }
        let res = u8::from(node.cell.resolution()) as usize;
        let v = cell_vec(node.cell);
        // The centre is a witness: its exact weight is a lower bound on the optimum.
        let w_centre = node.sure
            + node
                .active
                .iter()
                .filter(|&&i| p.point_in(i, v))
                .map(|&i| p.weights[i] as u64)
                .sum::<u64>();
        if best.is_none_or(|(w, _)| w_centre > w) {
            best = Some((w_centre, v));
        }
        if res == max_res {
            continue;
        }
        let child_res = Resolution::try_from(res as u8 + 1).expect("below max resolution");
        let best_w = best.map_or(0, |b| b.0);
        for child in node.cell.children(child_res) {
            let cv = cell_vec(child);
            let mut sure = node.sure;
            let mut crossed = Vec::with_capacity(node.active.len());
            let mut crossed_w = 0u64;
            for &i in &node.active {
                match p.classify(i, res + 1, cv) {
                    Class::Inside => sure += p.weights[i] as u64,
                    Class::Crossed => {
                        crossed.push(i);
                        crossed_w += p.weights[i] as u64;
                    }
                    Class::Outside => {}
                }
            }
            let upper = sure + crossed_w;
            if upper > best_w {
                heap.push(Node {
                    upper,
                    sure,
                    cell: child,
                    active: crossed,
                });
            }
        }
    }
    let (weight, v) = best?;
    let satisfied = subset
        .iter()
        .copied()
        .filter(|&i| p.point_in(i, v))
        .collect();
    Some(BestPoint {
        point: v.to_latlon()?,
        weight,
        satisfied,
    })
}

/// The point satisfying the heaviest set of constraints, over all of `cs`.
pub fn heaviest_consistent_point(cs: &[Constraint], max_res: Resolution) -> Option<BestPoint> {
    let all: Vec<usize> = (0..cs.len()).collect();
    heaviest_point(&Prepared::new(cs, max_res), &all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sphere::{destination, distance_km};

    #[test]
    fn circumradius_bound_holds_for_real_cells() {
        // Every base cell (12 pentagons included) and a spread of descendants at each
        // resolution: no vertex is farther from its cell's centre than the bound.
        for res in Resolution::range(Resolution::Zero, Resolution::Nine) {
            let rho = circumradius_rad(res) * EARTH_RADIUS_KM;
            for base in CellIndex::base_cells() {
                let cells: Vec<CellIndex> = if res == Resolution::Zero {
                    vec![base]
                } else {
                    // The centre child and the first and last children reach the base
                    // cell's edges and its pentagon distortion.
                    let n = base.children_count(res);
                    [0, n / 3, n / 2, n - 1]
                        .iter()
                        .filter_map(|&k| base.child_at(k, res))
                        .collect()
                };
                for c in cells {
                    let ll = LatLng::from(c);
                    let centre = LatLon::new(ll.lat(), ll.lng());
                    for v in c.boundary().iter() {
                        let d = distance_km(centre, LatLon::new(v.lat(), v.lng()));
                        assert!(
                            d <= rho,
                            "res {res:?} cell {c}: vertex at {d} km > bound {rho} km"
                        );
                    }
                }
            }
        }
    }

    fn area_of_cap_km2(r_km: f64) -> f64 {
        2.0 * std::f64::consts::PI
            * EARTH_RADIUS_KM
            * EARTH_RADIUS_KM
            * (1.0 - (r_km / EARTH_RADIUS_KM).cos())
    }

    #[test]
    fn single_disc_area_and_centroid() {
        let c = LatLon::new(19.07, 72.88); // Mumbai
        let r = intersect(&[Constraint::disc(c, 500.0)], Resolution::Five);
        let a = r.area_km2();
        let expect = area_of_cap_km2(500.0);
        assert!((a - expect).abs() / expect < 0.03, "{a} vs {expect}");
        assert!(distance_km(r.centroid().unwrap(), c) < 5.0);
        let radius = r.radius_from_km(c);
        assert!((500.0..530.0).contains(&radius), "{radius}");
    }

    #[test]
    fn intersection_across_the_antimeridian() {
        // Two discs whose lens contains Suva, Fiji (178.4°E): the region must be there, not
        // mirrored across the map.
        let suva = LatLon::new(-18.14, 178.44);
        let a = destination(suva, 270.0, 600.0);
        let b = destination(suva, 90.0, 600.0);
        let r = intersect(
            &[Constraint::disc(a, 800.0), Constraint::disc(b, 800.0)],
            Resolution::Five,
        );
        let c = r.centroid().unwrap();
        assert!(distance_km(c, suva) < 50.0, "centroid {c:?}");
        assert!(
            b.lon < 0.0 && a.lon > 0.0,
            "the discs straddle the antimeridian"
        );
    }

    #[test]
    fn disc_around_the_pole() {
        let north = LatLon::new(89.0, 45.0);
        let r = intersect(&[Constraint::disc(north, 1500.0)], Resolution::Four);
        let c = r.centroid().unwrap();
        assert!(distance_km(c, north) < 20.0, "{c:?}");
        let expect = area_of_cap_km2(1500.0);
        assert!((r.area_km2() - expect).abs() / expect < 0.03);
        // The region contains the pole itself.
        assert!(r.cells.iter().any(|&cell| {
            let pole = LatLng::new(90.0, 0.0).unwrap().to_cell(cell.resolution());
            pole == cell
        }));
    }

    #[test]
    fn hemisphere_sized_and_whole_sphere_discs() {
        let p = LatLon::new(10.0, 20.0);
        let r = intersect(&[Constraint::disc(p, 10_007.5)], Resolution::Three);
        let expect = area_of_cap_km2(10_007.5);
        assert!(
            (r.area_km2() - expect).abs() / expect < 0.02,
            "{}",
            r.area_km2()
        );
        assert!(distance_km(r.centroid().unwrap(), p) < 50.0);
        let whole = intersect(&[Constraint::disc(p, 20_000.0)], Resolution::Two);
        let earth = 4.0 * std::f64::consts::PI * EARTH_RADIUS_KM * EARTH_RADIUS_KM;
        assert!((whole.area_km2() - earth).abs() / earth < 0.01);
    }

    #[test]
    fn tiny_disc_is_found() {
        let p = LatLon::new(-33.87, 151.21);
        let r = intersect(&[Constraint::disc(p, 12.0)], resolution_for_radius(12.0));
        assert!(!r.is_empty());
        assert!(distance_km(r.centroid().unwrap(), p) < 3.0);
        assert!(r.radius_from_km(p) < 20.0);
    }

    #[test]
    fn disjoint_discs_give_empty_intersection_and_heaviest_set_names_them() {
        let paris = LatLon::new(48.86, 2.35);
        let tokyo = LatLon::new(35.68, 139.69);
        let osaka = LatLon::new(34.69, 135.50);
        let cs = [
            Constraint::disc(paris, 300.0),
            Constraint::disc(tokyo, 600.0),
            Constraint::disc(osaka, 600.0),
        ];
        assert!(intersect(&cs, Resolution::Five).is_empty());
        let best = heaviest_consistent_point(&cs, Resolution::Five).unwrap();
        assert_eq!(best.satisfied, vec![1, 2]);
        assert_eq!(best.weight, 2);
    }

    #[test]
    fn tolerant_intersection_allows_k_violations() {
        let paris = LatLon::new(48.86, 2.35);
        let tokyo = LatLon::new(35.68, 139.69);
        let cs = [
            Constraint::disc(paris, 500.0),
            Constraint::disc(tokyo, 500.0),
        ];
        let p = Prepared::new(&cs, Resolution::Four);
        assert!(intersect_tolerant(&p, &[0, 1], 0).is_empty());
        let union = intersect_tolerant(&p, &[0, 1], 1);
        let expect = 2.0 * area_of_cap_km2(500.0);
        assert!((union.area_km2() - expect).abs() / expect < 0.03);
        // A heavy constraint stays hard.
        let cs = [
            Constraint::disc(paris, 500.0),
            Constraint {
                weight: 2,
                ..Constraint::disc(tokyo, 500.0)
            },
        ];
        let p = Prepared::new(&cs, Resolution::Four);
        let r = intersect_tolerant(&p, &[0, 1], 1);
        assert!(distance_km(r.centroid().unwrap(), tokyo) < 10.0);
    }

    #[test]
    fn annulus_excludes_the_hole() {
        let p = LatLon::new(0.0, 0.0);
        let c = Constraint {
            center: p,
            max_km: 2000.0,
            min_km: 1000.0,
            weight: 1,
        };
        let r = intersect(&[c], Resolution::Four);
        let expect = area_of_cap_km2(2000.0) - area_of_cap_km2(1000.0);
        assert!((r.area_km2() - expect).abs() / expect < 0.03);
        assert!(!c.contains(p));
    }

    #[test]
    fn geojson_outline_is_a_multipolygon() {
        let r = intersect(
            &[Constraint::disc(LatLon::new(40.0, -3.7), 300.0)],
            Resolution::Five,
        );
        let g = r.geojson(2000.0);
        assert_eq!(g["type"], "MultiPolygon");
        assert!(!g["coordinates"].as_array().unwrap().is_empty());
    }
    /// The outline as this module wrote it with `json!` before the `geojson` crate (the
    /// reference: the output must not change).
    fn old_geojson(r: &Region, max_cells: f64) -> serde_json::Value {
        if r.cells.is_empty() {
            return serde_json::json!({"type": "MultiPolygon", "coordinates": []});
        }
        let res = r.resolution_for(max_cells);
        let cells = r.at_resolution(res);
        let solvent = h3o::geom::SolventBuilder::new().build();
        let polys: Vec<serde_json::Value> = match solvent.dissolve(cells.iter().copied()) {
            Ok(mp) => {
                mp.0.iter()
                    .map(|poly| {
                        let ring = |ls: &geo_types::LineString<f64>| -> Vec<[f64; 2]> {
                            ls.0.iter().map(|c| [round6(c.x), round6(c.y)]).collect()
                        };
                        let mut rings = vec![ring(poly.exterior())];
                        rings.extend(poly.interiors().iter().map(ring));
                        serde_json::json!(rings)
                    })
                    .collect()
            }
            // Dissolution can fail on exotic cell sets; fall back to one polygon per cell.
            Err(_) => cells
                .iter()
                .map(|c| {
                    let mut ring: Vec<[f64; 2]> = c
                        .boundary()
                        .iter()
                        .map(|ll| [round6(ll.lng()), round6(ll.lat())])
                        .collect();
                    if let Some(&first) = ring.first() {
                        ring.push(first);
                    }
                    serde_json::json!([ring])
                })
                .collect(),
        };
        serde_json::json!({"type": "MultiPolygon", "coordinates": polys})
    }

    #[test]
    fn geojson_outline_is_unchanged() {
        for (lat, lon, km) in [
            (40.0, -3.7, 300.0),
            (-17.7, 178.4, 900.0),
            (80.0, 0.0, 1500.0),
        ] {
            let r = intersect(
                &[Constraint::disc(LatLon::new(lat, lon), km)],
                Resolution::Four,
            );
            assert_eq!(
                serde_json::to_string(&r.geojson(2000.0)).unwrap(),
                serde_json::to_string(&old_geojson(&r, 2000.0)).unwrap()
            );
        }
        let empty = Region::new(Vec::new(), None);
        assert_eq!(empty.geojson(10.0), old_geojson(&empty, 10.0));
    }
}
