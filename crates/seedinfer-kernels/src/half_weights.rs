//! f16 and bf16 weights kept as stored (half the memory of f32) multiplied with f32 activations, accumulating
//! in f32.
//!
//! The product is f32 weights' (`dense_f32::float_matmul`) with each weight widened to f32 as it is read
//! (exactly; both formats are subsets of f32): bit for bit `matmul_with(Isa::Scalar, ..)`, the reference, whatever
//! the instruction set or the number of tokens (see `x86_avx2/float_rows.rs`).

use crate::dense_f32::float_matmul;
use crate::isa::{detected, Isa};
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
        match &self.data {
            HalfData::F16(d) => float_matmul(isa, d, rows, cols, input, tokens, out),
            HalfData::BF16(d) => float_matmul(isa, d, rows, cols, input, tokens, out),
        }
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
