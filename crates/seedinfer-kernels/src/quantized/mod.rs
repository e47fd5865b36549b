//! Block-quantised weights (GGUF Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, IQ4_XS and the K-quants Q2_K .. Q6_K kept as stored,
//! their blocks reordered into row quads) multiplied with activations quantised to int8 — per 32 values, or per
//! 256 for the K-quants — the way llama.cpp computes them.
//!
//! One file per weight format (`q4_0.rs`, ...) implements [`QuadFormat`]: its row quad, its scalar reference dot
//! product and its kernel per instruction set (the SIMD bodies live in the instruction set's folder,
//! `x86_avx2/quads.rs`). Everything else is shared, here, by every format: the one table from tensor type to
//! format ([`QuantizedMatrix::from_bytes`]), the row split into parallel tasks, the fused multi-matrix and SwiGLU
//! passes, and llama.cpp's bit-exact products where a format has them.

mod iq4_nl;
mod iq4_xs;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
pub mod row_quads;

pub use crate::q8_block::{quantize_activations, quantize_activations_scalar, Q8Block, BLOCK};
pub use crate::q8k_block::{quantize_activations_k, Q8KBlock, SUPER_BLOCK};
pub use iq4_nl::QuadIq4Nl;
pub use iq4_xs::QuadIq4Xs;
pub use q2_k::QuadQ2_K;
pub use q3_k::QuadQ3_K;
pub use q4_0::QuadQ4_0;
pub use q4_1::QuadQ4_1;
pub use q4_k::QuadQ4_K;
pub use q5_0::QuadQ5_0;
pub use q5_1::QuadQ5_1;
pub use q5_k::QuadQ5_K;
pub use q6_k::QuadQ6_K;
pub use q8_0::QuadQ8_0;

use crate::activation::GatedActivation;
use crate::ggml_arithmetic::WeightRow;
use crate::isa::{detected, Isa};
use crate::row_blocks::ProductOut;
use rayon::prelude::*;
use row_quads::{interleave, row_blocks, RowQuad, QUAD};
use seedinfer_formats::{BlockCodec, TensorType};

/// The int8 activations a format's dot product reads. Q8_0 and Q8_1 are both [`Q8Block`]s (the `s`, scale × sum,
/// they carry is what the formats with a minimum multiply it with); Q8_K is [`Q8KBlock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activations {
    /// ggml's Q8_0: scale and int8 values (Q4_0, Q5_0, Q8_0).
    Q8_0,
    /// ggml's Q8_1: Q8_0 plus the block's scaled sum (Q4_1, Q5_1).
    Q8_1,
    /// ggml's Q8_K: 256 int8 values, an f32 scale and sums of 16 (Q4_K, Q5_K, Q6_K).
    Q8K,
}

/// One product input quantised in the forms its matrices read: 32-element blocks for the Q4_0 .. Q8_0 formats,
/// 256-element super-blocks for the K-quants. A form no matrix of the product reads may be empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct Input<'a> {
    pub q8: &'a [Q8Block],
    pub q8k: &'a [Q8KBlock],
}

impl<'a> From<&'a [Q8Block]> for Input<'a> {
    fn from(q8: &'a [Q8Block]) -> Self {
        Self { q8, q8k: &[] }
    }
}

impl<'a> From<&'a Vec<Q8Block>> for Input<'a> {
    fn from(q8: &'a Vec<Q8Block>) -> Self {
        Self { q8, q8k: &[] }
    }
}

impl<'a> From<&'a [Q8KBlock]> for Input<'a> {
    fn from(q8k: &'a [Q8KBlock]) -> Self {
        Self { q8: &[], q8k }
    }
}

impl<'a> From<&'a Vec<Q8KBlock>> for Input<'a> {
    fn from(q8k: &'a Vec<Q8KBlock>) -> Self {
        Self { q8: &[], q8k }
    }
}

/// The owned activations of an [`Input`], reused across products.
#[derive(Default)]
pub struct QuantizedInput {
    pub q8: Vec<Q8Block>,
    pub q8k: Vec<Q8KBlock>,
}

