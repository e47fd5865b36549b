//! AVX-512 versions of the K-quant and IQ4_XS kernels of `x86_avx2/k_quants.rs`: the same results, bit for bit,
//! for eight rows per instruction instead of four.
//!
//! As in `quads.rs`, one 512-bit register holds two row quads in the AVX2 kernel's layout (low half quad `g`,
//! high half quad `g + 1`): the AVX2 kernel's readied super-blocks of both quads are joined, and every step after
//! that is the AVX2 step on both halves at once — `maddubs` pairs added in i16, then the sub-block scales applied
//! and added into the i32 lanes in one `vpdpwssd` (AVX2: `madd` + `add`), the same exact integers, the same f32
//! conversions, multiplies and FMAs per lane. The activations' sums of 16 meet the per-row scales or minimums of
//! Q2_K, Q3_K and Q6_K through four `vpdpwssd` on the per-row values rearranged once per super-block (AVX2: four
//! `madd` and two `hadd` per token), giving the same integers in the same lanes.
//!
//! Single-token products (decode) are bound by memory bandwidth and read the quads in place: they run the AVX2
//! kernel, as does a task's last quad when it has an odd number. Adding a format: implement [`KQuad8`].

#![cfg(target_arch = "x86_64")]

use super::{join, join_all, join_ps, pair_f32, spread_pairs8};
use crate::quantized::row_quads::QUAD;
use crate::quantized::{Q8KBlock, QuadIq4Xs, QuadQ2_K, QuadQ3_K, QuadQ4_K, QuadQ5_K, QuadQ6_K};
use crate::row_blocks::ProductOut;
use crate::x86_avx2::k_quants::{
    chunk_rows as chunk_rows_avx2, ready_sixteen, ChunkKQuad, ReadyQ45, SixteenSubBlocks,
    GEMM_ACTIVATION_BYTES, SMALL_TILE, TILE,
};
use std::arch::x86_64::*;

/// What the eight-row kernel needs from a K-quant on top of its AVX2 [`ChunkKQuad`].
pub(crate) trait KQuad8: ChunkKQuad {
    /// Two quads' super-blocks unpacked, side by side.
    type Ready8;
    unsafe fn ready8(pair: [&Self; 2]) -> Self::Ready8;
    /// [`ChunkKQuad::accumulate`] of both quads: each accumulator is `[quad g's AVX2 lanes | quad g + 1's]`.
    unsafe fn accumulate8(w: &Self::Ready8, a: &Q8KBlock, acc: &mut [__m512; 3]);
}

/// The sixteen products of sub-block `j` (`q0`, `q1` its two chunk vectors) with activation chunks `c`, `c + 1`,
/// added in i16 by pairs as `maddubs` leaves them.
#[inline(always)]
unsafe fn chunk_pair(q0: __m512i, q1: __m512i, x: *const i64, c: usize) -> __m512i {
    let y0 = _mm512_set1_epi64(x.add(c).read_unaligned());
    let y1 = _mm512_set1_epi64(x.add(c + 1).read_unaligned());
    _mm512_add_epi16(_mm512_maddubs_epi16(q0, y0), _mm512_maddubs_epi16(q1, y1))
}

/// Q4_K and Q5_K: two [`ReadyQ45`] joined.
pub(crate) struct Ready8Q45 {
    q: [__m512i; 32],
    scales: [__m512i; 8],
    mins: [__m512i; 2],
    d: __m512,
    dmin: [__m512; 2],
}

#[inline(always)]
unsafe fn join_q45(a: &ReadyQ45, b: &ReadyQ45) -> Ready8Q45 {
    let mut w = Ready8Q45 {
        q: [_mm512_setzero_si512(); 32],
        scales: [_mm512_setzero_si512(); 8],
        mins: [_mm512_setzero_si512(); 2],
        d: join_ps(a.d, b.d),
        dmin: [join_ps(a.dmin[0], b.dmin[0]), join_ps(a.dmin[1], b.dmin[1])],
    };
    join_all(&a.q, &b.q, &mut w.q);
    join_all(&a.scales, &b.scales, &mut w.scales);
    join_all(&a.mins, &b.mins, &mut w.mins);
    w
}

