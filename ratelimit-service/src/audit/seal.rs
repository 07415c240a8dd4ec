//! Encryption at rest: AES-256-GCM, one key per tenant derived from the
//! operator's master key with HKDF-SHA256 (the tenant id is the `info`), so
//! one master key serves every tenant and no tenant's key opens another's
//! records.
//!
//! A sealed record is one line, `{"v":1,"sealed":"<base64 nonce||ciphertext>"}`.
//! The additional data binds it to its partition: the tenant and the day
//! file. A line copied into another tenant's or day's file does not open.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

const NONCE: usize = 12;
const SALT: &[u8] = b"llm-gateway/audit/v1";

#[derive(Debug, Error)]
pub enum SealError {
    #[error("audit key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("no OS randomness for a nonce")]
    Random,
    #[error("sealed record does not open (wrong key, tenant or day, or altered)")]
    Open,
    #[error("sealed record is not base64")]
    Encoding,
}

/// The operator's 256-bit master key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads 64 hex digits (surrounding whitespace ignored), as
    /// `openssl rand -hex 32` writes them.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let bad = |reason: String| SealError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let bytes = hex::decode(text.trim()).map_err(|e| bad(format!("not hex: {e}")))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| bad(format!("{} bytes, expected 32", b.len())))?;
        Ok(Self(key))
    }

    /// The key of one tenant's partition.
    pub fn tenant_key(&self, tenant: &str) -> TenantKey {
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
        let _ = Hkdf::<Sha256>::new(Some(SALT), &self.0).expand(tenant.as_bytes(), &mut okm);
        TenantKey {
            cipher: Aes256Gcm::new(&okm.into()),
        }
    }
}

pub struct TenantKey {
    cipher: Aes256Gcm,
}

/// The on-disk form of a sealed record.
#[derive(Debug, Serialize, Deserialize)]
pub struct SealedLine {
    pub v: u32,
    pub sealed: String,
}

fn aad(tenant: &str, day: &str) -> Vec<u8> {
    format!("{tenant}\n{day}").into_bytes()
}

impl TenantKey {
    /// Seals `plaintext` for `tenant`'s file of `day` under a fresh random
    /// nonce (96 bits: collisions stay negligible far past any trail's size).
    pub fn seal(&self, tenant: &str, day: &str, plaintext: &[u8]) -> Result<SealedLine, SealError> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Random)?;
        let aad = aad(tenant, day);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(SealedLine {
            v: 1,
            sealed: STANDARD.encode(out),
        })
    }

    pub fn open(&self, tenant: &str, day: &str, line: &SealedLine) -> Result<Vec<u8>, SealError> {
        let raw = STANDARD
            .decode(&line.sealed)
            .map_err(|_| SealError::Encoding)?;
        if raw.len() < NONCE {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE);
        let nonce = Nonce::try_from(nonce).map_err(|_| SealError::Open)?;
        let aad = aad(tenant, day);
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_bytes([7; 32])
    }

    #[test]
    fn sealed_records_open_only_in_their_partition() {
        let key = master().tenant_key("acme");
        let line = key.seal("acme", "2026-11-28", b"secret record").unwrap();
        assert!(!line.sealed.contains("secret"));
        assert_eq!(
            key.open("acme", "2026-11-28", &line).unwrap(),
            b"secret record"
        );
        // Moved to another day's file, or read as another tenant's.
        assert!(key.open("acme", "2026-11-29", &line).is_err());
        assert!(key.open("globex", "2026-11-28", &line).is_err());
        let other = master().tenant_key("globex");
        assert!(other.open("acme", "2026-11-28", &line).is_err());
        // Another master key.
        let stranger = MasterKey::from_bytes([8; 32]).tenant_key("acme");
        assert!(stranger.open("acme", "2026-11-28", &line).is_err());
    }

    #[test]
    fn a_flipped_bit_is_refused() {
        let key = master().tenant_key("acme");
        let mut line = key.seal("acme", "d", b"record").unwrap();
        let mut raw = STANDARD.decode(&line.sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        line.sealed = STANDARD.encode(raw);
        assert!(key.open("acme", "d", &line).is_err());
    }

    #[test]
    fn two_seals_of_one_record_differ() {
        let key = master().tenant_key("acme");
        let a = key.seal("acme", "d", b"same").unwrap();
        let b = key.seal("acme", "d", b"same").unwrap();
        assert_ne!(a.sealed, b.sealed);
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(MasterKey::load(&path).is_ok());
        std::fs::write(&path, "abcd").unwrap();
        assert!(
            MasterKey::load(&path)
                .unwrap_err()
                .to_string()
                .contains("2 bytes")
        );
        std::fs::write(&path, "zz".repeat(32)).unwrap();
        assert!(MasterKey::load(&path).is_err());
    }
}
