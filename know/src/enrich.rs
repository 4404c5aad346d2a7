//! Connection logs to features: `geoloc enrich`. Each row of a CSV gets the location,
//! local time, origin AS and cached reputation of its address at its time; one lookup per
//! distinct address; a row that cannot be enriched keeps its fields and gets a `reason`.
//! Output: CSV, or Parquet (typed columns) for pandas and scikit-learn. Column list in
//! [`COLUMNS`] and `know/README.md`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use futures::StreamExt;

use crate::error::{KnowError, Result};
use crate::providers::{Answer, Outcome, ProviderKind};
use crate::report::{join_ports, tz_at, Location, Sources};
use crate::timefeat::{local_time, parse_instant};

/// Type of an added column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Float,
    Int,
}

/// The columns added after the input's own, in order, with their Parquet types.
pub const COLUMNS: &[(&str, Kind)] = &[
    ("country", Kind::Text),
    ("city", Kind::Text),
    ("lat", Kind::Float),
    ("lon", Kind::Float),
    ("radius_km", Kind::Float),
    ("location_source", Kind::Text),
    ("time_zone", Kind::Text),
    ("local_time", Kind::Text),
    ("local_hour", Kind::Int),
    ("weekday", Kind::Text),
    ("asn", Kind::Int),
    ("organisation", Kind::Text),
    ("abuseipdb_score", Kind::Int),
    ("abuseipdb_reports", Kind::Int),
    ("abuseipdb_status", Kind::Text),
    ("virustotal_malicious", Kind::Int),
    ("virustotal_suspicious", Kind::Int),
    ("virustotal_status", Kind::Text),
    ("shodan_ports", Kind::Text),
    ("shodan_status", Kind::Text),
    ("censys_services", Kind::Text),
    ("censys_status", Kind::Text),
    ("reason", Kind::Text),
];

/// One cell of an added column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(Option<String>),
    Float(Option<f64>),
    Int(Option<i64>),
}

