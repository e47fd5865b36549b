//! AVX-512 VNNI versions of the row-quad kernels of `x86_avx2/quads.rs` (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL):
//! the same results, bit for bit, twice the rows per instruction and a quarter of the integer instructions.
//!
//! One 512-bit register holds two row quads — eight rows — in the AVX2 kernel's chunk layout: its low half is
//! quad `g`, its high half quad `g + 1`, so one broadcast activation chunk serves eight rows. `vpdpbusd`
//! multiplies unsigned weight bytes with signed activation bytes and adds each group of four products into an
//! i32 lane, so a chunk costs one instruction where AVX2 needs `maddubs`, adds and a widening `madd`. The i32
//! lanes hold exactly the integers the AVX2 kernel forms (`[r0 r0 r1 r1 ...]`: each row's even and odd groups of
//! four elements, all exact), and the float steps after them — scale, multiply, FMA per block, the pairwise row
//! sums — are the same operations lane for lane. So a product does not depend on whether the machine has
//! AVX-512, and the AVX2 kernel is this one's oracle as well as the scalar reference.
//!
//! Signed weights (Q8_0, IQ4_NL): their magnitudes are the unsigned operand and the activation is negated where
//! the weight is negative (a byte mask), as `sign_epi8` does in the AVX2 kernel. A task's last quad, when it has
//! an odd number, runs the AVX2 kernel.
//!
//! Adding a format here: implement [`VnniQuad`] for its quad (usually from the AVX2 [`Quad::ready`]).

#![cfg(target_arch = "x86_64")]

use super::{join, join_all, pair_f32, spread_pairs8};
use crate::quantized::row_quads::QUAD;
use crate::quantized::{Q8Block, QuadIq4Nl, QuadQ4_0, QuadQ4_1, QuadQ5_0, QuadQ5_1, QuadQ8_0};
use crate::row_blocks::ProductOut;
use crate::x86_avx2::quads::{rows_of_pairs, Quad, GEMM_ACTIVATION_BYTES, PREFETCH_BYTES};
use std::arch::x86_64::*;

/// Eight rows' weights of one block position, ready for `vpdpbusd`: per 8-element chunk, the unsigned bytes
/// (rows 0..4 of the first quad, then the second's) and, for signed formats, where the weight is negative.
#[derive(Clone, Copy)]
pub(crate) struct Ready8 {
    bytes: [__m512i; QUAD],
    negative: [__mmask64; QUAD],
}

/// What the eight-row kernel needs from a weight format on top of its AVX2 [`Quad`].
pub(crate) trait VnniQuad: Quad {
    /// Signed weights: the activation is negated where `Ready8::negative` says.
    const SIGNED: bool;
    /// `2^OFFSET_SHIFT` is subtracted from every stored weight (Q4_0: 8, Q5_0: 16); 0 for none.
    const OFFSET_SHIFT: u32;
    unsafe fn ready8(pair: [&Self; 2]) -> Ready8;
}

/// [`Ready8`] of formats whose AVX2 weights are unsigned chunks already.
#[inline(always)]
unsafe fn unsigned_pair(low: [__m256i; QUAD], high: [__m256i; QUAD]) -> Ready8 {
    let mut w = Ready8 {
        bytes: [_mm512_setzero_si512(); QUAD],
        negative: [0; QUAD],
    };
    join_all(&low, &high, &mut w.bytes);
    w
}

/// [`Ready8`] of formats whose AVX2 weights are signed chunks with their magnitudes.
#[inline(always)]
unsafe fn signed_pair(
    (low, low_magnitude): ([__m256i; QUAD], [__m256i; QUAD]),
    (high, high_magnitude): ([__m256i; QUAD], [__m256i; QUAD]),
) -> Ready8 {
    let mut w = Ready8 {
        bytes: [_mm512_setzero_si512(); QUAD],
        negative: [0; QUAD],
    };
    join_all(&low_magnitude, &high_magnitude, &mut w.bytes);
    for c in 0..QUAD {
        // A byte's sign bit: the weight is negative.
        w.negative[c] = _mm512_movepi8_mask(join(low[c], high[c]));
    }
    w
}

