//! The Llama forward pass, top to bottom: embed; per layer RMSNorm, Q/K/V, RoPE, causal attention over the
//! cache, residual, RMSNorm, SwiGLU MLP, residual; final RMSNorm; logits for the last position only.

use crate::config::{LlamaConfig, RopeStyle};
use crate::kv_cache::KvCache;
use crate::weights::{LlamaWeights, Matrix, MatrixData};
use rayon::prelude::*;
use seedinfer_kernels::attention::{
    attend, attend_range, merge, merge_into, KvHead, Partial, MAX_GROUP,
};
use seedinfer_kernels::dense_f32::matmul;
use seedinfer_kernels::quantized::{quantize_activations, Q8Block};

fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean_square = x.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / x.len() as f64;
    let scale = (1.0 / (mean_square + eps as f64).sqrt()) as f32;
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// `outs[i] = input · ws[i]ᵀ` for `tokens` rows of input. The input is quantised to int8 once and reused by every
/// block-quantised matrix (Q, K and V share one quantisation; so do gate and up).
fn project<const N: usize>(
    ws: [&Matrix; N],
    input: &[f32],
    tokens: usize,
    outs: [&mut Vec<f32>; N],
    s: &mut ProjectScratch,
) {
    if ws
        .iter()
        .any(|w| matches!(w.data, MatrixData::Quantized(_)))
    {
        quantize_activations(input, &mut s.q8);
    }
    for (w, out) in ws.into_iter().zip(outs) {
        out.resize(tokens * w.rows, 0.0);
        match &w.data {
            MatrixData::Quantized(q) => q.matmul(&s.q8, tokens, out),
            MatrixData::Half(h) => h.matmul(input, tokens, out),
            MatrixData::F32(data) => matmul(data, w.rows, w.cols, input, tokens, out),
        }
    }
}

#[derive(Default)]
struct ProjectScratch {
    q8: Vec<Q8Block>,
}

/// Rotary-embedding tables reused across calls, so a decode step allocates nothing.
#[derive(Default)]
struct RopeScratch {
    inv_freq: Vec<f64>,
    rotations: Vec<(f32, f32)>,
}

