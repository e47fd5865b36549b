//! The forward pass, top to bottom: embed (times √hidden for gemma3); per layer RMSNorm, Q/K/V (with biases for
//! qwen2, per-head RMSNorm for qwen3 and gemma3), RoPE, causal attention over the cache (over a sliding window on
//! gemma3's local layers), an RMSNorm of the output for gemma3, residual, RMSNorm, gated MLP (SwiGLU, GELU-tanh
//! for gemma3), an RMSNorm of the output for gemma3, residual; final RMSNorm; logits.
//!
//! One model, two sets of operations ([`Operations`]): seedinfer's own (`ops_seedinfer`: fused, tiled, the
//! default) and llama.cpp's bit-exact ones (`ops_llamacpp`, `Numerics::LlamaCpp`). The layer step below is the
//! only definition of the model; token pruning reuses it.

use crate::config::{GatedActivation, LlamaConfig};
use crate::kv_cache::{KvStore, Positions};
use crate::ops_llamacpp::GgmlScratch;
use crate::ops_seedinfer::{ProjectScratch, RopeScratch};
use crate::weights::{LayerWeights, LlamaWeights, Matrix};

/// The operations of a layer step, each computed in one arithmetic. Implementations decide how (fused or not,
/// which dot products, which rounding); the model decides what and in which order.
pub trait Operations {
    /// `outs[i] = rms_norm(x) · ws[i]ᵀ` for the `tokens` rows of `x` (matrices of one input width).
    fn norm_project<const N: usize>(
        ws: [&Matrix; N],
        x: &[f32],
        norm: &[f32],
        eps: f32,
        tokens: usize,
        outs: [&mut Vec<f32>; N],
        s: &mut OpsScratch,
    );

    /// `out = input · wᵀ` for `tokens` rows of `input`.
    fn project(w: &Matrix, input: &[f32], tokens: usize, out: &mut Vec<f32>, s: &mut OpsScratch);

    /// RMS-normalises each `norm.len()` elements of `x` in place, scaled by `norm`: each head of q or k (qwen3's
    /// and gemma3's q/k norms) or each row (gemma3's norms after attention and after the MLP).
    fn head_norm(x: &mut Vec<f32>, norm: &[f32], eps: f32, s: &mut OpsScratch);

    /// Rotates each of the `heads` heads of `x` (`[tokens, heads * head_dim]`) by its token's position, with the
    /// rotary frequencies of layer `layer` in a session of `context` positions.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        cfg: &LlamaConfig,
        layer: usize,
        context: usize,
        x: &mut [f32],
        heads: usize,
        positions: Positions,
        s: &mut OpsScratch,
    );

    /// Causal attention of the `tokens` queries `q` (at `positions`) over the positions of `layer` in `cache` that
    /// `mask` shows (all when `None`), into `out` (`[tokens, q_dim]`).
    #[allow(clippy::too_many_arguments)]
    fn attention<C: KvStore>(
        cfg: &LlamaConfig,
        q: &[f32],
        cache: &C,
        layer: usize,
        positions: Positions,
        mask: Option<&[bool]>,
        tokens: usize,
        out: &mut [f32],
        s: &mut OpsScratch,
    );

    /// The gated MLP's input of the down projection, `act(rms_norm(x) · gateᵀ) * (rms_norm(x) · upᵀ)`, into
    /// `gate` (`up` is scratch).
    #[allow(clippy::too_many_arguments)]
    fn gated_mlp(
        w_gate: &Matrix,
        w_up: &Matrix,
        activation: GatedActivation,
        x: &[f32],
        norm: &[f32],
        eps: f32,
        tokens: usize,
        gate: &mut Vec<f32>,
        up: &mut Vec<f32>,
        s: &mut OpsScratch,
    );
}

/// Reusable activation buffers, so a decode step allocates nothing once warmed up.
#[derive(Default)]
pub struct Scratch {
    /// Hidden states of the tokens being computed, `[tokens, hidden_size]`.
    pub(crate) x: Vec<f32>,
    /// Rotated queries of the last layer step, `[tokens, q_dim]`.
    pub(crate) q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    pub(crate) ops: OpsScratch,
}

/// What the operation sets keep between calls (each set uses its own fields).
#[derive(Default)]
pub struct OpsScratch {
    pub(crate) project: ProjectScratch,
    pub(crate) rope: RopeScratch,
    pub(crate) split: crate::attention::SplitScratch,
    /// The running prefill's XAttention, if any (`crate::xattention`).
    pub(crate) xattention: crate::xattention::XAttentionState,
    /// The queries ThinK scores key channels with, recorded while a prompt is prefilled (`crate::think`).
    pub(crate) think: crate::think::QueryTap,
    pub(crate) ggml: GgmlScratch,
}

/// Which positions get logits: generation needs only the last; evaluation (teacher forcing) needs all.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    Last,
    All,
}

