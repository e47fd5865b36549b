//! SeedLM (METHODS.md, "SeedLM"): each block of `C` weights of a row is stored as the seed `s` of a `K`-bit LFSR,
//! `P` 4-bit two's-complement coefficients `t` and one shared 4-bit exponent `e`; the block is `U(s) · t · 2^e`,
//! where `U(s)` (`C x P`, row-major) holds the LFSR's next `C * P` states after `s`, normalised to [-1, 1].
//! Data-free: encoding needs only the weights.
//!
//! One convention serves both sides: [`LfsrCycle`] lists the normalised states in the order the LFSR visits them,
//! and `U(s)` is the `C * P` values after `s`'s place in it (the encoder's pseudo-inverses and the decoder's
//! reconstruction read the same numbers).

use nalgebra::DMatrix;
use rayon::prelude::*;

/// Seed bits of both published configurations.
pub const SEED_BITS: u32 = 16;
/// Feedback taps of the 16-bit LFSR (a maximal-length sequence: 65,535 states).
pub const TAPS_16: [u32; 4] = [0, 1, 3, 12];
/// Coefficient codes: 4-bit two's complement.
const CODE_MIN: i32 = -8;
const CODE_MAX: i32 = 7;
/// Exponent codes: 4 bits above a per-tensor base.
pub const EXPONENT_CODES: i32 = 16;

/// A SeedLM configuration: `block` weights (C) per seed, `coefficients` (P) per block, `seed_bits` (K).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedLmConfig {
    pub block: usize,
    pub coefficients: usize,
    pub seed_bits: u32,
}

/// `seedlm4`: C = 8, P = 3, K = 16: (16 + 4 + 3 * 4) / 8 = 4 bits per weight.
pub const SEEDLM4: SeedLmConfig = SeedLmConfig {
    block: 8,
    coefficients: 3,
    seed_bits: 16,
};

/// `seedlm3`: C = 12, P = 4, K = 16: (16 + 4 + 4 * 4) / 12 = 3 bits per weight.
pub const SEEDLM3: SeedLmConfig = SeedLmConfig {
    block: 12,
    coefficients: 4,
    seed_bits: 16,
};

impl SeedLmConfig {
    /// Bits one block takes: seed, exponent, coefficients.
    pub fn block_bits(&self) -> usize {
        self.seed_bits as usize + 4 + 4 * self.coefficients
    }

    pub fn bits_per_weight(&self) -> f64 {
        self.block_bits() as f64 / self.block as f64
    }

    /// Values of `U(s)`: `C * P`.
    fn basis_len(&self) -> usize {
        self.block * self.coefficients
    }
}

/// One step of a `bits`-bit Fibonacci LFSR: the feedback (XOR of the `taps` bits) shifts in at the top as the state
/// shifts right.
pub fn lfsr_step(state: u32, bits: u32, taps: &[u32]) -> u32 {
    let feedback = taps.iter().fold(0, |f, &t| f ^ ((state >> t) & 1));
    (state >> 1) | (feedback << (bits - 1))
}

/// The states after each of `count` steps from `seed`.
pub fn lfsr_states(seed: u32, bits: u32, taps: &[u32], count: usize) -> Vec<u32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = lfsr_step(state, bits, taps);
            state
        })
        .collect()
}

/// `(v - 2^(K-1)) / (2^(K-1) - 1)`: a state as a value in [-1, 1].
pub fn normalise(state: u32, bits: u32) -> f64 {
    let half = (1u64 << (bits - 1)) as f64;
    (state as f64 - half) / (half - 1.0)
}

/// The 16-bit LFSR's cycle, normalised, in visiting order, and where each state sits in it: `U(s)` is a slice,
/// so the decoder regenerates a block's basis by reading `C * P` consecutive floats.
pub struct LfsrCycle {
    /// Normalised states in visiting order, followed by a wrap-around copy of the first `extra` of them.
    values: Vec<f32>,
    /// `place[s]`: index in the cycle of the state after `s` (the first value of `U(s)`).
    place: Vec<u32>,
}

