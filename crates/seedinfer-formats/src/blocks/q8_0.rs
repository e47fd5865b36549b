//! Q8_0 (GGUF type 8): 32 weights as signed bytes, `x = q * d`.

use super::{f32_to_f16, BlockCodec, BlockQuantizer, QK};
use crate::tensor_type::TensorType;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

pub const BLOCK_Q8_0_BYTES: usize = 34;
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == BLOCK_Q8_0_BYTES);

impl BlockCodec for BlockQ8_0 {
    const TENSOR_TYPE: TensorType = TensorType::Q8_0;

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (x, &q) in out.iter_mut().zip(&self.qs) {
            *x = q as f32 * d;
        }
    }
}

impl BlockQuantizer for BlockQ8_0 {
    /// `quantize_row_q8_0_ref` for one block: d = amax / 127, q = roundf(x / d) (round half away from zero,
    /// which is what Rust's `f32::round` does too).
    fn quantize(x: &[f32]) -> Self {
        let mut amax = 0.0f32;
        for &v in x.iter().take(QK) {
            // MAX(a, b) in C is `a > b ? a : b`.
            let abs = v.abs();
            amax = if amax > abs { amax } else { abs };
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut block = BlockQ8_0 {
            d: f32_to_f16(d),
            qs: [0; QK],
        };
        for (q, &v) in block.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        block
    }
}

/// `quantize_row_q8_0_ref` for one block (see [`BlockQuantizer::quantize`]).
pub fn quantize_block_q8_0(x: &[f32]) -> BlockQ8_0 {
    BlockQ8_0::quantize(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_and_rounding() {
        let mut x = vec![0.0f32; 32];
        x[0] = -127.0;
        x[1] = 2.5; // round half away from zero -> 3
        x[2] = -2.5; // -> -3
        x[3] = 1.4;
        let b = quantize_block_q8_0(&x);
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!(&b.qs[..4], &[-127, 3, -3, 1]);
    }
}
