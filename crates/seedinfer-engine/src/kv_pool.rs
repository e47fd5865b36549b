//! A model's pool of KV-cache blocks: fixed-size blocks of `block_size` positions (every layer's keys and values
//! for those positions), allocated on demand under one byte budget and shared between sessions by reference count
//! (`Arc`). Full blocks are also kept in a prefix cache keyed by a hash chained over the tokens of every block up
//! to and including them, so a session whose tokens begin the same way adopts them instead of recomputing; blocks
//! only the cache still holds are evicted least recently used first when the budget needs room.

use crate::error::{EngineError, Result};
use half::f16;
use seedinfer_kernels::attention::{quantize_row_i8, KvHead, KvRows};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// How cached keys and values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvDtype {
    F32,
    F16,
    /// int8 with one f32 scale per token and KV head.
    Int8,
}

impl KvDtype {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "f32" => Some(Self::F32),
            "f16" => Some(Self::F16),
            "int8" | "i8" | "q8" => Some(Self::Int8),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Int8 => "int8",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Int8 => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        [Self::F32, Self::F16, Self::Int8]
            .into_iter()
            .find(|d| d.code() == code)
    }

    /// Bytes of one stored value.
    fn element_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
            Self::Int8 => 1,
        }
    }
}

/// `kvCache` load option.
#[derive(Clone, Copy, Debug)]
pub struct KvCacheOptions {
    pub dtype: KvDtype,
    /// Positions per block: a multiple of 8 in `[8, 1024]`.
    pub block_size: usize,
    /// Byte budget of the pool; `None` picks the larger of 1 GiB and two full contexts.
    pub budget_bytes: Option<usize>,
    /// Keep full blocks for reuse by later sessions with the same token prefix.
    pub prefix_caching: bool,
}

impl Default for KvCacheOptions {
    fn default() -> Self {
        Self {
            dtype: KvDtype::F16,
            block_size: 32,
            budget_bytes: None,
            prefix_caching: true,
        }
    }
}

/// Shape of a block: every layer's keys and values for `block_size` positions, stored per (layer, KV head) as
/// `[block_size, head_dim]` rows so one head's keys of a block are contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLayout {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub dtype: KvDtype,
}

impl BlockLayout {
    /// Values of the keys (or of the values) of one block.
    fn elements(&self) -> usize {
        self.layers * self.kv_heads * self.block_size * self.head_dim
    }

    /// Row scales of the keys (or values) of one block stored as `dtype`.
    fn scales(&self, dtype: KvDtype) -> usize {
        match dtype {
            KvDtype::Int8 => self.layers * self.kv_heads * self.block_size,
            _ => 0,
        }
    }

    /// How block `index` of a session is stored: in an int8 cache the first block stays f16. It holds the
    /// attention-sink tokens, and its keys set the channel scales of all later blocks (see `KeyChannels`).
    pub fn block_dtype(&self, index: usize) -> KvDtype {
        match self.dtype {
            KvDtype::Int8 if index == 0 => KvDtype::F16,
            dtype => dtype,
        }
    }

    fn bytes_of(&self, dtype: KvDtype) -> usize {
        2 * (self.elements() * dtype.element_bytes() + self.scales(dtype) * 4)
    }

    /// Bytes of a block in the cache's dtype (every block but an int8 cache's first).
    pub fn block_bytes(&self) -> usize {
        self.bytes_of(self.dtype)
    }

    /// Bytes of block `index` of a session.
    pub fn block_bytes_at(&self, index: usize) -> usize {
        self.bytes_of(self.block_dtype(index))
    }

    /// Bytes a token's keys and values take in this dtype.
    pub fn bytes_per_token(&self) -> usize {
        self.block_bytes() / self.block_size
    }

    /// Index of the first row of (`layer`, `kv_head`) in a block, in rows.
    fn head_rows(&self, layer: usize, kv_head: usize) -> usize {
        (layer * self.kv_heads + kv_head) * self.block_size
    }
}

