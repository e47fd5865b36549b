//! A session's KV cache. [`PagedKv`] is the real one: a block table over the model's [`KvPool`], with prefix
//! reuse, copy-on-write forks and truncation. [`ContiguousKv`] is the straightforward reference (one f32 array
//! per layer) that tests hold the paged cache to.
//!
//! Both present the cache to attention the same way, block by block ([`KvStore::head`]), and attention computes a
//! query's softmax block by block in position order whatever the storage, so the two give identical logits.

use crate::error::Result;
use crate::kv_pool::{chain_hash, KvBlock, KvDtype, KvPool, ROOT_HASH};
use crate::think::KeptChannels;
use seedinfer_kernels::attention::{KvHead, KvRows};
use std::sync::Arc;

/// Positions of the tokens a forward step computes, ascending: consecutive from a first one (a prompt or a decoded
/// token), or any list (token pruning computes some positions at some layers only).
#[derive(Clone, Copy, Debug)]
pub enum Positions<'a> {
    From(usize),
    List(&'a [usize]),
}

impl Positions<'_> {
    /// Position of the `t`-th token.
    #[inline]
    pub fn at(&self, t: usize) -> usize {
        match self {
            Positions::From(first) => first + t,
            Positions::List(list) => list[t],
        }
    }
}

/// What the forward pass needs of a KV cache.
pub trait KvStore: Sync {
    /// Positions held.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions per block. Attention folds a query's softmax over blocks of this many positions.
    fn block_size(&self) -> usize;

    /// How many of the stored rows a query at `position` attends over: they are the first ones. A cache stores
    /// rows by position, so `position + 1`; a store of some positions only (token pruning) counts those.
    fn visible(&self, position: usize) -> usize {
        position + 1
    }

    /// The most positions this cache's session may hold (its context size), which picks LongRoPE's factors.
    fn context_size(&self) -> usize {
        usize::MAX
    }

    /// Stores one layer's keys and values (`[tokens, kv_dim]`) at `positions` (reserved beforehand);
    /// [`KvStore::commit`] advances the length once every layer of new positions is written.
    fn write(&mut self, layer: usize, positions: Positions, keys: &[f32], values: &[f32]);

    fn commit(&mut self, tokens: usize);

    /// Positions `block * block_size()..` (`count` of them) of one layer's KV head.
    fn head(&self, layer: usize, kv_head: usize, block: usize, count: usize) -> KvHead<'_>;

    /// Per-channel key scales (`[kv_heads * head_dim]`) of one layer, if keys of every block but the first are
    /// stored divided by them (int8 caches, once the first block is full). A query multiplied by them channel
    /// by channel gives those blocks the scores of the original keys.
    fn key_channels(&self, _layer: usize) -> Option<&[f32]> {
        None
    }

    /// The key channels one layer's KV head keeps in `block`, if its keys were pruned (ThinK, `crate::think`):
    /// [`KvStore::head`] then gives keys of those channels only, read with queries gathered to them.
    fn kept_channels(&self, _layer: usize, _kv_head: usize, _block: usize) -> Option<&[u16]> {
        None
    }
}

/// The paged cache of one session: a table of reference-counted blocks from the model's pool.
#[derive(Clone)]
pub struct PagedKv {
    pool: KvPool,
    blocks: Vec<Arc<KvBlock>>,
    /// int8 caches: per layer, the key channel scales taken from the first block (empty until it is full).
    key_channels: Vec<Vec<f32>>,
    /// Chain hash of each full block, for the prefix cache.
    hashes: Vec<u64>,
    len: usize,
    capacity: usize,
    /// Blocks before this one have had their sliding-window layers' rows given back, or keep them for good (the
    /// first, and blocks the budget left no room to replace).
    released: usize,
}

/// Positions before the sliding window of the next query whose local rows a cache keeps anyway, so a rewind by
/// up to this many tokens still finds them (`Session::rewind` by one is how a chat retries its last answer).
const WINDOW_REWIND_MARGIN: usize = 64;

