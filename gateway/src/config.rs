//! `<client home>/gateway.toml`: the gateway's settings, created with fresh
//! S3 keys on first start (mode 0600: the secret key is in it).
//!
//! ```toml
//! listen = "127.0.0.1:8080"        # --listen overrides it
//! access_key = "CROWD…"            # S3 access key id (20 characters)
//! secret_key = "…"                 # S3 secret access key (40 characters)
//! region = "us-east-1"             # the region S3 clients sign for
//! cache_bytes = 4294967296         # IPFS side: fetched DAGs kept on disk
//! ```

use std::io::Write;
use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::GatewayError;

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on (port 0: any free port; the JSON line says which).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// S3 access key id.
    pub access_key: String,
    /// S3 secret access key.
    pub secret_key: String,
    /// The region S3 clients sign requests for.
    #[serde(default = "default_region")]
    pub region: String,
    /// Bytes of fetched public DAGs kept on disk for the IPFS side.
    #[serde(default = "default_cache")]
    pub cache_bytes: u64,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_cache() -> u64 {
    4 << 30
}

/// The file name in the client home.
pub const FILE: &str = "gateway.toml";

impl GatewayConfig {
    /// Fresh settings with random keys.
    pub fn generate() -> Self {
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut rng = rand::rngs::OsRng;
        let mut pick = |alphabet: &[u8], n: usize| -> String {
            (0..n)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
                .collect()
        };
        Self {
            listen: default_listen(),
            access_key: format!("CROWD{}", pick(UPPER, 15)),
            secret_key: pick(SECRET, 40),
            region: default_region(),
            cache_bytes: default_cache(),
        }
    }

    /// The settings in `home`, created on first use.
    pub fn load_or_create(home: &Path) -> Result<Self, GatewayError> {
        let path = home.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let config: Self = toml::from_str(&text).map_err(|e| {
                    GatewayError::Config(format!("{}: {}", path.display(), one_line(&e.to_string())))
                })?;
                config
                    .check()
                    .map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))?;
                Ok(config)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let config = Self::generate();
                let text = toml::to_string(&config).map_err(|e| GatewayError::Config(e.to_string()))?;
                std::fs::create_dir_all(home)
                    .map_err(|e| GatewayError::Io(format!("cannot create {}: {e}", home.display())))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode_0600()
                    .open(&path)
                    .map_err(|e| GatewayError::Io(format!("cannot create {}: {e}", path.display())))?;
                f.write_all(text.as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(|e| GatewayError::Io(format!("cannot write {}: {e}", path.display())))?;
                Ok(config)
            }
            Err(e) => Err(GatewayError::Io(format!("cannot read {}: {e}", path.display()))),
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.access_key.len() < 3 || !self.access_key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err("access_key must be 3 or more letters and digits".into());
        }
        if self.secret_key.len() < 16
            || self
                .secret_key
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("secret_key must be 16 or more printable characters".into());
        }
        if self.cache_bytes < (64 << 20) {
            return Err("cache_bytes must be at least 64 MiB".into());
        }
        Ok(())
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let home = tempfile::tempdir().unwrap();
        let a = GatewayConfig::load_or_create(home.path()).unwrap();
        let b = GatewayConfig::load_or_create(home.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.access_key.len(), 20);
        assert_eq!(a.secret_key.len(), 40);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(GatewayConfig::generate().secret_key, a.secret_key);
    }

    #[test]
    fn a_bad_config_is_one_line() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(FILE), "access_key = 1\n").unwrap();
        let e = GatewayConfig::load_or_create(home.path()).unwrap_err();
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
        std::fs::write(
            home.path().join(FILE),
            "access_key = \"a b\"\nsecret_key = \"x\"\n",
        )
        .unwrap();
        assert!(GatewayConfig::load_or_create(home.path()).is_err());
    }
}
