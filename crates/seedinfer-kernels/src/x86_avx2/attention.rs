//! AVX2 + FMA twin of `attention::attend_range_scalar` for head sizes that are multiples of 32 and groups of up to
//! `MAX_GROUP` query heads: each key row is loaded once for the group's dot products, each value row once for the
//! group's weighted sums (kept in registers, 32 columns at a time). One body serves f32, f16 (F16C) and int8 rows;
//! int8 row scales multiply the dot products and the value weights. A query's arithmetic does not depend on how
//! many queries share the call. The driver ([`group`]) is written once over the vector steps of a register width
//! ([`Width`]): [`Avx2`] here, and `x86_avx512::attention`'s, which give the same bits.

#![cfg(target_arch = "x86_64")]

use super::{horizontal_max, horizontal_sum};
use crate::attention::{with_rows, KvElement, KvHead, Partial, Rows};
use crate::widen::Widen;
use half::f16;
use std::arch::x86_64::*;
use std::ops::Range;

/// The constants of the vector `exp` ([`exp`] here, its 16-lane twin in `x86_avx512::attention`): one definition,
/// so both give the same bits. Inputs are clamped to `[LOWEST, HIGHEST]`; `ln 2 = LN2_HIGH + LN2_LOW` (Cephes'
/// split); `POLYNOMIAL` holds Cephes' `expf` coefficients, highest degree first.
pub(crate) mod exp_constants {
    pub const LOWEST: f32 = -87.0;
    pub const HIGHEST: f32 = 88.0;
    pub const LN2_HIGH: f32 = 0.693_359_4;
    pub const LN2_LOW: f32 = -2.121_944_4e-4;
    pub const POLYNOMIAL: [f32; 6] = [
        1.987_569_2e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];
}

/// `e^x` for 8 lanes: Cephes' `expf` (range reduction by ln 2 in two parts, degree-6 polynomial), within 2 ulp of
/// the correctly rounded result for inputs in [-87, 88]; inputs outside are clamped to it.
#[inline(always)]
pub(crate) unsafe fn exp(x: __m256) -> __m256 {
    use exp_constants::*;
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(LOWEST)),
        _mm256_set1_ps(HIGHEST),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HIGH), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LOW), r);
    let mut p = _mm256_set1_ps(POLYNOMIAL[0]);
    for c in &POLYNOMIAL[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
    }
    let y = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let exponent = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(y, _mm256_castsi256_ps(exponent))
}

/// Lane `j` of the result is the sum of the lanes of `v[j]`.
#[inline(always)]
pub(crate) unsafe fn sums_of_eight(v: [__m256; 8]) -> __m256 {
    let h0123 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    let h4567 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(h0123, h4567),
        _mm256_permute2f128_ps::<0x31>(h0123, h4567),
    )
}

/// A group's queries (`G` of them, `head_dim` floats each) and one block's rows, as the kernel steps see them.
pub(crate) struct Block<'a, const G: usize, T> {
    pub q: [*const f32; G],
    /// Position `start`'s key and value rows (this head's part); value rows are `stride` elements apart, key rows
    /// `key_stride`.
    pub keys: *const T,
    pub values: *const T,
    pub value_rows: Rows<'a, T>,
    pub start: usize,
    pub stride: usize,
    pub head_dim: usize,
    pub key_stride: usize,
    /// Channels of a key row and of a query: a multiple of 8.
    pub key_dim: usize,
    pub count: usize,
}

/// What a register width contributes to one group's attention over a block: the three vector steps. The driver
/// ([`group`]) is shared, so every width computes each lane with the same operations in the same order: the
/// AVX-512 steps give the AVX2 bits.
pub(crate) trait Width {
    /// `scores[g * count + p + j] = scale · key_scale · (q_g · key_{p+j})` for `j < 8`, each dot product summed
    /// as eight column-ordered FMA lanes reduced by [`sums_of_eight`].
    unsafe fn eight_scores<const G: usize, T: KvElement>(
        b: &Block<G, T>,
        p: usize,
        key_scales: __m256,
        scale: __m256,
        scores: *mut f32,
    );
    /// Replaces `scores` by `e^(score - max)` through the vector `exp`, and returns `(max, sum)`, the sum taken
    /// eight lanes at a time in order, then the tail.
    unsafe fn exp_and_sum(scores: &mut [f32]) -> (f32, f32);
    /// `outs[g][c] = sum over p, in order, of w_gp · value_p[c]` (FMA per lane).
    unsafe fn weighted_values<const G: usize, T: KvElement>(
        b: &Block<G, T>,
        scores: &[f32],
        outs: &mut [&mut [f32]],
    );
}

