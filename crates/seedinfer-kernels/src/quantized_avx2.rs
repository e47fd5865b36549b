//! AVX2 + FMA + F16C versions of the block-quantised matrix kernels (the scalar ones in `quantized` are the
//! reference). They read weights as row quads (`row_quads`): per block position, four rows' blocks and scales.
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
//! Signs: `maddubs` wants unsigned weights. Q4_1 nibbles are unsigned already; Q4_0 multiplies the raw nibbles
//! (0..16) and subtracts 8 x the activations' sums over the same elements (exact integers); Q8_0 moves each
//! weight's sign onto the activation (`sign`), as llama.cpp does.

#![cfg(target_arch = "x86_64")]

use crate::avx2_reduce::horizontal_max;
use crate::quantized::Q8Block;
use crate::row_blocks::ProductOut;
use crate::row_quads::{QuadQ4_0, QuadQ4_1, QuadQ8_0, QUAD};
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn quad_f32(d: &[half::f16; QUAD]) -> __m128 {
    _mm_cvtph_ps(_mm_loadl_epi64(d.as_ptr() as *const __m128i))
}

/// What the quad kernel needs from a weight format.
trait Quad {
    /// The quad's weights made ready for `maddubs` once, for every token of a tile.
    type Ready: Copy;
    const HAS_MINIMUM: bool;
    /// Tokens sharing each readied weight quad in a GEMM (as many as the registers hold).
    const GEMM_TOKENS: usize;
    unsafe fn ready(&self) -> Self::Ready;
    /// `[r0 r0 r1 r1 r2 r2 r3 r3]` i32 partial dot products of the four rows' blocks with activation block `a`
    /// (each row's even and odd groups of four elements).
    unsafe fn dot(w: &Self::Ready, a: &Q8Block) -> __m256i;
    fn scales(&self) -> &[half::f16; QUAD];
    /// The Q4_1 minimums, multiplied with each activation block's sum.
    fn minimums(&self) -> &[half::f16; QUAD];
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

/// `[r0 r0 r1 r1 r2 r2 r3 r3]` i32 sums of unsigned nibble chunks times the activation chunks. Each `maddubs`
/// pair is at most 2 x 15 x 128, so the four chunks add up in i16 before one `madd` widens them.
#[inline(always)]
unsafe fn chunk_dots(w: &[__m256i; QUAD], a: &Q8Block) -> __m256i {
    let y = a.qs.as_ptr() as *const i64;
    let products: [__m256i; QUAD] = std::array::from_fn(|c| {
        _mm256_maddubs_epi16(w[c], _mm256_set1_epi64x(y.add(c).read_unaligned()))
    });
    let sum = _mm256_add_epi16(
        _mm256_add_epi16(products[0], products[1]),
        _mm256_add_epi16(products[2], products[3]),
    );
    _mm256_madd_epi16(sum, _mm256_set1_epi16(1))
}

/// Scales for the chunk layout: `[d0 d0 d1 d1 d2 d2 d3 d3]`.
#[inline(always)]
unsafe fn spread_pairs(four: __m128) -> __m256 {
    _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(four),
        _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
    )
}

/// Row sums of the chunk layout: adjacent lanes added.
#[inline(always)]
unsafe fn rows_of_pairs(acc: __m256) -> __m128 {
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
    unsafe fn dot(w: &Self::Ready, a: &Q8Block) -> __m256i {
        // sum((q - 8) * y) = sum(q * y) - 8 * sum(y), per lane: a row's even lane holds the even groups of four
        // elements and its odd lane the odd ones, so each lane is an exact partial dot product of its own terms.
        let groups = _mm256_set1_epi64x((a.group_sums.as_ptr() as *const i64).read_unaligned());
        _mm256_sub_epi32(chunk_dots(w, a), _mm256_slli_epi32::<3>(groups))
    }
    #[inline(always)]
    fn scales(&self) -> &[half::f16; QUAD] {
        &self.d
    }
    #[inline(always)]
    fn minimums(&self) -> &[half::f16; QUAD] {
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
    unsafe fn dot(w: &Self::Ready, a: &Q8Block) -> __m256i {
        chunk_dots(w, a)
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
    unsafe fn dot((w, magnitude): &Self::Ready, a: &Q8Block) -> __m256i {
        // Signed x signed: the weight's sign moves onto the activation. A pair of products reaches 2 x 127 x 127,
        // so each chunk widens to i32 on its own before the chunks add.
        let y = a.qs.as_ptr() as *const i64;
        let chunk = |c: usize| {
            let yc = _mm256_set1_epi64x(y.add(c).read_unaligned());
            let pairs = _mm256_maddubs_epi16(magnitude[c], _mm256_sign_epi8(yc, w[c]));
            _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
        };
        _mm256_add_epi32(
            _mm256_add_epi32(chunk(0), chunk(1)),
            _mm256_add_epi32(chunk(2), chunk(3)),
        )
    }
    #[inline(always)]
    fn scales(&self) -> &[half::f16; QUAD] {
        &self.d
    }
    #[inline(always)]
    fn minimums(&self) -> &[half::f16; QUAD] {
        &self.d
    }
}

/// Dot products of one row quad (`quads` at its first block, `n` blocks) with `T` consecutive tokens (`x` at the
/// first token's first block), written for the quad's first `valid_rows` rows. Each dot product is formed in the
/// same order whatever `T` is: a prompt token gets exactly the value it would get decoded alone.
#[inline(always)]
unsafe fn quad_tile<Q: Quad, const T: usize>(
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
            let sums = _mm256_cvtepi32_ps(Q::dot(&w, a));
            acc[t] = _mm256_fmadd_ps(sums, _mm256_mul_ps(scales, _mm256_set1_ps(a.d)), acc[t]);
            if Q::HAS_MINIMUM {
                mins[t] = _mm_fmadd_ps(minimums, _mm_set1_ps(a.s), mins[t]);
            }
        }
    }
    for t in 0..T {
        let mut rows = [0.0f32; QUAD];
        _mm_storeu_ps(
            rows.as_mut_ptr(),
            _mm_add_ps(rows_of_pairs(acc[t]), mins[t]),
        );
        for (r, value) in rows.iter().enumerate().take(valid_rows) {
            out.write(first_row + r, first_token + t, *value);
        }
    }
}

