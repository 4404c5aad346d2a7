//! Geometry of the answers: is a true position inside a reported region outline?
use serde_json::Value;

use crate::geo::LatLon;

/// Point in polygon (ray casting on lon/lat) for a GeoJSON Polygon, MultiPolygon or
/// GeometryCollection (anything else, or null, contains nothing); a region crossing the
/// antimeridian is tested with the point's longitude shifted by 360°.
pub fn region_contains(region: &Value, p: LatLon) -> bool {
    match geojson::Geometry::try_from(region.clone()) {
        Ok(g) => geometry_contains(&g.value, p),
        Err(_) => false,
    }
}

fn geometry_contains(g: &geojson::Value, p: LatLon) -> bool {
    fn ring_contains(ring: &[Vec<f64>], x: f64, y: f64) -> bool {
        let pts: Vec<(f64, f64)> = ring
            .iter()
            .filter_map(|c| Some((*c.first()?, *c.get(1)?)))
            .collect();
        let mut inside = false;
        let n = pts.len();
        for i in 0..n {
            let (xi, yi) = pts[i];
            let (xj, yj) = pts[(i + n - 1) % n];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
        }
        inside
    }
    fn polygon_contains(rings: &[Vec<Vec<f64>>], x: f64, y: f64) -> bool {
        let mut it = rings.iter();
        let Some(outer) = it.next() else { return false };
        ring_contains(outer, x, y) && !it.any(|hole| ring_contains(hole, x, y))
    }
    let polys: Vec<&Vec<Vec<Vec<f64>>>> = match g {
        geojson::Value::Polygon(rings) => vec![rings],
        geojson::Value::MultiPolygon(polys) => polys.iter().collect(),
        geojson::Value::GeometryCollection(gs) => {
            return gs.iter().any(|g| geometry_contains(&g.value, p))
        }
        _ => Vec::new(),
    };
    [p.lon, p.lon + 360.0, p.lon - 360.0]
        .iter()
        .any(|&x| polys.iter().any(|poly| polygon_contains(poly, x, p.lat)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn region_contains_points() {
        let square = json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]]]});
        assert!(region_contains(&square, LatLon { lat: 5.0, lon: 5.0 }));
        assert!(!region_contains(
            &square,
            LatLon {
                lat: 15.0,
                lon: 5.0
            }
        ));
        let multi = json!({"type": "MultiPolygon", "coordinates": [[[[170.0, -20.0], [190.0, -20.0], [190.0, -10.0], [170.0, -10.0], [170.0, -20.0]]]]});
        assert!(
            region_contains(
                &multi,
                LatLon {
                    lat: -15.0,
                    lon: -175.0
                }
            ),
            "across the antimeridian"
        );
        assert!(!region_contains(
            &Value::Null,
            LatLon { lat: 0.0, lon: 0.0 }
        ));
    }
}
