//! `crowd_client`: store and retrieve files on a crowdstore network, as a
//! library (the `crowd` command is a thin layer on top of it).
//!
//! ```no_run
//! use crowd_client::{Client, GetOptions, PutOptions, Target};
//!
//! # fn main() -> Result<(), crowd_client::Error> {
//! // a client home: config.toml (the tracker's address), identity.key, records
//! let client = Client::open("/home/me/.crowd")?;
//! // private by default: encrypted before it leaves this machine
//! let put = client.put_path("photo.jpg".as_ref(), &PutOptions::default())?;
//! println!("stored {} ({} bytes) with {} providers", put.root, put.size, put.deals.len());
//! // back by the root CID `crowd cid photo.jpg` prints, every byte verified
//! let target: Target = put.root.parse()?;
//! client.get(&target, &GetOptions::default(), "photo-back.jpg".as_ref())?;
//! // anyone else reads it only with a capability
//! let capability = client.share(&put.root)?;
//! println!("{capability}");
//! # Ok(()) }
//! ```
//!
//! `examples/roundtrip.rs` does the same against a running devnet.
//!
//! **What it owns:** the client home ([`config`], identity, records of
//! stored files), putting (chunk → encrypt → erasure-code → deals → upload
//! → manifest), getting (manifest → parallel verified fetch → decode →
//! decrypt → root check), status, ls, balance, read capabilities and key
//! backup, and the owner's end of durability: registering a file's deals
//! with the tracker (which repairs lost pieces), following repaired pieces
//! to their new providers, `rm` and `renew`. **What it does not:** the wire protocol ([`crowd_protocol`]),
//! DAG building ([`crowd_chunker`]), erasure coding ([`crowd_erasure`]),
//! running a devnet (the `crowd` binary's `devnet` and `demo` commands).
//!
//! **Privacy.** [`crypt`] says how a private file is encrypted, [`keys`]
//! how its key reaches only its owner and the holders of a capability.
//! What providers and the tracker still learn: the ciphertext's size (the
//! file's size to within 16 bytes per MiB), when and from which client
//! (peer id) it was stored, which providers hold it, and when it is read
//! (and, for a range get, which MiB segments).
//!
//! Every call blocks (each runs its own tokio runtime); call from a blocking
//! context (`tokio::task::spawn_blocking` in async code).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub mod config;
pub mod crypt;
pub mod error;
pub mod keys;
pub mod offline;
pub mod progress;

mod files;
mod get;
mod home;
mod info;
mod input;
mod put;
mod records;
mod session;

pub use error::{Error, Result};
pub use files::{
    remove_lines, renew_lines, RemoveOutcome, RemovedFile, RenewOutcome, RenewedFile, EXPIRING_EPOCHS,
};
pub use get::{parse_range, GetOptions, GetOutput, Target};
pub use info::{
    ls_table, status_table, BalanceOutput, LsEntry, MoveOutput, PieceStatus, Repairs, StatusOutput,
};
pub use keys::Capability;
pub use progress::{Callback, Event, Stage};
pub use put::{PutDeal, PutOptions, PutOutput};

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use error::from_anyhow;