impl LfsrCycle {
    /// The cycle of the 16-bit LFSR with [`TAPS_16`], with room for bases of `extra` values.
    pub fn new(extra: usize) -> Self {
        let period = (1usize << SEED_BITS) - 1;
        let states = lfsr_states(1, SEED_BITS, &TAPS_16, period);
        let mut place = vec![0u32; 1 << SEED_BITS];
        // states[i] is the state after i + 1 steps from 1; the state after s = states[i] is states[i + 1].
        for (i, &s) in states.iter().enumerate() {
            place[s as usize] = ((i + 1) % period) as u32;
        }
        let mut values: Vec<f32> = states
            .iter()
            .map(|&s| normalise(s, SEED_BITS) as f32)
            .collect();
        let wrap: Vec<f32> = values[..extra.min(period)].to_vec();
        values.extend(wrap);
        Self { values, place }
    }

    /// Index in the cycle of the first value of `U(seed)`.
    pub fn place(&self, seed: u16) -> u16 {
        self.place[seed as usize] as u16
    }

    /// The normalised states in visiting order, then the wrap-around copy.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// `U(s)` as `len` consecutive values, row-major `C x P`.
    pub fn basis(&self, seed: u16, len: usize) -> &[f32] {
        let at = self.place[seed as usize] as usize;
        &self.values[at..at + len]
    }
}

/// One encoded block: seed, exponent (absolute, before the per-tensor base) and coefficient codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedLmBlock {
    pub seed: u16,
    pub exponent: i32,
    pub codes: [i8; 4],
}

/// No limit on a block's exponent but what an f32 scale holds.
const ANY_EXPONENT: (i32, i32) = (-126, 126);
/// Share of a tensor's blocks whose free exponent may sit below the tensor's 16 codes (they are requantised at the
/// lowest); set so that a rare block with a huge exponent (a near-collinear basis with large coefficients) cannot
/// push every other block's exponent up, as "base = the largest exponent - 15" let it.
const BELOW_BASE_SHARE: f64 = 0.001;

/// Cycle positions the search scores together, one per SIMD lane.
const LANES: usize = 8;
/// Lane groups scored against a batch of blocks before moving on (their data stays in L1/L2 meanwhile).
const GROUPS_PER_TILE: usize = 128;
/// Cycle positions in a tile.
const TILE: usize = GROUPS_PER_TILE * LANES;

/// Per seed: `U(s)` in float64 and its pseudo-inverse (`P x C`), for the encoder's least squares; and the search's
/// f32 data, ordered by place in the cycle (the seed whose `U` starts at cycle index `i` is `seed_at[i]`): the
/// cycle itself and the Gram inverses `(UᵀU)⁻¹ = pinv · pinvᵀ`, eight places interleaved per group.
pub struct SeedTable {
    config: SeedLmConfig,
    /// `[seed - 1][C * P]` row-major bases, exactly the decoder's values widened to f64.
    bases: Vec<f64>,
    /// `[seed - 1][P * C]` row-major pseudo-inverses, from an SVD in float64.
    pinvs: Vec<f64>,
    /// The normalised cycle with a wrap-around copy long enough for a whole tile's bases.
    cycle: Vec<f32>,
    /// `seed_at[i]`: the seed whose `U(s)` starts at cycle index `i`.
    seed_at: Vec<u16>,
    /// `[group][P * P]`: lane `l` holds the Gram inverse of the seed at cycle index `group * 8 + l` (zero past the
    /// cycle's end).
    lane_grams: Vec<[f32; LANES]>,
}