impl Cell {
    fn csv(&self) -> String {
        match self {
            Cell::Text(s) => s.clone().unwrap_or_default(),
            Cell::Float(x) => x.map_or(String::new(), |x| format!("{x}")),
            Cell::Int(x) => x.map_or(String::new(), |x| x.to_string()),
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

/// What to enrich and how.
#[derive(Debug, Clone)]
pub struct EnrichOptions {
    pub input: PathBuf,
    pub ip_column: String,
    pub time_column: String,
    /// `None`: CSV on standard output.
    pub output: Option<PathBuf>,
    pub format: Format,
    /// Ask the providers for addresses not in the cache (spends quota); otherwise only
    /// cached answers are used.
    pub query_providers: bool,
    /// Show a progress bar on standard error.
    pub progress: bool,
}

/// Locations from elsewhere than GeoIP: a coordinator's stored results and new
/// measurements (`geoloc enrich --coordinator URL [--measure --budget N]`, cli/src/know.rs).
/// An address it gives no location for is located by GeoIP.
pub trait Locator: Sync {
    /// Locations of some of `ips` (the distinct public addresses of the log, those on the
    /// most rows first), each with its `source` (`measured` or `stored`).
    fn locate<'a>(
        &'a self,
        ips: &'a [IpAddr],
    ) -> futures::future::BoxFuture<'a, HashMap<IpAddr, Location>>;
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EnrichStats {
    pub rows: u64,
    /// Rows with a non-empty `reason`.
    pub rows_with_reason: u64,
    pub distinct_addresses: u64,
    /// Provider requests sent in this run.
    pub provider_requests: u64,
    /// Distinct addresses located by the [`Locator`], by source (`measured`, `stored`).
    pub located_by: std::collections::BTreeMap<String, u64>,
}

/// Features of one address (time-independent part).
#[derive(Debug, Clone, Default)]
struct AddrFeatures {
    country: Option<String>,
    city: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    radius_km: Option<f64>,
    /// `measured`, `stored` (a coordinator's earlier result) or `geoip`.
    location_source: Option<String>,
    time_zone: Option<String>,
    asn: Option<i64>,
    organisation: Option<String>,
    reputation: Vec<Outcome>,
    /// Why the address has no location (bogon, not in the database …).
    reason: Option<String>,
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> KnowError {
    KnowError::Input {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn open_csv(path: &Path) -> Result<csv::Reader<std::io::BufReader<std::fs::File>>> {
    let f = std::fs::File::open(path).map_err(|source| KnowError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(std::io::BufReader::with_capacity(1 << 16, f)))
}

/// Parses an address cell: trimmed, `[v6]` brackets allowed.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    t.parse().ok()
}

/// Runs the enrichment, locations from GeoIP.
pub async fn enrich(opts: &EnrichOptions, sources: &Sources) -> Result<EnrichStats> {
    enrich_with(opts, sources, None).await
}

/// Runs the enrichment; `locator` (if any) locates addresses first, GeoIP the rest.
pub async fn enrich_with(
    opts: &EnrichOptions,
    sources: &Sources,
    locator: Option<&dyn Locator>,
) -> Result<EnrichStats> {
    let started = Instant::now();
    // Pass 1: header, distinct addresses.
    let mut rdr = open_csv(&opts.input)?;
    let headers = rdr
        .byte_headers()
        .map_err(|e| read_err(&opts.input, e))?
        .clone();
    let header: Vec<String> = headers
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    let find = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            read_err(
                &opts.input,
                format!("no column {name:?} in the header ({})", header.join(", ")),
            )
        })
    };
    let ip_col = find(&opts.ip_column)?;
    let time_col = find(&opts.time_column)?;
    if let Some(clash) = header.iter().find(|h| COLUMNS.iter().any(|(c, _)| c == h)) {
        return Err(read_err(
            &opts.input,
            format!("the input already has a column {clash:?}, which enrich adds"),
        ));
    }
    let mut distinct: Vec<IpAddr> = Vec::new();
    // Rows per address.
    let mut seen: HashMap<IpAddr, u64> = HashMap::new();
    let mut rows = 0u64;
    let mut rec = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                rows += 1;
                if let Some(ip) = rec
                    .get(ip_col)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(parse_ip)
                {
                    let n = seen.entry(ip).or_insert(0);
                    if *n == 0 {
                        distinct.push(ip);
                    }
                    *n += 1;
                }
            }
            Err(_) => rows += 1,
        }
    }
    // Locations from the locator: public addresses, those on the most rows first.
    let located: HashMap<IpAddr, Location> = match locator {
        None => HashMap::new(),
        Some(l) => {
            let mut public: Vec<IpAddr> = distinct
                .iter()
                .copied()
                .filter(|ip| !geoloc_policy::classify(*ip).is_bogon())
                .collect();
            public.sort_by_key(|ip| std::cmp::Reverse(seen[ip]));
            l.locate(&public).await
        }
    };
    let mut located_by = std::collections::BTreeMap::new();
    for l in located.values() {
        *located_by.entry(l.source.clone()).or_insert(0) += 1;
    }
    let located = &located;
    // One lookup per distinct address.
    let bar = progress_bar(opts.progress, distinct.len() as u64, "addresses");
    let requests_before: u64 = sources.providers.iter().map(|p| p.requests_sent()).sum();
    let features: HashMap<IpAddr, Arc<AddrFeatures>> = futures::stream::iter(distinct.iter())
        .map(|&ip| async move {
            let loc = located.get(&ip).cloned();
            let f = address_features(sources, ip, loc, opts.query_providers).await;
            (ip, Arc::new(f))
        })
        .buffer_unordered(16)
        .inspect(|_| bar.inc(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let provider_requests = sources
        .providers
        .iter()
        .map(|p| p.requests_sent())
        .sum::<u64>()
        - requests_before;

    // Pass 2: write.
    let mut out: Box<dyn RowSink> = match (opts.format, &opts.output) {
        (Format::Csv, Some(p)) => Box::new(CsvSink::new(
            Box::new(std::fs::File::create(p).map_err(|source| KnowError::Write {
                path: p.clone(),
                source,
            })?),
            p.clone(),
        )),
        (Format::Csv, None) => Box::new(CsvSink::new(
            Box::new(std::io::stdout().lock()),
            PathBuf::from("<stdout>"),
        )),
        (Format::Parquet, Some(p)) => Box::new(ParquetSink::new(p, &header)?),
        (Format::Parquet, None) => {
            return Err(read_err(&opts.input, "Parquet needs --output FILE"))
        }
    };
    out.header(&header)?;
    let bar = progress_bar(opts.progress, rows, "rows");
    let mut rdr = open_csv(&opts.input)?;
    let mut stats = EnrichStats {
        rows: 0,
        rows_with_reason: 0,
        distinct_addresses: distinct.len() as u64,
        provider_requests,
        located_by,
    };
    loop {
        let (fields, cells) = match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let fields: Vec<String> = (0..header.len())
                    .map(|i| {
                        rec.get(i)
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_default()
                    })
                    .collect();
                let cells = if rec.len() != header.len() {
                    let mut c = empty_cells();
                    set_reason(
                        &mut c,
                        format!(
                            "malformed line: {} fields, the header has {}",
                            rec.len(),
                            header.len()
                        ),
                    );
                    c
                } else {
                    row_cells(&fields[ip_col], &fields[time_col], &features)
                };
                (fields, cells)
            }
            Err(e) => {
                let mut c = empty_cells();
                set_reason(&mut c, format!("unreadable CSV record: {e}"));
                (vec![String::new(); header.len()], c)
            }
        };
        stats.rows += 1;
        if matches!(cells.last(), Some(Cell::Text(Some(_)))) {
            stats.rows_with_reason += 1;
        }
        out.row(&fields, &cells)?;
        if stats.rows.is_multiple_of(4096) {
            bar.set_position(stats.rows);
        }
    }
    out.finish()?;
    bar.finish_and_clear();
    tracing::info!(
        "enriched {} rows ({} distinct addresses) in {:.2} s",
        stats.rows,
        stats.distinct_addresses,
        started.elapsed().as_secs_f64()
    );
    Ok(stats)
}

