//! AVX2 kernels of the K-quants (Q2_K .. Q6_K) and IQ4_XS times Q8_K activations. Each format's scalar `dot_scalar` in
//! `quantized/` is the reference. Per super-block the integer sums are exact and stay in eight i32 lanes; each
//! lane is converted and accumulated in f32 with its row's super-block scale (as ggml's AVX2 kernels do), and a
//! row's lanes are added once at its end. So a kernel differs from the scalar oracle only by the order of f32
//! additions, and a token gets the same bits in a batch of any size (its operations do not depend on the others).
//!
//! The quads interleave their four rows by 8-byte chunk (`row_quads`; bytes unchanged), so one vector holds the
//! same 8 weights of the four rows and one `maddubs` (unsigned weights x signed activations, pairs added in i16)
//! with those 8 activations broadcast serves all four. A sub-block's chunks add up in i16 — four for the 32-weight
//! sub-blocks of Q4_K/Q5_K (at most 4 x 2 x 31 x 127 < 2^15), two for the 16 of Q2_K, Q3_K and Q6_K (2 x 2 x 63 x
//! 127) — before one `madd` with the four rows' scales gives `[r0 r0 r1 r1 r2 r2 r3 r3]` i32 lanes. What every
//! weight shares comes off per row through the activations' sums of 16 (`bsums`): the minimums of Q2_K, Q4_K and
//! Q5_K (in f32, scaled by `dmin`), the offsets of Q6_K (32) and Q3_K (4, its signed 3-bit weights stored as 0..8)
//! in i32, from the lanes before they become f32.
//!
//! A quad's super-block is unpacked once and multiplied with a tile of tokens; a single-token product reads the
//! quads' bytes as one sequential stream, prefetched ahead. Adding a K-quant here: implement [`ChunkKQuad`];
//! [`chunk_rows`] is then its kernel.

#![cfg(target_arch = "x86_64")]

use crate::quantized::row_quads::QUAD;
use crate::quantized::{
    Q8KBlock, QuadFormat, QuadIq4Xs, QuadQ2_K, QuadQ3_K, QuadQ4_K, QuadQ5_K, QuadQ6_K,
};
use crate::row_blocks::ProductOut;
use seedinfer_formats::blocks::{iq4_xs_sub_scale, KVALUES_IQ4NL};
use std::arch::x86_64::*;

/// What the K-quant kernel needs from a format.
pub(crate) trait ChunkKQuad: QuadFormat<Input = Q8KBlock> {
    /// A quad's super-block unpacked for `maddubs`, with its scales.
    type Ready<'a>
    where
        Self: 'a;
    unsafe fn ready(&self) -> Self::Ready<'_>;
    /// Adds the quad's super-block products with activation super-block `a`: `acc[0]` in lanes `[r0 r0 r1 r1 r2 r2
    /// r3 r3]`, the per-row corrections in `acc[1]` and `acc[2]` (laid out as [`ChunkKQuad::row_value`] reads them).
    unsafe fn accumulate(w: &Self::Ready<'_>, a: &Q8KBlock, acc: &mut [__m256; 3]);
    /// [`ChunkKQuad::accumulate`] for a single token, with the same bits; a format whose unpacked super-block does
    /// not fit the registers reads its bytes directly instead.
    #[inline(always)]
    unsafe fn accumulate_one(&self, a: &Q8KBlock, acc: &mut [__m256; 3]) {
        Self::accumulate(&self.ready(), a, acc)
    }
    /// Row `r`'s value from the accumulators' lanes.
    fn row_value(lanes: &[[f32; 8]; 3], r: usize) -> f32;
}

/// Twelve bytes of packed scales as three little-endian words (what ggml's `kmask` unpackings work on).
#[inline(always)]
fn packed_words(packed: &[u8; 12]) -> [u32; 3] {
    let word = |i: usize| {
        u32::from_le_bytes([
            packed[4 * i],
            packed[4 * i + 1],
            packed[4 * i + 2],
            packed[4 * i + 3],
        ])
    };
    [word(0), word(1), word(2)]
}

/// The 12 bytes of packed 6-bit scales and minimums as `[sc0 .. sc7 | m0 .. m7]` bytes (ggml's mask trick: the
/// same fields `blocks::scale_min` reads).
#[inline(always)]
unsafe fn scales_and_mins(packed: &[u8; 12]) -> __m128i {
    let [w0, w1, w2] = packed_words(packed);
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let scales_low = w0 & LOW6;
    let scales_high = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let mins_low = w1 & LOW6;
    let mins_high = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    _mm_setr_epi32(
        scales_low as i32,
        scales_high as i32,
        mins_low as i32,
        mins_high as i32,
    )
}

/// The `pshufb` selectors of [`spread_scales`]: entry `i` repeats bytes `4i..4i + 4` four times each (a table, so
/// that a loop over sub-blocks that the compiler keeps rolled loads it instead of building it byte by byte).
static SPREAD_SELECT: [[u8; 16]; 4] = {
    let mut table = [[0u8; 16]; 4];
    let mut i = 0;
    while i < 16 * 4 {
        table[i / 16][i % 16] = (4 * (i / 16) + (i % 16) / 4) as u8;
        i += 1;
    }
    table
};

/// Bytes `4j + r` (sub-block `j` of row `r`, `j % 4` of the vector) spread to i16 lanes `4r..4r + 4`: the scales
/// of one sub-block for the `maddubs` lanes of the chunk layout. `SIGNED` sign-extends (Q6_K's scales).
#[inline(always)]
unsafe fn spread_scales<const SIGNED: bool>(by_sub_block: __m128i, j: usize) -> __m256i {
    let select = _mm_loadu_si128(SPREAD_SELECT[j % 4].as_ptr() as *const __m128i);
    let bytes = _mm_shuffle_epi8(by_sub_block, select);
    if SIGNED {
        _mm256_cvtepi8_epi16(bytes)
    } else {
        _mm256_cvtepu8_epi16(bytes)
    }
}

/// Four rows' f16 scales as f32 in lanes 0..4.
#[inline(always)]
unsafe fn widen_scales(h: &[half::f16; QUAD]) -> __m256 {
    _mm256_castps128_ps256(_mm_cvtph_ps(_mm_loadl_epi64(h.as_ptr() as *const __m128i)))
}

/// Lanes of `v` picked by `indices` (`_mm256_permutevar8x32_ps`).
#[inline(always)]
unsafe fn pick(v: __m256, indices: [i32; 8]) -> __m256 {
    _mm256_permutevar8x32_ps(v, _mm256_loadu_si256(indices.as_ptr() as *const __m256i))
}

/// The four rows' nibbles by chunk: chunk `c` (bytes `8c..8c + 8`, `c = 4p + k`) holds weights `8k..8k + 8` of
/// sub-block `2p` (low nibbles) and `2p + 1` (high nibbles).
#[inline(always)]
unsafe fn nibble_chunks(qs: &[[u8; 8]; 64], q: &mut [__m256i; 32]) {
    let mask = _mm256_set1_epi8(0x0f);
    for p in 0..4 {
        for k in 0..4 {
            let bytes = _mm256_loadu_si256(qs.as_ptr().add(QUAD * (4 * p + k)) as *const __m256i);
            q[4 * (2 * p) + k] = _mm256_and_si256(bytes, mask);
            q[4 * (2 * p + 1) + k] = _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), mask);
        }
    }
}

