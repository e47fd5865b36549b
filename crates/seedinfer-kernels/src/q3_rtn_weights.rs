//! `q3_rtn` weights (round-to-nearest 3-bit groups of 32, SeedLM's equal-bits baseline) multiplied with f32
//! activations: each group is expanded into registers and dotted with the activations, never stored expanded.
//! `rows` is the scalar reference; the AVX2 kernel unpacks 8 codes per vector (variable shifts of the group's
//! 24-bit slices) and shares each unpacked group among up to 4 tokens.

use crate::isa::{detected, Isa};
use crate::row_blocks::{for_each_product_task, ProductOut};
use seedinfer_formats::q3_rtn::{dequantize, GROUP, GROUP_BYTES};
use seedinfer_formats::TensorType;

pub struct Q3RtnMatrix {
    rows: usize,
    cols: usize,
    /// The rows as stored, then 4 zero bytes so each 8-code slice can be read as one unaligned `u32`.
    data: Vec<u8>,
}

impl Q3RtnMatrix {
    /// `None` unless `bytes` holds exactly `rows` rows of `cols` (a multiple of 32) weights.
    pub fn from_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Option<Self> {
        let row_bytes = TensorType::Q3Rtn.row_bytes(cols).ok()?;
        (bytes.len() == rows.checked_mul(row_bytes)?).then(|| {
            let mut data = Vec::with_capacity(bytes.len() + 4);
            data.extend_from_slice(bytes);
            data.extend_from_slice(&[0; 4]);
            Self { rows, cols, data }
        })
    }

    pub fn tensor_type(&self) -> TensorType {
        TensorType::Q3Rtn
    }

    pub fn resident_bytes(&self) -> usize {
        self.data.len() - 4
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
        self.matmul_with(detected(), input, tokens, out)
    }

    /// [`Self::matmul`] with the kernels of `isa` (or the widest this machine has below it); `Isa::Scalar`
    /// is the baseline build.
    pub fn matmul_with(&self, isa: Isa, input: &[f32], tokens: usize, out: &mut [f32]) {
        let isa = isa.usable();
        for_each_product_task(
            self.rows,
            self.cols,
            tokens,
            input.len(),
            out,
            self.row_bytes(),
            16384,
            |out, first, count| {
                #[cfg(target_arch = "x86_64")]
                if isa.has_avx2() {
                    // SAFETY: the CPU has AVX2, FMA and F16C.
                    unsafe { self.rows_avx2(input, tokens, out, first, count) };
                    return;
                }
                self.rows(input, tokens, out, first, count);
            },
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_avx2(
        &self,
        input: &[f32],
        tokens: usize,
        out: &ProductOut,
        first: usize,
        count: usize,
    ) {
        const TILE: usize = 4;
        for first_token in (0..tokens).step_by(TILE) {
            let n = TILE.min(tokens - first_token);
            let x = &input[first_token * self.cols..];
            for row in first..first + count {
                let mut sums = [0.0f32; TILE];
                match n {
                    1 => avx2::row::<1>(self, row, x, &mut sums),
                    2 => avx2::row::<2>(self, row, x, &mut sums),
                    3 => avx2::row::<3>(self, row, x, &mut sums),
                    _ => avx2::row::<TILE>(self, row, x, &mut sums),
                }
                for (t, &s) in sums.iter().enumerate().take(n) {
                    // SAFETY: this task owns `row`; `first_token + t < tokens`.
                    out.write(row, first_token + t, s);
                }
            }
        }
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Q3RtnMatrix, GROUP, GROUP_BYTES};
    use crate::x86_avx2::horizontal_sum as hsum;
    use std::arch::x86_64::*;

    /// `sums[t] = row · x_t` for `N` tokens of `x` (`cols` apart). Each group: its f16 scale, then four slices of
    /// 8 codes (3 bytes each), each read as a `u32` (the data's padding keeps the last read in bounds).
    #[inline(always)]
    pub unsafe fn row<const N: usize>(m: &Q3RtnMatrix, row: usize, x: &[f32], sums: &mut [f32; 4]) {
        debug_assert!(x.len() >= N * m.cols);
        let groups = m.cols / GROUP;
        let base = m.data.as_ptr().add(row * m.row_bytes());
        let shifts = _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21);
        let (seven, four) = (_mm256_set1_epi32(7), _mm256_set1_epi32(4));
        let mut acc = [_mm256_setzero_ps(); N];
        for g in 0..groups {
            let group = base.add(g * GROUP_BYTES);
            let scale_bits = (group as *const u16).read_unaligned() as i32;
            let d = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(scale_bits)));
            let mut w = [_mm256_setzero_ps(); 4];
            for (j, w) in w.iter_mut().enumerate() {
                let slice = (group.add(2 + 3 * j) as *const u32).read_unaligned();
                let codes = _mm256_and_si256(
                    _mm256_srlv_epi32(_mm256_set1_epi32(slice as i32), shifts),
                    seven,
                );
                *w = _mm256_cvtepi32_ps(_mm256_sub_epi32(codes, four));
            }
            for (t, acc) in acc.iter_mut().enumerate() {
                let x = x.as_ptr().add(t * m.cols + g * GROUP);
                let mut dot = _mm256_mul_ps(w[0], _mm256_loadu_ps(x));
                dot = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x.add(8)), dot);
                dot = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x.add(16)), dot);
                dot = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x.add(24)), dot);
                *acc = _mm256_fmadd_ps(dot, d, *acc);
            }
        }
        for (sum, acc) in sums.iter_mut().zip(acc) {
            *sum = hsum(acc);
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
        for tokens in [1, 3, 4, 6] {
            let x = values(tokens * cols, 17);
            for scalar in [true, false] {
                let mut out = vec![0.0f32; tokens * rows];
                m.matmul_with(
                    if scalar { Isa::Scalar } else { detected() },
                    &x,
                    tokens,
                    &mut out,
                );
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
