//! The audit report: one self-contained HTML file (inline SVG charts, no script, no
//! network) or a Markdown summary, from the rows of `geoloc audit` (its CSV, or the rows of
//! an audit run from the web page). Written by hand: a few SVG primitives did not justify a
//! charting dependency.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;

use crate::WebError;

/// Most rows a report reads (the rest are counted, not drawn).
pub const MAX_ROWS: usize = 1_000_000;

/// What the report uses of one audit row. Absent or unreadable values are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub ip: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub radius_km: Option<f64>,
    pub city: String,
    pub country: String,
    pub maxmind_lat: Option<f64>,
    pub maxmind_lon: Option<f64>,
    pub maxmind_city: String,
    pub maxmind_country: String,
    pub maxmind_distance_km: Option<f64>,
    /// `consistent`, `provably-wrong`, `likely-wrong`, `no-data`, or empty (not compared).
    pub verdict: String,
    pub error: String,
}

fn bounded(s: Option<&str>, lo: f64, hi: f64) -> Option<f64> {
    s.and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|x| x.is_finite() && (lo..=hi).contains(x))
}

fn text(s: Option<&str>) -> String {
    // Texts from a file are hostile: bounded, escaped where they are written.
    s.unwrap_or("").chars().take(200).collect()
}

impl Row {
    /// From named column values (a CSV record or `geoloc_client::audit::row_values`).
    pub fn from_values(get: impl Fn(&str) -> Option<String>) -> Row {
        let g = |k: &str| get(k);
        Row {
            ip: text(g("ip").as_deref()),
            lat: bounded(g("lat").as_deref(), -90.0, 90.0),
            lon: bounded(g("lon").as_deref(), -180.0, 180.0),
            radius_km: bounded(g("radius_km").as_deref(), 0.0, 20_100.0),
            city: text(g("city").as_deref()),
            country: text(g("country").as_deref()),
            maxmind_lat: bounded(g("maxmind_lat").as_deref(), -90.0, 90.0),
            maxmind_lon: bounded(g("maxmind_lon").as_deref(), -180.0, 180.0),
            maxmind_city: text(g("maxmind_city").as_deref()),
            maxmind_country: text(g("maxmind_country").as_deref()),
            maxmind_distance_km: bounded(g("maxmind_distance_km").as_deref(), 0.0, 20_100.0),
            verdict: text(g("maxmind_verdict").as_deref()),
            error: text(g("error").as_deref()),
        }
    }

    fn located(&self) -> bool {
        self.error.is_empty() && self.lat.is_some() && self.lon.is_some()
    }
}

/// Reads the rows of a `geoloc audit` CSV (any subset of its columns, in any order).
pub fn rows_from_csv(r: impl Read) -> Result<Vec<Row>, WebError> {
    let mut rd = csv::ReaderBuilder::new().flexible(true).from_reader(r);
    let header: Vec<String> = rd
        .headers()
        .map_err(|e| WebError::Report(format!("reading the CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if !header.iter().any(|h| h == "ip") {
        return Err(WebError::Report(
            "the CSV has no `ip` column: is it the output of geoloc audit?".into(),
        ));
    }
    let mut out = Vec::new();
    for (n, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|e| WebError::Report(format!("CSV row {}: {e}", n + 2)))?;
        if out.len() >= MAX_ROWS {
            return Err(WebError::Report(format!(
                "more than {MAX_ROWS} rows: split the audit"
            )));
        }
        out.push(Row::from_values(|k| {
            header
                .iter()
                .position(|h| h == k)
                .and_then(|i| rec.get(i))
                .map(String::from)
        }));
    }
    Ok(out)
}

/// Figures of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub rows: usize,
    pub located: usize,
    pub failed: usize,
    /// Verdict -> rows (`not compared` for located rows without one).
    pub verdicts: BTreeMap<String, usize>,
    /// Distances from MaxMind's point to our estimate, km, sorted.
    pub distances_km: Vec<f64>,
    /// Continent of our estimate -> its distances to MaxMind, sorted.
    pub by_continent: BTreeMap<String, Vec<f64>>,
}

