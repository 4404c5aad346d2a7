//! Client commands of the `geoloc` binary that talk to a coordinator.
//! PLACEHOLDER: replaced by the fleet work.
use clap::Args;

/// `geoloc locate IP...`
#[derive(Debug, Args)]
pub struct LocateArgs {
    /// Addresses to locate.
    pub ips: Vec<String>,
}

/// `geoloc audit --file IPS.csv --output OUT.csv`
#[derive(Debug, Args)]
pub struct AuditArgs {}

/// `geoloc probes`
#[derive(Debug, Args)]
pub struct ProbesArgs {}

pub fn run_locate(_args: LocateArgs) -> anyhow::Result<()> {
    anyhow::bail!("geoloc locate: not implemented yet")
}
pub fn run_audit(_args: AuditArgs) -> anyhow::Result<()> {
    anyhow::bail!("geoloc audit: not implemented yet")
}
pub fn run_probes(_args: ProbesArgs) -> anyhow::Result<()> {
    anyhow::bail!("geoloc probes: not implemented yet")
}
