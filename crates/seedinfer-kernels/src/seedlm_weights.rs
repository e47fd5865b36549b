//! SeedLM weights (METHODS.md, "SeedLM") multiplied with f32 activations without ever expanding them: each block's
//! `U(s)` is read from the normalised LFSR cycle (65,535 floats, cache-resident) at the seed's place, and the
//! block's weights `w_i = 2^e · Σ_j U[i][j] · t_j` are reconstructed inside the dot product.
//!
//! The activations are laid out once per product as `xr[k·C·P + i·P + j] = x[k·C + i]` (each value repeated P
//! times), so a block's contribution is `2^e · Σ_m U[m] · t[m mod P] · xr[m]` over its `C·P` cycle values: whole
//! vectors of the cycle, the coefficient pattern and the activations, no shuffles. The coefficient pattern times
//! the cycle is computed once per block and shared by every token of a batch.
//!
//! `rows_scalar` is the reference; the AVX2 kernels compute the same sums in another order (float tolerance).

use crate::isa::{detected, Isa};
use crate::row_blocks::{for_each_product_task, ProductOut};
use seedinfer_formats::seedlm::{row_blocks, LfsrCycle, SeedLmConfig, SEEDLM3};
use seedinfer_formats::TensorType;
use std::sync::OnceLock;

/// The LFSR cycle, with a wrap-around copy for the longest basis.
fn cycle() -> &'static LfsrCycle {
    static CYCLE: OnceLock<LfsrCycle> = OnceLock::new();
    CYCLE.get_or_init(|| LfsrCycle::new(SEEDLM3.block * SEEDLM3.coefficients))
}

/// A SeedLM matrix `[rows, cols]` as stored: rows of packed blocks (the last of a row zero-padded).
pub struct SeedLmMatrix {
    tensor_type: TensorType,
    config: SeedLmConfig,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    /// The packed rows, then 8 zero bytes so a block's fields can be read as one unaligned `u64`. Each block's
    /// seed field holds the seed's place in the cycle instead (set at load), so `U(s)` is one indexed read.
    data: Vec<u8>,
    /// `2^(base + code)` for each exponent code (block exponent = the tensor's base + the block's 4-bit code).
    scales: [f32; 16],
}

/// One block's fields.
#[derive(Clone, Copy)]
struct Fields {
    /// Where the seed's states start in the cycle.
    place: u16,
    exponent_code: u32,
    /// The coefficient nibbles: bits `4j..4j + 4` hold `t_j`.
    codes: u32,
}

