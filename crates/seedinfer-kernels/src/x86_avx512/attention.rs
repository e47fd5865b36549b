//! AVX-512 steps of the AVX2 attention kernel (`x86_avx2::attention`, whose driver runs them): the same lanes,
//! two at a time. Scores: a 512-bit register holds the FMA lanes of two positions (low half position `2k`, high
//! half `2k + 1`), each still summing its columns in order, and the halves meet in AVX2's reduction. Weights:
//! sixteen `exp` lanes, their sum still added eight lanes at a time in order. Values: sixteen columns per
//! register. Every lane sees the AVX2 kernel's operations in its order, so the bits are AVX2's.

#![cfg(target_arch = "x86_64")]

use super::join_ps;
use crate::attention::{with_rows, KvElement, KvHead, Partial};
use crate::x86_avx2::attention::{
    exp as exp8, exp_tail, groups, scores_max, store_scores, sums_of_eight, value_weight, Block,
    Width,
};
use std::arch::x86_64::*;
use std::ops::Range;

/// [`crate::x86_avx2::attention::exp`] on sixteen lanes: the same operations and constants lane for lane.
#[inline(always)]
unsafe fn exp(x: __m512) -> __m512 {
    use crate::x86_avx2::attention::exp_constants::*;
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(LOWEST)),
        _mm512_set1_ps(HIGHEST),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HIGH), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LOW), r);
    let mut p = _mm512_set1_ps(POLYNOMIAL[0]);
    for c in &POLYNOMIAL[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    let y = _mm512_fmadd_ps(
        p,
        _mm512_mul_ps(r, r),
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    let exponent = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(y, _mm512_castsi512_ps(exponent))
}

#[inline(always)]
unsafe fn low(v: __m512) -> __m256 {
    _mm512_castps512_ps256(v)
}

#[inline(always)]
unsafe fn high(v: __m512) -> __m256 {
    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
}

/// Eight floats at `p` in both halves.
#[inline(always)]
unsafe fn twice(p: *const f32) -> __m512 {
    _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(p as *const f64)))
}

/// 512-bit registers.
pub(crate) struct Avx512;

impl Width for Avx512 {
    // Index loops over the register tiles read more plainly than zipped iterators here.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn eight_scores<const G: usize, T: KvElement>(
        b: &Block<G, T>,
        p: usize,
        key_scales: __m256,
        scale: __m256,
        scores: *mut f32,
    ) {
        // Four registers of position pairs per query: at most 16 accumulators, 4 key pairs and a query chunk.
        let mut acc = [[_mm512_setzero_ps(); 4]; G];
        for c in (0..b.key_dim).step_by(8) {
            let mut keys = [_mm512_setzero_ps(); 4];
            for k in 0..4 {
                let row = b.keys.add((p + 2 * k) * b.key_stride + c);
                keys[k] = join_ps(T::load8(row), T::load8(row.add(b.key_stride)));
            }
            for g in 0..G {
                let query = twice(b.q[g].add(c));
                for k in 0..4 {
                    acc[g][k] = _mm512_fmadd_ps(query, keys[k], acc[g][k]);
                }
            }
        }
        for g in 0..G {
            let a = &acc[g];
            let lanes = [
                low(a[0]),
                high(a[0]),
                low(a[1]),
                high(a[1]),
                low(a[2]),
                high(a[2]),
                low(a[3]),
                high(a[3]),
            ];
            store_scores::<T>(
                sums_of_eight(lanes),
                key_scales,
                scale,
                scores.add(g * b.count + p),
            );
        }
    }

    #[inline(always)]
    unsafe fn exp_and_sum(scores: &mut [f32]) -> (f32, f32) {
        let max = scores_max(scores);
        let (max_v, max_wide) = (_mm256_set1_ps(max), _mm512_set1_ps(max));
        let mut sum = _mm256_setzero_ps();
        let sixteens = scores.len() / 16 * 16;
        for c in scores[..sixteens].chunks_exact_mut(16) {
            let e = exp(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), max_wide));
            _mm512_storeu_ps(c.as_mut_ptr(), e);
            sum = _mm256_add_ps(sum, low(e));
            sum = _mm256_add_ps(sum, high(e));
        }
        if scores.len() - sixteens >= 8 {
            let c = scores.as_mut_ptr().add(sixteens);
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c), max_v));
            _mm256_storeu_ps(c, e);
            sum = _mm256_add_ps(sum, e);
        }
        exp_tail(scores, sum, max_v)
    }

    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn weighted_values<const G: usize, T: KvElement>(
        b: &Block<G, T>,
        scores: &[f32],
        outs: &mut [&mut [f32]],
    ) {
        let mut c0 = 0;
        while c0 + 64 <= b.head_dim {
            columns::<4, G, T>(b, scores, outs, c0);
            c0 += 64;
        }
        if c0 < b.head_dim {
            // The head size is a multiple of 32: one pair of registers is left.
            columns::<2, G, T>(b, scores, outs, c0);
        }
    }
}

/// [`Width::weighted_values`] of columns `c0..c0 + 16 N`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn columns<const N: usize, const G: usize, T: KvElement>(
    b: &Block<G, T>,
    scores: &[f32],
    outs: &mut [&mut [f32]],
    c0: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); N]; G];
    for p in 0..b.count {
        let v = b.values.add(p * b.stride + c0);
        let mut rows = [_mm512_setzero_ps(); N];
        for j in 0..N {
            rows[j] = join_ps(T::load8(v.add(16 * j)), T::load8(v.add(16 * j + 8)));
        }
        for g in 0..G {
            let w = _mm512_set1_ps(value_weight(b, scores, g, p));
            for j in 0..N {
                acc[g][j] = _mm512_fmadd_ps(w, rows[j], acc[g][j]);
            }
        }
    }
    for (out, acc) in outs.iter_mut().zip(&acc) {
        for (j, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(c0 + 16 * j), *acc);
        }
    }
}

/// The AVX-512 twin of [`crate::x86_avx2::attention::attend_range`], giving its bits.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL (and AVX2, FMA, F16C); otherwise as the AVX2 kernel.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub unsafe fn attend_range(
    kv: &KvHead,
    positions: Range<usize>,
    scale: f32,
    queries: &[&[f32]],
    outs: &mut [&mut [f32]],
    scores: &mut [f32],
    partials: &mut [Partial],
    streaming: bool,
) {
    with_rows!(kv, |keys, values| if streaming {
        groups::<Avx512, true, _>(
            kv, keys, values, positions, scale, queries, outs, scores, partials,
        )
    } else {
        groups::<Avx512, false, _>(
            kv, keys, values, positions, scale, queries, outs, scores, partials,
        )
    })
}
