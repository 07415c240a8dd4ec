//! Block hashes for the automatic prefix cache, keyed the way vLLM keys them.
//!
//! A prompt's token ids are cut into full blocks of `block_size`; each block's hash covers its
//! parent's hash, its own token ids and its extra keys:
//! `hash(i) = sha256(hash(i-1) || tokens(i) || extra_keys(i))`. Only the first block carries the
//! extra keys (the model and the request's `cache_salt`), but because every later hash chains
//! through it, two requests with different salts share no block at all; that is what makes
//! per-tenant salts close the prefix-cache timing side channel.

use crate::tokenizer::TokenId;
use sha2::{Digest, Sha256};

/// Hash of one full block of tokens and, through its parent, of every block before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub [u8; 32]);

/// What the first block's hash mixes in besides tokens.
#[derive(Debug, Clone, Copy)]
pub struct CacheScope<'a> {
    /// The served model: one mock engine serves several names, and they must not share KV.
    pub model: &'a str,
    /// The request's top-level `cache_salt`, if any.
    pub cache_salt: Option<&'a str>,
}

/// Hashes of the prompt's full blocks, in order; a trailing partial block gets no hash.
pub fn block_hashes(
    tokens: &[TokenId],
    block_size: usize,
    scope: CacheScope<'_>,
) -> Vec<BlockHash> {
    if block_size == 0 {
        return Vec::new();
    }
    let mut parent = BlockHash([0; 32]);
    tokens
        .chunks_exact(block_size)
        .enumerate()
        .map(|(index, block)| {
            let mut hasher = Sha256::new();
            hasher.update(parent.0);
            for token in block {
                hasher.update(token.to_le_bytes());
            }
            if index == 0 {
                update_extra_keys(&mut hasher, scope);
            }
            parent = BlockHash(hasher.finalize().into());
            parent
        })
        .collect()
}

/// Length-prefixed fields with a presence tag, so "no salt" and "empty salt" and any
/// concatenation of model and salt all hash differently.
fn update_extra_keys(hasher: &mut Sha256, scope: CacheScope<'_>) {
    hasher.update((scope.model.len() as u64).to_le_bytes());
    hasher.update(scope.model.as_bytes());
    match scope.cache_salt {
        Some(salt) => {
            hasher.update([1]);
            hasher.update((salt.len() as u64).to_le_bytes());
            hasher.update(salt.as_bytes());
        }
        None => hasher.update([0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(salt: Option<&str>) -> CacheScope<'_> {
        CacheScope {
            model: "m",
            cache_salt: salt,
        }
    }

    #[test]
    fn only_full_blocks_are_hashed() {
        let tokens: Vec<TokenId> = (0..40).collect();
        assert_eq!(block_hashes(&tokens, 16, scope(None)).len(), 2);
        assert!(block_hashes(&tokens[..15], 16, scope(None)).is_empty());
    }

    #[test]
    fn shared_prefix_shares_leading_hashes_only() {
        let a: Vec<TokenId> = (0..48).collect();
        let mut b = a.clone();
        b[20] = 9999;
        let (ha, hb) = (
            block_hashes(&a, 16, scope(None)),
            block_hashes(&b, 16, scope(None)),
        );
        assert_eq!(ha[0], hb[0]);
        assert_ne!(ha[1], hb[1]);
        // The chain carries the difference forward even though block 3 is identical.
        assert_ne!(ha[2], hb[2]);
    }

    #[test]
    fn salt_changes_every_block() {
        let tokens: Vec<TokenId> = (0..64).collect();
        let plain = block_hashes(&tokens, 16, scope(None));
        let salted = block_hashes(&tokens, 16, scope(Some("tenant-a")));
        let other = block_hashes(&tokens, 16, scope(Some("tenant-b")));
        let empty = block_hashes(&tokens, 16, scope(Some("")));
        for i in 0..4 {
            assert_ne!(plain[i], salted[i]);
            assert_ne!(salted[i], other[i]);
            assert_ne!(plain[i], empty[i]);
        }
        assert_eq!(
            salted,
            block_hashes(&tokens, 16, scope(Some("tenant-a"))),
            "hashing is deterministic"
        );
    }
}
