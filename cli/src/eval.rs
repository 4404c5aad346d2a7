use clap::Args;
#[derive(Debug, Args)]
pub struct EvalArgs {}
pub fn run(_a: EvalArgs) -> anyhow::Result<()> { anyhow::bail!("not yet") }
