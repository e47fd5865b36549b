//! Property tests: every dispatched kernel (the widest instruction set this machine has, or the one
//! `SEEDINFER_ISA` caps it to) against its scalar reference, on random shapes and on values chosen to hit the
//! edges (zeros, all-equal blocks, single outliers, tiny and large magnitudes).
//!
//! Values are drawn from a seed inside each case rather than as proptest vectors of tens of thousands of
//! floats: generation stays cheap and a failure still shrinks to a small shape and a reproducible seed.
//!
//! How equal "equal" is:
//! - f32 (`dense_f32`) and f16/bf16 (`half_weights`): bit for bit. The SIMD twins keep the reference's sixteen
//!   partial sums in the same lanes, fuse each multiply-add as the reference does (`f32::mul_add`) and reduce in the
//!   same order.
//! - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (`quantized`): within a small multiple of f32 epsilon of the sum of the terms'
//!   magnitudes, not bitwise. Each block's integer dot product is exact on both paths, but the scalar
//!   reference adds `d_w * d_x * sum` to one accumulator per row while the AVX2 kernel splits `sum` over eight
//!   lanes, adds each lane with a fused multiply-add into its own accumulator and sums the lanes at the end:
//!   the same real number, rounded in a different order. The bound is relative to the magnitudes rather
//!   than to the result because the result may cancel to almost nothing.
//! - AVX-512 (when this machine has it and `SEEDINFER_ISA` allows it): the block-quantised kernels give the AVX2
//!   kernels' results bit for bit (`x86_avx512/quads.rs` forms the same integers and the same float steps per
//!   lane), checked on every case beside the scalar bound.
//! - Q4_K, Q5_K, Q6_K: the same bound. Each super-block's integer sums are exact on both paths; the AVX2 kernels
//!   keep them in eight lanes scaled and added in f32, the reference adds one term per super-block.

use half::{bf16, f16};
use proptest::prelude::*;
use seedinfer_formats::blocks::{block_scale_offsets, five_bits, BlockIq4Nl, KVALUES_IQ4NL};
use seedinfer_formats::{
    dequantize_row, quantize_row, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, TensorType,
};
use seedinfer_kernels::half_weights::HalfMatrix;
use seedinfer_kernels::isa::detected;
use seedinfer_kernels::quantized::{
    quantize_activations, Input, Q8Block, QuantizedInput, QuantizedMatrix, BLOCK, SUPER_BLOCK,
};
use seedinfer_kernels::{dense_f32, Isa};

/// xorshift64*: deterministic values from a proptest-chosen seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Magnitudes used for a group of values. The largest keeps every f16 block scale and Q4_1 minimum finite
/// (|x| <= 65504), so no path produces infinities.
const SCALES: [f32; 5] = [1e-5, 0.01, 1.0, 100.0, 30000.0];

/// Largest activation magnitude that keeps a Q8_1 block sum `s = d * sum(q)` finite in f16 in every case
/// (|s| <= 32 * amax <= 65504). Larger activation blocks overflow `s` to infinity, as in llama.cpp, whose
/// `block_q8_1` stores `s` as f16 too; Q4_1 products with such blocks are then infinite or NaN on both paths.
const Q8_1_SAFE_SCALE: f32 = 2000.0;

/// `n` values in groups of `group`, each group one of: random at a random magnitude (at most `max_scale`),
/// all zeros, all equal, zeros with one outlier, random with one outlier, negative only.
fn edgy_values(rng: &mut Rng, n: usize, group: usize, max_scale: f32) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let len = group.min(n - v.len());
        let scale = SCALES[rng.below(SCALES.len() as u64) as usize].min(max_scale);
        let start = v.len();
        match rng.below(8) {
            0 => v.extend(std::iter::repeat_n(0.0, len)),
            1 => {
                let c = rng.unit() * scale;
                v.extend(std::iter::repeat_n(c, len));
            }
            2 => {
                v.extend(std::iter::repeat_n(0.0, len));
                v[start + rng.below(len as u64) as usize] = rng.unit() * scale;
            }
            3 => {
                v.extend((0..len).map(|_| rng.unit() * scale * 0.01));
                v[start + rng.below(len as u64) as usize] = scale;
            }
            4 => v.extend((0..len).map(|_| -(rng.unit().abs() * scale))),
            _ => v.extend((0..len).map(|_| rng.unit() * scale)),
        }
    }
    v
}

