//! llama.cpp's arithmetic (`Numerics::LlamaCpp`) as a set of operations for the one model of [`crate::forward`]:
//! each operation computed as ggml computes it (`seedinfer_kernels::ggml_arithmetic`), so that a Q4_1 GGUF gives
//! llama.cpp's logits bit for bit. It exists to check seedinfer against llama.cpp, and is several times slower
//! than the default arithmetic: one row of blocks at a time, attention with the whole score row in memory.
//!
//! What llama.cpp does that matters here (CPU, flash attention off, f16 KV cache): RMSNorm sums in f64; Q/K/V,
//! output and MLP products round activations to int8 per 32 values and sum per SIMD lane; RoPE angles come from
//! repeated f32 multiplication; queries, keys, values and attention probabilities are rounded to f16; soft max
//! and SiLU use ggml's own `expf`; a batch of one token takes other dot products than a batch of two or more.

use crate::config::{Architecture, GatedActivation, LlamaConfig, RopeScaling, RopeStyle};
use crate::error::{EngineError, Result};
use crate::forward::{Operations, OpsScratch};
use crate::kv_cache::{KvStore, Positions};
use crate::kv_pool::KvDtype;
use crate::weights::{LlamaWeights, Matrix};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use seedinfer_formats::TensorType;
use seedinfer_kernels::attention::KvRows;
use seedinfer_kernels::ggml_arithmetic::{
    self as ggml, AttendScratch, AttentionDots, KvSource, WidenedKv,
};
use seedinfer_kernels::quantized::{quantize_activations, Q8Block};

/// Tokens per pass: llama.cpp's default micro-batch. A pass of one token takes the single-token dot products, as
/// in llama.cpp, so prompts are split where llama.cpp splits them.
pub const LLAMACPP_BATCH: usize = 512;

/// Whether this model can run with llama.cpp's arithmetic: every layer matrix Q4_1 as stored in the file (llama.cpp
/// repacks Q4_0 and multiplies Q8_0 batches with another kernel), the output matrix Q4_1 or Q8_0, an f16 cache.
pub fn check_supported(cfg: &LlamaConfig, w: &LlamaWeights, kv: KvDtype) -> Result<()> {
    let unsupported = |what: String| {
        Err(EngineError::InvalidOption(format!(
            "numerics 'llamacpp' reproduces llama.cpp's arithmetic for llama models without RoPE scaling, with Q4_1 GGUF layers and an f16 KV cache; {what}"
        )))
    };
    if cfg.arch != Architecture::Llama {
        return unsupported(format!("this model's architecture is {}", cfg.arch.name()));
    }
    if cfg.rope_scaling != RopeScaling::None {
        return unsupported(format!(
            "this model scales RoPE ({})",
            cfg.rope_scaling.describe()
        ));
    }
    if kv != KvDtype::F16 {
        return unsupported(format!("this model's kvCache.dtype is {}", kv.name()));
    }
    let quantized = |m: &Matrix| m.quantized().map(|q| q.tensor_type());
    for (l, layer) in w.layers.iter().enumerate() {
        let matrices = [
            &layer.wq,
            &layer.wk,
            &layer.wv,
            &layer.wo,
            &layer.w_gate,
            &layer.w_up,
            &layer.w_down,
        ];
        if let Some(m) = matrices
            .iter()
            .find(|m| quantized(m) != Some(TensorType::Q4_1))
        {
            let format =
                quantized(m).map_or("not block-quantised".into(), |t| t.name().to_string());
            return unsupported(format!("layer {l} has a {format} matrix"));
        }
    }
    match quantized(w.lm_head()) {
        Some(TensorType::Q4_1 | TensorType::Q8_0) => Ok(()),
        _ => unsupported("the output matrix is neither Q4_1 nor Q8_0".into()),
    }
}

/// `out = x · mᵀ` for `tokens` rows of activations already rounded to int8 (`q8`), with llama.cpp's product.
fn product(m: &Matrix, q8: &[Q8Block], tokens: usize, out: &mut Vec<f32>) {
    out.resize(tokens * m.rows, 0.0);
    let done = m
        .quantized()
        .is_some_and(|q| q.matmul_ggml(q8, tokens, out));
    assert!(done, "check_supported admits only Q4_1 and Q8_0 matrices");
}

/// One KV head's cached rows in place (f16), position by position.
struct CachedRows<'a> {
    keys: Vec<&'a [f16]>,
    values: Vec<&'a [f16]>,
}

impl KvSource for CachedRows<'_> {
    fn key<'a>(&'a self, j: usize, buf: &'a mut [f32]) -> &'a [f32] {
        self.keys[j].convert_to_f32_slice(buf);
        buf
    }
    fn value<'a>(&'a self, j: usize, buf: &'a mut [f32]) -> &'a [f32] {
        self.values[j].convert_to_f32_slice(buf);
        buf
    }
}

/// The rows of positions `0..positions` of one layer's KV head `kv_head` (an f16 cache: `check_supported`).
fn cached_rows<C: KvStore>(
    cache: &C,
    layer: usize,
    kv_head: usize,
    positions: usize,
    head_dim: usize,
) -> CachedRows<'_> {
    let block_size = cache.block_size();
    let mut rows = CachedRows {
        keys: Vec::with_capacity(positions),
        values: Vec::with_capacity(positions),
    };
    for block in 0..positions.div_ceil(block_size) {
        let count = block_size.min(positions - block * block_size);
        let head = cache.head(layer, kv_head, block, count);
        let (KvRows::F16(keys), KvRows::F16(values)) = (head.keys, head.values) else {
            unreachable!("check_supported admits only f16 caches");
        };
        for p in 0..count {
            let at = p * head.stride + head.offset;
            rows.keys.push(&keys[at..at + head_dim]);
            rows.values.push(&values[at..at + head_dim]);
        }
    }
    rows
}