/// 256-bit registers: eight lanes.
pub(crate) struct Avx2;

impl Width for Avx2 {
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
        // Each key chunk is widened once and serves the whole group. The eight positions are taken `PASS` at a
        // time so that the group's accumulators of a pass stay in registers; every accumulator still sums its
        // chunks in column order, whatever `G` is.
        let pass = match G {
            1 => 8,
            2 | 3 => 4,
            _ => 2,
        };
        let mut acc = [[_mm256_setzero_ps(); 8]; G];
        for first in (0..8).step_by(pass) {
            for c in (0..b.key_dim).step_by(8) {
                for j in first..first + pass {
                    let key = T::load8(b.keys.add((p + j) * b.key_stride + c));
                    for g in 0..G {
                        acc[g][j] = _mm256_fmadd_ps(_mm256_loadu_ps(b.q[g].add(c)), key, acc[g][j]);
                    }
                }
            }
        }
        for g in 0..G {
            store_scores::<T>(
                sums_of_eight(acc[g]),
                key_scales,
                scale,
                scores.add(g * b.count + p),
            );
        }
    }

    #[inline(always)]
    unsafe fn exp_and_sum(scores: &mut [f32]) -> (f32, f32) {
        let max_v = _mm256_set1_ps(scores_max(scores));
        let whole = scores.len() / 8 * 8;
        let mut sum = _mm256_setzero_ps();
        for c in scores[..whole].chunks_exact_mut(8) {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), max_v));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
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
        for c0 in (0..b.head_dim).step_by(32) {
            let mut acc = [[_mm256_setzero_ps(); 4]; G];
            for p in 0..b.count {
                let v = b.values.add(p * b.stride + c0);
                let mut rows = [_mm256_setzero_ps(); 4];
                for j in 0..4 {
                    rows[j] = T::load8(v.add(8 * j));
                }
                for g in 0..G {
                    let w = _mm256_set1_ps(value_weight(b, scores, g, p));
                    for j in 0..4 {
                        acc[g][j] = _mm256_fmadd_ps(w, rows[j], acc[g][j]);
                    }
                }
            }
            for (out, acc) in outs.iter_mut().zip(&acc) {
                for (j, acc) in acc.iter().enumerate() {
                    _mm256_storeu_ps(out.as_mut_ptr().add(c0 + 8 * j), *acc);
                }
            }
        }
    }
}

/// Eight dot products times the key rows' scales (int8) and the attention scale, stored at `out`.
#[inline(always)]
pub(crate) unsafe fn store_scores<T: KvElement>(
    dots: __m256,
    key_scales: __m256,
    scale: __m256,
    out: *mut f32,
) {
    let dots = if T::SCALED {
        _mm256_mul_ps(dots, key_scales)
    } else {
        dots
    };
    _mm256_storeu_ps(out, _mm256_mul_ps(dots, scale));
}

/// Softmax weight of query `g` for position `p` of the block, times the value row's scale (int8).
#[inline(always)]
pub(crate) unsafe fn value_weight<const G: usize, T: KvElement>(
    b: &Block<G, T>,
    scores: &[f32],
    g: usize,
    p: usize,
) -> f32 {
    let w = *scores.get_unchecked(g * b.count + p);
    if T::SCALED {
        w * b.value_rows.scale(b.start + p)
    } else {
        w
    }
}

