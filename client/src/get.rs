//! `crowd get` and `crowd export`. (Being built for issue #7.)

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct GetArgs {
    pub cid: String,
}
#[derive(Debug, Args)]
pub struct ExportArgs {
    pub cid: String,
}

pub fn get(_home: &Path, _args: GetArgs) -> Result<()> {
    bail!("get is not built yet")
}
pub fn export(_home: &Path, _args: ExportArgs) -> Result<()> {
    bail!("export is not built yet")
}