/// Stored rows of a block's keys or values.
#[derive(Clone)]
enum Rows {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Int8 { rows: Vec<i8>, scales: Vec<f32> },
}

impl Rows {
    fn new(layout: &BlockLayout, dtype: KvDtype) -> Self {
        let n = layout.elements();
        match dtype {
            KvDtype::F32 => Rows::F32(vec![0.0; n]),
            KvDtype::F16 => Rows::F16(vec![f16::ZERO; n]),
            KvDtype::Int8 => Rows::Int8 {
                rows: vec![0; n],
                scales: vec![0.0; layout.scales(dtype)],
            },
        }
    }

    /// Stores row `row` (of `x.len()` values) from f32.
    fn write(&mut self, row: usize, x: &[f32]) {
        let at = row * x.len();
        match self {
            Rows::F32(v) => v[at..at + x.len()].copy_from_slice(x),
            Rows::F16(v) => {
                for (o, &x) in v[at..at + x.len()].iter_mut().zip(x) {
                    *o = f16::from_f32(x);
                }
            }
            Rows::Int8 { rows, scales } => {
                scales[row] = quantize_row_i8(x, &mut rows[at..at + x.len()]);
            }
        }
    }

    /// Element `c` of row `row` (rows of `head_dim` values), widened to f32 with its row scale.
    fn get(&self, row: usize, c: usize, head_dim: usize) -> f32 {
        let at = row * head_dim + c;
        match self {
            Rows::F32(v) => v[at],
            Rows::F16(v) => v[at].to_f32(),
            Rows::Int8 { rows, scales } => scales[row] * rows[at] as f32,
        }
    }

    /// The rows `first..first + count` of `head_dim` values, for attention.
    fn view(&self, first: usize, count: usize, head_dim: usize) -> KvRows<'_> {
        let span = first * head_dim..(first + count) * head_dim;
        match self {
            Rows::F32(v) => KvRows::F32(&v[span]),
            Rows::F16(v) => KvRows::F16(&v[span]),
            Rows::Int8 { rows, scales } => KvRows::I8 {
                rows: &rows[span],
                scales: &scales[first..first + count],
                scale_stride: 1,
            },
        }
    }

    /// Raw bytes of rows `first..first + count` (values, then int8 scales), for saving.
    pub(crate) fn bytes(&self, first: usize, count: usize, head_dim: usize, out: &mut Vec<u8>) {
        let span = first * head_dim..(first + count) * head_dim;
        match self {
            Rows::F32(v) => out.extend_from_slice(bytemuck::cast_slice(&v[span])),
            Rows::F16(v) => out.extend_from_slice(bytemuck::cast_slice(&v[span])),
            Rows::Int8 { rows, scales } => {
                out.extend_from_slice(bytemuck::cast_slice(&rows[span]));
                out.extend_from_slice(bytemuck::cast_slice(&scales[first..first + count]));
            }
        }
    }

    /// Inverse of [`Rows::bytes`]; `bytes` has exactly the length `bytes` writes.
    pub(crate) fn set_bytes(&mut self, first: usize, count: usize, head_dim: usize, bytes: &[u8]) {
        let span = first * head_dim..(first + count) * head_dim;
        match self {
            Rows::F32(v) => bytemuck::cast_slice_mut(&mut v[span]).copy_from_slice(bytes),
            Rows::F16(v) => bytemuck::cast_slice_mut(&mut v[span]).copy_from_slice(bytes),
            Rows::Int8 { rows, scales } => {
                let n = span.len();
                bytemuck::cast_slice_mut(&mut rows[span]).copy_from_slice(&bytes[..n]);
                bytemuck::cast_slice_mut(&mut scales[first..first + count])
                    .copy_from_slice(&bytes[n..]);
            }
        }
    }
}

/// One block of the pool. Its bytes count against the budget until it is dropped.
pub struct KvBlock {
    keys: Rows,
    values: Rows,
    pool: Arc<PoolShared>,
}

impl Drop for KvBlock {
    fn drop(&mut self) {
        let bytes = self.bytes();
        self.pool.used_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.pool.live_blocks.fetch_sub(1, Ordering::AcqRel);
    }
}

