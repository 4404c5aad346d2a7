//! `geoloc audit` options added around `geoloc_client::AuditArgs`: `--report` (HTML or
//! Markdown report of the output, see geoloc-web's `report`), `--know GROUPS` (ownership,
//! reputation and services columns from geoloc-know, `geoloc_know::columns`) and
//! `--at-column` (a `local_time` column from a UTC timestamp column of the input). The added
//! columns come after the audit's own (know groups, then `local_time`); a resumed run removes
//! them first and adds them again.
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::Args;

/// `geoloc audit`
#[derive(Debug, Args)]
pub struct AuditCmd {
    #[command(flatten)]
    pub audit: geoloc_client::AuditArgs,
    /// Also write a report of the output: `.html` (one self-contained file with SVG charts)
    /// or `.md` (Markdown summary).
    #[arg(long, value_name = "REPORT.html|REPORT.md")]
    pub report: Option<PathBuf>,
    /// Add a `local_time` column (last): the time in the row's time zone at the UTC instant
    /// (RFC 3339) given in this column of the input CSV. Needs the `timezone` output column.
    #[arg(long, value_name = "COL")]
    pub at_column: Option<String>,
    #[command(flatten)]
    pub know: KnowColumnsArgs,
}

/// `geoloc audit --know GROUPS` and the sources it draws on (the same as `geoloc know`'s).
#[derive(Debug, Args)]
pub struct KnowColumnsArgs {
    /// Add know column groups after the audit's columns, comma-separated: ownership (rDNS,
    /// AS, RDAP), reputation (AbuseIPDB, VirusTotal), services (Shodan, Censys), or all
    /// (these three); and traceroute (one trace per distinct address through --coordinator
    /// from a probe it chooses: sends packets, one address of the key's quota each; never
    /// part of `all`). One lookup per distinct address; schema in client/README.md.
    #[arg(long, value_name = "GROUPS")]
    pub know: Option<String>,
    /// With --know: ask the configured providers about addresses not in the cache (spends
    /// quota, waits for each provider's rate); without it only cached answers are used.
    #[arg(long, requires = "know")]
    pub query_providers: bool,
    /// With --know: TOML configuration of the sources (sample: know/know.sample.toml).
    #[arg(long, env = "GEOLOC_KNOW_CONFIG", value_name = "FILE")]
    pub know_config: Option<PathBuf>,
    /// With --know: folder with asn-ipv4.csv / asn-ipv6.csv (overrides the config's `asn-db`).
    #[arg(long, requires = "know", value_name = "DIR")]
    pub asn_db: Option<PathBuf>,
    /// With --know: cache folder of provider and RDAP answers (overrides `cache-dir`).
    #[arg(long, requires = "know", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// With --know: DNS server for reverse lookups, IP:port (default: the config's, else
    /// the system's).
    #[arg(long, requires = "know", value_name = "IP:PORT")]
    pub dns_server: Option<std::net::SocketAddr>,
    /// With --know: RDAP base URL (default: the config's, else https://rdap.org).
    #[arg(long, requires = "know", value_name = "URL")]
    pub rdap_url: Option<String>,
}

enum ReportKind {
    Html,
    Markdown,
}

fn report_kind(p: &Path) -> anyhow::Result<ReportKind> {
    match p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("html") | Some("htm") => Ok(ReportKind::Html),
        Some("md") | Some("markdown") => Ok(ReportKind::Markdown),
        _ => bail!(
            "--report {}: the name must end in .html or .md",
            p.display()
        ),
    }
}

/// The name of the `traceroute` group of `--know` (handled here, not by geoloc-know: it
/// asks the coordinator).
pub const TRACEROUTE_GROUP: &str = "traceroute";

/// Splits a `--know` list into geoloc-know's groups (None when only `traceroute` was
/// given) and whether `traceroute` was asked.
pub fn split_know(list: &str) -> Result<(Option<Vec<geoloc_know::columns::Group>>, bool), String> {
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    let trace = names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(TRACEROUTE_GROUP));
    let rest: Vec<&str> = names
        .into_iter()
        .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case(TRACEROUTE_GROUP))
        .collect();
    if trace && rest.is_empty() {
        return Ok((None, true));
    }
    geoloc_know::columns::parse_groups(&rest.join(","))
        .map(|g| (Some(g), trace))
        .map_err(|e| {
            if e.contains("known: ") {
                e.replace("known: ", &format!("known: {TRACEROUTE_GROUP}, "))
            } else {
                e
            }
        })
}

