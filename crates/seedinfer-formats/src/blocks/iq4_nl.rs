//! IQ4_NL (GGUF type 20): 32 weights as 4-bit indices into a fixed non-linear table of 16 int8 values,
//! `x = KVALUES_IQ4NL[q] * d`. The nibbles are packed as Q4_0's: element j (0..16) in the low nibble of `qs[j]`,
//! element j+16 in the high nibble.

use super::scale_search::{best_index_int8, iq4_group_scale};
use super::{BlockCodec, BlockQuantizer, QK};
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

/// 32 table indices packed two to a byte: element j (0..16) in the low nibble of byte j, j + 16 in the high one.
pub(super) fn pack_nibbles(levels: &[u8]) -> [u8; QK / 2] {
    let mut qs = [0u8; QK / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        *q = levels[j] | (levels[j + 16] << 4);
    }
    qs
}

impl BlockQuantizer for BlockIq4Nl {
    /// What llama.cpp's file quantiser writes (`quantize_iq4_nl`, no importance weights): the best of the trial
    /// scales of [`iq4_group_scale`], then every weight's nearest level at that scale (an all-zero block: scale 0,
    /// every index the level nearest 0).
    fn quantize(x: &[f32]) -> Self {
        let x = &x[..QK];
        let mut levels = [0u8; QK];
        let d = iq4_group_scale(&KVALUES_IQ4NL, x, &mut levels).unwrap_or(0.0);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (l, &v) in levels.iter_mut().zip(x) {
            *l = best_index_int8(&KVALUES_IQ4NL, id * v);
        }
        BlockIq4Nl {
            d: f16::from_f32(d),
            qs: pack_nibbles(&levels),
        }
    }
}

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
