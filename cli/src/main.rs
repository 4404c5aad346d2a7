//! `geoloc`: the command-line client.
//!
//! `solve`, `eval` and `eval-anycast` run the engine locally on data files; `locate`, `audit` and `probes`
//! talk to a coordinator; `lab` runs the emulated Internet.
use clap::{CommandFactory, Parser, Subcommand};

mod eval;
mod solve;

#[derive(Debug, Parser)]
#[command(
    name = "geoloc",
    version,
    about = "Find where an IP address is by measuring it"
)]
struct Cli {
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
    /// Locate IPs through a coordinator, with live progress.
    Locate(geoloc_client::LocateArgs),
    /// Locate a list of IPs through a coordinator and write a CSV (resumable).
    Audit(geoloc_client::AuditArgs),
    /// List the probe fleet known to a coordinator.
    Probes(geoloc_client::ProbesArgs),
    /// The emulated Internet on one machine (root).
    Lab(geoloc_lab::cli::LabArgs),
    /// Hidden: `completions SHELL` and `man DIR` (README, "Shell completions and man pages").
    #[command(flatten)]
    Docs(geoloc_rt::docs::DocsCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Solve(a) => solve::run(a),
        Command::Eval(a) => eval::run(a),
        Command::EvalAnycast(a) => eval::run_anycast(a),
        Command::Locate(a) => geoloc_client::run_locate(a),
        Command::Audit(a) => geoloc_client::run_audit(a),
        Command::Probes(a) => geoloc_client::run_probes(a),
        Command::Lab(a) => geoloc_lab::cli::run(a),
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
