//! `q3_rtn`: plain round-to-nearest 3-bit weights in groups of 32, the baseline SeedLM's 3-bit format is judged
//! against (issue 7). Like ggml's Q4_0 one step down: the group's largest-magnitude value `max` sets the scale
//! `d = max / -4`, so it lands exactly on code -4; codes are `clamp(round(x / d), -4, 3)`, stored as `code + 4`.
//! 32 three-bit codes (12 bytes) and an f16 scale: 14 bytes per 32 weights, 3.5 bits per weight.

use half::f16;

/// Weights per group.
pub const GROUP: usize = 32;
/// Bytes per group: the f16 scale, then 32 codes of 3 bits.
pub const GROUP_BYTES: usize = 2 + GROUP * 3 / 8;

/// Quantises `x` (a multiple of 32 long) into `out`, `GROUP_BYTES` per group.
pub fn quantize(x: &[f32], out: &mut Vec<u8>) {
    assert!(
        x.len().is_multiple_of(GROUP),
        "q3_rtn quantises whole groups of 32"
    );
    for group in x.chunks(GROUP) {
        let max = group
            .iter()
            .copied()
            .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        let d = max / -4.0;
        let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        let mut bits = 0u128;
        for (i, &v) in group.iter().enumerate() {
            let code = ((v * inverse).round() as i32).clamp(-4, 3) + 4;
            bits |= (code as u128) << (3 * i);
        }
        out.extend_from_slice(&bits.to_le_bytes()[..GROUP * 3 / 8]);
    }
}

/// Dequantises `groups` groups of `bytes` into `out`.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (group, out) in bytes.chunks_exact(GROUP_BYTES).zip(out.chunks_mut(GROUP)) {
        let d = f16::from_le_bytes([group[0], group[1]]).to_f32();
        let mut raw = [0u8; 16];
        raw[..GROUP * 3 / 8].copy_from_slice(&group[2..]);
        let bits = u128::from_le_bytes(raw);
        for (i, o) in out.iter_mut().enumerate() {
            let code = ((bits >> (3 * i)) & 7) as i32 - 4;
            *o = code as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_weights::{gaussian, relative_error};

    #[test]
    fn groups_take_three_and_a_half_bits_per_weight_and_round_trip() {
        let x: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 19) as f32 - 9.0) * 0.01)
            .collect();
        let mut bytes = Vec::new();
        quantize(&x, &mut bytes);
        assert_eq!(bytes.len() * 8, x.len() * 7 / 2);
        let mut back = vec![0.0; x.len()];
        dequantize(&bytes, &mut back);
        for (group, back) in x.chunks(GROUP).zip(back.chunks(GROUP)) {
            let max = group.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // Within half a step (max / 4) of the original, except that +max's side saturates at code 3.
            for (a, b) in group.iter().zip(back) {
                assert!((a - b).abs() <= max / 4.0 + 1e-3, "{a} -> {b} (max {max})");
            }
        }
        // The value that set the scale (the first of largest magnitude) is exact up to the f16 scale.
        let max_at = (0..GROUP).fold(0, |b, i| if x[i].abs() > x[b].abs() { i } else { b });
        assert!((back[max_at] - x[max_at]).abs() < 1e-4);
    }

    #[test]
    fn gaussian_weights_lose_about_a_fifth() {
        // The same Gaussian stream seedlm's tests encode, so the errors compare.
        let x = gaussian(32 * 256);
        let mut bytes = Vec::new();
        quantize(&x, &mut bytes);
        let mut back = vec![0.0; x.len()];
        dequantize(&bytes, &mut back);
        let relative = relative_error(&x, &back);
        eprintln!("q3_rtn: relative Frobenius error {relative:.4}");
        assert!((0.1..0.3).contains(&relative), "{relative}");
    }
}