/// The AVX2 `accumulate_q45` on both halves.
#[inline(always)]
unsafe fn accumulate8_q45(w: &Ready8Q45, a: &Q8KBlock, acc: &mut [__m512; 3]) {
    let x = a.qs.as_ptr() as *const i64;
    let mut sums = _mm512_setzero_si512();
    for j in 0..8 {
        let pairs = _mm512_add_epi16(
            chunk_pair(w.q[4 * j], w.q[4 * j + 1], x, 4 * j),
            chunk_pair(w.q[4 * j + 2], w.q[4 * j + 3], x, 4 * j + 2),
        );
        sums = _mm512_dpwssd_epi32(sums, pairs, w.scales[j]);
    }
    let ad = _mm512_set1_ps(a.d);
    acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(w.d, ad), acc[0]);
    let bsums = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
    // Sums of 32 (two of 16 each), one per sub-block, in every quarter.
    let pairs = _mm512_broadcast_i32x4(_mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256::<1>(bsums),
    ));
    for h in 0..2 {
        let mins = _mm512_cvtepi32_ps(_mm512_madd_epi16(w.mins[h], pairs));
        acc[1 + h] = _mm512_fnmadd_ps(mins, _mm512_mul_ps(w.dmin[h], ad), acc[1 + h]);
    }
}

macro_rules! k_quad8_q45 {
    ($quad:ty) => {
        impl KQuad8 for $quad {
            type Ready8 = Ready8Q45;
            #[inline(always)]
            unsafe fn ready8([low, high]: [&Self; 2]) -> Ready8Q45 {
                join_q45(&low.ready(), &high.ready())
            }
            #[inline(always)]
            unsafe fn accumulate8(w: &Ready8Q45, a: &Q8KBlock, acc: &mut [__m512; 3]) {
                accumulate8_q45(w, a, acc)
            }
        }
    };
}

k_quad8_q45!(QuadQ4_K);
k_quad8_q45!(QuadQ5_K);

/// What the eight-row kernel needs from a format of sixteen sub-blocks of 16 (Q2_K, Q3_K, Q6_K).
pub(crate) trait Sixteen8: SixteenSubBlocks {
    /// `2^OFFSET_SHIFT` comes off every stored weight (Q6_K: 32, Q3_K: 4); 0: the per-row values are minimums
    /// (Q2_K), scaled by `dmin` in f32.
    const OFFSET_SHIFT: u32;
    fn d(&self) -> &[half::f16; QUAD];
    /// Q2_K's minimum scales (`d` for the others, unused).
    fn dmin(&self) -> &[half::f16; QUAD];
}

/// Two quads' sixteen-sub-block super-blocks unpacked.
pub(crate) struct Ready8Sixteen {
    q: [__m512i; 32],
    scales: [__m512i; 16],
    /// Vector `k` (0..4): in i32 lane `8g + 2r + h` (quad `g`, row `r`, half `h`), the pair of per-row values of
    /// sub-blocks `8h + 2k` and `8h + 2k + 1`, as i16: what activation sums pair `4h + k` meets.
    per_row: [__m512i; 4],
    /// `[d0 d0 d1 d1 ... d7 d7]`, and the same of `dmin` (Q2_K).
    d: __m512,
    dmin: __m512,
}