impl SeedTable {
    pub fn new(config: SeedLmConfig, cycle: &LfsrCycle) -> Self {
        let (c, p) = (config.block, config.coefficients);
        let seeds = (1u32 << config.seed_bits) - 1;
        let per_seed: Vec<(Vec<f64>, Vec<f64>)> = (1..=seeds)
            .into_par_iter()
            .map(|s| {
                let basis: Vec<f64> = cycle
                    .basis(s as u16, c * p)
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let u = DMatrix::from_row_slice(c, p, &basis);
                let pinv = u
                    .pseudo_inverse(1e-12)
                    .unwrap_or_else(|_| DMatrix::zeros(p, c));
                let pinv: Vec<f64> = (0..p)
                    .flat_map(|i| (0..c).map(move |j| (i, j)))
                    .map(|(i, j)| pinv[(i, j)])
                    .collect();
                (basis, pinv)
            })
            .collect();
        let mut bases = Vec::with_capacity(seeds as usize * c * p);
        let mut pinvs = Vec::with_capacity(seeds as usize * c * p);
        for (b, pi) in per_seed {
            bases.extend(b);
            pinvs.extend(pi);
        }
        let period = seeds as usize;
        let groups = period.div_ceil(LANES);
        let mut seed_at = vec![0u16; groups * LANES];
        for seed in 1..=seeds {
            seed_at[cycle.place[seed as usize] as usize] = seed as u16;
        }
        let values = &cycle.values[..period];
        let wrap = groups * LANES - period + TILE + c * p + LANES;
        let cycle_values: Vec<f32> = values
            .iter()
            .chain(values.iter().cycle().take(wrap))
            .copied()
            .collect();
        let mut lane_grams = vec![[0.0f32; LANES]; groups * p * p];
        for (place, &seed) in seed_at.iter().enumerate().take(period) {
            let (group, lane) = (place / LANES, place % LANES);
            let seed = seed as usize;
            let pinv = &pinvs[(seed - 1) * c * p..seed * c * p];
            for j in 0..p {
                for k in 0..p {
                    let g: f64 = (0..c).map(|i| pinv[j * c + i] * pinv[k * c + i]).sum();
                    lane_grams[group * p * p + j * p + k][lane] = g as f32;
                }
            }
        }
        Self {
            config,
            bases,
            pinvs,
            cycle: cycle_values,
            seed_at,
            lane_grams,
        }
    }

    /// Encodes blocks of `C` weights each, as [`SeedTable::encode_block`] does one, faster: seeds are scored
    /// eight at a time by the projection residual `||w||² - bᵀ(UᵀU)⁻¹b` (`b = Uᵀw`, a lower bound on the
    /// quantised error), tile by tile of seeds over all the blocks; only seeds that beat a block's best so far
    /// are quantised and measured exactly. Seeds go in cycle order, where `U` of the next seed is `U` shifted by
    /// one value, so `b_j` at place `i` is `R(i + j)` with `R(m) = Σ_k w_k · cycle[m + k·P]`: one correlation
    /// value (C multiply-adds) per seed instead of C·P. Uses AVX2 when the CPU has it (the same arithmetic, lane
    /// for lane).
    pub fn encode_blocks(&self, blocks: &[&[f32]]) -> Vec<(SeedLmBlock, f64)> {
        self.encode_blocks_within(blocks, ANY_EXPONENT)
    }

