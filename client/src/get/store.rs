//! The resume directory next to a get's output: `.<OUT>.crowd-get/`, with a
//! `target` file naming what is being retrieved (root CID and range) and one
//! file per piece, `<index>`, holding the verified bytes fetched so far (the
//! planned piece ranges back to back). A directory for another target is
//! emptied; a finished get removes it.
//!
//! A whole-file get into a path also writes its output here, as `output`,
//! and renames it into place once checked. `frontier` records how many of
//! its first bytes are on disk (advanced after each background
//! `fdatasync`): an interrupted get keeps them and fetches only the rest,
//! and whatever the data pieces' files hold behind them is punched out
//! (the file keeps its length). The data pieces' bytes mostly reach the
//! decoder in memory and never touch their files ([`super::stage`]); so a
//! get holds little beyond its output, in the page cache and on disk,
//! instead of a second copy of the file. [`OutputMap`] says where a kept
//! output resumes and which piece bytes it makes redundant.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use crowd_erasure::PieceSource;

use super::plan::PieceRanges;

#[derive(Debug, Clone)]
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

    /// Opens piece `index` for writing from compact offset `at` on
    /// (anything after it is cut off; writes are at offsets).
    pub fn append(&self, index: usize, at: u64) -> Result<File> {
        let f = self.open_piece(index)?;
        f.set_len(at)
            .with_context(|| format!("cannot truncate {}", self.piece_path(index).display()))?;
        Ok(f)
    }

    /// Opens piece `index` for writing at offsets (a data piece behind a
    /// kept output: sparse, never cut).
    pub fn open_piece(&self, index: usize) -> Result<File> {
        let path = self.piece_path(index);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))
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

    /// Where a whole-file get writes its output until it is complete.
    pub fn output_path(&self) -> PathBuf {
        self.dir.join("output")
    }

    /// Bytes at the start of the output recorded as on disk (0 if none).
    pub fn frontier(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("frontier"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Records that the output's first `n` bytes are on disk: atomically,
    /// and the directory synced, before any piece byte they make redundant
    /// is punched.
    pub fn set_frontier(&self, n: u64) -> Result<()> {
        crate::input::write_atomically(&self.dir.join("frontier"), |f| {
            use std::io::Write;
            writeln!(f, "{n}")?;
            Ok(())
        })?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", self.dir.display()))
    }

    /// Frees compact bytes `range` of piece `index` (page cache and disk
    /// blocks), keeping the file's length. A missing file, or a filesystem
    /// that cannot punch holes, frees nothing.
    pub fn punch(&self, index: usize, range: std::ops::Range<u64>) -> Result<()> {
        use rustix::fs::{fallocate, FallocateFlags};
        if range.is_empty() {
            return Ok(());
        }
        let path = self.piece_path(index);
        let file = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        match fallocate(
            &file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            range.start,
            range.end - range.start,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP => Ok(()),
            Err(e) => Err(std::io::Error::from(e)).with_context(|| format!("cannot free {}", path.display())),
        }
    }

    /// Removes every file but the output and the target: the get starts
    /// over with what the output does not hold.
    pub fn clear_pieces(&self) -> Result<()> {
        let entries =
            std::fs::read_dir(&self.dir).with_context(|| format!("cannot read {}", self.dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if name != "output" && name != "target" {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// Removes the directory (the get is done).
    pub fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("cannot remove {}", self.dir.display()))
    }
}

/// How a whole file's output maps back to the stored bytes and pieces.
#[derive(Debug, Clone, Copy)]
pub struct OutputMap {
    geometry: crowd_erasure::Geometry,
    /// The output is the decrypted file: every [`crate::crypt::SEGMENT`]
    /// bytes of it are [`crate::crypt::CIPHER_SEGMENT`] stored bytes.
    encrypted: bool,
}

impl OutputMap {
    pub fn new(geometry: crowd_erasure::Geometry, encrypted: bool) -> Self {
        Self { geometry, encrypted }
    }

    /// The data pieces, whose files the output frees.
    pub fn data_shards(&self) -> usize {
        self.geometry.params().data_shards()
    }

    /// For an output whose first `durable` bytes are on disk: how many to
    /// keep and the stored offset to go on from. An encrypted output is
    /// kept in whole segments (decryption starts at a segment's tag).
    pub fn resume_point(&self, durable: u64) -> (u64, u64) {
        use crate::crypt::{CIPHER_SEGMENT, SEGMENT};
        if self.encrypted {
            let segments = durable / SEGMENT as u64;
            let stored = (segments * CIPHER_SEGMENT as u64).min(self.geometry.file_len());
            (segments * SEGMENT as u64, stored)
        } else {
            let kept = durable.min(self.geometry.file_len());
            (kept, kept)
        }
    }

    /// Compact bytes of each data piece (whole-file plan: its piece
    /// offsets) that only stored bytes before `stored` need: the shards of
    /// the segments wholly before it.
    pub fn consumed(&self, stored: u64) -> u64 {
        let segment = stored / self.geometry.params().segment_size();
        self.geometry.piece_offset(segment)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crypt::{cipher_len, cipher_range, SEGMENT};
    use proptest::prelude::*;

    #[test]
    fn a_punched_piece_keeps_its_length_and_the_bytes_after_the_hole() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = ResumeDir::open(&tmp.path().join("out"), "t\n").unwrap();
        let bytes: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(dir.piece_path(0), &bytes).unwrap();
        let before = std::fs::metadata(dir.piece_path(0)).unwrap().blocks();
        dir.punch(0, 0..(2 << 20)).unwrap();
        let after = std::fs::read(dir.piece_path(0)).unwrap();
        assert_eq!(after.len(), bytes.len());
        assert!(after[..2 << 20].iter().all(|&b| b == 0));
        assert_eq!(after[2 << 20..], bytes[2 << 20..]);
        assert!(std::fs::metadata(dir.piece_path(0)).unwrap().blocks() < before);
        // a piece never fetched has nothing to free
        dir.punch(5, 0..100).unwrap();
        // the frontier survives reopening; clearing keeps only the output
        dir.set_frontier(12345).unwrap();
        std::fs::write(dir.output_path(), b"kept").unwrap();
        let again = ResumeDir::open(&tmp.path().join("out"), "t\n").unwrap();
        assert_eq!(again.frontier(), 12345);
        again.clear_pieces().unwrap();
        assert_eq!(again.frontier(), 0);
        assert_eq!(again.have(0), 0);
        assert_eq!(std::fs::read(again.output_path()).unwrap(), b"kept");
    }

    proptest! {
        /// Wherever an output's durable bytes end, the resume point keeps
        /// no more than that, starts the stored bytes where the rest of the
        /// file begins (at a segment's tag when encrypted), and frees no
        /// piece byte that decoding the rest still reads.
        #[test]
        fn a_resume_point_needs_no_freed_byte_proptest(
            k in 1usize..6,
            m in 0usize..3,
            segment_shards in 1u64..40,
            plain_len in 0u64..(40 << 20),
            durable_share in 0.0f64..=1.0,
            encrypted in any::<bool>(),
        ) {
            let params = crowd_erasure::Params::new(k, m.max(1), segment_shards * k as u64 * 4096).unwrap();
            let stored_len = if encrypted { cipher_len(plain_len) } else { plain_len };
            let g = params.geometry(stored_len);
            let map = OutputMap::new(g, encrypted);
            let durable = (plain_len as f64 * durable_share) as u64;
            let (kept, from) = map.resume_point(durable);
            prop_assert!(kept <= durable);
            prop_assert!(from <= stored_len);
            if encrypted {
                prop_assert_eq!(kept % SEGMENT as u64, 0);
                if kept < plain_len {
                    prop_assert_eq!(from, cipher_range(&(kept..plain_len), plain_len).start);
                }
            } else {
                prop_assert_eq!(from, kept);
            }
            if from < stored_len {
                let first = g.segments_covering(&(from..stored_len)).start;
                prop_assert!(map.consumed(from) <= g.piece_offset(first));
            } else {
                prop_assert!(map.consumed(from) <= g.piece_len());
            }
        }
    }
}