/// Largest score (the order of `max` does not change it).
#[inline(always)]
pub(crate) unsafe fn scores_max(scores: &[f32]) -> f32 {
    let (body, tail) = scores.split_at(scores.len() / 8 * 8);
    let mut max = tail.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !body.is_empty() {
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in body.chunks_exact(8) {
            m = _mm256_max_ps(m, _mm256_loadu_ps(c.as_ptr()));
        }
        max = max.max(horizontal_max(m));
    }
    max
}

/// The end of [`Width::exp_and_sum`]: the body's eight-lane `sum` reduced, then the scores after the last whole
/// eight through the vector `exp` (a padded copy), so a score's weight does not depend on where it falls.
#[inline(always)]
pub(crate) unsafe fn exp_tail(scores: &mut [f32], sum: __m256, max_v: __m256) -> (f32, f32) {
    let max = _mm256_cvtss_f32(max_v);
    let whole = scores.len() / 8 * 8;
    let tail = &mut scores[whole..];
    let mut total = horizontal_sum(sum);
    if !tail.is_empty() {
        let mut padded = [max; 8];
        padded[..tail.len()].copy_from_slice(tail);
        let mut e = [0.0f32; 8];
        _mm256_storeu_ps(
            e.as_mut_ptr(),
            exp(_mm256_sub_ps(_mm256_loadu_ps(padded.as_ptr()), max_v)),
        );
        for (t, e) in tail.iter_mut().zip(e) {
            *t = e;
            total += e;
        }
    }
    (max, total)
}

/// One group's attention over a block of positions, with the vector steps of width `W`.
// Index loops over the register tiles read more plainly than zipped iterators here.
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn group<W: Width, const G: usize, const PREFETCH: bool, T: KvElement>(
    kv: &KvHead,
    key_rows: Rows<T>,
    value_rows: Rows<T>,
    positions: Range<usize>,
    scale: f32,
    queries: &[&[f32]],
    outs: &mut [&mut [f32]],
    scores: &mut [f32],
) -> [Partial; G] {
    let (hd, stride, count, start) = (kv.head_dim, kv.stride, positions.len(), positions.start);
    let (kd, key_stride) = (kv.key_dim, kv.key_stride);
    let mut q = [std::ptr::null::<f32>(); G];
    for g in 0..G {
        q[g] = queries[g].as_ptr();
    }
    let b = Block {
        q,
        keys: key_rows
            .data
            .as_ptr()
            .add(kv.key_offset + start * key_stride),
        values: value_rows.data.as_ptr().add(kv.offset + start * stride),
        value_rows,
        start,
        stride,
        head_dim: hd,
        key_stride,
        key_dim: kd,
        count,
    };
    let scale_v = _mm256_set1_ps(scale);
    // Eight positions at a time: eight independent FMA chains per head, and one transposing reduction for all
    // eight sums instead of eight horizontal sums.
    let mut p = 0;
    while p + 8 <= count {
        // Streaming: the rows come from memory (a cached block is only a few KB, too short for the hardware prefetcher
        // to ramp up): ask for the next eight keys, and for these eight positions' values, ahead of use.
        if PREFETCH {
            prefetch_rows(b.keys, p + 8..(p + 16).min(count), key_stride, kd);
            prefetch_rows(b.values, p..p + 8, stride, hd);
        }
        let key_scales = if T::SCALED {
            let mut s = [0.0f32; 8];
            for j in 0..8 {
                s[j] = key_rows.scale(start + p + j);
            }
            _mm256_loadu_ps(s.as_ptr())
        } else {
            _mm256_setzero_ps()
        };
        W::eight_scores(&b, p, key_scales, scale_v, scores.as_mut_ptr());
        p += 8;
    }
    for p in p..count {
        let k = b.keys.add(p * key_stride);
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        let pairs = kd / 16 * 16;
        for c in (0..pairs).step_by(16) {
            let (k0, k1) = (T::load8(k.add(c)), T::load8(k.add(c + 8)));
            for g in 0..G {
                acc[g][0] = _mm256_fmadd_ps(_mm256_loadu_ps(q[g].add(c)), k0, acc[g][0]);
                acc[g][1] = _mm256_fmadd_ps(_mm256_loadu_ps(q[g].add(c + 8)), k1, acc[g][1]);
            }
        }
        if pairs < kd {
            // Pruned keys of an odd number of eights: the last eight channels.
            let k0 = T::load8(k.add(pairs));
            for g in 0..G {
                acc[g][0] = _mm256_fmadd_ps(_mm256_loadu_ps(q[g].add(pairs)), k0, acc[g][0]);
            }
        }
        let key_scale = if T::SCALED {
            key_rows.scale(start + p)
        } else {
            1.0
        };
        for g in 0..G {
            let mut dot = horizontal_sum(_mm256_add_ps(acc[g][0], acc[g][1]));
            if T::SCALED {
                dot *= key_scale;
            }
            *scores.get_unchecked_mut(g * count + p) = dot * scale;
        }
    }
    let mut partials = [Partial::default(); G];
    for g in 0..G {
        let (max, sum) = W::exp_and_sum(&mut scores[g * count..(g + 1) * count]);
        partials[g] = Partial { max, sum };
    }
    W::weighted_values(&b, scores, outs);
    partials
}

