//! Attention scheduling over the KV cache: how a layer's causal attention is split into parallel tasks (prompt
//! tiles of tokens x one KV head's group, one task per query head for a few tokens, flash-decoding ranges of
//! blocks for one decoded token at long contexts), each task folding its blocks with the kernels of
//! `seedinfer_kernels::attention`. Every split gives the same bits (see [`attend_task`]).

use crate::config::LlamaConfig;
use crate::kv_cache::{KvStore, Positions};
use crate::xattention::BlockMask;
use rayon::prelude::*;
use seedinfer_kernels::attention::{
    attend_range, attend_range_streaming, merge_into, prefetch_keys, widened, KvHead, Partial,
    MAX_GROUP,
};

/// Where attention tasks write their output rows (each task its own tokens' heads).
struct AttentionOut(*mut f32);
// SAFETY: tasks write disjoint elements (their own tokens x heads), and the output outlives them.
unsafe impl Send for AttentionOut {}
unsafe impl Sync for AttentionOut {}

impl AttentionOut {
    /// # Safety
    /// `index` is inside the output and written by this task alone.
    unsafe fn write(&self, index: usize, value: f32) {
        *self.0.add(index) = value;
    }
}

/// [`attend_range`] over positions `range` of one cached block for `partials.len()` (at most `MAX_GROUP`)
/// queries, `query(i)` each, whose unnormalised outputs go to the consecutive head-sized slices of `out`.
/// `streaming`: the block is read once, from memory (decode), so the kernel prefetches its rows.
#[allow(clippy::too_many_arguments)]
fn attend_queries<'q>(
    kv: &KvHead,
    range: std::ops::Range<usize>,
    scale: f32,
    query: impl Fn(usize) -> &'q [f32],
    out: &mut [f32],
    scores: &mut Vec<f32>,
    partials: &mut [Partial],
    streaming: bool,
) {
    let n = partials.len();
    let queries: [&[f32]; MAX_GROUP] = std::array::from_fn(|i| query(i.min(n - 1)));
    let mut chunks = out.chunks_mut(kv.head_dim);
    let mut outs: [&mut [f32]; MAX_GROUP] =
        std::array::from_fn(|_| chunks.next().unwrap_or_default());
    let attend = if streaming {
        attend_range_streaming
    } else {
        attend_range
    };
    attend(
        kv,
        range,
        scale,
        &queries[..n],
        &mut outs[..n],
        scores,
        partials,
    );
}

/// One KV head's key channel scales, if the cache stores keys divided by them (see `KvStore::key_channels`).
fn key_channels<C: KvStore>(cache: &C, layer: usize, kv_head: usize, hd: usize) -> Option<&[f32]> {
    cache
        .key_channels(layer)
        .map(|c| &c[kv_head * hd..(kv_head + 1) * hd])
}

/// `out` = the queries, one after the other, each multiplied channel by channel by `channels`: with keys stored
/// divided by `channels`, they give the original scores.
fn scale_queries<'q>(
    out: &mut Vec<f32>,
    queries: impl Iterator<Item = &'q [f32]>,
    channels: &[f32],
) {
    out.clear();
    for query in queries {
        out.extend(query.iter().zip(channels).map(|(q, c)| q * c));
    }
}

/// The softmax state before any position: folding a block into it gives that block's result exactly.
const EMPTY: Partial = Partial {
    max: f32::NEG_INFINITY,
    sum: 0.0,
};

/// Query vectors (tokens x heads of one KV head's group) of a prefill tile, which share each key/value block.
const TILE_QUERIES: usize = 48;

/// Prompt tokens per prefill attention tile for a GQA group of `group` query heads.
fn tile_tokens(group: usize) -> usize {
    (TILE_QUERIES / group.max(1)).max(1)
}