fn progress_bar(show: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} {{per_sec}} eta {{eta}}"
        ))
        .expect("static template"),
    );
    b
}

async fn address_features(
    sources: &Sources,
    ip: IpAddr,
    located: Option<Location>,
    query: bool,
) -> AddrFeatures {
    let class = geoloc_policy::classify(ip);
    if class.is_bogon() {
        return AddrFeatures {
            reason: Some(format!("bogon: {} address", class.describe())),
            ..Default::default()
        };
    }
    let mut f = AddrFeatures::default();
    match located
        .map(Ok)
        .unwrap_or_else(|| sources.geoip_location(ip))
    {
        Ok(l) => {
            f.time_zone = Some(tz_at(l.lat, l.lon));
            f.location_source = Some(l.source);
            f.country = l.country;
            f.city = l.city;
            f.lat = Some(l.lat);
            f.lon = Some(l.lon);
            f.radius_km = l.radius_km;
        }
        Err(e) => f.reason = Some(format!("no location: {e}")),
    }
    if let Ok(a) = sources.asn(ip) {
        f.asn = Some(i64::from(a.asn));
        f.organisation = Some(a.organisation);
    }
    f.reputation = sources.reputation(ip, query).await;
    f
}

fn empty_cells() -> Vec<Cell> {
    COLUMNS
        .iter()
        .map(|(_, k)| match k {
            Kind::Text => Cell::Text(None),
            Kind::Float => Cell::Float(None),
            Kind::Int => Cell::Int(None),
        })
        .collect()
}

fn set_reason(cells: &mut [Cell], r: String) {
    if let Some(Cell::Text(x)) = cells.last_mut() {
        *x = Some(match x.take() {
            Some(prev) => format!("{prev}; {r}"),
            None => r,
        });
    }
}

