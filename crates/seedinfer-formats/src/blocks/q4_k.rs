//! Q4_K (GGUF type 12): 256 weights in eight sub-blocks of 32, `x = d * sc_j * q - dmin * m_j` with 4-bit `q`
//! and 6-bit sub-block scales `sc_j` and minimums `m_j` (4.5 bits per weight).

use super::k_scales::{
    dequantize_scaled_minimum, quantize_scaled_minimum, ScaledMinimumBlock, K_SCALE_BYTES,
};
use super::scale_search::Qkx2Search;
use super::{BlockCodec, BlockQuantizer, QK_K};
use crate::tensor_type::TensorType;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_K {
    /// Scale of the sub-block scales.
    pub d: f16,
    /// Scale of the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums ([`super::k_scales::scale_min`]).
    pub scales: [u8; K_SCALE_BYTES],
    /// Sub-blocks `2i` and `2i + 1` are the low and the high nibbles of bytes `32i..32i + 32`.
    pub qs: [u8; QK_K / 2],
}

pub const BLOCK_Q4_K_BYTES: usize = 144;
const _: () = assert!(std::mem::size_of::<BlockQ4_K>() == BLOCK_Q4_K_BYTES);

impl BlockCodec for BlockQ4_K {
    const TENSOR_TYPE: TensorType = TensorType::Q4_K;
    const ELEMENTS: usize = QK_K;

    /// ggml's `dequantize_row_q4_K`.
    fn dequantize(&self, out: &mut [f32]) {
        dequantize_scaled_minimum(self, out)
    }
}

impl BlockQuantizer for BlockQ4_K {
    /// `quantize_row_q4_K_ref` for one super-block.
    fn quantize(x: &[f32]) -> Self {
        let search = Qkx2Search {
            nmax: 15,
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let q = quantize_scaled_minimum(&x[..QK_K], &search);
        let mut qs = [0u8; QK_K / 2];
        for (i, byte) in qs.iter_mut().enumerate() {
            let (j, l) = (64 * (i / 32), i % 32);
            *byte = q.levels[j + l] | (q.levels[j + l + 32] << 4);
        }
        BlockQ4_K {
            d: q.d,
            dmin: q.dmin,
            scales: q.scales,
            qs,
        }
    }
}

impl ScaledMinimumBlock for BlockQ4_K {
    fn d(&self) -> f32 {
        self.d.to_f32()
    }
    fn dmin(&self) -> f32 {
        self.dmin.to_f32()
    }
    fn packed_scales(&self) -> &[u8; K_SCALE_BYTES] {
        &self.scales
    }
    /// Element `i` (0..256) of the super-block, 0..16.
    #[inline(always)]
    fn quant(&self, i: usize) -> u8 {
        let byte = self.qs[32 * (i / 64) + i % 32];
        if (i / 32).is_multiple_of(2) {
            byte & 0x0f
        } else {
            byte >> 4
        }
    }
}
