//! seedinfer's own operations for the layer step (`forward::Operations`): RMSNorm fused into int8 quantisation,
//! the products of several matrices in one parallel pass, the gated MLP's activation applied per task, f64 RoPE angles, and the
//! tiled, split attention of `crate::attention`. Faster than llama.cpp's, and a batch gives the bits of one
//! token at a time.

use crate::attention::attention;
use crate::config::{GatedActivation, LlamaConfig, RopeStyle};
use crate::forward::{Operations, OpsScratch};
use crate::kv_cache::{KvStore, Positions};
use crate::weights::Matrix;
use seedinfer_kernels::quantized::{Activations, QuantizedInput, QuantizedMatrix};
use seedinfer_kernels::rms_norm::{rms_norm, rms_norm_quantized};

/// seedinfer's arithmetic (`Numerics::Seedinfer`).
pub struct SeedinferOps;

impl Operations for SeedinferOps {
    fn norm_project<const N: usize>(
        ws: [&Matrix; N],
        x: &[f32],
        norm: &[f32],
        eps: f32,
        tokens: usize,
        outs: [&mut Vec<f32>; N],
        s: &mut OpsScratch,
    ) {
        project_normed(ws, x, norm, eps, tokens, outs, &mut s.project)
    }

    fn project(w: &Matrix, input: &[f32], tokens: usize, out: &mut Vec<f32>, s: &mut OpsScratch) {
        project([w], input, tokens, [out], &mut s.project)
    }

    fn head_norm(x: &mut Vec<f32>, norm: &[f32], eps: f32, s: &mut OpsScratch) {
        let normed = &mut s.project.normed;
        rms_norm(x, norm, eps, normed);
        std::mem::swap(x, normed);
    }

    fn rope(
        cfg: &LlamaConfig,
        layer: usize,
        context: usize,
        x: &mut [f32],
        heads: usize,
        positions: Positions,
        s: &mut OpsScratch,
    ) {
        let table = RopeTable { layer, context };
        apply_rope(x, cfg, table, heads, positions, 1.0, &mut s.rope)
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
        s.think
            .record(layer, &q[..tokens * cfg.q_dim()], cfg.q_dim());
        let blocks = s.xattention.select(cfg, q, cache, layer, positions, tokens);
        attention(
            cfg,
            q,
            cache,
            layer,
            positions,
            mask,
            blocks,
            tokens,
            out,
            &mut s.split,
        )
    }

    /// One fused pass when both matrices are block-quantised: the normalised rows are quantised once, and each
    /// task applies the activation to its rows of both products while they are in cache.
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
        let s = &mut s.project;
        match all_quantized([w_gate, w_up]) {
            Some([qg, qu]) if qg.rows == qu.rows => {
                norm_quantized(&[qg, qu], x, norm, eps, s);
                let [g, u] = resized([gate, up], [tokens * qg.rows; 2]);
                QuantizedMatrix::matmul_gated(qg, qu, activation, s.input.as_input(), tokens, g, u);
            }
            _ => {
                let outs = [&mut *gate, &mut *up];
                project_normed([w_gate, w_up], x, norm, eps, tokens, outs, s);
                activation.apply(gate, up);
            }
        }
    }
}

fn all_quantized<const N: usize>(ws: [&Matrix; N]) -> Option<[&QuantizedMatrix; N]> {
    let mut quantized = [None; N];
    for (q, w) in quantized.iter_mut().zip(ws) {
        *q = Some(w.quantized()?);
    }
    Some(quantized.map(|q| q.expect("every slot was filled")))
}

/// The normalised rows of `x` quantised in the forms `quantized` read: straight to int8 blocks of 32 (never
/// written as f32) when none is a K-quant, else through `s.normed`.
fn norm_quantized(
    quantized: &[&QuantizedMatrix],
    x: &[f32],
    norm: &[f32],
    eps: f32,
    s: &mut ProjectScratch,
) {
    if quantized
        .iter()
        .all(|q| q.activations() != Activations::Q8K)
    {
        rms_norm_quantized(x, norm, eps, &mut s.input.q8);
    } else {
        rms_norm(x, norm, eps, &mut s.normed);
        s.input.quantize(&s.normed, quantized.iter().copied());
    }
}

/// `outs[i] = rms_norm(x) · ws[i]ᵀ` for the `tokens` rows of `x`. When every matrix is block-quantised the
/// normalised rows are quantised once for all of them and all products run in one parallel pass; otherwise the
/// normalised rows are kept in `s.normed` for [`project`].
fn project_normed<const N: usize>(
    ws: [&Matrix; N],
    x: &[f32],
    norm: &[f32],
    eps: f32,
    tokens: usize,
    outs: [&mut Vec<f32>; N],
    s: &mut ProjectScratch,
) {
    match all_quantized(ws) {
        Some(quantized) => {
            norm_quantized(&quantized, x, norm, eps, s);
            let outs = resized(outs, ws.map(|w| tokens * w.rows));
            QuantizedMatrix::matmul_each(quantized, s.input.as_input(), tokens, outs);
        }
        None => {
            let mut normed = std::mem::take(&mut s.normed);
            rms_norm(x, norm, eps, &mut normed);
            project(ws, &normed, tokens, outs, s);
            s.normed = normed;
        }
    }
}

