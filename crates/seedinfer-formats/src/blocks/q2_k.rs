//! Q2_K (GGUF type 10): 256 weights in sixteen sub-blocks of 16, `x = d * sc_j * q - dmin * m_j` with 2-bit `q`
//! and 4-bit sub-block scales `sc_j` and minimums `m_j` (2.625 bits per weight).

use super::{BlockCodec, QK_K};
use crate::tensor_type::TensorType;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ2_K {
    /// Sub-block `j`'s scale (low nibble) and minimum (high nibble).
    pub scales: [u8; QK_K / 16],
    /// In each half `h` of 128 elements, element `128h + 32k + l` (k = 0..4, l = 0..32) is bits `2k..2k + 2` of
    /// byte `32h + l` (Q6_K's high-bit layout).
    pub qs: [u8; QK_K / 4],
    /// Scale of the sub-block scales.
    pub d: f16,
    /// Scale of the sub-block minimums.
    pub dmin: f16,
}

pub const BLOCK_Q2_K_BYTES: usize = 84;
const _: () = assert!(std::mem::size_of::<BlockQ2_K>() == BLOCK_Q2_K_BYTES);

/// Element `i` (0..256) of a super-block's 2-bit fields laid out as Q2_K's `qs` (and Q3_K's low bits): bits
/// `2k..2k + 2` of byte `32h + l` for `i = 128h + 32k + l`.
#[inline(always)]
pub fn two_bit_field(qs: &[u8; QK_K / 4], i: usize) -> u8 {
    let (h, k, l) = (i / 128, (i % 128) / 32, i % 32);
    (qs[32 * h + l] >> (2 * k)) & 3
}

impl BlockQ2_K {
    /// Element `i` (0..256), 0..4.
    #[inline(always)]
    pub fn quant(&self, i: usize) -> u8 {
        two_bit_field(&self.qs, i)
    }
}

impl BlockCodec for BlockQ2_K {
    const TENSOR_TYPE: TensorType = TensorType::Q2_K;
    const ELEMENTS: usize = QK_K;

    /// ggml's `dequantize_row_q2_K`: `dl * q - ml`, `dl = d * sc_j`, `ml = dmin * m_j`, each rounded.
    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (j, sub) in out[..QK_K].chunks_exact_mut(16).enumerate() {
            let dl = d * (self.scales[j] & 0x0f) as f32;
            let ml = dmin * (self.scales[j] >> 4) as f32;
            for (l, y) in sub.iter_mut().enumerate() {
                *y = dl * self.quant(16 * j + l) as f32 - ml;
            }
        }
    }
}