/// Rotates each head of `x` (`[tokens, heads * head_dim]`) by its absolute position.
fn apply_rope(
    x: &mut [f32],
    cfg: &LlamaConfig,
    heads: usize,
    first_pos: usize,
    r: &mut RopeScratch,
) {
    let (head_dim, theta) = (cfg.head_dim, cfg.rope_theta as f64);
    let half = head_dim / 2;
    if r.inv_freq.len() != half {
        r.inv_freq = (0..half)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64))
            .collect();
    }
    for (t, row) in x.chunks_mut(heads * head_dim).enumerate() {
        let pos = (first_pos + t) as f64;
        r.rotations.clear();
        r.rotations.extend(r.inv_freq.iter().map(|f| {
            let angle = pos * f;
            (angle.cos() as f32, angle.sin() as f32)
        }));
        for head in row.chunks_mut(head_dim) {
            for (i, (cos, sin)) in r.rotations.iter().enumerate() {
                let (a, b) = match cfg.rope_style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Half => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }
}

thread_local! {
    /// Attention scores of one group of query heads; each worker thread keeps its own buffer.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Causal attention of `tokens` new queries (at positions `first_pos..`) over all cached positions. A task is one
/// token's group of query heads sharing a KV head, which reads each key and value row once for the group; when
/// that leaves too few tasks for the threads (decoding one token), a task is one query head instead, and past
/// `SPLIT_MIN_POSITIONS` cached positions a decoded token's attention is split by position ranges instead.
#[allow(clippy::too_many_arguments)]
fn attention(
    cfg: &LlamaConfig,
    q: &[f32],
    cache: &KvCache,
    layer: usize,
    first_pos: usize,
    tokens: usize,
    out: &mut [f32],
    split: &mut SplitScratch,
) {
    let (hd, q_dim, kv_dim) = (cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
    let group = cfg.heads / cfg.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let total = first_pos + tokens;
    let (keys, values) = (cache.keys(layer, total), cache.values(layer, total));
    if tokens == 1 && total >= SPLIT_MIN_POSITIONS {
        return decode_attention_split(cfg, q, keys, values, total, out, split);
    }
    if tokens >= 2 * tile_tokens(group) {
        return prefill_attention_tiled(cfg, q, keys, values, first_pos, tokens, out);
    }
    let heads_per_task = if tokens * cfg.kv_heads >= 4 * rayon::current_num_threads() {
        group
    } else {
        1
    };
    out.par_chunks_mut(hd * heads_per_task)
        .enumerate()
        .for_each(|(index, task_out)| {
            let tasks_per_token = cfg.heads / heads_per_task;
            let (t, first_head) = (
                index / tasks_per_token,
                (index % tasks_per_token) * heads_per_task,
            );
            let kv = KvHead {
                keys,
                values,
                stride: kv_dim,
                offset: first_head / group * hd,
                head_dim: hd,
            };
            let visible = first_pos + t + 1;
            SCORES.with_borrow_mut(|scores| {
                for (part, part_out) in task_out.chunks_mut(MAX_GROUP * hd).enumerate() {
                    let heads = part_out.len() / hd;
                    let head0 = first_head + part * MAX_GROUP;
                    let queries: [&[f32]; MAX_GROUP] = std::array::from_fn(|i| {
                        let h = head0 + i.min(heads - 1);
                        &q[t * q_dim + h * hd..][..hd]
                    });
                    let mut chunks = part_out.chunks_mut(hd);
                    let mut outs: [&mut [f32]; MAX_GROUP] =
                        std::array::from_fn(|_| chunks.next().unwrap_or_default());
                    attend(
                        &kv,
                        visible,
                        scale,
                        &queries[..heads],
                        &mut outs[..heads],
                        scores,
                    );
                }
            });
        });
}

/// [`attend_range`] for `partials.len()` (at most `MAX_GROUP`) queries, `query(i)` each, whose unnormalised
/// outputs go to the consecutive head-sized slices of `out`.
fn attend_queries<'q>(
    kv: &KvHead,
    positions: std::ops::Range<usize>,
    scale: f32,
    query: impl Fn(usize) -> &'q [f32],
    out: &mut [f32],
    scores: &mut Vec<f32>,
    partials: &mut [Partial],
) {
    let n = partials.len();
    let queries: [&[f32]; MAX_GROUP] = std::array::from_fn(|i| query(i.min(n - 1)));
    let mut chunks = out.chunks_mut(kv.head_dim);
    let mut outs: [&mut [f32]; MAX_GROUP] =
        std::array::from_fn(|_| chunks.next().unwrap_or_default());
    attend_range(
        kv,
        positions,
        scale,
        &queries[..n],
        &mut outs[..n],
        scores,
        partials,
    );
}

/// Query vectors (tokens x heads of one KV head's group) that share each key/value block in a prefill tile.
const TILE_QUERIES: usize = 48;
/// Positions per key/value block of a prefill tile.
const TILE_KEYS: usize = 128;

/// Prompt tokens per prefill attention tile for a GQA group of `group` query heads.
fn tile_tokens(group: usize) -> usize {
    (TILE_QUERIES / group.max(1)).max(1)
}

/// Where tiles of the prefill attention write their rows (disjoint per task).
struct AttentionOut(*mut f32);
// SAFETY: each task writes only its own tokens' heads of its own KV head group.
unsafe impl Send for AttentionOut {}
unsafe impl Sync for AttentionOut {}

impl AttentionOut {
    /// # Safety
    /// `index` is inside the output and written by this task alone.
    unsafe fn write(&self, index: usize, value: f32) {
        *self.0.add(index) = value;
    }
}

/// Scratch of one prefill tile: the running (online-softmax) outputs and one block's outputs.
#[derive(Default)]
struct TileScratch {
    running: Vec<f32>,
    block: Vec<f32>,
    scores: Vec<f32>,
}

thread_local! {
    static TILE: std::cell::RefCell<TileScratch> = std::cell::RefCell::new(TileScratch::default());
}

/// Prefill attention tiled flash-style: a task is a tile of prompt tokens times one KV head's group of query
/// heads. The keys and values every query of the tile can see are read in blocks of `TILE_KEYS` positions, once
/// for all the tile's queries, and folded into running outputs with the online softmax (`merge_into`); the
/// triangle of positions between the tile's first and last token is attended per token.
fn prefill_attention_tiled(
    cfg: &LlamaConfig,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    first_pos: usize,
    tokens: usize,
    out: &mut [f32],
) {
    let (hd, q_dim, kv_dim, group) = (
        cfg.head_dim,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.heads / cfg.kv_heads,
    );
    let scale = 1.0 / (hd as f32).sqrt();
    let tile = tile_tokens(group);
    let tiles = tokens.div_ceil(tile);
    assert_eq!(out.len(), tokens * q_dim);
    let target = AttentionOut(out.as_mut_ptr());
    (0..tiles * cfg.kv_heads).into_par_iter().for_each(|task| {
        let (tile_index, kv_head) = (task / cfg.kv_heads, task % cfg.kv_heads);
        let t0 = tile_index * tile;
        let t1 = (t0 + tile).min(tokens);
        let nq = (t1 - t0) * group;
        let kv = KvHead {
            keys,
            values,
            stride: kv_dim,
            offset: kv_head * hd,
            head_dim: hd,
        };
        // Query i of the tile is token t0 + i / group, head kv_head * group + i % group.
        let query = |i: usize| {
            let (t, h) = (t0 + i / group, kv_head * group + i % group);
            &q[t * q_dim + h * hd..][..hd]
        };
        TILE.with_borrow_mut(|tile_scratch| {
            let TileScratch {
                running,
                block,
                scores,
            } = tile_scratch;
            running.resize(nq * hd, 0.0);
            block.resize(nq * hd, 0.0);
            let mut running_partials = [Partial {
                max: f32::NEG_INFINITY,
                sum: 0.0,
            }; TILE_QUERIES];
            running.fill(0.0);
            let mut block_partials = [Partial::default(); MAX_GROUP];
            // Positions every query of the tile sees, then each token's own triangle.
            let common = first_pos + t0 + 1;
            let mut fold = |first_query: usize, count: usize, positions: std::ops::Range<usize>| {
                for part in (first_query..first_query + count).step_by(MAX_GROUP) {
                    let n = MAX_GROUP.min(first_query + count - part);
                    let partials = &mut block_partials[..n];
                    attend_queries(
                        &kv,
                        positions.clone(),
                        scale,
                        |i| query(part + i),
                        &mut block[part * hd..(part + n) * hd],
                        scores,
                        partials,
                    );
                    for (i, partial) in partials.iter().enumerate() {
                        let slot = part + i;
                        merge_into(
                            &mut running_partials[slot],
                            &mut running[slot * hd..(slot + 1) * hd],
                            *partial,
                            &block[slot * hd..(slot + 1) * hd],
                        );
                    }
                }
            };
            for start in (0..common).step_by(TILE_KEYS) {
                fold(0, nq, start..(start + TILE_KEYS).min(common));
            }
            for t in t0 + 1..t1 {
                fold((t - t0) * group, group, common..first_pos + t + 1);
            }
            for i in 0..nq {
                let (t, h) = (t0 + i / group, kv_head * group + i % group);
                let inverse = 1.0 / running_partials[i].sum;
                for (c, v) in running[i * hd..(i + 1) * hd].iter().enumerate() {
                    // SAFETY: element (t, h, c) of `out` belongs to this task alone, and `out` outlives the tasks.
                    unsafe { target.write(t * q_dim + h * hd + c, v * inverse) };
                }
            }
        });
    });
}

/// Cached positions from which a decoded token's attention is split into position ranges: below it, one task
/// per query head is cheaper than merging.
const SPLIT_MIN_POSITIONS: usize = 256;
/// The shortest position range of a split.
const SPLIT_MIN_RANGE: usize = 64;

/// Partial results of a split decode attention: per task (KV head x range), the group's unnormalised outputs and
/// softmax statistics.
#[derive(Default)]
struct SplitScratch {
    out: Vec<f32>,
    partials: Vec<Partial>,
}

/// Attention of one decoded token over `visible` cached positions, flash-decoding style: each task takes one KV
/// head's whole group of query heads (so every key and value row is read once) over one range of positions, and
/// the ranges are merged per head. There are about two tasks per thread.
fn decode_attention_split(
    cfg: &LlamaConfig,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    visible: usize,
    out: &mut [f32],
    split: &mut SplitScratch,
) {
    let (hd, kv_dim, group) = (cfg.head_dim, cfg.kv_dim(), cfg.heads / cfg.kv_heads);
    let scale = 1.0 / (hd as f32).sqrt();
    let ranges = (2 * rayon::current_num_threads())
        .div_ceil(cfg.kv_heads)
        .min(visible / SPLIT_MIN_RANGE)
        .max(1);
    let range_len = visible.div_ceil(ranges);
    let tasks = cfg.kv_heads * ranges;
    split.out.resize(tasks * group * hd, 0.0);
    split.partials.resize(tasks * group, Partial::default());
    split
        .out
        .par_chunks_mut(group * hd)
        .zip(split.partials.par_chunks_mut(group))
        .enumerate()
        .for_each(|(task, (task_out, partials))| {
            let (kv_head, range) = (task / ranges, task % ranges);
            let positions = range * range_len..((range + 1) * range_len).min(visible);
            if positions.is_empty() {
                task_out.fill(0.0);
                partials.fill(Partial {
                    max: f32::NEG_INFINITY,
                    sum: 0.0,
                });
                return;
            }
            let kv = KvHead {
                keys,
                values,
                stride: kv_dim,
                offset: kv_head * hd,
                head_dim: hd,
            };
            SCORES.with_borrow_mut(|scores| {
                for (part, (part_out, part_partials)) in task_out
                    .chunks_mut(MAX_GROUP * hd)
                    .zip(partials.chunks_mut(MAX_GROUP))
                    .enumerate()
                {
                    let head0 = kv_head * group + part * MAX_GROUP;
                    attend_queries(
                        &kv,
                        positions.clone(),
                        scale,
                        |i| &q[(head0 + i) * hd..][..hd],
                        part_out,
                        scores,
                        part_partials,
                    );
                }
            });
        });
    for (h, head_out) in out.chunks_mut(hd).enumerate() {
        let (kv_head, g) = (h / group, h % group);
        let parts = (0..ranges).map(|range| {
            let task = kv_head * ranges + range;
            let slot = task * group + g;
            (split.partials[slot], &split.out[slot * hd..(slot + 1) * hd])
        });
        merge(parts, head_out);
    }
}

/// Reusable activation buffers, so a decode step allocates nothing once warmed up.
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    normed: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    project: ProjectScratch,
    rope: RopeScratch,
    split: SplitScratch,
}

/// Which positions get logits: generation needs only the last; evaluation (teacher forcing) needs all.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    Last,
    All,
}