/// The `q` quantile (0..=1) of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

pub fn summarize(rows: &[Row]) -> Summary {
    let mut s = Summary {
        rows: rows.len(),
        located: 0,
        failed: 0,
        verdicts: BTreeMap::new(),
        distances_km: Vec::new(),
        by_continent: BTreeMap::new(),
    };
    for r in rows {
        if !r.located() {
            s.failed += 1;
            continue;
        }
        s.located += 1;
        let v = if r.verdict.is_empty() {
            "not compared"
        } else {
            r.verdict.as_str()
        };
        *s.verdicts.entry(v.to_string()).or_default() += 1;
        if let Some(d) = r.maxmind_distance_km {
            s.distances_km.push(d);
            s.by_continent
                .entry(crate::continents::of(&r.country).to_string())
                .or_default()
                .push(d);
        }
    }
    s.distances_km.sort_by(f64::total_cmp);
    for v in s.by_continent.values_mut() {
        v.sort_by(f64::total_cmp);
    }
    s
}

/// Escapes a text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// Escapes a text for a Markdown table cell.
fn md(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' => {
                o.push('\\');
                o.push(c)
            }
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn km(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.0} km"))
}

const CHART_W: f64 = 640.0;
const CHART_H: f64 = 260.0;
const PAD: f64 = 48.0;

/// The cumulative distribution of distances to MaxMind (log x axis, 1 km .. max).
pub fn svg_cdf(sorted: &[f64]) -> String {
    let mut o = format!(
        r##"<svg id="chart-cdf" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="error CDF against MaxMind">"##
    );
    let (x0, x1, y0, y1) = (PAD, CHART_W - 16.0, CHART_H - PAD + 8.0, 16.0);
    let _ = write!(
        o,
        r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>"##
    );
    if sorted.is_empty() {
        o.push_str(r##"<text x="200" y="130">no MaxMind distances</text></svg>"##);
        return o;
    }
    let max = sorted.last().copied().unwrap_or(1.0).max(10.0);
    let lmax = max.log10().ceil().max(1.0);
    let fx = |d: f64| x0 + (d.max(1.0).log10() / lmax) * (x1 - x0);
    let fy = |q: f64| y0 - q * (y0 - y1);
    for e in 0..=(lmax as i32) {
        let x = fx(10f64.powi(e));
        let _ = write!(
            o,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{} km</text>"##,
            y1,
            y0 + 16.0,
            10u64.pow(e as u32)
        );
    }
    for q in [0.0, 0.5, 1.0] {
        let _ = write!(
            o,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{:.0}%</text>"##,
            x0 - 4.0,
            fy(q) + 4.0,
            q * 100.0
        );
    }
    let n = sorted.len() as f64;
    let mut pts = format!("{:.1},{:.1}", fx(sorted[0]), fy(0.0));
    for (i, d) in sorted.iter().enumerate() {
        let _ = write!(
            pts,
            " {:.1},{:.1} {:.1},{:.1}",
            fx(*d),
            fy(i as f64 / n),
            fx(*d),
            fy((i + 1) as f64 / n)
        );
    }
    let _ = write!(
        o,
        r##"<polyline class="cdf" fill="none" stroke="#1f5fbf" stroke-width="2" points="{pts}"/></svg>"##
    );
    o
}

/// Horizontal bars: a label, a value and the text written after the bar.
pub fn svg_bars(id: &str, label: &str, bars: &[(String, f64, String)], color: &str) -> String {
    let h = 24.0 * bars.len().max(1) as f64 + 16.0;
    let mut o = format!(
        r##"<svg id="{}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_W} {h}" role="img" aria-label="{}">"##,
        esc(id),
        esc(label)
    );
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9);
    for (i, (name, v, note)) in bars.iter().enumerate() {
        let y = 8.0 + 24.0 * i as f64;
        let w = (v / max) * (CHART_W - 320.0);
        let _ = write!(
            o,
            r##"<text x="150" y="{:.1}" font-size="12" text-anchor="end">{}</text><rect class="bar" x="156" y="{y:.1}" width="{w:.1}" height="18" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"##,
            y + 13.0,
            esc(name),
            160.0 + w,
            y + 13.0,
            esc(note)
        );
    }
    o.push_str("</svg>");
    o
}