/// A client home and what to report progress to.
#[derive(Clone)]
pub struct Client {
    home: PathBuf,
    progress: Option<Callback>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The client home at `home` (created on first use; network calls need
    /// its config.toml, which `crowd devnet up` or `crowd key import` writes).
    pub fn open(home: impl Into<PathBuf>) -> Result<Self> {
        let home = home.into();
        if home.is_file() {
            return Err(Error::Config(format!(
                "{} is a file, not a client home",
                home.display()
            )));
        }
        Ok(Self { home, progress: None })
    }

    /// `$CROWD_HOME`-style resolution: `home`, else `~/.crowd`.
    pub fn open_default(home: Option<&Path>) -> Result<Self> {
        Self::open(home::resolve(home).map_err(|e| Error::Config(format!("{e:#}")))?)
    }

    /// Reports progress of long calls to `callback`.
    pub fn with_progress(mut self, callback: Callback) -> Self {
        self.progress = Some(callback);
        self
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// This client's peer id (its account on the network).
    pub fn peer_id(&self) -> Result<PeerId> {
        Ok(identity(&self.home)?.public().to_peer_id())
    }

    /// Stores a regular file (read once, by the pass that hashes and uploads
    /// its pieces; again only for pieces whose provider failed).
    pub fn put_path(&self, path: &Path, opts: &PutOptions) -> Result<PutOutput> {
        put::put(&self.home, path, opts, self.progress.as_ref()).map_err(from_anyhow)
    }

    /// Stores whatever `reader` yields: spooled to a file in the home's
    /// `tmp/` first (a put reads its input again for pieces whose provider
    /// failed), removed afterwards.
    pub fn put_reader(&self, mut reader: impl Read, opts: &PutOptions) -> Result<PutOutput> {
        let dir = self.home.join("tmp");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display())))?;
        let mut spool = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| Error::Io(format!("cannot create a file in {}: {e}", dir.display())))?;
        std::io::copy(&mut reader, spool.as_file_mut())
            .map_err(|e| Error::Io(format!("reading the input: {e}")))?;
        let mut opts = opts.clone();
        opts.name.get_or_insert_with(String::new);
        self.put_path(spool.path(), &opts)
    }

    /// Retrieves `target` (or `opts.range` of it) into `out`: written to a
    /// temporary file next to it and renamed once every byte is verified, so
    /// `out` is the verified file or untouched.
    pub fn get(&self, target: &Target, opts: &GetOptions, out: &Path) -> Result<GetOutput> {
        get::get(&self.home, target, opts, out, self.progress.as_ref()).map_err(from_anyhow)
    }

    /// [`Client::get`] into `file`, an open and empty file the caller may
    /// read while it grows: bytes land in order, each only after it was
    /// verified (a private file's segments by their tags, a public file's
    /// pieces by their hashes), with no fsync and no rename (scratch space,
    /// e.g. a gateway streaming a download as it arrives). The resume
    /// directory goes beside `scratch`, a path in a directory of the
    /// caller's. The whole file's root is checked at the end, after its
    /// bytes were written: an error then means the bytes, though each was
    /// verified, are not the file asked for.
    pub fn get_into_file(
        &self,
        target: &Target,
        opts: &GetOptions,
        file: &std::fs::File,
        scratch: &Path,
    ) -> Result<GetOutput> {
        get::get_into_file(&self.home, target, opts, file, scratch, self.progress.as_ref())
            .map_err(from_anyhow)
    }

    /// [`Client::get`] into a writer: retrieved and verified into the home's
    /// `tmp/` first, then copied, so nothing unverified reaches `writer`.
    pub fn get_to_writer(
        &self,
        target: &Target,
        opts: &GetOptions,
        writer: &mut impl Write,
    ) -> Result<GetOutput> {
        let dir = self.home.join("tmp");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display())))?;
        let scratch = tempfile::tempdir_in(&dir)
            .map_err(|e| Error::Io(format!("cannot create a directory in {}: {e}", dir.display())))?;
        let path = scratch.path().join("out");
        let got = self.get(target, opts, &path)?;
        let mut file = std::fs::File::open(&path)
            .map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
        std::io::copy(&mut file, writer).map_err(|e| Error::Io(format!("writing the output: {e}")))?;
        Ok(got)
    }

    /// A public file's DAG as a CAR v1 at `out`.
    pub fn export(&self, cid: &str, out: &Path) -> Result<GetOutput> {
        let cid = cid
            .trim()
            .parse()
            .map_err(|e| Error::Input(format!("'{}' is not a CID: {e}", cid.trim())))?;
        get::export(&self.home, &cid, out, self.progress.as_ref()).map_err(from_anyhow)
    }

    /// Per piece index of a stored file: its current provider (after a
    /// repair, not the manifest's), deal state, seal, proofs, pay; and the
    /// file's end epoch and repairs, when the tracker has a file record of
    /// it (else the manifest's placement alone).
    pub fn status(&self, cid: &str) -> Result<StatusOutput> {
        info::status(&self.home, cid).map_err(from_anyhow)
    }

    /// Ends this client's file `cid` now (`crowd rm`): every deal of it,
    /// with the unearned escrow refunded. `cid` is the root `put` printed
    /// (every live file of this client's under it: a file put twice is
    /// removed twice), a network root or a manifest CID (that put only).
    /// The home's records of it are marked removed (`ls` no longer lists
    /// them).
    ///
    /// Errors: [`Error::Input`] for a `cid` that is not a CID,
    /// [`Error::NotFound`] when the tracker has no live file under it,
    /// [`Error::NotOwner`] when only other clients' files are,
    /// [`Error::Network`] with the tracker's reason when it refuses.
    pub fn remove(&self, cid: &str) -> Result<RemoveOutcome> {
        files::remove(&self.home, cid).map_err(from_anyhow)
    }

    /// Extends this client's file `cid` by `epochs` (at least 1;
    /// `crowd renew`): resolved as [`Client::remove`] does. Returns each
    /// file's new end epoch and the escrow locked. A balance too low is
    /// [`Error::Network`] with the tracker's reason (which says how much
    /// the renewal needs).
    pub fn renew(&self, cid: &str, epochs: u64) -> Result<RenewOutcome> {
        files::renew(&self.home, cid, epochs).map_err(from_anyhow)
    }

    /// The files stored from this home, without those `rm` removed; with
    /// `sync`, first restored from the network (the manifests this client
    /// registered) and brought up to date with the tracker's file records
    /// (end epoch; removed and expired files), which also gives the current
    /// epoch: files ending within [`EXPIRING_EPOCHS`] of it are "expiring".
    pub fn ls(&self, sync: bool) -> Result<Vec<LsEntry>> {
        info::ls(&self.home, sync).map_err(from_anyhow)
    }

    /// This client's account with the tracker.
    pub fn balance(&self) -> Result<BalanceOutput> {
        info::balance(&self.home).map_err(from_anyhow)
    }

    /// Pays `amount` (base units) of this client's free balance to `to`.
    pub fn transfer(&self, to: PeerId, amount: crowd_protocol::Amount) -> Result<MoveOutput> {
        info::transfer(&self.home, to, amount).map_err(from_anyhow)
    }

    /// Takes `amount` of free balance out of the ledger: this client's, or
    /// with `identity` (a key file such as a storage node's
    /// `identity.key`) that account's — how a provider withdraws earnings.
    pub fn withdraw(&self, amount: crowd_protocol::Amount, identity: Option<&Path>) -> Result<MoveOutput> {
        info::withdraw(&self.home, amount, identity).map_err(from_anyhow)
    }

    /// A read capability for one of this client's private files.
    pub fn share(&self, cid: &str) -> Result<Capability> {
        info::share(&self.home, cid).map_err(from_anyhow)
    }

    /// The identity (and config.toml) as a key backup sealed with
    /// `passphrase`: the bytes of the backup file.
    pub fn export_key(&self, passphrase: &str) -> Result<Vec<u8>> {
        let path = self.home.join("identity.key");
        let identity =
            std::fs::read(&path).map_err(|e| Error::Key(format!("cannot read {}: {e}", path.display())))?;
        Keypair::from_protobuf_encoding(&identity)
            .map_err(|e| Error::Key(format!("{}: not a valid identity key: {e}", path.display())))?;
        let config = std::fs::read_to_string(self.home.join("config.toml")).ok();
        keys::seal_backup(
            &keys::Backup {
                identity: hex::encode(identity),
                config,
            },
            passphrase,
        )
    }

    /// Restores a key backup into this home (a fresh one, or one already
    /// holding the same identity): its identity, and its config.toml unless
    /// the home has one.
    pub fn import_key(&self, backup: &[u8], passphrase: &str) -> Result<PeerId> {
        let opened = keys::open_backup(backup, passphrase)?;
        let bytes = hex::decode(&opened.identity)
            .map_err(|_| Error::Key("the backup's identity is not hex".into()))?;
        let key = Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| Error::Key(format!("the backup's identity is not a key: {e}")))?;
        let peer = key.public().to_peer_id();
        let path = self.home.join("identity.key");
        if path.exists() {
            let have = identity(&self.home)?;
            if have.public().to_peer_id() != peer {
                return Err(Error::Key(format!(
                    "{} already holds another identity ({}); import into a fresh home",
                    self.home.display(),
                    have.public().to_peer_id()
                )));
            }
        }
        std::fs::create_dir_all(&self.home)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", self.home.display())))?;
        let write =
            |p: &Path, data: &[u8], private: bool| input::write_bytes(p, data, private).map_err(from_anyhow);
        write(&path, &bytes, true)?;
        let config = self.home.join("config.toml");
        if let (Some(text), false) = (opened.config, config.exists()) {
            write(&config, text.as_bytes(), false)?;
        }
        Ok(peer)
    }
}