/// A Q4_K or Q5_K quad's super-block unpacked.
pub(crate) struct ReadyQ45 {
    /// Vector `4j + k`: weights `8k..8k + 8` of sub-block `j` of rows 0 to 3.
    pub(crate) q: [__m256i; 32],
    /// Sub-block `j`: i16 lanes `4r..4r + 4` hold row `r`'s scale.
    pub(crate) scales: [__m256i; 8],
    /// i16 `[m_0,0..8 | m_1,0..8]` and the same for rows 2 and 3.
    pub(crate) mins: [__m256i; 2],
    /// `[d0 d0 d1 d1 d2 d2 d3 d3]`.
    pub(crate) d: __m256,
    /// `[dmin0 x4 | dmin1 x4]`, `[dmin2 x4 | dmin3 x4]`.
    pub(crate) dmin: [__m256; 2],
}

#[inline(always)]
unsafe fn ready_q45(
    q: [__m256i; 32],
    packed: &[[u8; 12]; QUAD],
    d: &[half::f16; QUAD],
    dmin: &[half::f16; QUAD],
) -> ReadyQ45 {
    let r = [
        scales_and_mins(&packed[0]),
        scales_and_mins(&packed[1]),
        scales_and_mins(&packed[2]),
        scales_and_mins(&packed[3]),
    ];
    // Scale bytes `4j + r` for sub-blocks 0..4 and 4..8.
    let (s01, s23) = (_mm_unpacklo_epi8(r[0], r[1]), _mm_unpacklo_epi8(r[2], r[3]));
    let by_sub_block = [_mm_unpacklo_epi16(s01, s23), _mm_unpackhi_epi16(s01, s23)];
    let mut scales = [_mm256_setzero_si256(); 8];
    for (j, scale) in scales.iter_mut().enumerate() {
        *scale = spread_scales::<false>(by_sub_block[j / 4], j);
    }
    let (d, dmin) = (widen_scales(d), widen_scales(dmin));
    ReadyQ45 {
        q,
        scales,
        mins: [
            _mm256_cvtepu8_epi16(_mm_unpackhi_epi64(r[0], r[1])),
            _mm256_cvtepu8_epi16(_mm_unpackhi_epi64(r[2], r[3])),
        ],
        d: pick(d, [0, 0, 1, 1, 2, 2, 3, 3]),
        dmin: [
            pick(dmin, [0, 0, 0, 0, 1, 1, 1, 1]),
            pick(dmin, [2, 2, 2, 2, 3, 3, 3, 3]),
        ],
    }
}