impl PagedKv {
    pub fn new(pool: KvPool, capacity: usize) -> Self {
        let layers = pool.layout().layers;
        Self {
            pool,
            blocks: Vec::new(),
            key_channels: vec![Vec::new(); layers],
            hashes: Vec::new(),
            len: 0,
            capacity,
            released: 0,
        }
    }

    /// Most positions this cache may hold (the session's context size).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The storage type of the pool's blocks.
    pub fn pool_dtype(&self) -> KvDtype {
        self.pool.layout().dtype
    }

    fn bs(&self) -> usize {
        self.pool.layout().block_size
    }

    /// Makes positions `len()..total` writable: allocates the missing blocks and gives this cache its own copy of
    /// any block it will write that another holder shares (copy-on-write). Fails with `KV_BUDGET_EXCEEDED`.
    pub fn reserve(&mut self, total: usize) -> Result<()> {
        let bs = self.bs();
        let needed = total.div_ceil(bs);
        let shared: Vec<usize> = (self.len / bs..self.blocks.len().min(needed))
            .filter(|&i| Arc::strong_count(&self.blocks[i]) > 1)
            .collect();
        let indices: Vec<usize> = shared
            .iter()
            .copied()
            .chain(self.blocks.len()..needed)
            .collect();
        let mut fresh = self.pool.allocate(&indices)?.into_iter();
        for &i in &shared {
            if let Some(mut copy) = fresh.next() {
                copy.copy_from(&self.blocks[i]);
                self.blocks[i] = Arc::new(copy);
            }
        }
        self.blocks.extend(fresh.map(Arc::new));
        Ok(())
    }

    /// Gives this cache its own copy of every shared block holding one of `positions` (below `len()`), so they may
    /// be written (token pruning computes deeper layers of earlier positions). Fails with `KV_BUDGET_EXCEEDED`.
    pub fn make_writable(&mut self, positions: &[usize]) -> Result<()> {
        let bs = self.bs();
        let mut shared: Vec<usize> = positions
            .iter()
            .map(|p| p / bs)
            .filter(|&i| i < self.blocks.len() && Arc::strong_count(&self.blocks[i]) > 1)
            .collect();
        shared.dedup();
        let fresh = self.pool.allocate(&shared)?;
        for (i, mut copy) in shared.into_iter().zip(fresh) {
            copy.copy_from(&self.blocks[i]);
            self.blocks[i] = Arc::new(copy);
        }
        Ok(())
    }

    /// Forgets every position from `len` on, and the blocks that held only those. If the sliding window of a
    /// query at `len` reaches rows this cache gave back, it forgets everything: those positions must be computed
    /// again from the start (see [`PagedKv::release_out_of_window`]). A block whose keys were pruned (ThinK) is
    /// never written again: a cut inside one forgets it whole.
    pub fn truncate(&mut self, len: usize) {
        let bs = self.bs();
        let len = if len < self.len && !self.window_intact(len) {
            0
        } else if len < self.len && !len.is_multiple_of(bs) && self.block_pruned(len / bs) {
            len / bs * bs
        } else {
            len
        };
        self.len = self.len.min(len);
        self.blocks.truncate(self.len.div_ceil(bs));
        self.hashes.truncate(self.len / bs);
        if self.len < bs {
            self.key_channels.iter_mut().for_each(Vec::clear);
        }
        self.released = self.released.min(self.blocks.len());
    }

    /// Whether every block a sliding-window query at position `len` sees still holds its local rows.
    fn window_intact(&self, len: usize) -> bool {
        let Some(window) = self.pool.layout().window else {
            return true;
        };
        let bs = self.bs();
        let first = (len + 1).saturating_sub(window) / bs;
        self.blocks[first.min(self.blocks.len())..len.div_ceil(bs).min(self.blocks.len())]
            .iter()
            .all(|b| !b.local_dropped())
    }

