//! Network commands: put, get, export, ls, status, balance.
//! (Being built for issue #7.)

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct PutArgs {
    pub file: PathBuf,
}
#[derive(Debug, Args)]
pub struct GetArgs {
    pub cid: String,
}
#[derive(Debug, Args)]
pub struct ExportArgs {
    pub cid: String,
}
#[derive(Debug, Args)]
pub struct LsArgs {}
#[derive(Debug, Args)]
pub struct StatusArgs {
    pub cid: String,
}
#[derive(Debug, Args)]
pub struct BalanceArgs {}

pub fn put(_home: &Path, _args: PutArgs) -> Result<()> {
    bail!("put is not built yet")
}
pub fn get(_home: &Path, _args: GetArgs) -> Result<()> {
    bail!("get is not built yet")
}
pub fn export(_home: &Path, _args: ExportArgs) -> Result<()> {
    bail!("export is not built yet")
}
pub fn ls(_home: &Path, _args: LsArgs) -> Result<()> {
    bail!("ls is not built yet")
}
pub fn status(_home: &Path, _args: StatusArgs) -> Result<()> {
    bail!("status is not built yet")
}
pub fn balance(_home: &Path, _args: BalanceArgs) -> Result<()> {
    bail!("balance is not built yet")
}