/// Per row and token: the sum over blocks of |d_w * d_x| * sum |q_w * q_x| (plus |m * s| for Q4_1), i.e. the
/// magnitude of every term the kernels add.
fn term_magnitudes(
    tensor_type: TensorType,
    bytes: &[u8],
    rows: usize,
    cols: usize,
    x: &[Q8Block],
    tokens: usize,
) -> Vec<f32> {
    let n = cols / BLOCK;
    let mut out = vec![0.0f32; tokens * rows];
    // Each block as (d, m, 32 integer weights).
    let blocks: Vec<(f32, f32, [i32; BLOCK])> = match tensor_type {
        TensorType::Q4_0 => bytemuck::pod_collect_to_vec::<u8, BlockQ4_0>(bytes)
            .iter()
            .map(|b| {
                let mut q = [0; BLOCK];
                for j in 0..BLOCK / 2 {
                    q[j] = (b.qs[j] & 0x0f) as i32 - 8;
                    q[j + BLOCK / 2] = (b.qs[j] >> 4) as i32 - 8;
                }
                (b.d.to_f32(), 0.0, q)
            })
            .collect(),
        TensorType::IQ4_NL => bytemuck::pod_collect_to_vec::<u8, BlockIq4Nl>(bytes)
            .iter()
            .map(|b| {
                let mut q = [0; BLOCK];
                for j in 0..BLOCK / 2 {
                    q[j] = KVALUES_IQ4NL[(b.qs[j] & 0x0f) as usize] as i32;
                    q[j + BLOCK / 2] = KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as i32;
                }
                (b.d.to_f32(), 0.0, q)
            })
            .collect(),
        TensorType::Q4_1 => bytemuck::pod_collect_to_vec::<u8, BlockQ4_1>(bytes)
            .iter()
            .map(|b| {
                let mut q = [0; BLOCK];
                for j in 0..BLOCK / 2 {
                    q[j] = (b.qs[j] & 0x0f) as i32;
                    q[j + BLOCK / 2] = (b.qs[j] >> 4) as i32;
                }
                (b.d.to_f32(), b.m.to_f32(), q)
            })
            .collect(),
        TensorType::Q5_0 => bytemuck::pod_collect_to_vec::<u8, BlockQ5_0>(bytes)
            .iter()
            .map(|b| {
                let qh = u32::from_le_bytes(b.qh);
                let q = std::array::from_fn(|j| five_bits(&b.qs, qh, j) as i32 - 16);
                (b.d.to_f32(), 0.0, q)
            })
            .collect(),
        TensorType::Q5_1 => bytemuck::pod_collect_to_vec::<u8, BlockQ5_1>(bytes)
            .iter()
            .map(|b| {
                let qh = u32::from_le_bytes(b.qh);
                let q = std::array::from_fn(|j| five_bits(&b.qs, qh, j) as i32);
                (b.d.to_f32(), b.m.to_f32(), q)
            })
            .collect(),
        TensorType::Q8_0 => bytemuck::pod_collect_to_vec::<u8, BlockQ8_0>(bytes)
            .iter()
            .map(|b| (b.d.to_f32(), 0.0, b.qs.map(|q| q as i32)))
            .collect(),
        _ => unreachable!(),
    };
    for t in 0..tokens {
        for r in 0..rows {
            let mut sum = 0.0f64;
            for (k, a) in x[t * n..(t + 1) * n].iter().enumerate() {
                let (d, m, q) = &blocks[r * n + k];
                let ints: i64 = q
                    .iter()
                    .zip(&a.qs)
                    .map(|(w, x)| (*w as i64 * *x as i64).abs())
                    .sum();
                sum += (*d as f64 * a.d as f64).abs() * ints as f64;
                if matches!(tensor_type, TensorType::Q4_1 | TensorType::Q5_1) {
                    sum += (*m as f64 * a.s as f64).abs();
                }
            }
            out[t * rows + r] = sum as f32;
        }
    }
    out
}

