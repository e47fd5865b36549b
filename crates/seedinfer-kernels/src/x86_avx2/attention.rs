//! AVX2 + FMA twin of `attention::attend_range_scalar` for head sizes that are multiples of 32 and groups of up to
//! `MAX_GROUP` query heads: each key row is loaded once for the group's dot products, each value row once for the
//! group's weighted sums (kept in registers, 32 columns at a time). One body serves f32, f16 (F16C) and int8 rows;
//! int8 row scales multiply the dot products and the value weights. A query's arithmetic does not depend on how
//! many queries share the call.

#![cfg(target_arch = "x86_64")]

use super::{horizontal_max, horizontal_sum};
use crate::attention::{with_rows, KvElement, KvHead, Partial, Rows};
use std::arch::x86_64::*;
use std::ops::Range;

/// `e^x` for 8 lanes: Cephes' `expf` (range reduction by ln 2 in two parts, degree-6 polynomial), within 2 ulp of
/// the correctly rounded result for inputs in [-87, 88]; inputs outside are clamped to it.
#[inline(always)]
pub(crate) unsafe fn exp(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(88.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_2e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
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
unsafe fn sums_of_eight(v: [__m256; 8]) -> __m256 {
    let h0123 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    let h4567 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(h0123, h4567),
        _mm256_permute2f128_ps::<0x31>(h0123, h4567),
    )
}

/// Replaces `scores` by `e^(score - max)` and returns `(max, sum)`. Every element goes through the vector `exp`
/// (the tail through a padded copy), so a score's weight does not depend on where it falls.
#[inline(always)]
unsafe fn exp_and_sum(scores: &mut [f32]) -> (f32, f32) {
    let (body, tail) = scores.split_at_mut(scores.len() / 8 * 8);
    let mut max = tail.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !body.is_empty() {
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in body.chunks_exact(8) {
            m = _mm256_max_ps(m, _mm256_loadu_ps(c.as_ptr()));
        }
        max = max.max(horizontal_max(m));
    }
    let max_v = _mm256_set1_ps(max);
    let mut sum = _mm256_setzero_ps();
    for c in body.chunks_exact_mut(8) {
        let e = exp(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), max_v));
        _mm256_storeu_ps(c.as_mut_ptr(), e);
        sum = _mm256_add_ps(sum, e);
    }
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

// Index loops over the register tiles read more plainly than zipped iterators here.
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
#[inline(always)]
unsafe fn group<const G: usize, const PREFETCH: bool, T: KvElement>(
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
    let q: [*const f32; G] = std::array::from_fn(|g| queries[g].as_ptr());
    let keys = key_rows.data.as_ptr().add(kv.offset + start * stride);
    let scale_v = _mm256_set1_ps(scale);
    let values = value_rows.data.as_ptr().add(kv.offset + start * stride);
    // Eight positions at a time: eight independent FMA chains per head, and one transposing reduction for all
    // eight sums instead of eight horizontal sums.
    let mut p = 0;
    while p + 8 <= count {
        // Streaming: the rows come from memory (a cached block is only a few KB, too short for the hardware prefetcher
        // to ramp up): ask for the next eight keys, and for these eight positions' values, ahead of use.
        if PREFETCH {
            prefetch_rows(keys, p + 8..(p + 16).min(count), stride, hd);
            prefetch_rows(values, p..p + 8, stride, hd);
        }
        let key_scales = if T::SCALED {
            let s: [f32; 8] = std::array::from_fn(|j| key_rows.scale(start + p + j));
            _mm256_loadu_ps(s.as_ptr())
        } else {
            _mm256_setzero_ps()
        };
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
            for c in (0..hd).step_by(8) {
                for j in first..first + pass {
                    let key = T::load8(keys.add((p + j) * stride + c));
                    for g in 0..G {
                        acc[g][j] = _mm256_fmadd_ps(_mm256_loadu_ps(q[g].add(c)), key, acc[g][j]);
                    }
                }
            }
        }
        for g in 0..G {
            let mut dots = sums_of_eight(acc[g]);
            if T::SCALED {
                dots = _mm256_mul_ps(dots, key_scales);
            }
            _mm256_storeu_ps(
                scores.as_mut_ptr().add(g * count + p),
                _mm256_mul_ps(dots, scale_v),
            );
        }
        p += 8;
    }
    for p in p..count {
        let k = keys.add(p * stride);
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        for c in (0..hd).step_by(16) {
            let (k0, k1) = (T::load8(k.add(c)), T::load8(k.add(c + 8)));
            for g in 0..G {
                acc[g][0] = _mm256_fmadd_ps(_mm256_loadu_ps(q[g].add(c)), k0, acc[g][0]);
                acc[g][1] = _mm256_fmadd_ps(_mm256_loadu_ps(q[g].add(c + 8)), k1, acc[g][1]);
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
        let (max, sum) = exp_and_sum(&mut scores[g * count..(g + 1) * count]);
        partials[g] = Partial { max, sum };
    }
    for c0 in (0..hd).step_by(32) {
        let mut acc = [[_mm256_setzero_ps(); 4]; G];
        for p in 0..count {
            let v = values.add(p * stride + c0);
            let rows: [__m256; 4] = std::array::from_fn(|j| T::load8(v.add(8 * j)));
            let value_scale = if T::SCALED {
                value_rows.scale(start + p)
            } else {
                1.0
            };
            for g in 0..G {
                let mut w = *scores.get_unchecked(g * count + p);
                if T::SCALED {
                    w *= value_scale;
                }
                let w = _mm256_set1_ps(w);
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
    partials
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
/// The CPU must have AVX2, FMA and F16C; `kv.head_dim` is a multiple of 32, `1 <= queries.len() <= MAX_GROUP`,
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
        groups::<true, _>(
            kv, keys, values, positions, scale, queries, outs, scores, partials,
        )
    } else {
        groups::<false, _>(
            kv, keys, values, positions, scale, queries, outs, scores, partials,
        )
    })
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn groups<const PREFETCH: bool, T: KvElement>(
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
        1 => partials.copy_from_slice(&group::<1, PREFETCH, T>(
            kv, k, v, p, scale, queries, outs, scores,
        )),
        2 => partials.copy_from_slice(&group::<2, PREFETCH, T>(
            kv, k, v, p, scale, queries, outs, scores,
        )),
        3 => partials.copy_from_slice(&group::<3, PREFETCH, T>(
            kv, k, v, p, scale, queries, outs, scores,
        )),
        _ => partials.copy_from_slice(&group::<4, PREFETCH, T>(
            kv, k, v, p, scale, queries, outs, scores,
        )),
    }
}