    /// As [`SeedTable::encode_blocks`], with every exponent held in `exponents` (a tensor's 16 codes): a seed whose
    /// coefficients need more is quantised at the top exponent (its codes saturate), less at the bottom.
    pub fn encode_blocks_within(
        &self,
        blocks: &[&[f32]],
        exponents: (i32, i32),
    ) -> Vec<(SeedLmBlock, f64)> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { self.encode_blocks_avx2(blocks, exponents) };
        }
        self.search(blocks, exponents)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn encode_blocks_avx2(
        &self,
        blocks: &[&[f32]],
        exponents: (i32, i32),
    ) -> Vec<(SeedLmBlock, f64)> {
        self.search(blocks, exponents)
    }

    /// The baseline-ISA build of the same search (the reference the AVX2 build is tested against).
    pub fn encode_blocks_portable(&self, blocks: &[&[f32]]) -> Vec<(SeedLmBlock, f64)> {
        self.search(blocks, ANY_EXPONENT)
    }

    #[inline(always)]
    fn search(&self, blocks: &[&[f32]], exponents: (i32, i32)) -> Vec<(SeedLmBlock, f64)> {
        let (c, p) = (self.config.block, self.config.coefficients);
        let groups = self.lane_grams.len() / (p * p);
        let period = (1usize << self.config.seed_bits) - 1;
        let mut best: Vec<(SeedLmBlock, f64)> = blocks
            .iter()
            .map(|w| {
                assert_eq!(w.len(), c, "a block has C weights");
                let zero = SeedLmBlock {
                    seed: 1,
                    exponent: 0,
                    codes: [0; 4],
                };
                (zero, w.iter().map(|&v| (v as f64) * (v as f64)).sum())
            })
            .collect();
        let norms: Vec<f32> = blocks
            .iter()
            .map(|w| w.iter().map(|v| v * v).sum())
            .collect();
        let mut wide = vec![0.0f64; c];
        let mut r = vec![0.0f32; TILE + LANES];
        for tile in (0..groups).step_by(GROUPS_PER_TILE) {
            let first = tile * LANES;
            let tile_groups = GROUPS_PER_TILE.min(groups - tile);
            for (k, w) in blocks.iter().enumerate() {
                // R(m) for the tile's places and the P - 1 after them.
                let span = tile_groups * LANES + LANES;
                let r = &mut r[..span];
                r.fill(0.0);
                for (i, &wi) in w.iter().enumerate() {
                    let at = first + i * p;
                    for (rm, &u) in r.iter_mut().zip(&self.cycle[at..at + span]) {
                        *rm += u * wi;
                    }
                }
                for g in 0..tile_groups {
                    let group = tile + g;
                    let grams = &self.lane_grams[group * p * p..(group + 1) * p * p];
                    let mut b = [[0.0f32; LANES]; 4];
                    for (j, bj) in b.iter_mut().enumerate().take(p) {
                        bj.copy_from_slice(&r[g * LANES + j..g * LANES + j + LANES]);
                    }
                    let mut t = [[0.0f32; LANES]; 4];
                    let mut bound = [norms[k]; LANES];
                    for j in 0..p {
                        for m in 0..p {
                            let gj = &grams[j * p + m];
                            for l in 0..LANES {
                                t[j][l] += gj[l] * b[m][l];
                            }
                        }
                        for l in 0..LANES {
                            bound[l] -= b[j][l] * t[j][l];
                        }
                    }
                    let best_k = best[k].1 as f32;
                    if bound.iter().all(|&b| b >= best_k) {
                        continue;
                    }
                    // Quantise all eight candidates and measure their errors, lane by lane.
                    let mut top = [0.0f32; LANES];
                    for tj in t.iter().take(p) {
                        for l in 0..LANES {
                            top[l] = top[l].max(tj[l].abs());
                        }
                    }
                    let mut exponent = [0i32; LANES];
                    let (mut scale, mut inverse) = ([0.0f32; LANES], [0.0f32; LANES]);
                    for l in 0..LANES {
                        exponent[l] =
                            ceil_log2(top[l] * (1.0 / 7.5)).clamp(exponents.0, exponents.1);
                        scale[l] = f32::from_bits(((127 + exponent[l]) as u32) << 23);
                        inverse[l] = f32::from_bits(((127 - exponent[l]) as u32) << 23);
                    }
                    let mut q = [[0.0f32; LANES]; 4];
                    for (qj, tj) in q.iter_mut().zip(&t).take(p) {
                        for l in 0..LANES {
                            qj[l] = (tj[l] * inverse[l])
                                .round_ties_even()
                                .clamp(CODE_MIN as f32, CODE_MAX as f32);
                        }
                    }
                    let place = first + g * LANES;
                    let mut error = [0.0f32; LANES];
                    for (i, &wi) in w.iter().enumerate() {
                        let mut res = [wi; LANES];
                        for (j, qj) in q.iter().enumerate().take(p) {
                            let at = place + i * p + j;
                            let row = &self.cycle[at..at + LANES];
                            for l in 0..LANES {
                                res[l] -= row[l] * qj[l] * scale[l];
                            }
                        }
                        for l in 0..LANES {
                            error[l] += res[l] * res[l];
                        }
                    }
                    for l in 0..LANES {
                        if place + l >= period || error[l] >= best_k {
                            continue;
                        }
                        let seed = self.seed_at[place + l];
                        // An improvement in f32: confirm it in f64 on the decoder's values.
                        let codes: [i8; 4] = std::array::from_fn(|j| q[j][l] as i8);
                        let exact: [f64; 4] =
                            std::array::from_fn(|j| codes[j] as f64 * (exponent[l] as f64).exp2());
                        for (x, &v) in wide.iter_mut().zip(w.iter()) {
                            *x = v as f64;
                        }
                        let error = self.residual(seed, &wide, &exact[..p]);
                        if error < best[k].1 {
                            best[k] = (
                                SeedLmBlock {
                                    seed,
                                    exponent: exponent[l],
                                    codes,
                                },
                                error,
                            );
                        }
                    }
                }
            }
        }
        best
    }

    fn basis(&self, seed: u16) -> &[f64] {
        let n = self.config.basis_len();
        &self.bases[(seed as usize - 1) * n..seed as usize * n]
    }

    fn pinv(&self, seed: u16) -> &[f64] {
        let n = self.config.basis_len();
        &self.pinvs[(seed as usize - 1) * n..seed as usize * n]
    }

    /// Least-squares coefficients of `w` on `U(seed)`.
    fn solve(&self, seed: u16, w: &[f64], t: &mut [f64]) {
        let c = self.config.block;
        for (i, ti) in t.iter_mut().enumerate() {
            *ti = self.pinv(seed)[i * c..(i + 1) * c]
                .iter()
                .zip(w)
                .map(|(a, b)| a * b)
                .sum();
        }
    }

    /// `|| w - U(seed) · t ||²`.
    fn residual(&self, seed: u16, w: &[f64], t: &[f64]) -> f64 {
        let p = self.config.coefficients;
        self.basis(seed)
            .chunks(p)
            .zip(w)
            .map(|(row, &wi)| {
                let r = wi - row.iter().zip(t).map(|(u, t)| u * t).sum::<f64>();
                r * r
            })
            .sum()
    }

    /// Encodes one block of `C` weights: every seed is tried, skipping those whose unquantised least-squares
    /// residual (a lower bound on the quantised one) is already no better than the best so far. Returns the block
    /// and its squared error.
    pub fn encode_block(&self, w: &[f32]) -> (SeedLmBlock, f64) {
        let (c, p) = (self.config.block, self.config.coefficients);
        assert_eq!(w.len(), c, "a block has C weights");
        let w: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let (mut t, mut q) = ([0.0f64; 4], [0.0f64; 4]);
        let mut best = (
            SeedLmBlock {
                seed: 1,
                exponent: 0,
                codes: [0; 4],
            },
            w.iter().map(|v| v * v).sum::<f64>(),
        );
        let seeds = (1u32 << self.config.seed_bits) - 1;
        for seed in 1..=seeds as u16 {
            self.solve(seed, &w, &mut t[..p]);
            if self.residual(seed, &w, &t[..p]) >= best.1 {
                continue;
            }
            let (exponent, codes) = quantise(&t[..p], None);
            for (qi, &code) in q.iter_mut().zip(&codes[..p]) {
                *qi = code as f64 * (exponent as f64).exp2();
            }
            let error = self.residual(seed, &w, &q[..p]);
            if error < best.1 {
                best = (
                    SeedLmBlock {
                        seed,
                        exponent,
                        codes,
                    },
                    error,
                );
            }
        }
        best
    }

    /// Requantises `block` (of weights `w`) with its exponent raised to at least `floor` (the tensor's exponent
    /// codes start there), keeping its seed.
    pub fn clamp_exponent(&self, block: &mut SeedLmBlock, w: &[f32], floor: i32) {
        if block.exponent >= floor {
            return;
        }
        let p = self.config.coefficients;
        let w: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let mut t = [0.0f64; 4];
        self.solve(block.seed, &w, &mut t[..p]);
        let (exponent, codes) = quantise(&t[..p], Some(floor));
        block.exponent = exponent;
        block.codes = codes;
    }
}