    /// Gives back the sliding-window layers' rows of the blocks whose positions no later query of those layers
    /// sees (nor one after a rewind of up to [`WINDOW_REWIND_MARGIN`] tokens); the first block keeps them (an int8
    /// cache's key channel scales come from it). A block only this cache holds drops them in place; a shared one
    /// (prefix cache, fork) is replaced in this cache by a copy without them, and the prefix cache takes that copy
    /// too if nobody else holds the original. Call it after positions are committed, never while token pruning
    /// may still write earlier positions.
    pub fn release_out_of_window(&mut self) {
        let Some(window) = self.pool.layout().window else {
            return;
        };
        let bs = self.bs();
        let passed = (self.len + 1).saturating_sub(window + WINDOW_REWIND_MARGIN) / bs;
        self.released = self.released.max(1);
        while self.released < passed.min(self.blocks.len()) {
            let i = self.released;
            if !self.blocks[i].local_dropped() {
                match Arc::get_mut(&mut self.blocks[i]) {
                    Some(block) => block.drop_local(),
                    None => {
                        let Some(copy) = self.pool.copy_without_local(&self.blocks[i]) else {
                            return;
                        };
                        let copy = Arc::new(copy);
                        if let Some(&hash) = self.hashes.get(i) {
                            self.pool.replace_cached(hash, &self.blocks[i], &copy);
                        }
                        self.blocks[i] = copy;
                    }
                }
            }
            self.released += 1;
        }
    }

    /// Offers the blocks filled since the last call to the prefix cache; `tokens` are the cached positions' tokens.
    pub fn offer_full_blocks(&mut self, tokens: &[u32]) {
        let bs = self.bs();
        while self.hashes.len() < self.len / bs {
            let i = self.hashes.len();
            let parent = self.hashes.last().copied().unwrap_or(ROOT_HASH);
            let block_tokens = &tokens[i * bs..(i + 1) * bs];
            let hash = chain_hash(parent, block_tokens);
            self.pool.offer(hash, parent, block_tokens, &self.blocks[i]);
            self.hashes.push(hash);
        }
    }

    /// Adopts cached blocks that continue this cache with the leading tokens of `upcoming`, always leaving at least
    /// one token of it to compute. Returns how many tokens of `upcoming` are now cached.
    pub fn adopt_prefix(&mut self, upcoming: &[u32]) -> usize {
        let bs = self.bs();
        if !self.len.is_multiple_of(bs) || self.hashes.len() != self.len / bs {
            return 0;
        }
        let mut adopted = 0;
        while adopted + bs < upcoming.len() && self.len + bs <= self.capacity {
            let parent = self.hashes.last().copied().unwrap_or(ROOT_HASH);
            let Some((hash, block)) = self.pool.lookup(parent, &upcoming[adopted..adopted + bs])
            else {
                break;
            };
            self.blocks.truncate(self.len / bs);
            self.blocks.push(block);
            self.hashes.push(hash);
            self.len += bs;
            adopted += bs;
        }
        // Cached blocks may lack sliding-window rows (given back by the session that computed them): the next
        // query's window must not reach one.
        while adopted > 0 && !self.window_intact(self.len) {
            self.blocks.pop();
            self.hashes.pop();
            self.len -= bs;
            adopted -= bs;
        }
        self.released = self.released.min(self.blocks.len());
        adopted
    }

    /// Whether block `index`'s keys were pruned (ThinK).
    pub fn block_pruned(&self, index: usize) -> bool {
        self.blocks.get(index).is_some_and(|b| b.pruned())
    }

    /// Whether some block's keys were pruned (ThinK).
    pub fn has_pruned_keys(&self) -> bool {
        self.blocks.iter().any(|b| b.pruned())
    }

