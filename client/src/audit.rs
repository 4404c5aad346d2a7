//! `geoloc audit`: locate a list of addresses through a coordinator and write one CSV row per
//! input line, in input order, failures included (with the reason). Resumable: rows already
//! in the output are kept and not measured again, and the coordinator is asked to return
//! stored results (`reuse_stored`), so an address measured before an interruption is not
//! measured twice even if its row was not written yet.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use geoloc_proto::v1 as pb;

use crate::{status_msg, Failure, Located, Mode, Source, DEFAULT_COORDINATOR};

/// Every column, in default order.
pub const COLUMNS: &[&str] = &[
    "ip",
    "lat",
    "lon",
    "radius_km",
    "city",
    "country",
    "timezone",
    "utc_offset",
    "anycast",
    "probes_used",
    "min_rtt_ms",
    "nearest_probe",
    "maxmind_lat",
    "maxmind_lon",
    "maxmind_city",
    "maxmind_country",
    "maxmind_accuracy_km",
    "maxmind_distance_km",
    "maxmind_verdict",
    "error",
];

/// Error codes of rows that a resumed run measures again.
pub const TRANSIENT_CODES: &[&str] = &["no-probes", "internal", "interrupted"];

/// Longest input line, bytes. Longer lines become an error row (the rest of the line is
/// skipped without being held in memory).
pub const MAX_LINE_BYTES: usize = 4096;

/// `geoloc audit --file IPS.csv --output OUT.csv`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Input: one address per line, or a CSV whose header has an `ip` column; `-` = stdin.
    #[arg(long, value_name = "IPS.csv|-")]
    pub file: PathBuf,
    /// Output CSV. If it exists, rows already there are kept and not measured again.
    #[arg(long, value_name = "OUT.csv")]
    pub output: PathBuf,
    /// Comma-separated output columns (default: all; `ip` is required). Known: ip, lat, lon,
    /// radius_km, city, country, timezone, utc_offset, anycast, probes_used, min_rtt_ms,
    /// nearest_probe, maxmind_lat, maxmind_lon, maxmind_city, maxmind_country,
    /// maxmind_accuracy_km, maxmind_distance_km, maxmind_verdict, error.
    #[arg(long, value_name = "LIST")]
    pub columns: Option<String>,
    /// Coordinator URL.
    #[arg(long, env = "GEOLOC_COORDINATOR", default_value = DEFAULT_COORDINATOR, value_name = "URL")]
    pub coordinator: String,
    #[command(flatten)]
    pub ca: crate::CaArg,
    /// Scheduling mode (default: the coordinator's).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Per-probe timeout, ms (default: the coordinator's).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u32>,
    /// Addresses measured at the same time (default: the coordinator's).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// Where the vantage points come from: fleet, atlas (RIPE Atlas through the
    /// coordinator, credits capped per address by its atlas-max-credits) or both
    /// (default: fleet).
    #[arg(long, value_enum)]
    pub source: Option<Source>,
    /// Most vantage points asked per address, chosen in phased rounds (default: no limit).
    #[arg(long, value_name = "N")]
    pub budget: Option<u32>,
    /// Measure again rows that failed in a previous run (by default they are kept).
    #[arg(long)]
    pub retry_failed: bool,
    /// Measure again even when the coordinator has a stored result.
    #[arg(long)]
    pub fresh: bool,
    /// How long to keep retrying while the coordinator is unreachable, seconds.
    #[arg(long, default_value_t = 60, value_name = "S")]
    pub retry_for_s: u64,
}

/// One input address (or a bad line).
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// 1-based line number in the input.
    pub line: usize,
    /// The address as written (trimmed), or a shortened form of a bad line.
    pub ip: String,
    /// Why this line cannot be measured.
    pub error: Option<String>,
}

fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Reads one line of at most `max` bytes into `buf`; returns None at end of input, else the
/// full length of the line (which may exceed `max`: then only the first `max` bytes are kept).
fn read_line_bounded(
    r: &mut impl BufRead,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if any { Some(total) } else { None });
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        total += take;
        r.consume(take + usize::from(done));
        if done {
            return Ok(Some(total));
        }
    }
}

/// The fields of one CSV line (quotes and surrounding spaces removed), read with the `csv`
/// crate; a line it cannot read is one field.
fn split_fields(line: &str) -> Vec<String> {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(line.as_bytes());
    let mut rec = csv::StringRecord::new();
    match rd.read_record(&mut rec) {
        Ok(true) => rec.iter().map(String::from).collect(),
        _ => vec![line.trim().to_string()],
    }
}

/// Parses the input: blank lines and `#` comments are skipped; a first line with an `ip`
/// (or `address`) column is a header; otherwise the first field of each line is the address.
pub fn read_inputs(r: impl Read) -> anyhow::Result<Vec<Input>> {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut line_no = 0usize;
    let mut col: Option<usize> = None;
    while let Some(len) =
        read_line_bounded(&mut r, MAX_LINE_BYTES, &mut buf).context("reading the input")?
    {
        line_no += 1;
        if len > MAX_LINE_BYTES {
            let head = String::from_utf8_lossy(&buf[..buf.len().min(40)]).to_string();
            out.push(Input {
                line: line_no,
                ip: format!("{}...", head.trim()),
                error: Some(format!(
                    "line {line_no} is {len} bytes long (limit {MAX_LINE_BYTES} bytes)"
                )),
            });
            continue;
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.trim_end_matches('\r').trim(),
            Err(_) => {
                out.push(Input {
                    line: line_no,
                    ip: shorten(String::from_utf8_lossy(&buf).trim()),
                    error: Some(format!("line {line_no} is not valid UTF-8")),
                });
                continue;
            }
        };
        let text = text.trim_start_matches('\u{feff}');
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let fields = split_fields(text);
        let c = match col {
            Some(c) => c,
            None => {
                let header = fields.iter().position(|f| {
                    f.eq_ignore_ascii_case("ip") || f.eq_ignore_ascii_case("address")
                });
                col = Some(header.unwrap_or(0));
                if header.is_some() {
                    continue;
                }
                0
            }
        };
        let Some(field) = fields.get(c) else {
            out.push(Input {
                line: line_no,
                ip: shorten(text),
                error: Some(format!("line {line_no} has no column {}", c + 1)),
            });
            continue;
        };
        let error = geoloc_policy::parse_target(field, true)
            .err()
            .map(|e| format!("{}: {}", e.code, e.message));
        out.push(Input {
            line: line_no,
            ip: shorten(field),
            error,
        });
    }
    Ok(out)
}

/// Validates `--columns`.
pub fn parse_columns(list: Option<&str>) -> anyhow::Result<Vec<String>> {
    let Some(list) = list else {
        return Ok(COLUMNS.iter().map(|c| c.to_string()).collect());
    };
    let cols: Vec<String> = split_fields(list)
        .into_iter()
        .filter(|c| !c.is_empty())
        .collect();
    if cols.is_empty() {
        bail!("--columns is empty; known columns: {}", COLUMNS.join(","));
    }
    for c in &cols {
        if !COLUMNS.contains(&c.as_str()) {
            bail!(
                "unknown column {c:?} in --columns; known columns: {}",
                COLUMNS.join(",")
            );
        }
    }
    for (i, c) in cols.iter().enumerate() {
        if cols[..i].contains(c) {
            bail!("column {c:?} appears twice in --columns");
        }
    }
    if !cols.iter().any(|c| c == "ip") {
        bail!("--columns must include ip (rows are matched to the input by it when resuming)");
    }
    Ok(cols)
}

fn num(x: Option<f64>, decimals: usize) -> String {
    x.map_or(String::new(), |x| format!("{x:.decimals$}"))
}

