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

/// Writes the bytes of `source` to `to` crash-consistently, 1 MiB at a time.
pub fn write_atomic_from<R: crowd_porep::ReadAt + ?Sized>(
    dirs: &Dirs,
    to: &Path,
    source: &R,
) -> std::io::Result<()> {
    let (tmp, mut file) = dirs.temp_file("write-")?;
    let len = source.len_bytes()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        source.read_at(at, &mut buf[..n])?;
        file.write_all(&buf[..n])?;
        at += n as u64;
    }
    commit(&file, &tmp, to)
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