macro_rules! vnni_quad {
    ($quad:ty, $pair:ident, signed: $signed:expr, offset: $shift:expr) => {
        impl VnniQuad for $quad {
            const SIGNED: bool = $signed;
            const OFFSET_SHIFT: u32 = $shift;
            #[inline(always)]
            unsafe fn ready8([low, high]: [&Self; 2]) -> Ready8 {
                $pair(low.ready(), high.ready())
            }
        }
    };
}

vnni_quad!(QuadQ4_0, unsigned_pair, signed: false, offset: 3);
vnni_quad!(QuadQ4_1, unsigned_pair, signed: false, offset: 0);
vnni_quad!(QuadQ5_0, unsigned_pair, signed: false, offset: 4);
vnni_quad!(QuadQ5_1, unsigned_pair, signed: false, offset: 0);
vnni_quad!(QuadQ8_0, signed_pair, signed: true, offset: 0);
vnni_quad!(QuadIq4Nl, signed_pair, signed: true, offset: 0);

/// `[r0 r0 r1 r1 ... r7 r7]` i32 partial dot products of the eight rows' blocks with activation block `a`: the
/// integers of the AVX2 kernel's `Quad::dot`, two quads at once.
#[inline(always)]
unsafe fn dot8<Q: VnniQuad>(w: &Ready8, a: &Q8Block) -> __m512i {
    let y = a.qs.as_ptr() as *const i64;
    let mut sums = _mm512_setzero_si512();
    for c in 0..QUAD {
        let mut chunk = _mm512_set1_epi64(y.add(c).read_unaligned());
        if Q::SIGNED {
            chunk = _mm512_mask_sub_epi8(chunk, w.negative[c], _mm512_setzero_si512(), chunk);
        }
        sums = _mm512_dpbusd_epi32(sums, w.bytes[c], chunk);
    }
    if Q::OFFSET_SHIFT > 0 {
        let groups = _mm512_set1_epi64((a.group_sums.as_ptr() as *const i64).read_unaligned());
        sums = _mm512_sub_epi32(
            sums,
            _mm512_sllv_epi32(groups, _mm512_set1_epi32(Q::OFFSET_SHIFT as i32)),
        );
    }
    sums
}

/// Dot products of two row quads (`low` and `high` at their first block, `n` blocks) with `T` consecutive tokens
/// (`x` at the first token's first block), written for the first `valid_rows` of their eight rows. The float
/// steps are the AVX2 `quad_tile`'s, lane for lane.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pair_tile<Q: VnniQuad, const T: usize>(
    low: *const Q,
    high: *const Q,
    n: usize,
    x: *const Q8Block,
    out: &ProductOut,
    first_row: usize,
    valid_rows: usize,
    first_token: usize,
) {
    let mut acc = [_mm512_setzero_ps(); T];
    let mut mins = [_mm256_setzero_ps(); T];
    for i in 0..n {
        let (a, b) = (&*low.add(i), &*high.add(i));
        for stream in [low, high] {
            let ahead = (stream.add(i) as *const i8).add(PREFETCH_BYTES);
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            if std::mem::size_of::<Q>() > 64 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(64));
            }
        }
        let w = Q::ready8([a, b]);
        let scales = spread_pairs8(pair_f32(a.scales(), b.scales()));
        let minimums = if Q::HAS_MINIMUM {
            pair_f32(a.minimums(), b.minimums())
        } else {
            _mm256_setzero_ps()
        };
        for t in 0..T {
            let y = &*x.add(t * n + i);
            let sums = _mm512_cvtepi32_ps(dot8::<Q>(&w, y));
            acc[t] = _mm512_fmadd_ps(sums, _mm512_mul_ps(scales, _mm512_set1_ps(y.d)), acc[t]);
            if Q::HAS_MINIMUM {
                mins[t] = _mm256_fmadd_ps(minimums, _mm256_set1_ps(y.s), mins[t]);
            }
        }
    }
    // Rows beyond `valid_rows` (a matrix whose rows are not a multiple of 8) are masked off the stores.
    let valid: __mmask8 = if valid_rows >= 2 * QUAD {
        0xff
    } else {
        (1u8 << valid_rows) - 1
    };
    for t in 0..T {
        let halves = [
            _mm512_castps512_ps256(acc[t]),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[t]))),
        ];
        let half_mins = [
            _mm256_castps256_ps128(mins[t]),
            _mm256_extractf128_ps::<1>(mins[t]),
        ];
        let rows = _mm256_set_m128(
            _mm_add_ps(rows_of_pairs(halves[1]), half_mins[1]),
            _mm_add_ps(rows_of_pairs(halves[0]), half_mins[0]),
        );
        let at = out
            .token_rows(first_token + t, first_row, valid_rows)
            .as_mut_ptr();
        _mm256_mask_storeu_ps(at, valid, rows);
    }
}