/// Where the dispatched kernels are AVX-512 ones, `fast` (their product) must be the AVX2 kernels' bits; where the
/// machine has AVX-VNNI, its kernels' product too.
fn same_bits_as_avx2(
    m: &QuantizedMatrix,
    x: Input<'_>,
    tokens: usize,
    fast: &[f32],
) -> Result<(), TestCaseError> {
    let mut narrow = vec![0.0; fast.len()];
    m.matmul_with(Isa::Avx2, x, tokens, &mut narrow);
    let mut compared = Vec::new();
    if detected() == Isa::Avx512 {
        compared.push(("avx512", fast.to_vec()));
    }
    if Isa::AvxVnni.usable() == Isa::AvxVnni {
        let mut vnni = vec![0.0; fast.len()];
        m.matmul_with(Isa::AvxVnni, x, tokens, &mut vnni);
        compared.push(("avxvnni", vnni));
    }
    for (name, wide) in compared {
        for (i, (w, n)) in wide.iter().zip(&narrow).enumerate() {
            prop_assert!(
                w.to_bits() == n.to_bits(),
                "{}x{} tokens={tokens} [{i}]: {name} {w} vs avx2 {n}",
                m.rows,
                m.cols
            );
        }
    }
    Ok(())
}

#[test]
fn avx_vnni_kernels_are_checked_or_the_skip_is_said() {
    if Isa::AvxVnni.usable() == Isa::AvxVnni {
        let m = QuantizedMatrix::from_bytes(TensorType::Q8_0, 4, BLOCK, &[0; 4 * 34]).unwrap();
        assert_eq!(
            m.kernel_isa_with(Isa::AvxVnni),
            Isa::AvxVnni,
            "Q8_0 has an AVX-VNNI kernel"
        );
    } else {
        println!(
            "notice: this machine (or SEEDINFER_ISA) has no AVX-VNNI: the AVX-VNNI kernels are not checked"
        );
    }
}

#[test]
fn avx512_kernels_are_checked_or_the_skip_is_said() {
    if detected() == Isa::Avx512 {
        let kernel = QuantizedMatrix::from_bytes(TensorType::Q4_0, 4, BLOCK, &[0; 4 * 18])
            .unwrap()
            .kernel_isa();
        assert_eq!(kernel, Isa::Avx512, "Q4_0 runs its AVX-512 kernel here");
    } else {
        println!(
            "notice: this machine (or SEEDINFER_ISA) gives {:?}, not AVX-512 VNNI: the AVX-512 kernels are not checked",
            detected()
        );
    }
}

