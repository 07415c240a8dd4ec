//! Cache isolation: the `cache_salt` vLLM mixes into its prefix-cache keys,
//! and the prefix-affinity key Envoy hashes to pick a replica.
//!
//! - Strict profile: `cache_salt = hex(HMAC-SHA256(cache_secret, tenant_id))`,
//!   always overwriting whatever the client sent, so no tenant can hit (or
//!   time) another tenant's cached blocks, nor pick another tenant's salt.
//! - Trusted profile: no salt, and a client-sent `cache_salt` is removed, so
//!   every trusted tenant shares one cache namespace and none can wall itself
//!   off into a private one it could probe from.
//!
//! The affinity key mirrors vLLM's block-hash chain: `h0 = sha256(seed)`,
//! `h_i = sha256(h_{i-1} || block_i)`, over fixed-size blocks of the prompt
//! (`prefix_block_tokens` estimated tokens, cut by characters). The key is
//! `h_K` after the first K full blocks (fewer when the prompt is shorter), so
//! requests sharing a system prompt or few-shot prefix land on the replica
//! that has it cached. The seed is the tenant salt in the strict profile (two
//! tenants never share a key) and a constant in the trusted one.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::body::{Piece, Prompt};

/// Seed of the prefix chain for trusted-profile tenants.
pub const SHARED_CHAIN_SEED: &[u8] = b"llm-gateway/trusted-prefix-chain/v1";

/// Separates a role from its content and one message from the next in the
/// byte stream the chain hashes, so `("ab","c")` and `("a","bc")` differ.
const ROLE_END: u8 = 0x1f;
const SEGMENT_END: u8 = 0x1e;

/// What one tenant's requests carry, derived per request by [`KeyDeriver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCacheKeys {
    /// The `cache_salt` to force (strict), or `None` to strip it (trusted).
    pub salt: Option<String>,
    /// `h0` of the prefix chain.
    pub chain_seed: [u8; 32],
}

impl TenantCacheKeys {
    pub fn strict(salt: String) -> Self {
        let chain_seed = Sha256::digest(salt.as_bytes()).into();
        Self {
            salt: Some(salt),
            chain_seed,
        }
    }

    pub fn trusted() -> Self {
        Self {
            salt: None,
            chain_seed: Sha256::digest(SHARED_CHAIN_SEED).into(),
        }
    }
}

/// Lower-case hex of a digest, as `hex::encode` writes it, through its
/// slice encoder: the string encoder pushes one `char` at a time, which was
/// a tenth of the policy's work on a small request (three digests each).
pub fn hex_digest(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len().saturating_mul(2)];
    match hex::encode_to_slice(bytes, &mut out) {
        Ok(()) => String::from_utf8(out).unwrap_or_else(|_| hex::encode(bytes)),
        Err(_) => hex::encode(bytes),
    }
}

/// `hex(HMAC-SHA256(secret, tenant_id))`; `None` only if the MAC refuses the key.
pub fn tenant_salt(secret: &[u8], tenant_id: &str) -> Option<String> {
    KeyDeriver::new(secret).map(|d| d.salt(tenant_id))
}

/// Tenants whose keys a VM remembers; past this the memory is cleared and
/// refilled by the tenants that ask next (bounded whatever a registry of
/// 100,000 tenants sends through one worker).
const REMEMBERED_TENANTS: usize = 4096;

/// Derives a tenant's cache keys from the cache secret when a request needs
/// them, where deriving every tenant's keys at load cost seconds and
/// megabytes per VM with a registry of 100,000 tenants (bench/README.md,
/// registry-scale). The derivation (an HMAC and a hash: a quarter of the
/// policy's own work on a small request) is remembered for the tenants
/// that send: the same keys on every request of a tenant.
pub struct KeyDeriver {
    /// Keyed once: a clone skips the key schedule on every request.
    mac: Hmac<Sha256>,
    trusted: TenantCacheKeys,
    /// Strict-profile keys already derived, by tenant id. A VM runs on one
    /// thread, so the lock is never contended; it keeps the policy `Sync`
    /// for native callers (the fuzz targets hold one in a static).
    derived: Mutex<HashMap<String, TenantCacheKeys>>,
}