/// All column values of a row for `ip`: a located result, or an error message.
pub fn row_values(ip: &str, outcome: &Result<Located, String>) -> BTreeMap<&'static str, String> {
    let mut m: BTreeMap<&'static str, String> =
        COLUMNS.iter().map(|c| (*c, String::new())).collect();
    m.insert("ip", ip.to_string());
    match outcome {
        Err(e) => {
            m.insert("error", e.replace(['\n', '\r'], " "));
        }
        Ok(r) => {
            let s = &r.solution;
            m.insert("lat", num(Some(s.estimate.lat), 4));
            m.insert("lon", num(Some(s.estimate.lon), 4));
            m.insert("radius_km", num(Some(s.radius_km), 1));
            m.insert("city", s.place.city.clone());
            m.insert("country", s.place.country.clone());
            m.insert("timezone", s.timezone.iana.clone());
            m.insert("utc_offset", s.timezone.utc_offset.clone());
            m.insert("anycast", s.anycast.to_string());
            m.insert("probes_used", r.probes_used.to_string());
            m.insert("min_rtt_ms", num(r.min_rtt_ms, 2));
            m.insert("nearest_probe", r.nearest_probe.clone());
            if let Some(mm) = &s.maxmind {
                m.insert("maxmind_lat", num(mm.lat, 4));
                m.insert("maxmind_lon", num(mm.lon, 4));
                m.insert("maxmind_city", mm.city.clone().unwrap_or_default());
                m.insert("maxmind_country", mm.country.clone().unwrap_or_default());
                m.insert("maxmind_accuracy_km", num(mm.accuracy_radius_km, 0));
                m.insert("maxmind_distance_km", num(mm.distance_km, 1));
                let verdict = serde_json::to_value(mm.verdict)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from));
                m.insert("maxmind_verdict", verdict.unwrap_or_default());
            }
        }
    }
    m
}

fn project(values: &BTreeMap<&'static str, String>, cols: &[String]) -> Vec<String> {
    cols.iter()
        .map(|c| values.get(c.as_str()).cloned().unwrap_or_default())
        .collect()
}

/// Rows of a previous run that can be kept: the longest prefix whose `ip` matches the input
/// line at the same position (rows are written in input order). With `retry_failed`, the
/// prefix stops at the first row with an error.
fn previous_rows(
    path: &Path,
    cols: &[String],
    inputs: &[Input],
    retry_failed: bool,
) -> anyhow::Result<Vec<Vec<String>>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("opening {}: {e}", path.display())),
    };
    if f.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        return Ok(Vec::new());
    }
    let mut rd = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(f);
    let header: Vec<String> = rd
        .headers()
        .with_context(|| format!("reading {}", path.display()))?
        .iter()
        .map(String::from)
        .collect();
    if header != cols {
        bail!(
            "{} exists with columns {} but this run writes {}; use the same --columns or another --output",
            path.display(),
            header.join(","),
            cols.join(",")
        );
    }
    let ip_col = cols.iter().position(|c| c == "ip").unwrap_or(0);
    let err_col = cols.iter().position(|c| c == "error");
    let mut kept = Vec::new();
    for rec in rd.records() {
        // A torn last line (interrupted write) ends the usable prefix.
        let Ok(rec) = rec else { break };
        if rec.len() != cols.len() {
            break;
        }
        let i = kept.len();
        if i >= inputs.len() || rec.get(ip_col) != Some(inputs[i].ip.as_str()) {
            break;
        }
        if let Some(c) = err_col {
            let err = rec.get(c).unwrap_or("");
            // Failures that say nothing about the address (no probe was available, the
            // coordinator failed) are always retried; the others only with --retry-failed.
            if TRANSIENT_CODES
                .iter()
                .any(|t| err.starts_with(&format!("{t}: ")))
                || (retry_failed && !err.is_empty())
            {
                break;
            }
        }
        kept.push(rec.iter().map(String::from).collect());
    }
    Ok(kept)
}