/// An equirectangular world map (Natural Earth land) with the provably-wrong entries: our
/// estimate (blue), MaxMind's point (red), a line between.
pub fn svg_map(rows: &[Row]) -> String {
    let (w, h) = (720.0, 360.0);
    let px = |lon: f64| (lon + 180.0) / 360.0 * w;
    let py = |lat: f64| (90.0 - lat) / 180.0 * h;
    let mut o = format!(
        r##"<svg id="map-wrong" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" aria-label="provably wrong MaxMind entries"><rect width="{w}" height="{h}" fill="#eaf2fb"/>"##
    );
    let mut d = String::new();
    if let Ok(rings) = crate::topo::rings(crate::assets::LAND_110M, "land") {
        for r in rings {
            for (i, (lon, lat)) in r.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{:.1} {:.1}",
                    if i == 0 { "M" } else { "L" },
                    px(*lon),
                    py(*lat)
                );
            }
            d.push('Z');
        }
    }
    let _ = write!(
        o,
        r##"<path class="land" d="{d}" fill="#d9d4c7" stroke="#b5ad99" stroke-width="0.3"/>"##
    );
    for r in rows.iter().filter(|r| r.verdict == "provably-wrong") {
        let (Some(lat), Some(lon), Some(mlat), Some(mlon)) =
            (r.lat, r.lon, r.maxmind_lat, r.maxmind_lon)
        else {
            continue;
        };
        let _ = write!(
            o,
            r##"<g class="wrong"><title>{}</title><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#c0392b" stroke-dasharray="3 2"/><circle cx="{:.1}" cy="{:.1}" r="3.5" fill="#1f5fbf"/><circle cx="{:.1}" cy="{:.1}" r="3.5" fill="#c0392b"/></g>"##,
            esc(&format!(
                "{}: measured {} {}, MaxMind {} {}",
                r.ip, r.city, r.country, r.maxmind_city, r.maxmind_country
            )),
            px(lon),
            py(lat),
            px(mlon),
            py(mlat),
            px(lon),
            py(lat),
            px(mlon),
            py(mlat)
        );
    }
    o.push_str("</svg>");
    o
}

fn verdict_bars(s: &Summary) -> Vec<(String, f64, String)> {
    s.verdicts
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64, v.to_string()))
        .collect()
}

fn continent_bars(s: &Summary) -> Vec<(String, f64, String)> {
    s.by_continent
        .iter()
        .map(|(k, v)| {
            let m = quantile(v, 0.5).unwrap_or(0.0);
            (k.clone(), m, format!("median {m:.0} km (n = {})", v.len()))
        })
        .collect()
}

