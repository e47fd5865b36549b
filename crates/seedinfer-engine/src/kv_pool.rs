//! A model's pool of KV-cache blocks: fixed-size blocks of `block_size` positions (every layer's keys and values
//! for those positions), allocated on demand under one byte budget and shared between sessions by reference count
//! (`Arc`). Full blocks are also kept in a prefix cache keyed by a hash chained over the tokens of every block up
//! to and including them, so a session whose tokens begin the same way adopts them instead of recomputing; blocks
//! only the cache still holds are evicted least recently used first when the budget needs room.

use crate::error::{EngineError, Result};
use crate::think::KeptChannels;
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
/// `[block_size, head_dim]` rows so one head's keys of a block are contiguous. With sliding-window layers the
/// block keeps the local layers' rows apart from the others' ([`LayerRows`]), so a block whose positions every later
/// query of those layers has passed can give them back ([`KvBlock::drop_local`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockLayout {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub dtype: KvDtype,
    /// Positions a sliding-window layer's query sees, when some layers have a window.
    pub window: Option<usize>,
    /// Per layer: whether it is a sliding-window layer, and its index among the layers of its kind.
    slots: Vec<(bool, usize)>,
    local_layers: usize,
}

impl BlockLayout {
    /// `local` marks the sliding-window layers (attending to their last `window` positions); empty for none.
    pub fn new(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        block_size: usize,
        dtype: KvDtype,
        window: Option<(usize, &[bool])>,
    ) -> Self {
        let local =
            |l: usize| window.is_some_and(|(_, local)| local.get(l).copied().unwrap_or(false));
        let mut counts = [0usize; 2];
        let slots = (0..layers)
            .map(|l| {
                let kind = local(l);
                counts[usize::from(kind)] += 1;
                (kind, counts[usize::from(kind)] - 1)
            })
            .collect();
        let local_layers = counts[1];
        Self {
            layers,
            kv_heads,
            head_dim,
            block_size,
            dtype,
            window: window.filter(|_| local_layers > 0).map(|(size, _)| size),
            slots,
            local_layers,
        }
    }

    /// Whether some layers keep their rows apart as sliding-window layers.
    pub fn has_local_layers(&self) -> bool {
        self.local_layers > 0
    }

    /// Values of the keys (or of the values) of one block's global (`false`) or local (`true`) layers.
    fn elements(&self, local: bool) -> usize {
        self.part_layers(local) * self.kv_heads * self.block_size * self.head_dim
    }

    fn part_layers(&self, local: bool) -> usize {
        if local {
            self.local_layers
        } else {
            self.layers - self.local_layers
        }
    }