/// Writes `rows` as a fresh file (atomically: temp file + rename), then reopens it for
/// appending.
fn rewrite(
    path: &Path,
    cols: &[String],
    rows: &[Vec<String>],
) -> anyhow::Result<csv::Writer<File>> {
    let tmp = path.with_extension("csv.partial");
    {
        let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = csv::Writer::from_writer(f);
        w.write_record(cols)?;
        for r in rows {
            w.write_record(r)?;
        }
        w.flush()?;
        w.into_inner()
            .map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?
            .sync_all()?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(csv::WriterBuilder::new().has_headers(false).from_writer(f))
}

pub fn run_audit(args: AuditArgs) -> anyhow::Result<()> {
    let cols = parse_columns(args.columns.as_deref())?;
    let inputs = if args.file.as_os_str() == "-" {
        read_inputs(std::io::stdin().lock())?
    } else {
        let f =
            File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
        read_inputs(f).with_context(|| format!("reading {}", args.file.display()))?
    };
    let src = if args.file.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        args.file.display().to_string()
    };
    if inputs.is_empty() {
        bail!("{src} contains no addresses (one IP per line, or a CSV with an `ip` column)");
    }
    if args.output.is_dir() {
        bail!("--output {} is a directory", args.output.display());
    }
    let kept = previous_rows(&args.output, &cols, &inputs, args.retry_failed)?;
    if !kept.is_empty() {
        eprintln!(
            "resuming: {} of {} rows already in {}",
            kept.len(),
            inputs.len(),
            args.output.display()
        );
    }
    let start = kept.len();
    let mut w = rewrite(&args.output, &cols, &kept)?;
    crate::runtime()?.block_on(audit(args, cols, inputs, start, &mut w))
}

async fn audit(
    args: AuditArgs,
    cols: Vec<String>,
    inputs: Vec<Input>,
    start: usize,
    w: &mut csv::Writer<File>,
) -> anyhow::Result<()> {
    let total = inputs.len();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(start as u64);

    // Finished rows waiting for their turn, by input position.
    let mut ready: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut next = start;
    let mut failures = 0usize;
    let mut pending: Vec<usize> = Vec::new();
    for (i, inp) in inputs.iter().enumerate().skip(start) {
        match &inp.error {
            Some(e) => {
                ready.insert(i, project(&row_values(&inp.ip, &Err(e.clone())), &cols));
                failures += 1;
            }
            None => pending.push(i),
        }
    }
    let flush = |ready: &mut BTreeMap<usize, Vec<String>>,
                 next: &mut usize,
                 w: &mut csv::Writer<File>|
     -> anyhow::Result<()> {
        while let Some(row) = ready.remove(next) {
            w.write_record(&row)?;
            *next += 1;
        }
        w.flush()?;
        Ok(())
    };
    flush(&mut ready, &mut next, w)?;
    bar.set_position(next as u64);

    // Rows that failed for a reason unrelated to the address (no probes yet after a
    // coordinator restart, a shutdown): asked again, and written as failed only when the
    // retry window ends without an answer.
    let mut deferred: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let retry_for = Duration::from_secs(args.retry_for_s);
    let mut failing_since: Option<std::time::Instant> = None;
    // 0.5 s doubling to 8 s, no jitter; restarted after progress.
    let delays = || {
        use backon::BackoffBuilder as _;
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(8))
            .with_factor(2.0)
            .without_max_times()
            .build()
    };
    let mut backoff = delays();
    // Every address of this run is asked with its own idempotency key: asked again after
    // the coordinator went away (a cluster replica died), it gets the run another replica
    // finished or took over instead of a second measurement.
    let run_key = crate::new_job_key("audit");
    while !pending.is_empty() {
        let before = pending.len();
        let err = match batch_once(
            &args,
            &run_key,
            &inputs,
            &mut pending,
            &cols,
            &mut ready,
            &mut deferred,
            &mut failures,
            &bar,
            |ready| {
                flush(ready, &mut next, w)?;
                Ok(next)
            },
        )
        .await
        {
            Ok(()) => break,
            Err(e) => e,
        };
        if pending.len() < before {
            // Progress: the retry window starts again from this failure.
            failing_since = None;
            backoff = delays();
        }
        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= retry_for {
            // Give up on the transient rows: written with their reason (a later run redoes
            // them), so the output keeps one row per input.
            pending.retain(|i| match deferred.remove(i) {
                Some(row) => {
                    ready.insert(*i, row);
                    failures += 1;
                    false
                }
                None => true,
            });
            flush(&mut ready, &mut next, w)?;
            bar.set_position(next as u64);
            if pending.is_empty() {
                break;
            }
            bar.abandon();
            return Err(err.context(format!(
                "gave up after {} s without progress; {} rows written, run the same command again to resume",
                args.retry_for_s, next
            )));
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(8));
        bar.println(format!(
            "coordinator: {err:#}; retrying in {} ms",
            delay.as_millis()
        ));
        tokio::time::sleep(delay).await;
    }
    flush(&mut ready, &mut next, w)?;
    bar.finish_and_clear();
    eprintln!(
        "{total} rows in {} ({failures} failed)",
        args.output.display()
    );
    if next != total {
        bail!("internal error: {next} of {total} rows written");
    }
    if total > start && failures == total - start {
        return Err(crate::NotLocated(format!(
            "every one of the {} rows failed (see the error column of {})",
            total - start,
            args.output.display()
        ))
        .into());
    }
    Ok(())
}

