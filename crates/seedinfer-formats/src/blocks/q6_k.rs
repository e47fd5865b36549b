//! Q6_K (GGUF type 14): 256 weights in sixteen sub-blocks of 16, `x = d * sc_j * (q - 32)` with 6-bit `q` and
//! signed 8-bit sub-block scales `sc_j` (6.5625 bits per weight).

use super::scale_search::{make_qx_quants, nearest_int, requantize_signed, GROUP_MAX_EPS};
use super::{BlockCodec, BlockQuantizer, QK_K};
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

impl BlockQuantizer for BlockQ6_K {
    /// `quantize_row_q6_K_ref` for one super-block: per sub-block of 16 a `make_qx_quants` search, the signed
    /// scales quantised to 8 bits against the one of largest magnitude, then every weight re-quantised with the
    /// scale it will be read with (a sub-block whose scale became 0 keeps its search's levels).
    fn quantize(x: &[f32]) -> Self {
        let x = &x[..QK_K];
        let mut levels = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for j in 0..16 {
            scales[j] = make_qx_quants(
                32,
                &x[16 * j..16 * j + 16],
                &mut levels[16 * j..16 * j + 16],
            );
            if scales[j].abs() > max_abs_scale {
                max_abs_scale = scales[j].abs();
                max_scale = scales[j];
            }
        }
        let mut block = BlockQ6_K::zeroed();
        if max_abs_scale < GROUP_MAX_EPS {
            return block;
        }
        let iscale = -128.0 / max_scale;
        block.d = f16::from_f32(1.0 / iscale);
        for (packed, &scale) in block.scales.iter_mut().zip(&scales) {
            *packed = nearest_int(iscale * scale).min(127) as i8;
        }
        for j in 0..16 {
            let group = 16 * j..16 * j + 16;
            let d = block.d.to_f32() * block.scales[j] as f32;
            requantize_signed(&x[group.clone()], d, 32, &mut levels[group]);
        }
        for (i, &l) in levels.iter().enumerate() {
            let (h, k, l_in) = (i / 128, (i % 128) / 32, i % 32);
            let l = l as u8;
            block.ql[64 * h + 32 * (k % 2) + l_in] |= (l & 0x0f) << (4 * (k / 2));
            block.qh[32 * h + l_in] |= (l >> 4) << (2 * k);
        }
        block
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