/// Scratch of one attention task: the running (online-softmax) outputs, one block's outputs, their statistics.
#[derive(Default)]
struct TaskScratch {
    running: Vec<f32>,
    block: Vec<f32>,
    running_partials: Vec<Partial>,
    block_partials: Vec<Partial>,
    scores: Vec<f32>,
    /// The task's queries multiplied by the cache's key channel scales (see `KvStore::key_channels`).
    scaled: Vec<f32>,
    /// One f16 block's keys and values widened to f32 (see [`WIDEN_MIN_QUERIES`]).
    wide_keys: Vec<f32>,
    wide_values: Vec<f32>,
    /// The task's queries (scaled, if the block's keys are) gathered to a pruned block's key channels (ThinK), and
    /// which channels and scaling they were gathered for.
    gathered: Vec<f32>,
    gathered_for: Option<(usize, bool)>,
}

impl TaskScratch {
    /// Gathers the task's `count` queries to the `kept` channels into `gathered`, unless they already are: with
    /// `scaled`, the ones in `scaled` (multiplied by the key channel scales, `head_dim` each), else `query(i)`.
    fn gather<'q>(
        &mut self,
        kept: &[u16],
        scaled: bool,
        count: usize,
        head_dim: usize,
        query: impl Fn(usize) -> &'q [f32],
    ) {
        let key = (kept.as_ptr() as usize, scaled);
        if self.gathered_for == Some(key) {
            return;
        }
        self.gathered.clear();
        for i in 0..count {
            let q = if scaled {
                &self.scaled[i * head_dim..(i + 1) * head_dim]
            } else {
                query(i)
            };
            self.gathered
                .extend(kept.iter().map(|&c| q[usize::from(c)]));
        }
        self.gathered_for = Some(key);
    }
}

/// Queries of a task that read one f16 block before it is widened to f32 once for all of them (exact, so the same
/// bits) instead of in every kernel call: past one call's group, each element would be converted again per call.
const WIDEN_MIN_QUERIES: usize = 2 * MAX_GROUP;

thread_local! {
    static TASK: std::cell::RefCell<TaskScratch> = std::cell::RefCell::new(TaskScratch::default());
}

