//! The packed sub-block scales and minimums shared by Q4_K and Q5_K: eight 6-bit scales and eight 6-bit minimums
//! in 12 bytes (ggml's `get_scale_min_k4`), and their reference quantiser.

use super::scale_search::{make_qkx2_quants, nearest_int, requantize_with_minimum, Qkx2Search};
use super::QK_K;
use half::f16;

/// Bytes of packed scales and minimums in a Q4_K or Q5_K super-block.
pub const K_SCALE_BYTES: usize = 12;

/// Sub-block `j`'s (0..8) 6-bit scale and minimum. Bytes 0..4 hold the scales of sub-blocks 0..4 in their low six
/// bits, bytes 4..8 their minimums; sub-blocks 4..8 keep their low four bits in the nibbles of bytes 8..12 (scale
/// low, minimum high) and their top two bits in the top bits of bytes 0..4 (scales) and 4..8 (minimums).
#[inline(always)]
pub fn scale_min(scales: &[u8; K_SCALE_BYTES], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// All eight `(scale, minimum)` pairs of a super-block.
pub fn scales_mins(scales: &[u8; K_SCALE_BYTES]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (sc[j], m[j]) = scale_min(scales, j);
    }
    (sc, m)
}

/// The 12 bytes holding eight 6-bit scales and minimums as [`scale_min`] reads them (`quantize_row_q4_K_ref`'s
/// packing).
pub fn pack_scales_mins(sc: &[u8; 8], m: &[u8; 8]) -> [u8; K_SCALE_BYTES] {
    let mut packed = [0u8; K_SCALE_BYTES];
    for j in 0..8 {
        if j < 4 {
            packed[j] = sc[j];
            packed[j + 4] = m[j];
        } else {
            packed[j + 4] = (sc[j] & 0x0f) | ((m[j] & 0x0f) << 4);
            packed[j - 4] |= (sc[j] >> 4) << 6;
            packed[j] |= (m[j] >> 4) << 6;
        }
    }
    packed
}

/// A Q4_K or Q5_K super-block as ggml's reference quantiser chooses it, before the levels are packed.
pub struct ScaledMinimumLevels {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_BYTES],
    /// Element `i`'s level, `0..=search.nmax`.
    pub levels: [u8; QK_K],
}

/// `quantize_row_q4_K_ref` / `_q5_K_ref` up to the packing of the levels: per sub-block of 32 a
/// `make_qkx2_quants` search with weights `sqrt(mean(x²)) + |x|`, the scales and minimums quantised to 6 bits
/// against the largest of each, then every weight re-quantised with the scale and minimum it will be read with.
pub fn quantize_scaled_minimum(x: &[f32], search: &Qkx2Search) -> ScaledMinimumLevels {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let group = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in group {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0.0f32; 32];
        for (w, &v) in weights.iter_mut().zip(group) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) =
            make_qkx2_quants(search, group, &weights, &mut levels[32 * j..32 * j + 32]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    for j in 0..8 {
        let group = 32 * j..32 * j + 32;
        let (scale, minimum) = (d.to_f32() * ls[j] as f32, dmin.to_f32() * lm[j] as f32);
        requantize_with_minimum(
            &x[group.clone()],
            scale,
            minimum,
            search.nmax as i32,
            &mut levels[group],
        );
    }
    ScaledMinimumLevels {
        d,
        dmin,
        scales: pack_scales_mins(&ls, &lm),
        levels,
    }
}

/// A K-quant super-block of eight sub-blocks of 32 whose weights are `d * sc_j * q - dmin * m_j` (Q4_K, Q5_K): what
/// their dequantiser and their dot products share.
pub trait ScaledMinimumBlock {
    fn d(&self) -> f32;
    fn dmin(&self) -> f32;
    fn packed_scales(&self) -> &[u8; K_SCALE_BYTES];
    /// Element `i`'s unsigned weight `q`.
    fn quant(&self, i: usize) -> u8;
}

/// ggml's `dequantize_row_q4_K` / `_q5_K` for one super-block (its products are exact, so the order of the
/// operations does not matter).
pub fn dequantize_scaled_minimum<B: ScaledMinimumBlock>(b: &B, out: &mut [f32]) {
    let (d, dmin) = (b.d(), b.dmin());
    for (j, sub) in out[..super::QK_K].chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min(b.packed_scales(), j);
        let (scale, minimum) = (d * sc as f32, dmin * m as f32);
        for (l, y) in sub.iter_mut().enumerate() {
            *y = scale * b.quant(32 * j + l) as f32 - minimum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_bit_fields_are_read_where_ggml_packs_them() {
        // Scale j = j + 1 (+ 32 for odd j), minimum j = 60 - j: every field uses its top bits for some j.
        let sc: [u8; 8] = std::array::from_fn(|j| j as u8 + 1 + 32 * (j as u8 % 2));
        let m: [u8; 8] = std::array::from_fn(|j| 60 - j as u8);
        assert_eq!(scales_mins(&pack_scales_mins(&sc, &m)), (sc, m));
    }
}
