//! The owner's secrets: manifest envelopes, read capabilities and the
//! passphrase-protected key backup.
//!
//! - **Envelope.** A private file's plaintext root CID, size, name and file
//!   key, sealed with XChaCha20-Poly1305 under a key derived from the
//!   client's ed25519 identity (HKDF-SHA256, libp2p's
//!   `Keypair::derive_secret`), with the manifest's network root as
//!   associated data: only the owner opens it, and it cannot be moved to
//!   another manifest. Symmetric on purpose: nobody but the owner ever needs
//!   to seal an envelope for it.
//! - **Capability.** `crowd:` and the lowercase, unpadded base32 of a
//!   version byte, the file key and nonce prefix, the manifest CID and the
//!   network root. Whoever holds it can read that one file, nothing else.
//! - **Key backup.** The identity key (and the client's config.toml, so a
//!   fresh home can reach the network) encrypted with XChaCha20-Poly1305
//!   under a scrypt-derived key (memory-hard: log2 N = 16, r = 8, p = 1,
//!   64 MiB), in a small JSON file.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use crowd_chunker::Cid;
use crowd_protocol::libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};

use crate::crypt::{FileKey, NONCE_PREFIX};
use crate::error::Error;

const ENVELOPE_DOMAIN: &[u8] = b"crowd manifest envelope v1";
const ENVELOPE_AAD: &[u8] = b"crowd envelope v1 ";
const CAPABILITY_PREFIX: &str = "crowd:";
const CAPABILITY_VERSION: u8 = 1;

/// What the envelope of a private file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeContents {
    /// The plaintext's UnixFS root CID (what `crowd cid FILE` prints).
    pub root: String,
    /// Plaintext bytes.
    pub size: u64,
    /// The file key and nonce prefix (hex).
    pub key: String,
    pub nonce: String,
    /// The name it was stored from.
    pub name: String,
    /// Seconds since the Unix epoch.
    pub stored_at: u64,
}

impl EnvelopeContents {
    pub fn file_key(&self) -> Result<FileKey, Error> {
        let bad = || Error::Envelope("its file key is malformed".into());
        let key: [u8; 32] = hex::decode(&self.key)
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        let nonce: [u8; NONCE_PREFIX] = hex::decode(&self.nonce)
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        Ok(FileKey { key, nonce })
    }

    pub fn plain_root(&self) -> Result<Cid, Error> {
        self.root
            .parse()
            .map_err(|_| Error::Envelope("its root is not a CID".into()))
    }
}

/// The owner's envelope key.
pub fn envelope_key(identity: &Keypair) -> Result<[u8; 32], Error> {
    identity
        .derive_secret(ENVELOPE_DOMAIN)
        .ok_or_else(|| Error::Key("the identity key cannot derive secrets".into()))
}

fn aad(network_root: &Cid) -> Vec<u8> {
    let mut v = ENVELOPE_AAD.to_vec();
    v.extend_from_slice(&network_root.to_bytes());
    v
}

/// Seals `contents` to the owner (24-byte random nonce, then ciphertext).
pub fn seal_envelope(
    key: &[u8; 32],
    network_root: &Cid,
    contents: &EnvelopeContents,
) -> Result<Vec<u8>, Error> {
    let plain = serde_json::to_vec(contents).map_err(|e| Error::Envelope(e.to_string()))?;
    let nonce: [u8; 24] = rand::random();
    let aad = aad(network_root);
    let sealed = XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .map_err(|_| Error::Envelope("sealing failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens an envelope; fails unless it was sealed by this owner for this root.
pub fn open_envelope(key: &[u8; 32], network_root: &Cid, envelope: &[u8]) -> Result<EnvelopeContents, Error> {
    if envelope.len() < 24 + 16 {
        return Err(Error::Envelope("it is too short".into()));
    }
    let (nonce, sealed) = envelope.split_at(24);
    let aad = aad(network_root);
    let plain = XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &aad,
            },
        )
        .map_err(|_| {
            Error::Envelope("it does not decrypt with this client's key (not this client's file?)".into())
        })?;
    serde_json::from_slice(&plain).map_err(|e| Error::Envelope(format!("its contents are malformed: {e}")))
}

/// A read capability for one private file.
#[derive(Clone, PartialEq, Eq)]
pub struct Capability {
    pub key: FileKey,
    /// The manifest's CID: what the capability reads.
    pub manifest: Cid,
    /// The manifest's root (the ciphertext's), to find the manifest by.
    pub network_root: Cid,
}

impl std::fmt::Debug for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Capability({}, ..)", self.manifest)
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = vec![CAPABILITY_VERSION];
        bytes.extend_from_slice(&self.key.key);
        bytes.extend_from_slice(&self.key.nonce);
        for cid in [&self.manifest, &self.network_root] {
            let b = cid.to_bytes();
            bytes.push(b.len() as u8);
            bytes.extend_from_slice(&b);
        }
        write!(
            f,
            "{CAPABILITY_PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
        )
    }
}