/// `ceil(log2(y))` from the bits of `y`, clamped to the exponents an f32 scale can hold (0 maps to the lowest).
#[inline(always)]
fn ceil_log2(y: f32) -> i32 {
    let bits = y.to_bits();
    let floor = ((bits >> 23) & 0xff) as i32 - 127;
    (floor + i32::from(bits & 0x7f_ffff != 0)).clamp(-126, 126)
}

/// The shared exponent `e = ceil(log2(max|t| / 7.5))` (raised to `floor` if given) and the codes
/// `clamp(round(t / 2^e), -8, 7)`.
fn quantise(t: &[f64], floor: Option<i32>) -> (i32, [i8; 4]) {
    let max = t.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut exponent = if max > 0.0 {
        (max / 7.5).log2().ceil() as i32
    } else {
        i32::MIN / 2
    };
    if let Some(floor) = floor {
        exponent = exponent.max(floor);
    }
    let scale = (-(exponent as f64)).exp2();
    let mut codes = [0i8; 4];
    for (code, &v) in codes.iter_mut().zip(t) {
        *code = ((v * scale).round() as i32).clamp(CODE_MIN, CODE_MAX) as i8;
    }
    (exponent, codes)
}

/// Blocks in a row of `cols` weights: the last is zero-padded when `cols` is not a multiple of C.
pub fn row_blocks(config: SeedLmConfig, cols: usize) -> usize {
    cols.div_ceil(config.block)
}

/// Bytes of a packed row of `cols` weights: its blocks' bits, rounded up to a whole byte.
pub fn row_bytes(config: SeedLmConfig, cols: usize) -> usize {
    (row_blocks(config, cols) * config.block_bits()).div_ceil(8)
}

