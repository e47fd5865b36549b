//! llama.cpp's CPU arithmetic, operation by operation, so that a model run with it gives llama.cpp's bits.
//!
//! The reference is ggml as node-llama-cpp 3.22.1 ships it (llama.cpp release `v0.5.0`, x86-64 "haswell"
//! build: AVX2, FMA, F16C). Two correct implementations of a quantised model disagree on a few percent of greedy
//! choices, because activations are rounded to int8 (and attention inputs to f16) and a last-bit difference
//! upstream moves a value across a rounding boundary. Reproducing llama.cpp's order of operations removes those
//! differences. Every function names the ggml function it reproduces; the order of additions and which products
//! are fused (one rounding) or not (two) is the point of each.
//!
//! Everything here is plain Rust with [`f32::mul_add`] for ggml's fused multiply-adds, so the same source gives the
//! same bits with or without FMA instructions; the `avx2` functions are that source compiled for AVX2 + FMA.

use crate::q8_block::Q8Block;
#[cfg(target_arch = "x86_64")]
use half::f16;
use seedinfer_formats::{BlockQ4_1, BlockQ8_0};

/// Lanes of an AVX2 float vector: ggml's dot products keep one partial sum per lane.
pub const LANES: usize = 8;

/// `hsum_float_8` (quants.c) and tinyBLAS's `hsum(__m256)`: high half plus low half, then the pairs `(0,2)` and
/// `(1,3)`, then those two.
#[inline(always)]
pub fn hsum_lanes(a: [f32; LANES]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// `GGML_F32x8_REDUCE`'s last step (two `hadd`s): high half plus low half, then the pairs `(0,1)` and `(2,3)`.
#[inline(always)]
fn hadd_lanes(a: [f32; LANES]) -> f32 {
    let t = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// `ggml_v_expf` (vec.h, AVX2 + FMA), one lane: ggml's own e^x, which is not libm's.
#[inline(always)]
pub fn expf(x: f32) -> f32 {
    let c = |bits: u32| f32::from_bits(bits);
    let r = c(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(c(0x3fb8_aa3b), r); // log2(e)
    let n = z - r;
    // fnmadd(a, b, c) = c - a·b, one rounding.
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let large = n.abs() > 126.0;
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6) * b);
    if !large {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// `ggml_vec_swiglu_f32`: `gate[i] = silu(gate[i]) · up[i]` with `ggml_v_silu(x) = x / (1 + expf(0 - x))`.
pub fn silu_times(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::detected().has_avx2() {
        // SAFETY: `detected` only reports instruction sets this machine has.
        return unsafe { silu_times_avx2(gate, up) };
    }
    silu_times_scalar(gate, up)
}

/// [`silu_times`] compiled for AVX2 + FMA: the same operations, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_times_avx2(gate: &mut [f32], up: &[f32]) {
    silu_times_scalar(gate, up)
}

/// The scalar reference of [`silu_times`].
#[inline(always)]
pub fn silu_times_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + expf(0.0 - *g)) * u;
    }
}

/// `ggml_compute_forward_rms_norm_f32` followed by the multiplication by the norm weights: the squares are
/// rounded to f32 and summed in f64, the mean rounded to f32, `scale = 1 / sqrtf(mean + eps)`, and
/// `y = (x · scale) · w`. `x` and `out` hold whole rows of `w.len()`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (x, y) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum: f64 = x.iter().map(|v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
            *y = *x * scale * w;
        }
    }
}

/// `ggml_rope_cache_init` for one position: `(cos θᵢ, sin θᵢ)` with `θ₀ = position` and `θᵢ₊₁ = θᵢ · theta_scale`
/// in f32, `theta_scale = powf(base, -2 / dims)`.
pub fn rope_angles(position: usize, base: f32, dims: usize, out: &mut Vec<(f32, f32)>) {
    let theta_scale = base.powf(-2.0 / dims as f32);
    let mut theta = position as f32;
    out.clear();
    for _ in 0..dims / 2 {
        out.push((theta.cos(), theta.sin()));
        theta *= theta_scale;
    }
}