/// `acc[0] += d_r * d_x * Σ sc_j (q · x)_j` in lanes `[r0 r0 r1 r1 r2 r2 r3 r3]`; `acc[1]`, `acc[2] -= dmin_r * d_x *
/// Σ m_j (Σ x)_j` in lanes `[r0 x4 | r1 x4]`, `[r2 x4 | r3 x4]`.
#[inline(always)]
unsafe fn accumulate_q45(w: &ReadyQ45, a: &Q8KBlock, acc: &mut [__m256; 3]) {
    let x = a.qs.as_ptr() as *const i64;
    let mut sums = _mm256_setzero_si256();
    for j in 0..8 {
        let mut pairs = _mm256_setzero_si256();
        for k in 0..4 {
            let y = _mm256_set1_epi64x(x.add(4 * j + k).read_unaligned());
            pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(w.q[4 * j + k], y));
        }
        sums = _mm256_add_epi32(sums, _mm256_madd_epi16(pairs, w.scales[j]));
    }
    let ad = _mm256_set1_ps(a.d);
    acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(w.d, ad), acc[0]);
    let bsums = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
    // Sums of 32 (two of 16 each), one per sub-block, in both halves.
    let pairs = _mm256_broadcastsi128_si256(_mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256::<1>(bsums),
    ));
    for h in 0..2 {
        let mins = _mm256_cvtepi32_ps(_mm256_madd_epi16(w.mins[h], pairs));
        acc[1 + h] = _mm256_fnmadd_ps(mins, _mm256_mul_ps(w.dmin[h], ad), acc[1 + h]);
    }
}

/// Row `r` of [`accumulate_q45`]'s lanes.
#[inline(always)]
fn row_value_q45(lanes: &[[f32; 8]; 3], r: usize) -> f32 {
    let m = &lanes[1 + r / 2][4 * (r % 2)..4 * (r % 2) + 4];
    (lanes[0][2 * r] + lanes[0][2 * r + 1]) + ((m[0] + m[1]) + (m[2] + m[3]))
}

impl ChunkKQuad for QuadQ4_K {
    type Ready<'a> = ReadyQ45;
    #[inline(always)]
    unsafe fn ready(&self) -> ReadyQ45 {
        let mut q = [_mm256_setzero_si256(); 32];
        nibble_chunks(&self.qs, &mut q);
        ready_q45(q, &self.scales, &self.d, &self.dmin)
    }
    #[inline(always)]
    unsafe fn accumulate(w: &ReadyQ45, a: &Q8KBlock, acc: &mut [__m256; 3]) {
        accumulate_q45(w, a, acc)
    }
    #[inline(always)]
    fn row_value(lanes: &[[f32; 8]; 3], r: usize) -> f32 {
        row_value_q45(lanes, r)
    }
}

impl ChunkKQuad for QuadQ5_K {
    type Ready<'a> = ReadyQ45;
    #[inline(always)]
    unsafe fn ready(&self) -> ReadyQ45 {
        let mut q = [_mm256_setzero_si256(); 32];
        nibble_chunks(&self.qs, &mut q);
        let one = _mm256_set1_epi8(1);
        for k in 0..4 {
            // Bytes 8k..8k + 8 of the four rows' fifth-bit bytes: bit j is sub-block j's.
            let high = _mm256_loadu_si256(self.qh.as_ptr().add(QUAD * k) as *const __m256i);
            for j in 0..8 {
                let bit =
                    _mm256_and_si256(_mm256_srl_epi16(high, _mm_cvtsi32_si128(j as i32)), one);
                q[4 * j + k] = _mm256_or_si256(q[4 * j + k], _mm256_slli_epi16::<4>(bit));
            }
        }
        ready_q45(q, &self.scales, &self.d, &self.dmin)
    }
    #[inline(always)]
    unsafe fn accumulate(w: &ReadyQ45, a: &Q8KBlock, acc: &mut [__m256; 3]) {
        accumulate_q45(w, a, acc)
    }
    #[inline(always)]
    fn row_value(lanes: &[[f32; 8]; 3], r: usize) -> f32 {
        row_value_q45(lanes, r)
    }
}

/// What the formats of sixteen sub-blocks of 16 (Q2_K, Q3_K, Q6_K) share: they differ only in how a weight vector
/// and the scales are unpacked, and in what the activations' sums of 16 meet (an offset or the minimums).
pub(crate) trait SixteenSubBlocks: ChunkKQuad {
    /// Whether the sub-block scales are signed (Q3_K, Q6_K) or not (Q2_K).
    const SIGNED_SCALES: bool;
    /// Vector `v = 16h + 4k + g`: weights `8g..8g + 8` of the 32 starting at `128h + 32k` (unsigned: Q6_K's `q`,
    /// Q3_K's `q + 4`, Q2_K's `q`), of rows 0 to 3; they lie in sub-block `v / 2`, and are activation chunk `v`.
    unsafe fn weights(&self, v: usize) -> __m256i;
    /// Row `r`'s sixteen sub-block scales as bytes.
    unsafe fn scale_bytes(&self) -> [__m128i; QUAD];
    /// Row `r`'s sixteen values (i16) that meet the activations' sums of 16: the scales (for Q3_K's and Q6_K's
    /// offsets) or Q2_K's minimums.
    unsafe fn per_row(&self, scale_bytes: &[__m128i; QUAD]) -> [__m256i; QUAD];
    /// Adds the exact integer sums (`Σ_j sc_j (q · x)_j` and [`sixteen_row_sums`]) to the accumulators as f32.
    unsafe fn finish(&self, sums: __m256i, row_sums: __m256i, ad: __m256, acc: &mut [__m256; 3]);
}