/// The per-row values of one quad (row `r`'s sixteen i16 in `rows[r]`) as `Ready8Sixteen::per_row` wants them,
/// vectors `k0` and `k0 + 1` of the quad in the low and high eight i32 lanes: i32 pair `4h + k` of row `r` to
/// lane `2r + h`.
#[inline(always)]
unsafe fn per_row_pairs<const K0: i32>(rows: &[__m256i; QUAD]) -> __m512i {
    let (rows01, rows23) = (join(rows[0], rows[1]), join(rows[2], rows[3]));
    // Source i32 index of row r's pair m: 8r + m (rows 2 and 3 from the second operand: 16 + ...).
    let pick = |o: i32| {
        let (k, r, h) = (K0 + o / 8, (o % 8) / 2, o % 2);
        8 * r + 4 * h + k
    };
    let index = _mm512_setr_epi32(
        pick(0),
        pick(1),
        pick(2),
        pick(3),
        pick(4),
        pick(5),
        pick(6),
        pick(7),
        pick(8),
        pick(9),
        pick(10),
        pick(11),
        pick(12),
        pick(13),
        pick(14),
        pick(15),
    );
    _mm512_permutex2var_epi32(rows01, index, rows23)
}

#[inline(always)]
unsafe fn ready8_sixteen<Q: Sixteen8>([low, high]: [&Q; 2]) -> Ready8Sixteen {
    let (a, b) = (ready_sixteen(low), ready_sixteen(high));
    let (a01, a23) = (
        per_row_pairs::<0>(&a.per_row),
        per_row_pairs::<2>(&a.per_row),
    );
    let (b01, b23) = (
        per_row_pairs::<0>(&b.per_row),
        per_row_pairs::<2>(&b.per_row),
    );
    // 128-bit lanes 0-1 hold a quad's vector k0, 2-3 its vector k0 + 1.
    let mut w = Ready8Sixteen {
        q: [_mm512_setzero_si512(); 32],
        scales: [_mm512_setzero_si512(); 16],
        per_row: [
            _mm512_shuffle_i64x2::<0x44>(a01, b01),
            _mm512_shuffle_i64x2::<0xee>(a01, b01),
            _mm512_shuffle_i64x2::<0x44>(a23, b23),
            _mm512_shuffle_i64x2::<0xee>(a23, b23),
        ],
        d: spread_pairs8(pair_f32(low.d(), high.d())),
        dmin: if Q::OFFSET_SHIFT == 0 {
            spread_pairs8(pair_f32(low.dmin(), high.dmin()))
        } else {
            _mm512_setzero_ps()
        },
    };
    join_all(&a.q, &b.q, &mut w.q);
    join_all(&a.scales, &b.scales, &mut w.scales);
    w
}

/// The AVX2 `accumulate_sixteen` and its format's `finish` on both halves.
#[inline(always)]
unsafe fn accumulate8_sixteen<Q: Sixteen8>(w: &Ready8Sixteen, a: &Q8KBlock, acc: &mut [__m512; 3]) {
    let x = a.qs.as_ptr() as *const i64;
    let mut sums = _mm512_setzero_si512();
    for j in 0..16 {
        sums = _mm512_dpwssd_epi32(
            sums,
            chunk_pair(w.q[2 * j], w.q[2 * j + 1], x, 2 * j),
            w.scales[j],
        );
    }
    // The activations' sums of 16 as i32 pairs m = 0..8, reordered so that 64-bit element k is pairs k and 4 + k.
    let bsums = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
    let mut halves = [0i64; 4];
    _mm256_storeu_si256(
        halves.as_mut_ptr() as *mut __m256i,
        _mm256_permutevar8x32_epi32(bsums, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)),
    );
    let mut row_sums = _mm512_setzero_si512();
    for (per_row, pairs) in w.per_row.iter().zip(halves) {
        row_sums = _mm512_dpwssd_epi32(row_sums, *per_row, _mm512_set1_epi64(pairs));
    }
    let ad = _mm512_set1_ps(a.d);
    if Q::OFFSET_SHIFT > 0 {
        let offsets = _mm512_sllv_epi32(row_sums, _mm512_set1_epi32(Q::OFFSET_SHIFT as i32));
        let sums = _mm512_sub_epi32(sums, offsets);
        acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(w.d, ad), acc[0]);
    } else {
        acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(w.d, ad), acc[0]);
        let dmin = _mm512_mul_ps(w.dmin, ad);
        acc[1] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(row_sums), dmin, acc[1]);
    }
}