/// `rotate_pairs` as the haswell build compiles it: `x0·cos − x1·sin` and `x0·sin + x1·cos`, each with its first
/// product fused into the addition. Pair `i` is elements `(a, b) = pairs(i)` of `head`.
#[inline(always)]
pub fn rotate(head: &mut [f32], angles: &[(f32, f32)], pairs: impl Fn(usize) -> (usize, usize)) {
    for (i, &(cos, sin)) in angles.iter().enumerate() {
        let (a, b) = pairs(i);
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0.mul_add(cos, -(x1 * sin));
        head[b] = x0.mul_add(sin, x1 * cos);
    }
}

/// [`rotate`] for every head (`head_dim` elements each) of `row`, compiled for AVX2 + FMA when the CPU has them.
pub fn rotate_heads(
    row: &mut [f32],
    head_dim: usize,
    angles: &[(f32, f32)],
    pairs: &dyn Fn(usize) -> (usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::detected().has_avx2() {
        // SAFETY: `detected` only reports instruction sets this machine has.
        return unsafe { rotate_heads_avx2(row, head_dim, angles, pairs) };
    }
    for head in row.chunks_mut(head_dim) {
        rotate(head, angles, pairs);
    }
}

/// [`rotate_heads`] compiled for AVX2 + FMA: the same operations, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rotate_heads_avx2(
    row: &mut [f32],
    head_dim: usize,
    angles: &[(f32, f32)],
    pairs: &dyn Fn(usize) -> (usize, usize),
) {
    for head in row.chunks_mut(head_dim) {
        rotate(head, angles, pairs);
    }
}

/// `f32 → f16 → f32`: what ggml's conversion of an f32 operand to f16 leaves of it (round to nearest even).
#[inline(always)]
pub fn round_to_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// A dot product of two f16 vectors (given as their exact f32 values) as tinyBLAS computes it for a batch of
/// two or more tokens: lane `c % 8` accumulates `a[c]·b[c]` fused, in order, then [`hsum_lanes`]. The length
/// is a multiple of 8 in ggml; a shorter tail here counts as zeros, which change no lane.
#[inline(always)]
pub fn dot_f16_batched(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a[..n].chunks_exact(LANES), b[..n].chunks_exact(LANES));
    let (a_tail, b_tail) = (a_chunks.remainder(), b_chunks.remainder());
    for (a, b) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            acc[l] = a[l].mul_add(b[l], acc[l]);
        }
    }
    for l in 0..a_tail.len() {
        acc[l] = a_tail[l].mul_add(b_tail[l], acc[l]);
    }
    hsum_lanes(acc)
}

/// One step of [`dot_f16_single`]: 32 elements into its four accumulators of 8 lanes.
#[inline(always)]
fn step(acc: &mut [[f32; LANES]; 4], a: &[f32], b: &[f32]) {
    for j in 0..4 {
        for l in 0..LANES {
            acc[j][l] = a[j * LANES + l].mul_add(b[j * LANES + l], acc[j][l]);
        }
    }
}

