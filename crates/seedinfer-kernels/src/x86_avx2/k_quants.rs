//! AVX2 kernels of the K-quants (Q4_K, Q5_K, Q6_K) times Q8_K activations. Each format's scalar `dot_scalar` in
//! `quantized/` is the reference. Per super-block the integer sums are exact and stay in eight i32 lanes; each
//! lane is converted and accumulated in f32 with the super-block's scale (as ggml's AVX2 kernels do), and the lanes
//! are added once per row. So a kernel differs from the scalar oracle only by the order of f32 additions, and a
//! token gets the same bits in a batch of any size (its operations do not depend on the others).
//!
//! Both kernels take a row quad's super-blocks `i` together, unpack them once to unsigned bytes and their scales
//! to i16 vectors, and multiply them with a tile of tokens (`maddubs`: unsigned weights x signed activations, pairs
//! added in i16; `madd` with sub-block scales widens to i32). A single-token product reads the quads' bytes as one
//! sequential stream, prefetched ahead.
//!
//! - Q4_K, Q5_K ([`chunk_rows`], [`ChunkKQuad`]): the quad interleaves its rows by 8-byte chunk, so one vector holds
//!   the same 8 weights of the four rows and one `maddubs` with those 8 activations broadcast serves all four; a
//!   sub-block's four chunks add up in i16 (at most 4 x 2 x 31 x 127 < 2^15) before one `madd` with the four rows'
//!   scales gives `[r0 r0 r1 r1 r2 r2 r3 r3]` lanes. The minimums meet the activations' sums of 16 (`bsums`).
//! - Q6_K ([`rows`], [`KQuad`]): rows as stored, unpacked one vector of 32 weights at a time; each activation
//!   vector is loaded once for the four rows, and 32 comes off each i16 pair (`maddubs` of 32 with the
//!   activations).

#![cfg(target_arch = "x86_64")]

use super::horizontal_sum;
use crate::quantized::row_quads::QUAD;
use crate::quantized::{Q8KBlock, QuadFormat, QuadQ4_K, QuadQ5_K, QuadQ6_K};
use crate::row_blocks::ProductOut;
use seedinfer_formats::BlockQ6_K;
use std::arch::x86_64::*;

/// What the row-layout K-quant kernel ([`rows`]) needs from a format.
pub(crate) trait KQuad: QuadFormat<Input = Q8KBlock> {
    /// A super-block unpacked for `maddubs`, with its scales.
    type Ready;
    /// Row `lane`'s super-block of this quad.
    fn row(&self, lane: usize) -> &Self::Block;
    unsafe fn ready(b: &Self::Block) -> Self::Ready;
    /// Adds each of `R` rows' super-block dot products with activation super-block `a` to the eight f32 lanes of
    /// that row's accumulator (each row's operations are the same whatever `R` is).
    unsafe fn accumulate<const R: usize>(w: &[Self::Ready; R], a: &Q8KBlock, acc: &mut [__m256; R]);
}

/// What the chunk-layout K-quant kernel ([`chunk_rows`]) needs from a format.
pub(crate) trait ChunkKQuad: QuadFormat<Input = Q8KBlock> {
    fn d(&self) -> &[half::f16; QUAD];
    fn dmin(&self) -> &[half::f16; QUAD];
    fn packed_scales(&self) -> &[[u8; 12]; QUAD];
    /// Vector `4j + k`: weights `8k..8k + 8` of sub-block `j` of rows 0 to 3 (unsigned).
    unsafe fn weights(&self, q: &mut [__m256i; 32]);
}

impl ChunkKQuad for QuadQ4_K {
    #[inline(always)]
    fn d(&self) -> &[half::f16; QUAD] {
        &self.d
    }
    #[inline(always)]
    fn dmin(&self) -> &[half::f16; QUAD] {
        &self.dmin
    }
    #[inline(always)]
    fn packed_scales(&self) -> &[[u8; 12]; QUAD] {
        &self.scales
    }
    #[inline(always)]
    unsafe fn weights(&self, q: &mut [__m256i; 32]) {
        nibble_chunks(&self.qs, q)
    }
}