impl QuantizedInput {
    /// Quantises `input` into the forms `matrices` read (only those).
    pub fn quantize<'m>(
        &mut self,
        input: &[f32],
        matrices: impl IntoIterator<Item = &'m QuantizedMatrix>,
    ) {
        let (mut blocks, mut super_blocks) = (false, false);
        for m in matrices {
            match m.activations() {
                Activations::Q8K => super_blocks = true,
                Activations::Q8_0 | Activations::Q8_1 => blocks = true,
            }
        }
        if blocks {
            quantize_activations(input, &mut self.q8);
        }
        if super_blocks {
            quantize_activations_k(input, &mut self.q8k);
        }
    }

    pub fn as_input(&self) -> Input<'_> {
        Input {
            q8: &self.q8,
            q8k: &self.q8k,
        }
    }
}

/// An activation block type, and where an [`Input`] holds it.
pub trait ActivationBlock: Copy + Send + Sync + 'static {
    fn of<'a>(input: &Input<'a>) -> &'a [Self];
}

impl ActivationBlock for Q8Block {
    fn of<'a>(input: &Input<'a>) -> &'a [Self] {
        input.q8
    }
}

impl ActivationBlock for Q8KBlock {
    fn of<'a>(input: &Input<'a>) -> &'a [Self] {
        input.q8k
    }
}

/// Rows `first_row..first_row + row_count` (`first_row` a multiple of 4, `quads` starting at its quad, `n` blocks a
/// row) times every token of `x` (`tokens * n` blocks) into `out`.
///
/// # Safety
/// The kernel's instruction set must be one this machine has; the sizes must be as described.
pub type QuadKernel<Q> = unsafe fn(
    quads: &[Q],
    n: usize,
    x: &[<Q as QuadFormat>::Input],
    tokens: usize,
    out: &ProductOut,
    first_row: usize,
    row_count: usize,
);

/// llama.cpp's own dot product for a format (`ggml_vec_dot_*` of its AVX2 build), for `numerics: 'llamacpp'`.
pub struct GgmlDots<Q> {
    /// Unpacks row `lane` of a row of quads (`n` of them) into the form the dot products read.
    pub unpack: fn(&mut WeightRow, &[Q], usize),
    /// The scalar reference of `dot_avx2`.
    pub dot: fn(&WeightRow, &[Q8Block]) -> f32,
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    pub dot_avx2: unsafe fn(&WeightRow, &[Q8Block]) -> f32,
    /// `dot_avx2` reading row `lane` of the quads in place (single tokens: no unpacking).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    pub dot_in_place_avx2: unsafe fn(&[Q], usize, &[Q8Block]) -> f32,
}

/// A block-quantised weight format as the products read it. Implemented once per format, in its own file.
pub trait QuadFormat: RowQuad<Block: BlockCodec> + 'static {
    /// The activations its dot product pairs with.
    const ACTIVATIONS: Activations;
    /// Their block type ([`Q8Block`] for Q8_0 and Q8_1, [`Q8KBlock`] for Q8_K).
    type Input: ActivationBlock;
    /// The scalar reference: one row's blocks times one token's activation blocks (the oracle of every kernel).
    fn dot_scalar(row: impl Iterator<Item = Self::Block>, x: &[Self::Input]) -> f32;
    /// Whether every scale (and minimum) of the quad is a finite number; a corrupt file may hold NaN or infinity.
    fn scales_are_finite(&self) -> bool;
    /// The SIMD kernel for `isa`, or `None` where it has none (the scalar reference runs).
    fn kernel(isa: Isa) -> Option<(Isa, QuadKernel<Self>)>;
    /// llama.cpp's arithmetic, for the formats `numerics: 'llamacpp'` reproduces.
    fn ggml() -> Option<GgmlDots<Self>> {
        None
    }
}

/// The scalar reference's term for one super-block whose weights are `d * s_j * w_i` with signed integer weights
/// `w` and signed sub-block scales `s` in sub-blocks of `SUB` (Q3_K, Q6_K, IQ4_XS): `d_x * d * Σ_j s_j (w · x)_j`,
/// the integer sums exact.
pub(super) fn signed_sub_blocks_term<const SUB: usize>(
    a: &Q8KBlock,
    d: f32,
    scale: impl Fn(usize) -> i32,
    weight: impl Fn(usize) -> i32,
) -> f32 {
    let mut sums = 0i32;
    for j in 0..SUPER_BLOCK / SUB {
        let sub: i32 = (SUB * j..SUB * j + SUB)
            .map(|i| weight(i) * a.qs[i] as i32)
            .sum();
        sums += scale(j) * sub;
    }
    a.d * d * sums as f32
}