/// A dot product of two f16 vectors (as exact f32 values) as `ggml_vec_dot_f16` computes it for a single
/// token: four accumulators of 8 lanes take 32 elements per step, then reduce (0+2, 1+3, then 0+1, then
/// [`hadd_lanes`]) into an f64; elements past the last whole step are added to it one by one in f64.
/// `len` is the length ggml sees (the cache's padded length); elements past `a.len()` are zeros.
#[inline(always)]
pub fn dot_f16_single(a: &[f32], b: &[f32], len: usize) -> f32 {
    const STEP: usize = 4 * LANES;
    let n = a.len().min(b.len());
    let whole = len / STEP * STEP;
    let stepped = n.min(whole);
    let mut acc = [[0.0f32; LANES]; 4];
    let (a_steps, b_steps) = (
        a[..stepped].chunks_exact(STEP),
        b[..stepped].chunks_exact(STEP),
    );
    let (a_tail, b_tail) = (a_steps.remainder(), b_steps.remainder());
    for (a, b) in a_steps.zip(b_steps) {
        step(&mut acc, a, b);
    }
    if !a_tail.is_empty() {
        // The step ggml takes over the padding: zeros there add nothing to any lane.
        let (mut a_step, mut b_step) = ([0.0f32; STEP], [0.0f32; STEP]);
        a_step[..a_tail.len()].copy_from_slice(a_tail);
        b_step[..b_tail.len()].copy_from_slice(b_tail);
        step(&mut acc, &a_step, &b_step);
    }
    let add = |x: [f32; LANES], y: [f32; LANES]| std::array::from_fn(|l| x[l] + y[l]);
    let (s0, s1) = (add(acc[0], acc[2]), add(acc[1], acc[3]));
    let mut sum = hadd_lanes(add(s0, s1)) as f64;
    for i in stepped..n {
        sum += (a[i] * b[i]) as f64;
    }
    sum as f32
}

/// `ggml_compute_forward_soft_max_f32` over one row of scores (positions past `visible` are masked): `w = s ·
/// scale`, `max`, then `ggml_vec_soft_max_f32`: `e = expf(w − max)` eight at a time, each group's
/// [`hsum_lanes`] added to an f64 sum, and `p = e · (f32)(1 / sum)`. Masked positions give `expf(-inf) = 0` in
/// ggml: they add nothing to the sum and are not computed here.
#[inline(always)]
pub fn soft_max(scores: &mut [f32], visible: usize, scale: f32) {
    let row = &mut scores[..visible];
    for s in row.iter_mut() {
        *s *= scale;
    }
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f64;
    for group in row.chunks_mut(LANES) {
        let mut e = [0.0f32; LANES];
        for (e, s) in e.iter_mut().zip(group.iter_mut()) {
            *s = expf(*s - max);
            *e = *s;
        }
        sum += hsum_lanes(e) as f64;
    }
    let inverse = (1.0 / sum) as f32;
    for p in row.iter_mut() {
        *p *= inverse;
    }
}

/// One weight row's blocks as the dot products read them, scales widened to f32 once (exactly).
#[derive(Default)]
pub struct WeightRow {
    /// Per block: the scale `d`.
    pub d: Vec<f32>,
    /// Per block: Q4_1's minimum `m` (empty for Q8_0).
    pub m: Vec<f32>,
    /// Per block: the 32 weights as ggml's AVX2 code unpacks them: Q4_1 nibbles `0..16` then `16..32` (each
    /// `0..=15`), or Q8_0's int8 values as `u8` bit patterns.
    pub qs: Vec<[u8; 32]>,
}

impl WeightRow {
    pub fn set_q4_1(&mut self, blocks: impl Iterator<Item = BlockQ4_1>) {
        self.clear();
        for b in blocks {
            self.d.push(b.d.to_f32());
            self.m.push(b.m.to_f32());
            self.qs.push(std::array::from_fn(|e| {
                let byte = b.qs[e % 16];
                if e < 16 {
                    byte & 0x0f
                } else {
                    byte >> 4
                }
            }));
        }
    }

    pub fn set_q8_0(&mut self, blocks: impl Iterator<Item = BlockQ8_0>) {
        self.clear();
        for b in blocks {
            self.d.push(b.d.to_f32());
            self.qs.push(b.qs.map(|q| q as u8));
        }
    }

    fn clear(&mut self) {
        self.d.clear();
        self.m.clear();
        self.qs.clear();
    }
}

