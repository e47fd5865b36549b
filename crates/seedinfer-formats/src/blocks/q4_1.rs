//! Q4_1 (GGUF type 3): 32 weights as 4-bit unsigned steps above a minimum, `x = q * d + m`.

use super::{f32_to_f16, nibble_from, BlockCodec, BlockQuantizer, QK};
use crate::tensor_type::TensorType;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    /// Same nibble layout as [`super::BlockQ4_0::qs`].
    pub qs: [u8; QK / 2],
}

pub const BLOCK_Q4_1_BYTES: usize = 20;
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == BLOCK_Q4_1_BYTES);

impl BlockCodec for BlockQ4_1 {
    const TENSOR_TYPE: TensorType = TensorType::Q4_1;

    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        let (low, high) = out.split_at_mut(QK / 2);
        for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(&self.qs) {
            *lo = (q & 0x0f) as f32 * d + m;
            *hi = (q >> 4) as f32 * d + m;
        }
    }
}

impl BlockQuantizer for BlockQ4_1 {
    /// `quantize_row_q4_1_ref` for one block: d = (max - min) / 15, m = min.
    fn quantize(x: &[f32]) -> Self {
        let (min, max) = super::min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut block = BlockQ4_1 {
            d: f32_to_f16(d),
            m: f32_to_f16(min),
            qs: [0; QK / 2],
        };
        for (j, q) in block.qs.iter_mut().enumerate() {
            let x0 = (x.get(j).copied().unwrap_or(0.0) - min) * id;
            let x1 = (x.get(j + QK / 2).copied().unwrap_or(0.0) - min) * id;
            *q = nibble_from(x0 + 0.5) | (nibble_from(x1 + 0.5) << 4);
        }
        block
    }
}

/// `quantize_row_q4_1_ref` for one block (see [`BlockQuantizer::quantize`]).
pub fn quantize_block_q4_1(x: &[f32]) -> BlockQ4_1 {
    BlockQ4_1::quantize(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_min_and_range() {
        let x: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 * 0.5).collect(); // 1 ..= 16.5
        let b = quantize_block_q4_1(&x);
        assert_eq!(b.m.to_f32(), 1.0);
        assert_eq!(b.d.to_f32(), f32_to_f16(15.5 / 15.0).to_f32());
        assert_eq!(b.qs[0] & 0x0f, 0);
        assert_eq!(b.qs[15] >> 4, 15); // element 31 is the max
    }
}
