//! Block-quantised weights (GGUF Q4_0, Q4_1, Q8_0 kept as stored) multiplied with activations quantised to
//! int8 per 32 values, the way llama.cpp computes them: Q4_0 and Q8_0 weights meet Q8_0 activations, Q4_1
//! weights meet Q8_1 activations (which also carry their block sum for the Q4_1 minimum).
//!
//! The scalar kernels here are the reference; `quantized_avx2` holds the SIMD twins, picked at run time.

use crate::activation::silu_times;
use crate::ggml_arithmetic::{self, WeightRow};
use crate::isa::{detected, Isa};
use crate::row_blocks::ProductOut;
use crate::row_quads::{interleave, row_blocks, QuadQ4_0, QuadQ4_1, QuadQ8_0, QUAD};
use half::f16;
use rayon::prelude::*;
use seedinfer_formats::{BlockQ4_0, BlockQ4_1, BlockQ8_0, TensorType};

pub const BLOCK: usize = 32;

/// 32 activations as int8 with their scale `d` and `s = d * sum(qs)`, both rounded through f16 as llama.cpp
/// stores them, and the exact integer sums of `qs` over the even and the odd groups of four elements
/// (`qs[8c..8c + 4]` and `qs[8c + 4..8c + 8]`: the lanes of Q4_0's unsigned-nibble products).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8Block {
    pub d: f32,
    pub s: f32,
    pub group_sums: [i32; 2],
    pub qs: [i8; BLOCK],
}

impl Default for Q8Block {
    fn default() -> Self {
        Self {
            d: 0.0,
            s: 0.0,
            group_sums: [0; 2],
            qs: [0; BLOCK],
        }
    }
}

/// Quantises rows of activations (`input.len()` a multiple of 32) into `out`, llama.cpp's SIMD way:
/// `d = max|x| / 127`, `q = round_ties_even(x * 127 / max|x|)`.
pub fn quantize_activations(input: &[f32], out: &mut Vec<Q8Block>) {
    assert!(input.len().is_multiple_of(BLOCK), "whole blocks of 32");
    #[cfg(target_arch = "x86_64")]
    if detected() >= Isa::Avx2 {
        // SAFETY: `detected` only reports instruction sets this machine has; the length was checked.
        return unsafe { crate::quantized_avx2::quantize_activations(input, out) };
    }
    quantize_activations_scalar(input, out)
}

/// Scalar reference of [`quantize_activations`].
pub fn quantize_activations_scalar(input: &[f32], out: &mut Vec<Q8Block>) {
    out.clear();
    out.extend(input.chunks_exact(BLOCK).map(quantize_block_scalar));
}

/// One block of 32 activations quantised: `d = max|x| / 127`, `q = round_ties_even(x * 127 / max|x|)`.
pub(crate) fn quantize_block_scalar(x: &[f32]) -> Q8Block {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inverse = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut block = Q8Block {
        d: f16::from_f32(d).to_f32(),
        ..Q8Block::default()
    };
    for (j, (q, v)) in block.qs.iter_mut().zip(x).enumerate() {
        *q = (v * inverse).round_ties_even() as i8;
        block.group_sums[(j / 4) % 2] += *q as i32;
    }
    let sum = block.group_sums[0] + block.group_sums[1];
    block.s = f16::from_f32(d * sum as f32).to_f32();
    block
}

#[inline(always)]
fn dot_q4_0(w: impl Iterator<Item = BlockQ4_0>, x: &[Q8Block]) -> f32 {
    let mut acc = 0.0f32;
    for (b, a) in w.zip(x) {
        let mut sum = 0i32;
        for j in 0..BLOCK / 2 {
            let (lo, hi) = ((b.qs[j] & 0x0f) as i32 - 8, (b.qs[j] >> 4) as i32 - 8);
            sum += lo * a.qs[j] as i32 + hi * a.qs[j + BLOCK / 2] as i32;
        }
        acc += b.d.to_f32() * a.d * sum as f32;
    }
    acc
}