impl KvBlock {
    /// Stores the keys and values of one position (`[kv_heads * head_dim]` each) at `slot` of this block. With
    /// `key_channels` (`[kv_heads * head_dim]`), int8 keys are stored divided by them channel by channel.
    pub(crate) fn write(
        &mut self,
        layer: usize,
        slot: usize,
        keys: &[f32],
        values: &[f32],
        key_channels: Option<&[f32]>,
    ) {
        let layout = self.pool.layout;
        let hd = layout.head_dim;
        let channels = key_channels.filter(|_| self.dtype() == KvDtype::Int8);
        // Room for one scaled key row on the stack for usual head sizes, on the heap beyond.
        let (mut stack, mut heap) = ([0.0f32; 256], Vec::new());
        let scaled: &mut [f32] = if channels.is_none() {
            &mut []
        } else if hd <= stack.len() {
            &mut stack[..hd]
        } else {
            heap.resize(hd, 0.0);
            &mut heap
        };
        for h in 0..layout.kv_heads {
            let row = layout.head_rows(layer, h) + slot;
            let key = &keys[h * hd..(h + 1) * hd];
            match channels {
                Some(channels) => {
                    for ((o, k), c) in scaled.iter_mut().zip(key).zip(&channels[h * hd..]) {
                        *o = k / c;
                    }
                    self.keys.write(row, scaled);
                }
                None => self.keys.write(row, key),
            }
            self.values.write(row, &values[h * hd..(h + 1) * hd]);
        }
    }

    /// How this block is stored (see [`BlockLayout::block_dtype`]).
    pub fn dtype(&self) -> KvDtype {
        match self.keys {
            Rows::F32(_) => KvDtype::F32,
            Rows::F16(_) => KvDtype::F16,
            Rows::Int8 { .. } => KvDtype::Int8,
        }
    }

    /// Bytes this block counts against the budget.
    pub fn bytes(&self) -> usize {
        self.pool.layout.bytes_of(self.dtype())
    }

    /// Key channel scales of one layer from this block's first `count` keys (see `KvStore::key_channels`):
    /// per KV head and channel, the square root of the largest magnitude over the block's positions after the
    /// first (the first is the attention sink, whose key is unlike the others), floored at a thousandth of the
    /// head's largest. Keys divided by them have channels of more even size, so one int8 scale per token and head
    /// no longer spends its range on a few large channels; queries multiplied by them give the same scores (the
    /// SmoothQuant balance, with exponent 1/2).
    pub(crate) fn key_channels(&self, layer: usize, count: usize) -> Vec<f32> {
        let layout = self.pool.layout;
        let hd = layout.head_dim;
        let mut out = vec![0.0f32; layout.kv_heads * hd];
        for (h, head) in out.chunks_mut(hd).enumerate() {
            let first = layout.head_rows(layer, h);
            for p in 1.min(count - 1)..count {
                for (c, m) in head.iter_mut().enumerate() {
                    *m = m.max(self.keys.get(first + p, c, hd).abs());
                }
            }
            let floor = head.iter().copied().fold(0.0f32, f32::max) * 1e-3;
            head.iter_mut()
                .for_each(|m| *m = m.max(floor).max(f32::MIN_POSITIVE).sqrt());
        }
        out
    }

    /// Makes this block a copy of `other` (copy-on-write of a shared block).
    pub(crate) fn copy_from(&mut self, other: &KvBlock) {
        self.keys.clone_from(&other.keys);
        self.values.clone_from(&other.values);
    }