/// Saturated blocks: every weight byte 0x00, 0xff, 0x80 or 0x7f (the extreme levels and scales each format
/// stores) with unit super-block scales, against activations at the int8 extremes, constant or alternating in sign:
/// where the kernels' i16 pair sums come closest to overflowing. Every instruction set agrees with the scalar
/// reference, and AVX-512 with AVX2 bit for bit.
#[test]
fn saturated_blocks_agree_on_every_instruction_set() {
    use TensorType::*;
    let one = f16::from_f32(1.0).to_le_bytes();
    let (rows, cols, tokens) = (12, 512, 5);
    for tensor_type in [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS,
    ] {
        let scale_at: Vec<usize> = match block_scale_offsets(tensor_type) {
            Some((d, dmin)) => std::iter::once(d).chain(dmin).collect(),
            None if matches!(tensor_type, Q4_1 | Q5_1) => vec![0, 2],
            None => vec![0],
        };
        for fill in [0x00u8, 0xff, 0x80, 0x7f] {
            let block_bytes = tensor_type.block_bytes();
            let mut bytes = vec![fill; rows * cols / tensor_type.block_elements() * block_bytes];
            for block in bytes.chunks_exact_mut(block_bytes) {
                for &at in &scale_at {
                    block[at..at + 2].copy_from_slice(&one);
                }
            }
            let mut w = vec![0.0f32; rows * cols];
            dequantize_row(tensor_type, &bytes, &mut w).unwrap();
            let m = QuantizedMatrix::from_bytes(tensor_type, rows, cols, &bytes).unwrap();
            for pattern in 0..3 {
                let x: Vec<f32> = (0..tokens * cols)
                    .map(|i| match pattern {
                        0 => 1.0,
                        1 => -1.0,
                        _ => {
                            if i % 2 == 0 {
                                1.0
                            } else {
                                -1.0
                            }
                        }
                    })
                    .collect();
                let mut q = QuantizedInput::default();
                q.quantize(&x, [&m]);
                let (mut fast, mut reference) =
                    (vec![0.0; tokens * rows], vec![0.0; tokens * rows]);
                m.matmul(q.as_input(), tokens, &mut fast);
                m.matmul_with(Isa::Scalar, q.as_input(), tokens, &mut reference);
                same_bits_as_avx2(&m, q.as_input(), tokens, &fast).unwrap();
                for i in 0..tokens * rows {
                    let (t, r) = (i / rows, i % rows);
                    let magnitude: f32 = (0..cols)
                        .map(|c| (w[r * cols + c] * x[t * cols + c]).abs())
                        .sum();
                    let bound = 1e-5 * magnitude + 1e-6;
                    assert!(
                        (fast[i] - reference[i]).abs() <= bound,
                        "{tensor_type} fill {fill:#x} pattern {pattern} [{i}]: dispatched {} vs scalar {} (bound {bound})",
                        fast[i],
                        reference[i]
                    );
                }
            }
        }
    }
}

fn check_quantized(
    tensor_type: TensorType,
    rows: usize,
    blocks_per_row: usize,
    tokens: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let cols = blocks_per_row * BLOCK;
    let mut rng = Rng::new(seed);
    let mut bytes = Vec::new();
    if tensor_type == TensorType::IQ4_NL {
        // No quantiser: random nibbles, block scales of random sign from zero to 100, subnormal ones included.
        let scales = [0.0f32, 3e-7, 1e-5, 0.01, 1.0, 100.0];
        for _ in 0..rows * blocks_per_row {
            let scale = scales[rng.below(scales.len() as u64) as usize] * (2.0 * rng.unit() - 1.0);
            bytes.extend_from_slice(&f16::from_f32(scale).to_le_bytes());
            bytes.extend((0..BLOCK / 2).map(|_| rng.next() as u8));
        }
    } else {
        let w = edgy_values(&mut rng, rows * cols, BLOCK, f32::MAX);
        quantize_row(tensor_type, &w, &mut bytes).unwrap();
    }
    let m = QuantizedMatrix::from_bytes(tensor_type, rows, cols, &bytes).unwrap();
    let max_activation = if matches!(tensor_type, TensorType::Q4_1 | TensorType::Q5_1) {
        Q8_1_SAFE_SCALE
    } else {
        f32::MAX
    };
    let x = edgy_values(&mut rng, tokens * cols, BLOCK, max_activation);
    let mut q = Vec::new();
    quantize_activations(&x, &mut q);

    let (mut fast, mut reference) = (vec![0.0; tokens * rows], vec![0.0; tokens * rows]);
    m.matmul(&q, tokens, &mut fast);
    m.matmul_with(Isa::Scalar, &q, tokens, &mut reference);
    same_bits_as_avx2(&m, (&q).into(), tokens, &fast)?;
    let magnitudes = term_magnitudes(tensor_type, &bytes, rows, cols, &q, tokens);
    // Rounding steps along one accumulation path: a few per block, a few for the lane reduction.
    let steps = (4 * blocks_per_row + 16) as f32;
    for i in 0..tokens * rows {
        let (f, s) = (fast[i], reference[i]);
        prop_assert!(f.is_finite() && s.is_finite());
        let bound = steps * f32::EPSILON * magnitudes[i] + f32::MIN_POSITIVE;
        prop_assert!(
            (f - s).abs() <= bound,
            "{tensor_type} {rows}x{cols} tokens={tokens} [{i}]: dispatched {f} vs scalar {s} (bound {bound})"
        );
    }
    Ok(())
}