/// `x += p`, element by element.
fn add_residual(x: &mut [f32], p: &[f32]) {
    for (x, p) in x.iter_mut().zip(p) {
        *x += p;
    }
}

/// Adds `bias` to every row of `x`.
fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_residual(row, bias);
    }
}

/// One sequence's rows in a layer step over several sequences: `rows` consecutive rows of the hidden states, at
/// `positions` (ascending) of its own `cache`, attending over the positions `mask` shows (all when `None`).
pub(crate) struct Segment<'a, C> {
    pub rows: usize,
    pub positions: Positions<'a>,
    pub mask: Option<&'a [bool]>,
    pub cache: &'a mut C,
}

/// Runs decoder layer `l` on the hidden states `x` (`[tokens, hidden_size]`, rows at `positions`, ascending):
/// stores the tokens' keys and values at their positions in `cache`, attends over the positions `mask` shows
/// (all when `None`) and adds the attention and MLP outputs to `x`. Leaves the rotated queries in `s.q`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_step<O: Operations, C: KvStore>(
    cfg: &LlamaConfig,
    layer: &LayerWeights,
    l: usize,
    x: &mut [f32],
    positions: Positions,
    mask: Option<&[bool]>,
    cache: &mut C,
    s: &mut Scratch,
) {
    let rows = x.len() / cfg.hidden_size;
    let segment = Segment {
        rows,
        positions,
        mask,
        cache,
    };
    layer_step_segments::<O, C>(cfg, layer, l, x, &mut [segment], s)
}

