//! A minimal TopoJSON decoder (hand-written: ~60 lines, no crate does just this): the
//! vendored Natural Earth `land-110m.json` of world-atlas 2.0.2 into lon/lat rings, for the
//! map of the audit report. The browser uses the vendored `topojson-client` instead.
use serde::Deserialize;

#[derive(Deserialize)]
struct Topology {
    transform: Transform,
    arcs: Vec<Vec<[f64; 2]>>,
    objects: std::collections::HashMap<String, Object>,
}

#[derive(Deserialize)]
struct Transform {
    scale: [f64; 2],
    translate: [f64; 2],
}

#[derive(Deserialize)]
struct Object {
    #[serde(default)]
    geometries: Vec<Geometry>,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Geometry {
    Polygon {
        arcs: Vec<Vec<i64>>,
    },
    MultiPolygon {
        arcs: Vec<Vec<Vec<i64>>>,
    },
    #[serde(other)]
    Other,
}

/// Every ring (exterior and holes) of object `name`, as (lon, lat) points.
pub fn rings(topojson: &[u8], name: &str) -> Result<Vec<Vec<(f64, f64)>>, String> {
    let t: Topology = serde_json::from_slice(topojson).map_err(|e| e.to_string())?;
    // Arcs are delta-encoded, quantised positions.
    let arcs: Vec<Vec<(f64, f64)>> = t
        .arcs
        .iter()
        .map(|arc| {
            let (mut x, mut y) = (0.0, 0.0);
            arc.iter()
                .map(|d| {
                    x += d[0];
                    y += d[1];
                    (
                        x * t.transform.scale[0] + t.transform.translate[0],
                        y * t.transform.scale[1] + t.transform.translate[1],
                    )
                })
                .collect()
        })
        .collect();
    let ring = |ids: &[i64]| -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = Vec::new();
        for &i in ids {
            // A negative index ~i is arc i reversed.
            let (k, rev) = if i < 0 { (!i, true) } else { (i, false) };
            let Some(a) = usize::try_from(k).ok().and_then(|k| arcs.get(k)) else {
                continue;
            };
            let mut pts = a.clone();
            if rev {
                pts.reverse();
            }
            // Consecutive arcs share their end point.
            let skip = usize::from(!out.is_empty());
            out.extend(pts.into_iter().skip(skip));
        }
        out
    };
    let obj = t
        .objects
        .get(name)
        .ok_or_else(|| format!("no object {name:?}"))?;
    let mut out = Vec::new();
    for g in &obj.geometries {
        match g {
            Geometry::Polygon { arcs } => out.extend(arcs.iter().map(|r| ring(r))),
            Geometry::MultiPolygon { arcs } => out.extend(arcs.iter().flatten().map(|r| ring(r))),
            Geometry::Other => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_vendored_land_outline_decodes() {
        let r = super::rings(crate::assets::LAND_110M, "land").unwrap();
        assert!(r.len() > 100, "{} rings", r.len());
        for ring in &r {
            assert!(ring.len() >= 4);
            for &(lon, lat) in ring {
                assert!((-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat));
            }
            // Rings are closed.
            let (a, b) = (ring[0], ring[ring.len() - 1]);
            assert!(
                (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9,
                "{a:?} {b:?}"
            );
        }
    }
}