impl std::str::FromStr for Capability {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Capability(format!("not a valid crowd capability: {why}"));
        let body = s
            .trim()
            .strip_prefix(CAPABILITY_PREFIX)
            .ok_or_else(|| bad("it does not start with 'crowd:'"))?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad("it is not base32 (truncated or mistyped?)"))?;
        let (&version, mut rest) = bytes.split_first().ok_or_else(|| bad("it is empty"))?;
        if version != CAPABILITY_VERSION {
            return Err(bad(&format!("unknown version {version}")));
        }
        if rest.len() < 32 + NONCE_PREFIX {
            return Err(bad("it is truncated"));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&rest[..32]);
        let mut nonce = [0u8; NONCE_PREFIX];
        nonce.copy_from_slice(&rest[32..32 + NONCE_PREFIX]);
        rest = &rest[32 + NONCE_PREFIX..];
        let mut cids = Vec::with_capacity(2);
        for _ in 0..2 {
            let (&len, tail) = rest.split_first().ok_or_else(|| bad("it is truncated"))?;
            let len = usize::from(len);
            if tail.len() < len {
                return Err(bad("it is truncated"));
            }
            let cid = Cid::try_from(&tail[..len]).map_err(|_| bad("it holds a malformed CID"))?;
            cids.push(cid);
            rest = &tail[len..];
        }
        if !rest.is_empty() {
            return Err(bad("it has trailing bytes"));
        }
        Ok(Self {
            key: FileKey { key, nonce },
            manifest: cids[0],
            network_root: cids[1],
        })
    }
}

/// Whether `s` looks like a capability (rather than a CID).
pub fn is_capability(s: &str) -> bool {
    s.trim().starts_with(CAPABILITY_PREFIX)
}

// ---------------------------------------------------------------- key backup

/// scrypt parameters of new backups.
const LOG_N: u8 = 16;
const R: u32 = 8;
const P: u32 = 1;
/// Highest log2 N accepted from a file (bounds the memory a file can ask for:
/// 2^20 * 128 * 8 = 1 GiB).
const MAX_LOG_N: u8 = 20;
const BACKUP_FORMAT: &str = "crowd-key-backup-v1";

/// The key backup file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupFile {
    format: String,
    kdf: String,
    log_n: u8,
    r: u32,
    p: u32,
    salt: String,
    nonce: String,
    ciphertext: String,
}

/// What a backup holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Backup {
    /// The identity key, libp2p protobuf encoding (hex).
    pub identity: String,
    /// The client's config.toml, if it had one.
    #[serde(default)]
    pub config: Option<String>,
}

fn kdf(passphrase: &str, salt: &[u8], log_n: u8, r: u32, p: u32) -> Result<[u8; 32], Error> {
    let params =
        scrypt::Params::new(log_n, r, p, 32).map_err(|e| Error::Key(format!("scrypt parameters: {e}")))?;
    let mut out = [0u8; 32];
    scrypt::scrypt(passphrase.as_bytes(), salt, &params, &mut out)
        .map_err(|e| Error::Key(format!("scrypt: {e}")))?;
    Ok(out)
}

