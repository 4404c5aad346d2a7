//! `enrich` on a generated log: 100,000 rows, 2,000 distinct addresses (bogons, addresses
//! without a position, malformed addresses, timestamps and lines included); local hours
//! checked against offsets written by hand across two DST changes and India's +05:30;
//! Parquet read back; cached reputation columns without a request.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use geoloc_know::cache::Cache;
use geoloc_know::enrich::{enrich, EnrichOptions, Format};
use geoloc_know::providers::{ProviderClient, ProviderConfig, ProviderKind};
use geoloc_know::report::Sources;

fn opts(input: &Path, output: &Path, format: Format) -> EnrichOptions {
    EnrichOptions {
        input: input.to_path_buf(),
        ip_column: "src_ip".into(),
        time_column: "ts".into(),
        output: Some(output.to_path_buf()),
        format,
        query_providers: false,
        progress: false,
    }
}

fn expected_hour(city: usize, utc_s: i64) -> i64 {
    (utc_s + offset_min(city, utc_s) * 60).rem_euclid(86_400) / 3600
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_generated_log_csv_and_parquet() {
    const ROWS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let (log, mmdb) = (dir.path().join("log.csv"), dir.path().join("geo.mmdb"));
    write_geoip(&mmdb);
    write_log(&log, ROWS);
    let sources = Sources {
        geoip: Some(geoloc_geoip::GeoIpDb::open(&mmdb).unwrap()),
        ..Default::default()
    };
    let out = dir.path().join("out.csv");
    let stats = enrich(&opts(&log, &out, Format::Csv), &sources)
        .await
        .unwrap();
    assert_eq!(stats.rows, ROWS as u64);
    assert_eq!(stats.distinct_addresses, 2000);

    let mut rdr = csv::ReaderBuilder::new().from_path(&out).unwrap();
    let h = rdr.headers().unwrap().clone();
    let col = |n: &str| {
        h.iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("no column {n}"))
    };
    let (c_country, c_tz, c_hour, c_lt, c_wd, c_reason, c_id, c_status) = (
        col("country"),
        col("time_zone"),
        col("local_hour"),
        col("local_time"),
        col("weekday"),
        col("reason"),
        col("id"),
        col("shodan_status"),
    );
    let (mut before, mut after, mut india, mut with_reason) = ([0u32; 3], [0u32; 3], 0u32, 0u64);
    let mut hours = Vec::with_capacity(ROWS);
    for (r, rec) in rdr.records().enumerate() {
        let rec = rec.unwrap();
        let reason = &rec[c_reason];
        if !reason.is_empty() {
            with_reason += 1;
        }
        hours.push(rec[c_hour].parse::<i64>().ok());
        match gen_row(r) {
            GenRow::Good { addr, utc_s } if addr < 1800 => {
                let c = city_of(addr);
                assert_eq!(&rec[c_id], r.to_string().as_str());
                assert_eq!(reason, "", "row {r}");
                assert_eq!(&rec[c_country], CITIES[c].country);
                assert_eq!(&rec[c_tz], CITIES[c].zone, "row {r}");
                assert_eq!(
                    rec[c_hour].parse::<i64>().unwrap(),
                    expected_hour(c, utc_s),
                    "row {r} {}",
                    &rec[c_lt]
                );
                let local =
                    chrono::DateTime::from_timestamp(utc_s + offset_min(c, utc_s) * 60, 0).unwrap();
                assert_eq!(&rec[c_wd], local.format("%a").to_string(), "row {r}");
                assert_eq!(&rec[c_status], "not-configured");
                if c == 0 {
                    assert!(rec[c_lt].ends_with("+05:30"), "{}", &rec[c_lt]);
                    india += 1;
                }
                let dst = if c == 1 {
                    BERLIN_DST_UTC_S
                } else {
                    NY_DST_UTC_S
                };
                if c > 0 {
                    if utc_s < dst {
                        before[c] += 1
                    } else {
                        after[c] += 1
                    }
                }
            }
            GenRow::Good { addr, .. } if addr < 1950 => {
                assert!(reason.starts_with("no location"), "row {r}: {reason}");
                assert_eq!(&rec[c_hour], "");
            }
            GenRow::Good { .. } => assert!(reason.starts_with("bogon: "), "row {r}: {reason}"),
            GenRow::BadIp => assert!(
                reason.contains("malformed address \"999.1.2.3\""),
                "row {r}: {reason}"
            ),
            GenRow::BadTime { addr } => {
                assert!(
                    reason.contains("timestamp \"yesterday\""),
                    "row {r}: {reason}"
                );
                if addr < 1800 {
                    assert_eq!(&rec[c_country], CITIES[city_of(addr)].country);
                }
            }
            GenRow::Short => assert!(
                reason.contains("malformed line: 2 fields"),
                "row {r}: {reason}"
            ),
        }
    }
    assert_eq!(hours.len(), ROWS, "one output row per input row");
    assert_eq!(stats.rows_with_reason, with_reason);
    assert!(india > 10_000, "{india}");
    for c in 1..3 {
        assert!(
            before[c] > 1000 && after[c] > 1000,
            "{c}: {before:?} {after:?}"
        );
    }

    // Parquet: same rows, typed columns, read back.
    let pq = dir.path().join("out.parquet");
    let s2 = enrich(&opts(&log, &pq, Format::Parquet), &sources)
        .await
        .unwrap();
    assert_eq!(s2, stats);
    let f = std::fs::File::open(&pq).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let mut got: Vec<Option<i64>> = Vec::new();
    let mut lats = 0usize;
    for batch in reader {
        let b = batch.unwrap();
        let hour = b
            .column_by_name("local_hour")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .expect("local_hour is Int64");
        got.extend(hour.iter());
        let lat = b
            .column_by_name("lat")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .expect("lat is Float64");
        lats += lat.iter().flatten().filter(|x| x.is_finite()).count();
        assert!(b.column_by_name("src_ip").is_some());
    }
    assert_eq!(got.len(), ROWS);
    assert_eq!(got, hours, "Parquet local hours equal the CSV's");
    assert!(lats > 80_000, "{lats}");
}