/// The eight lane sums of one block: lane `l` holds the products of elements `4l..4l + 4` (ggml's
/// `maddubs` + `madd`), exactly, as integers.
#[inline(always)]
fn lane_sums(w: impl Fn(usize) -> i32, x: &[i8; 32]) -> [f32; LANES] {
    std::array::from_fn(|l| (4 * l..4 * l + 4).map(|e| w(e) * x[e] as i32).sum::<i32>() as f32)
}

/// `ggml_vec_dot_q4_1_q8_1` (AVX2): per block `acc[l] = fma(d_w · d_x, lane_l, acc[l])` and `summs = fma(m, s,
/// summs)`, then `hsum_lanes(acc) + summs`. The scalar reference of [`dot_q4_1_avx2`].
pub fn dot_q4_1(w: &WeightRow, x: &[Q8Block]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut summs = 0.0f32;
    for (((d, m), q), y) in w.d.iter().zip(&w.m).zip(&w.qs).zip(x) {
        summs = m.mul_add(y.s, summs);
        let d = d * y.d;
        let lanes = lane_sums(|e| q[e] as i32, &y.qs);
        for l in 0..LANES {
            acc[l] = d.mul_add(lanes[l], acc[l]);
        }
    }
    hsum_lanes(acc) + summs
}

/// `ggml_vec_dot_q8_0_q8_0` (AVX2): per block `acc[l] = fma(d_w · d_x, lane_l, acc[l])`, then `hsum_lanes`. The
/// scalar reference of [`dot_q8_0_avx2`].
pub fn dot_q8_0(w: &WeightRow, x: &[Q8Block]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for ((d, q), y) in w.d.iter().zip(&w.qs).zip(x) {
        let d = d * y.d;
        let lanes = lane_sums(|e| q[e] as i8 as i32, &y.qs);
        for l in 0..LANES {
            acc[l] = d.mul_add(lanes[l], acc[l]);
        }
    }
    hsum_lanes(acc)
}

/// One block's eight lane sums as floats, Q4_1: `maddubs` of the unsigned nibbles `qx` and the activations `qy`,
/// `madd` with ones, convert (ggml's `mul_sum_us8_pairs_float`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn q4_1_lanes(
    qx: std::arch::x86_64::__m256i,
    qy: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    _mm256_cvtepi32_ps(_mm256_madd_epi16(
        _mm256_maddubs_epi16(qx, qy),
        _mm256_set1_epi16(1),
    ))
}

/// One block's eight lane sums as floats, Q8_0: `maddubs` of `|qx|` and `qy` with `qx`'s sign, `madd` with ones,
/// convert (ggml's `mul_sum_i8_pairs_float`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn q8_0_lanes(
    qx: std::arch::x86_64::__m256i,
    qy: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let products = _mm256_maddubs_epi16(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx));
    _mm256_cvtepi32_ps(_mm256_madd_epi16(products, _mm256_set1_epi16(1)))
}

/// [`dot_q4_1`] with ggml's instructions: `maddubs` (unsigned nibbles × signed activations), `madd` with ones,
/// convert, `fmadd`.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q4_1_avx2(w: &WeightRow, x: &[Q8Block]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for (((d, m), q), y) in w.d.iter().zip(&w.m).zip(&w.qs).zip(x) {
        summs = m.mul_add(y.s, summs);
        let qx = _mm256_loadu_si256(q.as_ptr().cast());
        let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * y.d), q4_1_lanes(qx, qy), acc);
    }
    crate::x86_avx2::horizontal_sum(acc) + summs
}

/// [`dot_q8_0`] with ggml's instructions: `maddubs` of `|w|` and `y` with `w`'s sign, `madd` with ones,
/// convert, `fmadd`.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q8_0_avx2(w: &WeightRow, x: &[Q8Block]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    for ((d, q), y) in w.d.iter().zip(&w.qs).zip(x) {
        let qx = _mm256_loadu_si256(q.as_ptr().cast());
        let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * y.d), q8_0_lanes(qx, qy), acc);
    }
    crate::x86_avx2::horizontal_sum(acc)
}