/// Encrypts `backup` under `passphrase`; the file's bytes.
pub fn seal_backup(backup: &Backup, passphrase: &str) -> Result<Vec<u8>, Error> {
    if passphrase.is_empty() {
        return Err(Error::Key("the passphrase is empty".into()));
    }
    let salt: [u8; 16] = rand::random();
    let nonce: [u8; 24] = rand::random();
    let key = kdf(passphrase, &salt, LOG_N, R, P)?;
    let plain = serde_json::to_vec(backup).map_err(|e| Error::Key(e.to_string()))?;
    let sealed = XChaCha20Poly1305::new(&key.into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: BACKUP_FORMAT.as_bytes(),
            },
        )
        .map_err(|_| Error::Key("sealing the backup failed".into()))?;
    let file = BackupFile {
        format: BACKUP_FORMAT.into(),
        kdf: "scrypt".into(),
        log_n: LOG_N,
        r: R,
        p: P,
        salt: hex::encode(salt),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(sealed),
    };
    let mut out = serde_json::to_vec_pretty(&file).map_err(|e| Error::Key(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// Opens a backup file's bytes with `passphrase`.
pub fn open_backup(bytes: &[u8], passphrase: &str) -> Result<Backup, Error> {
    let bad = |why: String| Error::Key(format!("not a crowd key backup: {why}"));
    let file: BackupFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if file.format != BACKUP_FORMAT || file.kdf != "scrypt" {
        return Err(bad(format!("format '{}', kdf '{}'", file.format, file.kdf)));
    }
    if file.log_n > MAX_LOG_N || file.r == 0 || file.r > 32 || file.p == 0 || file.p > 16 {
        return Err(bad("scrypt parameters out of range".into()));
    }
    let hex_field = |name: &str, v: &str| hex::decode(v).map_err(|_| bad(format!("{name} is not hex")));
    let salt = hex_field("salt", &file.salt)?;
    let nonce = hex_field("nonce", &file.nonce)?;
    let sealed = hex_field("ciphertext", &file.ciphertext)?;
    if nonce.len() != 24 {
        return Err(bad("the nonce is not 24 bytes".into()));
    }
    let key = kdf(passphrase, &salt, file.log_n, file.r, file.p)?;
    let plain = XChaCha20Poly1305::new(&key.into())
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &sealed,
                aad: BACKUP_FORMAT.as_bytes(),
            },
        )
        .map_err(|_| Error::Passphrase)?;
    serde_json::from_slice(&plain).map_err(|e| bad(format!("its contents are malformed: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn root(n: u8) -> Cid {
        crowd_protocol::manifest_cid(&[n; 8])
    }

    fn contents() -> EnvelopeContents {
        EnvelopeContents {
            root: root(9).to_string(),
            size: 77,
            key: hex::encode([1u8; 32]),
            nonce: hex::encode([2u8; NONCE_PREFIX]),
            name: "a.txt".into(),
            stored_at: 5,
        }
    }

    #[test]
    fn only_the_owner_opens_an_envelope_and_only_on_its_manifest() {
        let owner = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let k = envelope_key(&owner).unwrap();
        assert_eq!(k, envelope_key(&owner).unwrap(), "derived, not random");
        let sealed = seal_envelope(&k, &root(1), &contents()).unwrap();
        assert_eq!(open_envelope(&k, &root(1), &sealed).unwrap(), contents());
        assert!(open_envelope(&envelope_key(&other).unwrap(), &root(1), &sealed).is_err());
        assert!(open_envelope(&k, &root(2), &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(open_envelope(&k, &root(1), &flipped).is_err());
        assert!(open_envelope(&k, &root(1), &sealed[..20]).is_err());
        let key = contents().file_key().unwrap();
        assert_eq!(key.key, [1; 32]);
    }

    #[test]
    fn capabilities_roundtrip_and_bad_ones_are_one_line_errors() {
        let cap = Capability {
            key: FileKey {
                key: [3; 32],
                nonce: [4; NONCE_PREFIX],
            },
            manifest: root(1),
            network_root: root(2),
        };
        let s = cap.to_string();
        assert!(s.starts_with("crowd:") && !s.contains(char::is_whitespace), "{s}");
        assert!(is_capability(&s));
        assert_eq!(s.parse::<Capability>().unwrap(), cap);
        for bad in [
            "bafy".to_string(),
            "crowd:".into(),
            "crowd:!!!!".into(),
            s[..s.len() - 7].to_string(),
            format!("{s}aa"),
            s.replacen("crowd:a", "crowd:b", 1),
        ] {
            let e = bad.parse::<Capability>().unwrap_err().to_string();
            assert!(e.contains("capability") && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn a_backup_opens_with_its_passphrase_only() {
        let backup = Backup {
            identity: "abcd".into(),
            config: Some("x = 1\n".into()),
        };
        let sealed = seal_backup(&backup, "correct horse").unwrap();
        let opened = open_backup(&sealed, "correct horse").unwrap();
        assert_eq!(opened.identity, "abcd");
        assert_eq!(opened.config.as_deref(), Some("x = 1\n"));
        assert!(matches!(
            open_backup(&sealed, "wrong horse"),
            Err(Error::Passphrase)
        ));
        assert!(open_backup(b"{}", "x").is_err());
        assert!(open_backup(&sealed[..sealed.len() / 2], "correct horse").is_err());
        assert!(seal_backup(&backup, "").is_err());
        // a file asking for absurd memory is refused before any work
        let mut v: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        v["log_n"] = 40.into();
        let e = open_backup(&serde_json::to_vec(&v).unwrap(), "correct horse").unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    proptest! {
        #[test]
        fn capability_garbage_proptest(s in "crowd:[a-z2-7]{0,200}") {
            let _ = s.parse::<Capability>();
        }
    }
}