    /// Prunes the keys of the full blocks `blocks` to the `kept` channels (ThinK): in place for a block only this
    /// cache holds, else by a pruned copy (the other holders keep the original). Fails with `KV_BUDGET_EXCEEDED` if
    /// a copy does not fit; the blocks before it stay pruned.
    pub(crate) fn prune_keys(&mut self, blocks: &[usize], kept: &Arc<KeptChannels>) -> Result<()> {
        for &i in blocks {
            match Arc::get_mut(&mut self.blocks[i]) {
                Some(block) => block.prune_keys(kept),
                None => {
                    let copy = self.pool.pruned_copy(&self.blocks[i], kept)?;
                    self.blocks[i] = Arc::new(copy);
                }
            }
        }
        Ok(())
    }

    /// Bytes of the blocks this cache holds (shared blocks included).
    pub fn held_bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.bytes()).sum()
    }

    /// Per held block: whether it gave back its sliding-window layers' rows.
    pub(crate) fn local_dropped(&self) -> Vec<bool> {
        self.blocks.iter().map(|b| b.local_dropped()).collect()
    }

    /// Per layer, the int8 key channel scales (empty until the first block is full; see `KvStore::key_channels`).
    pub(crate) fn key_channel_scales(&self) -> &[Vec<f32>] {
        &self.key_channels
    }

    /// Sets what [`PagedKv::key_channel_scales`] returns (a restored cache whose first block a bounded cache's
    /// compaction changed after the scales were taken from it).
    pub(crate) fn set_key_channel_scales(&mut self, scales: Vec<Vec<f32>>) {
        self.key_channels = scales;
    }

    /// Per held block: the key channels it keeps, if ThinK pruned its keys.
    pub(crate) fn kept_channels_per_block(&self) -> Vec<Option<Arc<KeptChannels>>> {
        self.blocks.iter().map(|b| b.kept().cloned()).collect()
    }

    /// Appends the stored bytes of every cached position, block by block (see `KvBlock::save`).
    pub(crate) fn save(&self, out: &mut Vec<u8>) {
        let bs = self.bs();
        for (i, block) in self.blocks.iter().enumerate() {
            let count = bs.min(self.len.saturating_sub(i * bs));
            if count > 0 {
                block.save(count, out);
            }
        }
    }

    /// Bytes [`PagedKv::save`] writes for `len` positions whose blocks gave back their sliding-window rows where
    /// `dropped` says and keep the key channels `kept` says (ThinK).
    pub(crate) fn saved_bytes(
        &self,
        len: usize,
        dropped: &[bool],
        kept: &[Option<Arc<KeptChannels>>],
    ) -> usize {
        let (layout, bs) = (self.pool.layout(), self.bs());
        (0..len.div_ceil(bs))
            .map(|i| {
                let with_local = !dropped.get(i).copied().unwrap_or(false);
                KvBlock::saved_bytes(
                    layout,
                    layout.block_dtype(i),
                    bs.min(len - i * bs),
                    with_local,
                    kept.get(i).and_then(Option::as_deref),
                )
            })
            .sum()
    }

    /// Fills an empty cache with `len` positions saved by [`PagedKv::save`] (`dropped` and `kept` as in
    /// [`PagedKv::saved_bytes`]).
    pub(crate) fn restore(
        &mut self,
        len: usize,
        dropped: &[bool],
        kept: &[Option<Arc<KeptChannels>>],
        mut bytes: &[u8],
    ) -> Result<()> {
        self.truncate(0);
        self.reserve(len)?;
        let bs = self.bs();
        for (i, block) in self.blocks.iter_mut().enumerate() {
            let count = bs.min(len.saturating_sub(i * bs));
            if count == 0 {
                break;
            }
            if let Some(block) = Arc::get_mut(block) {
                if dropped.get(i).copied().unwrap_or(false) {
                    block.drop_local();
                }
                if let Some(Some(kept)) = kept.get(i) {
                    block.prune_keys(kept);
                }
                let size = KvBlock::saved_bytes(
                    self.pool.layout(),
                    block.dtype(),
                    count,
                    !block.local_dropped(),
                    block.kept().map(Arc::as_ref),
                );
                let (this, rest) = bytes.split_at(size.min(bytes.len()));
                block.restore(count, this);
                bytes = rest;
            }
        }
        self.len = len;
        Ok(())
    }
}

