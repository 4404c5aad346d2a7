//! The page and the vendored front-end files, embedded in the binary (no CDN, no Node).
//! Vendored from the npm registry (`npm pack`), built files only, each beside its licence:
//! Leaflet 1.9.4 (BSD-2-Clause), topojson-client 3.1.0 (ISC), world-atlas 2.0.2 (ISC;
//! Natural Earth data, public domain).

/// Natural Earth land outline (world-atlas 2.0.2 `land-110m.json`), for the report's map.
pub const LAND_110M: &[u8] = include_bytes!("../assets/vendor/world-atlas/land-110m.json");

macro_rules! asset {
    ($path:literal, $mime:literal) => {
        (
            $path,
            $mime,
            include_bytes!(concat!("../assets/", $path)) as &[u8],
        )
    };
}

/// Path under `/assets/`, content type, bytes.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!(
        "vendor/leaflet/leaflet.js",
        "text/javascript; charset=utf-8"
    ),
    asset!("vendor/leaflet/leaflet.css", "text/css; charset=utf-8"),
    asset!("vendor/leaflet/LICENSE", "text/plain; charset=utf-8"),
    asset!("vendor/leaflet/images/layers.png", "image/png"),
    asset!("vendor/leaflet/images/layers-2x.png", "image/png"),
    asset!("vendor/leaflet/images/marker-icon.png", "image/png"),
    asset!("vendor/leaflet/images/marker-icon-2x.png", "image/png"),
    asset!("vendor/leaflet/images/marker-shadow.png", "image/png"),
    asset!(
        "vendor/topojson-client/topojson-client.min.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "vendor/topojson-client/LICENSE",
        "text/plain; charset=utf-8"
    ),
    asset!("vendor/world-atlas/countries-110m.json", "application/json"),
    asset!("vendor/world-atlas/LICENSE", "text/plain; charset=utf-8"),
];

/// The embedded file at `path` (under `/assets/`).
pub fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, m, b)| (*m, *b))
}
