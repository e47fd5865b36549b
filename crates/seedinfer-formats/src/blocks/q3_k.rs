//! Q3_K (GGUF type 11): 256 weights in sixteen sub-blocks of 16, `x = d * (sc_j - 32) * q` with 3-bit signed
//! `q` in -4..4 and 6-bit sub-block scales `sc_j` (3.4375 bits per weight).

use super::q2_k::two_bit_field;
use super::{BlockCodec, QK_K};
use crate::tensor_type::TensorType;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ3_K {
    /// High bits: element `128h + 32k + l` (k = 0..4, l = 0..32) has its high bit in bit `4h + k` of byte `l`;
    /// a clear bit means `q = low - 4`, a set one `q = low`.
    pub hmask: [u8; QK_K / 8],
    /// Low two bits, laid out as Q2_K's `qs` ([`super::two_bit_field`]).
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales ([`q3_k_scale`]).
    pub scales: [u8; 12],
    pub d: f16,
}

pub const BLOCK_Q3_K_BYTES: usize = 110;
const _: () = assert!(std::mem::size_of::<BlockQ3_K>() == BLOCK_Q3_K_BYTES);

/// Sub-block `j`'s (0..16) signed scale `sc_j - 32`, in -32..32: the low four bits are nibble `j / 8` of byte
/// `j % 8`, the high two bits `2 (j / 4)..2 (j / 4) + 2` of byte `8 + j % 4` (ggml's `kmask` unpacking).
#[inline(always)]
pub fn q3_k_scale(packed: &[u8; 12], j: usize) -> i32 {
    let low = (packed[j % 8] >> (4 * (j / 8))) & 0x0f;
    let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

impl BlockQ3_K {
    /// Element `i` (0..256), in -4..4.
    #[inline(always)]
    pub fn quant(&self, i: usize) -> i32 {
        let (h, k, l) = (i / 128, (i % 128) / 32, i % 32);
        let high = (self.hmask[l] >> (4 * h + k)) & 1;
        two_bit_field(&self.qs, i) as i32 - if high == 0 { 4 } else { 0 }
    }

    /// Sub-block `j`'s signed scale.
    pub fn sub_scale(&self, j: usize) -> i32 {
        q3_k_scale(&self.scales, j)
    }
}

impl BlockCodec for BlockQ3_K {
    const TENSOR_TYPE: TensorType = TensorType::Q3_K;
    const ELEMENTS: usize = QK_K;

    /// ggml's `dequantize_row_q3_K`: `(d * (sc_j - 32)) * q`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, sub) in out[..QK_K].chunks_exact_mut(16).enumerate() {
            let dl = d * self.sub_scale(j) as f32;
            for (l, y) in sub.iter_mut().enumerate() {
                *y = dl * self.quant(16 * j + l) as f32;
            }
        }
    }
}