/// Which of ggml's f16 dot products attention uses: tinyBLAS when the batch has two or more tokens,
/// `ggml_vec_dot_f16` for a single token, whose value product runs over the cache's padded length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionDots {
    Batched,
    Single { padded_len: usize },
}

/// Where [`attend`] reads one KV head's cached keys and values: position `j`'s row, widened to f32 (exactly).
pub trait KvSource: Sync {
    /// Position `j`'s key, in `buf` (of the head's width) if it has to be widened there.
    fn key<'a>(&'a self, j: usize, buf: &'a mut [f32]) -> &'a [f32];
    /// Position `j`'s value, likewise.
    fn value<'a>(&'a self, j: usize, buf: &'a mut [f32]) -> &'a [f32];
}

/// Scratch of one [`attend`] caller, reused across calls.
#[derive(Default)]
pub struct AttendScratch {
    scores: Vec<f32>,
    row: Vec<f32>,
    /// The value product's partial sums: one row of `head_dim` per lane (8 for a batch, 4 × 8 for one token).
    lanes: Vec<f32>,
}

/// One query head's attention as ggml computes it without flash attention: `kq = K·q` (f16 operands), the soft
/// max of `kq · scale` over the `visible` positions, the probabilities rounded to f16, and `out[c] = Σ p·v[c]`
/// summed per lane as [`dot_f16_batched`] or [`dot_f16_single`] would sum each channel. `q` is already rounded
/// to f16.
#[allow(clippy::too_many_arguments)]
pub fn attend<S: KvSource>(
    q: &[f32],
    kv: &S,
    visible: usize,
    scale: f32,
    dots: AttentionDots,
    s: &mut AttendScratch,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::detected().has_avx2() {
        // SAFETY: `detected` only reports instruction sets this machine has.
        return unsafe { attend_avx2(q, kv, visible, scale, dots, s, out) };
    }
    attend_scalar(q, kv, visible, scale, dots, s, out)
}

/// [`attend`] compiled for AVX2 + FMA: the same operations, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2<S: KvSource>(
    q: &[f32],
    kv: &S,
    visible: usize,
    scale: f32,
    dots: AttentionDots,
    s: &mut AttendScratch,
    out: &mut [f32],
) {
    attend_scalar(q, kv, visible, scale, dots, s, out)
}