#[inline(always)]
fn dot_q4_1(w: impl Iterator<Item = BlockQ4_1>, x: &[Q8Block]) -> f32 {
    let (mut acc, mut mins) = (0.0f32, 0.0f32);
    for (b, a) in w.zip(x) {
        let mut sum = 0i32;
        for j in 0..BLOCK / 2 {
            let (lo, hi) = ((b.qs[j] & 0x0f) as i32, (b.qs[j] >> 4) as i32);
            sum += lo * a.qs[j] as i32 + hi * a.qs[j + BLOCK / 2] as i32;
        }
        acc += b.d.to_f32() * a.d * sum as f32;
        mins += b.m.to_f32() * a.s;
    }
    acc + mins
}

#[inline(always)]
fn dot_q8_0(w: impl Iterator<Item = BlockQ8_0>, x: &[Q8Block]) -> f32 {
    let mut acc = 0.0f32;
    for (b, a) in w.zip(x) {
        let mut sum = 0i32;
        for j in 0..BLOCK {
            sum += b.qs[j] as i32 * a.qs[j] as i32;
        }
        acc += b.d.to_f32() * a.d * sum as f32;
    }
    acc
}

/// Defines the scalar reference kernel `$scalar` and the dispatching `$name`: for the rows
/// `first_row..first_row + row_count` (`first_row` a multiple of 4, `quads` starting at its quad, `n` blocks a
/// row) and every token `t` of `x`, `out[t][row] = dot(row, token t)`. Dispatches once per call.
macro_rules! quads_kernel {
    ($name:ident, $scalar:ident, $dot:ident, $quad:ty) => {
        /// Scalar reference of the kernel.
        fn $scalar(
            quads: &[$quad],
            n: usize,
            x: &[Q8Block],
            tokens: usize,
            out: &ProductOut,
            first_row: usize,
            row_count: usize,
        ) {
            for r in 0..row_count {
                for t in 0..tokens {
                    let value = $dot(row_blocks(quads, n, r), &x[t * n..(t + 1) * n]);
                    // SAFETY: the caller gives this task the rows `first_row..first_row + row_count` of `out`.
                    unsafe { out.write(first_row + r, t, value) };
                }
            }
        }

        fn $name(
            quads: &[$quad],
            n: usize,
            x: &[Q8Block],
            tokens: usize,
            out: &ProductOut,
            first_row: usize,
            row_count: usize,
        ) {
            #[cfg(target_arch = "x86_64")]
            if detected() >= Isa::Avx2 {
                // SAFETY: `detected` only reports instruction sets this machine has; `matmul_with` checks the
                // sizes of `quads`, `x` and `out`.
                return unsafe {
                    crate::quantized_avx2::$name(quads, n, x, tokens, out, first_row, row_count)
                };
            }
            $scalar(quads, n, x, tokens, out, first_row, row_count)
        }
    };
}

quads_kernel!(quads_q4_0, quads_q4_0_scalar, dot_q4_0, QuadQ4_0);
quads_kernel!(quads_q4_1, quads_q4_1_scalar, dot_q4_1, QuadQ4_1);
quads_kernel!(quads_q8_0, quads_q8_0_scalar, dot_q8_0, QuadQ8_0);

/// Weight rows in one of the GGUF block formats, interleaved in row quads (`row_quads`).
enum QuantizedBlocks {
    Q4_0(Vec<QuadQ4_0>),
    Q4_1(Vec<QuadQ4_1>),
    Q8_0(Vec<QuadQ8_0>),
}

pub struct QuantizedMatrix {
    pub rows: usize,
    pub cols: usize,
    blocks: QuantizedBlocks,
}

