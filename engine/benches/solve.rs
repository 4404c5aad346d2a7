//! Solver benchmark: one target with 250 landmarks spread over the world, solved with
//! enrichment (time zone, time zone shares, place) and the region's outline.
//!
//! Run: `cargo bench -p geoloc-engine --bench solve`
use criterion::{criterion_group, criterion_main, Criterion};
use geoloc_engine::sphere::destination;
use geoloc_engine::{distance_km, solve, Kind, LatLon, Measurement, Method, SolveOptions};

/// Landmarks on a deterministic quasi-random spread (golden-angle spiral), RTTs from the
/// true distance inflated 1.4–2.4× plus a few ms of access delay, as on real paths.
fn landmarks(target: LatLon, n: usize) -> Vec<Measurement> {
    (0..n)
        .map(|i| {
            let z = 1.0 - 2.0 * (i as f64 + 0.5) / n as f64;
            let lat = z.asin().to_degrees();
            let lon = ((i as f64 * 137.507_764) % 360.0) - 180.0;
            let pos = LatLon::new(lat, lon);
            let inflation = 1.4 + (i % 11) as f64 / 10.0;
            let rtt_ms = distance_km(pos, target) / 99.93 * inflation + 1.0 + (i % 5) as f64;
            Measurement {
                landmark: format!("lm{i}"),
                pos,
                rtt_ms,
                kind: Kind::Echo,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let target = LatLon::new(19.07, 72.88);
    let mut ms = landmarks(target, 249);
    // One landmark close by, as a fleet of 250 usually has.
    let near = destination(target, 40.0, 150.0);
    ms.push(Measurement {
        landmark: "near".into(),
        pos: near,
        rtt_ms: 3.5,
        kind: Kind::Echo,
    });
    geoloc_engine::enrich::enricher(); // load the data outside the measurement
    for method in [Method::Cbg, Method::Bestline] {
        let opts = SolveOptions {
            method,
            at_unix_s: Some(1_767_225_600),
            ..SolveOptions::default()
        };
        c.bench_function(&format!("solve_250_landmarks_{}", method.name()), |b| {
            b.iter(|| solve(std::hint::black_box(&ms), &opts).unwrap())
        });
    }
    let opts = SolveOptions {
        method: Method::Cbg,
        region_geometry: false,
        ..SolveOptions::default()
    };
    c.bench_function("solve_250_landmarks_cbg_no_outline", |b| {
        b.iter(|| solve(&ms, &opts).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