/// `out` = rows `0..out.len() / head_dim` of `source` (row `p` at `p * stride + offset`, `head_dim` long) widened
/// from f16 (exact), eight elements at a time.
///
/// # Safety
/// The CPU must have AVX2 and F16C; `head_dim` is a multiple of 8 and `out.len()` of `head_dim` (a row outside
/// `source` panics).
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn widen_f16_rows(
    source: &[f16],
    stride: usize,
    offset: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    debug_assert!(head_dim.is_multiple_of(8) && out.len().is_multiple_of(head_dim));
    for (p, row) in out.chunks_exact_mut(head_dim).enumerate() {
        let from = source[p * stride + offset..][..head_dim].as_ptr();
        for c in (0..head_dim).step_by(8) {
            _mm256_storeu_ps(row.as_mut_ptr().add(c), f16::load8(from.add(c)));
        }
    }
}

/// Prefetches (a hint: no effect on results) the `head_dim` elements of rows `rows` of `base`, `stride` apart.
#[inline(always)]
pub(crate) unsafe fn prefetch_rows<T>(
    base: *const T,
    rows: Range<usize>,
    stride: usize,
    head_dim: usize,
) {
    let bytes = head_dim * std::mem::size_of::<T>();
    for row in rows {
        let first = base.wrapping_add(row * stride) as *const i8;
        for line in (0..bytes).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(first.wrapping_add(line));
        }
    }
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C; `kv.head_dim` is a multiple of 32 and `kv.key_dim` of 8,
/// `1 <= queries.len() <= MAX_GROUP`,
/// `scores.len() == queries.len() * positions.len()`, `partials.len() == queries.len()`, and the slices were
/// checked by `attention::check`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
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
        groups::<Avx2, true, _>(
            kv, keys, values, positions, scale, queries, outs, scores, partials,
        )
    } else {
        groups::<Avx2, false, _>(
            kv, keys, values, positions, scale, queries, outs, scores, partials,
        )
    })
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn groups<W: Width, const PREFETCH: bool, T: KvElement>(
    kv: &KvHead,
    keys: Rows<T>,
    values: Rows<T>,
    p: Range<usize>,
    scale: f32,
    queries: &[&[f32]],
    outs: &mut [&mut [f32]],
    scores: &mut [f32],
    partials: &mut [Partial],
) {
    let (k, v) = (keys, values);
    match queries.len() {
        1 => partials.copy_from_slice(&group::<W, 1, PREFETCH, T>(
            kv, k, v, p, scale, queries, outs, scores,
        )),
        2 => partials.copy_from_slice(&group::<W, 2, PREFETCH, T>(
            kv, k, v, p, scale, queries, outs, scores,
        )),
        3 => partials.copy_from_slice(&group::<W, 3, PREFETCH, T>(
            kv, k, v, p, scale, queries, outs, scores,
        )),
        _ => partials.copy_from_slice(&group::<W, 4, PREFETCH, T>(
            kv, k, v, p, scale, queries, outs, scores,
        )),
    }
}
