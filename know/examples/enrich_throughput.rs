//! Figure: `enrich` throughput on the generated 100,000-row log (2,000 distinct addresses)
//! with every provider's answer already in the cache (no request is sent).
//!
//!     cargo run -p geoloc-know --release --example enrich_throughput [ROWS] [csv|parquet]
//!     /usr/bin/time -v ./target/release/examples/enrich_throughput 100000 csv
//!
//! Prints rows/s of the enrichment itself (not the generation of the log).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use geoloc_know::cache::Cache;
use geoloc_know::enrich::{enrich, EnrichOptions, Format};
use geoloc_know::providers::{ProviderClient, ProviderConfig, ProviderKind};
use geoloc_know::report::Sources;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(100_000, |a| a.parse().expect("ROWS"));
    let format = match args.next().as_deref() {
        Some("parquet") => Format::Parquet,
        _ => Format::Csv,
    };
    let dir = tempfile::tempdir().unwrap();
    let (log, mmdb) = (dir.path().join("log.csv"), dir.path().join("geo.mmdb"));
    common::write_geoip(&mmdb);
    common::write_log(&log, rows);
    // Fill the cache through the stand-ins once (one request per address and provider).
    let s = common::provider_stand_in().await;
    let sources = || Sources {
        geoip: Some(geoloc_geoip::GeoIpDb::open(&mmdb).unwrap()),
        providers: ProviderKind::ALL
            .iter()
            .map(|&k| {
                let mut c = ProviderConfig::new(k, "k");
                c.base_url = s.url.clone();
                c.period = Duration::from_micros(10);
                c.burst = 1000;
                ProviderClient::new(c).unwrap()
            })
            .collect(),
        cache: Some(Cache::new(
            dir.path().join("cache"),
            Duration::from_secs(3600),
        )),
        ..Default::default()
    };
    let out = dir.path().join(match format {
        Format::Csv => "out.csv",
        Format::Parquet => "out.parquet",
    });
    let mut o = EnrichOptions {
        input: log,
        ip_column: "src_ip".into(),
        time_column: "ts".into(),
        output: Some(out),
        format,
        query_providers: true,
        progress: false,
    };
    let warm = enrich(&o, &sources()).await.unwrap();
    o.query_providers = false;
    let t0 = Instant::now();
    let st = enrich(&o, &sources()).await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "enrich {rows} rows ({} distinct, {} provider requests to fill the cache, 0 after): {:.3} s, {:.0} rows/s, {:?}",
        st.distinct_addresses,
        warm.provider_requests,
        secs,
        st.rows as f64 / secs,
        format
    );
}
