//! `crowd-bench proofs` (being built).

#[derive(Debug, clap::Args)]
pub struct ProofsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: ProofsArgs) -> anyhow::Result<()> {
    anyhow::bail!("crowd-bench proofs is not built yet")
}