macro_rules! k_quad8_sixteen {
    ($quad:ty, shift: $shift:expr, dmin: $dmin:ident) => {
        impl Sixteen8 for $quad {
            const OFFSET_SHIFT: u32 = $shift;
            #[inline(always)]
            fn d(&self) -> &[half::f16; QUAD] {
                &self.d
            }
            #[inline(always)]
            fn dmin(&self) -> &[half::f16; QUAD] {
                &self.$dmin
            }
        }
        impl KQuad8 for $quad {
            type Ready8 = Ready8Sixteen;
            #[inline(always)]
            unsafe fn ready8(pair: [&Self; 2]) -> Ready8Sixteen {
                ready8_sixteen(pair)
            }
            #[inline(always)]
            unsafe fn accumulate8(w: &Ready8Sixteen, a: &Q8KBlock, acc: &mut [__m512; 3]) {
                accumulate8_sixteen::<Self>(w, a, acc)
            }
        }
    };
}

k_quad8_sixteen!(QuadQ6_K, shift: 5, dmin: d);
k_quad8_sixteen!(QuadQ3_K, shift: 2, dmin: d);
k_quad8_sixteen!(QuadQ2_K, shift: 0, dmin: dmin);

/// IQ4_XS: the signed levels of two quads as magnitudes and sign masks, with the scales.
pub(crate) struct Ready8Iq4Xs {
    magnitude: [__m512i; 32],
    negative: [__mmask64; 32],
    scales: [__m512i; 8],
    d: __m512,
}

impl KQuad8 for QuadIq4Xs {
    type Ready8 = Ready8Iq4Xs;
    #[inline(always)]
    unsafe fn ready8([low, high]: [&Self; 2]) -> Ready8Iq4Xs {
        let (a, b) = (low.ready(), high.ready());
        let mut w = Ready8Iq4Xs {
            magnitude: [_mm512_setzero_si512(); 32],
            negative: [0; 32],
            scales: [_mm512_setzero_si512(); 8],
            d: join_ps(a.d, b.d),
        };
        for v in 0..32 {
            let levels = join(a.q[v], b.q[v]);
            w.magnitude[v] = _mm512_abs_epi8(levels);
            w.negative[v] = _mm512_movepi8_mask(levels);
        }
        join_all(&a.scales, &b.scales, &mut w.scales);
        w
    }

    /// The AVX2 `accumulate`: the levels' signs move onto the activations.
    #[inline(always)]
    unsafe fn accumulate8(w: &Ready8Iq4Xs, a: &Q8KBlock, acc: &mut [__m512; 3]) {
        let x = a.qs.as_ptr() as *const i64;
        let mut sums = _mm512_setzero_si512();
        let chunk = |v: usize| {
            let y = _mm512_set1_epi64(x.add(v).read_unaligned());
            let y = _mm512_mask_sub_epi8(y, w.negative[v], _mm512_setzero_si512(), y);
            _mm512_maddubs_epi16(w.magnitude[v], y)
        };
        for j in 0..8 {
            // A chunk's pairs reach 2 x 127 x 127, so each meets the scales on its own (no i16 adds).
            sums = _mm512_dpwssd_epi32(sums, chunk(4 * j), w.scales[j]);
            sums = _mm512_dpwssd_epi32(sums, chunk(4 * j + 1), w.scales[j]);
            sums = _mm512_dpwssd_epi32(sums, chunk(4 * j + 2), w.scales[j]);
            sums = _mm512_dpwssd_epi32(sums, chunk(4 * j + 3), w.scales[j]);
        }
        let ad = _mm512_set1_ps(a.d);
        acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(w.d, ad), acc[0]);
    }
}