/// The scalar reference of [`attend`].
#[inline(always)]
pub fn attend_scalar<S: KvSource>(
    q: &[f32],
    kv: &S,
    visible: usize,
    scale: f32,
    dots: AttentionDots,
    s: &mut AttendScratch,
    out: &mut [f32],
) {
    let head_dim = q.len();
    s.row.resize(head_dim, 0.0);
    s.scores.clear();
    s.scores.resize(visible, 0.0);
    for (j, score) in s.scores.iter_mut().enumerate() {
        let k = kv.key(j, &mut s.row);
        *score = match dots {
            AttentionDots::Batched => dot_f16_batched(k, q),
            AttentionDots::Single { .. } => dot_f16_single(k, q, head_dim),
        };
    }
    soft_max(&mut s.scores, visible, scale);
    for p in s.scores.iter_mut() {
        *p = round_to_f16(*p);
    }
    // Channel c's sum over positions, lane by lane: position j goes to lane j % 8 (a batch) or j % 32 (one token,
    // four accumulators of 8), in order, as the dot products above would take column c.
    let (lanes, stepped) = match dots {
        AttentionDots::Batched => (LANES, visible),
        AttentionDots::Single { padded_len } => {
            (4 * LANES, visible.min(padded_len / (4 * LANES) * 4 * LANES))
        }
    };
    s.lanes.clear();
    s.lanes.resize(lanes * head_dim, 0.0);
    for j in 0..stepped {
        let (p, v) = (s.scores[j], kv.value(j, &mut s.row));
        let acc = &mut s.lanes[(j % lanes) * head_dim..][..head_dim];
        for (a, v) in acc.iter_mut().zip(v) {
            *a = v.mul_add(p, *a);
        }
    }
    let lane = |c: usize, l: usize| s.lanes[l * head_dim + c];
    for (c, o) in out.iter_mut().enumerate() {
        *o = match dots {
            AttentionDots::Batched => hsum_lanes(std::array::from_fn(|l| lane(c, l))),
            AttentionDots::Single { .. } => {
                // dot_f16_single's reduction: accumulators 0+2 and 1+3, then those two, then hadd_lanes.
                let reduced = std::array::from_fn(|l| {
                    (lane(c, l) + lane(c, 2 * LANES + l))
                        + (lane(c, LANES + l) + lane(c, 3 * LANES + l))
                });
                hadd_lanes(reduced) as f64 as f32
            }
        };
    }
    if stepped < visible {
        // One token, positions past ggml's last whole step: added one by one in f64.
        let mut tail: Vec<f64> = out.iter().map(|&o| o as f64).collect();
        for j in stepped..visible {
            let (p, v) = (s.scores[j], kv.value(j, &mut s.row));
            for (t, v) in tail.iter_mut().zip(v) {
                *t += (v * p) as f64;
            }
        }
        for (o, t) in out.iter_mut().zip(tail) {
            *o = t as f32;
        }
    }
}

/// Keys and values already widened to f32, `[positions, head_dim]` each.
pub struct WidenedKv<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub head_dim: usize,
}

