//! IQ4_NL (GGUF type 20): 32 weights as 4-bit indices into a fixed non-linear table of 16 int8 values,
//! `x = KVALUES_IQ4NL[q] * d`. The nibbles are packed as Q4_0's: element j (0..16) in the low nibble of `qs[j]`,
//! element j+16 in the high nibble.

use super::{BlockCodec, QK};
use crate::tensor_type::TensorType;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// ggml's `kvalues_iq4nl`: the 16 levels, denser near zero where weights are.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockIq4Nl {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

pub const BLOCK_IQ4_NL_BYTES: usize = 18;
const _: () = assert!(std::mem::size_of::<BlockIq4Nl>() == BLOCK_IQ4_NL_BYTES);

impl BlockCodec for BlockIq4Nl {
    const TENSOR_TYPE: TensorType = TensorType::IQ4_NL;

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let (low, high) = out.split_at_mut(QK / 2);
        for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(&self.qs) {
            *lo = d * KVALUES_IQ4NL[(q & 0x0f) as usize] as f32;
            *hi = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
        }
    }
}
