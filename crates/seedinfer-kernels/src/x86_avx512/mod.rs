//! The x86-64 AVX-512 instruction set (F + BW + VL + VNNI, on top of AVX2 + FMA + F16C): one file per kernel
//! family, each computing what its AVX2 twin in `x86_avx2/` computes with wider registers and `vpdpbusd` int8
//! dot products. Chosen at run time (`Isa::Avx512`, see `isa`); nothing here may be called unless
//! `isa::detected()` reports it. A kernel family without a file here runs its AVX2 kernel on these machines.
//!
//! This file holds what both kernel files share: joining two row quads' AVX2 vectors into one 512-bit register
//! (low half quad `g`, high half quad `g + 1`) and widening their scales.

#![cfg(target_arch = "x86_64")]

pub(crate) mod attention;
pub(crate) mod k_quants;
pub(crate) mod quads;

use crate::quantized::row_quads::QUAD;
use std::arch::x86_64::*;

/// Two quads' chunk vectors side by side.
#[inline(always)]
pub(crate) unsafe fn join(low: __m256i, high: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
}

/// [`join`] of f32 vectors.
#[inline(always)]
pub(crate) unsafe fn join_ps(low: __m256, high: __m256) -> __m512 {
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        _mm512_castpd256_pd512(_mm256_castps_pd(low)),
        _mm256_castps_pd(high),
    ))
}

/// `out[i] = join(low[i], high[i])`, written out as a loop over indices (no closure: see docs/architecture.md).
#[inline(always)]
pub(crate) unsafe fn join_all<const N: usize>(
    low: &[__m256i; N],
    high: &[__m256i; N],
    out: &mut [__m512i; N],
) {
    for i in 0..N {
        out[i] = join(low[i], high[i]);
    }
}

/// Two quads' four f16 values each, widened: `[a0 a1 a2 a3 b0 b1 b2 b3]`.
#[inline(always)]
pub(crate) unsafe fn pair_f32(a: &[half::f16; QUAD], b: &[half::f16; QUAD]) -> __m256 {
    let low = _mm_loadl_epi64(a.as_ptr() as *const __m128i);
    let high = _mm_loadl_epi64(b.as_ptr() as *const __m128i);
    _mm256_cvtph_ps(_mm_unpacklo_epi64(low, high))
}

/// Scales for the chunk layout of eight rows: `[d0 d0 d1 d1 ... d7 d7]`.
#[inline(always)]
pub(crate) unsafe fn spread_pairs8(eight: __m256) -> __m512 {
    let index = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    _mm512_permutexvar_ps(index, _mm512_castps256_ps512(eight))
}
