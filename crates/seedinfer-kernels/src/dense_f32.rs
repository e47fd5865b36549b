//! f32 dot products and matrix products for weights held in f32.
//!
//! `dot_scalar` is the reference; the SIMD twins are the same loop compiled for wider vector units and chosen
//! once at run time (see `isa`), so the binary itself only assumes the x86-64 baseline.

use crate::isa::{detected, Isa};
use crate::row_blocks::for_each_row_block;

/// Reference dot product: sixteen independent partial sums, summed pairwise at the end.
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    dot_body(a, b)
}

// Inlined into each target-feature function so the compiler vectorises it for that instruction set.
#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        let (x, y) = (&a[c * 16..c * 16 + 16], &b[c * 16..c * 16 + 16]);
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * 16..a.len() {
        tail += a[i] * b[i];
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_body(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    dot_body(a, b)
}

/// Dot product with the widest instruction set available.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    match detected() {
        // SAFETY: `detected` only reports instruction sets this machine has.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { dot_avx512(a, b) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { dot_avx2(a, b) },
        _ => dot_scalar(a, b),
    }
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
    debug_assert_eq!(weights.len(), rows * cols);
    debug_assert_eq!(input.len(), tokens * cols);
    debug_assert_eq!(out.len(), tokens * rows);
    // Rows per task: enough work to amortise scheduling, small enough to balance two or more threads.
    let rows_per_task = (16384 / cols.max(1)).clamp(4, 256);
    for_each_row_block(rows, tokens, rows_per_task, out, |first, t, column| {
        let x = &input[t * cols..(t + 1) * cols];
        for (i, o) in column.iter_mut().enumerate() {
            *o = dot(&weights[(first + i) * cols..(first + i + 1) * cols], x);
        }
    });
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
        matmul(&self.data, self.rows, self.cols, input, tokens, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    #[test]
    fn dispatched_dot_matches_scalar_on_ragged_lengths() {
        for n in [0, 1, 7, 15, 16, 17, 63, 64, 100, 172, 576, 1537] {
            let a = values(n, n as u32);
            let b = values(n, n as u32 + 99);
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - exact).abs() < 1e-4, "n={n}");
            assert!((dot_scalar(&a, &b) - dot(&a, &b)).abs() < 1e-5, "n={n}");
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