/// Each buffer resized to its length, as slices.
fn resized<const N: usize>(outs: [&mut Vec<f32>; N], lens: [usize; N]) -> [&mut [f32]; N] {
    let mut i = 0;
    outs.map(|out| {
        out.resize(lens[i], 0.0);
        i += 1;
        out.as_mut_slice()
    })
}

/// `outs[i] = input · ws[i]ᵀ` for `tokens` rows of input. The input is quantised to int8 once and reused by every
/// block-quantised matrix.
fn project<const N: usize>(
    ws: [&Matrix; N],
    input: &[f32],
    tokens: usize,
    outs: [&mut Vec<f32>; N],
    s: &mut ProjectScratch,
) {
    s.input
        .quantize(input, ws.iter().filter_map(|w| w.quantized()));
    for (w, out) in ws.into_iter().zip(outs) {
        out.resize(tokens * w.rows, 0.0);
        match w.quantized() {
            Some(q) => q.matmul(s.input.as_input(), tokens, out),
            None => w.data.matmul_f32(input, tokens, out),
        }
    }
}

#[derive(Default)]
pub(crate) struct ProjectScratch {
    input: QuantizedInput,
    /// Normalised rows, for matrices that take f32 activations.
    normed: Vec<f32>,
}

/// Rotary-embedding tables reused across calls, so a decode step allocates nothing.
#[derive(Default)]
pub(crate) struct RopeScratch {
    inv_freq: Vec<f64>,
    /// Which frequencies `inv_freq` holds: the local layers' (`LlamaConfig::layer_has_local_rope`), LongRoPE's
    /// long factors (`LlamaConfig::uses_long_rope`).
    key: (bool, bool),
    /// `[token][i]` cos and sin of the last call's tokens: the queries and keys of every layer with the same
    /// frequencies rotate by the same angles, so a forward pass computes them once, not twice per layer.
    rotations: Vec<(f32, f32)>,
    /// What `rotations` holds: the frequencies' key and the sign's bits, and the tokens' positions.
    rotations_for: Option<((bool, bool), u64)>,
    positions: Vec<usize>,
}

/// Which rotary frequencies a rotation takes: those of layer `layer` in a session of `context` positions.
#[derive(Clone, Copy)]
pub(crate) struct RopeTable {
    pub layer: usize,
    pub context: usize,
}

/// Rotates each head of `x` (`[tokens, heads * head_dim]`) by its absolute position, with `table`'s frequencies
/// (cos and sin times LongRoPE's attention factor, if any); `sign` -1 undoes it.
pub(crate) fn apply_rope(
    x: &mut [f32],
    cfg: &LlamaConfig,
    table: RopeTable,
    heads: usize,
    positions: Positions,
    sign: f64,
    r: &mut RopeScratch,
) {
    let head_dim = cfg.head_dim;
    let half = head_dim / 2;
    let key = (
        cfg.layer_has_local_rope(table.layer),
        cfg.uses_long_rope(table.context),
    );
    if r.inv_freq.len() != half || r.key != key {
        r.inv_freq = cfg.layer_rope_inv_freqs(table.layer, table.context);
        r.key = key;
        r.rotations_for = None;
    }
    let tokens = x.len() / (heads * head_dim);
    let same = r.rotations_for == Some((key, sign.to_bits()))
        && r.positions.len() == tokens
        && (0..tokens).all(|t| r.positions[t] == positions.at(t));
    if !same {
        // Undoing a rotation divides by the factor again.
        let factor = cfg.rope_attention_factor().powf(sign);
        r.positions.clear();
        r.positions.extend((0..tokens).map(|t| positions.at(t)));
        r.rotations.clear();
        for &position in &r.positions {
            let pos = sign * position as f64;
            r.rotations.extend(r.inv_freq.iter().map(|f| {
                let angle = pos * f;
                ((factor * angle.cos()) as f32, (factor * angle.sin()) as f32)
            }));
        }
        r.rotations_for = Some((key, sign.to_bits()));
    }
    for (t, row) in x.chunks_mut(heads * head_dim).enumerate() {
        let rotations = &r.rotations[t * half..(t + 1) * half];
        for head in row.chunks_mut(head_dim) {
            for (i, (cos, sin)) in rotations.iter().enumerate() {
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
