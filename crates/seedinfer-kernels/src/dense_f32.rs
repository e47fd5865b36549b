//! f32 dot products and matrix products for weights held in f32 (and, through `float_matmul`, f16 and bf16).
//!
//! `dot_scalar` is the reference; the SIMD kernels (`x86_avx2/float_rows.rs`), chosen at run time (see `isa`),
//! give its bits for every element, however many tokens a product has.

use crate::isa::{detected, Isa};
use crate::row_blocks::for_each_product_task;
use crate::widen::Widen;

/// Reference dot product: sixteen independent partial sums, each a chain of fused multiply-adds, summed pairwise
/// at the end (see [`float_dot_scalar`]).
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    float_dot_scalar(a, b)
}

/// `out[t][r] = dot(weights[r], input[t])` for `tokens` rows of `input` (`[tokens, cols]`) and
/// `weights` of shape `[rows, cols]`; `out` is `[tokens, rows]`.
pub fn matmul(
    weights: &[f32],
    rows: usize,
    cols: usize,
    input: &[f32],
    tokens: usize,
    out: &mut [f32],
) {
    float_matmul(detected(), weights, rows, cols, input, tokens, out)
}

/// The reference dot product of weights of any float element type (widened exactly to f32) with f32
/// activations: sixteen partial sums over whole groups of sixteen columns, each step one fused multiply-add
/// (`f32::mul_add`: rounded once, as the FMA instruction does), the pairwise reduction 16 -> 8 -> 4 -> 2 -> 1, then
/// the fused tail of the last `len % 16` columns. The SIMD kernels (`x86_avx2/float_rows.rs`) give its bits.
pub(crate) fn float_dot_scalar<H: Widen>(w: &[H], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut acc = [0.0f32; 16];
    let chunks = w.len() / 16;
    for c in 0..chunks {
        let (a, b) = (&w[c * 16..c * 16 + 16], &x[c * 16..c * 16 + 16]);
        for i in 0..16 {
            acc[i] = a[i].widen().mul_add(b[i], acc[i]);
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * 16..w.len() {
        tail = w[i].widen().mul_add(x[i], tail);
    }
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0] + tail
}

/// The product of float weights (`[rows, cols]`, f32, f16 or bf16) with f32 activations, with the kernel of `isa`:
/// every element bit for bit [`float_dot_scalar`], whatever `isa` and however many tokens.
pub(crate) fn float_matmul<H: Widen>(
    isa: Isa,
    weights: &[H],
    rows: usize,
    cols: usize,
    input: &[f32],
    tokens: usize,
    out: &mut [f32],
) {
    assert_eq!(weights.len(), rows * cols, "weights are [rows, cols]");
    // Tasks of about 64 KB of weights: enough work to amortise scheduling, small enough to balance the threads.
    let row_bytes = cols * std::mem::size_of::<H>();
    for_each_product_task(
        rows,
        cols,
        tokens,
        input.len(),
        out,
        row_bytes,
        65536,
        |out, first, count| {
            #[cfg(target_arch = "x86_64")]
            if isa.has_avx2() {
                // SAFETY: `isa` comes from `Isa::usable` or `detected`, so the CPU has AVX2, FMA and F16C; the sizes
                // were checked above.
                return unsafe {
                    let rows = &weights[first * cols..(first + count) * cols];
                    crate::x86_avx2::float_rows::rows(rows, cols, input, tokens, out, first, count)
                };
            }
            for r in first..first + count {
                let row = &weights[r * cols..(r + 1) * cols];
                for t in 0..tokens {
                    let value = float_dot_scalar(row, &input[t * cols..(t + 1) * cols]);
                    // SAFETY: this task owns rows `first..first + count`.
                    unsafe { out.write(r, t, value) };
                }
            }
        },
    );
}

/// An f32 weight matrix `[rows, cols]`, row-major.
pub struct DenseMatrix {
    pub rows: usize,
    pub cols: usize,
    data: Vec<f32>,
}

impl DenseMatrix {
    /// `None` unless `data` holds `rows * cols` values.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Option<Self> {
        (rows.checked_mul(cols) == Some(data.len())).then_some(Self { rows, cols, data })
    }

    pub fn tensor_type(&self) -> seedinfer_formats::TensorType {
        seedinfer_formats::TensorType::F32
    }

    pub fn resident_bytes(&self) -> usize {
        std::mem::size_of_val(self.data.as_slice())
    }

    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        out.copy_from_slice(&self.data[row * self.cols..(row + 1) * self.cols]);
    }

    /// `out[t][r] = dot(row r, input[t])`, see [`matmul`].
    pub fn matmul(&self, input: &[f32], tokens: usize, out: &mut [f32]) {
        self.matmul_with(detected(), input, tokens, out)
    }

    /// [`Self::matmul`] with the kernels of `isa` (or the widest this machine has below it); the same bits.
    pub fn matmul_with(&self, isa: Isa, input: &[f32], tokens: usize, out: &mut [f32]) {
        float_matmul(
            isa.usable(),
            &self.data,
            self.rows,
            self.cols,
            input,
            tokens,
            out,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    #[test]
    fn the_reference_dot_is_close_to_the_exact_sum_on_ragged_lengths() {
        for n in [0, 1, 7, 15, 16, 17, 63, 64, 100, 172, 576, 1537] {
            let a = values(n, n as u32);
            let b = values(n, n as u32 + 99);
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot_scalar(&a, &b) as f64 - exact).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn a_token_in_a_batch_gets_exactly_its_single_token_result_for_every_float_type() {
        // 200 tokens of 1536 columns span several activation chunks; 37 rows end in a lone row; 1541 columns end
        // in a tail shorter than sixteen.
        for (rows, cols, tokens) in [(37, 1536, 200), (6, 1541, 7)] {
            let w = values(rows * cols, 3);
            let x = values(tokens * cols, 4);
            let halves: Vec<half::f16> = w.iter().map(|v| half::f16::from_f32(*v)).collect();
            let brains: Vec<half::bf16> = w.iter().map(|v| half::bf16::from_f32(*v)).collect();
            let mut batch = vec![0.0; tokens * rows];
            matmul(&w, rows, cols, &x, tokens, &mut batch);
            for t in 0..tokens {
                let mut single = vec![0.0; rows];
                matmul(&w, rows, cols, &x[t * cols..(t + 1) * cols], 1, &mut single);
                assert_eq!(
                    &batch[t * rows..(t + 1) * rows],
                    single.as_slice(),
                    "token {t}"
                );
                for (r, v) in single.iter().enumerate() {
                    let row = &w[r * cols..(r + 1) * cols];
                    assert_eq!(
                        v.to_bits(),
                        dot_scalar(row, &x[t * cols..(t + 1) * cols]).to_bits()
                    );
                }
            }
            for isa in [detected(), Isa::Scalar] {
                let mut a = vec![0.0; tokens * rows];
                let mut b = vec![0.0; tokens * rows];
                float_matmul(isa, &halves, rows, cols, &x, tokens, &mut a);
                float_matmul(Isa::Scalar, &halves, rows, cols, &x, tokens, &mut b);
                assert_eq!(a, b, "f16 {isa:?}");
                float_matmul(isa, &brains, rows, cols, &x, tokens, &mut a);
                float_matmul(Isa::Scalar, &brains, rows, cols, &x, tokens, &mut b);
                assert_eq!(a, b, "bf16 {isa:?}");
            }
        }
    }

    #[test]
    fn matmul_matches_naive_for_one_and_many_tokens() {
        let (rows, cols) = (37, 70);
        let w = values(rows * cols, 1);
        for tokens in [1, 3, 9] {
            let x = values(tokens * cols, 2);
            let mut out = vec![0.0; tokens * rows];
            matmul(&w, rows, cols, &x, tokens, &mut out);
            for t in 0..tokens {
                for r in 0..rows {
                    let want =
                        dot_scalar(&w[r * cols..(r + 1) * cols], &x[t * cols..(t + 1) * cols]);
                    assert!((out[t * rows + r] - want).abs() < 1e-5);
                }
            }
        }
    }
}