fn row_cells(
    ip_text: &str,
    time_text: &str,
    features: &HashMap<IpAddr, Arc<AddrFeatures>>,
) -> Vec<Cell> {
    let mut c = empty_cells();
    let Some(ip) = parse_ip(ip_text) else {
        set_reason(
            &mut c,
            format!("malformed address {:?}", crate::printable(ip_text, 60)),
        );
        return c;
    };
    let Some(f) = features.get(&ip) else {
        set_reason(&mut c, "address not looked up".into());
        return c;
    };
    c[0] = Cell::Text(f.country.clone());
    c[1] = Cell::Text(f.city.clone());
    c[2] = Cell::Float(f.lat);
    c[3] = Cell::Float(f.lon);
    c[4] = Cell::Float(f.radius_km);
    c[5] = Cell::Text(f.location_source.clone());
    c[6] = Cell::Text(f.time_zone.clone());
    c[10] = Cell::Int(f.asn);
    c[11] = Cell::Text(f.organisation.clone());
    for o in &f.reputation {
        let status = Cell::Text(Some(o.status_text()));
        match o.provider {
            ProviderKind::AbuseIpDb => {
                if let Some(Answer::AbuseIpDb(a)) = &o.answer {
                    c[12] = Cell::Int(Some(i64::from(a.abuse_confidence_score)));
                    c[13] = Cell::Int(Some(a.total_reports.min(i64::MAX as u64) as i64));
                }
                c[14] = status;
            }
            ProviderKind::VirusTotal => {
                if let Some(Answer::VirusTotal(v)) = &o.answer {
                    c[15] = Cell::Int(Some(i64::from(v.malicious)));
                    c[16] = Cell::Int(Some(i64::from(v.suspicious)));
                }
                c[17] = status;
            }
            ProviderKind::Shodan => {
                if let Some(Answer::Shodan(s)) = &o.answer {
                    c[18] = Cell::Text(Some(join_ports(&s.ports)));
                }
                c[19] = status;
            }
            ProviderKind::Censys => {
                if let Some(Answer::Censys(s)) = &o.answer {
                    let list: Vec<String> = s
                        .services
                        .iter()
                        .map(|x| format!("{}/{}", x.port, x.name))
                        .collect();
                    c[20] = Cell::Text(Some(list.join(";")));
                }
                c[21] = status;
            }
        }
    }
    if let Some(r) = &f.reason {
        set_reason(&mut c, r.clone());
    }
    match parse_instant(time_text) {
        Err(e) => set_reason(&mut c, e),
        Ok(at) => {
            if let Some(lt) = f.time_zone.as_deref().and_then(|z| local_time(z, at)) {
                c[7] = Cell::Text(Some(lt.local_time));
                c[8] = Cell::Int(Some(i64::from(lt.local_hour)));
                c[9] = Cell::Text(Some(lt.weekday));
            }
        }
    }
    c
}

trait RowSink {
    fn header(&mut self, input: &[String]) -> Result<()>;
    fn row(&mut self, fields: &[String], cells: &[Cell]) -> Result<()>;
    fn finish(&mut self) -> Result<()>;
}

struct CsvSink {
    w: csv::Writer<Box<dyn std::io::Write>>,
    path: PathBuf,
    buf: Vec<String>,
}

impl CsvSink {
    fn new(w: Box<dyn std::io::Write>, path: PathBuf) -> Self {
        Self {
            w: csv::WriterBuilder::new().from_writer(w),
            path,
            buf: Vec::new(),
        }
    }
    fn err(&self, source: csv::Error) -> KnowError {
        KnowError::Csv {
            path: self.path.clone(),
            source,
        }
    }
}

impl RowSink for CsvSink {
    fn header(&mut self, input: &[String]) -> Result<()> {
        let all = input
            .iter()
            .map(String::as_str)
            .chain(COLUMNS.iter().map(|(n, _)| *n));
        self.w.write_record(all).map_err(|e| self.err(e))
    }
    fn row(&mut self, fields: &[String], cells: &[Cell]) -> Result<()> {
        self.buf.clear();
        self.buf.extend(fields.iter().cloned());
        self.buf.extend(cells.iter().map(Cell::csv));
        let r = self.w.write_record(&self.buf);
        r.map_err(|e| self.err(e))
    }
    fn finish(&mut self) -> Result<()> {
        self.w.flush().map_err(|e| self.err(e.into()))
    }
}

/// Rows per Parquet row group batch.
const BATCH_ROWS: usize = 8192;

struct ParquetSink {
    path: PathBuf,
    schema: Arc<Schema>,
    writer: Option<parquet::arrow::ArrowWriter<std::fs::File>>,
    input_cols: usize,
    text: Vec<StringBuilder>,
    floats: Vec<Float64Builder>,
    ints: Vec<Int64Builder>,
    rows: usize,
}

