//! Int8 activation super-blocks (ggml's Q8_K): what the K-quant products read. Like [`crate::q8_block`] a leaf,
//! quantised once per product input and shared by every K-quant matrix that reads it.

use seedinfer_formats::QK_K;

/// Elements per activation super-block (and per K-quant weight super-block).
pub const SUPER_BLOCK: usize = QK_K;

/// 256 activations as int8 with one f32 scale `d`, and the exact sums of each 16 consecutive values (`bsums`, what
/// the weights' minimums and offsets meet). ggml's `block_q8_K`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Q8KBlock {
    pub d: f32,
    pub qs: [i8; SUPER_BLOCK],
    pub bsums: [i16; SUPER_BLOCK / 16],
}

impl Default for Q8KBlock {
    fn default() -> Self {
        Self {
            d: 0.0,
            qs: [0; SUPER_BLOCK],
            bsums: [0; SUPER_BLOCK / 16],
        }
    }
}

/// Quantises rows of activations (`input.len()` a multiple of 256) into `out`, as ggml's
/// `quantize_row_q8_K_ref`: the value of largest magnitude `max` maps to -127, `q = round_ties_even(x * -127 /
/// max)`, `d = 1 / (-127 / max)`.
pub fn quantize_activations_k(input: &[f32], out: &mut Vec<Q8KBlock>) {
    assert!(
        input.len().is_multiple_of(SUPER_BLOCK),
        "whole super-blocks of 256"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::isa::detected().has_avx2() {
        // SAFETY: `detected` only reports instruction sets this machine has; the length was checked.
        return unsafe { crate::x86_avx2::q8_block::quantize_activations_k(input, out) };
    }
    quantize_activations_k_scalar(input, out)
}

/// Scalar reference of [`quantize_activations_k`].
pub fn quantize_activations_k_scalar(input: &[f32], out: &mut Vec<Q8KBlock>) {
    out.clear();
    out.extend(input.chunks_exact(SUPER_BLOCK).map(quantize_super_block));
}

/// ggml's `nearest_int`: `value` rounded half to even, for |value| < 2^22. Adding 1.5 * 2^23 leaves the rounded
/// integer in the low mantissa bits (plain float arithmetic, which vectorises; `round_ties_even` is a libm call on
/// baseline x86-64).
#[inline(always)]
fn nearest_int(value: f32) -> i32 {
    ((value + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// One super-block of [`quantize_activations_k`].
pub fn quantize_super_block(x: &[f32]) -> Q8KBlock {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let mut block = Q8KBlock::default();
    if amax == 0.0 {
        return block;
    }
    let iscale = -127.0 / max;
    for (q, &v) in block.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (sum, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
        *sum = group.iter().map(|&q| q as i16).sum();
    }
    block.d = 1.0 / iscale;
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    #[test]
    fn largest_magnitude_maps_to_minus_127_and_sums_are_exact() {
        let mut x = values(512, 4);
        x[37] = -9.0; // block 0's largest magnitude, negative: it maps to -127, so d is positive
        x[300] = 5.0;
        let mut q = Vec::new();
        quantize_activations_k(&x, &mut q);
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].qs[37], -127);
        assert_eq!(q[0].d, 1.0 / (-127.0 / -9.0));
        assert_eq!(q[1].qs[300 - 256], -127);
        assert!(q[1].d < 0.0);
        for (block, xs) in q.iter().zip(x.chunks(256)) {
            for (j, sum) in block.bsums.iter().enumerate() {
                let exact: i32 = block.qs[16 * j..16 * j + 16]
                    .iter()
                    .map(|&v| v as i32)
                    .sum();
                assert_eq!(*sum as i32, exact);
            }
            for (q, v) in block.qs.iter().zip(xs) {
                assert!((*q as f32 * block.d - v).abs() <= block.d.abs() * 0.5 + 1e-6);
            }
        }
        let zeros = quantize_super_block(&[0.0; 256]);
        assert_eq!(zeros, Q8KBlock::default());
    }

    #[test]
    fn the_dispatched_quantiser_gives_the_scalar_bits() {
        let mut x = values(256 * 6, 11);
        // Ties, a largest magnitude of both signs (the first wins), NaN, infinity, zeros and subnormals.
        x[5] = 127.0;
        x[6] = -127.0;
        x[7] = 2.5;
        x[300] = -3.0;
        x[301] = 3.0;
        x[600] = f32::NAN;
        x[1000] = 1e-40;
        x[256 * 4..256 * 5].fill(0.0);
        x[256 * 5 + 9] = f32::INFINITY;
        let (mut fast, mut reference) = (Vec::new(), Vec::new());
        quantize_activations_k(&x, &mut fast);
        quantize_activations_k_scalar(&x, &mut reference);
        for (f, r) in fast.iter().zip(&reference) {
            assert_eq!(f.d.to_bits(), r.d.to_bits());
            assert_eq!(f.qs, r.qs);
            assert_eq!(f.bsums, r.bsums);
        }
    }

    #[test]
    fn halves_round_to_even() {
        // max = 127 gives iscale = -1 exactly: x.5 values land halfway.
        let mut x = [0.0f32; 256];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = 3.5;
        x[3] = -0.5;
        let b = quantize_super_block(&x);
        assert_eq!(&b.qs[..4], &[-127, -2, -4, 0]);
    }

    #[test]
    fn nearest_int_is_round_half_to_even() {
        for v in [
            -127.0f32, -126.5, -2.5, -0.5, -0.49, 0.0, 0.5, 1.5, 2.5, 63.7, 126.5, 127.0,
        ] {
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
        }
    }
}
