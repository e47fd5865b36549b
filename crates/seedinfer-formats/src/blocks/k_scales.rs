//! The packed sub-block scales and minimums shared by Q4_K and Q5_K: eight 6-bit scales and eight 6-bit minimums
//! in 12 bytes (ggml's `get_scale_min_k4`).

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
        let mut packed = [0u8; K_SCALE_BYTES];
        for j in 0..4 {
            packed[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            packed[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            packed[j + 8] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
        }
        assert_eq!(scales_mins(&packed), (sc, m));
    }
}