impl ChunkKQuad for QuadQ5_K {
    #[inline(always)]
    fn d(&self) -> &[half::f16; QUAD] {
        &self.d
    }
    #[inline(always)]
    fn dmin(&self) -> &[half::f16; QUAD] {
        &self.dmin
    }
    #[inline(always)]
    fn packed_scales(&self) -> &[[u8; 12]; QUAD] {
        &self.scales
    }
    #[inline(always)]
    unsafe fn weights(&self, q: &mut [__m256i; 32]) {
        nibble_chunks(&self.qs, q);
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
    }
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

/// A chunk-layout quad's super-block unpacked: weights, scales per sub-block for the `[r0 r0 r1 r1 ..]` lanes,
/// minimums by row pair, and the f32 scales spread to the lanes they multiply.
pub(crate) struct ChunkReady {
    q: [__m256i; 32],
    /// Sub-block `j`: i16 lanes `4r..4r + 4` hold row `r`'s scale.
    scales: [__m256i; 8],
    /// i16 `[m_0,0..8 | m_1,0..8]` and the same for rows 2 and 3.
    mins: [__m256i; 2],
    /// `[d0 d0 d1 d1 d2 d2 d3 d3]`.
    d: __m256,
    /// `[dmin0 x4 | dmin1 x4]`, `[dmin2 x4 | dmin3 x4]`.
    dmin: [__m256; 2],
}

#[inline(always)]
unsafe fn chunk_ready<Q: ChunkKQuad>(quad: &Q) -> ChunkReady {
    let mut q = [_mm256_setzero_si256(); 32];
    quad.weights(&mut q);
    let packed = quad.packed_scales();
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
        let b = 4 * (j % 4) as i8;
        let select = _mm_setr_epi8(
            b,
            b,
            b,
            b,
            b + 1,
            b + 1,
            b + 1,
            b + 1,
            b + 2,
            b + 2,
            b + 2,
            b + 2,
            b + 3,
            b + 3,
            b + 3,
            b + 3,
        );
        *scale = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(by_sub_block[j / 4], select));
    }
    let mins = [
        _mm256_cvtepu8_epi16(_mm_unpackhi_epi64(r[0], r[1])),
        _mm256_cvtepu8_epi16(_mm_unpackhi_epi64(r[2], r[3])),
    ];
    let widen = |h: &[half::f16; QUAD]| {
        _mm256_castps128_ps256(_mm_cvtph_ps(_mm_loadl_epi64(h.as_ptr() as *const __m128i)))
    };
    let (d, dmin) = (widen(quad.d()), widen(quad.dmin()));
    ChunkReady {
        q,
        scales,
        mins,
        d: _mm256_permutevar8x32_ps(d, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)),
        dmin: [
            _mm256_permutevar8x32_ps(dmin, _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1)),
            _mm256_permutevar8x32_ps(dmin, _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3)),
        ],
    }
}

/// Adds a chunk-layout super-block's products with activation super-block `a`: `acc[0]` gets `d_r * d_x * Σ sc_j (q
/// · x)_j` in lanes `[r0 r0 r1 r1 r2 r2 r3 r3]`, `acc[1]` and `acc[2]` get `-dmin_r * d_x * Σ m_j (Σ x)_j` in lanes
/// `[r0 x4 | r1 x4]` and `[r2 x4 | r3 x4]`.
#[inline(always)]
unsafe fn chunk_accumulate(w: &ChunkReady, a: &Q8KBlock, acc: &mut [__m256; 3]) {
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
    let pairs = _mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256::<1>(bsums),
    );
    let pairs = _mm256_broadcastsi128_si256(pairs);
    for h in 0..2 {
        let mins = _mm256_cvtepi32_ps(_mm256_madd_epi16(w.mins[h], pairs));
        acc[1 + h] = _mm256_fnmadd_ps(mins, _mm256_mul_ps(w.dmin[h], ad), acc[1 + h]);
    }
}

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
            let ahead = (quad as *const Q as *const i8).add(PREFETCH_BYTES);
            for line in (0..std::mem::size_of::<Q>()).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(line));
            }
        }
        let w = chunk_ready(quad);
        for (t, acc) in acc.iter_mut().enumerate() {
            chunk_accumulate(&w, x.get_unchecked((first_token + t) * n + i), acc);
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        let mut lanes = [[0.0f32; 8]; 3];
        for (lanes, acc) in lanes.iter_mut().zip(acc) {
            _mm256_storeu_ps(lanes.as_mut_ptr(), *acc);
        }
        for r in 0..valid_rows {
            let main = lanes[0][2 * r] + lanes[0][2 * r + 1];
            let m = &lanes[1 + r / 2][4 * (r % 2)..4 * (r % 2) + 4];
            out.write(
                first_row + r,
                first_token + t,
                main + ((m[0] + m[1]) + (m[2] + m[3])),
            );
        }
    }
}