/// The self-contained HTML report. `generated` is printed as is (e.g. an RFC 3339 time).
pub fn html(rows: &[Row], title: &str, generated: &str) -> String {
    let s = summarize(rows);
    let mut o = String::new();
    let _ = write!(
        o,
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}}table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}svg{{max-width:100%;height:auto;display:block;margin:1em 0}}.wrong td{{background:#fdecea}}</style>
</head><body>
<h1 id="title">{t}</h1>
<p id="generated">Generated {g} by geoloc {v}.</p>
<h2 id="summary">Summary</h2>
<ul id="summary-list"><li>{n} addresses, {loc} located, {f} not located</li><li>Distance from MaxMind's point to the measured estimate: median {med}, 80th percentile {p80}, maximum {max}</li><li>MaxMind verdicts: {verdicts}</li></ul>
"##,
        t = esc(title),
        g = esc(generated),
        v = env!("CARGO_PKG_VERSION"),
        n = s.rows,
        loc = s.located,
        f = s.failed,
        med = km(quantile(&s.distances_km, 0.5)),
        p80 = km(quantile(&s.distances_km, 0.8)),
        max = km(s.distances_km.last().copied()),
        verdicts = esc(&s
            .verdicts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")),
    );
    o.push_str("<h2 id=\"cdf\">Error against MaxMind (cumulative)</h2>\n");
    o.push_str(&svg_cdf(&s.distances_km));
    o.push_str("\n<h2 id=\"continents\">Errors by continent (of the estimate)</h2>\n");
    o.push_str(&svg_bars(
        "chart-continents",
        "median distance to MaxMind by continent",
        &continent_bars(&s),
        "#1f5fbf",
    ));
    o.push_str("\n<h2 id=\"verdicts\">Verdicts</h2>\n");
    o.push_str(&svg_bars(
        "chart-verdicts",
        "MaxMind verdict counts",
        &verdict_bars(&s),
        "#6b8e23",
    ));
    o.push_str("\n<h2 id=\"wrong\">Provably wrong MaxMind entries</h2>\n<p>Blue: measured estimate; red: MaxMind's point, which an RTT rules out.</p>\n");
    o.push_str(&svg_map(rows));
    o.push_str("\n<h2 id=\"rows\">Rows</h2>\n<table id=\"table\"><thead><tr><th>ip</th><th>estimate</th><th>radius</th><th>place</th><th>MaxMind</th><th>distance</th><th>verdict</th><th>error</th></tr></thead><tbody>\n");
    for r in rows {
        let pos = match (r.lat, r.lon) {
            (Some(a), Some(b)) => format!("{a:.4}, {b:.4}"),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if r.verdict == "provably-wrong" { " class=\"wrong\"" } else { "" },
            esc(&r.ip),
            pos,
            r.radius_km.map_or(String::new(), |x| format!("{x:.0} km")),
            esc(&format!("{} {}", r.city, r.country)),
            esc(&format!("{} {}", r.maxmind_city, r.maxmind_country)),
            r.maxmind_distance_km.map_or(String::new(), |x| format!("{x:.0} km")),
            esc(&r.verdict),
            esc(&r.error)
        );
    }
    o.push_str("</tbody></table>\n<p>Country outlines: Natural Earth (public domain) via world-atlas 2.0.2.</p>\n</body></html>\n");
    o
}

/// The Markdown summary.
pub fn markdown(rows: &[Row], title: &str, generated: &str) -> String {
    let s = summarize(rows);
    let mut o = format!(
        "# {}\n\nGenerated {} by geoloc {}.\n\n",
        md(title),
        md(generated),
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        o,
        "- {} addresses, {} located, {} not located",
        s.rows, s.located, s.failed
    );
    let _ = writeln!(
        o,
        "- Distance from MaxMind's point to the measured estimate: median {}, 80th percentile {}, maximum {}\n",
        km(quantile(&s.distances_km, 0.5)),
        km(quantile(&s.distances_km, 0.8)),
        km(s.distances_km.last().copied())
    );
    o.push_str("## Verdicts\n\n| verdict | rows |\n|---|---|\n");
    for (k, v) in &s.verdicts {
        let _ = writeln!(o, "| {} | {v} |", md(k));
    }
    o.push_str("\n## Errors by continent (of the estimate)\n\n| continent | rows | median km | 80th percentile km |\n|---|---|---|---|\n");
    for (k, v) in &s.by_continent {
        let _ = writeln!(
            o,
            "| {} | {} | {:.0} | {:.0} |",
            md(k),
            v.len(),
            quantile(v, 0.5).unwrap_or(0.0),
            quantile(v, 0.8).unwrap_or(0.0)
        );
    }
    o.push_str("\n## Provably wrong MaxMind entries\n\n| ip | measured | MaxMind | distance km |\n|---|---|---|---|\n");
    for r in rows
        .iter()
        .filter(|r| r.located() && r.verdict == "provably-wrong")
    {
        let _ = writeln!(
            o,
            "| {} | {} {} | {} {} | {} |",
            md(&r.ip),
            md(&r.city),
            md(&r.country),
            md(&r.maxmind_city),
            md(&r.maxmind_country),
            r.maxmind_distance_km
                .map_or("-".into(), |x| format!("{x:.0}"))
        );
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.located()).collect();
    if !failed.is_empty() {
        o.push_str("\n## Not located\n\n| ip | error |\n|---|---|\n");
        for r in failed {
            let _ = writeln!(o, "| {} | {} |", md(&r.ip), md(&r.error));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "ip,lat,lon,radius_km,city,country,timezone,utc_offset,anycast,probes_used,min_rtt_ms,nearest_probe,maxmind_lat,maxmind_lon,maxmind_city,maxmind_country,maxmind_accuracy_km,maxmind_distance_km,maxmind_verdict,error
81.2.69.142,51.5000,-0.1200,120.0,London,GB,Europe/London,+00:00,false,20,2.10,p001,51.5142,-0.0931,London,GB,20,2.4,consistent,
10.77.0.9,48.8566,2.3522,300.0,Paris,FR,Europe/Paris,+01:00,false,18,5.00,p002,35.6895,139.6917,Tokyo,JP,50,9713.0,provably-wrong,
10.77.0.10,35.6800,139.7600,250.0,Tokyo,JP,Asia/Tokyo,+09:00,false,18,3.00,p003,35.6895,139.6917,Tokyo,JP,50,8.1,consistent,
10.77.0.11,-33.8600,151.2000,400.0,Sydney,AU,Australia/Sydney,+11:00,false,9,1.00,p004,,,,,,,no-data,
nope,,,,,,,,,,,,,,,,,,,invalid-address: not an IP address: \"nope\"
<script>,NaN,999,,<b>x</b>,|x|,,,,,,,,,,,,inf,provably-wrong,
";

    fn rows() -> Vec<Row> {
        rows_from_csv(CSV.as_bytes()).unwrap()
    }

    #[test]
    fn hostile_values_are_dropped_or_escaped() {
        let r = rows();
        assert_eq!(r.len(), 6);
        let bad = &r[5];
        assert_eq!(
            (bad.lat, bad.lon, bad.maxmind_distance_km),
            (None, None, None)
        );
        let h = html(&r, "t", "now");
        assert!(!h.contains("<script>"));
        assert!(!h.contains("<b>x"));
        assert!(h.contains("&lt;script&gt;"));
        assert!(rows_from_csv("a,b\n1,2\n".as_bytes()).is_err());
    }

    #[test]
    fn summary_counts() {
        let s = summarize(&rows());
        assert_eq!((s.rows, s.located, s.failed), (6, 4, 2));
        assert_eq!(s.distances_km, vec![2.4, 8.1, 9713.0]);
        assert_eq!(s.verdicts["provably-wrong"], 1);
        assert_eq!(s.by_continent["Asia"], vec![8.1]);
        assert_eq!(quantile(&s.distances_km, 0.5), Some(8.1));
    }

    #[test]
    fn markdown_snapshot() {
        insta::assert_snapshot!(markdown(
            &rows(),
            "Audit of lab targets",
            "2026-11-29T12:00:00Z"
        ));
    }

    /// The HTML's structure: every element with an id, and how many of each drawn mark.
    fn skeleton(h: &str) -> String {
        let mut out = String::new();
        let mut rest = h;
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            let end = rest.find('>').unwrap_or(rest.len());
            let tag = &rest[..end];
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if let Some(j) = tag.find(" id=\"") {
                let id = &tag[j + 5..];
                let id = &id[..id.find('"').unwrap_or(0)];
                let _ = writeln!(out, "{name}#{id}");
            }
        }
        for mark in [
            "<rect class=\"bar\"",
            "<polyline class=\"cdf\"",
            "<g class=\"wrong\"",
            "<path class=\"land\"",
            "<tr class=\"wrong\"",
            "<tr>",
            "<script",
        ] {
            let _ = writeln!(out, "{mark}> x {}", h.matches(mark).count());
        }
        out
    }

    #[test]
    fn html_structure_snapshot() {
        let h = html(&rows(), "Audit of lab targets", "2026-11-29T12:00:00Z");
        assert!(h.starts_with("<!DOCTYPE html>"));
        // Self-contained: nothing fetched.
        assert!(!h.contains("src=") && !h.contains("href="));
        insta::assert_snapshot!(skeleton(&h));
    }
}