/// One attention task: the queries of tokens `tokens` (at positions `first_pos + t`) and query heads `heads` of
/// KV head `kv_head`'s group. Every query's softmax is folded block by block in position order (`merge_into`,
/// starting from [`EMPTY`]), each block attended over the positions the query sees. Queries that see the same
/// positions of a block share one kernel call, which reads each key and value row once for all of them.
///
/// A query's arithmetic depends only on its position, the cached values and the block size: not on how many
/// tokens are computed together, on the task split or on the thread count. So a prompt gives bit for bit the
/// logits it gives token by token, and reused, forked, rewound or restored caches continue exactly.
///
/// With a `mask` (token pruning: positions whose keys and values this layer lacks, or that the current selection
/// leaves out), each block is attended over its runs of visible positions instead, folded in the same order. On a
/// sliding-window layer a query at position p sees positions from `p + 1 - window` on ([`first_seen`]); blocks
/// wholly before that are skipped. With `blocks` (XAttention), a query skips the cached blocks its query block
/// does not attend to; the others are attended exactly as without it.
#[allow(clippy::too_many_arguments)]
fn attend_task<C: KvStore>(
    cfg: &LlamaConfig,
    q: &[f32],
    cache: &C,
    layer: usize,
    kv_head: usize,
    positions: Positions,
    mask: Option<&[bool]>,
    blocks: Option<&BlockMask>,
    tokens: std::ops::Range<usize>,
    heads: std::ops::Range<usize>,
    target: &AttentionOut,
) {
    let (hd, q_dim, bs) = (cfg.head_dim, cfg.q_dim(), cache.block_size());
    let scale = cfg.attention_scale;
    let window = cfg.layer_window(layer);
    let per_token = heads.len();
    let nq = tokens.len() * per_token;
    // One token (decode) reads every block once, from memory; a prompt tile reuses each block from cache.
    let streaming = tokens.len() == 1;
    // Query i is token tokens.start + i / per_token, head heads.start + i % per_token.
    let query = |i: usize| {
        let (t, h) = (tokens.start + i / per_token, heads.start + i % per_token);
        &q[t * q_dim + h * hd..][..hd]
    };
    let visible = |t: usize| cache.visible(positions.at(t));
    let first = |t: usize| first_seen(window, positions.at(t));
    let channels = key_channels(cache, layer, kv_head, hd);
    TASK.with_borrow_mut(|s| {
        if let Some(channels) = channels {
            scale_queries(&mut s.scaled, (0..nq).map(query), channels);
        }
        s.gathered_for = None;
        s.running.clear();
        s.running.resize(nq * hd, 0.0);
        s.block.resize(nq * hd, 0.0);
        s.running_partials.clear();
        s.running_partials.resize(nq, EMPTY);
        s.block_partials.resize(MAX_GROUP, Partial::default());
        let last_visible = visible(tokens.end - 1);
        for b in first(tokens.start) / bs..last_visible.div_ceil(bs) {
            let block_start = b * bs;
            let scaled = b > 0 && channels.is_some();
            let kept = cache.kept_channels(layer, kv_head, b);
            if let Some(kept) = kept {
                s.gather(kept, scaled, nq, hd, query);
            }
            let width = kept.map_or(hd, <[u16]>::len);
            // Tokens see a part of the block that moves with their position (a prefix that grows, and on a
            // sliding-window layer a start that advances): runs of tokens seeing the same part share kernel calls.
            let mut t = tokens.start;
            while t < tokens.end {
                let seen = |t: usize| {
                    if blocks.is_some_and(|m| !m.shows(kv_head, visible(t) - 1, block_start)) {
                        return (0, 0);
                    }
                    let end = visible(t).min(block_start + bs).saturating_sub(block_start);
                    (first(t).saturating_sub(block_start).min(end), end)
                };
                let (lo, n) = seen(t);
                let mut run_end = t + 1;
                while run_end < tokens.end && seen(run_end) == (lo, n) {
                    run_end += 1;
                }
                if lo < n {
                    let kv = cache.head(layer, kv_head, b, n);
                    let kv = if (run_end - t) * per_token >= WIDEN_MIN_QUERIES {
                        widened(&kv, n, &mut s.wide_keys, &mut s.wide_values).unwrap_or(kv)
                    } else {
                        kv
                    };
                    let scaled = scaled.then_some(s.scaled.as_slice());
                    let gathered = kept.is_some().then_some(s.gathered.as_slice());
                    let query = |i: usize| match (gathered, scaled) {
                        (Some(gathered), _) => &gathered[i * width..(i + 1) * width],
                        (None, Some(scaled)) => &scaled[i * hd..(i + 1) * hd],
                        (None, None) => query(i),
                    };
                    let first_query = (t - tokens.start) * per_token;
                    let last_query = (run_end - tokens.start) * per_token;
                    let shown = |i: usize| mask.is_none_or(|m| m[block_start + i]);
                    let mut start = lo;
                    while start < n {
                        if !shown(start) {
                            start += 1;
                            continue;
                        }
                        let mut end = start + 1;
                        while end < n && shown(end) {
                            end += 1;
                        }
                        for part in (first_query..last_query).step_by(MAX_GROUP) {
                            let m = MAX_GROUP.min(last_query - part);
                            let partials = &mut s.block_partials[..m];
                            attend_queries(
                                &kv,
                                start..end,
                                scale,
                                |i| query(part + i),
                                &mut s.block[part * hd..(part + m) * hd],
                                &mut s.scores,
                                partials,
                                streaming,
                            );
                            for (i, partial) in partials.iter().enumerate() {
                                let slot = part + i;
                                merge_into(
                                    &mut s.running_partials[slot],
                                    &mut s.running[slot * hd..(slot + 1) * hd],
                                    *partial,
                                    &s.block[slot * hd..(slot + 1) * hd],
                                );
                            }
                        }
                        start = end;
                    }
                }
                t = run_end;
            }
        }
        for i in 0..nq {
            let (t, h) = (tokens.start + i / per_token, heads.start + i % per_token);
            let inverse = 1.0 / s.running_partials[i].sum;
            for (c, v) in s.running[i * hd..(i + 1) * hd].iter().enumerate() {
                // SAFETY: element (t, h, c) of the output belongs to this task alone.
                unsafe { target.write(t * q_dim + h * hd + c, v * inverse) };
            }
        }
    });
}