/// The kernel of the chunk-layout K-quants (`quantized::QuadKernel`).
///
/// # Safety
/// As [`rows`].
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
            while t < chunk_end {
                chunk_tile::<Q, 1>(quad_row, x, n, t, out, row, valid);
                t += 1;
            }
        }
        chunk_start = chunk_end;
    }
}

/// The 12 bytes of packed 6-bit scales and minimums as `[sc0 .. sc7 | m0 .. m7]` bytes (ggml's mask trick: the
/// same fields `blocks::scale_min` reads).
#[inline(always)]
unsafe fn scales_and_mins(packed: &[u8; 12]) -> __m128i {
    let word = |i: usize| {
        u32::from_le_bytes([
            packed[4 * i],
            packed[4 * i + 1],
            packed[4 * i + 2],
            packed[4 * i + 3],
        ])
    };
    let (w0, w1, w2) = (word(0), word(1), word(2));
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

/// Unpacked weights and scales of a Q6_K super-block.
pub(crate) struct ReadyQ6 {
    /// Vector `4h + k`: elements `128h + 32k .. + 32` (0..64, unsigned).
    q: [__m256i; 8],
    /// Vector `v`'s scales as i16: sub-block `2v` in the low half, `2v + 1` in the high half.
    scales: [__m256i; 8],
    d: f32,
}

impl KQuad for QuadQ6_K {
    type Ready = ReadyQ6;
    #[inline(always)]
    fn row(&self, lane: usize) -> &BlockQ6_K {
        &self.0[lane]
    }
    #[inline(always)]
    unsafe fn ready(b: &BlockQ6_K) -> ReadyQ6 {
        let low = _mm256_set1_epi8(0x0f);
        let mut q = [_mm256_setzero_si256(); 8];
        for h in 0..2 {
            let ql0 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(b.qh.as_ptr().add(32 * h) as *const __m256i);
            let bits = |mask: i8| _mm256_and_si256(qh, _mm256_set1_epi8(mask));
            q[4 * h] = _mm256_or_si256(
                _mm256_and_si256(ql0, low),
                _mm256_slli_epi16::<4>(bits(0x03)),
            );
            q[4 * h + 1] = _mm256_or_si256(
                _mm256_and_si256(ql1, low),
                _mm256_slli_epi16::<2>(bits(0x0c)),
            );
            q[4 * h + 2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low),
                bits(0x30),
            );
            q[4 * h + 3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low),
                _mm256_srli_epi16::<2>(bits(-0x40)),
            );
        }
        let packed = _mm_loadu_si128(b.scales.as_ptr() as *const __m128i);
        let mut scales = [_mm256_setzero_si256(); 8];
        for (v, scale) in scales.iter_mut().enumerate() {
            let (a, c) = (2 * v as i8, 2 * v as i8 + 1);
            let select = _mm_setr_epi8(a, a, a, a, a, a, a, a, c, c, c, c, c, c, c, c);
            *scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(packed, select));
        }
        ReadyQ6 {
            q,
            scales,
            d: b.d.to_f32(),
        }
    }
    #[inline(always)]
    unsafe fn accumulate<const R: usize>(w: &[ReadyQ6; R], a: &Q8KBlock, acc: &mut [__m256; R]) {
        let mut sums = [_mm256_setzero_si256(); R];
        let offset = _mm256_set1_epi8(32);
        for v in 0..8 {
            let y = _mm256_loadu_si256(a.qs.as_ptr().add(32 * v) as *const __m256i);
            // `(q - 32) * x` pairs, exact in i16 (|.| <= 2 x 32 x 127): each i32 lane below is then a partial sum of
            // the dot product's own terms, and converts to f32 as precisely as they allow.
            let offsets = _mm256_maddubs_epi16(offset, y);
            for (sum, w) in sums.iter_mut().zip(w) {
                let pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(w.q[v], y), offsets);
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, w.scales[v]));
            }
        }
        for ((acc, w), sums) in acc.iter_mut().zip(w).zip(sums) {
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(w.d * a.d), _mm256_cvtepi32_ps(sums), *acc);
        }
    }
}

