//! AVX2 + FMA + F16C versions of the block-quantised matrix kernels (each format's scalar `dot_scalar` in
//! `quantized/` is the reference). They read weights as row quads (`row_quads`): per block position, four rows' blocks and scales.
//!
//! The quad stores its four blocks interleaved by 8-byte chunk (`row_quads`), so its (unpacked) weights load as
//! four vectors by chunk (vector `c` holds elements `8c..8c + 8` of rows 0 to 3), and per token one `maddubs` with the activations' chunk `c` broadcast
//! to every quarter serves all four rows; the four products add in i16, one `madd` widens them to
//! `[r0 r0 r1 r1 r2 r2 r3 r3]` (each row's even and odd groups of four elements), and one conversion and one FMA
//! apply the rows' scales times the activation scale. No horizontal adds per block.
//!
//! Q8_0 is laid out the same way; its products widen to i32 per chunk (a pair of them can reach 2 x 127 x 127).
//!
//! So four rows share every convert, multiply and FMA, and several tokens share every unpacked weight block,
//! which is what makes a prompt cheaper per token than decoding.
//!
//! Signs: `maddubs` wants unsigned weights. Q4_1 and Q5_1 weights are unsigned already; Q4_0 (Q5_0) multiplies
//! the raw values (0..16, 0..32) and subtracts 8 (16) x the activations' sums over the same elements (exact
//! integers); Q8_0 moves each weight's sign onto the activation (`sign`), as llama.cpp does.
//!
//! Adding a format here: implement [`Quad`] for its quad (how its weights are made ready for `maddubs`, and their
//! scales); [`quads`] is then its kernel.

#![cfg(target_arch = "x86_64")]

use super::horizontal_sum;
use crate::ggml_arithmetic::{q4_1_lanes, q8_0_lanes};
use crate::quantized::row_quads::QUAD;
use crate::quantized::{Q8Block, QuadIq4Nl, QuadQ4_0, QuadQ4_1, QuadQ5_0, QuadQ5_1, QuadQ8_0};
use crate::row_blocks::ProductOut;
use seedinfer_formats::blocks::KVALUES_IQ4NL;
use std::arch::x86_64::*;

#[inline(always)]
pub(crate) unsafe fn quad_f32(d: &[half::f16; QUAD]) -> __m128 {
    _mm_cvtph_ps(_mm_loadl_epi64(d.as_ptr() as *const __m128i))
}

/// What the quad kernel needs from a weight format.
pub(crate) trait Quad {
    /// The quad's weights made ready for `maddubs` once, for every token of a tile.
    type Ready: Copy;
    const HAS_MINIMUM: bool;
    /// Tokens sharing each readied weight quad in a GEMM (as many as the registers hold).
    const GEMM_TOKENS: usize;
    unsafe fn ready(&self) -> Self::Ready;
    /// `[r0 r0 r1 r1 r2 r2 r3 r3]` i32 partial dot products of the four rows' blocks with activation block `a`
    /// (each row's even and odd groups of four elements), formed by `D`.
    unsafe fn dot<D: ByteDots>(w: &Self::Ready, a: &Q8Block) -> __m256i;
    fn scales(&self) -> &[half::f16; QUAD];
    /// The Q4_1/Q5_1 minimums, multiplied with each activation block's sum; read only when `HAS_MINIMUM`.
    #[inline(always)]
    fn minimums(&self) -> &[half::f16; QUAD] {
        self.scales()
    }
}

/// The four rows' nibbles unpacked by 8-element chunk: vector `c` holds elements `8c..8c + 8` of rows 0, 1, 2
/// and 3, so one `maddubs` with the activations' chunk `c` broadcast to every quarter serves all four rows. The
/// quad stores bytes 0..8 of the four rows, then bytes 8..16: their low nibbles are chunks 0 and 1 (elements
/// 0..16), their high nibbles chunks 2 and 3 (elements 16..32).
#[inline(always)]
unsafe fn nibble_chunks(qs: &[[u8; 8]; 2 * QUAD]) -> [__m256i; QUAD] {
    let low_bytes = _mm256_loadu_si256(qs.as_ptr() as *const __m256i);
    let high_bytes = _mm256_loadu_si256(qs[QUAD..].as_ptr() as *const __m256i);
    let mask = _mm256_set1_epi8(0x0f);
    [
        _mm256_and_si256(low_bytes, mask),
        _mm256_and_si256(high_bytes, mask),
        _mm256_and_si256(_mm256_srli_epi16::<4>(low_bytes), mask),
        _mm256_and_si256(_mm256_srli_epi16::<4>(high_bytes), mask),
    ]
}