/// The first position a query at `position` sees: `position + 1 - window` on a sliding-window layer, else 0.
fn first_seen(window: Option<usize>, position: usize) -> usize {
    window.map_or(0, |w| (position + 1).saturating_sub(w))
}

/// Causal attention of `tokens` new queries (at `positions`, ascending) over the cached positions of `layer` that
/// `mask` shows (all when `None`), and of those only the blocks `blocks` selects (XAttention; all when `None`).
/// Prompts are split into tiles of tokens x one KV head's group; when that leaves too few tasks for the threads
/// (a few tokens, or one decoded token), a task is one query head. Past `SPLIT_MIN_POSITIONS` cached positions a
/// decoded token's attention is split over ranges of blocks instead ([`decode_attention_split`]). All paths give
/// the same bits (see [`attend_task`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention<C: KvStore>(
    cfg: &LlamaConfig,
    q: &[f32],
    cache: &C,
    layer: usize,
    positions: Positions,
    mask: Option<&[bool]>,
    blocks: Option<&BlockMask>,
    tokens: usize,
    out: &mut [f32],
    split: &mut SplitScratch,
) {
    let group = cfg.heads / cfg.kv_heads;
    assert_eq!(out.len(), tokens * cfg.q_dim());
    let visible = cache.visible(positions.at(0));
    let first = first_seen(cfg.layer_window(layer), positions.at(0));
    if tokens == 1
        && mask.is_none()
        && blocks.is_none()
        && visible.saturating_sub(first) >= SPLIT_MIN_POSITIONS
    {
        return decode_attention_split(cfg, q, cache, layer, first..visible, out, split);
    }
    let tile = if tokens >= 2 * tile_tokens(group) {
        tile_tokens(group)
    } else {
        1
    };
    let tiles = tokens.div_ceil(tile);
    let heads_per_task = if tiles * cfg.kv_heads >= 4 * rayon::current_num_threads() {
        group
    } else {
        1
    };
    let tasks_per_tile = cfg.heads / heads_per_task;
    let target = AttentionOut(out.as_mut_ptr());
    (0..tiles * tasks_per_tile)
        .into_par_iter()
        .for_each(|task| {
            let (tile_index, head_task) = (task / tasks_per_tile, task % tasks_per_tile);
            let first_head = head_task * heads_per_task;
            let t0 = tile_index * tile;
            attend_task(
                cfg,
                q,
                cache,
                layer,
                first_head / group,
                positions,
                mask,
                blocks,
                t0..(t0 + tile).min(tokens),
                first_head..first_head + heads_per_task,
                &target,
            );
        });
}

/// Cached positions from which a decoded token's attention is split into ranges of blocks: below it, one task
/// per query head is cheaper.
const SPLIT_MIN_POSITIONS: usize = 256;
/// The fewest positions a range of a split covers.
const SPLIT_MIN_RANGE: usize = 64;

/// Per-block results of a split decode attention: `[kv_head][block][head of group]` unnormalised outputs and
/// their softmax statistics.
#[derive(Default)]
pub(crate) struct SplitScratch {
    out: Vec<f32>,
    partials: Vec<Partial>,
}

