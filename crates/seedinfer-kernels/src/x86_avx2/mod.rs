//! The x86-64 AVX2 + FMA + F16C instruction set: one file per kernel family, each the SIMD twin of a scalar
//! reference that lives with its format or operation. Chosen at run time (`Isa::Avx2`, see `isa`); nothing here
//! may be called unless `isa::detected()` reports it.
//!
//! This file holds the intrinsic helpers they share: horizontal reductions of one register. Both reduce pairwise
//! in the same order (8 -> 4 -> 2 -> 1), which the scalar references mirror where results must match bit for bit.

#![cfg(target_arch = "x86_64")]

pub(crate) mod attention;
pub(crate) mod float_rows;
pub(crate) mod k_quants;
pub(crate) mod q8_block;
pub(crate) mod quads;

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