/// A quad's super-block of sixteen sub-blocks of 16 unpacked (for tiles of tokens).
pub(crate) struct ReadySixteen<'a, Q> {
    quad: &'a Q,
    /// [`SixteenSubBlocks::weights`] `0..32`.
    pub(crate) q: [__m256i; 32],
    /// Sub-block `j`: i16 lanes `4r..4r + 4` hold row `r`'s scale.
    pub(crate) scales: [__m256i; 16],
    pub(crate) per_row: [__m256i; QUAD],
}

/// Four rows' sixteen sub-block scales (one row's bytes per vector) as bytes `4j + r`, for sub-blocks 0..4, 4..8,
/// 8..12 and 12..16 ([`spread_scales`] reads them).
#[inline(always)]
unsafe fn by_sub_block(r: &[__m128i; QUAD]) -> [__m128i; 4] {
    let (lo01, lo23) = (_mm_unpacklo_epi8(r[0], r[1]), _mm_unpacklo_epi8(r[2], r[3]));
    let (hi01, hi23) = (_mm_unpackhi_epi8(r[0], r[1]), _mm_unpackhi_epi8(r[2], r[3]));
    [
        _mm_unpacklo_epi16(lo01, lo23),
        _mm_unpackhi_epi16(lo01, lo23),
        _mm_unpacklo_epi16(hi01, hi23),
        _mm_unpackhi_epi16(hi01, hi23),
    ]
}

/// Sub-block `j`'s products: its two chunks add up in i16 (at most 2 x 2 x 63 x 128) before their `madd` with the
/// scales, i32 lanes `[r0 r0 r1 r1 r2 r2 r3 r3]`.
#[inline(always)]
unsafe fn sub_block_sum(
    q0: __m256i,
    q1: __m256i,
    scales: __m256i,
    x: *const i64,
    j: usize,
) -> __m256i {
    let y0 = _mm256_set1_epi64x(x.add(2 * j).read_unaligned());
    let y1 = _mm256_set1_epi64x(x.add(2 * j + 1).read_unaligned());
    let pairs = _mm256_add_epi16(_mm256_maddubs_epi16(q0, y0), _mm256_maddubs_epi16(q1, y1));
    _mm256_madd_epi16(pairs, scales)
}