/// `<home>/identity.key` (libp2p protobuf ed25519, mode 0600), created if missing.
pub fn identity(home: &Path) -> Result<Keypair> {
    session::load_or_create_key(home).map_err(|e| Error::Config(format!("{e:#}")))
}

/// Writes `bytes` to `path` atomically with mode 0600 (e.g. a key backup).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    input::write_bytes(path, bytes, true).map_err(from_anyhow)
}

/// A multiaddress ending in `/p2p/<peer id>`, split.
pub fn peer_addr(s: &str) -> Result<(PeerId, Multiaddr)> {
    session::peer_addr(s).map_err(|e| Error::Input(format!("{e:#}")))
}

/// Parses `1048576`, `1M`, `1MiB`, `256K`, `256KiB`.
pub fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("'{s}' is not a size in bytes"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        _ => return Err(format!("unknown size unit '{unit}' (use K, KiB, M or MiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_key_backup_restores_the_identity_into_a_fresh_home_only() {
        let a = tempfile::tempdir().unwrap();
        let client = Client::open(a.path()).unwrap();
        let peer = client.peer_id().unwrap();
        std::fs::write(a.path().join("config.toml"), "x = 1\n").unwrap();
        let backup = client.export_key("pass phrase").unwrap();
        assert!(!String::from_utf8_lossy(&backup).contains("x = 1"));
        let b = tempfile::tempdir().unwrap();
        let fresh = Client::open(b.path().join("home")).unwrap();
        assert!(matches!(
            fresh.import_key(&backup, "wrong"),
            Err(Error::Passphrase)
        ));
        assert!(
            !b.path().join("home").exists(),
            "nothing written on a wrong passphrase"
        );
        assert_eq!(fresh.import_key(&backup, "pass phrase").unwrap(), peer);
        assert_eq!(fresh.peer_id().unwrap(), peer);
        assert_eq!(
            std::fs::read_to_string(b.path().join("home/config.toml")).unwrap(),
            "x = 1\n"
        );
        // again into the same home: fine; into a home with another identity: refused
        fresh.import_key(&backup, "pass phrase").unwrap();
        let c = tempfile::tempdir().unwrap();
        let other = Client::open(c.path()).unwrap();
        other.peer_id().unwrap();
        let e = other.import_key(&backup, "pass phrase").unwrap_err().to_string();
        assert!(e.contains("another identity"), "{e}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("6MiB").unwrap(), 6 << 20);
        assert_eq!(parse_size("256k").unwrap(), 256 << 10);
        assert!(parse_size("1G").is_err());
    }
}