/// Row `row`'s `C`-weight blocks: the row cut into blocks, the last zero-padded.
fn padded_blocks(row: &[f32], c: usize) -> Vec<[f32; 12]> {
    row.chunks(c)
        .map(|chunk| {
            let mut block = [0.0f32; 12];
            block[..chunk.len()].copy_from_slice(chunk);
            block
        })
        .collect()
}

/// Encodes a row-major `[rows, cols]` matrix on the current rayon pool: blocks in row order (`row_blocks` per row)
/// and the per-tensor exponent base (every block's exponent is in `base..base + 16`; blocks that would sit below
/// are requantised at `base`). `on_rows` is called with the count of rows finished, for progress; once `stop()`
/// returns true the remaining rows are skipped and the result is `None`.
pub fn encode_matrix(
    table: &SeedTable,
    weights: &[f32],
    cols: usize,
    on_rows: &(dyn Fn(usize) + Sync),
    stop: &(dyn Fn() -> bool + Sync),
) -> Option<(Vec<SeedLmBlock>, i32)> {
    let c = table.config.block;
    let rows: Vec<Option<Vec<SeedLmBlock>>> = weights
        .par_chunks(cols)
        .map(|row| {
            if stop() {
                return None;
            }
            let padded = padded_blocks(row, c);
            let row_blocks: Vec<&[f32]> = padded.iter().map(|b| &b[..c]).collect();
            let encoded: Vec<SeedLmBlock> = table
                .encode_blocks(&row_blocks)
                .into_iter()
                .map(|(b, _)| b)
                .collect();
            on_rows(1);
            Some(encoded)
        })
        .collect();
    let mut blocks = Vec::with_capacity(weights.len().div_ceil(c));
    for row in rows {
        blocks.extend(row?);
    }
    // The tensor's 16 exponent codes: from the exponent that at most BELOW_BASE_SHARE of the blocks fall under,
    // unless the largest exponent fits with a lower base. All-zero blocks (any exponent fits them) do not count.
    let mut exponents: Vec<i32> = blocks
        .iter()
        .filter(|b| b.codes.iter().any(|&q| q != 0))
        .map(|b| b.exponent)
        .collect();
    exponents.sort_unstable();
    let top = exponents.last().copied().unwrap_or(0);
    let quantile = exponents
        .get((exponents.len() as f64 * BELOW_BASE_SHARE) as usize)
        .copied()
        .unwrap_or(0);
    let base = quantile.min(top - (EXPONENT_CODES - 1));
    let range = (base, base + EXPONENT_CODES - 1);
    // Blocks above the range search again within it (another seed may need smaller coefficients); blocks below
    // keep their seed, requantised at the base.
    let per_row = row_blocks(table.config, cols).max(1);
    let above: Vec<usize> = (0..blocks.len())
        .filter(|&i| blocks[i].exponent > range.1)
        .collect();
    let redone: Vec<(usize, SeedLmBlock)> = above
        .par_chunks(64)
        .flat_map_iter(|chunk| {
            let padded: Vec<[f32; 12]> = chunk
                .iter()
                .map(|&i| {
                    let (row, k) = (i / per_row, i % per_row);
                    let w = &weights[row * cols..(row + 1) * cols];
                    let mut block = [0.0f32; 12];
                    let part = &w[k * c..((k + 1) * c).min(cols)];
                    block[..part.len()].copy_from_slice(part);
                    block
                })
                .collect();
            let refs: Vec<&[f32]> = padded.iter().map(|b| &b[..c]).collect();
            let found = table.encode_blocks_within(&refs, range);
            chunk
                .iter()
                .copied()
                .zip(found.into_iter().map(|(b, _)| b))
                .collect::<Vec<_>>()
        })
        .collect();
    for (i, block) in redone {
        blocks[i] = block;
    }
    for (row_out, row) in blocks.chunks_mut(per_row).zip(weights.chunks(cols)) {
        for (block, w) in row_out.iter_mut().zip(padded_blocks(row, c)) {
            table.clamp_exponent(block, &w[..c], base);
        }
    }
    Some((blocks, base))
}

