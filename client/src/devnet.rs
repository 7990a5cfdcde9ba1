//! `crowd devnet`: a tracker and storage nodes as local processes.
//! (Being built for issue #7.)

use std::path::Path;

use anyhow::{bail, Result};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum DevnetCmd {
    Up,
    Status,
    Down,
}

pub fn run(_home: &Path, _cmd: DevnetCmd) -> Result<()> {
    bail!("devnet is not built yet")
}