pub fn run(cmd: AuditCmd) -> anyhow::Result<()> {
    let kind = cmd.report.as_deref().map(report_kind).transpose()?;
    let (groups, traceroute) = match cmd.know.know.as_deref() {
        None => (None, false),
        Some(list) => split_know(list).map_err(|e| anyhow!("--know: {e}"))?,
    };
    if let Some(col) = &cmd.at_column {
        if cmd.audit.file.as_os_str() == "-" {
            bail!("--at-column {col} needs --file to be a file (standard input is read once)");
        }
        let cols = geoloc_client::audit::parse_columns(cmd.audit.columns.as_deref())?;
        if !cols.iter().any(|c| c == "timezone") {
            bail!("--at-column needs the timezone column in --columns");
        }
    }
    // The sources are checked (configuration, ASN database) before anything is measured.
    let sources = match &groups {
        None => None,
        Some(g) => Some(know_sources(&cmd.know, g)?),
    };
    if cmd.at_column.is_some() || groups.is_some() || traceroute {
        // A previous run's added columns are removed so the audit can resume.
        let cols = geoloc_client::audit::parse_columns(cmd.audit.columns.as_deref())?;
        strip_added(&cmd.audit.output, &cols)?;
    }
    let output = cmd.audit.output.clone();
    let input = cmd.audit.file.clone();
    let coordinator = cmd.audit.coordinator.clone();
    let connect = cmd.audit.ca.options();
    let audited = geoloc_client::run_audit(cmd.audit);
    // The report and the columns are written even when some rows failed (exit code 1).
    let ran = match &audited {
        Ok(()) => true,
        Err(e) => e.downcast_ref::<geoloc_client::NotLocated>().is_some(),
    };
    if ran {
        if let (Some(g), Some(sources)) = (&groups, &sources) {
            let query = cmd.know.query_providers;
            let st = crate::know::runtime()?.block_on(geoloc_know::columns::append_to_csv(
                &output, g, sources, query, true,
            ))?;
            eprintln!(
                "know columns: {} distinct addresses, {} provider requests",
                st.distinct_addresses, st.provider_requests
            );
        }
        if traceroute {
            let n =
                crate::know::runtime()?.block_on(append_traces(&output, &coordinator, &connect))?;
            eprintln!("traceroute columns: {n} distinct addresses traced");
        }
        if let Some(col) = &cmd.at_column {
            add_local_time(&input, &output, col)?;
        }
        if let (Some(p), Some(kind)) = (&cmd.report, kind) {
            write_report(&output, p, kind)?;
            eprintln!("report in {}", p.display());
        }
    }
    audited
}

fn know_sources(
    a: &KnowColumnsArgs,
    groups: &[geoloc_know::columns::Group],
) -> anyhow::Result<geoloc_know::report::Sources> {
    let ownership = groups.contains(&geoloc_know::columns::Group::Ownership);
    crate::know::sources_from(
        a.know_config.as_deref(),
        None,
        a.asn_db.clone(),
        a.cache_dir.clone(),
        ownership.then_some(a.dns_server),
        ownership.then(|| a.rdap_url.clone()),
    )
}

fn write_report(csv: &Path, out: &Path, kind: ReportKind) -> anyhow::Result<()> {
    let f = File::open(csv).with_context(|| format!("opening {}", csv.display()))?;
    let rows = geoloc_web::report::rows_from_csv(f)?;
    let title = format!("geoloc audit: {}", csv.display());
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = match kind {
        ReportKind::Html => geoloc_web::report::html(&rows, &title, &now),
        ReportKind::Markdown => geoloc_web::report::markdown(&rows, &title, &now),
    };
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))
}