    /// Positions `0..count` of this block for one layer and KV head, as the attention kernel reads them.
    pub fn head(&self, layer: usize, kv_head: usize, count: usize) -> KvHead<'_> {
        let layout = &self.pool.layout;
        let first = layout.head_rows(layer, kv_head);
        KvHead {
            keys: self.keys.view(first, count, layout.head_dim),
            values: self.values.view(first, count, layout.head_dim),
            stride: layout.head_dim,
            offset: 0,
            head_dim: layout.head_dim,
        }
    }

    /// Appends the stored bytes of positions `0..count` of every layer and head (keys, then values).
    pub(crate) fn save(&self, count: usize, out: &mut Vec<u8>) {
        let layout = &self.pool.layout;
        for layer in 0..layout.layers {
            for h in 0..layout.kv_heads {
                let first = layout.head_rows(layer, h);
                self.keys.bytes(first, count, layout.head_dim, out);
                self.values.bytes(first, count, layout.head_dim, out);
            }
        }
    }

    /// Bytes [`KvBlock::save`] writes for `count` positions of a block stored as `dtype`: every stored byte of
    /// those positions.
    pub(crate) fn saved_bytes(layout: &BlockLayout, dtype: KvDtype, count: usize) -> usize {
        layout.bytes_of(dtype) / layout.block_size * count
    }

    /// Inverse of [`KvBlock::save`].
    pub(crate) fn restore(&mut self, count: usize, bytes: &[u8]) {
        let layout = self.pool.layout;
        let part =
            Self::saved_bytes(&layout, self.dtype(), count) / (2 * layout.layers * layout.kv_heads);
        let mut chunks = bytes.chunks_exact(part);
        for layer in 0..layout.layers {
            for h in 0..layout.kv_heads {
                let first = layout.head_rows(layer, h);
                if let (Some(k), Some(v)) = (chunks.next(), chunks.next()) {
                    self.keys.set_bytes(first, count, layout.head_dim, k);
                    self.values.set_bytes(first, count, layout.head_dim, v);
                }
            }
        }
    }
}

/// A full block kept for prefix reuse.
struct CachedBlock {
    block: Arc<KvBlock>,
    parent: u64,
    tokens: Box<[u32]>,
    last_used: u64,
    /// Cached blocks that continue this one: a block is evicted only after them, since without it they could
    /// never be looked up again.
    children: usize,
}

impl CachedBlock {
    /// Only the cache holds the block. (Only the locked cache hands out new references to a cached block, so
    /// under the lock this cannot change.)
    fn evictable(&self) -> bool {
        Arc::strong_count(&self.block) == 1
    }
}

#[derive(Default)]
struct PrefixCache {
    entries: HashMap<u64, CachedBlock>,
    clock: u64,
}

impl PrefixCache {
    /// Removes an entry, keeping its parent's child count. Dropping the entry returns the block's bytes to the
    /// budget if no session holds it (`KvBlock::drop` takes no lock, so this may run under the lock).
    fn remove(&mut self, hash: u64) -> Option<CachedBlock> {
        let entry = self.entries.remove(&hash)?;
        if let Some(parent) = self.entries.get_mut(&entry.parent) {
            parent.children = parent.children.saturating_sub(1);
        }
        Some(entry)
    }
}

struct PoolShared {
    layout: BlockLayout,
    budget_bytes: usize,
    prefix_caching: bool,
    used_bytes: AtomicUsize,
    live_blocks: AtomicUsize,
    prefix_hit_blocks: AtomicU64,
    evicted_blocks: AtomicU64,
    cache: Mutex<PrefixCache>,
}

/// Counts reported by `model.cacheStats()`.
#[derive(Clone, Debug, Default)]
pub struct CacheStats {
    pub dtype: &'static str,
    pub block_size: usize,
    pub block_bytes: usize,
    pub budget_bytes: usize,
    pub used_bytes: usize,
    /// Blocks allocated (held by sessions or by the prefix cache).
    pub blocks_used: usize,
    /// Blocks that still fit in the budget.
    pub blocks_free: usize,
    /// Cached blocks held by two or more sessions at once.
    pub blocks_shared: usize,
    /// Blocks held by the prefix cache alone: reusable, and evicted first when room is needed.
    pub blocks_cached: usize,
    pub prefix_hit_blocks: u64,
    pub prefix_hit_tokens: u64,
    pub evicted_blocks: u64,
}

/// The pool; cheap to clone (all clones are the same pool).
#[derive(Clone)]
pub struct KvPool {
    shared: Arc<PoolShared>,
}