/// Random K-quant rows (`k` super-blocks each): random weight bits and sub-block scales, super-block scales
/// (and minimums) of random sign from zero to 100, subnormal ones included; against edge-case activations.
fn check_k_quant(
    tensor_type: TensorType,
    rows: usize,
    k: usize,
    tokens: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let cols = k * SUPER_BLOCK;
    let mut rng = Rng::new(seed);
    let block_bytes = tensor_type.block_bytes();
    let mut bytes: Vec<u8> = (0..rows * k * block_bytes)
        .map(|_| rng.next() as u8)
        .collect();
    let scales = [0.0f32, 3e-7, 1e-5, 0.01, 1.0, 100.0];
    for block in bytes.chunks_exact_mut(block_bytes) {
        let mut scale = || {
            let v = scales[rng.below(scales.len() as u64) as usize] * rng.unit();
            f16::from_f32(v).to_le_bytes()
        };
        let (d_at, dmin_at) = block_scale_offsets(tensor_type).unwrap();
        block[d_at..d_at + 2].copy_from_slice(&scale());
        if let Some(at) = dmin_at {
            block[at..at + 2].copy_from_slice(&scale());
        }
    }
    let m = QuantizedMatrix::from_bytes(tensor_type, rows, cols, &bytes).unwrap();
    let x = edgy_values(&mut rng, tokens * cols, BLOCK, f32::MAX);
    let mut q = QuantizedInput::default();
    q.quantize(&x, [&m]);

    let (mut fast, mut reference) = (vec![0.0; tokens * rows], vec![0.0; tokens * rows]);
    m.matmul(q.as_input(), tokens, &mut fast);
    m.matmul_with(Isa::Scalar, q.as_input(), tokens, &mut reference);
    same_bits_as_avx2(&m, q.as_input(), tokens, &fast)?;
    // The terms' magnitudes. The kernels sum two parts of each weight apart, so both count: Q2_K/Q4_K/Q5_K's
    // `d * sc * q` and `dmin * m` (the scalar reference too; each is the dequantisation with the other's super-block
    // scale zeroed); Q6_K's and Q3_K's `d * sc * q` with unsigned `q`, whose i32 lanes only become exact partial sums
    // once the offset (32 or 4) times `d * sc` per weight comes off (bounded by the weight plus twice that offset,
    // the dequantisation with every stored weight bit zero).
    let mut parts = vec![vec![0.0f32; rows * cols]; 2];
    let (d_at, dmin_at) = block_scale_offsets(tensor_type).unwrap();
    let weight_bytes = match tensor_type {
        TensorType::Q6_K => Some(192),
        TensorType::Q3_K => Some(96),
        _ => None,
    };
    if let Some(at) = dmin_at {
        for (part, zeroed) in parts.iter_mut().zip([at, d_at]) {
            let mut copy = bytes.clone();
            for block in copy.chunks_exact_mut(block_bytes) {
                block[zeroed..zeroed + 2].fill(0);
            }
            dequantize_row(tensor_type, &copy, part).unwrap();
        }
    } else if let Some(weight_bytes) = weight_bytes {
        dequantize_row(tensor_type, &bytes, &mut parts[0]).unwrap();
        let mut offsets = bytes.clone();
        for block in offsets.chunks_exact_mut(block_bytes) {
            block[..weight_bytes].fill(0);
        }
        dequantize_row(tensor_type, &offsets, &mut parts[1]).unwrap();
        parts[1].iter_mut().for_each(|v| *v *= 2.0);
    } else {
        // IQ4_XS, one part: `d * s_j * level`, signed levels and scales multiplied exactly in i32.
        dequantize_row(tensor_type, &bytes, &mut parts[0]).unwrap();
    }
    // Per super-block: the scale product, the conversion of an integer sum that may exceed 2^24, the product
    // and the addition, on each path; then the lane reduction.
    let steps = (8 * k + 16) as f32;
    for t in 0..tokens {
        let activations = q.q8k[t * k..(t + 1) * k]
            .iter()
            .flat_map(|b| b.qs.iter().map(move |&v| v as f64 * b.d as f64));
        let activations: Vec<f64> = activations.collect();
        for r in 0..rows {
            let magnitude: f64 = parts
                .iter()
                .flat_map(|w| w[r * cols..(r + 1) * cols].iter().zip(&activations))
                .map(|(w, a)| (*w as f64 * a).abs())
                .sum();
            let (f, s) = (fast[t * rows + r], reference[t * rows + r]);
            prop_assert!(f.is_finite() && s.is_finite());
            let bound = steps * f32::EPSILON * magnitude as f32 + f32::MIN_POSITIVE;
            prop_assert!(
                (f - s).abs() <= bound,
                "{tensor_type} {rows}x{cols} tokens={tokens} [{t}, {r}]: dispatched {f} vs scalar {s} (bound {bound})"
            );
        }
    }
    Ok(())
}