/// `Σ_j per_row_j (Σ x)_j` of each row, exact, in i32 lanes `[r0 r0 r1 r1 r2 r2 r3 r3]` (a row's two lanes hold
/// sub-blocks 0..8 and 8..16): per row in eight lanes, then two pairwise adds give `[r0 r1 r2 r3 | r0 r1 r2 r3]`.
#[inline(always)]
unsafe fn sixteen_row_sums(per_row: &[__m256i; QUAD], a: &Q8KBlock) -> __m256i {
    let bsums = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
    let rows = [
        _mm256_madd_epi16(per_row[0], bsums),
        _mm256_madd_epi16(per_row[1], bsums),
        _mm256_madd_epi16(per_row[2], bsums),
        _mm256_madd_epi16(per_row[3], bsums),
    ];
    let rows = _mm256_hadd_epi32(
        _mm256_hadd_epi32(rows[0], rows[1]),
        _mm256_hadd_epi32(rows[2], rows[3]),
    );
    _mm256_permutevar8x32_epi32(rows, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Runs `$body` once for each listed constant `$j`: a sub-block loop written out, so that shift counts and table
/// rows fold into the instructions (the compiler kept these loops rolled, with their indices computed at run time).
macro_rules! unrolled {
    ($j:ident in [$($n:literal)*] => $body:block) => {
        $({
            const $j: usize = $n;
            $body
        })*
    };
}

/// [`unrolled!`] over the sixteen sub-blocks.
macro_rules! for_each_sub_block {
    ($j:ident => $body:block) => {
        unrolled!($j in [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15] => $body)
    };
}

#[inline(always)]
pub(crate) unsafe fn ready_sixteen<Q: SixteenSubBlocks>(quad: &Q) -> ReadySixteen<'_, Q> {
    let mut q = [_mm256_setzero_si256(); 32];
    let bytes = quad.scale_bytes();
    let by_sub_block = by_sub_block(&bytes);
    let mut scales = [_mm256_setzero_si256(); 16];
    for_each_sub_block!(J => {
        q[2 * J] = quad.weights(2 * J);
        q[2 * J + 1] = quad.weights(2 * J + 1);
        scales[J] = if Q::SIGNED_SCALES {
            spread_scales::<true>(by_sub_block[J / 4], J)
        } else {
            spread_scales::<false>(by_sub_block[J / 4], J)
        };
    });
    ReadySixteen {
        quad,
        q,
        scales,
        per_row: quad.per_row(&bytes),
    }
}

#[inline(always)]
unsafe fn accumulate_sixteen<Q: SixteenSubBlocks>(
    w: &ReadySixteen<'_, Q>,
    a: &Q8KBlock,
    acc: &mut [__m256; 3],
) {
    let x = a.qs.as_ptr() as *const i64;
    let mut sums = _mm256_setzero_si256();
    for_each_sub_block!(J => {
        sums = _mm256_add_epi32(sums, sub_block_sum(w.q[2 * J], w.q[2 * J + 1], w.scales[J], x, J));
    });
    let row_sums = sixteen_row_sums(&w.per_row, a);
    w.quad.finish(sums, row_sums, _mm256_set1_ps(a.d), acc);
}

/// [`accumulate_sixteen`] for one token straight from the quad's bytes: the same integer sums (exact, so the
/// same bits), without first unpacking the whole super-block (52 vectors, more than the registers hold).
#[inline(always)]
unsafe fn accumulate_sixteen_one<Q: SixteenSubBlocks>(
    quad: &Q,
    a: &Q8KBlock,
    acc: &mut [__m256; 3],
) {
    let x = a.qs.as_ptr() as *const i64;
    let bytes = quad.scale_bytes();
    let by_sub_block = by_sub_block(&bytes);
    let mut sums = _mm256_setzero_si256();
    for_each_sub_block!(J => {
        let scales = if Q::SIGNED_SCALES {
            spread_scales::<true>(by_sub_block[J / 4], J)
        } else {
            spread_scales::<false>(by_sub_block[J / 4], J)
        };
        let (q0, q1) = (quad.weights(2 * J), quad.weights(2 * J + 1));
        sums = _mm256_add_epi32(sums, sub_block_sum(q0, q1, scales, x, J));
    });
    let row_sums = sixteen_row_sums(&quad.per_row(&bytes), a);
    quad.finish(sums, row_sums, _mm256_set1_ps(a.d), acc);
}

/// `acc[0] += d_r * d_x * Σ sc_j ((q - 2^SHIFT) · x)_j` in lanes `[r0 r0 r1 r1 r2 r2 r3 r3]` (Q6_K: offset 32, Q3_K:
/// 4), the integer sums exact: the offset `2^SHIFT Σ sc_j (Σ x)_j` comes off the i32 lanes before they become f32.
#[inline(always)]
unsafe fn finish_offset<const SHIFT: i32>(
    d: &[half::f16; QUAD],
    sums: __m256i,
    row_sums: __m256i,
    ad: __m256,
    acc: &mut [__m256; 3],
) {
    let sums = _mm256_sub_epi32(sums, _mm256_slli_epi32::<SHIFT>(row_sums));
    acc[0] = _mm256_fmadd_ps(
        _mm256_cvtepi32_ps(sums),
        _mm256_mul_ps(paired_scales(d), ad),
        acc[0],
    );
}

/// Row `r` of lanes in `[r0 r0 r1 r1 r2 r2 r3 r3]`: of `acc[0]` alone, or plus `acc[1]` (Q2_K's minimums).
#[inline(always)]
fn row_value_pairs<const PARTS: usize>(lanes: &[[f32; 8]; 3], r: usize) -> f32 {
    let value = lanes[0][2 * r] + lanes[0][2 * r + 1];
    if PARTS == 2 {
        value + (lanes[1][2 * r] + lanes[1][2 * r + 1])
    } else {
        value
    }
}

/// Loads chunk `c` of the four rows (`QUAD` consecutive 8-byte chunks).
#[inline(always)]
unsafe fn load_chunk(chunks: &[[u8; 8]], c: usize) -> __m256i {
    _mm256_loadu_si256(chunks.as_ptr().add(QUAD * c) as *const __m256i)
}

/// Bits `shift..shift + width` of each byte of `bytes` (`shift + width <= 8`).
#[inline(always)]
unsafe fn byte_bits(bytes: __m256i, shift: usize, mask: i8) -> __m256i {
    _mm256_and_si256(
        _mm256_srl_epi16(bytes, _mm_cvtsi32_si128(shift as i32)),
        _mm256_set1_epi8(mask),
    )
}

/// Vector `v = 16h + 4k + g` of a 2-bit field laid out as Q2_K's `qs`: bits `2k..2k + 2` of chunk `4h + g`.
#[inline(always)]
unsafe fn two_bit_vector(qs: &[[u8; 8]; 32], v: usize) -> __m256i {
    let (h, k, g) = (v / 16, (v / 4) % 4, v % 4);
    byte_bits(load_chunk(qs, 4 * h + g), 2 * k, 3)
}

/// `[d0 d0 d1 d1 d2 d2 d3 d3]` of four rows' f16 scales.
#[inline(always)]
unsafe fn paired_scales(h: &[half::f16; QUAD]) -> __m256 {
    pick(widen_scales(h), [0, 0, 1, 1, 2, 2, 3, 3])
}

/// The sixteen-sub-block formats' [`ChunkKQuad`]: [`ready_sixteen`], [`accumulate_sixteen`], the single-token
/// path, and the row values from `PARTS` accumulators.
macro_rules! chunk_k_quad_of_sixteen {
    ($quad:ty, $parts:literal) => {
        impl ChunkKQuad for $quad {
            type Ready<'a> = ReadySixteen<'a, $quad>;
            #[inline(always)]
            unsafe fn ready(&self) -> ReadySixteen<'_, $quad> {
                ready_sixteen(self)
            }
            #[inline(always)]
            unsafe fn accumulate(w: &ReadySixteen<'_, $quad>, a: &Q8KBlock, acc: &mut [__m256; 3]) {
                accumulate_sixteen(w, a, acc)
            }
            #[inline(always)]
            unsafe fn accumulate_one(&self, a: &Q8KBlock, acc: &mut [__m256; 3]) {
                accumulate_sixteen_one(self, a, acc)
            }
            #[inline(always)]
            fn row_value(lanes: &[[f32; 8]; 3], r: usize) -> f32 {
                row_value_pairs::<$parts>(lanes, r)
            }
        }
    };
}