/// How a quad's four chunks meet the activation chunks: both give `[r0 r0 r1 r1 r2 r2 r3 r3]`, each i32 lane the
/// exact sum of its four byte products (one of a row's groups of four elements, over the four chunks), so
/// [`Maddubs`] and [`Vnni`] give the same integers and the kernel the same bits.
pub(crate) trait ByteDots {
    /// Unsigned weight chunks (`0..=31`) times the signed activation chunks.
    unsafe fn unsigned(w: &[__m256i; QUAD], a: &Q8Block) -> __m256i;
    /// Signed int8 weight chunks (`w`, with their `magnitude`s) times the activation chunks: the weight's sign
    /// moves onto the activation.
    unsafe fn signed(w: &[__m256i; QUAD], magnitude: &[__m256i; QUAD], a: &Q8Block) -> __m256i;
}

/// AVX2: `maddubs` pairs in i16, widened by `madd`.
pub(crate) struct Maddubs;

/// AVX-VNNI: one `vpdpbusd` per chunk, four byte products added into each i32 lane.
pub(crate) struct Vnni;

/// Activation chunk `c` (8 bytes) in every quarter of a vector.
#[inline(always)]
unsafe fn activation_chunk(a: &Q8Block, c: usize) -> __m256i {
    _mm256_set1_epi64x((a.qs.as_ptr() as *const i64).add(c).read_unaligned())
}

// The chunk loops index the weight, magnitude and product arrays together.
#[allow(clippy::needless_range_loop)]
impl ByteDots for Maddubs {
    /// Each `maddubs` pair is at most 2 x 31 x 128, so the four chunks add up in i16 before one `madd` widens them.
    #[inline(always)]
    unsafe fn unsigned(w: &[__m256i; QUAD], a: &Q8Block) -> __m256i {
        let mut products = [_mm256_setzero_si256(); QUAD];
        for c in 0..QUAD {
            products[c] = _mm256_maddubs_epi16(w[c], activation_chunk(a, c));
        }
        let sum = _mm256_add_epi16(
            _mm256_add_epi16(products[0], products[1]),
            _mm256_add_epi16(products[2], products[3]),
        );
        _mm256_madd_epi16(sum, _mm256_set1_epi16(1))
    }

    /// A pair of products reaches 2 x 127 x 127, so each chunk widens to i32 on its own before the chunks add.
    #[inline(always)]
    unsafe fn signed(w: &[__m256i; QUAD], magnitude: &[__m256i; QUAD], a: &Q8Block) -> __m256i {
        let mut dots = [_mm256_setzero_si256(); QUAD];
        for c in 0..QUAD {
            let pairs =
                _mm256_maddubs_epi16(magnitude[c], _mm256_sign_epi8(activation_chunk(a, c), w[c]));
            dots[c] = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
        }
        _mm256_add_epi32(
            _mm256_add_epi32(dots[0], dots[1]),
            _mm256_add_epi32(dots[2], dots[3]),
        )
    }
}

#[allow(clippy::needless_range_loop)]
impl ByteDots for Vnni {
    #[inline(always)]
    unsafe fn unsigned(w: &[__m256i; QUAD], a: &Q8Block) -> __m256i {
        let mut sum = _mm256_setzero_si256();
        for c in 0..QUAD {
            sum = _mm256_dpbusd_avx_epi32(sum, w[c], activation_chunk(a, c));
        }
        sum
    }

    #[inline(always)]
    unsafe fn signed(w: &[__m256i; QUAD], magnitude: &[__m256i; QUAD], a: &Q8Block) -> __m256i {
        let mut sum = _mm256_setzero_si256();
        for c in 0..QUAD {
            let y = _mm256_sign_epi8(activation_chunk(a, c), w[c]);
            sum = _mm256_dpbusd_avx_epi32(sum, magnitude[c], y);
        }
        sum
    }
}

