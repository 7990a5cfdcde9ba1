//! The resume directory next to a get's output: `.<OUT>.crowd-get/`, with a
//! `target` file naming what is being retrieved (root CID and range) and one
//! file per piece, `<index>`, holding the verified bytes fetched so far (the
//! planned piece ranges back to back). A directory for another target is
//! emptied; a finished get removes it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use crowd_erasure::PieceSource;

use super::plan::PieceRanges;

#[derive(Debug)]
pub struct ResumeDir {
    dir: PathBuf,
}

/// The resume directory for output `out`.
pub fn resume_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parent.join(format!(".{name}.crowd-get"))
}

impl ResumeDir {
    /// Opens (or starts afresh) the resume directory for `out` and `target`.
    pub fn open(out: &Path, target: &str) -> Result<Self> {
        let dir = resume_path(out);
        let marker = dir.join("target");
        match std::fs::read_to_string(&marker) {
            Ok(t) if t == target => return Ok(Self { dir }),
            Ok(_) => {
                std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?
            }
            Err(_) if dir.exists() => {
                std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?
            }
            Err(_) => {}
        }
        // not create_dir_all: a missing parent of OUT is an error
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        crate::input::write_atomically(&marker, |f| {
            use std::io::Write;
            f.write_all(target.as_bytes())?;
            Ok(())
        })?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn piece_path(&self, index: usize) -> PathBuf {
        self.dir.join(index.to_string())
    }

    /// Verified bytes held of piece `index` (its file's length).
    pub fn have(&self, index: usize) -> u64 {
        std::fs::metadata(self.piece_path(index))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Drops what is held of piece `index`.
    pub fn reset(&self, index: usize) -> Result<()> {
        match std::fs::remove_file(self.piece_path(index)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", self.piece_path(index).display())),
        }
    }

    /// Opens piece `index` for appending at compact offset `at` (anything
    /// after it is cut off).
    pub fn append(&self, index: usize, at: u64) -> Result<File> {
        use std::io::{Seek, SeekFrom};
        let path = self.piece_path(index);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        f.set_len(at)
            .with_context(|| format!("cannot truncate {}", path.display()))?;
        f.seek(SeekFrom::Start(at))?;
        Ok(f)
    }

    /// Piece `index` as a decoder source, if complete.
    pub fn source<'p>(
        &self,
        index: usize,
        plan: &'p PieceRanges,
        piece_len: u64,
    ) -> Result<PlannedPiece<'p>> {
        let path = self.piece_path(index);
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(PlannedPiece {
            file,
            plan,
            piece_len,
        })
    }

    /// Removes the directory (the get is done).
    pub fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("cannot remove {}", self.dir.display()))
    }
}

/// A piece file holding the planned ranges back to back, read at piece
/// offsets.
#[derive(Debug)]
pub struct PlannedPiece<'p> {
    file: File,
    plan: &'p PieceRanges,
    piece_len: u64,
}

impl PieceSource for PlannedPiece<'_> {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.piece_len)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let at = self.plan.locate(offset, buf.len() as u64).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "bytes outside the fetched ranges")
        })?;
        self.file.read_exact_at(buf, at)
    }
}