/// One LocateBatch call for the `pending` inputs; removes each finished one from `pending`.
/// Returns Err on a transport problem (the caller retries the rest).
#[allow(clippy::too_many_arguments)]
async fn batch_once(
    args: &AuditArgs,
    run_key: &str,
    inputs: &[Input],
    pending: &mut Vec<usize>,
    cols: &[String],
    ready: &mut BTreeMap<usize, Vec<String>>,
    deferred: &mut BTreeMap<usize, Vec<String>>,
    failures: &mut usize,
    bar: &indicatif::ProgressBar,
    mut flush: impl FnMut(&mut BTreeMap<usize, Vec<String>>) -> anyhow::Result<usize>,
) -> anyhow::Result<()> {
    let opts = args.ca.options();
    let mut client = crate::connect_with(&args.coordinator, &opts).await?;
    let req = pb::LocateBatchRequest {
        ips: pending.iter().map(|&i| inputs[i].ip.clone()).collect(),
        mode: Mode::to_pb(args.mode) as i32,
        timeout_ms: args.timeout_ms.unwrap_or(0),
        k: 0,
        reuse_stored: !args.fresh,
        ping_count: 0,
        concurrency: args.concurrency.unwrap_or(0),
        source: Source::to_pb(args.source) as i32,
        budget: args.budget.unwrap_or(0),
        job_keys: pending.iter().map(|&i| format!("{run_key}/{i}")).collect(),
    };
    let batch: Vec<usize> = pending.clone();
    let mut stream = client
        .locate_batch(req)
        .await
        .map_err(|s| anyhow!(crate::call_error(&args.coordinator, &opts, &s)))?
        .into_inner();
    let mut finished: Vec<bool> = vec![false; batch.len()];
    loop {
        let msg = match tokio::time::timeout(Duration::from_secs(600), stream.message()).await {
            Err(_) => bail!("no news from the coordinator for 600 s"),
            Ok(Err(s)) => {
                pending.retain(|i| {
                    batch
                        .iter()
                        .position(|b| b == i)
                        .is_none_or(|k| !finished[k])
                });
                bail!(status_msg(&s));
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(m))) => m,
        };
        let k = msg.index as usize;
        let Some(&i) = batch.get(k) else { continue };
        let outcome = match msg.event {
            // A result that fails the checks of geoloc_proto::convert is this row's error.
            Some(pb::locate_event::Event::Result(r)) => {
                Located::try_from(&r).map_err(|e| format!("bad-result: {e}"))
            }
            Some(pb::locate_event::Event::Error(e)) => {
                let Failure { code, message } = Failure::from_pb(&e);
                let reason = Err(format!("{code}: {message}"));
                if TRANSIENT_CODES.contains(&code.as_str()) {
                    // Left pending: asked again after a pause (see `audit`).
                    deferred.insert(i, project(&row_values(&inputs[i].ip, &reason), cols));
                    continue;
                }
                reason
            }
            _ => continue,
        };
        if finished[k] {
            continue;
        }
        finished[k] = true;
        deferred.remove(&i);
        if outcome.is_err() {
            *failures += 1;
        }
        ready.insert(i, project(&row_values(&inputs[i].ip, &outcome), cols));
        let written = flush(ready)?;
        bar.set_position(written as u64);
        bar.set_message(inputs[i].ip.clone());
    }
    pending.retain(|i| {
        batch
            .iter()
            .position(|b| b == i)
            .is_none_or(|k| !finished[k])
    });
    if !pending.is_empty() {
        let transient = pending.iter().filter(|i| deferred.contains_key(i)).count();
        bail!(
            "the coordinator ended the batch with {} addresses unanswered ({transient} with a transient error such as no-probes)",
            pending.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_list_and_csv_with_header() {
        let i = read_inputs("81.2.69.142\n\n# comment\n2001:db8::1\nnope\n".as_bytes()).unwrap();
        assert_eq!(i.len(), 3);
        assert_eq!(
            i[0],
            Input {
                line: 1,
                ip: "81.2.69.142".into(),
                error: None
            }
        );
        assert_eq!(i[1].error, None);
        assert_eq!(
            i[2].error.as_deref(),
            Some("invalid-address: not an IP address: \"nope\"")
        );
        let i = read_inputs("name,IP\nfoo,\"1.1.1.1\"\nbar\n".as_bytes()).unwrap();
        assert_eq!(i.len(), 2);
        assert_eq!(i[0].ip, "1.1.1.1");
        assert_eq!(i[1].error.as_deref(), Some("line 3 has no column 2"));
    }

    #[test]
    fn ten_megabyte_line_is_an_error_row_not_a_crash() {
        let mut data = b"1.1.1.1\n".to_vec();
        data.extend(std::iter::repeat_n(b'a', 10 << 20));
        data.extend(b"\n8.8.8.8\n");
        let i = read_inputs(&data[..]).unwrap();
        assert_eq!(i.len(), 3);
        assert_eq!(
            i[1].error.as_deref(),
            Some("line 2 is 10485760 bytes long (limit 4096 bytes)")
        );
        assert!(i[1].ip.len() < 70);
        assert_eq!(i[2].ip, "8.8.8.8");
    }

    #[test]
    fn empty_input_has_no_rows() {
        assert!(read_inputs("".as_bytes()).unwrap().is_empty());
        assert!(read_inputs("\n# only a comment\n".as_bytes())
            .unwrap()
            .is_empty());
        assert!(read_inputs("ip\n".as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn columns_are_checked() {
        assert_eq!(parse_columns(None).unwrap().len(), COLUMNS.len());
        assert_eq!(parse_columns(Some("ip, city")).unwrap(), ["ip", "city"]);
        assert!(parse_columns(Some("ip,citty"))
            .unwrap_err()
            .to_string()
            .contains("unknown column \"citty\""));
        assert!(parse_columns(Some("city"))
            .unwrap_err()
            .to_string()
            .contains("must include ip"));
        assert!(parse_columns(Some("ip,ip")).is_err());
    }
}