/// How far ahead of the block being multiplied the weights are prefetched.
const PREFETCH_BYTES: usize = 1024;
/// Activation bytes of the tokens a GEMM walks per pass over its rows: they stay in the core's L2 cache while
/// the rows' weights stay in L1.
const GEMM_ACTIVATION_BYTES: usize = 96 * 1024;

/// Rows `first_row..first_row + row_count` (`first_row` a multiple of 4; `quads` starting at its quad) times
/// every token.
#[inline(always)]
unsafe fn quads_tokens<Q: Quad>(
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
                    2 => quad_tile::<Q, 2>(w, n, a, out, row, valid, t),
                    3 => quad_tile::<Q, 3>(w, n, a, out, row, valid, t),
                    6 => quad_tile::<Q, 6>(w, n, a, out, row, valid, t),
                    8 => quad_tile::<Q, 8>(w, n, a, out, row, valid, t),
                    _ => quad_tile::<Q, 4>(w, n, a, out, row, valid, t),
                }
                t += tile;
            }
            while t < chunk_end {
                quad_tile::<Q, 1>(w, n, x.add(t * n), out, row, valid, t);
                t += 1;
            }
        }
        chunk_start = chunk_end;
    }
}

macro_rules! avx2_quads_kernel {
    ($name:ident, $quad:ty) => {
        /// # Safety
        /// The CPU must have AVX2, FMA and F16C; `first_row` is a multiple of 4, `quads` holds the quads of rows
        /// `first_row..first_row + row_count` (`n` blocks each), `x` holds `tokens * n` blocks and `out` is the
        /// task's product.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $name(
            quads: &[$quad],
            n: usize,
            x: &[Q8Block],
            tokens: usize,
            out: &ProductOut,
            first_row: usize,
            row_count: usize,
        ) {
            quads_tokens(quads, n, x, tokens, out, first_row, row_count)
        }
    };
}

avx2_quads_kernel!(quads_q4_0, QuadQ4_0);
avx2_quads_kernel!(quads_q4_1, QuadQ4_1);
avx2_quads_kernel!(quads_q8_0, QuadQ8_0);

/// `quantized::quantize_activations` with intrinsics (bit for bit the scalar body: the maximum is exact, the
/// scale and its inverse are computed the same way, and `vroundps` rounds half to even like `round_ties_even`).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `input.len()` is a multiple of 32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_activations(input: &[f32], out: &mut Vec<Q8Block>) {
    out.clear();
    out.reserve(input.len() / 32);
    for x in input.chunks_exact(32) {
        let v: [__m256; 4] = std::array::from_fn(|j| _mm256_loadu_ps(x.as_ptr().add(8 * j)));
        out.push(quantize_block(v));
    }
}

/// `rms_norm::rms_norm_quantized` with intrinsics: each block of the normalised row is computed in registers
/// (`x * scale * weight`, rounded like the scalar expression) and quantised there.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `x.len()` is a multiple of `weight.len()`, itself a multiple of 32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rms_norm_quantized(x: &[f32], weight: &[f32], eps: f32, out: &mut Vec<Q8Block>) {
    out.clear();
    out.reserve(x.len() / 32);
    for row in x.chunks_exact(weight.len()) {
        let scale = _mm256_set1_ps(crate::rms_norm::inverse_rms(row, eps));
        for (x, w) in row.chunks_exact(32).zip(weight.chunks_exact(32)) {
            let v: [__m256; 4] = std::array::from_fn(|j| {
                let scaled = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(8 * j)), scale);
                _mm256_mul_ps(scaled, _mm256_loadu_ps(w.as_ptr().add(8 * j)))
            });
            out.push(quantize_block(v));
        }
    }
}

/// One block of 32 activations (four registers of eight, in order) quantised like
/// `quantized::quantize_activations_scalar`.
#[inline(always)]
unsafe fn quantize_block(v: [__m256; 4]) -> Q8Block {
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let a = v.map(|v| _mm256_and_ps(v, magnitude));
    let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
    let amax = horizontal_max(m);
    let d = amax / 127.0;
    let inverse = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    let q = v.map(|v| {
        _mm256_cvtps_epi32(_mm256_round_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(_mm256_mul_ps(v, inverse)))
    });
    let sum_i32 = |s4: __m128i| {
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
        _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b00_00_00_01)))
    };
    // q[j] holds elements 8j..8j + 8: its low half is an even group of four, its high half an odd one.
    let all = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    let group_sums = [
        sum_i32(_mm256_castsi256_si128(all)),
        sum_i32(_mm256_extracti128_si256(all, 1)),
    ];
    let packed = _mm256_packs_epi16(
        _mm256_packs_epi32(q[0], q[1]),
        _mm256_packs_epi32(q[2], q[3]),
    );
    let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let mut block = Q8Block {
        d: half::f16::from_f32(d).to_f32(),
        s: half::f16::from_f32(d * (group_sums[0] + group_sums[1]) as f32).to_f32(),
        group_sums,
        qs: [0; 32],
    };
    _mm256_storeu_si256(block.qs.as_mut_ptr() as *mut __m256i, ordered);
    block
}
