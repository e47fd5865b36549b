//! AVX2 + FMA + F16C versions of the block-quantised row kernels (the scalar ones in `quantized` are the
//! reference). Per block: unpack nibbles to bytes, `maddubs` (u8 x i8 -> i16 pairs, no saturation for these
//! ranges), `madd` to i32, convert, and one FMA with the product of the two scales. Several tokens share each
//! unpacked weight block (a token tile), which is what makes a prompt cheaper per token than decoding.

#![cfg(target_arch = "x86_64")]

use crate::quantized::Q8Block;
use seedinfer_formats::{BlockQ4_0, BlockQ4_1, BlockQ8_0};
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn f16_to_f32(value: half::f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(value.to_bits() as i32)))
}

/// 16 packed bytes of nibbles -> 32 bytes: low nibbles (elements 0..16) then high nibbles (16..32).
#[inline(always)]
unsafe fn unpack_nibbles(qs: &[u8; 16]) -> __m256i {
    let packed = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    let high = _mm_srli_epi16(packed, 4);
    _mm256_and_si256(_mm256_set_m128i(high, packed), _mm256_set1_epi8(0x0f))
}

/// Sum of unsigned-by-signed byte products, as 8 f32 lanes.
#[inline(always)]
unsafe fn mul_sum_u8_i8(unsigned: __m256i, signed: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(unsigned, signed);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

#[inline(always)]
unsafe fn horizontal_sum(v: __m256) -> f32 {
    let sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
    _mm_cvtss_f32(_mm_add_ss(sum2, _mm_movehdup_ps(sum2)))
}

#[inline(always)]
unsafe fn load_activations(a: &Q8Block) -> __m256i {
    _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i)
}

/// What the tiled kernel needs from a weight block format.
trait WeightBlock {
    /// The 32 weights as bytes: unsigned (0..16) for Q4_1, signed for Q4_0 (centred) and Q8_0.
    unsafe fn weights(&self) -> __m256i;
    const SIGNED: bool;
    fn scale(&self) -> half::f16;
    /// The Q4_1 minimum, multiplied with each activation block's sum.
    fn minimum(&self) -> Option<half::f16>;
}

impl WeightBlock for BlockQ4_0 {
    #[inline(always)]
    unsafe fn weights(&self) -> __m256i {
        _mm256_sub_epi8(unpack_nibbles(&self.qs), _mm256_set1_epi8(8))
    }
    const SIGNED: bool = true;
    #[inline(always)]
    fn scale(&self) -> half::f16 {
        self.d
    }
    #[inline(always)]
    fn minimum(&self) -> Option<half::f16> {
        None
    }
}

impl WeightBlock for BlockQ4_1 {
    #[inline(always)]
    unsafe fn weights(&self) -> __m256i {
        unpack_nibbles(&self.qs)
    }
    const SIGNED: bool = false;
    #[inline(always)]
    fn scale(&self) -> half::f16 {
        self.d
    }
    #[inline(always)]
    fn minimum(&self) -> Option<half::f16> {
        Some(self.m)
    }
}

impl WeightBlock for BlockQ8_0 {
    #[inline(always)]
    unsafe fn weights(&self) -> __m256i {
        _mm256_loadu_si256(self.qs.as_ptr() as *const __m256i)
    }
    const SIGNED: bool = true;
    #[inline(always)]
    fn scale(&self) -> half::f16 {
        self.d
    }
    #[inline(always)]
    fn minimum(&self) -> Option<half::f16> {
        None
    }
}

/// Tokens that share one unpacking of each weight block.
const TOKEN_TILE: usize = 4;

/// Dot products of one weight row with up to `TOKEN_TILE` tokens' activations (`x` holds every token,
/// `blocks_per_row` blocks each), unpacking each weight block once. Each token's sum is formed in the same
/// order whatever the tile size, so a prompt token gets exactly the value a decoded token would.
#[inline(always)]
unsafe fn row_tile<B: WeightBlock, const T: usize>(
    row: &[B],
    x: &[Q8Block],
    first_token: usize,
    out: &mut [f32],
) {
    let n = row.len();
    // One slice per token, checked once here so the block loop below indexes without bounds checks.
    let tokens: [&[Q8Block]; T] =
        std::array::from_fn(|k| &x[(first_token + k) * n..(first_token + k + 1) * n]);
    let mut acc = [_mm256_setzero_ps(); T];
    let mut mins = [0.0f32; T];
    for (i, b) in row.iter().enumerate() {
        let w = b.weights();
        // maddubs wants its first operand unsigned: move signed weights' signs onto the activations.
        let unsigned = if B::SIGNED { _mm256_sign_epi8(w, w) } else { w };
        let d = f16_to_f32(b.scale());
        let m = b.minimum().map(|m| f16_to_f32(m));
        for k in 0..T {
            // SAFETY: every token slice holds `n` blocks and `i < n`.
            let a = tokens[k].get_unchecked(i);
            let y = load_activations(a);
            let signed = if B::SIGNED { _mm256_sign_epi8(y, w) } else { y };
            acc[k] = _mm256_fmadd_ps(
                _mm256_set1_ps(d * a.d),
                mul_sum_u8_i8(unsigned, signed),
                acc[k],
            );
            if let Some(m) = m {
                mins[k] += m * a.s;
            }
        }
    }
    for k in 0..T {
        out[k] = horizontal_sum(acc[k]) + mins[k];
    }
}

/// `out[r * tokens + t] = dot(row r, token t)` for a block of rows and every token.
#[inline(always)]
unsafe fn rows_tokens<B: WeightBlock>(
    rows: &[B],
    blocks_per_row: usize,
    x: &[Q8Block],
    tokens: usize,
    out: &mut [f32],
) {
    for (row, out_row) in rows
        .chunks_exact(blocks_per_row)
        .zip(out.chunks_exact_mut(tokens))
    {
        let mut t = 0;
        while t + TOKEN_TILE <= tokens {
            row_tile::<B, TOKEN_TILE>(row, x, t, &mut out_row[t..t + TOKEN_TILE]);
            t += TOKEN_TILE;
        }
        while t < tokens {
            row_tile::<B, 1>(row, x, t, &mut out_row[t..t + 1]);
            t += 1;
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q4_0(
    rows: &[BlockQ4_0],
    blocks_per_row: usize,
    x: &[Q8Block],
    tokens: usize,
    out: &mut [f32],
) {
    rows_tokens(rows, blocks_per_row, x, tokens, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q4_1(
    rows: &[BlockQ4_1],
    blocks_per_row: usize,
    x: &[Q8Block],
    tokens: usize,
    out: &mut [f32],
) {
    rows_tokens(rows, blocks_per_row, x, tokens, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q8_0(
    rows: &[BlockQ8_0],
    blocks_per_row: usize,
    x: &[Q8Block],
    tokens: usize,
    out: &mut [f32],
) {
    rows_tokens(rows, blocks_per_row, x, tokens, out)
}