impl KvSource for WidenedKv<'_> {
    fn key<'a>(&'a self, j: usize, _: &'a mut [f32]) -> &'a [f32] {
        &self.keys[j * self.head_dim..(j + 1) * self.head_dim]
    }
    fn value<'a>(&'a self, j: usize, _: &'a mut [f32]) -> &'a [f32] {
        &self.values[j * self.head_dim..(j + 1) * self.head_dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_close_to_libm_and_exact_at_zero_and_masked() {
        assert_eq!(expf(0.0), 1.0);
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf(-200.0), 0.0);
        for i in -870..=870 {
            let x = i as f32 / 10.0;
            let (ours, libm) = (expf(x), x.exp());
            assert!(((ours - libm) / libm).abs() < 4e-7, "{x}: {ours} vs {libm}");
        }
    }

    #[test]
    fn hsum_pairs_lanes_as_ggml() {
        // Values whose sum depends on the order: 1e8 cancels only when paired with -1e8 first.
        let a = [1e8, 1.0, -1e8, 1.0, 0.5, 0.25, 0.0, 0.0];
        // r = [1e8 + 0.5, 1.25, -1e8, 1]; (r0 + r2) + (r1 + r3) = 0.5 + 2.25 (1e8 + 0.5 rounds to 1e8).
        assert_eq!(hsum_lanes(a), 2.25);
        // t = same r; (t0 + t1) + (t2 + t3) = (1e8 + 1.25) + (-1e8 + 1) = 0.0 or so in f32.
        assert_eq!(hadd_lanes(a), 0.0);
    }

    #[test]
    fn single_token_dot_adds_the_tail_in_f64() {
        let a: Vec<f32> = (0..40).map(|i| i as f32).collect();
        let b = vec![1.0f32; 40];
        assert_eq!(dot_f16_single(&a, &b, 40), (0..40).sum::<i32>() as f32);
        assert_eq!(dot_f16_batched(&a, &b), (0..40).sum::<i32>() as f32);
    }

    #[test]
    fn dispatched_paths_give_the_scalar_bits() {
        use crate::test_values::values;
        let (hd, positions) = (64, 300);
        let keys: Vec<f32> = values(positions * hd, 1)
            .iter()
            .map(|&v| round_to_f16(v))
            .collect();
        let vals: Vec<f32> = values(positions * hd, 2)
            .iter()
            .map(|&v| round_to_f16(v))
            .collect();
        let values_t: Vec<f32> = (0..hd * positions)
            .map(|i| vals[(i % positions) * hd + i / positions])
            .collect();
        let kv = WidenedKv {
            keys: &keys,
            values: &vals,
            head_dim: hd,
        };
        let q: Vec<f32> = values(hd, 3)
            .iter()
            .map(|&v| round_to_f16(4.0 * v))
            .collect();
        for dots in [
            AttentionDots::Batched,
            AttentionDots::Single { padded_len: 512 },
            AttentionDots::Single { padded_len: 40 },
        ] {
            for visible in [1, 7, 257, 300] {
                let (mut a, mut b) = (vec![0.0; hd], vec![0.0; hd]);
                attend(
                    &q,
                    &kv,
                    visible,
                    0.125,
                    dots,
                    &mut AttendScratch::default(),
                    &mut a,
                );
                attend_scalar(
                    &q,
                    &kv,
                    visible,
                    0.125,
                    dots,
                    &mut AttendScratch::default(),
                    &mut b,
                );
                assert_eq!(a.map_bits(), b.map_bits(), "{dots:?} {visible}");
                assert!(a.iter().all(|v| v.is_finite()));
                // The value product equals the column-wise dot products it reorganises.
                let mut scores: Vec<f32> = (0..visible)
                    .map(|j| match dots {
                        AttentionDots::Batched => dot_f16_batched(&keys[j * hd..(j + 1) * hd], &q),
                        AttentionDots::Single { .. } => {
                            dot_f16_single(&keys[j * hd..(j + 1) * hd], &q, hd)
                        }
                    })
                    .collect();
                soft_max(&mut scores, visible, 0.125);
                scores.iter_mut().for_each(|p| *p = round_to_f16(*p));
                let columns: Vec<f32> = (0..hd)
                    .map(|c| {
                        let v = &values_t[c * positions..][..visible];
                        match dots {
                            AttentionDots::Batched => dot_f16_batched(v, &scores),
                            AttentionDots::Single { padded_len } => {
                                dot_f16_single(v, &scores, padded_len)
                            }
                        }
                    })
                    .collect();
                assert_eq!(b.map_bits(), columns.map_bits(), "{dots:?} {visible}");
            }
        }
        let (gate, up) = (values(1536, 4), values(1536, 5));
        let (mut a, mut b) = (gate.clone(), gate);
        silu_times(&mut a, &up);
        silu_times_scalar(&mut b, &up);
        assert_eq!(a.map_bits(), b.map_bits());
        let angles = {
            let mut v = Vec::new();
            rope_angles(300, 100_000.0, hd, &mut v);
            v
        };
        let (mut a, mut b) = (values(9 * hd, 6), values(9 * hd, 6));
        rotate_heads(&mut a, hd, &angles, &|i| (2 * i, 2 * i + 1));
        for head in b.chunks_mut(hd) {
            rotate(head, &angles, |i| (2 * i, 2 * i + 1));
        }
        assert_eq!(a.map_bits(), b.map_bits());
    }

    trait Bits {
        fn map_bits(&self) -> Vec<u32>;
    }

    impl Bits for Vec<f32> {
        fn map_bits(&self) -> Vec<u32> {
            self.iter().map(|v| v.to_bits()).collect()
        }
    }

    #[test]
    fn soft_max_sums_to_one_and_ignores_masked_positions() {
        let mut row = vec![1.0f32, 2.0, 3.0, 0.5, -1.0, 7.0, 7.0, 99.0, 99.0];
        soft_max(&mut row, 7, 0.5);
        let sum: f32 = row[..7].iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert!(row[5] > row[2] && row[5] == row[6]);
        assert_eq!(row[7..], [99.0, 99.0]);
    }
}
