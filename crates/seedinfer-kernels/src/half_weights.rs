//! f16 and bf16 weights kept as stored (half the memory of f32) multiplied with f32 activations, accumulating
//! in f32.
//!
//! `matmul_with(Isa::Scalar, ..)` is the reference: every weight is widened to f32 (exactly; both formats are subsets of f32)
//! and the dot product uses the same sixteen partial sums and pairwise final reduction as
//! [`crate::dense_f32::dot_scalar`]. The AVX2 + F16C twin keeps those sixteen sums in two 8-lane registers
//! and reduces them in the same order with separate multiplies and adds (no fused multiply-add), so it
//! returns the reference's result bit for bit: the choice of instruction set never changes an output.
//! Columns that do not fill a group of sixteen go through a scalar tail, as in the reference.

use crate::isa::{detected, Isa};
use crate::row_blocks::for_each_row_block;
use crate::widen::Widen;
use half::{bf16, f16};
use seedinfer_formats::TensorType;

/// The stored weights, row-major `[rows, cols]`.
pub enum HalfData {
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

/// A weight matrix in f16 or bf16.
pub struct HalfMatrix {
    pub rows: usize,
    pub cols: usize,
    data: HalfData,
}

/// Reference dot product of a half-precision row with f32 activations; the loop of `dense_f32::dot_scalar`.
fn dot_scalar<H: Widen>(w: &[H], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut acc = [0.0f32; 16];
    let chunks = w.len() / 16;
    for c in 0..chunks {
        let (a, b) = (&w[c * 16..c * 16 + 16], &x[c * 16..c * 16 + 16]);
        for i in 0..16 {
            acc[i] += a[i].widen() * b[i];
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * 16..w.len() {
        tail += w[i].widen() * x[i];
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

fn rows_scalar<H: Widen>(rows: &[H], cols: usize, x: &[f32], out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = dot_scalar(&rows[i * cols..(i + 1) * cols], x);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::widen::Widen;
    use std::arch::x86_64::*;

    /// `dot_scalar` with lanes 0..8 of the sixteen partial sums in `low` and 8..16 in `high`.
    #[inline(always)]
    unsafe fn dot<H: Widen>(w: &[H], x: &[f32]) -> f32 {
        debug_assert_eq!(w.len(), x.len());
        let chunks = w.len() / 16;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let (mut low, mut high) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in 0..chunks {
            let (wc, xc) = (wp.add(c * 16), xp.add(c * 16));
            // Multiply then add, each rounded, as the reference does (a fused multiply-add would round once).
            low = _mm256_add_ps(low, _mm256_mul_ps(H::load8(wc), _mm256_loadu_ps(xc)));
            high = _mm256_add_ps(
                high,
                _mm256_mul_ps(H::load8(wc.add(8)), _mm256_loadu_ps(xc.add(8))),
            );
        }
        let mut tail = 0.0f32;
        for i in chunks * 16..w.len() {
            tail += w.get_unchecked(i).widen() * *x.get_unchecked(i);
        }
        // The reference's pairwise reduction: 16 -> 8 -> 4 -> 2 -> 1.
        crate::x86_avx2::horizontal_sum(_mm256_add_ps(low, high)) + tail
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn rows<H: Widen>(rows: &[H], cols: usize, x: &[f32], out: &mut [f32]) {
        assert!(rows.len() >= out.len() * cols && x.len() == cols);
        for (i, o) in out.iter_mut().enumerate() {
            *o = dot(&rows[i * cols..(i + 1) * cols], x);
        }
    }
}

/// `out[i] = dot(row i of rows, x)` with the kernel of `isa` (from `Isa::usable`).
fn rows_with<H: Widen>(isa: Isa, rows: &[H], cols: usize, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: `isa` comes from `Isa::usable`, so this machine has AVX2, FMA and F16C.
        return unsafe { avx2::rows(rows, cols, x, out) };
    }
    let _ = isa;
    rows_scalar(rows, cols, x, out)
}

impl HalfMatrix {
    /// Takes a tensor's bytes (little-endian f16 or bf16, `[rows, cols]`); `None` for any other type or
    /// when the byte count disagrees with the shape.
    pub fn from_bytes(
        tensor_type: TensorType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Option<Self> {
        if bytes.len() != rows.checked_mul(cols)?.checked_mul(2)? {
            return None;
        }
        let data = match tensor_type {
            TensorType::F16 => HalfData::F16(bytemuck::pod_collect_to_vec(bytes)),
            TensorType::BF16 => HalfData::BF16(bytemuck::pod_collect_to_vec(bytes)),
            _ => return None,
        };
        Some(Self { rows, cols, data })
    }

    pub fn tensor_type(&self) -> TensorType {
        match self.data {
            HalfData::F16(_) => TensorType::F16,
            HalfData::BF16(_) => TensorType::BF16,
        }
    }

    pub fn data(&self) -> &HalfData {
        &self.data
    }

    pub fn resident_bytes(&self) -> usize {
        match &self.data {
            HalfData::F16(d) => std::mem::size_of_val(d.as_slice()),
            HalfData::BF16(d) => std::mem::size_of_val(d.as_slice()),
        }
    }

    /// Row `row` as f32 (an embedding lookup); `out.len()` must be `cols`.
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.cols);
        let range = row * self.cols..(row + 1) * self.cols;
        match &self.data {
            HalfData::F16(d) => widen_into(&d[range], out),
            HalfData::BF16(d) => widen_into(&d[range], out),
        }
    }

    /// `out[t][r] = dot(row r, input[t])` for `input` of shape `[tokens, cols]`; `out` is `[tokens, rows]`.
    pub fn matmul(&self, input: &[f32], tokens: usize, out: &mut [f32]) {
        self.matmul_with(detected(), input, tokens, out)
    }

    /// [`Self::matmul`] with the kernels of `isa` (or the widest this machine has below it); `Isa::Scalar`
    /// is the scalar reference kernel (which `matmul` equals bit for bit).
    pub fn matmul_with(&self, isa: Isa, input: &[f32], tokens: usize, out: &mut [f32]) {
        let isa = isa.usable();
        let (rows, cols) = (self.rows, self.cols);
        assert_eq!(input.len(), tokens * cols, "input is not [tokens, cols]");
        assert_eq!(out.len(), tokens * rows, "output is not [tokens, rows]");
        if rows == 0 || tokens == 0 {
            return;
        }
        // Rows per task as for f32 weights, counted in bytes of weights (half as many per row here).
        let rows_per_task = (32768 / cols.max(1)).clamp(4, 256);
        for_each_row_block(rows, tokens, rows_per_task, out, |first, t, column| {
            let x = &input[t * cols..(t + 1) * cols];
            let range = first * cols..(first + column.len()) * cols;
            match &self.data {
                HalfData::F16(d) => rows_with(isa, &d[range], cols, x, column),
                HalfData::BF16(d) => rows_with(isa, &d[range], cols, x, column),
            }
        });
    }
}

fn widen_into<H: Widen>(src: &[H], out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(src) {
        *o = v.widen();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;
    use seedinfer_formats::{dequantize_row, quantize_row};

    fn matrix(t: TensorType, rows: usize, cols: usize) -> (HalfMatrix, Vec<f32>) {
        let w = values(rows * cols, (rows * 1000 + cols) as u32);
        let mut bytes = Vec::new();
        quantize_row(t, &w, &mut bytes).unwrap();
        let mut widened = vec![0.0; rows * cols];
        dequantize_row(t, &bytes, &mut widened).unwrap();
        (
            HalfMatrix::from_bytes(t, rows, cols, &bytes).unwrap(),
            widened,
        )
    }

    #[test]
    fn from_bytes_checks_type_and_size() {
        assert!(HalfMatrix::from_bytes(TensorType::F16, 2, 3, &[0; 12]).is_some());
        assert!(HalfMatrix::from_bytes(TensorType::BF16, 2, 3, &[0; 11]).is_none());
        assert!(HalfMatrix::from_bytes(TensorType::F32, 2, 3, &[0; 12]).is_none());
        assert!(HalfMatrix::from_bytes(TensorType::Q8_0, 1, 32, &[0; 64]).is_none());
        assert!(HalfMatrix::from_bytes(TensorType::F16, usize::MAX, 3, &[]).is_none());
        let m = HalfMatrix::from_bytes(TensorType::BF16, 2, 3, &[0; 12]).unwrap();
        assert_eq!(
            (m.tensor_type(), m.resident_bytes()),
            (TensorType::BF16, 12)
        );
    }

    #[test]
    fn rows_widen_like_the_formats_crate() {
        for t in [TensorType::F16, TensorType::BF16] {
            let (m, widened) = matrix(t, 5, 37);
            let mut row = vec![0.0; 37];
            for r in 0..5 {
                m.row_to_f32(r, &mut row);
                assert_eq!(row, widened[r * 37..(r + 1) * 37]);
            }
        }
    }

    #[test]
    fn dispatched_equals_reference_bitwise_and_f32_dot() {
        for t in [TensorType::F16, TensorType::BF16] {
            for (rows, cols, tokens) in [
                (1, 1, 1),
                (3, 15, 2),
                (9, 16, 1),
                (37, 70, 3),
                (300, 576, 1),
            ] {
                let (m, widened) = matrix(t, rows, cols);
                let x = values(tokens * cols, 5);
                let (mut fast, mut reference) =
                    (vec![0.0; tokens * rows], vec![0.0; tokens * rows]);
                m.matmul(&x, tokens, &mut fast);
                m.matmul_with(Isa::Scalar, &x, tokens, &mut reference);
                for t in 0..tokens {
                    for r in 0..rows {
                        let want = crate::dense_f32::dot_scalar(
                            &widened[r * cols..(r + 1) * cols],
                            &x[t * cols..(t + 1) * cols],
                        );
                        assert_eq!(reference[t * rows + r].to_bits(), want.to_bits());
                        assert_eq!(fast[t * rows + r].to_bits(), want.to_bits());
                    }
                }
            }
        }
    }

    #[test]
    fn empty_shapes_do_nothing() {
        let m = HalfMatrix::from_bytes(TensorType::F16, 0, 8, &[]).unwrap();
        m.matmul(&[0.0; 16], 2, &mut []);
        let m = HalfMatrix::from_bytes(TensorType::F16, 3, 0, &[]).unwrap();
        let mut out = [1.0; 6];
        m.matmul(&[], 2, &mut out);
        assert_eq!(out, [0.0; 6]);
    }
}
