//! RMSNorm, `x * weight / sqrt(mean(x²) + eps)` per row, into f32 or straight into int8 activation blocks.

use crate::isa::detected;
pub use crate::q8_block::inverse_rms;
use crate::q8_block::{quantize_block_scalar, Q8Block, BLOCK};

/// RMSNorm of every row of `x` (`[rows, weight.len()]`) into `out`, resized to match: `x * scale * weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut Vec<f32>) {
    assert!(
        !weight.is_empty() && x.len().is_multiple_of(weight.len()),
        "rows of weight.len()"
    );
    out.resize(x.len(), 0.0);
    for (x, o) in x.chunks(weight.len()).zip(out.chunks_mut(weight.len())) {
        let scale = inverse_rms(x, eps);
        for ((o, v), w) in o.iter_mut().zip(x).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// RMSNorm of every row of `x` quantised to int8 activation blocks in one pass, without writing the normalised
/// rows: bit for bit [`rms_norm`] followed by [`crate::q8_block::quantize_activations`]. `weight.len()` must be
/// a multiple of 32.
pub fn rms_norm_quantized(x: &[f32], weight: &[f32], eps: f32, out: &mut Vec<Q8Block>) {
    assert!(
        !weight.is_empty()
            && weight.len().is_multiple_of(BLOCK)
            && x.len().is_multiple_of(weight.len()),
        "rows of weight.len(), a multiple of 32"
    );
    #[cfg(target_arch = "x86_64")]
    if detected().has_avx2() {
        // SAFETY: `detected` only reports instruction sets this machine has; the lengths were checked.
        return unsafe { crate::x86_avx2::q8_block::rms_norm_quantized(x, weight, eps, out) };
    }
    rms_norm_quantized_scalar(x, weight, eps, out)
}

/// Scalar reference of [`rms_norm_quantized`].
pub fn rms_norm_quantized_scalar(x: &[f32], weight: &[f32], eps: f32, out: &mut Vec<Q8Block>) {
    out.clear();
    let mut normed = [0.0f32; BLOCK];
    for row in x.chunks_exact(weight.len()) {
        let scale = inverse_rms(row, eps);
        for (x, w) in row.chunks_exact(BLOCK).zip(weight.chunks_exact(BLOCK)) {
            for ((o, v), w) in normed.iter_mut().zip(x).zip(w) {
                *o = v * scale * w;
            }
            out.push(quantize_block_scalar(&normed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::q8_block::{quantize_activations, quantize_activations_scalar};
    use crate::test_values::values;

    #[test]
    fn fused_quantisation_equals_norm_then_quantise_bit_for_bit() {
        for (rows, width) in [(1, 32), (1, 576), (5, 576), (3, 2048)] {
            let mut x = values(rows * width, width as u32 + rows as u32);
            // A row of zeros (scale 1/sqrt(eps)) and large values.
            x[..width].iter_mut().for_each(|v| *v = 0.0);
            x[width..].iter_mut().step_by(7).for_each(|v| *v *= 300.0);
            let weight = values(width, 17);
            let mut normed = Vec::new();
            rms_norm(&x, &weight, 1e-5, &mut normed);
            let (mut reference, mut reference_scalar) = (Vec::new(), Vec::new());
            quantize_activations(&normed, &mut reference);
            quantize_activations_scalar(&normed, &mut reference_scalar);
            assert_eq!(reference, reference_scalar);
            let (mut fused, mut fused_scalar) = (Vec::new(), Vec::new());
            rms_norm_quantized(&x, &weight, 1e-5, &mut fused);
            rms_norm_quantized_scalar(&x, &weight, 1e-5, &mut fused_scalar);
            assert_eq!(fused, reference, "{rows}x{width}");
            assert_eq!(fused_scalar, reference, "{rows}x{width} scalar");
        }
    }

    #[test]
    fn rms_norm_gives_unit_root_mean_square_times_weight() {
        let x = values(64, 3);
        let mut out = Vec::new();
        rms_norm(&x, &[1.0; 64], 0.0, &mut out);
        let mean_square = out.iter().map(|v| (v * v) as f64).sum::<f64>() / 64.0;
        assert!((mean_square - 1.0).abs() < 1e-5, "{mean_square}");
    }
}