/// Attention of one decoded token over the cached positions `seen`, flash-decoding style: each task takes one KV
/// head's whole group of query heads (so every key and value row is read once) over one range of blocks, keeping
/// every block's result; then each head folds its blocks in order, exactly as [`attend_task`] does.
fn decode_attention_split<C: KvStore>(
    cfg: &LlamaConfig,
    q: &[f32],
    cache: &C,
    layer: usize,
    seen: std::ops::Range<usize>,
    out: &mut [f32],
    split: &mut SplitScratch,
) {
    let (hd, group, bs) = (cfg.head_dim, cfg.heads / cfg.kv_heads, cache.block_size());
    let scale = cfg.attention_scale;
    let (first_block, visible) = (seen.start / bs, seen.end);
    let blocks = visible.div_ceil(bs) - first_block;
    let ranges = (2 * rayon::current_num_threads())
        .div_ceil(cfg.kv_heads)
        .min(seen.len() / SPLIT_MIN_RANGE)
        .clamp(1, blocks);
    let blocks_per_range = blocks.div_ceil(ranges);
    split.out.resize(cfg.kv_heads * blocks * group * hd, 0.0);
    split
        .partials
        .resize(cfg.kv_heads * blocks * group, Partial::default());
    split
        .out
        .par_chunks_mut(blocks * group * hd)
        .zip(split.partials.par_chunks_mut(blocks * group))
        .enumerate()
        .for_each(|(kv_head, (head_out, head_partials))| {
            head_out
                .par_chunks_mut(blocks_per_range * group * hd)
                .zip(head_partials.par_chunks_mut(blocks_per_range * group))
                .enumerate()
                .for_each(|(range, (range_out, range_partials))| {
                    let channels = key_channels(cache, layer, kv_head, hd);
                    let range_blocks = range_partials.len() / group;
                    TASK.with_borrow_mut(|s| {
                        if let Some(channels) = channels {
                            let heads = kv_head * group..(kv_head + 1) * group;
                            let group_queries = heads.map(|h| &q[h * hd..(h + 1) * hd]);
                            scale_queries(&mut s.scaled, group_queries, channels);
                        }
                        s.gathered_for = None;
                        for (i, (block_out, block_partials)) in range_out
                            .chunks_mut(group * hd)
                            .zip(range_partials.chunks_mut(group))
                            .enumerate()
                        {
                            let b = first_block + range * blocks_per_range + i;
                            let n = bs.min(visible - b * bs);
                            let lo = seen.start.saturating_sub(b * bs);
                            let kv = cache.head(layer, kv_head, b, n);
                            let scaled = b > 0 && channels.is_some();
                            let kept = cache.kept_channels(layer, kv_head, b);
                            if let Some(kept) = kept {
                                s.gather(kept, scaled, group, hd, |g| {
                                    &q[(kv_head * group + g) * hd..][..hd]
                                });
                            }
                            let width = kept.map_or(hd, <[u16]>::len);
                            if i + 1 < range_blocks {
                                // The next block lives elsewhere in the pool: start loading its first keys.
                                let next = bs.min(visible - (b + 1) * bs);
                                let next_kv = cache.head(layer, kv_head, b + 1, next);
                                prefetch_keys(&next_kv, 0..next.min(8));
                            }
                            for (part, (part_out, part_partials)) in block_out
                                .chunks_mut(MAX_GROUP * hd)
                                .zip(block_partials.chunks_mut(MAX_GROUP))
                                .enumerate()
                            {
                                let head0 = kv_head * group + part * MAX_GROUP;
                                let scaled = scaled.then_some(s.scaled.as_slice());
                                let gathered = kept.is_some().then_some(s.gathered.as_slice());
                                attend_queries(
                                    &kv,
                                    lo..n,
                                    scale,
                                    |i| {
                                        let g = head0 + i - kv_head * group;
                                        match (gathered, scaled) {
                                            (Some(gathered), _) => {
                                                &gathered[g * width..(g + 1) * width]
                                            }
                                            (None, Some(scaled)) => &scaled[g * hd..(g + 1) * hd],
                                            (None, None) => &q[(head0 + i) * hd..][..hd],
                                        }
                                    },
                                    part_out,
                                    &mut s.scores,
                                    part_partials,
                                    true,
                                );
                            }
                        }
                    });
                });
        });
    for (h, head_out) in out.chunks_mut(hd).enumerate() {
        let (kv_head, g) = (h / group, h % group);
        head_out.fill(0.0);
        let mut running = EMPTY;
        for b in 0..blocks {
            let slot = (kv_head * blocks + b) * group + g;
            merge_into(
                &mut running,
                head_out,
                split.partials[slot],
                &split.out[slot * hd..(slot + 1) * hd],
            );
        }
        let inverse = 1.0 / running.sum;
        head_out.iter_mut().for_each(|v| *v *= inverse);
    }
}
