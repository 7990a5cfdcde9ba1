//! `crowd put`. (Being built for issue #7.)

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct PutArgs {
    pub file: PathBuf,
}

pub fn put(_home: &Path, _args: PutArgs) -> Result<()> {
    bail!("put is not built yet")
}
