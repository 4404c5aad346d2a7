//! Stored results, newest first (`ListResults`): the History page of the web interface and
//! `geoloc results list`.
use clap::Args;
use geoloc_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{printable, Client, Failure, DEFAULT_COORDINATOR};

/// Most results the coordinator returns in one page.
pub const MAX_PAGE: u32 = 500;

/// One stored result as listed. JSON schema: client/README.md (`geoloc results list --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultSummary {
    pub result_id: String,
    pub ip: String,
    /// `running`, `done`, `failed` or `interrupted`.
    pub status: String,
    pub created_at_unix_ms: i64,
    /// Estimate, degrees; radius, km (only for `done`).
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub radius_km: Option<f64>,
    pub country: String,
    pub city: String,
    pub error_code: String,
    pub error: String,
}

/// A page of results and the token of the next (older) one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsPage {
    pub results: Vec<ResultSummary>,
    /// `None` on the last page.
    pub next_page_token: Option<String>,
}

fn text(field: &str, s: &str, max: usize) -> Result<String, Failure> {
    if s.len() > max {
        return Err(Failure::new(
            "bad-result",
            format!("{field}: {} bytes (at most {max})", s.len()),
        ));
    }
    Ok(s.to_string())
}

impl TryFrom<&pb::ResultSummary> for ResultSummary {
    type Error = Failure;
    /// Checks what the coordinator sent (bounded texts, a known status, a position on Earth).
    fn try_from(r: &pb::ResultSummary) -> Result<Self, Failure> {
        let bad = |m: String| Failure::new("bad-result", m);
        if !["running", "done", "failed", "interrupted"].contains(&r.status.as_str()) {
            return Err(bad(format!(
                "result summary status {:?}",
                printable(&r.status)
            )));
        }
        if let Some(e) = &r.estimate {
            if !(e.lat.is_finite()
                && e.lon.is_finite()
                && e.lat.abs() <= 90.0
                && e.lon.abs() <= 180.0)
            {
                return Err(bad(format!(
                    "result summary estimate ({}, {}) is not a position",
                    e.lat, e.lon
                )));
            }
        }
        if let Some(x) = r.radius_km.filter(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(bad(format!("result summary radius_km {x}")));
        }
        Ok(ResultSummary {
            result_id: text("result_id", &r.result_id, 64)?,
            ip: text("ip", &r.ip, 64)?,
            status: r.status.clone(),
            created_at_unix_ms: r.created_at_unix_ms,
            lat: r.estimate.as_ref().map(|e| e.lat),
            lon: r.estimate.as_ref().map(|e| e.lon),
            radius_km: r.radius_km,
            country: text("country", &r.country, 16)?,
            city: text("city", &r.city, 256)?,
            error_code: text("error_code", &r.error_code, 64)?,
            error: text("error", &r.error, 4096)?,
        })
    }
}

impl Client {
    /// Stored results, newest first: of `ip` ('' = every address), `limit` per page
    /// (0 = the coordinator's default of 50, at most [`MAX_PAGE`]), from `page_token`
    /// ('' = the newest).
    pub async fn list_results(
        &mut self,
        ip: &str,
        limit: u32,
        page_token: &str,
    ) -> Result<ResultsPage, Failure> {
        let req = pb::ListResultsRequest {
            ip: ip.to_string(),
            limit: limit.min(MAX_PAGE),
            page_token: page_token.to_string(),
        };
        let reply = match self.inner.list_results(self.request(req)).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                return Err(Failure::new(&crate::invalid_code(&s), s.message()))
            }
            Err(s) => return Err(self.failure(&s)),
        };
        if reply.results.len() > MAX_PAGE as usize {
            return Err(Failure::new(
                "bad-result",
                format!(
                    "{} results in one page (at most {MAX_PAGE})",
                    reply.results.len()
                ),
            ));
        }
        Ok(ResultsPage {
            results: reply
                .results
                .iter()
                .map(ResultSummary::try_from)
                .collect::<Result<_, _>>()?,
            next_page_token: Some(text("next_page_token", &reply.next_page_token, 128)?)
                .filter(|t| !t.is_empty()),
        })
    }
}

/// `geoloc results list`
#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// Coordinator URL.
    #[arg(long, env = "GEOLOC_COORDINATOR", default_value = DEFAULT_COORDINATOR, value_name = "URL")]
    pub coordinator: String,
    #[command(flatten)]
    pub ca: crate::CaArg,
    /// Only the results of this address.
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// Results per page (at most 500).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
    /// Start from this page (the `next page:` token a previous listing printed).
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
    /// Print the page as JSON (`{"results": [...], "next_page_token": ...}`).
    #[arg(long)]
    pub json: bool,
}

/// `geoloc results list`.
pub fn run_results_list(args: ResultsArgs) -> anyhow::Result<()> {
    crate::runtime()?.block_on(async {
        let mut client = Client::connect_with(&args.coordinator, &args.ca.options()).await?;
        let page = client
            .list_results(
                args.ip.as_deref().unwrap_or(""),
                args.limit,
                args.page_token.as_deref().unwrap_or(""),
            )
            .await
            .map_err(|f| {
                anyhow::anyhow!("listing results: {}: {}", f.code, printable(&f.message))
            })?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&page)?);
            return Ok(());
        }
        println!(
            "{:<32} {:<24} {:<11} {:<20} {:>9} {:>10} {:>9} place",
            "result", "ip", "status", "created (UTC)", "lat", "lon", "radius km"
        );
        for r in &page.results {
            println!("{}", table_row(r));
        }
        if let Some(t) = &page.next_page_token {
            eprintln!("next page: --page-token {t}");
        }
        Ok(())
    })
}

fn num(x: Option<f64>, width: usize, prec: usize) -> String {
    x.map(|v| format!("{v:>width$.prec$}"))
        .unwrap_or_else(|| format!("{:>width$}", "-"))
}

/// One line of the `geoloc results list` table (texts from the coordinator escaped).
pub fn table_row(r: &ResultSummary) -> String {
    let created = chrono::DateTime::from_timestamp_millis(r.created_at_unix_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| r.created_at_unix_ms.to_string());
    let place = if r.status == "done" {
        format!("{} {}", r.city, r.country)
    } else {
        format!("{}: {}", r.error_code, r.error)
    };
    format!(
        "{:<32} {:<24} {:<11} {:<20} {} {} {} {}",
        printable(&r.result_id),
        printable(&r.ip),
        r.status,
        created,
        num(r.lat, 9, 4),
        num(r.lon, 10, 4),
        num(r.radius_km, 9, 0),
        printable(&place)
    )
}
