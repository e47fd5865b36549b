//! Horizontal reductions of one AVX register, shared by the AVX2 kernels. Both reduce pairwise in the same
//! order (8 -> 4 -> 2 -> 1), which the scalar references mirror where results must match bit for bit.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// Sum of the 8 lanes.
#[inline(always)]
pub(crate) unsafe fn horizontal_sum(v: __m256) -> f32 {
    let sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
    _mm_cvtss_f32(_mm_add_ss(sum2, _mm_movehdup_ps(sum2)))
}

/// Largest of the 8 lanes.
#[inline(always)]
pub(crate) unsafe fn horizontal_max(v: __m256) -> f32 {
    let max4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let max2 = _mm_max_ps(max4, _mm_movehl_ps(max4, max4));
    _mm_cvtss_f32(_mm_max_ss(max2, _mm_movehdup_ps(max2)))
}