impl SeedLmMatrix {
    /// `None` unless `tensor_type` is a SeedLM type and `bytes` holds exactly `rows` packed rows of `cols`.
    pub fn from_bytes(
        tensor_type: TensorType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
        base: i32,
    ) -> Option<Self> {
        let config = tensor_type.seedlm_config()?;
        let row_bytes = tensor_type.row_bytes(cols).ok()?;
        if bytes.len() != rows.checked_mul(row_bytes)? || !(-126..=110).contains(&base) {
            return None;
        }
        let mut data = Vec::with_capacity(bytes.len() + 8);
        data.extend_from_slice(bytes);
        data.extend_from_slice(&[0; 8]);
        let cycle = cycle();
        let (block_bits, blocks) = (config.block_bits(), row_blocks(config, cols));
        for row in 0..rows {
            for k in 0..blocks {
                let bit = k * block_bits;
                let at = row * row_bytes + bit / 8;
                let raw: [u8; 8] = data[at..at + 8].try_into().ok()?;
                let v = u64::from_le_bytes(raw);
                let shift = bit % 8;
                let place = cycle.place((v >> shift) as u16) as u64;
                let v = (v & !(0xffff << shift)) | (place << shift);
                data[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        let scales =
            std::array::from_fn(|code| f32::from_bits(((127 + base + code as i32) as u32) << 23));
        Some(Self {
            tensor_type,
            config,
            rows,
            cols,
            row_bytes,
            data,
            scales,
        })
    }

    pub fn tensor_type(&self) -> TensorType {
        self.tensor_type
    }

    pub fn resident_bytes(&self) -> usize {
        self.data.len()
    }

    fn blocks_per_row(&self) -> usize {
        row_blocks(self.config, self.cols)
    }

    /// Block `k` of row `row`.
    #[inline(always)]
    fn fields(&self, row: usize, k: usize) -> Fields {
        let bit = k * self.config.block_bits();
        let at = row * self.row_bytes + bit / 8;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&self.data[at..at + 8]);
        let v = u64::from_le_bytes(raw) >> (bit % 8);
        Fields {
            place: v as u16,
            exponent_code: ((v >> 16) & 0xf) as u32,
            codes: (v >> 20) as u32,
        }
    }

    /// [`Self::fields`] without bounds checks, for the SIMD kernels.
    ///
    /// # Safety
    /// `row < rows` and `k < blocks_per_row()`.
    #[inline(always)]
    unsafe fn fields_unchecked(&self, row: usize, k: usize) -> Fields {
        let bit = k * self.config.block_bits();
        let at = row * self.row_bytes + bit / 8;
        let v = (self.data.as_ptr().add(at) as *const u64)
            .read_unaligned()
            .to_le()
            >> (bit % 8);
        Fields {
            place: v as u16,
            exponent_code: ((v >> 16) & 0xf) as u32,
            codes: (v >> 20) as u32,
        }
    }

    #[inline(always)]
    fn scale(&self, f: Fields) -> f32 {
        self.scales[f.exponent_code as usize]
    }

    /// Reconstructs row `row` as f32 (an embedding lookup, and the tests' reference).
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        let (c, p) = (self.config.block, self.config.coefficients);
        let cycle = cycle();
        for k in 0..self.blocks_per_row() {
            let f = self.fields(row, k);
            let scale = self.scale(f);
            let at = f.place as usize;
            let u = &cycle.values()[at..at + c * p];
            for i in 0..c.min(self.cols - k * c) {
                let w: f32 = (0..p)
                    .map(|j| u[i * p + j] * nibble(f.codes, j) as f32)
                    .sum();
                out[k * c + i] = w * scale;
            }
        }
    }

    /// `out[t][r] = dot(row r, input[t])` for `input` of shape `[tokens, cols]`; `out` is `[tokens, rows]`.
    pub fn matmul(&self, input: &[f32], tokens: usize, out: &mut [f32]) {
        self.matmul_with(detected(), input, tokens, out)
    }

    /// [`Self::matmul`] with the kernels of `isa` (or the widest this machine has below it); `Isa::Scalar`
    /// is the scalar reference kernel.
    pub fn matmul_with(&self, isa: Isa, input: &[f32], tokens: usize, out: &mut [f32]) {
        let isa = isa.usable();
        let (c, p, cols) = (self.config.block, self.config.coefficients, self.cols);
        assert_eq!(input.len(), tokens * cols, "input is not [tokens, cols]");
        // Each token's activations repeated P times per value, zero-padded to whole blocks.
        let span = self.blocks_per_row() * c * p;
        let mut xr = vec![0.0f32; tokens * span];
        for (x, r) in input.chunks_exact(cols).zip(xr.chunks_exact_mut(span)) {
            for (i, &v) in x.iter().enumerate() {
                r[i * p..(i + 1) * p].fill(v);
            }
        }
        for_each_product_task(
            self.rows,
            cols,
            tokens,
            input.len(),
            out,
            self.row_bytes,
            16384,
            |out, first, count| {
                let rows = first..first + count;
                #[cfg(target_arch = "x86_64")]
                if isa.has_avx2() {
                    // SAFETY: the CPU has AVX2 and FMA; buffers are sized above.
                    unsafe { self.rows_avx2(&xr, span, tokens, out, rows) };
                    return;
                }
                self.rows_scalar(&xr, span, tokens, out, rows);
            },
        );
    }

    /// Scalar reference: per block, `2^e · Σ_i x_i · Σ_j U[i][j] t_j`.
    fn rows_scalar(
        &self,
        xr: &[f32],
        span: usize,
        tokens: usize,
        out: &ProductOut,
        rows: std::ops::Range<usize>,
    ) {
        let (c, p) = (self.config.block, self.config.coefficients);
        let cycle = cycle();
        let n = self.blocks_per_row();
        for row in rows {
            for t in 0..tokens {
                let x = &xr[t * span..(t + 1) * span];
                let mut acc = 0.0f32;
                for k in 0..n {
                    let f = self.fields(row, k);
                    let at = f.place as usize;
                    let u = &cycle.values()[at..at + c * p];
                    let mut block = 0.0f32;
                    for i in 0..c {
                        let w: f32 = (0..p)
                            .map(|j| u[i * p + j] * nibble(f.codes, j) as f32)
                            .sum();
                        block += w * x[(k * c + i) * p];
                    }
                    acc += block * self.scale(f);
                }
                // SAFETY: this task owns `row`.
                unsafe { out.write(row, t, acc) };
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(
        &self,
        xr: &[f32],
        span: usize,
        tokens: usize,
        out: &ProductOut,
        rows: std::ops::Range<usize>,
    ) {
        const TILE: usize = 4;
        for first in (0..tokens).step_by(TILE) {
            let n = TILE.min(tokens - first);
            for row in rows.clone() {
                let mut sums = [0.0f32; TILE];
                match (self.config.coefficients, n) {
                    (3, 1) => avx2::row_p3_one(self, row, &xr[first * span..], &mut sums),
                    (3, _) => avx2::row_p3::<TILE>(self, row, &xr[first * span..], span, &mut sums),
                    (_, 4) => avx2::row_p4::<4>(self, row, &xr[first * span..], span, &mut sums),
                    (_, 1) => avx2::row_p4::<1>(self, row, &xr[first * span..], span, &mut sums),
                    _ => avx2::row_p4::<TILE>(self, row, &xr[first * span..], span, &mut sums),
                }
                for (t, &s) in sums.iter().enumerate().take(n) {
                    // SAFETY: this task owns `row`; `first + t < tokens`.
                    out.write(row, first + t, s);
                }
            }
        }
    }
}

/// Coefficient `j` of a block: the sign-extended nibble `j` of `codes`.
#[inline(always)]
fn nibble(codes: u32, j: usize) -> i32 {
    ((codes << (28 - 4 * j)) as i32) >> 28
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{cycle, SeedLmMatrix};
    use crate::x86_avx2::horizontal_sum as hsum;
    use std::arch::x86_64::*;

    /// Coefficients `t_{m mod P}` for lanes `m = 8v..8v + 8` as floats, from the block's nibbles: `shifts` moves
    /// each lane's nibble to the top bits, an arithmetic shift sign-extends it.
    #[inline(always)]
    unsafe fn pattern(codes: __m256i, shifts: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_srai_epi32::<28>(_mm256_sllv_epi32(codes, shifts)))
    }

    /// A P = 3 block's scaled coefficient pattern for its three vectors of cycle values: lane `m` of vector `v`
    /// holds `2^e · t_{(8v + m) mod 3}`. One conversion, then two lane permutations of the first pattern.
    #[inline(always)]
    unsafe fn patterns_p3(m: &SeedLmMatrix, field: u32) -> [__m256; 3] {
        // The nibble of t_j sits at bits 20 + 4j of a seedlm4 block (after the 16-bit place and 4-bit exponent).
        let shifts = _mm256_setr_epi32(8, 4, 0, 8, 4, 0, 8, 4);
        let scale = _mm256_broadcast_ss(m.scales.get_unchecked(((field >> 16) & 0xf) as usize));
        let p0 = _mm256_mul_ps(pattern(_mm256_set1_epi32(field as i32), shifts), scale);
        [
            p0,
            _mm256_permutevar8x32_ps(p0, _mm256_setr_epi32(2, 0, 1, 2, 0, 1, 2, 0)),
            _mm256_permutevar8x32_ps(p0, _mm256_setr_epi32(1, 2, 0, 1, 2, 0, 1, 2)),
        ]
    }

    /// The block fields of a seedlm4 row: whole `u32`s (32 bits per block).
    #[inline(always)]
    unsafe fn p3_fields(m: &SeedLmMatrix, row: usize) -> *const u32 {
        debug_assert_eq!(m.config.block_bits(), 32);
        m.data.as_ptr().add(row * m.row_bytes) as *const u32
    }

    /// `sums[0] = row · x` for one token (decode): three accumulators, one per vector of a block, so consecutive
    /// blocks do not wait on each other's multiply-adds.
    #[inline(always)]
    pub unsafe fn row_p3_one(m: &SeedLmMatrix, row: usize, xr: &[f32], sums: &mut [f32; 4]) {
        let blocks = m.blocks_per_row();
        debug_assert!(xr.len() >= blocks * 24);
        let values = cycle().values().as_ptr();
        let fields = p3_fields(m, row);
        let x = xr.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 3];
        for k in 0..blocks {
            let field = fields.add(k).read_unaligned();
            let u = values.add((field & 0xffff) as usize);
            let p = patterns_p3(m, field);
            let x = x.add(k * 24);
            for v in 0..3 {
                let w = _mm256_mul_ps(_mm256_loadu_ps(u.add(8 * v)), p[v]);
                acc[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.add(8 * v)), acc[v]);
            }
        }
        sums[0] = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), acc[2]));
    }

    /// `sums[t] = row · x_t` for `N` tokens (`xr` holds them `span` apart; lanes past `tokens` are ignored by the
    /// caller but must be readable, so `N` is clamped to what `xr` holds). P = 3, C = 8: a block is 24 cycle values,
    /// reconstructed once and shared by the tokens.
    #[inline(always)]
    pub unsafe fn row_p3<const N: usize>(
        m: &SeedLmMatrix,
        row: usize,
        xr: &[f32],
        span: usize,
        sums: &mut [f32; 4],
    ) {
        let n = N.min(xr.len() / span);
        let values = cycle().values().as_ptr();
        let fields = p3_fields(m, row);
        let mut acc = [_mm256_setzero_ps(); 4];
        for k in 0..m.blocks_per_row() {
            let field = fields.add(k).read_unaligned();
            let u = values.add((field & 0xffff) as usize);
            let p = patterns_p3(m, field);
            let w = [
                _mm256_mul_ps(_mm256_loadu_ps(u), p[0]),
                _mm256_mul_ps(_mm256_loadu_ps(u.add(8)), p[1]),
                _mm256_mul_ps(_mm256_loadu_ps(u.add(16)), p[2]),
            ];
            for (t, a) in acc.iter_mut().enumerate().take(n) {
                // The block's sum first: only its addition chains one block to the next.
                let x = xr.as_ptr().add(t * span + k * 24);
                let mut block = _mm256_mul_ps(w[0], _mm256_loadu_ps(x));
                block = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x.add(8)), block);
                block = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x.add(16)), block);
                *a = _mm256_add_ps(*a, block);
            }
        }
        for t in 0..n {
            sums[t] = hsum(acc[t]);
        }
    }

    /// As [`row_p3`] for P = 4, C = 12: a block is 48 cycle values; every vector has the same pattern `t0..t3`
    /// twice, so the pattern multiplies the block's sum once.
    #[inline(always)]
    pub unsafe fn row_p4<const N: usize>(
        m: &SeedLmMatrix,
        row: usize,
        xr: &[f32],
        span: usize,
        sums: &mut [f32; 4],
    ) {
        let n = N.min(xr.len() / span);
        let cycle = cycle();
        let values = cycle.values().as_ptr();
        let shifts = _mm256_setr_epi32(28, 24, 20, 16, 28, 24, 20, 16);
        let mut acc = [_mm256_setzero_ps(); 4];
        for k in 0..m.blocks_per_row() {
            let f = m.fields_unchecked(row, k);
            let u = values.add(f.place as usize);
            let t_scaled = _mm256_mul_ps(
                pattern(_mm256_set1_epi32(f.codes as i32), shifts),
                _mm256_broadcast_ss(m.scales.get_unchecked(f.exponent_code as usize)),
            );
            let uv = [
                _mm256_loadu_ps(u),
                _mm256_loadu_ps(u.add(8)),
                _mm256_loadu_ps(u.add(16)),
                _mm256_loadu_ps(u.add(24)),
                _mm256_loadu_ps(u.add(32)),
                _mm256_loadu_ps(u.add(40)),
            ];
            for (t, a) in acc.iter_mut().enumerate().take(n) {
                let x = xr.as_ptr().add(t * span + k * 48);
                let mut block = _mm256_mul_ps(uv[0], _mm256_loadu_ps(x));
                for (v, &u) in uv.iter().enumerate().skip(1) {
                    block = _mm256_fmadd_ps(u, _mm256_loadu_ps(x.add(8 * v)), block);
                }
                *a = _mm256_fmadd_ps(block, t_scaled, *a);
            }
        }
        for t in 0..n {
            sums[t] = hsum(acc[t]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;
    use seedinfer_formats::seedlm::{decode_row, encode_matrix, pack_matrix, SeedTable};

    /// Encodes random weights (a small search: the seed table is the slow part) and returns the matrix and its
    /// rows reconstructed by the format's own decoder.
    fn matrix(tensor_type: TensorType, rows: usize, cols: usize) -> (SeedLmMatrix, Vec<f32>) {
        let config = tensor_type.seedlm_config().expect("a SeedLM type");
        let cycle = LfsrCycle::new(config.block * config.coefficients);
        let table = SeedTable::new(config, &cycle);
        let w = values(rows * cols, rows as u32 * 7 + cols as u32);
        let (blocks, base) = encode_matrix(&table, &w, cols, &|_| {}, &|| false).expect("encodes");
        let bytes = pack_matrix(config, &blocks, cols, base);
        let m = SeedLmMatrix::from_bytes(tensor_type, rows, cols, &bytes, base).expect("matrix");
        let mut decoded = vec![0.0f32; rows * cols];
        for (row, out) in bytes
            .chunks(tensor_type.row_bytes(cols).unwrap())
            .zip(decoded.chunks_mut(cols))
        {
            decode_row(config, &cycle, row, base, out);
        }
        (m, decoded)
    }

    #[test]
    fn kernels_equal_reconstruct_then_gemv() {
        for (tensor_type, cols) in [
            (TensorType::SeedLm4, 64),
            (TensorType::SeedLm4, 44),
            (TensorType::SeedLm3, 72),
            (TensorType::SeedLm3, 64),
        ] {
            let rows = 6;
            let (m, decoded) = matrix(tensor_type, rows, cols);
            let mut row = vec![0.0f32; cols];
            for r in 0..rows {
                m.row_to_f32(r, &mut row);
                assert_eq!(
                    row,
                    decoded[r * cols..(r + 1) * cols],
                    "{tensor_type} row {r}"
                );
            }
            for tokens in [1, 3, 4, 9] {
                let x = values(tokens * cols, 99 + tokens as u32);
                let mut expected = vec![0.0f32; tokens * rows];
                for t in 0..tokens {
                    for r in 0..rows {
                        expected[t * rows + r] = decoded[r * cols..(r + 1) * cols]
                            .iter()
                            .zip(&x[t * cols..(t + 1) * cols])
                            .map(|(w, x)| w * x)
                            .sum();
                    }
                }
                let scale = expected
                    .iter()
                    .fold(0.0f32, |m, v| m.max(v.abs()))
                    .max(1e-3);
                for scalar in [true, false] {
                    let mut out = vec![0.0f32; tokens * rows];
                    m.matmul_with(
                        if scalar { Isa::Scalar } else { detected() },
                        &x,
                        tokens,
                        &mut out,
                    );
                    for (i, (a, b)) in out.iter().zip(&expected).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * scale * cols as f32,
                            "{tensor_type} cols {cols} tokens {tokens} scalar {scalar} [{i}]: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_and_bases_are_refused() {
        let row = TensorType::SeedLm4.row_bytes(16).unwrap();
        assert!(
            SeedLmMatrix::from_bytes(TensorType::SeedLm4, 2, 16, &vec![0; 2 * row], -8).is_some()
        );
        assert!(
            SeedLmMatrix::from_bytes(TensorType::SeedLm4, 2, 16, &vec![0; 2 * row - 1], -8)
                .is_none()
        );
        assert!(
            SeedLmMatrix::from_bytes(TensorType::SeedLm4, 2, 16, &vec![0; 2 * row], 120).is_none()
        );
        assert!(SeedLmMatrix::from_bytes(TensorType::Q4_0, 2, 32, &[0; 36], 0).is_none());
    }
}
