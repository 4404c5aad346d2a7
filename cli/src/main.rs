//! `geoloc`: the command-line client.
//!
//! `solve`, `eval` and `eval-anycast` run the engine locally on data files; `locate`, `audit` and `probes`
//! talk to a coordinator; `lab` runs the emulated Internet; `import atlas` solves from
//! downloaded RIPE Atlas results and `atlas` talks to the RIPE Atlas API.
use clap::{CommandFactory, Parser, Subcommand};

mod atlas;
mod audit_extra;
mod eval;
mod eval_budget;
mod eval_verdicts;
mod know;
mod solve;
mod web_lab;

#[derive(Debug, Parser)]
#[command(
    name = "geoloc",
    version,
    about = "Find where an IP address is by measuring it"
)]
struct Cli {
    /// File whose first line is the API key sent to the coordinator (`locate`, `audit`,
    /// `probes`, `know`, `web`); without it the key is read from GEOLOC_API_KEY.
    #[arg(long, global = true, value_name = "FILE")]
    api_key_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Solve one target from a CSV of landmark RTTs and print the answer as JSON.
    Solve(solve::SolveArgs),
    /// Leave-one-out evaluation on a nodes.csv/rtts.csv data set.
    Eval(eval::EvalArgs),
    /// Anycast evaluation on iGreedy's ground truth (a directory of airports.csv and
    /// measurements/<target> files).
    EvalAnycast(eval::EvalAnycastArgs),
    /// Leave-one-out with the budgeted, phased probe selection and calibrated 50%/90%
    /// radii (fitted without the target).
    EvalBudget(eval_budget::EvalBudgetArgs),
    /// The phased selection in a dense emulated world (RIPE Atlas anchors plus GeoNames
    /// cities, delays from the lab's model).
    EvalDense(eval_budget::EvalDenseArgs),
    /// False MaxMind proofs on a nodes.csv/rtts.csv mesh: random probe sets, each other
    /// node the target, its true position and a point 6,000 km away judged (exit 1 on any
    /// provably-wrong true position).
    EvalVerdicts(eval_verdicts::EvalVerdictsArgs),
    /// Locate IPs through a coordinator, with live progress.
    Locate(geoloc_client::LocateArgs),
    /// Locate a list of IPs through a coordinator and write a CSV (resumable).
    Audit(audit_extra::AuditCmd),
    /// List the probe fleet known to a coordinator.
    Probes(geoloc_client::ProbesArgs),
    /// Stored results on a coordinator: `results list` (newest first, paged).
    Results(ResultsCmd),
    /// The emulated Internet on one machine (root).
    Lab(geoloc_lab::cli::LabArgs),
    /// Load test of one coordinator: starts `geoloc-coordinator` on loopback, connects
    /// simulated probes and clients, prints (and writes as JSON) what it holds and takes.
    Loadtest(geoloc_loadtest::LoadtestArgs),
    /// Solve offline from measurement files downloaded elsewhere (`import atlas`).
    Import(atlas::ImportArgs),
    /// RIPE Atlas: list probes, estimate a measurement's credits, locate with a one-off
    /// measurement.
    Atlas(atlas::AtlasArgs),
    /// Serve the web interface (live locate map, fleet, audit, history) on a loopback address.
    Web(web_lab::WebCmd),
    /// Everything quickly knowable about one address: location, local time, ownership
    /// (rDNS, AS, RDAP), reputation and open services (with your provider keys), links.
    Know(know::KnowArgs),
    /// Add location, local time, AS and cached reputation columns to a connection log
    /// (CSV in; CSV or Parquet out).
    Enrich(know::EnrichArgs),
    /// Hidden: `completions SHELL` and `man DIR` (README, "Shell completions and man pages").
    #[command(flatten)]
    Docs(geoloc_rt::docs::DocsCommand),
}

/// `geoloc results`
#[derive(Debug, clap::Args)]
struct ResultsCmd {
    #[command(subcommand)]
    command: ResultsCommand,
}

#[derive(Debug, Subcommand)]
enum ResultsCommand {
    /// List stored results, newest first, optionally of one address.
    List(geoloc_client::ResultsArgs),
}

/// Writes `value` as pretty JSON to `path` (the `--json FILE` outputs), naming the file on
/// error.
pub(crate) fn write_json(
    path: &std::path::Path,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.api_key_file {
        match geoloc_client::read_api_key_file(path) {
            Ok(key) => geoloc_client::set_api_key(Some(key)),
            Err(e) => {
                eprintln!("geoloc: error: {e:#}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let result = match cli.command {
        Command::Solve(a) => solve::run(a),
        Command::Eval(a) => eval::run(a),
        Command::EvalAnycast(a) => eval::run_anycast(a),
        Command::EvalBudget(a) => eval_budget::run_budget(a),
        Command::EvalDense(a) => eval_budget::run_dense(a),
        Command::EvalVerdicts(a) => eval_verdicts::run(a),
        Command::Locate(a) => geoloc_client::run_locate(a),
        Command::Audit(a) => audit_extra::run(a),
        Command::Probes(a) => geoloc_client::run_probes(a),
        Command::Results(ResultsCmd {
            command: ResultsCommand::List(a),
        }) => geoloc_client::history::run_results_list(a),
        Command::Lab(a) => geoloc_lab::cli::run(a),
        Command::Loadtest(a) => geoloc_loadtest::run_blocking(a)
            .map(|_| ())
            .map_err(anyhow::Error::from),
        Command::Import(a) => atlas::run_import(a),
        Command::Atlas(a) => atlas::run(a),
        Command::Web(a) => web_lab::run(a),
        Command::Know(a) => know::run_know(a),
        Command::Enrich(a) => know::run_enrich(a),
        Command::Docs(d) => d
            .run(Cli::command(), &mut std::io::stdout())
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geoloc: error: {e:#}");
            // See the README's table of exit codes.
            if e.downcast_ref::<geoloc_client::NotLocated>().is_some() {
                std::process::ExitCode::from(1)
            } else {
                std::process::ExitCode::from(2)
            }
        }
    }
}
