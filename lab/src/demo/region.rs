//! Geometry of the answers: is a true position inside a reported region outline?
use geo::{Contains, MultiPolygon, Point, Polygon};
use serde_json::Value;

use crate::geo::LatLon;

/// Whether the GeoJSON Polygon, MultiPolygon or GeometryCollection `region` contains `p`
/// (`geo`'s planar [`Contains`] on lon/lat; anything else, null or malformed GeoJSON
/// contains nothing). A region whose outline runs past ±180° (the engine writes an outline
/// crossing the antimeridian with longitudes beyond 180) is also tested with the point's
/// longitude shifted by ±360°. A point exactly on the outline is outside.
pub fn region_contains(region: &Value, p: LatLon) -> bool {
    let Ok(g) = geojson::Geometry::try_from(region.clone()) else {
        return false;
    };
    let mut polys = Vec::new();
    polygons(&g.value, &mut polys);
    let shape = MultiPolygon(polys);
    [p.lon, p.lon + 360.0, p.lon - 360.0]
        .iter()
        .any(|&x| shape.contains(&Point::new(x, p.lat)))
}

/// The polygons of a GeoJSON geometry (nested collections included), in lon/lat degrees.
fn polygons(g: &geojson::Value, out: &mut Vec<Polygon<f64>>) {
    match g {
        geojson::Value::Polygon(_) => out.extend(Polygon::try_from(g)),
        geojson::Value::MultiPolygon(_) => {
            out.extend(MultiPolygon::try_from(g).into_iter().flat_map(|m| m.0))
        }
        geojson::Value::GeometryCollection(gs) => {
            for g in gs {
                polygons(&g.value, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoloc_engine::region::{intersect, Constraint};
    use h3o::Resolution;
    use serde_json::json;

    /// The ray casting the demo used before `geo`'s `Contains` (the reference the new code
    /// must agree with).
    fn ray_casting(region: &Value, p: LatLon) -> bool {
        fn ring(ring: &[Vec<f64>], x: f64, y: f64) -> bool {
            let pts: Vec<(f64, f64)> = ring.iter().map(|c| (c[0], c[1])).collect();
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
        let Ok(geojson::Geometry {
            value: geojson::Value::MultiPolygon(polys),
            ..
        }) = geojson::Geometry::try_from(region.clone())
        else {
            return false;
        };
        [p.lon, p.lon + 360.0, p.lon - 360.0].iter().any(|&x| {
            polys.iter().any(|rings| {
                ring(&rings[0], x, p.lat) && !rings[1..].iter().any(|h| ring(h, x, p.lat))
            })
        })
    }

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
        let west = json!({"type": "MultiPolygon", "coordinates": [[[[-190.0, -20.0], [-170.0, -20.0], [-170.0, -10.0], [-190.0, -10.0], [-190.0, -20.0]]]]});
        assert!(
            region_contains(
                &west,
                LatLon {
                    lat: -15.0,
                    lon: 175.0
                }
            ),
            "across the antimeridian, written west of -180"
        );
        let holed = json!({"type": "Polygon", "coordinates": [
            [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]],
            [[4.0, 4.0], [6.0, 4.0], [6.0, 6.0], [4.0, 6.0], [4.0, 4.0]]]});
        assert!(
            !region_contains(&holed, LatLon { lat: 5.0, lon: 5.0 }),
            "in the hole"
        );
        assert!(region_contains(&holed, LatLon { lat: 2.0, lon: 2.0 }));
        let collection = json!({"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": [5.0, 5.0]}, square]});
        assert!(region_contains(&collection, LatLon { lat: 5.0, lon: 5.0 }));
        let point = json!({"type": "Point", "coordinates": [5.0, 5.0]});
        assert!(
            !region_contains(&point, LatLon { lat: 5.0, lon: 5.0 }),
            "a point has no area"
        );
        for bad in [
            Value::Null,
            json!({"type": "MultiPolygon"}),
            json!({"type": "MultiPolygon", "coordinates": [[[[1.0]]]]}),
            json!({"type": "Polygon", "coordinates": []}),
        ] {
            assert!(
                !region_contains(&bad, LatLon { lat: 0.0, lon: 0.0 }),
                "{bad}"
            );
        }
    }

    /// Real outlines from the engine, one of them across the antimeridian (Fiji) and one
    /// around a pole's neighbourhood: `geo`'s `Contains` says what the ray casting said on
    /// a grid of points, and agrees with the disc itself away from the outline's edge.
    #[test]
    fn agrees_with_ray_casting_on_engine_outlines() {
        for (lat, lon, km) in [
            (-17.7, 178.4, 900.0),
            (48.1, 11.6, 600.0),
            (64.1, -21.9, 1500.0),
        ] {
            let c = Constraint::disc(geoloc_engine::LatLon::new(lat, lon), km);
            let region = intersect(&[c], Resolution::Four).geojson(3000.0);
            // Across the antimeridian the engine's outline is not a faithful planar
            // polygon (a point 1,875 km from Fiji is inside a 900 km disc's outline, for
            // the old ray casting as for `geo`): only agreement is checked there.
            let faithful = (lon + km / 111.0 / lat.to_radians().cos()).abs() < 180.0;
            let (mut inside, mut checked) = (0, 0);
            for i in -40..=40 {
                for j in -40..=40 {
                    let p = LatLon {
                        lat: (lat + f64::from(i) * 0.4).clamp(-89.9, 89.9),
                        lon: lon + f64::from(j) * 0.4,
                    };
                    let p = LatLon {
                        lon: if p.lon > 180.0 { p.lon - 360.0 } else { p.lon },
                        ..p
                    };
                    let new = region_contains(&region, p);
                    assert_eq!(new, ray_casting(&region, p), "{p:?} around ({lat}, {lon})");
                    let d = geoloc_engine::distance_km(
                        geoloc_engine::LatLon::new(lat, lon),
                        geoloc_engine::LatLon::new(p.lat, p.lon),
                    );
                    if faithful && (d - km).abs() > 100.0 {
                        assert_eq!(new, d < km, "{p:?}: {d:.0} km from ({lat}, {lon})");
                        checked += 1;
                    }
                    inside += usize::from(new);
                }
            }
            assert!(inside > 100, "{inside} inside");
            assert!(!faithful || checked > 1000, "{checked} checked");
        }
    }
}