chunk_k_quad_of_sixteen!(QuadQ6_K, 1);
chunk_k_quad_of_sixteen!(QuadQ3_K, 1);
chunk_k_quad_of_sixteen!(QuadQ2_K, 2);

/// Rows' sixteen signed scales as i16.
#[inline(always)]
unsafe fn widen_signed(bytes: &[__m128i; QUAD]) -> [__m256i; QUAD] {
    [
        _mm256_cvtepi8_epi16(bytes[0]),
        _mm256_cvtepi8_epi16(bytes[1]),
        _mm256_cvtepi8_epi16(bytes[2]),
        _mm256_cvtepi8_epi16(bytes[3]),
    ]
}

impl SixteenSubBlocks for QuadQ6_K {
    const SIGNED_SCALES: bool = true;
    /// Low four bits: nibble `k / 2` of chunk `8h + 4 (k % 2) + g` of `ql`; high two: bits `2k..2k + 2` of chunk
    /// `4h + g` of `qh`.
    #[inline(always)]
    unsafe fn weights(&self, v: usize) -> __m256i {
        let (h, k, g) = (v / 16, (v / 4) % 4, v % 4);
        let low = byte_bits(
            load_chunk(&self.ql, 8 * h + 4 * (k % 2) + g),
            4 * (k / 2),
            0x0f,
        );
        let high = byte_bits(load_chunk(&self.qh, 4 * h + g), 2 * k, 3);
        _mm256_or_si256(low, _mm256_slli_epi16::<4>(high))
    }
    #[inline(always)]
    unsafe fn scale_bytes(&self) -> [__m128i; QUAD] {
        [
            _mm_loadu_si128(self.scales[0].as_ptr() as *const __m128i),
            _mm_loadu_si128(self.scales[1].as_ptr() as *const __m128i),
            _mm_loadu_si128(self.scales[2].as_ptr() as *const __m128i),
            _mm_loadu_si128(self.scales[3].as_ptr() as *const __m128i),
        ]
    }
    #[inline(always)]
    unsafe fn per_row(&self, scale_bytes: &[__m128i; QUAD]) -> [__m256i; QUAD] {
        widen_signed(scale_bytes)
    }
    #[inline(always)]
    unsafe fn finish(&self, sums: __m256i, row_sums: __m256i, ad: __m256, acc: &mut [__m256; 3]) {
        finish_offset::<5>(&self.d, sums, row_sums, ad, acc)
    }
}

/// Q3_K's sixteen 6-bit scales of one row, minus 32, as signed bytes (ggml's `kmask` unpacking, the fields
/// `blocks::q3_k_scale` reads).
#[inline(always)]
unsafe fn q3_k_scales(packed: &[u8; 12]) -> __m128i {
    let [w0, w1, w2] = packed_words(packed);
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let v = _mm_setr_epi32(
        ((w0 & LOW4) | ((w2 & LOW2) << 4)) as i32,
        ((w1 & LOW4) | (((w2 >> 2) & LOW2) << 4)) as i32,
        (((w0 >> 4) & LOW4) | (((w2 >> 4) & LOW2) << 4)) as i32,
        (((w1 >> 4) & LOW4) | (((w2 >> 6) & LOW2) << 4)) as i32,
    );
    _mm_sub_epi8(v, _mm_set1_epi8(32))
}

impl SixteenSubBlocks for QuadQ3_K {
    const SIGNED_SCALES: bool = true;
    /// The low two bits as Q2_K's; the high bit is bit `4h + k` of chunk `g` of `hmask`, and a set bit adds 4.
    #[inline(always)]
    unsafe fn weights(&self, v: usize) -> __m256i {
        let (h, k, g) = (v / 16, (v / 4) % 4, v % 4);
        let high = byte_bits(load_chunk(&self.hmask, g), 4 * h + k, 1);
        _mm256_or_si256(two_bit_vector(&self.qs, v), _mm256_slli_epi16::<2>(high))
    }
    #[inline(always)]
    unsafe fn scale_bytes(&self) -> [__m128i; QUAD] {
        [
            q3_k_scales(&self.scales[0]),
            q3_k_scales(&self.scales[1]),
            q3_k_scales(&self.scales[2]),
            q3_k_scales(&self.scales[3]),
        ]
    }
    #[inline(always)]
    unsafe fn per_row(&self, scale_bytes: &[__m128i; QUAD]) -> [__m256i; QUAD] {
        widen_signed(scale_bytes)
    }
    #[inline(always)]
    unsafe fn finish(&self, sums: __m256i, row_sums: __m256i, ad: __m256, acc: &mut [__m256; 3]) {
        finish_offset::<2>(&self.d, sums, row_sums, ad, acc)
    }
}