/// The scalar reference kernel of any format (same contract as [`QuadKernel`]).
fn quads_scalar<Q: QuadFormat>(
    quads: &[Q],
    n: usize,
    x: &[Q::Input],
    tokens: usize,
    out: &ProductOut,
    first_row: usize,
    row_count: usize,
) {
    for r in 0..row_count {
        for t in 0..tokens {
            let value = Q::dot_scalar(row_blocks(quads, n, r), &x[t * n..(t + 1) * n]);
            // SAFETY: the caller gives this task the rows `first_row..first_row + row_count` of `out`.
            unsafe { out.write(first_row + r, t, value) };
        }
    }
}

/// What the shared product code needs of a matrix, whatever its format (one trait object per matrix: the
/// dispatch is per matrix and task, never per block).
trait QuadRows: Send + Sync {
    fn tensor_type(&self) -> TensorType;
    fn activations(&self) -> Activations;
    fn resident_bytes(&self) -> usize;
    fn scales_are_finite(&self) -> bool;
    /// Weights per block.
    fn block_elements(&self) -> usize;
    fn dequantize_row(&self, n: usize, row: usize, out: &mut [f32]);
    /// [`QuadKernel`]'s product for rows `first..first + count` with the kernel of `isa` (one the machine has).
    #[allow(clippy::too_many_arguments)]
    fn row_range(
        &self,
        n: usize,
        x: Input<'_>,
        tokens: usize,
        out: &ProductOut,
        first: usize,
        count: usize,
        isa: Isa,
    );
    /// The instruction set [`QuadRows::row_range`] runs with when asked for `isa`.
    fn kernel_isa(&self, isa: Isa) -> Isa;
    /// llama.cpp's product (see [`QuantizedMatrix::matmul_ggml`]); `false` if the format has none.
    fn ggml_product(
        &self,
        rows: usize,
        n: usize,
        x: &[Q8Block],
        tokens: usize,
        out: &mut [f32],
        isa: Isa,
    ) -> bool;
}

/// A matrix of one format: its rows interleaved in quads.
struct Quads<Q>(Vec<Q>);

impl<Q: QuadFormat> QuadRows for Quads<Q> {
    fn tensor_type(&self) -> TensorType {
        Q::Block::TENSOR_TYPE
    }

    fn activations(&self) -> Activations {
        Q::ACTIVATIONS
    }

    fn resident_bytes(&self) -> usize {
        std::mem::size_of_val(self.0.as_slice())
    }

    fn scales_are_finite(&self) -> bool {
        self.0.iter().all(Q::scales_are_finite)
    }

    fn block_elements(&self) -> usize {
        Q::Block::ELEMENTS
    }