impl Clone for KeyDeriver {
    /// The same keys; what was remembered is not copied.
    fn clone(&self) -> Self {
        Self {
            mac: self.mac.clone(),
            trusted: self.trusted.clone(),
            derived: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for KeyDeriver {
    // The MAC holds the secret: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDeriver { .. }")
    }
}

impl KeyDeriver {
    /// `None` only if the MAC refuses the key.
    pub fn new(secret: &[u8]) -> Option<Self> {
        Some(Self {
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?,
            trusted: TenantCacheKeys::trusted(),
            derived: Mutex::default(),
        })
    }

    /// `hex(HMAC-SHA256(secret, tenant_id))`.
    pub fn salt(&self, tenant_id: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(tenant_id.as_bytes());
        hex_digest(&mac.finalize().into_bytes())
    }

    /// The keys of `tenant_id`'s requests under its cache profile.
    pub fn keys(&self, strict: bool, tenant_id: &str) -> TenantCacheKeys {
        if !strict {
            return self.trusted.clone();
        }
        let Ok(mut derived) = self.derived.try_lock() else {
            // Never busy on a VM's one thread; deriving is always right.
            return TenantCacheKeys::strict(self.salt(tenant_id));
        };
        if let Some(keys) = derived.get(tenant_id) {
            return keys.clone();
        }
        if derived.len() >= REMEMBERED_TENANTS {
            derived.clear();
        }
        let keys = TenantCacheKeys::strict(self.salt(tenant_id));
        derived.insert(tenant_id.to_owned(), keys.clone());
        keys
    }
}

/// The first `limit` bytes of the prompt's first sequence, as the chain sees it.
pub fn prefix_stream(prompt: &Prompt, limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(limit.min(64 * 1024));
    let Some(sequence) = prompt.sequences.first() else {
        return out;
    };
    for segment in sequence {
        if out.len() >= limit {
            break;
        }
        if let Some(role) = &segment.role {
            out.extend_from_slice(role.as_bytes());
            out.push(ROLE_END);
        }
        for piece in &segment.pieces {
            match piece {
                Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
                Piece::TokenIds(ids) => {
                    for id in ids {
                        out.extend_from_slice(&id.to_le_bytes());
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                Piece::Media(raw) => out.extend_from_slice(raw.as_bytes()),
            }
        }
        out.push(SEGMENT_END);
    }
    out.truncate(limit);
    out
}

/// The chain hash after the first `blocks` full blocks of `stream`.
///
/// A prompt shorter than one block hashes its partial block instead of
/// stopping at `h0`: vLLM caches nothing for it, so it should spread across
/// replicas rather than pile every short request of a tenant onto one.
pub fn prefix_key(
    chain_seed: &[u8; 32],
    stream: &[u8],
    block_bytes: usize,
    blocks: usize,
) -> [u8; 32] {
    let block_bytes = block_bytes.max(1);
    let full = stream.len() / block_bytes;
    let mut hash = *chain_seed;
    let chained: Vec<&[u8]> = if full == 0 && !stream.is_empty() {
        vec![stream]
    } else {
        stream.chunks_exact(block_bytes).take(blocks).collect()
    };
    for block in chained {
        let mut h = Sha256::new();
        h.update(hash);
        h.update(block);
        hash = h.finalize().into();
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Segment;

    fn chat(system: &str, user: &str) -> Prompt {
        let seg = |role: &str, text: &str| Segment {
            role: Some(role.to_owned()),
            pieces: vec![Piece::Text(text.to_owned())],
        };
        Prompt {
            chat: true,
            sequences: vec![vec![seg("system", system), seg("user", user)]],
        }
    }

    fn key(keys: &TenantCacheKeys, prompt: &Prompt) -> [u8; 32] {
        // 16-byte blocks, key after 4 of them.
        prefix_key(&keys.chain_seed, &prefix_stream(prompt, 64), 16, 4)
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn digests_are_in_lower_case_hex_as_hex_encode_writes_them() {
        for bytes in [&[][..], &[0x00, 0x0f, 0xa0, 0xff], &[0xab; 32]] {
            assert_eq!(hex_digest(bytes), hex::encode(bytes));
        }
    }

    #[test]
    fn salt_is_hmac_of_tenant() {
        let a = tenant_salt(SECRET, "acme").unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(a, tenant_salt(SECRET, "acme").unwrap());
        assert_ne!(a, tenant_salt(SECRET, "globex").unwrap());
        assert_ne!(
            a,
            tenant_salt(b"another-secret-another-secret-xx", "acme").unwrap()
        );
        // RFC 4231 test case 2 pins the construction.
        assert_eq!(
            tenant_salt(b"Jefe", "what do ya want for nothing?").unwrap(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn remembered_keys_are_the_derived_ones_and_memory_stays_bounded() {
        let deriver = KeyDeriver::new(SECRET).unwrap();
        let tenants = REMEMBERED_TENANTS + 10;
        // Twice round more tenants than are remembered: every answer is
        // still each tenant's own, first derived or remembered.
        for _ in 0..2 {
            for n in 0..tenants {
                let tenant = format!("t{n}");
                assert_eq!(
                    deriver.keys(true, &tenant),
                    TenantCacheKeys::strict(tenant_salt(SECRET, &tenant).unwrap()),
                    "{tenant}"
                );
                assert!(deriver.derived.lock().unwrap().len() <= REMEMBERED_TENANTS);
            }
        }
        assert_eq!(deriver.keys(false, "t1"), TenantCacheKeys::trusted());
    }

    #[test]
    fn the_deriver_gives_each_profile_its_keys() {
        let deriver = KeyDeriver::new(SECRET).unwrap();
        assert_eq!(
            deriver.keys(true, "acme"),
            TenantCacheKeys::strict(tenant_salt(SECRET, "acme").unwrap())
        );
        assert_ne!(deriver.keys(true, "acme"), deriver.keys(true, "globex"));
        assert_eq!(deriver.keys(false, "acme"), TenantCacheKeys::trusted());
        assert_eq!(deriver.keys(false, "globex"), TenantCacheKeys::trusted());
        assert!(!format!("{deriver:?}").contains("0123"));
    }

    #[test]
    fn same_tenant_same_prefix_same_key() {
        let acme = TenantCacheKeys::strict(tenant_salt(SECRET, "acme").unwrap());
        let system = "You are a support agent for Northwind. Answer briefly and politely.";
        let a = key(&acme, &chat(system, "my router blinks red"));
        let b = key(&acme, &chat(system, "how do I pay my bill?"));
        assert_eq!(a, b, "the shared 64-byte prefix decides the key");
        assert_ne!(
            a,
            key(
                &acme,
                &chat("Another system prompt entirely, long enough.", "x")
            )
        );
    }

    #[test]
    fn different_tenants_never_share_a_key() {
        let acme = TenantCacheKeys::strict(tenant_salt(SECRET, "acme").unwrap());
        let globex = TenantCacheKeys::strict(tenant_salt(SECRET, "globex").unwrap());
        let p = chat(
            "the very same long system prompt for both tenants here",
            "hi",
        );
        assert_ne!(key(&acme, &p), key(&globex, &p));
        // Trusted tenants share one seed, hence one key per prefix.
        assert_eq!(
            key(&TenantCacheKeys::trusted(), &p),
            key(&TenantCacheKeys::trusted(), &p)
        );
        assert_ne!(key(&TenantCacheKeys::trusted(), &p), key(&acme, &p));
    }

    #[test]
    fn chain_matches_its_definition() {
        let seed = [7u8; 32];
        let stream = b"aaaabbbbcc";
        let h1: [u8; 32] = Sha256::new()
            .chain_update(seed)
            .chain_update(b"aaaa")
            .finalize()
            .into();
        let h2: [u8; 32] = Sha256::new()
            .chain_update(h1)
            .chain_update(b"bbbb")
            .finalize()
            .into();
        assert_eq!(prefix_key(&seed, stream, 4, 1), h1);
        // Only full blocks count: the trailing "cc" is not hashed.
        assert_eq!(prefix_key(&seed, stream, 4, 8), h2);
        // Shorter than a block: the partial block is hashed.
        let short: [u8; 32] = Sha256::new()
            .chain_update(seed)
            .chain_update(b"cc")
            .finalize()
            .into();
        assert_eq!(prefix_key(&seed, b"cc", 4, 4), short);
        assert_eq!(prefix_key(&seed, b"", 4, 4), seed);
    }

    #[test]
    fn stream_separates_roles_and_messages() {
        let a = prefix_stream(&chat("ab", "c"), 100);
        let b = prefix_stream(&chat("a", "bc"), 100);
        assert_ne!(a, b);
        assert_eq!(prefix_stream(&chat("abcdef", "g"), 4).len(), 4);
    }
}
