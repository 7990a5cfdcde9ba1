//! Piece and replica bytes on disk, written crash-consistently: a temporary
//! file in `tmp/`, fsync, rename into place, fsync the directory, and only
//! then the index entry in RocksDB. At start, `tmp/` is emptied and files the
//! index does not know are removed, so a crash at any point leaves either a
//! complete, indexed, verifying file or nothing.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crowd_porep::tree::Outboard;
use crowd_protocol::PieceId;

use crate::records::hex;

/// The node's directories under its home.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub home: PathBuf,
    pub db: PathBuf,
    pub pieces: PathBuf,
    pub replicas: PathBuf,
    pub tmp: PathBuf,
}

impl Dirs {
    pub fn new(home: &Path) -> Self {
        Self {
            home: home.to_path_buf(),
            db: home.join("db"),
            pieces: home.join("pieces"),
            replicas: home.join("replicas"),
            tmp: home.join("tmp"),
        }
    }

    pub fn create(&self) -> std::io::Result<()> {
        for d in [&self.db, &self.pieces, &self.replicas, &self.tmp] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }

    pub fn piece(&self, piece: &PieceId) -> PathBuf {
        self.pieces.join(hex(&piece.0))
    }
    pub fn piece_outboard(&self, piece: &PieceId) -> PathBuf {
        self.pieces.join(format!("{}.outboard", hex(&piece.0)))
    }
    pub fn replica(&self, deal: u64) -> PathBuf {
        self.replicas.join(format!("{deal:020}.replica"))
    }
    pub fn replica_outboard(&self, deal: u64) -> PathBuf {
        self.replicas.join(format!("{deal:020}.outboard"))
    }

    /// A fresh temporary file in `tmp/`.
    pub fn temp_file(&self, tag: &str) -> std::io::Result<(PathBuf, File)> {
        let f = tempfile::Builder::new().prefix(tag).tempfile_in(&self.tmp)?;
        let (file, path) = f.keep().map_err(|e| e.error)?;
        Ok((path, file))
    }

    /// Empties `tmp/`: whatever is there was in flight when the node stopped.
    pub fn clear_tmp(&self) -> std::io::Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.tmp)? {
            std::fs::remove_file(e?.path())?;
            n += 1;
        }
        Ok(n)
    }
}

/// fsync `file`, rename `from` to `to`, fsync `to`'s directory.
pub fn commit(file: &File, from: &Path, to: &Path) -> std::io::Result<()> {
    file.sync_all()?;
    std::fs::rename(from, to)?;
    if let Some(dir) = to.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes `bytes` to `to` crash-consistently.
pub fn write_atomic(dirs: &Dirs, to: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (tmp, mut file) = dirs.temp_file("write-")?;
    file.write_all(bytes)?;
    commit(&file, &tmp, to)
}

/// Writes what `write` writes to `to` crash-consistently (through a 1 MiB
/// buffer); on an error the temporary file is removed and nothing is in
/// place.
pub fn write_atomic_with<T>(
    dirs: &Dirs,
    to: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let (tmp, file) = dirs.temp_file("write-")?;
    let written = (|| {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let value = write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        commit(&file, &tmp, to)?;
        Ok(value)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A writer into a file that builds the outboard (and so the BLAKE3 root)
/// of everything written through it: hashed once as it passes, never read
/// back (a rebuilt piece, an unsealed copy).
#[derive(Debug)]
pub struct HashingWriter {
    out: std::io::BufWriter<File>,
    tree: crowd_porep::OutboardBuilder,
}

impl HashingWriter {
    pub fn new(out: std::io::BufWriter<File>) -> Self {
        Self {
            out,
            tree: crowd_porep::OutboardBuilder::new(),
        }
    }

    /// The file (flushed) and the outboard of what was written.
    pub fn finish(self) -> std::io::Result<(File, Outboard)> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok((file, self.tree.finalize()))
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.tree.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads an outboard file (crowd-porep's versioned encoding, size-checked).
pub fn read_outboard(path: &Path) -> anyhow::Result<Outboard> {
    let bytes = std::fs::read(path)?;
    Outboard::decode(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Random access to a file for proofs, through `FileExt::read_exact_at`.
#[derive(Debug)]
pub struct FileAt(pub File);

impl crowd_porep::ReadAt for FileAt {
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.read_exact_at(buf, offset)
    }
}
