//! Q5_0 (GGUF type 6): 32 weights as 5-bit signed offsets around 16, `x = (q - 16) * d`. The low four bits of
//! each weight are packed like Q4_0's nibbles; the fifth bits sit in one 32-bit word, bit j for element j.
//! Q4_K_M files use it for matrices whose rows are not a whole number of 256-element super-blocks.

use super::{f32_to_f16, BlockCodec, BlockQuantizer, QK};
use crate::tensor_type::TensorType;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    /// Bit j (little-endian u32) is the fifth bit of element j.
    pub qh: [u8; 4],
    /// Low four bits: element j (0..16) in the low nibble of `qs[j]`, element j+16 in the high nibble.
    pub qs: [u8; QK / 2],
}

pub const BLOCK_Q5_0_BYTES: usize = 22;
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == BLOCK_Q5_0_BYTES);

/// Element `j`'s five bits from the packed nibbles and the fifth-bit word.
#[inline(always)]
pub fn five_bits(qs: &[u8; QK / 2], qh: u32, j: usize) -> u8 {
    let nibble = if j < QK / 2 {
        qs[j] & 0x0f
    } else {
        qs[j - QK / 2] >> 4
    };
    nibble | ((((qh >> j) & 1) as u8) << 4)
}

/// Packs 32 five-bit values as the nibbles and the fifth-bit word of a Q5 block.
pub(super) fn pack_five_bits(q: &[u8; QK]) -> ([u8; QK / 2], [u8; 4]) {
    let mut qs = [0u8; QK / 2];
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let (x0, x1) = (q[j], q[j + QK / 2]);
        qs[j] = (x0 & 0x0f) | ((x1 & 0x0f) << 4);
        qh |= (((x0 & 0x10) >> 4) as u32) << j;
        qh |= (((x1 & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    (qs, qh.to_le_bytes())
}

impl BlockCodec for BlockQ5_0 {
    const TENSOR_TYPE: TensorType = TensorType::Q5_0;

    fn dequantize(&self, out: &mut [f32]) {
        let (d, qh) = (self.d.to_f32(), u32::from_le_bytes(self.qh));
        for (j, o) in out.iter_mut().enumerate().take(QK) {
            *o = (five_bits(&self.qs, qh, j) as i32 - 16) as f32 * d;
        }
    }
}

impl BlockQuantizer for BlockQ5_0 {
    /// `quantize_row_q5_0_ref` for one block: d = max / -16 with the signed element of largest magnitude, and
    /// `q = MIN(31, (int8_t)(x / d + 16.5))`.
    fn quantize(x: &[f32]) -> Self {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x.iter().take(QK) {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q: [u8; QK] = std::array::from_fn(|j| {
            let v = x.get(j).copied().unwrap_or(0.0) * id;
            // C's `(int8_t)` truncation, then `MIN(31, ..)` into a `uint8_t`.
            ((v + 16.5) as i8).min(31) as u8
        });
        let (qs, qh) = pack_five_bits(&q);
        BlockQ5_0 {
            d: f32_to_f16(d),
            qh,
            qs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_maximum_maps_to_minus_16_and_bits_round_trip() {
        let mut x: Vec<f32> = (0..32).map(|i| (i as f32 - 15.0) * 0.1).collect();
        x[9] = -3.2; // largest magnitude: d = 0.2
        let b = BlockQ5_0::quantize(&x);
        assert_eq!(b.d.to_f32(), f32_to_f16(0.2).to_f32());
        let qh = u32::from_le_bytes(b.qh);
        assert_eq!(five_bits(&b.qs, qh, 9), 0);
        let mut out = [0.0f32; 32];
        b.dequantize(&mut out);
        for (o, v) in out.iter().zip(&x) {
            assert!((o - v).abs() <= 0.1 + 1e-3, "{o} vs {v}");
        }
    }
}