/// Packs a matrix's blocks (as [`encode_matrix`] returns them) row by row, each row [`row_bytes`] long.
pub fn pack_matrix(
    config: SeedLmConfig,
    blocks: &[SeedLmBlock],
    cols: usize,
    base: i32,
) -> Vec<u8> {
    blocks
        .chunks(row_blocks(config, cols).max(1))
        .flat_map(|row| pack_blocks(config, row, base))
        .collect()
}

/// Decodes one packed row of `out.len()` weights.
pub fn decode_row(config: SeedLmConfig, cycle: &LfsrCycle, row: &[u8], base: i32, out: &mut [f32]) {
    let blocks = unpack_blocks(config, row, row_blocks(config, out.len()), base);
    let mut block_out = [0.0f32; 12];
    for (block, out) in blocks.iter().zip(out.chunks_mut(config.block)) {
        decode_block(config, cycle, block, &mut block_out[..config.block]);
        out.copy_from_slice(&block_out[..out.len()]);
    }
}

/// Reconstructs one block into `out` (`C` values): `U(s) · codes · 2^e`.
pub fn decode_block(config: SeedLmConfig, cycle: &LfsrCycle, block: &SeedLmBlock, out: &mut [f32]) {
    let p = config.coefficients;
    let scale = (block.exponent as f32).exp2();
    let basis = cycle.basis(block.seed, config.basis_len());
    for (o, row) in out.iter_mut().zip(basis.chunks(p)) {
        *o = row
            .iter()
            .zip(&block.codes[..p])
            .map(|(u, &q)| u * q as f32)
            .sum::<f32>()
            * scale;
    }
}

/// Packs blocks into `block_bits` bits each, little-endian bit order: seed (16), exponent code (4, `e - base`),
/// then each coefficient's 4-bit two's complement.
pub fn pack_blocks(config: SeedLmConfig, blocks: &[SeedLmBlock], base: i32) -> Vec<u8> {
    let bits = config.block_bits();
    let mut out = vec![0u8; (blocks.len() * bits).div_ceil(8)];
    let mut at = 0usize;
    let mut put = |value: u32, width: usize, out: &mut [u8]| {
        for i in 0..width {
            if (value >> i) & 1 == 1 {
                out[(at + i) / 8] |= 1 << ((at + i) % 8);
            }
        }
        at += width;
    };
    for b in blocks {
        put(b.seed as u32, config.seed_bits as usize, &mut out);
        put(
            (b.exponent - base).clamp(0, EXPONENT_CODES - 1) as u32,
            4,
            &mut out,
        );
        for &code in &b.codes[..config.coefficients] {
            put((code as u8 & 0xF) as u32, 4, &mut out);
        }
    }
    out
}

