//! Q5_1 (GGUF type 7): 32 weights as 5-bit unsigned steps above a minimum, `x = q * d + m`, packed like Q5_0.

use super::q5_0::{five_bits, pack_five_bits};
use super::{f32_to_f16, BlockCodec, BlockQuantizer, QK};
use crate::tensor_type::TensorType;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    /// Bit j (little-endian u32) is the fifth bit of element j.
    pub qh: [u8; 4],
    /// Low four bits, packed like [`super::BlockQ5_0::qs`].
    pub qs: [u8; QK / 2],
}

pub const BLOCK_Q5_1_BYTES: usize = 24;
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == BLOCK_Q5_1_BYTES);

impl BlockCodec for BlockQ5_1 {
    const TENSOR_TYPE: TensorType = TensorType::Q5_1;

    fn dequantize(&self, out: &mut [f32]) {
        let (d, m, qh) = (
            self.d.to_f32(),
            self.m.to_f32(),
            u32::from_le_bytes(self.qh),
        );
        for (j, o) in out.iter_mut().enumerate().take(QK) {
            *o = five_bits(&self.qs, qh, j) as f32 * d + m;
        }
    }
}

impl BlockQuantizer for BlockQ5_1 {
    /// `quantize_row_q5_1_ref` for one block: d = (max - min) / 31, m = min, `q = (uint8_t)((x - min) / d + 0.5)`.
    fn quantize(x: &[f32]) -> Self {
        let (min, max) = super::min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q: [u8; QK] = std::array::from_fn(|j| {
            let v = (x.get(j).copied().unwrap_or(0.0) - min) * id;
            // C's `(uint8_t)` truncation (no clamp: finite input stays within 0..=31); Rust's saturating cast
            // keeps NaN and infinity defined.
            (v + 0.5) as u8
        });
        let (qs, qh) = pack_five_bits(&q);
        BlockQ5_1 {
            d: f32_to_f16(d),
            m: f32_to_f16(min),
            qh,
            qs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_min_and_range_over_31_steps() {
        let x: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 * 0.5).collect(); // 1 ..= 16.5
        let b = BlockQ5_1::quantize(&x);
        assert_eq!(b.m.to_f32(), 1.0);
        assert_eq!(b.d.to_f32(), f32_to_f16(15.5 / 31.0).to_f32());
        let qh = u32::from_le_bytes(b.qh);
        assert_eq!(five_bits(&b.qs, qh, 0), 0);
        assert_eq!(five_bits(&b.qs, qh, 31), 31);
        assert_eq!(five_bits(&b.qs, qh, 16), 16);
    }
}