/// The hash chaining block `tokens` onto the prefix hashed as `parent`.
pub(crate) fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// The chain hash of the empty prefix.
pub(crate) const ROOT_HASH: u64 = 0x5eed_5eed;

impl KvPool {
    pub fn new(layout: BlockLayout, budget_bytes: usize, prefix_caching: bool) -> Self {
        Self {
            shared: Arc::new(PoolShared {
                layout,
                budget_bytes,
                prefix_caching,
                used_bytes: AtomicUsize::new(0),
                live_blocks: AtomicUsize::new(0),
                prefix_hit_blocks: AtomicU64::new(0),
                evicted_blocks: AtomicU64::new(0),
                cache: Mutex::new(PrefixCache::default()),
            }),
        }
    }

    pub fn layout(&self) -> &BlockLayout {
        &self.shared.layout
    }

    fn lock(&self) -> MutexGuard<'_, PrefixCache> {
        // A panic while holding the lock leaves the map consistent (every operation completes or does nothing).
        self.shared
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Allocates fresh blocks for the block-table positions `indices` (which decide their storage), evicting cached
    /// blocks no session uses (least recently used first) when the budget needs room. Fails with
    /// `KV_BUDGET_EXCEEDED` if even then they do not fit; nothing is allocated or evicted then.
    pub fn allocate(&self, indices: &[usize]) -> Result<Vec<KvBlock>> {
        let count = indices.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        let shared = &self.shared;
        let layout = shared.layout;
        let needed: usize = indices.iter().map(|&i| layout.block_bytes_at(i)).sum();
        let mut cache = self.lock();
        // Refuse before evicting anything if even evicting every block only the cache holds would not make room.
        let evictable: usize = cache
            .entries
            .values()
            .filter(|e| e.evictable())
            .map(|e| e.block.bytes())
            .sum();
        let used = shared.used_bytes.load(Ordering::Acquire);
        let available = (shared.budget_bytes + evictable).saturating_sub(used);
        if needed > available {
            return Err(EngineError::KvBudgetExceeded {
                needed,
                available,
                budget: shared.budget_bytes,
            });
        }
        loop {
            let used = shared.used_bytes.load(Ordering::Acquire);
            if used + needed <= shared.budget_bytes {
                shared.used_bytes.fetch_add(needed, Ordering::AcqRel);
                shared.live_blocks.fetch_add(count, Ordering::AcqRel);
                break;
            }
            // Sessions hold whole chains from the first block, so leaves (blocks no cached block continues) go
            // first.
            let victim = cache
                .entries
                .iter()
                .filter(|(_, e)| e.evictable() && e.children == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(&hash, _)| hash);
            match victim.and_then(|hash| cache.remove(hash)) {
                Some(entry) => {
                    shared.evicted_blocks.fetch_add(1, Ordering::Relaxed);
                    // Dropping returns its bytes to the budget (`KvBlock::drop` takes no lock).
                    drop(entry);
                }
                None => {
                    return Err(EngineError::KvBudgetExceeded {
                        needed,
                        available: shared.budget_bytes.saturating_sub(used),
                        budget: shared.budget_bytes,
                    })
                }
            }
        }
        drop(cache);
        Ok(indices
            .iter()
            .map(|&i| {
                let dtype = layout.block_dtype(i);
                KvBlock {
                    keys: Rows::new(&layout, dtype),
                    values: Rows::new(&layout, dtype),
                    pool: Arc::clone(shared),
                }
            })
            .collect())
    }

    /// Offers a full block to the prefix cache under `hash` (its prefix chained with `tokens`).
    pub fn offer(&self, hash: u64, parent: u64, tokens: &[u32], block: &Arc<KvBlock>) {
        if !self.shared.prefix_caching {
            return;
        }
        let mut cache = self.lock();
        cache.clock += 1;
        let clock = cache.clock;
        if let Some(entry) = cache.entries.get_mut(&hash) {
            entry.last_used = clock;
            return;
        }
        if let Some(p) = cache.entries.get_mut(&parent) {
            p.children += 1;
        }
        cache.entries.insert(
            hash,
            CachedBlock {
                block: Arc::clone(block),
                parent,
                tokens: tokens.into(),
                last_used: clock,
                children: 0,
            },
        );
    }

