//! Hash functions a DAG can be addressed with, and CID construction and
//! verification.

use cid::multihash::Multihash;
use cid::Cid;

use crate::ChunkerError;

/// Multicodec code of raw leaves.
pub const RAW: u64 = 0x55;
/// Multicodec code of dag-pb nodes.
pub const DAG_PB: u64 = 0x70;
/// Multihash code of BLAKE3 (32-byte digest).
pub const BLAKE3: u64 = 0x1e;
/// Multihash code of SHA2-256.
pub const SHA2_256: u64 = 0x12;

/// The hash a DAG's CIDs are made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HashAlg {
    /// BLAKE3, 32-byte digest (multihash 0x1e). crowdstore's default.
    #[default]
    Blake3,
    /// SHA2-256 (multihash 0x12), what the IPFS reference profile uses.
    Sha2_256,
}

impl HashAlg {
    /// The multihash code.
    pub fn code(self) -> u64 {
        match self {
            Self::Blake3 => BLAKE3,
            Self::Sha2_256 => SHA2_256,
        }
    }

    /// The hash for a multihash code, if we support it.
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            BLAKE3 => Some(Self::Blake3),
            SHA2_256 => Some(Self::Sha2_256),
            _ => None,
        }
    }

    /// Hashes `data` into a multihash.
    pub fn digest(self, data: &[u8]) -> Multihash<64> {
        let digest: [u8; 32] = match self {
            Self::Blake3 => *blake3::hash(data).as_bytes(),
            Self::Sha2_256 => {
                use sha2::Digest;
                sha2::Sha256::digest(data).into()
            }
        };
        // A 32-byte digest always fits a 64-byte multihash.
        match Multihash::wrap(self.code(), &digest) {
            Ok(mh) => mh,
            Err(_) => unreachable!("32-byte digest fits in Multihash<64>"),
        }
    }

    /// The CIDv1 of a block with `codec` and these bytes.
    pub fn cid(self, codec: u64, data: &[u8]) -> Cid {
        Cid::new_v1(codec, self.digest(data))
    }
}

impl std::str::FromStr for HashAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blake3" => Ok(Self::Blake3),
            "sha2-256" | "sha256" => Ok(Self::Sha2_256),
            other => Err(format!("unknown hash '{other}' (expected blake3 or sha2-256)")),
        }
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Blake3 => "blake3",
            Self::Sha2_256 => "sha2-256",
        })
    }
}

/// Checks that `data` hashes to `cid`. `offset` names where the block was
/// found, for the error message.
pub fn verify_block(cid: &Cid, data: &[u8], offset: u64) -> Result<(), ChunkerError> {
    let code = cid.hash().code();
    let alg = HashAlg::from_code(code).ok_or(ChunkerError::UnsupportedHash { cid: *cid, code })?;
    if cid.hash().size() != 32 || alg.digest(data).digest() != cid.hash().digest() {
        return Err(ChunkerError::HashMismatch { cid: *cid, offset });
    }
    Ok(())
}
