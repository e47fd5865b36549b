//! AVX2 + FMA + F16C versions of the block-quantised row kernels (the scalar ones in `quantized` are the
//! reference). Per block: unpack nibbles to bytes, `maddubs` (u8 x i8 -> i16 pairs, no saturation for these
//! ranges), `madd` to i32, convert, and one FMA with the product of the two scales.

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

/// Sum of signed-by-signed byte products: moves the sign of `x` onto `y` so `maddubs` can be used.
#[inline(always)]
unsafe fn mul_sum_i8_i8(x: __m256i, y: __m256i) -> __m256 {
    mul_sum_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
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

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q4_0(rows: &[BlockQ4_0], blocks_per_row: usize, x: &[Q8Block], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(blocks_per_row)) {
        let mut acc = _mm256_setzero_ps();
        for (b, a) in row.iter().zip(x) {
            let w = _mm256_sub_epi8(unpack_nibbles(&b.qs), _mm256_set1_epi8(8));
            let scale = _mm256_set1_ps(f16_to_f32(b.d) * a.d);
            acc = _mm256_fmadd_ps(scale, mul_sum_i8_i8(w, load_activations(a)), acc);
        }
        *o = horizontal_sum(acc);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q4_1(rows: &[BlockQ4_1], blocks_per_row: usize, x: &[Q8Block], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(blocks_per_row)) {
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0.0f32;
        for (b, a) in row.iter().zip(x) {
            let scale = _mm256_set1_ps(f16_to_f32(b.d) * a.d);
            acc = _mm256_fmadd_ps(
                scale,
                mul_sum_u8_i8(unpack_nibbles(&b.qs), load_activations(a)),
                acc,
            );
            mins += f16_to_f32(b.m) * a.s;
        }
        *o = horizontal_sum(acc) + mins;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q8_0(rows: &[BlockQ8_0], blocks_per_row: usize, x: &[Q8Block], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(blocks_per_row)) {
        let mut acc = _mm256_setzero_ps();
        for (b, a) in row.iter().zip(x) {
            let w = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
            let scale = _mm256_set1_ps(f16_to_f32(b.d) * a.d);
            acc = _mm256_fmadd_ps(scale, mul_sum_i8_i8(w, load_activations(a)), acc);
        }
        *o = horizontal_sum(acc);
    }
}