    /// The cached block for `tokens` after the prefix hashed as `parent`, if any.
    pub fn lookup(&self, parent: u64, tokens: &[u32]) -> Option<(u64, Arc<KvBlock>)> {
        if !self.shared.prefix_caching {
            return None;
        }
        let hash = chain_hash(parent, tokens);
        let mut cache = self.lock();
        cache.clock += 1;
        let clock = cache.clock;
        let entry = cache.entries.get_mut(&hash)?;
        if entry.parent != parent || *entry.tokens != *tokens {
            return None;
        }
        entry.last_used = clock;
        self.shared
            .prefix_hit_blocks
            .fetch_add(1, Ordering::Relaxed);
        Some((hash, Arc::clone(&entry.block)))
    }

    /// Drops every cached block no session uses.
    pub fn clear_prefix_cache(&self) {
        let mut cache = self.lock();
        let keys: Vec<u64> = cache
            .entries
            .iter()
            .filter(|(_, e)| e.evictable())
            .map(|(&k, _)| k)
            .collect();
        for k in keys {
            cache.remove(k);
        }
    }

    pub fn stats(&self) -> CacheStats {
        let shared = &self.shared;
        let layout = &shared.layout;
        let (cached, sharing) = {
            let cache = self.lock();
            let counts = cache.entries.values().map(|e| Arc::strong_count(&e.block));
            counts.fold((0, 0), |(alone, shared), n| {
                (alone + usize::from(n == 1), shared + usize::from(n >= 3))
            })
        };
        let used = shared.used_bytes.load(Ordering::Acquire);
        let hits = shared.prefix_hit_blocks.load(Ordering::Relaxed);
        CacheStats {
            dtype: layout.dtype.name(),
            block_size: layout.block_size,
            block_bytes: layout.block_bytes(),
            budget_bytes: shared.budget_bytes,
            used_bytes: used,
            blocks_used: shared.live_blocks.load(Ordering::Acquire),
            blocks_free: shared.budget_bytes.saturating_sub(used) / layout.block_bytes(),
            blocks_shared: sharing,
            blocks_cached: cached,
            prefix_hit_blocks: hits,
            prefix_hit_tokens: hits * layout.block_size as u64,
            evicted_blocks: shared.evicted_blocks.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(blocks: usize) -> KvPool {
        let layout = BlockLayout {
            layers: 2,
            kv_heads: 1,
            head_dim: 8,
            block_size: 8,
            dtype: KvDtype::F32,
        };
        KvPool::new(layout, blocks * layout.block_bytes(), true)
    }

    #[test]
    fn eviction_takes_the_last_block_of_a_cached_chain_first() {
        let pool = pool(3);
        let chain: Vec<[u32; 8]> = (0..3u32).map(|b| [b; 8]).collect();
        let mut parent = ROOT_HASH;
        for (block, tokens) in pool
            .allocate(&[0, 1, 2])
            .expect("fits")
            .into_iter()
            .zip(&chain)
        {
            let hash = chain_hash(parent, tokens);
            pool.offer(hash, parent, tokens, &Arc::new(block));
            parent = hash;
        }
        assert_eq!(pool.stats().blocks_cached, 3);
        // The first block is the least recently used, but evicting it would strand the other two.
        drop(pool.allocate(&[3]).expect("evicts one"));
        assert_eq!(pool.stats().evicted_blocks, 1);
        let first = pool.lookup(ROOT_HASH, &chain[0]).expect("first block kept");
        assert!(
            pool.lookup(first.0, &chain[1]).is_some(),
            "second block kept"
        );
        drop(first);
        assert!(matches!(
            pool.allocate(&[0, 1, 2, 3]),
            Err(EngineError::KvBudgetExceeded { .. })
        ));
        // Nothing was evicted by the refused request.
        assert_eq!(pool.stats().blocks_cached, 2);
    }
}