/// Bit patterns of `v` as f16 or bf16 (round to nearest even, as the formats crate writes them).
fn half_bytes(tensor_type: TensorType, v: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::new();
    quantize_row(tensor_type, v, &mut bytes).unwrap();
    bytes
}

fn check_half(
    tensor_type: TensorType,
    rows: usize,
    cols: usize,
    tokens: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let mut w = edgy_values(&mut rng, rows * cols, 16, f32::MAX);
    // Sprinkle values that only the half formats make interesting: subnormals and the largest finite f16.
    for _ in 0..rows {
        let i = rng.below((rows * cols) as u64) as usize;
        w[i] = match (tensor_type, rng.below(3)) {
            (TensorType::F16, 0) => f16::from_bits(1 + rng.below(0x3ff) as u16).to_f32(),
            (TensorType::F16, 1) => -65504.0,
            (_, 0) => bf16::from_bits(1 + rng.below(0x7f) as u16).to_f32(),
            (_, 1) => 1e30,
            _ => -0.0,
        };
    }
    let bytes = half_bytes(tensor_type, &w);
    let m = HalfMatrix::from_bytes(tensor_type, rows, cols, &bytes).unwrap();
    prop_assert_eq!(m.resident_bytes(), rows * cols * 2);
    let x = edgy_values(&mut rng, tokens * cols, 16, f32::MAX);

    let mut widened = vec![0.0f32; rows * cols];
    dequantize_row(tensor_type, &bytes, &mut widened).unwrap();
    let mut row = vec![0.0f32; cols];
    for r in 0..rows {
        m.row_to_f32(r, &mut row);
        prop_assert_eq!(&row[..], &widened[r * cols..(r + 1) * cols]);
    }

    let (mut fast, mut reference) = (vec![0.0; tokens * rows], vec![0.0; tokens * rows]);
    m.matmul(&x, tokens, &mut fast);
    m.matmul_with(Isa::Scalar, &x, tokens, &mut reference);
    for t in 0..tokens {
        let xt = &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let wr = &widened[r * cols..(r + 1) * cols];
            let (f, s) = (fast[t * rows + r], reference[t * rows + r]);
            // The reference is dense_f32's reference loop on the widened row...
            prop_assert_eq!(s.to_bits(), dense_f32::dot_scalar(wr, xt).to_bits());
            // ...and the SIMD path reproduces it exactly.
            prop_assert_eq!(
                f.to_bits(),
                s.to_bits(),
                "{} {}x{} [{},{}]",
                tensor_type,
                rows,
                cols,
                t,
                r
            );
            check_against_f64(wr, xt, s)?;
        }
    }
    Ok(())
}