/// Unpacks `count` blocks packed by [`pack_blocks`].
pub fn unpack_blocks(
    config: SeedLmConfig,
    bytes: &[u8],
    count: usize,
    base: i32,
) -> Vec<SeedLmBlock> {
    let mut at = 0usize;
    let mut get = |width: usize| {
        let mut v = 0u32;
        for i in 0..width {
            let bit = bytes
                .get((at + i) / 8)
                .map_or(0, |b| (b >> ((at + i) % 8)) & 1);
            v |= (bit as u32) << i;
        }
        at += width;
        v
    };
    (0..count)
        .map(|_| {
            let seed = get(config.seed_bits as usize) as u16;
            let exponent = base + get(4) as i32;
            let mut codes = [0i8; 4];
            for code in codes.iter_mut().take(config.coefficients) {
                // Sign-extend the 4-bit two's complement.
                *code = ((get(4) as i8) << 4) >> 4;
            }
            SeedLmBlock {
                seed,
                exponent,
                codes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_weights::{gaussian, relative_error};

    #[test]
    fn the_k3_test_vector() {
        let v = lfsr_states(4, 3, &[0, 1], 8);
        let u: Vec<Vec<u32>> = v.chunks(2).map(|r| r.to_vec()).collect();
        assert_eq!(u, vec![vec![2, 5], vec![6, 7], vec![3, 1], vec![4, 2]]);
    }

    #[test]
    fn sixteen_bit_taps_give_a_maximal_cycle() {
        let mut state = 1u32;
        let mut steps = 0;
        loop {
            state = lfsr_step(state, 16, &TAPS_16);
            steps += 1;
            if state == 1 {
                break;
            }
            assert_ne!(state, 0);
        }
        assert_eq!(steps, 65_535);
        // The cycle's slices are the LFSR's own states from each seed.
        let cycle = LfsrCycle::new(48);
        for seed in [1u16, 2, 77, 65_535] {
            let direct: Vec<f32> = lfsr_states(seed as u32, 16, &TAPS_16, 24)
                .iter()
                .map(|&s| normalise(s, 16) as f32)
                .collect();
            assert_eq!(cycle.basis(seed, 24), direct.as_slice());
        }
    }

    #[test]
    fn packed_sizes_are_exactly_the_stated_bits_per_weight() {
        assert_eq!(SEEDLM4.bits_per_weight(), 4.0);
        assert_eq!(SEEDLM3.bits_per_weight(), 3.0);
        let blocks = vec![
            SeedLmBlock {
                seed: 65_535,
                exponent: -3,
                codes: [-8, 7, -1, 3],
            };
            64
        ];
        for config in [SEEDLM4, SEEDLM3] {
            let bytes = pack_blocks(config, &blocks, -10);
            assert_eq!(
                bytes.len() * 8,
                64 * config.block * config.bits_per_weight() as usize
            );
            let back = unpack_blocks(config, &bytes, 64, -10);
            for b in back {
                assert_eq!((b.seed, b.exponent), (65_535, -3));
                assert_eq!(
                    &b.codes[..config.coefficients],
                    &[-8, 7, -1, 3][..config.coefficients]
                );
            }
        }
    }

    #[test]
    fn the_fast_search_finds_blocks_as_good_as_the_exhaustive_one() {
        let config = SEEDLM4;
        let cycle = LfsrCycle::new(config.block * config.coefficients);
        let table = SeedTable::new(config, &cycle);
        let w = gaussian(config.block * 24);
        let blocks: Vec<&[f32]> = w.chunks(config.block).collect();
        let fast = table.encode_blocks(&blocks);
        assert_eq!(fast, table.encode_blocks_portable(&blocks));
        for (block, (found, error)) in blocks.iter().zip(&fast) {
            let (exhaustive, best) = table.encode_block(block);
            // The f32 bound may order near-ties differently; the error must match to rounding.
            assert!(
                *error <= best * (1.0 + 1e-6) + 1e-18,
                "{found:?} {error} vs {exhaustive:?} {best}"
            );
        }
    }

    #[test]
    fn rows_that_are_not_whole_blocks_are_padded_and_can_be_stopped() {
        let config = SEEDLM3;
        let cycle = LfsrCycle::new(config.block * config.coefficients);
        let table = SeedTable::new(config, &cycle);
        let cols = 20; // one whole block and one of 8 weights
        let w = gaussian(cols * 3);
        let (blocks, base) = encode_matrix(&table, &w, cols, &|_| {}, &|| false).unwrap();
        assert_eq!(blocks.len(), 3 * 2);
        let bytes = pack_matrix(config, &blocks, cols, base);
        assert_eq!(row_bytes(config, cols), 9);
        assert_eq!(bytes.len(), 3 * 9);
        let mut r = vec![0.0f32; w.len()];
        for (row, out) in bytes.chunks(9).zip(r.chunks_mut(cols)) {
            decode_row(config, &cycle, row, base, out);
        }
        let relative = relative_error(&w, &r);
        assert!(relative < 0.35, "relative error {relative}");
        assert!(encode_matrix(&table, &w, cols, &|_| {}, &|| true).is_none());
    }

    #[test]
    fn gaussian_weights_reconstruct_with_the_published_error() {
        for (config, expected) in [(SEEDLM4, 0.12), (SEEDLM3, 0.23)] {
            let cycle = LfsrCycle::new(config.block * config.coefficients);
            let table = SeedTable::new(config, &cycle);
            let cols = config.block * 32;
            let w = gaussian(cols * 8);
            let (blocks, base) = encode_matrix(&table, &w, cols, &|_| {}, &|| false).unwrap();
            let bytes = pack_matrix(config, &blocks, cols, base);
            let mut r = vec![0.0f32; w.len()];
            for (row, out) in bytes
                .chunks(row_bytes(config, cols))
                .zip(r.chunks_mut(cols))
            {
                decode_row(config, &cycle, row, base, out);
            }
            let relative = relative_error(&w, &r);
            eprintln!("{config:?}: relative Frobenius error {relative:.4}");
            assert!(
                (relative - expected).abs() < 0.03,
                "{config:?}: relative Frobenius error {relative:.4}, expected about {expected}"
            );
        }
    }
}
