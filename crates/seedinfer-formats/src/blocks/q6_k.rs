//! Q6_K (GGUF type 14): 256 weights in sixteen sub-blocks of 16, `x = d * sc_j * (q - 32)` with 6-bit `q` and
//! signed 8-bit sub-block scales `sc_j` (6.5625 bits per weight).

use super::{BlockCodec, QK_K};
use crate::tensor_type::TensorType;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ6_K {
    /// Low four bits. In each half `h` of 128 elements, element `128h + 32k + l` (k = 0..4, l = 0..32) is the
    /// low (k < 2) or high (k >= 2) nibble of byte `64h + 32(k % 2) + l`.
    pub ql: [u8; QK_K / 2],
    /// High two bits: element `128h + 32k + l` is bits `2k..2k + 2` of byte `32h + l`.
    pub qh: [u8; QK_K / 4],
    /// Signed scale of each sub-block of 16 elements.
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

pub const BLOCK_Q6_K_BYTES: usize = 210;
const _: () = assert!(std::mem::size_of::<BlockQ6_K>() == BLOCK_Q6_K_BYTES);

impl BlockQ6_K {
    /// Element `i` (0..256) of the super-block, 0..64 (the weight is `q - 32`).
    #[inline(always)]
    pub fn quant(&self, i: usize) -> u8 {
        let (h, k, l) = (i / 128, (i % 128) / 32, i % 32);
        let byte = self.ql[64 * h + 32 * (k % 2) + l];
        let low = if k < 2 { byte & 0x0f } else { byte >> 4 };
        low | (((self.qh[32 * h + l] >> (2 * k)) & 3) << 4)
    }
}

impl BlockCodec for BlockQ6_K {
    const TENSOR_TYPE: TensorType = TensorType::Q6_K;
    const ELEMENTS: usize = QK_K;

    /// ggml's `dequantize_row_q6_K` (`d * sc` is exact, so `(d * sc) * q` is `d * (sc * q)`).
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, sub) in out[..QK_K].chunks_exact_mut(16).enumerate() {
            let scale = d * self.scales[j] as f32;
            for (l, y) in sub.iter_mut().enumerate() {
                *y = scale * (self.quant(16 * j + l) as i32 - 32) as f32;
            }
        }
    }
}
