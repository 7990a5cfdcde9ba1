//! Local records of the files this client stored: `<home>/files/`.
//!
//! Each successful `crowd put` writes `<manifest cid>.json` (a [`Record`]:
//! root, manifest CID, size, time, deals) and `<manifest cid>.manifest` (the
//! manifest's dag-cbor bytes), each atomically. A record also keeps the
//! file's end epoch and the tracker's state of it as last known
//! (`crowd ls` syncs them; `crowd rm` marks it removed, and `ls` then hides
//! it; it is kept, not deleted, so that restoring from the network does not
//! bring it back). `crowd ls` lists them,
//! `crowd status` starts from them, and `crowd get` reads a manifest from
//! here before asking the network. A record is this
//! client's memory, not proof of anything: the manifest is still decoded and
//! checked like one from the network.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One deal of a stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordDeal {
    pub index: u64,
    pub deal_id: u64,
    pub provider: String,
    pub piece: String,
    pub piece_size: u64,
}

/// One `crowd put`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The file's root CID.
    pub root: String,
    /// The manifest's CID.
    pub manifest: String,
    pub size: u64,
    /// The name the file was stored from (for `ls`; not part of the manifest).
    #[serde(default)]
    pub name: String,
    /// Seconds since the Unix epoch.
    pub stored_at: u64,
    pub data_shards: u64,
    pub parity_shards: u64,
    /// Stored unencrypted (records written before encryption existed were).
    #[serde(default = "public_default")]
    pub public: bool,
    /// The manifest's root: the ciphertext's for a private file (empty in
    /// old records: the same as `root`).
    #[serde(default)]
    pub network_root: String,
    pub deals: Vec<RecordDeal>,
    /// The first epoch after the file's deals, as last known: from the put's
    /// proposals, then from the tracker (`crowd ls`, `crowd renew`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_epoch: Option<u64>,
    /// The tracker's state of the file when last asked: "live", "removed"
    /// (by `crowd rm`; `ls` no longer lists it) or "expired".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

fn public_default() -> bool {
    true
}

impl Record {
    /// The root the network knows the file by.
    pub fn network_root(&self) -> &str {
        if self.network_root.is_empty() {
            &self.root
        } else {
            &self.network_root
        }
    }
}

/// `<home>/files`.
pub fn dir(home: &Path) -> PathBuf {
    home.join("files")
}

/// A CID string is safe as a file name (base32/base58 characters only).
fn file_stem(cid: &str) -> Result<&str> {
    if cid.is_empty() || !cid.chars().all(|c| c.is_ascii_alphanumeric()) {
        anyhow::bail!("'{cid}' is not a CID");
    }
    Ok(cid)
}

/// Writes `record` and its manifest bytes.
pub fn save(home: &Path, record: &Record, manifest: &[u8]) -> Result<()> {
    let dir = dir(home);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stem = file_stem(&record.manifest)?;
    crate::input::write_atomically(&dir.join(format!("{stem}.manifest")), |f| {
        std::io::Write::write_all(f, manifest).context("writing manifest")
    })?;
    let json = serde_json::to_vec_pretty(record).context("encoding record")?;
    crate::input::write_atomically(&dir.join(format!("{stem}.json")), |f| {
        std::io::Write::write_all(f, &json).context("writing record")
    })
}

/// Rewrites an existing record (its manifest bytes stay as they are).
pub fn update(home: &Path, record: &Record) -> Result<()> {
    let stem = file_stem(&record.manifest)?;
    let json = serde_json::to_vec_pretty(record).context("encoding record")?;
    crate::input::write_atomically(&dir(home).join(format!("{stem}.json")), |f| {
        std::io::Write::write_all(f, &json).context("writing record")
    })
}