impl QuantizedMatrix {
    /// Takes a GGUF tensor's bytes (rows of blocks) and interleaves them into row quads; `None` when the type is
    /// not block-quantised or the sizes disagree.
    pub fn from_bytes(
        tensor_type: TensorType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Option<Self> {
        if !cols.is_multiple_of(BLOCK) || bytes.len() != tensor_type.row_bytes(cols).ok()? * rows {
            return None;
        }
        let n = cols / BLOCK;
        let blocks = match tensor_type {
            TensorType::Q4_0 => QuantizedBlocks::Q4_0(interleave(bytes, rows, n)),
            TensorType::Q4_1 => QuantizedBlocks::Q4_1(interleave(bytes, rows, n)),
            TensorType::Q8_0 => QuantizedBlocks::Q8_0(interleave(bytes, rows, n)),
            _ => return None,
        };
        Some(Self { rows, cols, blocks })
    }

    pub fn tensor_type(&self) -> TensorType {
        match self.blocks {
            QuantizedBlocks::Q4_0(_) => TensorType::Q4_0,
            QuantizedBlocks::Q4_1(_) => TensorType::Q4_1,
            QuantizedBlocks::Q8_0(_) => TensorType::Q8_0,
        }
    }

    pub fn resident_bytes(&self) -> usize {
        match &self.blocks {
            QuantizedBlocks::Q4_0(b) => std::mem::size_of_val(b.as_slice()),
            QuantizedBlocks::Q4_1(b) => std::mem::size_of_val(b.as_slice()),
            QuantizedBlocks::Q8_0(b) => std::mem::size_of_val(b.as_slice()),
        }
    }

    /// Whether every block scale (and Q4_1 minimum) is a finite number; a corrupt file may hold NaN or infinity.
    pub fn scales_are_finite(&self) -> bool {
        match &self.blocks {
            QuantizedBlocks::Q4_0(b) => b.iter().flat_map(|b| b.d).all(f16::is_finite),
            QuantizedBlocks::Q4_1(b) => b
                .iter()
                .flat_map(|b| b.d.into_iter().chain(b.m))
                .all(f16::is_finite),
            QuantizedBlocks::Q8_0(b) => b.iter().flat_map(|b| b.d).all(f16::is_finite),
        }
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    /// Row `row` as f32 (an embedding lookup).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let n = self.blocks_per_row();
        let dequantize = |bytes: &[u8], out: &mut [f32]| {
            // One block in, 32 values out: the formats crate cannot reject it.
            let _ = seedinfer_formats::dequantize_row(self.tensor_type(), bytes, out);
        };
        let outs = out.chunks_exact_mut(BLOCK);
        match &self.blocks {
            QuantizedBlocks::Q4_0(q) => row_blocks(q, n, row)
                .zip(outs)
                .for_each(|(b, o)| dequantize(bytemuck::bytes_of(&b), o)),
            QuantizedBlocks::Q4_1(q) => row_blocks(q, n, row)
                .zip(outs)
                .for_each(|(b, o)| dequantize(bytemuck::bytes_of(&b), o)),
            QuantizedBlocks::Q8_0(q) => row_blocks(q, n, row)
                .zip(outs)
                .for_each(|(b, o)| dequantize(bytemuck::bytes_of(&b), o)),
        }
    }

    /// Rows `first_row..first_row + row_count` (`first_row` a multiple of 4) times every token, into `out`.
    fn row_range(
        &self,
        x: &[Q8Block],
        tokens: usize,
        out: &ProductOut,
        first_row: usize,
        row_count: usize,
        scalar: bool,
    ) {
        let n = self.blocks_per_row();
        let range = first_row / QUAD * n..(first_row + row_count).div_ceil(QUAD) * n;
        let (first, count) = (first_row, row_count);
        match (&self.blocks, scalar) {
            (QuantizedBlocks::Q4_0(q), false) => {
                quads_q4_0(&q[range], n, x, tokens, out, first, count)
            }
            (QuantizedBlocks::Q4_1(q), false) => {
                quads_q4_1(&q[range], n, x, tokens, out, first, count)
            }
            (QuantizedBlocks::Q8_0(q), false) => {
                quads_q8_0(&q[range], n, x, tokens, out, first, count)
            }
            (QuantizedBlocks::Q4_0(q), true) => {
                quads_q4_0_scalar(&q[range], n, x, tokens, out, first, count)
            }
            (QuantizedBlocks::Q4_1(q), true) => {
                quads_q4_1_scalar(&q[range], n, x, tokens, out, first, count)
            }
            (QuantizedBlocks::Q8_0(q), true) => {
                quads_q8_0_scalar(&q[range], n, x, tokens, out, first, count)
            }
        }
    }

    /// `out[t][r] = dot(row r, activations of token t)` for `tokens` quantised activation rows.
    pub fn matmul(&self, x: &[Q8Block], tokens: usize, out: &mut [f32]) {
        self.matmul_with(x, tokens, out, false)
    }

    /// The same product with the scalar reference kernels.
    pub fn matmul_scalar(&self, x: &[Q8Block], tokens: usize, out: &mut [f32]) {
        self.matmul_with(x, tokens, out, true)
    }

    /// The product llama.cpp computes for these weights (`ggml_vec_dot_q4_1_q8_1` or `ggml_vec_dot_q8_0_q8_0` for
    /// every row and token, see [`crate::ggml_arithmetic`]): `out[t][r]`. Slower than [`QuantizedMatrix::matmul`],
    /// and the same bits as llama.cpp's rather than ours. `false` (and nothing written) for Q4_0, which llama.cpp
    /// repacks and multiplies in another order.
    pub fn matmul_ggml(&self, x: &[Q8Block], tokens: usize, out: &mut [f32]) -> bool {
        self.matmul_ggml_with(x, tokens, out, detected() < Isa::Avx2)
    }

    /// [`QuantizedMatrix::matmul_ggml`] with the scalar reference dot products.
    pub fn matmul_ggml_scalar(&self, x: &[Q8Block], tokens: usize, out: &mut [f32]) -> bool {
        self.matmul_ggml_with(x, tokens, out, true)
    }

    fn matmul_ggml_with(
        &self,
        x: &[Q8Block],
        tokens: usize,
        out: &mut [f32],
        scalar: bool,
    ) -> bool {
        if matches!(self.blocks, QuantizedBlocks::Q4_0(_)) {
            return false;
        }
        let n = self.blocks_per_row();
        assert!(x.len() >= tokens * n && out.len() >= tokens * self.rows);
        #[cfg(target_arch = "x86_64")]
        if tokens == 1 && !scalar {
            // One token: each row is read once, so it is read in place rather than unpacked first.
            out[..self.rows]
                .par_chunks_mut(64)
                .enumerate()
                .for_each(|(task, out)| {
                    for (i, o) in out.iter_mut().enumerate() {
                        let r = 64 * task + i;
                        let (quad, lane) = (r / QUAD * n..(r / QUAD + 1) * n, r % QUAD);
                        // SAFETY: `matmul_ggml` passes `scalar = false` only when the CPU has AVX2, FMA and F16C.
                        *o = unsafe {
                            match &self.blocks {
                                QuantizedBlocks::Q4_1(q) => {
                                    ggml_arithmetic::dot_q4_1_quads_avx2(&q[quad], lane, &x[..n])
                                }
                                QuantizedBlocks::Q8_0(q) => {
                                    ggml_arithmetic::dot_q8_0_quads_avx2(&q[quad], lane, &x[..n])
                                }
                                QuantizedBlocks::Q4_0(_) => return,
                            }
                        };
                    }
                });
            return true;
        }
        let task_rows = if tokens == 1 { 64 } else { 8 };
        // Each task: its rows times every token, `[row][token]`; scattered into `out` below.
        let parts: Vec<Vec<f32>> = (0..self.rows.div_ceil(task_rows))
            .into_par_iter()
            .map_init(WeightRow::default, |row, task| {
                let first = task * task_rows;
                let count = task_rows.min(self.rows - first);
                let mut part = Vec::with_capacity(count * tokens);
                for r in first..first + count {
                    let dot: fn(&WeightRow, &[Q8Block]) -> f32 = match &self.blocks {
                        QuantizedBlocks::Q4_1(q) => {
                            row.set_q4_1(row_blocks(q, n, r));
                            ggml_arithmetic::dot_q4_1
                        }
                        QuantizedBlocks::Q8_0(q) => {
                            row.set_q8_0(row_blocks(q, n, r));
                            ggml_arithmetic::dot_q8_0
                        }
                        QuantizedBlocks::Q4_0(_) => return part,
                    };
                    part.extend(x[..tokens * n].chunks_exact(n).map(|x| {
                        #[cfg(target_arch = "x86_64")]
                        if !scalar {
                            // SAFETY: `matmul_ggml` passes `scalar = false` only when the CPU has AVX2 and FMA.
                            return unsafe {
                                match self.blocks {
                                    QuantizedBlocks::Q8_0(_) => {
                                        ggml_arithmetic::dot_q8_0_avx2(row, x)
                                    }
                                    _ => ggml_arithmetic::dot_q4_1_avx2(row, x),
                                }
                            };
                        }
                        dot(row, x)
                    }));
                }
                part
            })
            .collect();
        for (task, part) in parts.iter().enumerate() {
            for (i, row) in part.chunks_exact(tokens).enumerate() {
                let r = task * task_rows + i;
                for (t, &v) in row.iter().enumerate() {
                    out[t * self.rows + r] = v;
                }
            }
        }
        true
    }

    fn matmul_with(&self, x: &[Q8Block], tokens: usize, out: &mut [f32], scalar: bool) {
        Self::products_with([self], x, tokens, [out], scalar, None)
    }

    /// Rows per parallel task of this matrix for `tokens` tokens; all rows when the product is too small to split.
    fn rows_per_task(&self, serial: bool) -> usize {
        if serial {
            self.rows.max(1)
        } else {
            (8192 / self.cols.max(1)).clamp(8, 256)
        }
        .next_multiple_of(QUAD)
    }

    /// `outs[i] = x · ws[i]ᵀ` for matrices of the same width sharing one quantised activation, in one parallel
    /// pass over all their rows (one fork-join instead of one per matrix). Each element is the one
    /// [`QuantizedMatrix::matmul`] computes.
    pub fn matmul_each<const N: usize>(
        ws: [&QuantizedMatrix; N],
        x: &[Q8Block],
        tokens: usize,
        outs: [&mut [f32]; N],
    ) {
        Self::products_with(ws, x, tokens, outs, false, None)
    }

    /// SwiGLU in one parallel pass: `gate_out = silu(x · gateᵀ) * (x · upᵀ)`, each task computing its rows of
    /// both products and combining them while they are in cache. `up_out` (same size) holds the up product.
    /// Each element is `silu(g) * u` of what [`QuantizedMatrix::matmul`] computes for `g` and `u`.
    pub fn matmul_swiglu(
        gate: &QuantizedMatrix,
        up: &QuantizedMatrix,
        x: &[Q8Block],
        tokens: usize,
        gate_out: &mut [f32],
        up_out: &mut [f32],
    ) {
        assert_eq!(
            (gate.rows, gate.cols),
            (up.rows, up.cols),
            "gate and up have one shape"
        );
        Self::products_with(
            [gate, up],
            x,
            tokens,
            [gate_out, up_out],
            false,
            Some(silu_product),
        )
    }

    /// The products of [`QuantizedMatrix::matmul_each`]; with `combine`, the matrices have one shape and tasks
    /// take the same rows of all of them, then call `combine(outs, first_row, row_count)` for those rows.
    fn products_with<const N: usize>(
        ws: [&QuantizedMatrix; N],
        x: &[Q8Block],
        tokens: usize,
        outs: [&mut [f32]; N],
        scalar: bool,
        combine: Option<Combine<N>>,
    ) {
        let n = ws.first().map_or(0, |w| w.blocks_per_row());
        assert!(
            ws.iter().all(|w| w.blocks_per_row() == n),
            "the matrices share the activations' width"
        );
        assert_eq!(x.len(), tokens * n, "activations are [tokens, cols / 32]");
        // Below this much work a second thread costs more than it saves (bench/kernels: a 192x576 Q4_0/Q8_0
        // GEMV took 10 us on one thread and 13 us on two), so small products stay on the calling thread.
        const PARALLEL_MIN_MACS: usize = 128 * 1024;
        let total_macs: usize = ws.iter().map(|w| w.rows * w.cols * tokens).sum();
        let serial = total_macs < PARALLEL_MIN_MACS;
        let mut i = 0;
        let outs: [ProductOut; N] = outs.map(|out| {
            let product = ProductOut::new(out, ws[i].rows, tokens);
            i += 1;
            product
        });
        let rows_per_task = ws.map(|w| w.rows_per_task(serial));
        let mut m = 0;
        let task_counts = ws.map(|w| {
            let count = w.rows.div_ceil(rows_per_task[m]);
            m += 1;
            count
        });
        let (tasks, task_matrices) = match combine {
            // Every task covers the same rows of all matrices.
            Some(_) => (task_counts[0], 1),
            None => (task_counts.iter().sum(), N),
        };
        let run = |mut task: usize| {
            let mut m = 0;
            while m + 1 < task_matrices && task >= task_counts[m] {
                task -= task_counts[m];
                m += 1;
            }
            let first = task * rows_per_task[m];
            let count = rows_per_task[m].min(ws[m].rows - first);
            match combine {
                Some(combine) => {
                    for (w, out) in ws.iter().zip(&outs) {
                        w.row_range(x, tokens, out, first, count, scalar);
                    }
                    combine(&outs, tokens, first, count);
                }
                None => ws[m].row_range(x, tokens, &outs[m], first, count, scalar),
            }
        };
        if serial || tasks <= 1 {
            (0..tasks).for_each(run);
        } else {
            (0..tasks).into_par_iter().for_each(run);
        }
    }
}

/// Combines rows `first..first + count` of every token (`tokens`) of several products.
type Combine<const N: usize> = fn(&[ProductOut; N], usize, usize, usize);

/// `outs[0] = silu(outs[0]) * outs[1]` on rows `first..first + count` of every token.
fn silu_product<const N: usize>(outs: &[ProductOut; N], tokens: usize, first: usize, count: usize) {
    for t in 0..tokens {
        // SAFETY: the calling task owns these rows of both outputs.
        let (gate, up) = unsafe {
            (
                outs[0].token_rows(t, first, count),
                outs[1].token_rows(t, first, count),
            )
        };
        silu_times(gate, up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;
    use seedinfer_formats::quantize_row;

    fn matrix(tensor_type: TensorType, rows: usize, cols: usize) -> (QuantizedMatrix, Vec<f32>) {
        let w = values(rows * cols, rows as u32 * 31 + cols as u32);
        let mut bytes = Vec::new();
        quantize_row(tensor_type, &w, &mut bytes).expect("quantizes");
        let m = QuantizedMatrix::from_bytes(tensor_type, rows, cols, &bytes).expect("matrix");
        let mut dequantized = vec![0.0; rows * cols];
        for r in 0..rows {
            m.dequantize_row(r, &mut dequantized[r * cols..(r + 1) * cols]);
        }
        (m, dequantized)
    }

    #[test]
    fn ggml_product_is_the_same_with_avx2_and_scalar_and_close_to_ours() {
        for (tensor_type, (rows, cols, tokens)) in [TensorType::Q4_1, TensorType::Q8_0]
            .into_iter()
            .flat_map(|t| [(t, (37, 96, 1)), (t, (13, 1536, 7))])
        {
            let (m, _) = matrix(tensor_type, rows, cols);
            let x = values(tokens * cols, 9);
            let mut q = Vec::new();
            quantize_activations(&x, &mut q);
            let (mut ggml, mut scalar, mut ours) = (
                vec![0.0; tokens * rows],
                vec![0.0; tokens * rows],
                vec![0.0; tokens * rows],
            );
            assert!(m.matmul_ggml(&q, tokens, &mut ggml));
            assert!(m.matmul_ggml_scalar(&q, tokens, &mut scalar));
            m.matmul(&q, tokens, &mut ours);
            assert_eq!(
                ggml.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                scalar.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{tensor_type:?}"
            );
            for (a, b) in ggml.iter().zip(&ours) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{tensor_type:?}: {a} vs {b}"
                );
            }
        }
        let (m, _) = matrix(TensorType::Q4_0, 4, 32);
        assert!(
            !m.matmul_ggml(&[Q8Block::default()], 1, &mut [0.0; 4]),
            "llama.cpp repacks Q4_0"
        );
    }

    #[test]
    fn a_token_in_a_batch_gets_exactly_its_single_token_result() {
        // The second shape's prompt spans several token chunks of the GEMM (its activations exceed one chunk).
        for (tensor_type, (rows, cols, tokens)) in
            [TensorType::Q4_0, TensorType::Q4_1, TensorType::Q8_0]
                .into_iter()
                .flat_map(|t| [(t, (37, 96, 11)), (t, (13, 1536, 150))])
        {
            let (m, _) = matrix(tensor_type, rows, cols);
            let x = values(tokens * cols, 5);
            let mut q = Vec::new();
            quantize_activations(&x, &mut q);
            let mut batch = vec![0.0; tokens * rows];
            m.matmul(&q, tokens, &mut batch);
            let n = cols / BLOCK;
            for t in 0..tokens {
                let mut single = vec![0.0; rows];
                m.matmul(&q[t * n..(t + 1) * n], 1, &mut single);
                assert_eq!(
                    &batch[t * rows..(t + 1) * rows],
                    single.as_slice(),
                    "{tensor_type:?} token {t}"
                );
            }
        }
    }

    #[test]
    fn one_pass_products_equal_separate_products_bit_for_bit() {
        // Small (one serial pass) and large (parallel tasks across matrices) shapes, one and several tokens.
        for tensor_type in [TensorType::Q4_0, TensorType::Q4_1, TensorType::Q8_0] {
            for (rows, cols, tokens) in [(8, 64, 1), (576, 576, 1), (100, 576, 7), (1536, 576, 3)] {
                let (q, _) = matrix(tensor_type, rows, cols);
                let (k, _) = matrix(tensor_type, rows / 4 + 4, cols);
                let (v, _) = matrix(tensor_type, rows / 4 + 4, cols);
                let (up, _) = matrix(tensor_type, rows + 1, cols);
                let gate = {
                    let (m, d) = matrix(tensor_type, rows + 1, cols);
                    // A different matrix of the same shape: shift the values.
                    let mut bytes = Vec::new();
                    let shifted: Vec<f32> = d.iter().map(|v| v * -1.5 + 0.01).collect();
                    quantize_row(tensor_type, &shifted, &mut bytes).expect("quantizes");
                    QuantizedMatrix::from_bytes(tensor_type, m.rows, m.cols, &bytes)
                        .expect("matrix")
                };
                let x = values(tokens * cols, 7);
                let mut a = Vec::new();
                quantize_activations(&x, &mut a);
                let separate = |m: &QuantizedMatrix| {
                    let mut out = vec![0.0; tokens * m.rows];
                    m.matmul(&a, tokens, &mut out);
                    out
                };
                let (mut oq, mut ok, mut ov) = (
                    vec![0.0; tokens * q.rows],
                    vec![0.0; tokens * k.rows],
                    vec![0.0; tokens * v.rows],
                );
                QuantizedMatrix::matmul_each([&q, &k, &v], &a, tokens, [&mut oq, &mut ok, &mut ov]);
                assert_eq!(oq, separate(&q), "{tensor_type:?} {rows}x{cols}x{tokens} q");
                assert_eq!(ok, separate(&k), "{tensor_type:?} {rows}x{cols}x{tokens} k");
                assert_eq!(ov, separate(&v), "{tensor_type:?} {rows}x{cols}x{tokens} v");

                let (mut g, mut u) = (vec![0.0; tokens * gate.rows], vec![0.0; tokens * up.rows]);
                QuantizedMatrix::matmul_swiglu(&gate, &up, &a, tokens, &mut g, &mut u);
                let expected: Vec<f32> = separate(&gate)
                    .iter()
                    .zip(separate(&up))
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                assert_eq!(g, expected, "{tensor_type:?} {rows}x{cols}x{tokens} swiglu");
            }
        }
    }

    #[test]
    fn vector_activation_quantisation_is_bit_for_bit_the_scalar_one() {
        let mut x = values(32 * 40, 11);
        // Exact halves of a quantisation step, which must round to even, and an all-zero block.
        x[..32]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i as f32 - 15.5) * 127.0 / 16.5);
        x[32..64].fill(0.0);
        let (mut fast, mut reference) = (Vec::new(), Vec::new());
        quantize_activations(&x, &mut fast);
        quantize_activations_scalar(&x, &mut reference);
        assert_eq!(fast, reference);
    }

    #[test]
    fn activation_quantisation_rounds_like_llama_cpp() {
        let x = values(64, 3);
        let mut q = Vec::new();
        quantize_activations(&x, &mut q);
        for (block, xs) in q.iter().zip(x.chunks(32)) {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(block.d, f16::from_f32(amax / 127.0).to_f32());
            assert_eq!(block.qs.iter().map(|v| v.unsigned_abs()).max(), Some(127));
            for (q, v) in block.qs.iter().zip(xs) {
                assert!((*q as f32 * block.d - v).abs() <= block.d * 0.51 + 1e-3);
            }
        }
    }

    #[test]
    fn simd_kernels_equal_the_scalar_reference_and_approximate_f32() {
        for tensor_type in [TensorType::Q4_0, TensorType::Q4_1, TensorType::Q8_0] {
            for (rows, cols, tokens) in [
                (1, 32, 1),
                (7, 64, 1),
                (33, 96, 3),
                (300, 576, 1),
                (40, 1536, 5),
            ] {
                let (m, dequantized) = matrix(tensor_type, rows, cols);
                let x = values(tokens * cols, 99);
                let mut q = Vec::new();
                quantize_activations(&x, &mut q);
                let (mut fast, mut reference) =
                    (vec![0.0; tokens * rows], vec![0.0; tokens * rows]);
                m.matmul(&q, tokens, &mut fast);
                m.matmul_scalar(&q, tokens, &mut reference);
                for t in 0..tokens {
                    for r in 0..rows {
                        let (f, s) = (fast[t * rows + r], reference[t * rows + r]);
                        assert!(
                            (f - s).abs() <= 1e-4 * s.abs().max(1.0),
                            "{tensor_type:?} {rows}x{cols}: {f} vs {s}"
                        );
                        let exact: f32 = dequantized[r * cols..(r + 1) * cols]
                            .iter()
                            .zip(&x[t * cols..(t + 1) * cols])
                            .map(|(a, b)| a * b)
                            .sum();
                        let scale: f32 = x[t * cols..(t + 1) * cols]
                            .iter()
                            .map(|v| v.abs())
                            .sum::<f32>()
                            * 2.0;
                        assert!(
                            (s - exact).abs() <= 0.02 * scale,
                            "{tensor_type:?}: {s} vs f32 {exact}"
                        );
                    }
                }
            }
        }
    }
}
