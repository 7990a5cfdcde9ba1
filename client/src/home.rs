//! The client's home directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// `--home` / `CROWD_HOME`, else `~/.crowd`.
pub fn resolve(home: Option<&Path>) -> Result<PathBuf> {
    if let Some(h) = home {
        return Ok(h.to_path_buf());
    }
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h).join(".crowd")),
        _ => bail!("no home directory: pass --home DIR or set CROWD_HOME"),
    }
}