/// Every record, oldest first. Unreadable record files are skipped with a
/// warning on stderr (one bad file does not hide the others).
pub fn list(home: &Path) -> Result<Vec<Record>> {
    let dir = dir(home);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut records = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let parsed = std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<Record>(&b)?));
        match parsed {
            Ok(r) => records.push(r),
            Err(e) => eprintln!("crowd: skipping {}: {e}", path.display()),
        }
    }
    records.sort_by(|a, b| (a.stored_at, &a.manifest).cmp(&(b.stored_at, &b.manifest)));
    Ok(records)
}

/// The latest record whose root CID or manifest CID is `cid` (text form).
pub fn find(home: &Path, cid: &str) -> Result<Option<Record>> {
    Ok(list(home)?
        .into_iter()
        .rev()
        .find(|r| r.root == cid || r.manifest == cid))
}

/// The manifest bytes kept for `record`, if still there.
pub fn manifest_bytes(home: &Path, record: &Record) -> Result<Option<Vec<u8>>> {
    let path = dir(home).join(format!("{}.manifest", file_stem(&record.manifest)?));
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM` (UTC) for Unix seconds.
pub fn format_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // days since 1970-01-01 to a civil date (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3_600,
        (rem % 3_600) / 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(manifest: &str, root: &str, at: u64) -> Record {
        Record {
            root: root.into(),
            manifest: manifest.into(),
            size: 12,
            name: "a.txt".into(),
            stored_at: at,
            data_shards: 4,
            parity_shards: 2,
            public: false,
            network_root: "bafycipher".into(),
            deals: vec![RecordDeal {
                index: 0,
                deal_id: 7,
                provider: "12D3KooW".into(),
                piece: "bafk".into(),
                piece_size: 3,
            }],
            end_epoch: None,
            state: None,
        }
    }

    #[test]
    fn records_roundtrip_and_latest_wins() {
        let home = tempfile::tempdir().unwrap();
        assert!(list(home.path()).unwrap().is_empty());
        let older = record("bafyold", "bafyroot", 100);
        let newer = record("bafynew", "bafyroot", 200);
        save(home.path(), &newer, b"new manifest").unwrap();
        save(home.path(), &older, b"old manifest").unwrap();
        assert_eq!(list(home.path()).unwrap(), vec![older.clone(), newer.clone()]);
        assert_eq!(find(home.path(), "bafyroot").unwrap(), Some(newer.clone()));
        assert_eq!(find(home.path(), "bafyold").unwrap(), Some(older));
        assert_eq!(find(home.path(), "bafyother").unwrap(), None);
        assert_eq!(
            manifest_bytes(home.path(), &newer).unwrap().as_deref(),
            Some(&b"new manifest"[..])
        );
        // records from before encryption read as public, under their own root
        let old = r#"{"root":"bafyr","manifest":"bafym","size":1,"stored_at":1,"data_shards":1,"parity_shards":0,"deals":[]}"#;
        let old: Record = serde_json::from_str(old).unwrap();
        assert!(old.public);
        assert_eq!(old.network_root(), "bafyr");
        // a corrupt record is skipped, not fatal
        std::fs::write(dir(home.path()).join("junk.json"), b"{").unwrap();
        assert_eq!(list(home.path()).unwrap().len(), 2);
        // names that are not CIDs never become paths
        assert!(save(home.path(), &record("../x", "r", 1), b"").is_err());
        assert!(update(home.path(), &record("../x", "r", 1)).is_err());
        // an update keeps the manifest bytes and is what list reads back
        let removed = Record {
            state: Some("removed".into()),
            end_epoch: Some(9),
            ..newer.clone()
        };
        update(home.path(), &removed).unwrap();
        assert_eq!(find(home.path(), "bafynew").unwrap(), Some(removed.clone()));
        assert_eq!(
            manifest_bytes(home.path(), &removed).unwrap().as_deref(),
            Some(&b"new manifest"[..])
        );
        // records from before these fields read without them and write none
        assert!(!String::from_utf8(serde_json::to_vec(&newer).unwrap())
            .unwrap()
            .contains("end_epoch"));
    }

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_time(1_763_725_920), "2025-11-21 11:52");
    }
}