impl SixteenSubBlocks for QuadQ2_K {
    const SIGNED_SCALES: bool = false;
    #[inline(always)]
    unsafe fn weights(&self, v: usize) -> __m256i {
        two_bit_vector(&self.qs, v)
    }
    /// The scales: low nibbles.
    #[inline(always)]
    unsafe fn scale_bytes(&self) -> [__m128i; QUAD] {
        let low = _mm_set1_epi8(0x0f);
        let row = |r: usize| {
            _mm_and_si128(
                _mm_loadu_si128(self.scales[r].as_ptr() as *const __m128i),
                low,
            )
        };
        [row(0), row(1), row(2), row(3)]
    }
    /// The minimums: high nibbles.
    #[inline(always)]
    unsafe fn per_row(&self, _: &[__m128i; QUAD]) -> [__m256i; QUAD] {
        let low = _mm_set1_epi8(0x0f);
        let row = |r: usize| {
            let packed = _mm_loadu_si128(self.scales[r].as_ptr() as *const __m128i);
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), low))
        };
        [row(0), row(1), row(2), row(3)]
    }
    /// `acc[0] += d_r * d_x * Σ sc_j (q · x)_j` and `acc[1] -= dmin_r * d_x * Σ m_j (Σ x)_j`, both in lanes
    /// `[r0 r0 r1 r1 r2 r2 r3 r3]`.
    #[inline(always)]
    unsafe fn finish(&self, sums: __m256i, row_sums: __m256i, ad: __m256, acc: &mut [__m256; 3]) {
        let d = _mm256_mul_ps(paired_scales(&self.d), ad);
        acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc[0]);
        let dmin = _mm256_mul_ps(paired_scales(&self.dmin), ad);
        acc[1] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(row_sums), dmin, acc[1]);
    }
}

/// An IQ4_XS quad's super-block unpacked.
pub(crate) struct ReadyIq4Xs {
    /// Vector `4j + k`: the table levels of weights `8k..8k + 8` of sub-block `j` of rows 0 to 3 (signed).
    pub(crate) q: [__m256i; 32],
    /// Sub-block `j`: i16 lanes `4r..4r + 4` hold row `r`'s signed scale `ls_j - 32`.
    pub(crate) scales: [__m256i; 8],
    /// `[d0 d0 d1 d1 d2 d2 d3 d3]`.
    pub(crate) d: __m256,
}

impl QuadIq4Xs {
    /// Vector `4j + 2n + h`: the table levels (signed) of nibble `n` of chunk `2j + h` of rows 0 to 3, weights
    /// `16n + 8h..16n + 8h + 8` of sub-block `j`, activation chunk `4j + 2n + h`.
    #[inline(always)]
    unsafe fn levels(&self, v: usize) -> __m256i {
        let table =
            _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
        let (j, n, h) = (v / 4, (v / 2) % 2, v % 2);
        let bytes = load_chunk(&self.qs, 2 * j + h);
        _mm256_shuffle_epi8(table, byte_bits(bytes, 4 * n, 0x0f))
    }

    /// The signed sub-block scales as bytes `4j + r` (row r), sub-blocks 0..4 and 4..8.
    #[inline(always)]
    unsafe fn scale_bytes(&self) -> [__m128i; 2] {
        let mut bytes = [0i8; 32];
        for r in 0..QUAD {
            for j in 0..8 {
                bytes[4 * j + r] = iq4_xs_sub_scale(&self.scales_l[r], self.scales_h[r], j) as i8;
            }
        }
        let v = _mm256_loadu_si256(bytes.as_ptr() as *const __m256i);
        [_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v)]
    }
}

/// One chunk's products of signed levels: their signs move onto the activations for `maddubs`, whose pairs reach
/// 2 x 127 x 127, so each chunk meets its sub-block's scales in its own `madd`.
#[inline(always)]
unsafe fn signed_chunk_sum(level: __m256i, x: *const i64, v: usize, scales: __m256i) -> __m256i {
    let y = _mm256_set1_epi64x(x.add(v).read_unaligned());
    let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(level, level), _mm256_sign_epi8(y, level));
    _mm256_madd_epi16(pairs, scales)
}

impl ChunkKQuad for QuadIq4Xs {
    type Ready<'a> = ReadyIq4Xs;
    #[inline(always)]
    unsafe fn ready(&self) -> ReadyIq4Xs {
        let mut q = [_mm256_setzero_si256(); 32];
        let by_sub_block = self.scale_bytes();
        let mut scales = [_mm256_setzero_si256(); 8];
        unrolled!(J in [0 1 2 3 4 5 6 7] => {
            for n in 0..4 {
                q[4 * J + n] = self.levels(4 * J + n);
            }
            scales[J] = spread_scales::<true>(by_sub_block[J / 4], J);
        });
        ReadyIq4Xs {
            q,
            scales,
            d: paired_scales(&self.d),
        }
    }

