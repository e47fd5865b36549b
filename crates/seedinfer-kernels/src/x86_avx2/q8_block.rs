//! AVX2 + FMA + F16C int8 activation quantisation (`q8_block`'s scalar code is the reference), plain and fused
//! with RMSNorm.

use super::horizontal_max;
use crate::q8_block::{inverse_rms, Q8Block};
use crate::q8k_block::{Q8KBlock, SUPER_BLOCK};
use std::arch::x86_64::*;

/// `q8_block::quantize_activations` with intrinsics (bit for bit the scalar body: the maximum is exact, the
/// scale and its inverse are computed the same way, and `vroundps` rounds half to even like `round_ties_even`).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `input.len()` is a multiple of 32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_activations(input: &[f32], out: &mut Vec<Q8Block>) {
    out.clear();
    out.reserve(input.len() / 32);
    for x in input.chunks_exact(32) {
        let p = x.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        out.push(quantize_block(v));
    }
}

/// `rms_norm::rms_norm_quantized` with intrinsics: each block of the normalised row is computed in registers
/// (`x * scale * weight`, rounded like the scalar expression) and quantised there.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `x.len()` is a multiple of `weight.len()`, itself a multiple of 32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rms_norm_quantized(x: &[f32], weight: &[f32], eps: f32, out: &mut Vec<Q8Block>) {
    out.clear();
    out.reserve(x.len() / 32);
    for row in x.chunks_exact(weight.len()) {
        let scale = _mm256_set1_ps(inverse_rms(row, eps));
        for (x, w) in row.chunks_exact(32).zip(weight.chunks_exact(32)) {
            let normed = |j: usize| {
                let scaled = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(8 * j)), scale);
                _mm256_mul_ps(scaled, _mm256_loadu_ps(w.as_ptr().add(8 * j)))
            };
            let v = [normed(0), normed(1), normed(2), normed(3)];
            out.push(quantize_block(v));
        }
    }
}

/// One block of 32 activations (four registers of eight, in order) quantised like
/// `q8_block::quantize_activations_scalar`. No `map`/`from_fn` here: a closure handed to a generic function may be
/// compiled apart from this one, without its target features, and every intrinsic in it becomes a call (seen
/// 2026-12-02: 20% of a 576x576 GEMM went to `_mm256_mul_ps` calls after this file moved).
#[inline(always)]
unsafe fn quantize_block(v: [__m256; 4]) -> Q8Block {
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let a = [
        _mm256_and_ps(v[0], magnitude),
        _mm256_and_ps(v[1], magnitude),
        _mm256_and_ps(v[2], magnitude),
        _mm256_and_ps(v[3], magnitude),
    ];
    let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
    let amax = horizontal_max(m);
    let d = amax / 127.0;
    let inverse = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    let round = |v: __m256| {
        _mm256_cvtps_epi32(_mm256_round_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(_mm256_mul_ps(v, inverse)))
    };
    let q = [round(v[0]), round(v[1]), round(v[2]), round(v[3])];
    let sum_i32 = |s4: __m128i| {
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
        _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b00_00_00_01)))
    };
    // q[j] holds elements 8j..8j + 8: its low half is an even group of four, its high half an odd one.
    let all = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    let group_sums = [
        sum_i32(_mm256_castsi256_si128(all)),
        sum_i32(_mm256_extracti128_si256(all, 1)),
    ];
    let packed = _mm256_packs_epi16(
        _mm256_packs_epi32(q[0], q[1]),
        _mm256_packs_epi32(q[2], q[3]),
    );
    let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let mut block = Q8Block {
        d: half::f16::from_f32(d).to_f32(),
        s: half::f16::from_f32(d * (group_sums[0] + group_sums[1]) as f32).to_f32(),
        group_sums,
        qs: [0; 32],
    };
    _mm256_storeu_si256(block.qs.as_mut_ptr() as *mut __m256i, ordered);
    block
}

/// `q8k_block::quantize_activations_k` with intrinsics, bit for bit: the largest magnitude is exact (NaN lanes are
/// skipped as the scalar comparison skips them), its first holder gives the sign, and `nearest_int` is the same
/// unfused multiply and add of 1.5 x 2^23.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `input.len()` is a multiple of 256.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_activations_k(input: &[f32], out: &mut Vec<Q8KBlock>) {
    out.clear();
    out.reserve(input.len() / SUPER_BLOCK);
    for x in input.chunks_exact(SUPER_BLOCK) {
        out.push(quantize_super_block(x));
    }
}

#[inline(always)]
unsafe fn quantize_super_block(x: &[f32]) -> Q8KBlock {
    let p = x.as_ptr();
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    for i in 0..SUPER_BLOCK / 8 {
        // `max(a, b)` returns `b` when `a` is NaN: a NaN never becomes the maximum.
        m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(p.add(8 * i)), magnitude), m);
    }
    let amax = horizontal_max(m);
    let mut block = Q8KBlock::default();
    if amax == 0.0 {
        return block;
    }
    let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
    let iscale = -127.0 / max;
    let (scale, magic) = (_mm256_set1_ps(iscale), _mm256_set1_ps(12_582_912.0));
    let (mantissa, offset, top) = (
        _mm256_set1_epi32(0x007f_ffff),
        _mm256_set1_epi32(0x0040_0000),
        _mm256_set1_epi32(127),
    );
    let nearest = |v: __m256| {
        let bits = _mm256_castps_si256(_mm256_add_ps(_mm256_mul_ps(scale, v), magic));
        _mm256_min_epi32(
            _mm256_sub_epi32(_mm256_and_si256(bits, mantissa), offset),
            top,
        )
    };
    for i in 0..SUPER_BLOCK / 32 {
        let at = p.add(32 * i);
        let q = [
            nearest(_mm256_loadu_ps(at)),
            nearest(_mm256_loadu_ps(at.add(8))),
            nearest(_mm256_loadu_ps(at.add(16))),
            nearest(_mm256_loadu_ps(at.add(24))),
        ];
        let packed = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let ordered =
            _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(block.qs.as_mut_ptr().add(32 * i) as *mut __m256i, ordered);
    }
    for (sum, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
        *sum = group.iter().map(|&q| q as i16).sum();
    }
    block.d = 1.0 / iscale;
    block
}
