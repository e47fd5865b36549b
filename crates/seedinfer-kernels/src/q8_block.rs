//! Int8 activation blocks: the activations every block-quantised product reads, quantised once per product and
//! shared by every matrix that reads the same input. A leaf: the formats, the ISA files, RMSNorm and ggml's
//! arithmetic all build on it, and it needs none of them.

use crate::isa::detected;
use half::f16;

/// Elements per activation block (and per weight block of the Q4/Q5/Q8 formats).
pub const BLOCK: usize = 32;

/// 32 activations as int8 with their scale `d` and `s = d * sum(qs)`, both rounded through f16 as llama.cpp
/// stores them, and the exact integer sums of `qs` over the even and the odd groups of four elements
/// (`qs[8c..8c + 4]` and `qs[8c + 4..8c + 8]`: the lanes of the unsigned-weight formats' products).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8Block {
    pub d: f32,
    pub s: f32,
    pub group_sums: [i32; 2],
    pub qs: [i8; BLOCK],
}

impl Default for Q8Block {
    fn default() -> Self {
        Self {
            d: 0.0,
            s: 0.0,
            group_sums: [0; 2],
            qs: [0; BLOCK],
        }
    }
}

/// Quantises rows of activations (`input.len()` a multiple of 32) into `out`, llama.cpp's SIMD way:
/// `d = max|x| / 127`, `q = round_ties_even(x * 127 / max|x|)`.
pub fn quantize_activations(input: &[f32], out: &mut Vec<Q8Block>) {
    assert!(input.len().is_multiple_of(BLOCK), "whole blocks of 32");
    #[cfg(target_arch = "x86_64")]
    if detected().has_avx2() {
        // SAFETY: `detected` only reports instruction sets this machine has; the length was checked.
        return unsafe { crate::x86_avx2::q8_block::quantize_activations(input, out) };
    }
    quantize_activations_scalar(input, out)
}

/// Scalar reference of [`quantize_activations`].
pub fn quantize_activations_scalar(input: &[f32], out: &mut Vec<Q8Block>) {
    out.clear();
    out.extend(input.chunks_exact(BLOCK).map(quantize_block_scalar));
}

/// One block of 32 activations quantised: `d = max|x| / 127`, `q = round_ties_even(x * 127 / max|x|)`.
pub fn quantize_block_scalar(x: &[f32]) -> Q8Block {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inverse = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut block = Q8Block {
        d: f16::from_f32(d).to_f32(),
        ..Q8Block::default()
    };
    for (j, (q, v)) in block.qs.iter_mut().zip(x).enumerate() {
        *q = (v * inverse).round_ties_even() as i8;
        block.group_sums[(j / 4) % 2] += *q as i32;
    }
    let sum = block.group_sums[0] + block.group_sums[1];
    block.s = f16::from_f32(d * sum as f32).to_f32();
    block
}

/// `1 / sqrt(mean(x²) + eps)`, the mean accumulated in f64 (RMSNorm's scale, shared with the fused
/// norm-and-quantise kernels).
pub fn inverse_rms(x: &[f32], eps: f32) -> f32 {
    let mean_square = x.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / x.len() as f64;
    (1.0 / (mean_square + eps as f64).sqrt()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    #[test]
    fn vector_activation_quantisation_is_bit_for_bit_the_scalar_one() {
        let mut x = values(32 * 40, 11);
        // Exact halves of a quantisation step, which must round to even, and an all-zero block.
        x[..32]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i as f32 - 15.5) * 127.0 / 16.5);
        x[32..64].fill(0.0);
        let (mut fast, mut reference) = (Vec::new(), Vec::new());
        quantize_activations(&x, &mut fast);
        quantize_activations_scalar(&x, &mut reference);
        assert_eq!(fast, reference);
    }

    #[test]
    fn activation_quantisation_rounds_like_llama_cpp() {
        let x = values(64, 3);
        let mut q = Vec::new();
        quantize_activations(&x, &mut q);
        for (block, xs) in q.iter().zip(x.chunks(32)) {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(block.d, f16::from_f32(amax / 127.0).to_f32());
            assert_eq!(block.qs.iter().map(|v| v.unsigned_abs()).max(), Some(127));
            for (q, v) in block.qs.iter().zip(xs) {
                assert!((*q as f32 * block.d - v).abs() <= block.d * 0.51 + 1e-3);
            }
        }
    }
}
