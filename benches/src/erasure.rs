//! `crowd-bench erasure` (being built).

#[derive(Debug, clap::Args)]
pub struct ErasureArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: ErasureArgs) -> anyhow::Result<()> {
    anyhow::bail!("crowd-bench erasure is not built yet")
}
