//! `geoloc lab ...` subcommands. PLACEHOLDER: replaced by the lab work.
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Bring up the emulated Internet, locate every target through the real system, tear down.
    Demo,
}

pub fn run(_args: LabArgs) -> anyhow::Result<()> {
    anyhow::bail!("geoloc lab: not implemented yet")
}