/// `rows` widened to f32 once, for a batch: every query of the batch reads every row.
fn widened(rows: &CachedRows, head_dim: usize, keys: &mut Vec<f32>, values: &mut Vec<f32>) {
    for (rows, out) in [(&rows.keys, keys), (&rows.values, values)] {
        out.resize(rows.len() * head_dim, 0.0);
        for (row, out) in rows.iter().zip(out.chunks_exact_mut(head_dim)) {
            row.convert_to_f32_slice(out);
        }
    }
}

/// Attention of every query head of the `n` tokens (rows of `q`, already rotated) over the cached rows, into
/// `attn`: one task per token and head.
#[allow(clippy::too_many_arguments)]
fn attend_all<S: KvSource>(
    q: &[f32],
    kv: &[S],
    heads: usize,
    head_dim: usize,
    start: usize,
    scale: f32,
    dots: AttentionDots,
    attn: &mut [f32],
) {
    let group = heads / kv.len();
    attn.par_chunks_mut(head_dim).enumerate().for_each_init(
        || (AttendScratch::default(), Vec::new()),
        |(scratch, query), (i, out)| {
            let (t, h) = (i / heads, i % heads);
            query.clear();
            query.extend(
                q[i * head_dim..(i + 1) * head_dim]
                    .iter()
                    .map(|&v| ggml::round_to_f16(v)),
            );
            ggml::attend(
                query,
                &kv[h / group],
                start + t + 1,
                scale,
                dots,
                scratch,
                out,
            );
        },
    );
}

/// What llama.cpp's operations keep between calls.
#[derive(Default)]
pub(crate) struct GgmlScratch {
    normed: Vec<f32>,
    q8: Vec<Q8Block>,
    angles: Vec<(f32, f32)>,
    /// Per KV head, the cached keys and values widened to f32 for a batch.
    widened_kv: Vec<(Vec<f32>, Vec<f32>)>,
}

/// llama.cpp's arithmetic (`Numerics::LlamaCpp`), operation by operation.
pub struct GgmlOps;

impl Operations for GgmlOps {
    fn norm_project<const N: usize>(
        ws: [&Matrix; N],
        x: &[f32],
        norm: &[f32],
        eps: f32,
        tokens: usize,
        outs: [&mut Vec<f32>; N],
        s: &mut OpsScratch,
    ) {
        let g = &mut s.ggml;
        g.normed.resize(x.len(), 0.0);
        ggml::rms_norm(x, norm, eps, &mut g.normed);
        quantize_activations(&g.normed, &mut g.q8);
        for (w, out) in ws.into_iter().zip(outs) {
            product(w, &g.q8, tokens, out);
        }
    }

    fn project(w: &Matrix, input: &[f32], tokens: usize, out: &mut Vec<f32>, s: &mut OpsScratch) {
        quantize_activations(input, &mut s.ggml.q8);
        product(w, &s.ggml.q8, tokens, out);
    }

    fn head_norm(x: &mut Vec<f32>, norm: &[f32], eps: f32, s: &mut OpsScratch) {
        let normed = &mut s.ggml.normed;
        normed.resize(x.len(), 0.0);
        ggml::rms_norm(x, norm, eps, normed);
        std::mem::swap(x, normed);
    }

    fn rope(
        cfg: &LlamaConfig,
        _layer: usize,
        _context: usize,
        x: &mut [f32],
        heads: usize,
        positions: Positions,
        s: &mut OpsScratch,
    ) {
        let hd = cfg.head_dim;
        let pairs = |i: usize| match cfg.rope_style {
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            RopeStyle::Half => (i, i + hd / 2),
        };
        for (t, row) in x.chunks_mut(heads * hd).enumerate() {
            ggml::rope_angles(positions.at(t), cfg.rope_theta, hd, &mut s.ggml.angles);
            ggml::rotate_heads(row, hd, &s.ggml.angles, &pairs);
        }
    }

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
    ) {
        debug_assert!(
            mask.is_none(),
            "generate refuses token pruning with these numerics"
        );
        let (hd, heads, kv_heads) = (cfg.head_dim, cfg.heads, cfg.kv_heads);
        let start = positions.at(0);
        let scale = 1.0 / (hd as f32).sqrt();
        let dots = if tokens == 1 {
            AttentionDots::Single {
                padded_len: (start + 1).next_multiple_of(256),
            }
        } else {
            AttentionDots::Batched
        };
        let rows: Vec<CachedRows> = (0..kv_heads)
            .map(|g| cached_rows(cache, layer, g, start + tokens, hd))
            .collect();
        if tokens == 1 {
            // One query per head: each row is read once, so in place.
            return attend_all(q, &rows, heads, hd, start, scale, dots, out);
        }
        let widened_kv = &mut s.ggml.widened_kv;
        widened_kv.resize(kv_heads, Default::default());
        for (rows, (keys, values)) in rows.iter().zip(widened_kv.iter_mut()) {
            widened(rows, hd, keys, values);
        }
        let kv: Vec<WidenedKv> = widened_kv
            .iter()
            .map(|(keys, values)| WidenedKv {
                keys,
                values,
                head_dim: hd,
            })
            .collect();
        attend_all(q, &kv, heads, hd, start, scale, dots, out);
    }

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
    ) {
        // check_supported admits llama models only, whose MLP is SwiGLU.
        debug_assert_eq!(activation, GatedActivation::Silu);
        Self::norm_project([w_gate, w_up], x, norm, eps, tokens, [gate, up], s);
        ggml::silu_times(gate, up);
    }
}
