//! `crowd demo`. (Being built for issue #7.)

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct DemoArgs {}

pub fn run(_home: Option<&Path>, _args: DemoArgs) -> Result<()> {
    bail!("demo is not built yet")
}