/// [`ByteDots::unsigned`] of weights stored as `q + 2^SHIFT` (Q4_0: 8, Q5_0: 16): `sum((q - 2^S) * y) = sum(q * y) -
/// 2^S * sum(y)`, per lane. A row's even lane holds the even groups of four elements and its odd lane the odd ones,
/// so each lane is an exact partial dot product of its own terms.
#[inline(always)]
unsafe fn offset_chunk_dots<D: ByteDots, const SHIFT: i32>(
    w: &[__m256i; QUAD],
    a: &Q8Block,
) -> __m256i {
    let groups = _mm256_set1_epi64x((a.group_sums.as_ptr() as *const i64).read_unaligned());
    _mm256_sub_epi32(D::unsigned(w, a), _mm256_slli_epi32::<SHIFT>(groups))
}

/// Scales for the chunk layout: `[d0 d0 d1 d1 d2 d2 d3 d3]`.
#[inline(always)]
pub(crate) unsafe fn spread_pairs(four: __m128) -> __m256 {
    _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(four),
        _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
    )
}

/// Row sums of the chunk layout: adjacent lanes added.
#[inline(always)]
pub(crate) unsafe fn rows_of_pairs(acc: __m256) -> __m128 {
    // [p0 p1 p0 p1 | p2 p3 p2 p3] with p_r the row sums.
    let pairs = _mm256_hadd_ps(acc, acc);
    _mm_castpd_ps(_mm_unpacklo_pd(
        _mm_castps_pd(_mm256_castps256_ps128(pairs)),
        _mm_castps_pd(_mm256_extractf128_ps(pairs, 1)),
    ))
}

impl Quad for QuadQ4_0 {
    type Ready = [__m256i; QUAD];
    const HAS_MINIMUM: bool = false;
    const GEMM_TOKENS: usize = 6;
    #[inline(always)]
    unsafe fn ready(&self) -> Self::Ready {
        nibble_chunks(&self.qs)
    }
    #[inline(always)]
    unsafe fn dot<D: ByteDots>(w: &Self::Ready, a: &Q8Block) -> __m256i {
        offset_chunk_dots::<D, 3>(w, a)
    }
    #[inline(always)]
    fn scales(&self) -> &[half::f16; QUAD] {
        &self.d
    }
}

impl Quad for QuadQ4_1 {
    type Ready = [__m256i; QUAD];
    const HAS_MINIMUM: bool = true;
    const GEMM_TOKENS: usize = 6;
    #[inline(always)]
    unsafe fn ready(&self) -> Self::Ready {
        nibble_chunks(&self.qs)
    }
    #[inline(always)]
    unsafe fn dot<D: ByteDots>(w: &Self::Ready, a: &Q8Block) -> __m256i {
        D::unsigned(w, a)
    }
    #[inline(always)]
    fn scales(&self) -> &[half::f16; QUAD] {
        &self.d
    }
    #[inline(always)]
    fn minimums(&self) -> &[half::f16; QUAD] {
        &self.m
    }
}

impl Quad for QuadQ8_0 {
    /// The rows' weights by 8-byte chunk (as the quad stores them) and their magnitudes.
    type Ready = ([__m256i; QUAD], [__m256i; QUAD]);
    const HAS_MINIMUM: bool = false;
    const GEMM_TOKENS: usize = 4;
    #[inline(always)]
    unsafe fn ready(&self) -> Self::Ready {
        let w: [__m256i; QUAD] = std::array::from_fn(|c| {
            _mm256_loadu_si256(self.qs[QUAD * c..].as_ptr() as *const __m256i)
        });
        (w, w.map(|w| _mm256_sign_epi8(w, w)))
    }
    #[inline(always)]
    unsafe fn dot<D: ByteDots>((w, magnitude): &Self::Ready, a: &Q8Block) -> __m256i {
        D::signed(w, magnitude, a)
    }
    #[inline(always)]
    fn scales(&self) -> &[half::f16; QUAD] {
        &self.d
    }
}