    fn dequantize_row(&self, n: usize, row: usize, out: &mut [f32]) {
        let elements = Q::Block::ELEMENTS;
        for (block, out) in row_blocks(&self.0, n, row).zip(out.chunks_exact_mut(elements)) {
            block.dequantize(out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn row_range(
        &self,
        n: usize,
        x: Input<'_>,
        tokens: usize,
        out: &ProductOut,
        first: usize,
        count: usize,
        isa: Isa,
    ) {
        let x = Q::Input::of(&x);
        let quads = &self.0[first / QUAD * n..(first + count).div_ceil(QUAD) * n];
        match Q::kernel(isa) {
            // SAFETY: callers pass an `isa` from `Isa::usable`, which this machine has; the product set-up
            // (`QuantizedMatrix::products_with`) checked the sizes of `x` and `out`.
            Some((_, kernel)) => unsafe { kernel(quads, n, x, tokens, out, first, count) },
            None => quads_scalar(quads, n, x, tokens, out, first, count),
        }
    }

    fn kernel_isa(&self, isa: Isa) -> Isa {
        Q::kernel(isa).map_or(Isa::Scalar, |(written_for, _)| written_for)
    }

    fn ggml_product(
        &self,
        rows: usize,
        n: usize,
        x: &[Q8Block],
        tokens: usize,
        out: &mut [f32],
        isa: Isa,
    ) -> bool {
        let Some(dots) = Q::ggml() else {
            return false;
        };
        assert!(x.len() >= tokens * n && out.len() >= tokens * rows);
        let quads_of = |r: usize| &self.0[r / QUAD * n..(r / QUAD + 1) * n];
        #[cfg(target_arch = "x86_64")]
        if tokens == 1 && isa.has_avx2() {
            // One token: each row is read once, so it is read in place rather than unpacked first.
            out[..rows]
                .par_chunks_mut(64)
                .enumerate()
                .for_each(|(task, out)| {
                    for (i, o) in out.iter_mut().enumerate() {
                        let r = 64 * task + i;
                        // SAFETY: `isa` comes from `Isa::usable`, so the CPU has AVX2, FMA and F16C.
                        *o = unsafe { (dots.dot_in_place_avx2)(quads_of(r), r % QUAD, &x[..n]) };
                    }
                });
            return true;
        }
        let task_rows = if tokens == 1 { 64 } else { 8 };
        // Each task: its rows times every token, `[row][token]`; scattered into `out` below.
        let parts: Vec<Vec<f32>> = (0..rows.div_ceil(task_rows))
            .into_par_iter()
            .map_init(WeightRow::default, |row, task| {
                let first = task * task_rows;
                let count = task_rows.min(rows - first);
                let mut part = Vec::with_capacity(count * tokens);
                for r in first..first + count {
                    (dots.unpack)(row, quads_of(r), r % QUAD);
                    part.extend(x[..tokens * n].chunks_exact(n).map(|x| {
                        #[cfg(target_arch = "x86_64")]
                        if isa.has_avx2() {
                            // SAFETY: `isa` comes from `Isa::usable`, so the CPU has AVX2, FMA and F16C.
                            return unsafe { (dots.dot_avx2)(row, x) };
                        }
                        (dots.dot)(row, x)
                    }));
                }
                part
            })
            .collect();
        for (task, part) in parts.iter().enumerate() {
            for (i, row) in part.chunks_exact(tokens).enumerate() {
                let r = task * task_rows + i;
                for (t, &v) in row.iter().enumerate() {
                    out[t * rows + r] = v;
                }
            }
        }
        true
    }
}

impl<Q: QuadFormat> Quads<Q> {
    fn boxed(bytes: &[u8], rows: usize, n: usize) -> Box<dyn QuadRows> {
        Box::new(Quads::<Q>(interleave(bytes, rows, n)))
    }
}

pub struct QuantizedMatrix {
    pub rows: usize,
    pub cols: usize,
    quads: Box<dyn QuadRows>,
}

impl QuantizedMatrix {
    /// Takes a GGUF tensor's bytes (rows of blocks) and interleaves them into row quads; `None` when the type is
    /// not one of the block formats here or the sizes disagree. The one table from tensor type to format.
    pub fn from_bytes(
        tensor_type: TensorType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Option<Self> {
        let elements = tensor_type.block_elements();
        if !cols.is_multiple_of(elements)
            || bytes.len() != tensor_type.row_bytes(cols).ok()?.checked_mul(rows)?
        {
            return None;
        }
        let n = cols / elements;
        let quads = match tensor_type {
            TensorType::Q4_0 => Quads::<QuadQ4_0>::boxed(bytes, rows, n),
            TensorType::Q4_1 => Quads::<QuadQ4_1>::boxed(bytes, rows, n),
            TensorType::Q5_0 => Quads::<QuadQ5_0>::boxed(bytes, rows, n),
            TensorType::Q5_1 => Quads::<QuadQ5_1>::boxed(bytes, rows, n),
            TensorType::Q8_0 => Quads::<QuadQ8_0>::boxed(bytes, rows, n),
            TensorType::Q2_K => Quads::<QuadQ2_K>::boxed(bytes, rows, n),
            TensorType::Q3_K => Quads::<QuadQ3_K>::boxed(bytes, rows, n),
            TensorType::Q4_K => Quads::<QuadQ4_K>::boxed(bytes, rows, n),
            TensorType::Q5_K => Quads::<QuadQ5_K>::boxed(bytes, rows, n),
            TensorType::Q6_K => Quads::<QuadQ6_K>::boxed(bytes, rows, n),
            TensorType::IQ4_NL => Quads::<QuadIq4Nl>::boxed(bytes, rows, n),
            TensorType::IQ4_XS => Quads::<QuadIq4Xs>::boxed(bytes, rows, n),
            _ => return None,
        };
        Some(Self { rows, cols, quads })
    }

    pub fn tensor_type(&self) -> TensorType {
        self.quads.tensor_type()
    }

    /// The int8 activations this matrix's products read.
    pub fn activations(&self) -> Activations {
        self.quads.activations()
    }

    /// The instruction set this matrix's products run with on this machine.
    pub fn kernel_isa(&self) -> Isa {
        self.quads.kernel_isa(detected())
    }

    /// The instruction set this matrix's products run with when `isa` is asked for ([`Self::matmul_with`]).
    pub fn kernel_isa_with(&self, isa: Isa) -> Isa {
        self.quads.kernel_isa(isa.usable())
    }

    pub fn resident_bytes(&self) -> usize {
        self.quads.resident_bytes()
    }

    /// Whether every block scale (and minimum) is a finite number; a corrupt file may hold NaN or infinity.
    pub fn scales_are_finite(&self) -> bool {
        self.quads.scales_are_finite()
    }

    /// Blocks (or K-quant super-blocks) per row.
    fn blocks_per_row(&self) -> usize {
        self.cols / self.quads.block_elements()
    }

    /// Whether `x` holds the activations of `tokens` tokens in the form this matrix reads.
    fn reads(&self, x: &Input<'_>, tokens: usize) -> bool {
        match self.activations() {
            Activations::Q8K => x.q8k.len() == tokens * self.cols / SUPER_BLOCK,
            Activations::Q8_0 | Activations::Q8_1 => x.q8.len() == tokens * self.cols / BLOCK,
        }
    }

    /// Row `row` as f32 (an embedding lookup).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        self.quads.dequantize_row(self.blocks_per_row(), row, out)
    }

    /// `out[t][r] = dot(row r, activations of token t)` for `tokens` quantised activation rows (in the form
    /// [`QuantizedMatrix::activations`] says).
    pub fn matmul<'a>(&self, x: impl Into<Input<'a>>, tokens: usize, out: &mut [f32]) {
        self.matmul_with(detected(), x, tokens, out)
    }

    /// [`QuantizedMatrix::matmul`] with the kernels of `isa` (or the widest this machine has below it; the scalar
    /// reference with `Isa::Scalar`).
    pub fn matmul_with<'a>(
        &self,
        isa: Isa,
        x: impl Into<Input<'a>>,
        tokens: usize,
        out: &mut [f32],
    ) {
        Self::products_with([self], x.into(), tokens, [out], isa.usable(), None)
    }

    /// The product llama.cpp computes for these weights (`ggml_vec_dot_q4_1_q8_1` or `ggml_vec_dot_q8_0_q8_0` for
    /// every row and token, see [`crate::ggml_arithmetic`]): `out[t][r]`. Slower than [`QuantizedMatrix::matmul`],
    /// and the same bits as llama.cpp's rather than ours. `false` (and nothing written) for the formats whose
    /// llama.cpp arithmetic is not reproduced (Q4_0, which llama.cpp repacks; Q5_0, Q5_1).
    pub fn matmul_ggml(&self, x: &[Q8Block], tokens: usize, out: &mut [f32]) -> bool {
        self.matmul_ggml_with(detected(), x, tokens, out)
    }

    /// [`QuantizedMatrix::matmul_ggml`] with the dot products of `isa` (the scalar reference with `Isa::Scalar`).
    pub fn matmul_ggml_with(
        &self,
        isa: Isa,
        x: &[Q8Block],
        tokens: usize,
        out: &mut [f32],
    ) -> bool {
        if self.activations() == Activations::Q8K {
            return false;
        }
        let n = self.blocks_per_row();
        self.quads
            .ggml_product(self.rows, n, x, tokens, out, isa.usable())
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
    pub fn matmul_each<'a, const N: usize>(
        ws: [&QuantizedMatrix; N],
        x: impl Into<Input<'a>>,
        tokens: usize,
        outs: [&mut [f32]; N],
    ) {
        Self::products_with(ws, x.into(), tokens, outs, detected(), None)
    }

    /// A gated MLP's input in one parallel pass: `gate_out = act(x · gateᵀ) * (x · upᵀ)`, each task computing its
    /// rows of both products and combining them while they are in cache. `up_out` (same size) holds the up
    /// product. Each element is `act(g) * u` of what [`QuantizedMatrix::matmul`] computes for `g` and `u`.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_gated<'a>(
        gate: &QuantizedMatrix,
        up: &QuantizedMatrix,
        activation: GatedActivation,
        x: impl Into<Input<'a>>,
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
            x.into(),
            tokens,
            [gate_out, up_out],
            detected(),
            Some(activation),
        )
    }

    /// The products of [`QuantizedMatrix::matmul_each`]; with `gated`, the matrices (gate and up) have one shape
    /// and tasks take the same rows of both, then apply the activation to those rows ([`gated_product`]).
    fn products_with<const N: usize>(
        ws: [&QuantizedMatrix; N],
        x: Input<'_>,
        tokens: usize,
        outs: [&mut [f32]; N],
        isa: Isa,
        gated: Option<GatedActivation>,
    ) {
        let cols = ws.first().map_or(0, |w| w.cols);
        assert!(
            ws.iter().all(|w| w.cols == cols),
            "the matrices share the activations' width"
        );
        assert!(
            ws.iter().all(|w| w.reads(&x, tokens)),
            "activations are [tokens, cols / block] in each matrix's form"
        );
        let n = ws.map(|w| w.blocks_per_row());
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
        let (tasks, task_matrices) = match gated {
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
            match gated {
                Some(activation) => {
                    for ((w, out), n) in ws.iter().zip(&outs).zip(n) {
                        w.quads.row_range(n, x, tokens, out, first, count, isa);
                    }
                    gated_product(&outs, activation, tokens, first, count);
                }
                None => ws[m]
                    .quads
                    .row_range(n[m], x, tokens, &outs[m], first, count, isa),
            }
        };
        if serial || tasks <= 1 {
            (0..tasks).for_each(run);
        } else {
            (0..tasks).into_par_iter().for_each(run);
        }
    }
}