/// Tokens sharing each unpacked quad of super-blocks in a GEMM.
const TILE: usize = 4;
/// Activation bytes of the tokens a GEMM walks per pass over its rows (they stay in the core's L2 cache).
const GEMM_ACTIVATION_BYTES: usize = 128 * 1024;
/// How far ahead of the super-blocks being multiplied a single-token product prefetches its weights.
const PREFETCH_BYTES: usize = 2048;

/// The quad's rows (the first `valid_rows` of its four; `quads` its `n` super-blocks) times tokens
/// `first_token..first_token + T` of `x`. Each value is formed by the same operations whatever `T` is.
#[inline(always)]
unsafe fn quad_tile<Q: KQuad, const T: usize>(
    quads: &[Q],
    x: &[Q8KBlock],
    n: usize,
    first_token: usize,
    out: &ProductOut,
    first_row: usize,
    valid_rows: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); QUAD]; T];
    for (i, quad) in quads.iter().enumerate() {
        if T == 1 {
            // One token reads every weight once: keep the stream ahead of the products, and take the rows one at
            // a time (their unpacked weights stay in registers).
            let ahead = (quad as *const Q as *const i8).add(PREFETCH_BYTES);
            for line in (0..std::mem::size_of::<Q>()).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(line));
            }
            let a = x.get_unchecked(first_token * n + i);
            for (lane, acc) in acc[0].iter_mut().enumerate() {
                let mut one = [*acc];
                Q::accumulate(&[Q::ready(quad.row(lane))], a, &mut one);
                *acc = one[0];
            }
            continue;
        }
        // Written out: closures passed to array helpers may be compiled without the target features.
        let w = [
            Q::ready(quad.row(0)),
            Q::ready(quad.row(1)),
            Q::ready(quad.row(2)),
            Q::ready(quad.row(3)),
        ];
        for (t, acc) in acc.iter_mut().enumerate() {
            Q::accumulate(&w, x.get_unchecked((first_token + t) * n + i), acc);
        }
    }
    for (t, rows) in acc.iter().enumerate() {
        for (lane, lanes) in rows.iter().enumerate().take(valid_rows) {
            out.write(first_row + lane, first_token + t, horizontal_sum(*lanes));
        }
    }
}

/// The K-quant kernel of any format with a [`KQuad`] implementation (`quantized::QuadKernel`).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `first_row` is a multiple of 4, `quads` holds the quads of rows
/// `first_row..first_row + row_count` (`n` super-blocks each), `x` holds `tokens * n` super-blocks and `out` is the
/// task's product.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows<Q: KQuad>(
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
                quad_tile::<Q, TILE>(quad_row, x, n, t, out, row, valid);
                t += TILE;
            }
            while t < chunk_end {
                quad_tile::<Q, 1>(quad_row, x, n, t, out, row, valid);
                t += 1;
            }
        }
        chunk_start = chunk_end;
    }
}