/// Two quads' rows (the first `valid_rows` of eight) times tokens `first_token..first_token + T` (`low` and `high`
/// the quads' `n` super-blocks). Each value is formed by the AVX2 `chunk_tile`'s operations.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pair_tile<Q: KQuad8, const T: usize>(
    low: &[Q],
    high: &[Q],
    x: &[Q8KBlock],
    n: usize,
    first_token: usize,
    out: &ProductOut,
    first_row: usize,
    valid_rows: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); 3]; T];
    for i in 0..n {
        let w = Q::ready8([low.get_unchecked(i), high.get_unchecked(i)]);
        for (t, acc) in acc.iter_mut().enumerate() {
            Q::accumulate8(&w, x.get_unchecked((first_token + t) * n + i), acc);
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        // Each quad's lanes as the AVX2 kernel leaves them, then its row values.
        let mut lanes = [[[0.0f32; 8]; 3]; 2];
        for (i, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(lanes[0][i].as_mut_ptr(), _mm512_castps512_ps256(*acc));
            let high = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*acc));
            _mm256_storeu_ps(lanes[1][i].as_mut_ptr(), _mm256_castpd_ps(high));
        }
        for r in 0..valid_rows {
            let value = Q::row_value(&lanes[r / QUAD], r % QUAD);
            out.write(first_row + r, first_token + t, value);
        }
    }
}

/// The AVX-512 K-quant kernel of any format with a [`KQuad8`] implementation (`quantized::QuadKernel`).
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `first_row` is a multiple of 4, `quads` holds the
/// quads of rows `first_row..first_row + row_count` (`n` super-blocks each), `x` holds `tokens * n` super-blocks
/// and `out` is the task's product.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn chunk_rows<Q: KQuad8>(
    quads: &[Q],
    n: usize,
    x: &[Q8KBlock],
    tokens: usize,
    out: &ProductOut,
    first_row: usize,
    row_count: usize,
) {
    debug_assert_eq!(first_row % QUAD, 0);
    debug_assert!(quads.len() >= row_count.div_ceil(QUAD) * n);
    debug_assert_eq!(x.len(), tokens * n);
    let pair_count = if tokens < SMALL_TILE {
        0
    } else {
        row_count.div_ceil(QUAD) / 2
    };
    let chunk = (GEMM_ACTIVATION_BYTES / (n * std::mem::size_of::<Q8KBlock>()).max(1))
        .max(TILE)
        .next_multiple_of(TILE);
    let mut chunk_start = 0;
    while chunk_start < tokens && pair_count > 0 {
        let chunk_end = (chunk_start + chunk).min(tokens);
        for p in 0..pair_count {
            let low = &quads[2 * p * n..(2 * p + 1) * n];
            let high = &quads[(2 * p + 1) * n..(2 * p + 2) * n];
            let row = first_row + 2 * QUAD * p;
            let valid = (row_count - 2 * QUAD * p).min(2 * QUAD);
            let mut t = chunk_start;
            while t + TILE <= chunk_end {
                pair_tile::<Q, TILE>(low, high, x, n, t, out, row, valid);
                t += TILE;
            }
            while t + SMALL_TILE <= chunk_end {
                pair_tile::<Q, SMALL_TILE>(low, high, x, n, t, out, row, valid);
                t += SMALL_TILE;
            }
            match chunk_end - t {
                3 => pair_tile::<Q, 3>(low, high, x, n, t, out, row, valid),
                2 => pair_tile::<Q, 2>(low, high, x, n, t, out, row, valid),
                1 => pair_tile::<Q, 1>(low, high, x, n, t, out, row, valid),
                _ => debug_assert_eq!(t, chunk_end),
            }
        }
        chunk_start = chunk_end;
    }
    let done = 2 * QUAD * pair_count;
    if done < row_count {
        // Single tokens read in place, and a last odd quad: the AVX2 kernel (this machine has AVX2, FMA, F16C).
        chunk_rows_avx2(
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