/// f32 accumulation of `n` products in sixteen lanes stays within about (n / 16 + 5) roundings of the
/// magnitude sum of the exact result.
fn check_against_f64(w: &[f32], x: &[f32], got: f32) -> Result<(), TestCaseError> {
    let exact: f64 = w.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum();
    let magnitude: f64 = w
        .iter()
        .zip(x)
        .map(|(a, b)| (*a as f64 * *b as f64).abs())
        .sum();
    let bound = (w.len() / 16 + 8) as f64 * f32::EPSILON as f64 * magnitude + 1e-37;
    prop_assert!(
        (got as f64 - exact).abs() <= bound,
        "{got} vs exact {exact} (bound {bound})"
    );
    Ok(())
}

proptest! {
    // A failing case prints its shrunk inputs (seed included); nothing is written into the source tree.
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn q4_0_dispatched_matches_scalar(rows in 1usize..70, k in 1usize..40, tokens in 1usize..12, seed in any::<u64>()) {
        check_quantized(TensorType::Q4_0, rows, k, tokens, seed)?;
    }

    #[test]
    fn iq4_nl_dispatched_matches_scalar(rows in 1usize..70, k in 1usize..40, tokens in 1usize..12, seed in any::<u64>()) {
        check_quantized(TensorType::IQ4_NL, rows, k, tokens, seed)?;
    }

    #[test]
    fn q4_1_dispatched_matches_scalar(rows in 1usize..70, k in 1usize..40, tokens in 1usize..12, seed in any::<u64>()) {
        check_quantized(TensorType::Q4_1, rows, k, tokens, seed)?;
    }

    #[test]
    fn q5_0_dispatched_matches_scalar(rows in 1usize..70, k in 1usize..40, tokens in 1usize..12, seed in any::<u64>()) {
        check_quantized(TensorType::Q5_0, rows, k, tokens, seed)?;
    }

    #[test]
    fn q5_1_dispatched_matches_scalar(rows in 1usize..70, k in 1usize..40, tokens in 1usize..12, seed in any::<u64>()) {
        check_quantized(TensorType::Q5_1, rows, k, tokens, seed)?;
    }

    #[test]
    fn q8_0_dispatched_matches_scalar(rows in 1usize..70, k in 1usize..40, tokens in 1usize..12, seed in any::<u64>()) {
        check_quantized(TensorType::Q8_0, rows, k, tokens, seed)?;
    }

    #[test]
    fn q2_k_dispatched_matches_scalar(rows in 1usize..40, k in 1usize..6, tokens in 1usize..12, seed in any::<u64>()) {
        check_k_quant(TensorType::Q2_K, rows, k, tokens, seed)?;
    }

    #[test]
    fn q3_k_dispatched_matches_scalar(rows in 1usize..40, k in 1usize..6, tokens in 1usize..12, seed in any::<u64>()) {
        check_k_quant(TensorType::Q3_K, rows, k, tokens, seed)?;
    }

    #[test]
    fn q4_k_dispatched_matches_scalar(rows in 1usize..40, k in 1usize..6, tokens in 1usize..12, seed in any::<u64>()) {
        check_k_quant(TensorType::Q4_K, rows, k, tokens, seed)?;
    }

    #[test]
    fn q5_k_dispatched_matches_scalar(rows in 1usize..40, k in 1usize..6, tokens in 1usize..12, seed in any::<u64>()) {
        check_k_quant(TensorType::Q5_K, rows, k, tokens, seed)?;
    }

    #[test]
    fn iq4_xs_dispatched_matches_scalar(rows in 1usize..40, k in 1usize..6, tokens in 1usize..12, seed in any::<u64>()) {
        check_k_quant(TensorType::IQ4_XS, rows, k, tokens, seed)?;
    }

    #[test]
    fn q6_k_dispatched_matches_scalar(rows in 1usize..40, k in 1usize..6, tokens in 1usize..12, seed in any::<u64>()) {
        check_k_quant(TensorType::Q6_K, rows, k, tokens, seed)?;
    }

    #[test]
    fn f32_matmul_matches_scalar_loop(rows in 1usize..70, cols in 1usize..300, tokens in 1usize..6, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let w = edgy_values(&mut rng, rows * cols, 16, f32::MAX);
        let x = edgy_values(&mut rng, tokens * cols, 16, f32::MAX);
        let mut out = vec![0.0; tokens * rows];
        dense_f32::matmul(&w, rows, cols, &x, tokens, &mut out);
        for t in 0..tokens {
            let xt = &x[t * cols..(t + 1) * cols];
            for r in 0..rows {
                let wr = &w[r * cols..(r + 1) * cols];
                let want = dense_f32::dot_scalar(wr, xt);
                prop_assert_eq!(out[t * rows + r].to_bits(), want.to_bits(), "{}x{} [{},{}]", rows, cols, t, r);
                check_against_f64(wr, xt, want)?;
            }
        }
    }

    #[test]
    fn f16_matmul_matches_scalar(rows in 1usize..70, cols in 1usize..300, tokens in 1usize..6, seed in any::<u64>()) {
        check_half(TensorType::F16, rows, cols, tokens, seed)?;
    }

    #[test]
    fn bf16_matmul_matches_scalar(rows in 1usize..70, cols in 1usize..300, tokens in 1usize..6, seed in any::<u64>()) {
        check_half(TensorType::BF16, rows, cols, tokens, seed)?;
    }

    #[test]
    fn activation_quantisation_is_deterministic_and_within_half_a_step(blocks in 1usize..40, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = edgy_values(&mut rng, blocks * BLOCK, BLOCK, f32::MAX);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        quantize_activations(&x, &mut first);
        quantize_activations(&x, &mut second);
        prop_assert_eq!(&first, &second);
        // Blocks are independent: quantising each block on its own gives the same blocks.
        let mut one = Vec::new();
        for (chunk, whole) in x.chunks_exact(BLOCK).zip(&first) {
            quantize_activations(chunk, &mut one);
            prop_assert_eq!(&one[..], std::slice::from_ref(whole));
        }
        for (block, xs) in first.iter().zip(x.chunks_exact(BLOCK)) {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            prop_assert_eq!(block.d, f16::from_f32(amax / 127.0).to_f32());
            let sum: i32 = block.qs.iter().map(|q| *q as i32).sum();
            prop_assert_eq!(block.s, f16::from_f32(amax / 127.0 * sum as f32).to_f32());
            if amax == 0.0 {
                prop_assert!(block.qs.iter().all(|q| *q == 0));
                continue;
            }
            // In units of the exact step amax / 127 every value is rounded to its nearest integer (the only
            // slack is the f32 rounding of x * (127 / amax))...
            let step = amax as f64 / 127.0;
            for (q, v) in block.qs.iter().zip(xs) {
                let exact = *v as f64 / step;
                prop_assert!((*q as f64 - exact).abs() <= 0.5 + 1e-4, "{v} -> {q} (exact {exact})");
            }
            // ...and decoded with the stored (f16-rounded) scale it is within half a step plus the scale's own
            // rounding times |q| <= 127.
            let d = block.d as f64;
            for (q, v) in block.qs.iter().zip(xs) {
                let err = (*q as f64 * d - *v as f64).abs();
                let bound = step * (0.5 + 1e-4) + 127.0 * (d - step).abs();
                prop_assert!(err <= bound, "{v} -> {q} * {d} (error {err}, bound {bound})");
            }
        }
    }
}