/// Runs `tokens` through the model at positions `cache.len()..`, appends their keys/values to `cache`, and
/// writes logits (`[positions, vocab]`) into `logits`.
pub fn forward(
    cfg: &LlamaConfig,
    w: &LlamaWeights,
    tokens: &[u32],
    cache: &mut KvCache,
    s: &mut Scratch,
    logits: &mut Vec<f32>,
    logits_for: LogitsFor,
) {
    let n = tokens.len();
    let d = cfg.hidden_size;
    let first_pos = cache.len();
    s.x.resize(n * d, 0.0);
    for (&t, x) in tokens.iter().zip(s.x.chunks_mut(d)) {
        w.embed.row_to_f32(t as usize, x);
    }
    s.normed.resize(n * d, 0.0);
    for (l, layer) in w.layers.iter().enumerate() {
        for (x, o) in s.x.chunks(d).zip(s.normed.chunks_mut(d)) {
            rms_norm(x, &layer.attn_norm, cfg.rms_norm_eps, o);
        }
        project(
            [&layer.wq, &layer.wk, &layer.wv],
            &s.normed,
            n,
            [&mut s.q, &mut s.k, &mut s.v],
            &mut s.project,
        );
        apply_rope(&mut s.q, cfg, cfg.heads, first_pos, &mut s.rope);
        apply_rope(&mut s.k, cfg, cfg.kv_heads, first_pos, &mut s.rope);
        cache.append(l, &s.k, &s.v);
        s.attn.resize(n * cfg.q_dim(), 0.0);
        attention(cfg, &s.q, cache, l, first_pos, n, &mut s.attn, &mut s.split);
        project([&layer.wo], &s.attn, n, [&mut s.proj], &mut s.project);
        for (x, p) in s.x.iter_mut().zip(&s.proj) {
            *x += p;
        }
        for (x, o) in s.x.chunks(d).zip(s.normed.chunks_mut(d)) {
            rms_norm(x, &layer.ffn_norm, cfg.rms_norm_eps, o);
        }
        project(
            [&layer.w_gate, &layer.w_up],
            &s.normed,
            n,
            [&mut s.gate, &mut s.up],
            &mut s.project,
        );
        for (g, u) in s.gate.iter_mut().zip(&s.up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        project([&layer.w_down], &s.gate, n, [&mut s.proj], &mut s.project);
        for (x, p) in s.x.iter_mut().zip(&s.proj) {
            *x += p;
        }
    }
    cache.commit(n);
    let first_row = match logits_for {
        LogitsFor::Last => n - 1,
        LogitsFor::All => 0,
    };
    let rows = n - first_row;
    s.normed.resize(rows * d, 0.0);
    for (x, o) in s.x[first_row * d..].chunks(d).zip(s.normed.chunks_mut(d)) {
        rms_norm(x, &w.final_norm, cfg.rms_norm_eps, o);
    }
    s.normed.truncate(rows * d);
    project([w.lm_head()], &s.normed, rows, [logits], &mut s.project);
}
