//! `q3_rtn` weights (round-to-nearest 3-bit groups of 32, SeedLM's equal-bits baseline) multiplied with f32
//! activations: each group is expanded into registers and dotted with the activations, never stored expanded.
//! One body, built for the baseline and for AVX2+FMA (chosen at run time); the baseline build is the reference.

use crate::isa::{detected, Isa};
use crate::row_blocks::{for_each_row_range, ProductOut};
use seedinfer_formats::q3_rtn::{dequantize, GROUP, GROUP_BYTES};
use seedinfer_formats::TensorType;

pub struct Q3RtnMatrix {
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl Q3RtnMatrix {
    /// `None` unless `bytes` holds exactly `rows` rows of `cols` (a multiple of 32) weights.
    pub fn from_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Option<Self> {
        let row_bytes = TensorType::Q3Rtn.row_bytes(cols).ok()?;
        (bytes.len() == rows.checked_mul(row_bytes)?).then(|| Self {
            rows,
            cols,
            data: bytes.to_vec(),
        })
    }

    pub fn resident_bytes(&self) -> usize {
        self.data.len()
    }

    fn row_bytes(&self) -> usize {
        self.cols / GROUP * GROUP_BYTES
    }

    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        dequantize(&self.data[row * rb..(row + 1) * rb], out);
    }

    /// `out[t][r] = dot(row r, input[t])` for `input` of shape `[tokens, cols]`; `out` is `[tokens, rows]`.
    pub fn matmul(&self, input: &[f32], tokens: usize, out: &mut [f32]) {
        self.matmul_with(input, tokens, out, false)
    }

    /// The same product with the baseline build.
    pub fn matmul_scalar(&self, input: &[f32], tokens: usize, out: &mut [f32]) {
        self.matmul_with(input, tokens, out, true)
    }

    fn matmul_with(&self, input: &[f32], tokens: usize, out: &mut [f32], scalar: bool) {
        assert_eq!(
            input.len(),
            tokens * self.cols,
            "input is not [tokens, cols]"
        );
        assert_eq!(
            out.len(),
            tokens * self.rows,
            "output is not [tokens, rows]"
        );
        if self.rows == 0 || tokens == 0 {
            return;
        }
        let rows_per_task = (16384 / self.row_bytes().max(1)).clamp(4, 256);
        for_each_row_range(
            self.rows,
            tokens,
            rows_per_task,
            out,
            |out, first, count| {
                #[cfg(target_arch = "x86_64")]
                if !scalar && detected() >= Isa::Avx2 {
                    // SAFETY: the CPU has AVX2 and FMA.
                    unsafe { self.rows_avx2(input, tokens, out, first, count) };
                    return;
                }
                let _ = scalar;
                self.rows(input, tokens, out, first, count);
            },
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(
        &self,
        input: &[f32],
        tokens: usize,
        out: &ProductOut,
        first: usize,
        count: usize,
    ) {
        self.rows(input, tokens, out, first, count)
    }

    #[inline(always)]
    fn rows(&self, input: &[f32], tokens: usize, out: &ProductOut, first: usize, count: usize) {
        let rb = self.row_bytes();
        let mut w = [0.0f32; GROUP];
        for row in first..first + count {
            let bytes = &self.data[row * rb..(row + 1) * rb];
            let mut sums = vec![0.0f32; tokens];
            for (g, group) in bytes.chunks_exact(GROUP_BYTES).enumerate() {
                dequantize(group, &mut w);
                for (t, sum) in sums.iter_mut().enumerate() {
                    let x = &input[t * self.cols + g * GROUP..t * self.cols + (g + 1) * GROUP];
                    let mut lanes = [0.0f32; 8];
                    for (wc, xc) in w.chunks_exact(8).zip(x.chunks_exact(8)) {
                        for l in 0..8 {
                            lanes[l] += wc[l] * xc[l];
                        }
                    }
                    *sum += lanes.iter().sum::<f32>();
                }
            }
            for (t, &s) in sums.iter().enumerate() {
                // SAFETY: this task owns `row`.
                unsafe { out.write(row, t, s) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;
    use seedinfer_formats::q3_rtn::quantize;

    #[test]
    fn kernels_equal_dequantise_then_gemv() {
        let (rows, cols) = (5, 96);
        let w = values(rows * cols, 3);
        let mut bytes = Vec::new();
        quantize(&w, &mut bytes);
        let m = Q3RtnMatrix::from_bytes(rows, cols, &bytes).expect("matrix");
        assert!(Q3RtnMatrix::from_bytes(rows, cols, &bytes[1..]).is_none());
        let mut deq = vec![0.0f32; rows * cols];
        for r in 0..rows {
            m.row_to_f32(r, &mut deq[r * cols..(r + 1) * cols]);
        }
        for tokens in [1, 3] {
            let x = values(tokens * cols, 17);
            for scalar in [true, false] {
                let mut out = vec![0.0f32; tokens * rows];
                m.matmul_with(&x, tokens, &mut out, scalar);
                for t in 0..tokens {
                    for r in 0..rows {
                        let e: f32 = deq[r * cols..(r + 1) * cols]
                            .iter()
                            .zip(&x[t * cols..(t + 1) * cols])
                            .map(|(a, b)| a * b)
                            .sum();
                        assert!(
                            (out[t * rows + r] - e).abs() < 1e-4,
                            "{} vs {e}",
                            out[t * rows + r]
                        );
                    }
                }
            }
        }
    }
}
