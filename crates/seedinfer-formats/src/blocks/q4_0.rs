//! Q4_0 (GGUF type 2): 32 weights as 4-bit signed offsets around 8, `x = (q - 8) * d`.

use super::{f32_to_f16, nibble_from, BlockCodec, BlockQuantizer, QK};
use crate::tensor_type::TensorType;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    /// Element j (0..16) in the low nibble of `qs[j]`, element j+16 in the high nibble.
    pub qs: [u8; QK / 2],
}

pub const BLOCK_Q4_0_BYTES: usize = 18;
// The on-disk layout is fixed by ggml; any padding would silently break files.
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == BLOCK_Q4_0_BYTES);

impl BlockCodec for BlockQ4_0 {
    const TENSOR_TYPE: TensorType = TensorType::Q4_0;

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let (low, high) = out.split_at_mut(QK / 2);
        for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(&self.qs) {
            *lo = ((q & 0x0f) as i32 - 8) as f32 * d;
            *hi = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

impl BlockQuantizer for BlockQ4_0 {
    /// `quantize_row_q4_0_ref` for one block: the scale comes from the element with the largest magnitude
    /// *keeping its sign* (d = max / -8), so that element maps exactly to -8 and the asymmetric range [-8, 7] is
    /// used fully.
    fn quantize(x: &[f32]) -> Self {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x.iter().take(QK) {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut block = BlockQ4_0 {
            d: f32_to_f16(d),
            qs: [0; QK / 2],
        };
        for (j, q) in block.qs.iter_mut().enumerate() {
            let x0 = x.get(j).copied().unwrap_or(0.0) * id;
            let x1 = x.get(j + QK / 2).copied().unwrap_or(0.0) * id;
            *q = nibble_from(x0 + 8.5) | (nibble_from(x1 + 8.5) << 4);
        }
        block
    }
}

/// `quantize_row_q4_0_ref` for one block (see [`BlockQuantizer::quantize`]).
pub fn quantize_block_q4_0(x: &[f32]) -> BlockQ4_0 {
    BlockQ4_0::quantize(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::dequantize_row;

    #[test]
    fn scale_comes_from_signed_max_magnitude() {
        let mut x = vec![0.5f32; 32];
        x[3] = -4.0; // largest magnitude, negative
        x[20] = 3.0;
        let b = quantize_block_q4_0(&x);
        assert_eq!(b.d.to_f32(), 0.5); // -4 / -8
                                       // -4 * (1/0.5) + 8.5 = 0.5 -> 0; low nibble of qs[3]
        assert_eq!(b.qs[3] & 0x0f, 0);
        // element 20 = high nibble of qs[4]: 3*2 + 8.5 = 14.5 -> 14
        assert_eq!(b.qs[4] >> 4, 14);
        let mut out = vec![0.0; 32];
        dequantize_row(TensorType::Q4_0, bytemuck::bytes_of(&b), &mut out).unwrap();
        assert_eq!(out[3], -4.0);
        assert_eq!(out[20], 3.0);

        // Positive max maps to -8 as well (d negative), which is ggml's quirk.
        let mut y = vec![0.0f32; 32];
        y[0] = 8.0;
        let b = quantize_block_q4_0(&y);
        assert_eq!(b.d.to_f32(), -1.0);
        assert_eq!(b.qs[0] & 0x0f, 0);
        assert_eq!(b.qs[1] & 0x0f, 8); // zero -> 8
    }

    #[test]
    fn clamps_to_15() {
        // max magnitude -1 -> d = 0.125, id = 8; +1 maps to 8 + 8.5 = 16.5 -> clamp 15.
        let mut x = vec![0.0f32; 32];
        x[0] = -1.0;
        x[1] = 1.0;
        let b = quantize_block_q4_0(&x);
        assert_eq!(b.qs[1] & 0x0f, 15);
    }
}