fn read_csv(path: &Path) -> anyhow::Result<(csv::StringRecord, Vec<csv::StringRecord>)> {
    let mut rd = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let header = rd.headers()?.clone();
    let rows = rd
        .records()
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", path.display()))?;
    Ok((header, rows))
}

fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let tmp = path.with_extension("csv.partial");
    let mut w =
        csv::Writer::from_path(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    w.write_record(header)?;
    for r in rows {
        w.write_record(r)?;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Removes the columns this module adds (`local_time`, the know groups') from the end of a
/// previous run's output, when its header is the audit's `cols` followed by only those.
fn strip_added(out: &Path, cols: &[String]) -> anyhow::Result<()> {
    if !out.is_file() || std::fs::metadata(out)?.len() == 0 {
        return Ok(());
    }
    let (header, rows) = read_csv(out)?;
    let n = cols.len();
    let own: Vec<&str> = header.iter().take(n).collect();
    if header.len() <= n || own != cols {
        return Ok(());
    }
    let added = |h: &str| {
        h == "local_time"
            || geoloc_know::columns::all_columns().any(|c| c == h)
            || geoloc_client::trace::TRACE_COLUMNS.contains(&h)
    };
    if !header.iter().skip(n).all(added) {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().take(n).map(String::from).collect())
        .collect();
    write_csv(out, &own, &rows)
}

/// Traces at the same time in `append_traces` (each holds one of the key's `concurrent`
/// slots).
const TRACES_AT_ONCE: usize = 2;

/// Appends the `traceroute` column group to the CSV table at `path`: one trace per distinct
/// address of its `ip` column (a row whose address is not one, or a failed trace, gets the
/// reason in `trace_status`). Returns how many distinct addresses were traced.
async fn append_traces(
    path: &Path,
    url: &str,
    opts: &geoloc_client::ConnectOptions,
) -> anyhow::Result<usize> {
    use futures::StreamExt;
    use geoloc_client::trace::{trace_cells, TRACE_COLUMNS};
    let (header, rows) = read_csv(path)?;
    let ip_col = header
        .iter()
        .position(|h| h == "ip")
        .ok_or_else(|| anyhow!("{} has no ip column", path.display()))?;
    if let Some(c) = header.iter().find(|h| TRACE_COLUMNS.contains(h)) {
        bail!("{} already has a column {c:?}", path.display());
    }
    let ips: Vec<String> = rows
        .iter()
        .map(|r| r.get(ip_col).unwrap_or("").trim().to_string())
        .collect();
    let mut distinct: Vec<&str> = ips.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let client = geoloc_client::Client::connect_with(url, opts).await?;
    let cells: std::collections::HashMap<&str, Vec<String>> =
        futures::stream::iter(distinct.iter().copied())
            .map(|ip| {
                let mut c = client.clone();
                async move {
                    let addr = ip.trim_start_matches('[').trim_end_matches(']');
                    let r = if addr.parse::<std::net::IpAddr>().is_err() {
                        Err(geoloc_client::Failure::new(
                            "invalid-address",
                            "not an IP address",
                        ))
                    } else {
                        c.trace(addr, None, 0).await
                    };
                    (ip, trace_cells(&r))
                }
            })
            .buffer_unordered(TRACES_AT_ONCE)
            .collect()
            .await;
    let mut h: Vec<&str> = header.iter().collect();
    h.extend(TRACE_COLUMNS);
    let out: Vec<Vec<String>> = rows
        .iter()
        .zip(&ips)
        .map(|(r, ip)| {
            let mut v: Vec<String> = r.iter().map(String::from).collect();
            v.extend(cells.get(ip.as_str()).cloned().unwrap_or_default());
            v
        })
        .collect();
    write_csv(path, &h, &out)?;
    Ok(distinct.len())
}

/// The value of column `col` on each data line of the input, by 1-based line number (the
/// numbering of `geoloc_client::audit::read_inputs`).
fn at_values(input: &Path, col: &str) -> anyhow::Result<std::collections::HashMap<usize, String>> {
    let f = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let mut out = std::collections::HashMap::new();
    let mut idx: Option<usize> = None;
    for (n, line) in BufReader::new(f).split(b'\n').enumerate() {
        let line = line?;
        if line.len() > geoloc_client::audit::MAX_LINE_BYTES {
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text
            .trim_end_matches('\r')
            .trim()
            .trim_start_matches('\u{feff}');
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let fields: Vec<String> = text
            .split(',')
            .map(|f| f.trim().trim_matches('"').trim().to_string())
            .collect();
        match idx {
            None => {
                idx = Some(fields.iter().position(|f| f == col).ok_or_else(|| {
                    anyhow!(
                        "--at-column {col}: the first line of {} has no such column (it has: {})",
                        input.display(),
                        fields.join(",")
                    )
                })?);
            }
            Some(i) => {
                if let Some(v) = fields.get(i) {
                    out.insert(n + 1, v.clone());
                }
            }
        }
    }
    Ok(out)
}

/// The `local_time` value of one row: the local time in `tz` at instant `at`, or why not.
pub fn local_time_cell(tz: &str, at: Option<&str>) -> String {
    let Some(at) = at.filter(|a| !a.is_empty()) else {
        return String::new();
    };
    if tz.is_empty() {
        return String::new();
    }
    match geoloc_client::localtime::parse_instant(at)
        .and_then(|t| geoloc_client::localtime::local_time_in(tz, 1.0, t))
    {
        Ok(z) => z.local_time,
        Err(e) => format!("error: {e}").replace(['\n', '\r', ','], " "),
    }
}

fn add_local_time(input: &Path, out: &Path, col: &str) -> anyhow::Result<()> {
    let inputs = geoloc_client::audit::read_inputs(
        File::open(input).with_context(|| format!("opening {}", input.display()))?,
    )?;
    let ats = at_values(input, col)?;
    let (header, rows) = read_csv(out)?;
    let tz_col = header
        .iter()
        .position(|h| h == "timezone")
        .ok_or_else(|| anyhow!("{} has no timezone column", out.display()))?;
    let mut h: Vec<&str> = header.iter().collect();
    h.push("local_time");
    let rows: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = inputs
                .get(i)
                .and_then(|inp| ats.get(&inp.line))
                .map(String::as_str);
            let mut v: Vec<String> = r.iter().map(String::from).collect();
            v.push(local_time_cell(r.get(tz_col).unwrap_or(""), at));
            v
        })
        .collect();
    write_csv(out, &h, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_cells() {
        assert_eq!(
            local_time_cell("Asia/Kolkata", Some("2026-03-14T02:30:00Z")),
            "2026-03-14T08:00:00+05:30"
        );
        assert_eq!(
            local_time_cell("America/New_York", Some("2026-03-08T07:00:00Z")),
            "2026-03-08T03:00:00-04:00"
        );
        assert_eq!(local_time_cell("", Some("2026-03-14T02:30:00Z")), "");
        assert!(local_time_cell("Europe/Paris", Some("yesterday")).starts_with("error: "));
    }

    #[test]
    fn know_lists_split_off_traceroute() {
        use geoloc_know::columns::Group;
        assert_eq!(split_know("traceroute").unwrap(), (None, true));
        assert_eq!(
            split_know("ownership, Traceroute").unwrap(),
            (Some(vec![Group::Ownership]), true)
        );
        assert_eq!(
            split_know("all").unwrap(),
            (Some(Group::ALL.to_vec()), false)
        );
        let e = split_know("trace").unwrap_err();
        assert!(e.contains("known: traceroute, ownership"), "{e}");
    }

    #[test]
    fn at_column_values_follow_the_input_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("in.csv");
        std::fs::write(
            &p,
            "ip,seen\n# c\n1.1.1.1,2026-03-14T02:30:00Z\n\n8.8.8.8,x\n",
        )
        .unwrap();
        let v = at_values(&p, "seen").unwrap();
        let inputs = geoloc_client::audit::read_inputs(File::open(&p).unwrap()).unwrap();
        assert_eq!(v[&inputs[0].line], "2026-03-14T02:30:00Z");
        assert_eq!(v[&inputs[1].line], "x");
        assert!(at_values(&p, "nope")
            .unwrap_err()
            .to_string()
            .contains("no such column"));
    }
}
