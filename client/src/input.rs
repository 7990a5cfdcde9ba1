//! Opening input files (memory-mapped when possible) and writing outputs
//! atomically.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// An opened input file.
pub enum Input {
    /// A regular, non-empty file, mapped read-only: hashed in parallel with no copy.
    Mapped(memmap2::Mmap),
    /// A regular empty file.
    Empty,
    /// Anything that cannot be mapped (a pipe, a device): streamed.
    Stream(File),
}

pub fn open(path: &Path) -> Result<Input> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    if meta.is_dir() {
        bail!("{} is a directory", path.display());
    }
    if !meta.is_file() {
        return Ok(Input::Stream(file));
    }
    if meta.len() == 0 {
        return Ok(Input::Empty);
    }
    // SAFETY: the map is read-only and private to this process. If another
    // process truncates the file while we hash it, reads past the new end
    // fault (as with b3sum); a CAR's second pass re-hashes every leaf, so a
    // file that changed in between is reported, never archived wrongly.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&file) };
    match map {
        Ok(map) => Ok(Input::Mapped(map)),
        Err(_) => Ok(Input::Stream(file)),
    }
}

/// Runs `write` against a temporary file next to `dest`, then renames it into
/// place: `dest` is either the complete output or untouched.
pub fn write_atomically<T>(dest: &Path, write: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".crowd-")
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let value = write(tmp.as_file_mut())?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", dest.display()))?;
    tmp.persist(dest)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(value)
}

/// Writes `bytes` to `dest` atomically; `private` makes it mode 0600 before
/// a byte is written (keys, key backups).
pub fn write_bytes(dest: &Path, bytes: &[u8], private: bool) -> Result<()> {
    write_atomically(dest, |f| {
        use std::io::Write;
        if private {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(bytes)?;
        Ok(())
    })
}