impl Quad for QuadIq4Nl {
    /// The rows' table values by 8-element chunk (as Q8_0's weights) and their magnitudes.
    type Ready = ([__m256i; QUAD], [__m256i; QUAD]);
    const HAS_MINIMUM: bool = false;
    const GEMM_TOKENS: usize = 4;
    #[inline(always)]
    unsafe fn ready(&self) -> Self::Ready {
        // One `pshufb` per chunk looks the 16 levels up by nibble (the table in both 128-bit lanes).
        let table =
            _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
        let w = nibble_chunks(&self.qs).map(|nibbles| _mm256_shuffle_epi8(table, nibbles));
        (w, w.map(|w| _mm256_sign_epi8(w, w)))
    }
    #[inline(always)]
    unsafe fn dot<D: ByteDots>((w, magnitude): &Self::Ready, a: &Q8Block) -> __m256i {
        D::signed(w, magnitude, a)
    }
    #[inline(always)]
    fn scales(&self) -> &[half::f16; QUAD] {
        &self.d
    }
}

/// The fifth bits of the four rows by 8-element chunk, as `0x10` or `0` per element, to be ORed into the
/// [`nibble_chunks`] of the same chunk: element `8c + i` of row `r` is bit `8c + i` of `qh[r]`, i.e. bit `i` of its
/// byte `c`, which is spread over the row's quarter of the vector and tested bit by bit.
#[inline(always)]
unsafe fn fifth_bits(qh: &[u32; QUAD]) -> [__m256i; QUAD] {
    let words = _mm256_broadcastsi128_si256(_mm_loadu_si128(qh.as_ptr() as *const __m128i));
    // Byte 0 of row r's word is at 4r: rows 0 and 1 in the low lane, 2 and 3 in the high one.
    let rows = _mm256_setr_epi64x(
        0,
        0x0404_0404_0404_0404,
        0x0808_0808_0808_0808,
        0x0c0c_0c0c_0c0c_0c0c,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let fifth = _mm256_set1_epi8(0x10);
    let chunk = |c: i8| {
        let spread = _mm256_shuffle_epi8(words, _mm256_add_epi8(rows, _mm256_set1_epi8(c)));
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
        _mm256_and_si256(set, fifth)
    };
    [chunk(0), chunk(1), chunk(2), chunk(3)]
}

/// The four rows' five-bit weights by 8-element chunk (0..32 each, unsigned).
#[inline(always)]
unsafe fn five_bit_chunks(qs: &[[u8; 8]; 2 * QUAD], qh: &[u32; QUAD]) -> [__m256i; QUAD] {
    let low = nibble_chunks(qs);
    let high = fifth_bits(qh);
    [
        _mm256_or_si256(low[0], high[0]),
        _mm256_or_si256(low[1], high[1]),
        _mm256_or_si256(low[2], high[2]),
        _mm256_or_si256(low[3], high[3]),
    ]
}

impl Quad for QuadQ5_0 {
    type Ready = [__m256i; QUAD];
    const HAS_MINIMUM: bool = false;
    const GEMM_TOKENS: usize = 6;
    #[inline(always)]
    unsafe fn ready(&self) -> Self::Ready {
        five_bit_chunks(&self.qs, &self.qh)
    }
    #[inline(always)]
    unsafe fn dot<D: ByteDots>(w: &Self::Ready, a: &Q8Block) -> __m256i {
        offset_chunk_dots::<D, 4>(w, a)
    }
    #[inline(always)]
    fn scales(&self) -> &[half::f16; QUAD] {
        &self.d
    }
}

impl Quad for QuadQ5_1 {
    type Ready = [__m256i; QUAD];
    const HAS_MINIMUM: bool = true;
    const GEMM_TOKENS: usize = 6;
    #[inline(always)]
    unsafe fn ready(&self) -> Self::Ready {
        five_bit_chunks(&self.qs, &self.qh)
    }
    #[inline(always)]
    unsafe fn dot<D: ByteDots>(w: &Self::Ready, a: &Q8Block) -> __m256i {
        D::unsigned(w, a)
    }
    #[inline(always)]
    fn scales(&self) -> &[half::f16; QUAD] {
        &self.d
    }
    #[inline(always)]
    fn minimums(&self) -> &[half::f16; QUAD] {
        &self.m
    }
}

/// Dot products of one row quad (`quads` at its first block, `n` blocks) with `T` consecutive tokens (`x` at the
/// first token's first block), written for the quad's first `valid_rows` rows. Each dot product is formed in the
/// same order whatever `T` is: a prompt token gets exactly the value it would get decoded alone.
#[inline(always)]
unsafe fn quad_tile<Q: Quad, D: ByteDots, const T: usize>(
    quads: *const Q,
    n: usize,
    x: *const Q8Block,
    out: &ProductOut,
    first_row: usize,
    valid_rows: usize,
    first_token: usize,
) {
    let mut acc = [_mm256_setzero_ps(); T];
    let mut mins = [_mm_setzero_ps(); T];
    for i in 0..n {
        let q = &*quads.add(i);
        // The weights stream from memory once per product: ask for them ahead of use.
        let ahead = (quads.add(i) as *const i8).add(PREFETCH_BYTES);
        _mm_prefetch::<_MM_HINT_T0>(ahead);
        if std::mem::size_of::<Q>() > 64 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.add(64));
        }
        if std::mem::size_of::<Q>() > 128 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.add(128));
        }
        let w = q.ready();
        let scales = spread_pairs(quad_f32(q.scales()));
        let minimums = if Q::HAS_MINIMUM {
            quad_f32(q.minimums())
        } else {
            _mm_setzero_ps()
        };
        for t in 0..T {
            let a = &*x.add(t * n + i);
            let sums = _mm256_cvtepi32_ps(Q::dot::<D>(&w, a));
            acc[t] = _mm256_fmadd_ps(sums, _mm256_mul_ps(scales, _mm256_set1_ps(a.d)), acc[t]);
            if Q::HAS_MINIMUM {
                mins[t] = _mm_fmadd_ps(minimums, _mm_set1_ps(a.s), mins[t]);
            }
        }
    }
    // Stored straight into the product (a loop of scalar writes became a `memcpy` call per token); rows beyond
    // `valid_rows` (a matrix whose rows are not a multiple of 4) are masked off.
    let lanes = _mm_setr_epi32(0, 1, 2, 3);
    let valid = _mm_cmpgt_epi32(_mm_set1_epi32(valid_rows as i32), lanes);
    for t in 0..T {
        let rows = _mm_add_ps(rows_of_pairs(acc[t]), mins[t]);
        let at = out
            .token_rows(first_token + t, first_row, valid_rows)
            .as_mut_ptr();
        if valid_rows >= QUAD {
            _mm_storeu_ps(at, rows);
        } else {
            _mm_maskstore_ps(at, valid, rows);
        }
    }
}

