//! `crowd ls`, `crowd status`, `crowd balance`. (Being built for issue #7.)

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct LsArgs {}
#[derive(Debug, Args)]
pub struct StatusArgs {
    pub cid: String,
}
#[derive(Debug, Args)]
pub struct BalanceArgs {}

pub fn ls(_home: &Path, _args: LsArgs) -> Result<()> {
    bail!("ls is not built yet")
}
pub fn status(_home: &Path, _args: StatusArgs) -> Result<()> {
    bail!("status is not built yet")
}
pub fn balance(_home: &Path, _args: BalanceArgs) -> Result<()> {
    bail!("balance is not built yet")
}
