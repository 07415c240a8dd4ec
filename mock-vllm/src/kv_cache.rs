//! Paged KV cache: a fixed pool of blocks plus the prefix-cache index over them.
//!
//! Modelled on vLLM's block pool: a block is either referenced by running sequences or free.
//! A free block may still hold a cached prefix (its hash stays in the index) until the block is
//! handed out again: then the cached entry is evicted. Free blocks are handed out least recently
//! freed first, which makes eviction LRU; blocks referenced by running sequences are never evicted.

use crate::prefix_cache::BlockHash;
use std::collections::{BTreeMap, HashMap};

pub type BlockId = usize;

#[derive(Debug, Default, Clone)]
struct Block {
    ref_count: u32,
    hash: Option<BlockHash>,
    /// Position in the free queue while `ref_count == 0`.
    freed_at: Option<u64>,
}

#[derive(Debug)]
pub struct KvCache {
    blocks: Vec<Block>,
    /// Free blocks keyed by when they were freed: the first entry is evicted first.
    free_queue: BTreeMap<u64, BlockId>,
    clock: u64,
    index: HashMap<BlockHash, BlockId>,
}

impl KvCache {
    pub fn new(num_blocks: usize) -> Self {
        let mut cache = Self {
            blocks: vec![Block::default(); num_blocks],
            free_queue: BTreeMap::new(),
            clock: 0,
            index: HashMap::new(),
        };
        for id in 0..num_blocks {
            cache.push_free(id);
        }
        cache
    }

    pub fn capacity(&self) -> usize {
        self.blocks.len()
    }

    /// Fraction of blocks referenced by running sequences, vLLM's `kv_cache_usage_perc`:
    /// cached-but-free blocks count as free because they can be reclaimed at once.
    pub fn usage(&self) -> f64 {
        if self.blocks.is_empty() {
            return 0.0;
        }
        1.0 - self.free_queue.len() as f64 / self.blocks.len() as f64
    }

    pub fn cached_blocks(&self) -> usize {
        self.index.len()
    }

    /// The blocks holding the longest cached run of leading `hashes`.
    pub fn cached_prefix(&self, hashes: &[BlockHash]) -> Vec<BlockId> {
        hashes
            .iter()
            .map_while(|hash| self.index.get(hash).copied())
            .collect()
    }

    /// References the cache hits and allocates `fresh` new blocks, or changes nothing and
    /// returns `None` when they do not fit.
    pub fn allocate(&mut self, hits: &[BlockId], fresh: usize) -> Option<Vec<BlockId>> {
        let idle_hits = hits
            .iter()
            .filter(|&&id| self.blocks[id].ref_count == 0)
            .count();
        if self.free_queue.len() - idle_hits < fresh {
            return None;
        }
        let mut granted = Vec::with_capacity(hits.len() + fresh);
        for &id in hits {
            self.take_reference(id);
            granted.push(id);
        }
        for _ in 0..fresh {
            let (_, id) = self.free_queue.pop_first()?;
            let block = &mut self.blocks[id];
            if let Some(evicted) = block.hash.take() {
                self.index.remove(&evicted);
            }
            block.freed_at = None;
            block.ref_count = 1;
            granted.push(id);
        }
        Some(granted)
    }

    /// Makes freshly prefilled blocks findable by their hashes. A hash that another sequence
    /// published first keeps pointing at that block; this copy then stays private, as in vLLM.
    pub fn publish(&mut self, blocks: &[BlockId], hashes: &[BlockHash]) {
        for (&id, &hash) in blocks.iter().zip(hashes) {
            if self.blocks[id].hash.is_some() || self.index.contains_key(&hash) {
                continue;
            }
            self.blocks[id].hash = Some(hash);
            self.index.insert(hash, id);
        }
    }

    /// Drops one reference per block. Tail blocks are freed first so that they are evicted
    /// before the prefix blocks that other prompts are more likely to share.
    pub fn release(&mut self, blocks: &[BlockId]) {
        for &id in blocks.iter().rev() {
            let block = &mut self.blocks[id];
            block.ref_count = block.ref_count.saturating_sub(1);
            if block.ref_count == 0 && block.freed_at.is_none() {
                self.push_free(id);
            }
        }
    }

    /// Forgets every cached prefix; referenced blocks stay allocated to their sequences.
    pub fn reset_prefix_cache(&mut self) {
        self.index.clear();
        for block in &mut self.blocks {
            block.hash = None;
        }
    }

    fn take_reference(&mut self, id: BlockId) {
        let block = &mut self.blocks[id];
        if let Some(at) = block.freed_at.take() {
            self.free_queue.remove(&at);
        }
        block.ref_count += 1;
    }

    fn push_free(&mut self, id: BlockId) {
        self.clock += 1;
        self.blocks[id].freed_at = Some(self.clock);
        self.free_queue.insert(self.clock, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> BlockHash {
        BlockHash([n; 32])
    }

    #[test]
    fn allocation_is_refused_without_partial_effects() {
        let mut kv = KvCache::new(4);
        let first = kv.allocate(&[], 3).expect("fits");
        assert_eq!(first.len(), 3);
        assert!(kv.allocate(&[], 2).is_none());
        assert_eq!(kv.usage(), 0.75);
        kv.release(&first);
        assert_eq!(kv.usage(), 0.0);
    }

    #[test]
    fn published_blocks_survive_release_and_are_found_again() {
        let mut kv = KvCache::new(8);
        let blocks = kv.allocate(&[], 3).expect("fits");
        kv.publish(&blocks[..2], &[hash(1), hash(2)]);
        kv.release(&blocks);
        assert_eq!(kv.usage(), 0.0, "cached blocks count as free");
        assert_eq!(kv.cached_prefix(&[hash(1), hash(2), hash(3)]), blocks[..2]);

        let hits = kv.cached_prefix(&[hash(1), hash(2)]);
        let again = kv.allocate(&hits, 1).expect("fits");
        assert_eq!(again[..2], blocks[..2]);
        assert_eq!(kv.usage(), 3.0 / 8.0);
    }

    #[test]
    fn lru_evicts_oldest_free_blocks_and_never_referenced_ones() {
        let mut kv = KvCache::new(4);
        let old = kv.allocate(&[], 1).expect("fits");
        kv.publish(&old, &[hash(1)]);
        let held = kv.allocate(&[], 1).expect("fits");
        kv.publish(&held, &[hash(2)]);
        kv.release(&old);
        // Two never-used blocks sit before `old` in the free queue; the third allocation
        // has to reclaim `old` and evict its hash, while `held` is still referenced.
        let _fill = kv.allocate(&[], 3).expect("fits");
        assert!(kv.cached_prefix(&[hash(1)]).is_empty());
        assert_eq!(kv.cached_prefix(&[hash(2)]), held);
        assert!(kv.allocate(&[], 1).is_none());
    }

    #[test]
    fn reset_forgets_hashes_only() {
        let mut kv = KvCache::new(4);
        let blocks = kv.allocate(&[], 2).expect("fits");
        kv.publish(&blocks, &[hash(1), hash(2)]);
        kv.reset_prefix_cache();
        assert!(kv.cached_prefix(&[hash(1)]).is_empty());
        assert_eq!(kv.usage(), 0.5);
        kv.release(&blocks);
        assert_eq!(kv.usage(), 0.0);
    }
}