#[tokio::test]
async fn cached_reputation_columns_without_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.csv");
    let mut text = String::from("when,addr\n");
    for i in 0..300 {
        let a = [NORMAL, NOT_FOUND, "10.1.2.3"][i % 3];
        text.push_str(&format!("2026-05-01T{:02}:00:00Z,{a}\n", i % 24));
    }
    std::fs::write(&log, text).unwrap();
    let s = provider_stand_in().await;
    let make = || Sources {
        providers: ProviderKind::ALL
            .iter()
            .map(|&k| {
                let mut c = ProviderConfig::new(k, "k");
                c.base_url = s.url.clone();
                c.period = Duration::from_millis(1);
                ProviderClient::new(c).unwrap()
            })
            .collect(),
        cache: Some(Cache::new(
            dir.path().join("cache"),
            Duration::from_secs(3600),
        )),
        ..Default::default()
    };
    let out = dir.path().join("out.csv");
    let mut o = EnrichOptions {
        input: log.clone(),
        ip_column: "addr".into(),
        time_column: "when".into(),
        output: Some(out.clone()),
        format: Format::Csv,
        query_providers: true,
        progress: false,
    };
    // First run asks: 2 public addresses × 4 providers; the bogon is never sent.
    let st = enrich(&o, &make()).await.unwrap();
    assert_eq!((s.requests(), st.provider_requests), (8, 8));
    let first = std::fs::read_to_string(&out).unwrap();
    // Second run, cache only, and third, allowed to ask: no request, same columns.
    o.query_providers = false;
    enrich(&o, &make()).await.unwrap();
    assert_eq!(s.requests(), 8);
    let second = std::fs::read_to_string(&out).unwrap();
    o.query_providers = true;
    let st = enrich(&o, &make()).await.unwrap();
    assert_eq!((s.requests(), st.provider_requests), (8, 0));
    assert_eq!(first, second);
    assert_eq!(first, std::fs::read_to_string(&out).unwrap());
    let mut rdr = csv::Reader::from_reader(first.as_bytes());
    let h = rdr.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let normal = rows.iter().find(|r| &r[col("addr")] == NORMAL).unwrap();
    assert_eq!(&normal[col("abuseipdb_score")], "87");
    assert_eq!(&normal[col("virustotal_malicious")], "3");
    assert_eq!(&normal[col("shodan_ports")], "22;80;443");
    assert_eq!(&normal[col("censys_services")], "22/SSH;53/DNS");
    assert_eq!(&normal[col("shodan_status")], "ok");
    let nf = rows.iter().find(|r| &r[col("addr")] == NOT_FOUND).unwrap();
    assert_eq!(&nf[col("virustotal_status")], "not-found");
    let bogon = rows.iter().find(|r| &r[col("addr")] == "10.1.2.3").unwrap();
    assert!(bogon[col("reason")].starts_with("bogon"));
    let _: IpAddr = NORMAL.parse().unwrap();
}

#[tokio::test]
async fn missing_column_and_clash_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.csv");
    std::fs::write(&log, "ip,time,country\n8.8.8.8,2026-01-01T00:00:00Z,x\n").unwrap();
    let mut o = opts(&log, &dir.path().join("o.csv"), Format::Csv);
    let e = enrich(&o, &Sources::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no column \"src_ip\""), "{e}");
    o.ip_column = "ip".into();
    o.time_column = "time".into();
    let e = enrich(&o, &Sources::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("already has a column \"country\""), "{e}");
}