/// How far ahead of the block being multiplied the weights are prefetched.
pub(crate) const PREFETCH_BYTES: usize = 1024;
/// Activation bytes of the tokens a GEMM walks per pass over its rows: they stay in the core's L2 cache while
/// the rows' weights stay in L1.
pub(crate) const GEMM_ACTIVATION_BYTES: usize = 96 * 1024;

/// Rows `first_row..first_row + row_count` (`first_row` a multiple of 4; `quads` starting at its quad) times
/// every token.
#[inline(always)]
unsafe fn quads_tokens<Q: Quad, D: ByteDots>(
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
    let quad_count = row_count.div_ceil(QUAD);
    let (quads, x) = (quads.as_ptr(), x.as_ptr());
    let tile = Q::GEMM_TOKENS;
    let chunk = (GEMM_ACTIVATION_BYTES / (n * std::mem::size_of::<Q8Block>()))
        .max(tile)
        .next_multiple_of(tile);
    let mut chunk_start = 0;
    while chunk_start < tokens {
        let chunk_end = (chunk_start + chunk).min(tokens);
        for g in 0..quad_count {
            let (w, row) = (quads.add(g * n), first_row + g * QUAD);
            let valid = (row_count - g * QUAD).min(QUAD);
            let mut t = chunk_start;
            while t + tile <= chunk_end {
                let a = x.add(t * n);
                match tile {
                    2 => quad_tile::<Q, D, 2>(w, n, a, out, row, valid, t),
                    3 => quad_tile::<Q, D, 3>(w, n, a, out, row, valid, t),
                    6 => quad_tile::<Q, D, 6>(w, n, a, out, row, valid, t),
                    8 => quad_tile::<Q, D, 8>(w, n, a, out, row, valid, t),
                    _ => quad_tile::<Q, D, 4>(w, n, a, out, row, valid, t),
                }
                t += tile;
            }
            // What is left — a few decode steps batched together, the end of a prompt — still shares each unpacked
            // block among its tokens.
            while t < chunk_end {
                let a = x.add(t * n);
                let step = match chunk_end - t {
                    1 => {
                        quad_tile::<Q, D, 1>(w, n, a, out, row, valid, t);
                        1
                    }
                    2 => {
                        quad_tile::<Q, D, 2>(w, n, a, out, row, valid, t);
                        2
                    }
                    3 => {
                        quad_tile::<Q, D, 3>(w, n, a, out, row, valid, t);
                        3
                    }
                    _ => {
                        quad_tile::<Q, D, 4>(w, n, a, out, row, valid, t);
                        4
                    }
                };
                t += step;
            }
        }
        chunk_start = chunk_end;
    }
}