    /// `acc[0] += d_r * d_x * Σ s_j (level · x)_j` in lanes `[r0 r0 r1 r1 r2 r2 r3 r3]`, the integer sums exact.
    #[inline(always)]
    unsafe fn accumulate(w: &ReadyIq4Xs, a: &Q8KBlock, acc: &mut [__m256; 3]) {
        let x = a.qs.as_ptr() as *const i64;
        let mut sums = _mm256_setzero_si256();
        unrolled!(J in [0 1 2 3 4 5 6 7] => {
            for v in 4 * J..4 * J + 4 {
                sums = _mm256_add_epi32(sums, signed_chunk_sum(w.q[v], x, v, w.scales[J]));
            }
        });
        let ad = _mm256_set1_ps(a.d);
        acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(w.d, ad), acc[0]);
    }

    /// [`ChunkKQuad::accumulate`] from the quad's bytes (the same exact integer sums).
    #[inline(always)]
    unsafe fn accumulate_one(&self, a: &Q8KBlock, acc: &mut [__m256; 3]) {
        let x = a.qs.as_ptr() as *const i64;
        let by_sub_block = self.scale_bytes();
        let mut sums = _mm256_setzero_si256();
        unrolled!(J in [0 1 2 3 4 5 6 7] => {
            let scales = spread_scales::<true>(by_sub_block[J / 4], J);
            for v in 4 * J..4 * J + 4 {
                sums = _mm256_add_epi32(sums, signed_chunk_sum(self.levels(v), x, v, scales));
            }
        });
        let ad = _mm256_set1_ps(a.d);
        acc[0] = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(sums),
            _mm256_mul_ps(paired_scales(&self.d), ad),
            acc[0],
        );
    }

    #[inline(always)]
    fn row_value(lanes: &[[f32; 8]; 3], r: usize) -> f32 {
        row_value_pairs::<1>(lanes, r)
    }
}

/// Tokens sharing each unpacked quad of super-blocks in a GEMM, and in what is left of a prompt below that.
/// Measured on the Intel Xeon of 2026-12-06 (2048x8192 x 512 tokens, 1 thread): tiles of 16 took 0.76-0.82 of the
/// time of tiles of 4 (Q4_K 186 -> 152 ms, Q6_K 305 -> 204 ms, Q5_K 186 -> ~160 ms).
pub(crate) const TILE: usize = 16;
pub(crate) const SMALL_TILE: usize = 4;
/// Activation bytes of the tokens a GEMM walks per pass over its rows (they stay in the core's L2 cache).
pub(crate) const GEMM_ACTIVATION_BYTES: usize = 128 * 1024;
/// How far ahead of the super-blocks being multiplied a single-token product prefetches its weights.
const PREFETCH_BYTES: usize = 2048;

/// The quad's rows (the first `valid_rows`) times tokens `first_token..first_token + T` (`quads` the quad's `n`
/// super-blocks). Each value is formed by the same operations whatever `T` is.
#[inline(always)]
unsafe fn chunk_tile<Q: ChunkKQuad, const T: usize>(
    quads: &[Q],
    x: &[Q8KBlock],
    n: usize,
    first_token: usize,
    out: &ProductOut,
    first_row: usize,
    valid_rows: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); 3]; T];
    for (i, quad) in quads.iter().enumerate() {
        if T == 1 {
            // One token reads every weight once: keep the stream ahead of the products.
            let ahead = (quad as *const Q as *const i8).add(PREFETCH_BYTES);
            for line in (0..std::mem::size_of::<Q>()).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(line));
            }
        }
        if T == 1 {
            quad.accumulate_one(x.get_unchecked(first_token * n + i), &mut acc[0]);
        } else {
            let w = quad.ready();
            for (t, acc) in acc.iter_mut().enumerate() {
                Q::accumulate(&w, x.get_unchecked((first_token + t) * n + i), acc);
            }
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        let mut lanes = [[0.0f32; 8]; 3];
        for (lanes, acc) in lanes.iter_mut().zip(acc) {
            _mm256_storeu_ps(lanes.as_mut_ptr(), *acc);
        }
        for r in 0..valid_rows {
            out.write(first_row + r, first_token + t, Q::row_value(&lanes, r));
        }
    }
}

/// The K-quant kernel of any format with a [`ChunkKQuad`] implementation (`quantized::QuadKernel`).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `first_row` is a multiple of 4, `quads` holds the quads of rows
/// `first_row..first_row + row_count` (`n` super-blocks each), `x` holds `tokens * n` super-blocks and `out` is the
/// task's product.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn chunk_rows<Q: ChunkKQuad>(
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
    let chunk = (GEMM_ACTIVATION_BYTES / (n * std::mem::size_of::<Q8KBlock>()).max(1))
        .max(TILE)
        .next_multiple_of(TILE);
    let mut chunk_start = 0;
    while chunk_start < tokens {
        let chunk_end = (chunk_start + chunk).min(tokens);
        for g in 0..row_count.div_ceil(QUAD) {
            let (quad_row, row) = (&quads[g * n..(g + 1) * n], first_row + g * QUAD);
            let valid = (row_count - g * QUAD).min(QUAD);
            let mut t = chunk_start;
            while t + TILE <= chunk_end {
                chunk_tile::<Q, TILE>(quad_row, x, n, t, out, row, valid);
                t += TILE;
            }
            while t + SMALL_TILE <= chunk_end {
                chunk_tile::<Q, SMALL_TILE>(quad_row, x, n, t, out, row, valid);
                t += SMALL_TILE;
            }
            // A few batched decode steps, or the end of a prompt: still one unpacking for all of them.
            match chunk_end - t {
                3 => chunk_tile::<Q, 3>(quad_row, x, n, t, out, row, valid),
                2 => chunk_tile::<Q, 2>(quad_row, x, n, t, out, row, valid),
                1 => chunk_tile::<Q, 1>(quad_row, x, n, t, out, row, valid),
                _ => debug_assert_eq!(t, chunk_end),
            }
        }
        chunk_start = chunk_end;
    }
}
