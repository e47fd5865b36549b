//! The forward pass with llama.cpp's arithmetic (`Numerics::LlamaCpp`): the model of [`crate::forward`], with each
//! operation computed as ggml computes it (`seedinfer_kernels::ggml_arithmetic`), so that a Q4_1 GGUF gives
//! llama.cpp's logits bit for bit. It exists to check seedinfer against llama.cpp, and is several times slower
//! than the default arithmetic: one row of blocks at a time, attention with the whole score row in memory.
//!
//! What llama.cpp does that matters here (CPU, flash attention off, f16 KV cache): RMSNorm sums in f64; Q/K/V,
//! output and MLP products round activations to int8 per 32 values and sum per SIMD lane; RoPE angles come from
//! repeated f32 multiplication; queries, keys, values and attention probabilities are rounded to f16; soft max
//! and SiLU use ggml's own `expf`; a batch of one token takes other dot products than a batch of two or more.

use crate::config::{LlamaConfig, RopeStyle};
use crate::error::{EngineError, Result};
use crate::forward::LogitsFor;
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
pub fn check_supported(w: &LlamaWeights, kv: KvDtype) -> Result<()> {
    let unsupported = |what: String| {
        Err(EngineError::InvalidOption(format!(
            "numerics 'llamacpp' reproduces llama.cpp's arithmetic for Q4_1 GGUF layers with an f16 KV cache; {what}"
        )))
    };
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

/// Runs `tokens` (at most [`LLAMACPP_BATCH`]) through the model at positions `cache.len()..` with llama.cpp's
/// arithmetic, appends their keys and values to `cache` and writes logits (`[positions, vocab]`) into `logits`.
pub fn forward_llamacpp<C: KvStore>(
    cfg: &LlamaConfig,
    w: &LlamaWeights,
    tokens: &[u32],
    cache: &mut C,
    logits: &mut Vec<f32>,
    logits_for: LogitsFor,
) {
    let (n, d, hd) = (tokens.len(), cfg.hidden_size, cfg.head_dim);
    let start = cache.len();
    let (heads, kv_heads) = (cfg.heads, cfg.kv_heads);
    let scale = 1.0 / (hd as f32).sqrt();
    let dots = if n == 1 {
        AttentionDots::Single {
            padded_len: (start + 1).next_multiple_of(256),
        }
    } else {
        AttentionDots::Batched
    };
    let mut x = vec![0.0f32; n * d];
    for (&t, x) in tokens.iter().zip(x.chunks_mut(d)) {
        w.embed.row_to_f32(t as usize, x);
    }
    let (mut normed, mut q8) = (vec![0.0f32; n * d], Vec::new());
    let (mut q, mut k, mut v, mut attn) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        vec![0.0; n * cfg.q_dim()],
    );
    let (mut proj, mut gate, mut up) = (Vec::new(), Vec::new(), Vec::new());
    let mut angles = Vec::new();
    let mut widened_kv: Vec<(Vec<f32>, Vec<f32>)> = vec![Default::default(); kv_heads];
    for (l, layer) in w.layers.iter().enumerate() {
        ggml::rms_norm(&x, &layer.attn_norm, cfg.rms_norm_eps, &mut normed);
        quantize_activations(&normed, &mut q8);
        product(&layer.wq, &q8, n, &mut q);
        product(&layer.wk, &q8, n, &mut k);
        product(&layer.wv, &q8, n, &mut v);
        for t in 0..n {
            ggml::rope_angles(start + t, cfg.rope_theta, hd, &mut angles);
            let pairs = |i: usize| match cfg.rope_style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Half => (i, i + hd / 2),
            };
            ggml::rotate_heads(
                &mut q[t * heads * hd..(t + 1) * heads * hd],
                hd,
                &angles,
                &pairs,
            );
            ggml::rotate_heads(
                &mut k[t * kv_heads * hd..(t + 1) * kv_heads * hd],
                hd,
                &angles,
                &pairs,
            );
        }
        cache.write(l, Positions::From(start), &k, &v);
        let rows: Vec<CachedRows> = (0..kv_heads)
            .map(|g| cached_rows(&*cache, l, g, start + n, hd))
            .collect();
        if n == 1 {
            // One query per head: each row is read once, so in place.
            attend_all(&q, &rows, heads, hd, start, scale, dots, &mut attn);
        } else {
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
            attend_all(&q, &kv, heads, hd, start, scale, dots, &mut attn);
        }
        quantize_activations(&attn, &mut q8);
        product(&layer.wo, &q8, n, &mut proj);
        for (x, p) in x.iter_mut().zip(&proj) {
            *x += p;
        }
        ggml::rms_norm(&x, &layer.ffn_norm, cfg.rms_norm_eps, &mut normed);
        quantize_activations(&normed, &mut q8);
        product(&layer.w_gate, &q8, n, &mut gate);
        product(&layer.w_up, &q8, n, &mut up);
        ggml::silu_times(&mut gate, &up);
        quantize_activations(&gate, &mut q8);
        product(&layer.w_down, &q8, n, &mut proj);
        for (x, p) in x.iter_mut().zip(&proj) {
            *x += p;
        }
    }
    cache.commit(n);
    let first_row = match logits_for {
        LogitsFor::Last => n - 1,
        LogitsFor::All => 0,
    };
    let rows = n - first_row;
    ggml::rms_norm(
        &x[first_row * d..],
        &w.final_norm,
        cfg.rms_norm_eps,
        &mut normed[..rows * d],
    );
    quantize_activations(&normed[..rows * d], &mut q8);
    product(w.lm_head(), &q8, rows, logits);
}