/// [`layer_step`] over the rows of several sequences at once (`segments`, in row order): the products, norms and
/// MLP run once over all rows (each row's values do not depend on the others), RoPE, the cache writes and
/// attention per sequence. Each sequence gets the bits it gets alone.
pub(crate) fn layer_step_segments<O: Operations, C: KvStore>(
    cfg: &LlamaConfig,
    layer: &LayerWeights,
    l: usize,
    x: &mut [f32],
    segments: &mut [Segment<'_, C>],
    s: &mut Scratch,
) {
    let (n, eps) = (x.len() / cfg.hidden_size, cfg.rms_norm_eps);
    debug_assert_eq!(segments.iter().map(|g| g.rows).sum::<usize>(), n);
    let ops = &mut s.ops;
    let ws = [&layer.wq, &layer.wk, &layer.wv];
    let qkv = [&mut s.q, &mut s.k, &mut s.v];
    O::norm_project(ws, x, &layer.attn_norm, eps, n, qkv, ops);
    if let Some([bq, bk, bv]) = &layer.qkv_bias {
        add_bias(&mut s.q, bq);
        add_bias(&mut s.k, bk);
        add_bias(&mut s.v, bv);
    }
    if let Some([norm_q, norm_k]) = &layer.qk_norm {
        O::head_norm(&mut s.q, norm_q, eps, ops);
        O::head_norm(&mut s.k, norm_k, eps, ops);
    }
    s.attn.resize(n * cfg.q_dim(), 0.0);
    let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
    let mut first = 0;
    for g in segments.iter_mut() {
        let (q_rows, kv_rows) = (
            first * q_dim..(first + g.rows) * q_dim,
            first * kv_dim..(first + g.rows) * kv_dim,
        );
        let context = g.cache.context_size();
        O::rope(
            cfg,
            l,
            context,
            &mut s.q[q_rows.clone()],
            cfg.heads,
            g.positions,
            ops,
        );
        O::rope(
            cfg,
            l,
            context,
            &mut s.k[kv_rows.clone()],
            cfg.kv_heads,
            g.positions,
            ops,
        );
        g.cache
            .write(l, g.positions, &s.k[kv_rows.clone()], &s.v[kv_rows]);
        let cache = &*g.cache;
        let (q, attn) = (&s.q[q_rows.clone()], &mut s.attn[q_rows]);
        O::attention(cfg, q, cache, l, g.positions, g.mask, g.rows, attn, ops);
        first += g.rows;
    }
    O::project(&layer.wo, &s.attn, n, &mut s.proj, ops);
    if let Some([post_attn, _]) = &layer.post_norms {
        O::head_norm(&mut s.proj, post_attn, eps, ops);
    }
    add_residual(x, &s.proj);
    let (w_gate, w_up, norm) = (&layer.w_gate, &layer.w_up, &layer.ffn_norm);
    let (gate, up, act) = (&mut s.gate, &mut s.up, cfg.activation);
    O::gated_mlp(w_gate, w_up, act, x, norm, eps, n, gate, up, ops);
    O::project(&layer.w_down, &s.gate, n, &mut s.proj, ops);
    if let Some([_, post_ffn]) = &layer.post_norms {
        O::head_norm(&mut s.proj, post_ffn, eps, ops);
    }
    add_residual(x, &s.proj);
}

/// The embeddings of `tokens` into the rows of `x` (`[tokens, hidden_size]`), scaled as the model says.
pub(crate) fn embed(cfg: &LlamaConfig, w: &LlamaWeights, tokens: &[u32], x: &mut [f32]) {
    for (&t, row) in tokens.iter().zip(x.chunks_mut(cfg.hidden_size)) {
        w.embed.row_to_f32(t as usize, row);
        if let Some(scale) = cfg.embedding_scale {
            row.iter_mut().for_each(|v| *v *= scale);
        }
    }
}

/// Final RMSNorm and the output projection of the hidden states `x` (`[rows, hidden_size]`) into `logits`.
pub(crate) fn output_logits<O: Operations>(
    cfg: &LlamaConfig,
    w: &LlamaWeights,
    x: &[f32],
    s: &mut Scratch,
    logits: &mut Vec<f32>,
) {
    let rows = x.len() / cfg.hidden_size;
    let norm = &w.final_norm;
    O::norm_project(
        [w.lm_head()],
        x,
        norm,
        cfg.rms_norm_eps,
        rows,
        [logits],
        &mut s.ops,
    );
}

/// Runs `tokens` through the model at positions `cache.len()..`, appends their keys/values to `cache`, and
/// writes logits (`[positions, vocab]`) into `logits`.
pub fn forward<O: Operations, C: KvStore>(
    cfg: &LlamaConfig,
    w: &LlamaWeights,
    tokens: &[u32],
    cache: &mut C,
    s: &mut Scratch,
    logits: &mut Vec<f32>,
    logits_for: LogitsFor,
) {
    forward_first_layers::<O, C>(cfg, w, w.layers.len(), tokens, cache, s, logits, logits_for)
}

/// [`forward`] through the first `layers` layers only, then the final norm and the output head: the model
/// truncated, as a self-draft runs it (`cache` holds those layers).
#[allow(clippy::too_many_arguments)]
pub fn forward_first_layers<O: Operations, C: KvStore>(
    cfg: &LlamaConfig,
    w: &LlamaWeights,
    layers: usize,
    tokens: &[u32],
    cache: &mut C,
    s: &mut Scratch,
    logits: &mut Vec<f32>,
    logits_for: LogitsFor,
) {
    let n = tokens.len();
    let d = cfg.hidden_size;
    let positions = Positions::From(cache.len());
    let mut x = std::mem::take(&mut s.x);
    x.resize(n * d, 0.0);
    embed(cfg, w, tokens, &mut x);
    for (l, layer) in w.layers[..layers].iter().enumerate() {
        layer_step::<O, C>(cfg, layer, l, &mut x, positions, None, cache, s);
    }
    cache.commit(n);
    let first_row = match logits_for {
        LogitsFor::Last => n - 1,
        LogitsFor::All => 0,
    };
    output_logits::<O>(cfg, w, &x[first_row * d..], s, logits);
    s.x = x;
}

/// Runs several sequences' tokens in one pass: `sequences[i]` appends its tokens (at least one) at positions
/// `cache.len()..` of its own cache. The products read each weight once for all rows; each sequence gets the bits
/// it gets alone. Writes into `logits`, sequence after sequence, the logits after each of its tokens when
/// `all_rows[i]` (a speculative session verifying drafts), else after its last token only (`all_rows` may be
/// empty: last tokens only).
pub fn forward_sequences<O: Operations, C: KvStore>(
    cfg: &LlamaConfig,
    w: &LlamaWeights,
    sequences: &mut [(&[u32], &mut C)],
    all_rows: &[bool],
    s: &mut Scratch,
    logits: &mut Vec<f32>,
) {
    let d = cfg.hidden_size;
    let n: usize = sequences.iter().map(|(t, _)| t.len()).sum();
    let mut x = std::mem::take(&mut s.x);
    x.resize(n * d, 0.0);
    let mut first = 0;
    for (tokens, _) in sequences.iter() {
        embed(
            cfg,
            w,
            tokens,
            &mut x[first * d..(first + tokens.len()) * d],
        );
        first += tokens.len();
    }
    // Built once: a sequence's positions stay those of its cache until the commit after the last layer.
    let mut segments: Vec<Segment<'_, C>> = sequences
        .iter_mut()
        .map(|(tokens, cache)| Segment {
            rows: tokens.len(),
            positions: Positions::From(cache.len()),
            mask: None,
            cache: &mut **cache,
        })
        .collect();
    for (l, layer) in w.layers.iter().enumerate() {
        layer_step_segments::<O, C>(cfg, layer, l, &mut x, &mut segments, s);
    }
    let mut wanted_rows = Vec::with_capacity(segments.len() * d);
    let mut end = 0;
    for (i, g) in segments.iter_mut().enumerate() {
        g.cache.commit(g.rows);
        let start = end;
        end += g.rows;
        let first = if all_rows.get(i).copied().unwrap_or(false) {
            start
        } else {
            end - 1
        };
        wanted_rows.extend_from_slice(&x[first * d..end * d]);
    }
    output_logits::<O>(cfg, w, &wanted_rows, s, logits);
    s.x = x;
}