    /// Row scales of the keys (or values) of one block's global or local layers stored as `dtype`.
    fn scales(&self, dtype: KvDtype, local: bool) -> usize {
        match dtype {
            KvDtype::Int8 => self.part_layers(local) * self.kv_heads * self.block_size,
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

    /// Bytes of the keys and values of one block's global or local layers stored as `dtype`.
    fn part_bytes(&self, dtype: KvDtype, local: bool) -> usize {
        2 * (self.elements(local) * dtype.element_bytes() + self.scales(dtype, local) * 4)
    }

    /// Bytes of a block stored as `dtype`, with or without its local layers' rows.
    fn bytes_of(&self, dtype: KvDtype, with_local: bool) -> usize {
        self.part_bytes(dtype, false)
            + if with_local {
                self.part_bytes(dtype, true)
            } else {
                0
            }
    }

    /// Bytes of a block in the cache's dtype (every block but an int8 cache's first).
    pub fn block_bytes(&self) -> usize {
        self.bytes_of(self.dtype, true)
    }

    /// Bytes of block `index` of a session.
    pub fn block_bytes_at(&self, index: usize) -> usize {
        self.bytes_of(self.block_dtype(index), true)
    }

    /// Bytes of a block stored as `dtype`, with or without its local layers' rows, whose keys keep the `kept`
    /// channels of every layer without a sliding window (ThinK; `None`: whole keys).
    fn stored_bytes(&self, dtype: KvDtype, with_local: bool, kept: Option<&KeptChannels>) -> usize {
        let rows = self.elements(false) / self.head_dim;
        let dropped = kept.map_or(0, |kept| self.head_dim - kept.width);
        self.bytes_of(dtype, with_local) - rows * dropped * dtype.element_bytes()
    }

    /// Bytes a token's keys and values take in this dtype.
    pub fn bytes_per_token(&self) -> usize {
        self.block_bytes() / self.block_size
    }

    /// Whether `layer` is a sliding-window layer, and the index of the first row of (`layer`, `kv_head`) among the
    /// rows of its kind in a block.
    fn head_rows(&self, layer: usize, kv_head: usize) -> (bool, usize) {
        let (local, index) = self.slots[layer];
        (local, (index * self.kv_heads + kv_head) * self.block_size)
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
    fn new(layout: &BlockLayout, dtype: KvDtype, local: bool) -> Self {
        let n = layout.elements(local);
        match dtype {
            KvDtype::F32 => Rows::F32(vec![0.0; n]),
            KvDtype::F16 => Rows::F16(vec![f16::ZERO; n]),
            KvDtype::Int8 => Rows::Int8 {
                rows: vec![0; n],
                scales: vec![0.0; layout.scales(dtype, local)],
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

    /// The rows of `groups` (each `(first row, kept channels)`, `count` rows of `head_dim` values) with only the
    /// kept channels, one group after the other (int8 rows keep their scales: the same stored values).
    fn gather(&self, groups: &[(usize, &[u16])], count: usize, head_dim: usize) -> Rows {
        fn pick<T: Copy>(v: &[T], groups: &[(usize, &[u16])], count: usize, hd: usize) -> Vec<T> {
            let mut out = Vec::with_capacity(groups.len() * count * groups[0].1.len());
            for &(first, kept) in groups {
                for row in v[first * hd..(first + count) * hd].chunks_exact(hd) {
                    out.extend(kept.iter().map(|&c| row[usize::from(c)]));
                }
            }
            out
        }
        match self {
            Rows::F32(v) => Rows::F32(pick(v, groups, count, head_dim)),
            Rows::F16(v) => Rows::F16(pick(v, groups, count, head_dim)),
            Rows::Int8 { rows, scales } => Rows::Int8 {
                rows: pick(rows, groups, count, head_dim),
                scales: scales.clone(),
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

/// The keys and values of one kind of layer (global or sliding-window) of a block.
#[derive(Clone)]
struct LayerRows {
    keys: Rows,
    values: Rows,
}

impl LayerRows {
    fn new(layout: &BlockLayout, dtype: KvDtype, local: bool) -> Self {
        Self {
            keys: Rows::new(layout, dtype, local),
            values: Rows::new(layout, dtype, local),
        }
    }
}

/// One block of the pool. Its bytes count against the budget until it is dropped.
pub struct KvBlock {
    /// Rows of the layers without a sliding window (every layer of most models).
    global: LayerRows,
    /// Rows of the sliding-window layers; `None` once dropped ([`KvBlock::drop_local`]) or if there are none.
    local: Option<LayerRows>,
    /// ThinK: the key channels `global.keys` keeps, if its keys were pruned ([`KvBlock::prune_keys`]).
    kept: Option<Arc<KeptChannels>>,
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
    /// The rows holding `layer` (`None`: a sliding-window layer's, given back), and the first row of (`layer`,
    /// `kv_head`) in them.
    fn rows_mut(&mut self, layer: usize, kv_head: usize) -> (Option<&mut LayerRows>, usize) {
        let (local, first) = self.pool.layout.head_rows(layer, kv_head);
        let rows = if local {
            self.local.as_mut()
        } else {
            Some(&mut self.global)
        };
        (rows, first)
    }

    /// The rows holding `layer`, and the first row of (`layer`, `kv_head`) in them.
    fn rows(&self, layer: usize, kv_head: usize) -> (&LayerRows, usize) {
        let (local, first) = self.pool.layout.head_rows(layer, kv_head);
        let rows = if local {
            self.local
                .as_ref()
                .expect("attention never reads a sliding-window layer's rows its window has passed")
        } else {
            &self.global
        };
        (rows, first)
    }

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
        let (hd, kv_heads) = (self.pool.layout.head_dim, self.pool.layout.kv_heads);
        assert!(
            self.kept.is_none(),
            "a pruned block is never written (truncation stops before it)"
        );
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
        for h in 0..kv_heads {
            let (rows, first) = self.rows_mut(layer, h);
            let rows = rows.expect("positions are written before their window passes them");
            let row = first + slot;
            let key = &keys[h * hd..(h + 1) * hd];
            match channels {
                Some(channels) => {
                    for ((o, k), c) in scaled.iter_mut().zip(key).zip(&channels[h * hd..]) {
                        *o = k / c;
                    }
                    rows.keys.write(row, scaled);
                }
                None => rows.keys.write(row, key),
            }
            rows.values.write(row, &values[h * hd..(h + 1) * hd]);
        }
    }

    /// How this block is stored (see [`BlockLayout::block_dtype`]).
    pub fn dtype(&self) -> KvDtype {
        match self.global.keys {
            Rows::F32(_) => KvDtype::F32,
            Rows::F16(_) => KvDtype::F16,
            Rows::Int8 { .. } => KvDtype::Int8,
        }
    }

    /// Whether the sliding-window layers' rows were given back.
    pub fn local_dropped(&self) -> bool {
        self.pool.layout.has_local_layers() && self.local.is_none()
    }

    /// Gives back the sliding-window layers' rows (and their bytes to the budget): no later query of those layers
    /// sees this block's positions.
    pub(crate) fn drop_local(&mut self) {
        if self.local.take().is_some() {
            let bytes = self.pool.layout.part_bytes(self.dtype(), true);
            self.pool.used_bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// Bytes this block counts against the budget.
    pub fn bytes(&self) -> usize {
        self.pool
            .layout
            .stored_bytes(self.dtype(), self.local.is_some(), self.kept.as_deref())
    }

    /// Whether this block's keys were pruned (ThinK).
    pub fn pruned(&self) -> bool {
        self.kept.is_some()
    }

    /// The key channels this block keeps, if its keys were pruned (ThinK).
    pub(crate) fn kept(&self) -> Option<&Arc<KeptChannels>> {
        self.kept.as_ref()
    }

    /// The key channels one layer's KV head keeps in this block, if its keys were pruned.
    /// (Sliding-window layers keep whole keys: `None` for them.)
    pub fn kept_channels(&self, layer: usize, kv_head: usize) -> Option<&[u16]> {
        let local = self.pool.layout.slots[layer].0;
        self.kept
            .as_ref()
            .filter(|_| !local)
            .map(|kept| kept.of(layer, kv_head))
    }

    /// Channels of `layer`'s stored key rows in this block.
    fn layer_key_width(&self, layer: usize) -> usize {
        match self.kept_channels(layer, 0) {
            Some(kept) => kept.len(),
            None => self.pool.layout.head_dim,
        }
    }

    /// This block's keys with only the `kept` channels (the rows of every layer without a sliding window: the
    /// sliding-window layers' keep whole keys, their queries seeing a few blocks only).
    fn pruned_keys(&self, kept: &KeptChannels) -> Rows {
        let layout = &self.pool.layout;
        let groups: Vec<(usize, &[u16])> = (0..layout.layers)
            .filter(|&l| !layout.slots[l].0)
            .flat_map(|l| (0..layout.kv_heads).map(move |h| (l, h)))
            .map(|(l, h)| (layout.head_rows(l, h).1, kept.of(l, h)))
            .collect();
        self.global
            .keys
            .gather(&groups, layout.block_size, layout.head_dim)
    }

    /// Keeps only the `kept` channels of this block's keys (ThinK), giving the bytes of the others back.
    pub(crate) fn prune_keys(&mut self, kept: &Arc<KeptChannels>) {
        if self.kept.is_some() {
            return;
        }
        let before = self.bytes();
        self.global.keys = self.pruned_keys(kept);
        self.kept = Some(Arc::clone(kept));
        self.pool
            .used_bytes
            .fetch_sub(before - self.bytes(), Ordering::AcqRel);
    }

    /// Key channel scales of one layer from this block's first `count` keys (see `KvStore::key_channels`):
    /// per KV head and channel, the square root of the largest magnitude over the block's positions after the
    /// first (the first is the attention sink, whose key is unlike the others), floored at a thousandth of the
    /// head's largest. Keys divided by them have channels of more even size, so one int8 scale per token and head
    /// no longer spends its range on a few large channels; queries multiplied by them give the same scores (the
    /// SmoothQuant balance, with exponent 1/2).
    pub(crate) fn key_channels(&self, layer: usize, count: usize) -> Vec<f32> {
        let layout = &self.pool.layout;
        let hd = layout.head_dim;
        let mut out = vec![0.0f32; layout.kv_heads * hd];
        for (h, head) in out.chunks_mut(hd).enumerate() {
            let (rows, first) = self.rows(layer, h);
            for p in 1.min(count - 1)..count {
                for (c, m) in head.iter_mut().enumerate() {
                    *m = m.max(rows.keys.get(first + p, c, hd).abs());
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
        let before = self.bytes();
        self.global.clone_from(&other.global);
        self.kept.clone_from(&other.kept);
        self.pool
            .used_bytes
            .fetch_sub(before.saturating_sub(self.bytes()), Ordering::AcqRel);
        match (&mut self.local, &other.local) {
            (Some(mine), Some(theirs)) => mine.clone_from(theirs),
            (Some(_), None) => self.drop_local(),
            (None, _) => {}
        }
    }

    /// Positions `0..count` of this block for one layer and KV head, as the attention kernel reads them.
    pub fn head(&self, layer: usize, kv_head: usize, count: usize) -> KvHead<'_> {
        let hd = self.pool.layout.head_dim;
        let (rows, first) = self.rows(layer, kv_head);
        let key_dim = self.layer_key_width(layer);
        let keys = rows.keys.view(first, count, key_dim);
        let kv = KvHead::new(keys, rows.values.view(first, count, hd), hd, 0, hd);
        if key_dim == hd {
            kv
        } else {
            kv.with_pruned_keys(keys, key_dim)
        }
    }

    /// The (layer, KV head) row groups a saved block holds, in file order: every layer's, but a block without
    /// its local rows skips the sliding-window layers.
    fn saved_heads(
        layout: &BlockLayout,
        with_local: bool,
    ) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..layout.layers)
            .filter(move |&l| with_local || !layout.slots[l].0)
            .flat_map(move |l| (0..layout.kv_heads).map(move |h| (l, h)))
    }

    /// Appends the stored bytes of positions `0..count` of every layer and head it holds (keys, then values).
    pub(crate) fn save(&self, count: usize, out: &mut Vec<u8>) {
        let layout = &self.pool.layout;
        for (layer, h) in Self::saved_heads(layout, self.local.is_some()) {
            let (rows, first) = self.rows(layer, h);
            rows.keys
                .bytes(first, count, self.layer_key_width(layer), out);
            rows.values.bytes(first, count, layout.head_dim, out);
        }
    }

    /// Bytes [`KvBlock::save`] writes for `count` positions of a block stored as `dtype`, with or without its
    /// sliding-window layers' rows, its keys pruned to `kept` (ThinK) or whole: every stored byte of those positions.
    pub(crate) fn saved_bytes(
        layout: &BlockLayout,
        dtype: KvDtype,
        count: usize,
        with_local: bool,
        kept: Option<&KeptChannels>,
    ) -> usize {
        layout.stored_bytes(dtype, with_local, kept) / layout.block_size * count
    }

    /// Inverse of [`KvBlock::save`] (call [`KvBlock::drop_local`] first for a block saved without local rows, and
    /// [`KvBlock::prune_keys`] for one saved with pruned keys).
    pub(crate) fn restore(&mut self, count: usize, bytes: &[u8]) {
        let pool = Arc::clone(&self.pool);
        let layout = &pool.layout;
        let with_local = self.local.is_some();
        // One row group's bytes: its values (and int8 scales).
        let scale_bytes = if self.dtype() == KvDtype::Int8 { 4 } else { 0 };
        let element = self.dtype().element_bytes();
        let part = |width: usize| count * (width * element + scale_bytes);
        let value_part = part(layout.head_dim);
        let mut rest = bytes;
        for (layer, h) in Self::saved_heads(layout, with_local) {
            let key_width = self.layer_key_width(layer);
            let key_part = part(key_width);
            let (Some(rows), first) = self.rows_mut(layer, h) else {
                continue;
            };
            if rest.len() < key_part + value_part {
                return;
            }
            let (k, after) = rest.split_at(key_part);
            let (v, after) = after.split_at(value_part);
            rows.keys.set_bytes(first, count, key_width, k);
            rows.values.set_bytes(first, count, layout.head_dim, v);
            rest = after;
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
        let layout = &self.shared.layout;
        let needed: usize = indices.iter().map(|&i| layout.block_bytes_at(i)).sum();
        self.take_bytes(needed, indices.len())?;
        let with_local = layout.has_local_layers();
        Ok(indices
            .iter()
            .map(|&i| {
                let dtype = layout.block_dtype(i);
                KvBlock {
                    global: LayerRows::new(layout, dtype, false),
                    local: with_local.then(|| LayerRows::new(layout, dtype, true)),
                    kept: None,
                    pool: Arc::clone(&self.shared),
                }
            })
            .collect())
    }

    /// A copy of `block` without its sliding-window layers' rows, for a session to hold instead of a block it
    /// shares; `None` if the budget has no room for it even after evicting.
    pub(crate) fn copy_without_local(&self, block: &KvBlock) -> Option<KvBlock> {
        let needed = self
            .shared
            .layout
            .stored_bytes(block.dtype(), false, block.kept.as_deref());
        self.take_bytes(needed, 1).ok()?;
        Some(KvBlock {
            global: block.global.clone(),
            local: None,
            kept: block.kept.clone(),
            pool: Arc::clone(&self.shared),
        })
    }

    /// A copy of `block` with only the `kept` key channels (ThinK), for a session to hold instead of a block it
    /// shares. Fails with `KV_BUDGET_EXCEEDED` if the budget has no room for it even after evicting.
    pub(crate) fn pruned_copy(&self, block: &KvBlock, kept: &Arc<KeptChannels>) -> Result<KvBlock> {
        let copy = |keys: Rows| KvBlock {
            global: LayerRows {
                keys,
                values: block.global.values.clone(),
            },
            local: block.local.clone(),
            kept: Some(Arc::clone(kept)),
            pool: Arc::clone(&self.shared),
        };
        let needed =
            self.shared
                .layout
                .stored_bytes(block.dtype(), block.local.is_some(), Some(kept));
        // The budget takes the bytes before the block exists (a dropped block gives its bytes back).
        self.take_bytes(needed, 1)?;
        Ok(copy(block.pruned_keys(kept)))
    }

    /// Counts `needed` bytes of `count` new blocks against the budget, evicting cached blocks no session uses
    /// (least recently used first) when it needs room. Fails with `KV_BUDGET_EXCEEDED` if even then they do not
    /// fit; nothing is counted or evicted then.
    fn take_bytes(&self, needed: usize, count: usize) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let shared = &self.shared;
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
                return Ok(());
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
    }

    /// Makes the prefix cache hold `lighter` (the same positions without the sliding-window layers' rows) instead
    /// of `block` under `hash`, if it holds `block` there and only it and the caller do: no other session then
    /// needs those rows, and `block` is freed when the caller lets it go.
    pub(crate) fn replace_cached(&self, hash: u64, block: &Arc<KvBlock>, lighter: &Arc<KvBlock>) {
        let mut cache = self.lock();
        if let Some(entry) = cache.entries.get_mut(&hash) {
            // Under the lock no new reference to a cached block is handed out, so the count cannot grow here.
            if Arc::ptr_eq(&entry.block, block) && Arc::strong_count(block) == 2 {
                entry.block = Arc::clone(lighter);
            }
        }
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
        let layout = BlockLayout::new(2, 1, 8, 8, KvDtype::F32, None);
        let bytes = blocks * layout.block_bytes();
        KvPool::new(layout, bytes, true)
    }

    /// Every way a block changes size (pruned in place, a pruned copy, a copy without local rows of a pruned block,
    /// local rows given back, a copy-on-write of a pruned block) counts its bytes once: all dropped, the pool is empty.
    #[test]
    fn pruned_and_local_less_blocks_give_back_exactly_what_they_took() {
        let local = [true, false, true];
        let layout = BlockLayout::new(3, 2, 16, 8, KvDtype::F16, Some((8, &local[..])));
        let pool = KvPool::new(layout, 1 << 20, false);
        let kept = Arc::new(
            KeptChannels::from_index(8, 3, 2, 16, (0..6).flat_map(|_| 0..8u16).collect())
                .expect("valid channels"),
        );
        let mut blocks = pool.allocate(&[0, 1, 2]).expect("fits");
        blocks[0].prune_keys(&kept);
        let pruned_copy = pool.pruned_copy(&blocks[1], &kept).expect("fits");
        let without_local = pool.copy_without_local(&blocks[0]).expect("fits");
        let local_bytes = pool.layout().part_bytes(KvDtype::F16, true);
        assert_eq!(without_local.bytes(), blocks[0].bytes() - local_bytes);
        blocks[2].drop_local();
        let mut written = pool.allocate(&[3]).expect("fits").remove(0);
        written.copy_from(&pruned_copy);
        assert_eq!(written.bytes(), pruned_copy.bytes());
        let held: usize = blocks.iter().map(KvBlock::bytes).sum::<usize>()
            + pruned_copy.bytes()
            + without_local.bytes()
            + written.bytes();
        assert_eq!(pool.stats().used_bytes, held);
        drop((blocks, pruned_copy, without_local, written));
        assert_eq!(pool.stats().used_bytes, 0);
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