/// The quad kernel of any format with a [`Quad`] implementation (`quantized::QuadKernel`).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `first_row` is a multiple of 4, `quads` holds the quads of rows
/// `first_row..first_row + row_count` (`n` blocks each), `x` holds `tokens * n` blocks and `out` is the task's
/// product.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quads<Q: Quad>(
    quads: &[Q],
    n: usize,
    x: &[Q8Block],
    tokens: usize,
    out: &ProductOut,
    first_row: usize,
    row_count: usize,
) {
    quads_tokens::<Q, Maddubs>(quads, n, x, tokens, out, first_row, row_count)
}

/// [`quads`] with AVX-VNNI's `vpdpbusd` forming the chunk dot products: the same integers, so the same bits.
///
/// # Safety
/// As [`quads`], and the CPU must have AVX-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub unsafe fn quads_vnni<Q: Quad>(
    quads: &[Q],
    n: usize,
    x: &[Q8Block],
    tokens: usize,
    out: &ProductOut,
    first_row: usize,
    row_count: usize,
) {
    quads_tokens::<Q, Vnni>(quads, n, x, tokens, out, first_row, row_count)
}

/// `f16 → f32` with F16C, for the AVX2 dot products (exact, as every conversion of an f16).
#[inline(always)]
unsafe fn widen_f16(h: half::f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
}

/// `ggml_arithmetic::dot_q4_1_avx2` on row `lane` of row quads, read in place: for single-token products, where
/// unpacking the row first would cost more than the dot product itself. The same operations, so the same bits.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn ggml_dot_q4_1_in_place(quads: &[QuadQ4_1], lane: usize, x: &[Q8Block]) -> f32 {
    let low = _mm256_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for (q, y) in quads.iter().zip(x) {
        summs = widen_f16(q.m[lane]).mul_add(y.s, summs);
        let bytes = _mm_set_epi64x(
            i64::from_le_bytes(q.qs[QUAD + lane]),
            i64::from_le_bytes(q.qs[lane]),
        );
        let qx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes), low);
        let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
        let d = _mm256_set1_ps(widen_f16(q.d[lane]) * y.d);
        acc = _mm256_fmadd_ps(d, q4_1_lanes(qx, qy), acc);
    }
    horizontal_sum(acc) + summs
}

/// `ggml_arithmetic::dot_q8_0_avx2` on row `lane` of row quads, read in place (see [`ggml_dot_q4_1_in_place`]).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn ggml_dot_q8_0_in_place(quads: &[QuadQ8_0], lane: usize, x: &[Q8Block]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (q, y) in quads.iter().zip(x) {
        let chunk = |c: usize| i64::from_le_bytes(q.qs[QUAD * c + lane].map(|v| v as u8));
        let qx = _mm256_set_epi64x(chunk(3), chunk(2), chunk(1), chunk(0));
        let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
        let d = _mm256_set1_ps(widen_f16(q.d[lane]) * y.d);
        acc = _mm256_fmadd_ps(d, q8_0_lanes(qx, qy), acc);
    }
    horizontal_sum(acc)
}