/// `outs[0] = act(outs[0]) * outs[1]` on rows `first..first + count` of every token.
fn gated_product<const N: usize>(
    outs: &[ProductOut; N],
    activation: GatedActivation,
    tokens: usize,
    first: usize,
    count: usize,
) {
    for t in 0..tokens {
        // SAFETY: the calling task owns these rows of both outputs.
        let (gate, up) = unsafe {
            (
                outs[0].token_rows(t, first, count),
                outs[1].token_rows(t, first, count),
            )
        };
        activation.apply(gate, up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;
    use seedinfer_formats::blocks::{block_scale_offsets, K_QUANT_TYPES};
    use seedinfer_formats::quantize_row;

    const ALL_FORMATS: [TensorType; 12] = [
        TensorType::Q4_0,
        TensorType::Q4_1,
        TensorType::Q5_0,
        TensorType::Q5_1,
        TensorType::Q8_0,
        TensorType::Q2_K,
        TensorType::Q3_K,
        TensorType::Q4_K,
        TensorType::Q5_K,
        TensorType::Q6_K,
        TensorType::IQ4_NL,
        TensorType::IQ4_XS,
    ];

    /// `cols` rounded up to whole blocks of `tensor_type` (the K-quants' super-blocks are 256 wide).
    fn width(tensor_type: TensorType, cols: usize) -> usize {
        cols.next_multiple_of(tensor_type.block_elements())
    }

    /// K-quant (or IQ4_NL) rows of random bytes (every bit pattern of weights, scales and minimums is a valid
    /// block) with random finite block scales of either sign.
    fn random_k_quant_bytes(
        tensor_type: TensorType,
        rows: usize,
        cols: usize,
        seed: u32,
    ) -> Vec<u8> {
        let size = tensor_type.row_bytes(cols).expect("whole super-blocks") * rows;
        let noise = values(size, seed);
        let mut bytes: Vec<u8> = noise.iter().map(|v| (v.to_bits() >> 7) as u8).collect();
        let scales = values(2 * size / tensor_type.block_bytes(), seed + 1);
        for (block, scale) in bytes
            .chunks_exact_mut(tensor_type.block_bytes())
            .zip(scales.chunks_exact(2))
        {
            let f16 = |v: f32| half::f16::from_f32(v * 0.01).to_le_bytes();
            let (d_at, dmin_at) = block_scale_offsets(tensor_type).expect("a read-only type");
            block[d_at..d_at + 2].copy_from_slice(&f16(scale[0]));
            if let Some(at) = dmin_at {
                block[at..at + 2].copy_from_slice(&f16(scale[1].abs() * 0.5));
            }
        }
        bytes
    }

    fn matrix(tensor_type: TensorType, rows: usize, cols: usize) -> (QuantizedMatrix, Vec<f32>) {
        let cols = width(tensor_type, cols);
        let seed = rows as u32 * 31 + cols as u32;
        let bytes =
            if tensor_type.block_elements() == SUPER_BLOCK || tensor_type == TensorType::IQ4_NL {
                random_k_quant_bytes(tensor_type, rows, cols, seed)
            } else {
                let w = values(rows * cols, seed);
                let mut bytes = Vec::new();
                quantize_row(tensor_type, &w, &mut bytes).expect("quantizes");
                bytes
            };
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
            assert!(m.matmul_ggml_with(Isa::Scalar, &q, tokens, &mut scalar));
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
        for unreproduced in [TensorType::Q4_0, TensorType::Q5_0, TensorType::Q5_1] {
            let (m, _) = matrix(unreproduced, 4, 32);
            assert!(
                !m.matmul_ggml(&[Q8Block::default()], 1, &mut [0.0; 4]),
                "{unreproduced:?}: llama.cpp's arithmetic is not reproduced"
            );
        }
    }

    #[test]
    fn a_token_in_a_batch_gets_exactly_its_single_token_result() {
        // The second shape's prompt spans several token chunks of the GEMM (its activations exceed one chunk).
        for (tensor_type, (rows, cols, tokens)) in ALL_FORMATS.into_iter().flat_map(|t| {
            // Batches of 2, 3 and 5 tokens: the few decode steps of batched sessions (tail tiles).
            [
                (37, 96, 11),
                (13, 1536, 150),
                (9, 96, 2),
                (9, 96, 3),
                (9, 96, 5),
            ]
            .map(|s| (t, s))
        }) {
            let (m, _) = matrix(tensor_type, rows, cols);
            let cols = m.cols;
            let x = values(tokens * cols, 5);
            let mut q = QuantizedInput::default();
            q.quantize(&x, [&m]);
            let mut batch = vec![0.0; tokens * rows];
            m.matmul(q.as_input(), tokens, &mut batch);
            for t in 0..tokens {
                let mut single = vec![0.0; rows];
                let mut one = QuantizedInput::default();
                one.quantize(&x[t * cols..(t + 1) * cols], [&m]);
                m.matmul(one.as_input(), 1, &mut single);
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
        for tensor_type in ALL_FORMATS {
            for (rows, cols, tokens) in [(8, 64, 1), (576, 576, 1), (100, 576, 7), (1536, 576, 3)] {
                let cols = width(tensor_type, cols);
                let (q, _) = matrix(tensor_type, rows, cols);
                let (k, _) = matrix(tensor_type, rows / 4 + 4, cols);
                let (v, _) = matrix(tensor_type, rows / 4 + 4, cols);
                let (up, _) = matrix(tensor_type, rows + 1, cols);
                let gate = {
                    let (m, d) = matrix(tensor_type, rows + 1, cols);
                    // A different matrix of the same shape: shift the values.
                    let bytes = if tensor_type.block_elements() == SUPER_BLOCK
                        || tensor_type == TensorType::IQ4_NL
                    {
                        random_k_quant_bytes(tensor_type, m.rows, m.cols, 77)
                    } else {
                        let mut bytes = Vec::new();
                        let shifted: Vec<f32> = d.iter().map(|v| v * -1.5 + 0.01).collect();
                        quantize_row(tensor_type, &shifted, &mut bytes).expect("quantizes");
                        bytes
                    };
                    QuantizedMatrix::from_bytes(tensor_type, m.rows, m.cols, &bytes)
                        .expect("matrix")
                };
                let x = values(tokens * cols, 7);
                let mut input = QuantizedInput::default();
                input.quantize(&x, [&q]);
                let a = input.as_input();
                let separate = |m: &QuantizedMatrix| {
                    let mut out = vec![0.0; tokens * m.rows];
                    m.matmul(a, tokens, &mut out);
                    out
                };
                let (mut oq, mut ok, mut ov) = (
                    vec![0.0; tokens * q.rows],
                    vec![0.0; tokens * k.rows],
                    vec![0.0; tokens * v.rows],
                );
                QuantizedMatrix::matmul_each([&q, &k, &v], a, tokens, [&mut oq, &mut ok, &mut ov]);
                assert_eq!(oq, separate(&q), "{tensor_type:?} {rows}x{cols}x{tokens} q");
                assert_eq!(ok, separate(&k), "{tensor_type:?} {rows}x{cols}x{tokens} k");
                assert_eq!(ov, separate(&v), "{tensor_type:?} {rows}x{cols}x{tokens} v");

                for activation in [GatedActivation::Silu, GatedActivation::GeluTanh] {
                    let (mut g, mut u) =
                        (vec![0.0; tokens * gate.rows], vec![0.0; tokens * up.rows]);
                    QuantizedMatrix::matmul_gated(
                        &gate, &up, activation, a, tokens, &mut g, &mut u,
                    );
                    let mut expected = separate(&gate);
                    activation.apply(&mut expected, &separate(&up));
                    assert_eq!(
                        g, expected,
                        "{tensor_type:?} {rows}x{cols}x{tokens} {activation:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn k_quant_references_are_the_dot_products_of_the_dequantised_values() {
        // With the activations dequantised too (q * d), the only differences left are f32 roundings.
        for tensor_type in K_QUANT_TYPES.into_iter().chain([TensorType::IQ4_XS]) {
            let (rows, cols) = (9, 768);
            let (m, dequantized) = matrix(tensor_type, rows, cols);
            let x = values(2 * cols, 13);
            let mut q = QuantizedInput::default();
            q.quantize(&x, [&m]);
            let mut out = vec![0.0; 2 * rows];
            m.matmul_with(Isa::Scalar, q.as_input(), 2, &mut out);
            let activations: Vec<f64> = q
                .q8k
                .iter()
                .flat_map(|b| b.qs.iter().map(move |&v| v as f64 * b.d as f64))
                .collect();
            for t in 0..2 {
                for r in 0..rows {
                    let terms = dequantized[r * cols..(r + 1) * cols]
                        .iter()
                        .zip(&activations[t * cols..(t + 1) * cols])
                        .map(|(&w, &a)| w as f64 * a);
                    let (exact, magnitude) =
                        terms.fold((0.0, 0.0), |(s, m), v| (s + v, m + v.abs()));
                    let got = out[t * rows + r] as f64;
                    assert!(
                        (got - exact).abs() <= 1e-5 * magnitude,
                        "{tensor_type:?} row {r} token {t}: {got} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn simd_kernels_equal_the_scalar_reference_and_approximate_f32() {
        for tensor_type in ALL_FORMATS {
            for (rows, cols, tokens) in [
                (1, 32, 1),
                (7, 64, 1),
                (33, 96, 3),
                (300, 576, 1),
                (40, 1536, 5),
            ] {
                let (m, dequantized) = matrix(tensor_type, rows, cols);
                let cols = m.cols;
                let x = values(tokens * cols, 99);
                let mut q = QuantizedInput::default();
                q.quantize(&x, [&m]);
                let (mut fast, mut reference) =
                    (vec![0.0; tokens * rows], vec![0.0; tokens * rows]);
                m.matmul(q.as_input(), tokens, &mut fast);
                m.matmul_with(Isa::Scalar, q.as_input(), tokens, &mut reference);
                let k_quant = tensor_type.block_elements() == SUPER_BLOCK;
                for t in 0..tokens {
                    for r in 0..rows {
                        let (f, s) = (fast[t * rows + r], reference[t * rows + r]);
                        if k_quant {
                            // The kernels add the f32 terms in another order: equal up to their rounding.
                            let magnitude: f32 = dequantized[r * cols..(r + 1) * cols]
                                .iter()
                                .zip(&x[t * cols..(t + 1) * cols])
                                .map(|(w, v)| (w * v).abs())
                                .sum();
                            assert!(
                                (f - s).abs() <= 1e-5 * magnitude,
                                "{tensor_type:?} {rows}x{cols}: {f} vs {s}"
                            );
                        } else {
                            assert!(
                                (f - s).abs() <= 1e-4 * s.abs().max(1.0),
                                "{tensor_type:?} {rows}x{cols}: {f} vs {s}"
                            );
                        }
                        let exact: f32 = dequantized[r * cols..(r + 1) * cols]
                            .iter()
                            .zip(&x[t * cols..(t + 1) * cols])
                            .map(|(a, b)| a * b)
                            .sum();
                        // Rounding the activations to int8 errs by at most half a step per term: bound it
                        // by the terms' magnitudes (the 32-element formats' weights are within 2).
                        let scale: f32 = if k_quant {
                            dequantized[r * cols..(r + 1) * cols]
                                .iter()
                                .zip(&x[t * cols..(t + 1) * cols])
                                .map(|(w, v)| (w * v).abs())
                                .sum::<f32>()
                        } else {
                            x[t * cols..(t + 1) * cols]
                                .iter()
                                .map(|v| v.abs())
                                .sum::<f32>()
                                * 2.0
                        };
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