impl KvStore for PagedKv {
    fn context_size(&self) -> usize {
        self.capacity
    }

    fn len(&self) -> usize {
        self.len
    }

    fn block_size(&self) -> usize {
        self.bs()
    }

    fn write(&mut self, layer: usize, positions: Positions, keys: &[f32], values: &[f32]) {
        let (bs, kv_dim) = (self.bs(), {
            let l = self.pool.layout();
            l.kv_heads * l.head_dim
        });
        let int8 = self.pool.layout().dtype == KvDtype::Int8;
        for (t, (k, v)) in keys
            .chunks_exact(kv_dim)
            .zip(values.chunks_exact(kv_dim))
            .enumerate()
        {
            let pos = positions.at(t);
            if int8 && pos >= bs && self.key_channels[layer].is_empty() {
                // Positions are written in order, and token pruning never drops a first-block position of an int8
                // cache, so the first block is complete for this layer.
                self.key_channels[layer] = self.blocks[0].key_channels(layer, bs);
            }
            let channels = (int8 && pos >= bs).then_some(self.key_channels[layer].as_slice());
            let block = Arc::get_mut(&mut self.blocks[pos / bs])
                .expect("positions are reserved (and made private) before a forward pass");
            block.write(layer, pos % bs, k, v, channels);
        }
    }

    fn commit(&mut self, tokens: usize) {
        self.len += tokens;
    }

    fn head(&self, layer: usize, kv_head: usize, block: usize, count: usize) -> KvHead<'_> {
        self.blocks[block].head(layer, kv_head, count)
    }

    fn kept_channels(&self, layer: usize, kv_head: usize, block: usize) -> Option<&[u16]> {
        self.blocks[block].kept_channels(layer, kv_head)
    }

    fn key_channels(&self, layer: usize) -> Option<&[f32]> {
        let channels = &self.key_channels[layer];
        (!channels.is_empty()).then_some(channels.as_slice())
    }
}

/// The straightforward cache: per layer, one growing f32 array of `[positions, kv_dim]`. The reference the paged
/// cache is tested against.
pub struct ContiguousKv {
    kv_dim: usize,
    head_dim: usize,
    block_size: usize,
    len: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl ContiguousKv {
    pub fn new(layers: usize, kv_dim: usize, head_dim: usize, block_size: usize) -> Self {
        Self {
            kv_dim,
            head_dim,
            block_size,
            len: 0,
            keys: vec![Vec::new(); layers],
            values: vec![Vec::new(); layers],
        }
    }

    /// Keeps the first `len` positions (later writes overwrite the rows past them).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl KvStore for ContiguousKv {
    fn len(&self) -> usize {
        self.len
    }

    fn block_size(&self) -> usize {
        self.block_size
    }

    fn write(&mut self, layer: usize, positions: Positions, keys: &[f32], values: &[f32]) {
        let kv_dim = self.kv_dim;
        for (t, (k, v)) in keys
            .chunks_exact(kv_dim)
            .zip(values.chunks_exact(kv_dim))
            .enumerate()
        {
            let at = positions.at(t) * kv_dim;
            for (rows, row) in [(&mut self.keys[layer], k), (&mut self.values[layer], v)] {
                if rows.len() < at + kv_dim {
                    rows.resize(at + kv_dim, 0.0);
                }
                rows[at..at + kv_dim].copy_from_slice(row);
            }
        }
    }

    fn commit(&mut self, tokens: usize) {
        self.len += tokens;
    }

    fn head(&self, layer: usize, kv_head: usize, block: usize, count: usize) -> KvHead<'_> {
        let span =
            block * self.block_size * self.kv_dim..(block * self.block_size + count) * self.kv_dim;
        KvHead::new(
            KvRows::F32(&self.keys[layer][span.clone()]),
            KvRows::F32(&self.values[layer][span]),
            self.kv_dim,
            kv_head * self.head_dim,
            self.head_dim,
        )
    }
}