impl ParquetSink {
    fn new(path: &Path, input: &[String]) -> Result<Self> {
        let mut fields: Vec<Field> = input
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect();
        for (n, k) in COLUMNS {
            let t = match k {
                Kind::Text => DataType::Utf8,
                Kind::Float => DataType::Float64,
                Kind::Int => DataType::Int64,
            };
            fields.push(Field::new(*n, t, true));
        }
        let schema = Arc::new(Schema::new(fields));
        let file = std::fs::File::create(path).map_err(|source| KnowError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        let writer =
            parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).map_err(|e| {
                KnowError::Parquet {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
        let n_text = input.len() + COLUMNS.iter().filter(|(_, k)| *k == Kind::Text).count();
        let n_f = COLUMNS.iter().filter(|(_, k)| *k == Kind::Float).count();
        let n_i = COLUMNS.iter().filter(|(_, k)| *k == Kind::Int).count();
        Ok(Self {
            path: path.to_path_buf(),
            schema,
            writer: Some(writer),
            input_cols: input.len(),
            text: (0..n_text).map(|_| StringBuilder::new()).collect(),
            floats: (0..n_f).map(|_| Float64Builder::new()).collect(),
            ints: (0..n_i).map(|_| Int64Builder::new()).collect(),
            rows: 0,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> KnowError {
        KnowError::Parquet {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let (mut t, mut f, mut i) = (0, 0, 0);
        for _ in 0..self.input_cols {
            cols.push(Arc::new(self.text[t].finish()));
            t += 1;
        }
        for (_, k) in COLUMNS {
            match k {
                Kind::Text => {
                    cols.push(Arc::new(self.text[t].finish()));
                    t += 1;
                }
                Kind::Float => {
                    cols.push(Arc::new(self.floats[f].finish()));
                    f += 1;
                }
                Kind::Int => {
                    cols.push(Arc::new(self.ints[i].finish()));
                    i += 1;
                }
            }
        }
        let batch = RecordBatch::try_new(self.schema.clone(), cols).map_err(|e| self.err(e))?;
        let w = self.writer.as_mut().expect("writer open until finish");
        let r = w.write(&batch);
        r.map_err(|e| self.err(e))?;
        self.rows = 0;
        Ok(())
    }
}

impl RowSink for ParquetSink {
    fn header(&mut self, _input: &[String]) -> Result<()> {
        Ok(())
    }
    fn row(&mut self, fields: &[String], cells: &[Cell]) -> Result<()> {
        for (b, v) in self.text.iter_mut().zip(fields) {
            b.append_value(v);
        }
        let (mut t, mut f, mut i) = (self.input_cols, 0, 0);
        for c in cells {
            match c {
                Cell::Text(v) => {
                    self.text[t].append_option(v.as_deref());
                    t += 1;
                }
                Cell::Float(v) => {
                    self.floats[f].append_option(*v);
                    f += 1;
                }
                Cell::Int(v) => {
                    self.ints[i].append_option(*v);
                    i += 1;
                }
            }
        }
        self.rows += 1;
        if self.rows >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        self.flush_batch()?;
        if let Some(w) = self.writer.take() {
            w.close().map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `row_cells` fills the cells by position: each position must hold the column it means.
    #[test]
    fn cell_positions_match_the_column_names() {
        let mut features = HashMap::new();
        features.insert(
            "81.2.69.142".parse::<IpAddr>().unwrap(),
            Arc::new(AddrFeatures {
                country: Some("GB".into()),
                city: Some("London".into()),
                lat: Some(51.5),
                lon: Some(-0.1),
                radius_km: Some(10.0),
                location_source: Some("stored".into()),
                time_zone: Some("Europe/London".into()),
                asn: Some(20712),
                organisation: Some("Andrews & Arnold".into()),
                reputation: Vec::new(),
                reason: None,
            }),
        );
        let c = row_cells("81.2.69.142", "2026-07-01T12:00:00Z", &features);
        let get = |n: &str| c[COLUMNS.iter().position(|(x, _)| *x == n).unwrap()].csv();
        assert_eq!(get("country"), "GB");
        assert_eq!(get("radius_km"), "10");
        assert_eq!(get("location_source"), "stored");
        assert_eq!(get("time_zone"), "Europe/London");
        assert_eq!(get("local_time"), "2026-07-01T13:00:00+01:00");
        assert_eq!(get("local_hour"), "13");
        assert_eq!(get("weekday"), "Wed");
        assert_eq!(get("asn"), "20712");
        assert_eq!(get("organisation"), "Andrews & Arnold");
        assert_eq!(get("reason"), "");
        assert_eq!(c.len(), COLUMNS.len());
    }
}