/// Tokens sharing each readied weight pair in a GEMM. Measured on the Intel Xeon of 2026-12-07 (Q4_0, 576x1536 x
/// 512 tokens, 1 thread): 8 ran at 230 GOP/s, 4 at 200, 12 at 190.
const TILE: usize = 8;

/// The AVX-512 quad kernel of any format with a [`VnniQuad`] implementation (`quantized::QuadKernel`).
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `first_row` is a multiple of 4, `quads` holds the
/// quads of rows `first_row..first_row + row_count` (`n` blocks each), `x` holds `tokens * n` blocks and `out` is
/// the task's product.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn quads<Q: VnniQuad>(
    quads: &[Q],
    n: usize,
    x: &[Q8Block],
    tokens: usize,
    out: &ProductOut,
    first_row: usize,
    row_count: usize,
) {
    debug_assert_eq!(first_row % QUAD, 0);
    debug_assert!(quads.len() >= row_count.div_ceil(QUAD) * n);
    debug_assert_eq!(x.len(), tokens * n);
    let pair_count = row_count.div_ceil(QUAD) / 2;
    let (w, a) = (quads.as_ptr(), x.as_ptr());
    let chunk = (GEMM_ACTIVATION_BYTES / (n * std::mem::size_of::<Q8Block>()))
        .max(TILE)
        .next_multiple_of(TILE);
    let mut chunk_start = 0;
    while chunk_start < tokens {
        let chunk_end = (chunk_start + chunk).min(tokens);
        for p in 0..pair_count {
            let (low, high) = (w.add(2 * p * n), w.add((2 * p + 1) * n));
            let row = first_row + 2 * QUAD * p;
            let valid = (row_count - 2 * QUAD * p).min(2 * QUAD);
            let mut t = chunk_start;
            while t + TILE <= chunk_end {
                let x = a.add(t * n);
                pair_tile::<Q, TILE>(low, high, n, x, out, row, valid, t);
                t += TILE;
            }
            // What is left — a few decode steps batched together, the end of a prompt — still shares each
            // readied weight pair among its tokens.
            while t < chunk_end {
                let x = a.add(t * n);
                let step = match chunk_end - t {
                    1 => {
                        pair_tile::<Q, 1>(low, high, n, x, out, row, valid, t);
                        1
                    }
                    2 => {
                        pair_tile::<Q, 2>(low, high, n, x, out, row, valid, t);
                        2
                    }
                    3 => {
                        pair_tile::<Q, 3>(low, high, n, x, out, row, valid, t);
                        3
                    }
                    _ => {
                        pair_tile::<Q, 4>(low, high, n, x, out, row, valid, t);
                        4
                    }
                };
                t += step;
            }
        }
        chunk_start = chunk_end;
    }
    let done = 2 * QUAD * pair_count;
    if done < row_count {
        // SAFETY: this machine has AVX2, FMA and F16C (under AVX-512); the last quad's rows as described.
        crate::x86_avx2::quads::quads(
            &quads[2 * pair_count * n..],
            n,
            x,
            tokens,
            out,
            first_row + done,
            row_count - done,
        );
    }
}
