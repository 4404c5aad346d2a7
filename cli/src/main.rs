//! `geoloc`: the command-line client.
//!
//! `solve`, `eval` and `eval-anycast` run the engine locally on data files; `locate`, `audit` and `probes`
//! talk to a coordinator; `lab` runs the emulated Internet.
use clap::{Parser, Subcommand};

mod audit_extra;
mod eval;
mod solve;
mod web_lab;

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
    Audit(audit_extra::AuditCmd),
    /// List the probe fleet known to a coordinator.
    Probes(geoloc_client::ProbesArgs),
    /// The emulated Internet on one machine (root).
    Lab(geoloc_lab::cli::LabArgs),
    /// Serve the web interface (live locate map, fleet, audit, history) on a loopback address.
    Web(web_lab::WebCmd),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Solve(a) => solve::run(a),
        Command::Eval(a) => eval::run(a),
        Command::EvalAnycast(a) => eval::run_anycast(a),
        Command::Locate(a) => geoloc_client::run_locate(a),
        Command::Audit(a) => audit_extra::run(a),
        Command::Probes(a) => geoloc_client::run_probes(a),
        Command::Lab(a) => geoloc_lab::cli::run(a),
        Command::Web(a) => web_lab::run(a),
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
