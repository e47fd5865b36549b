//! Q5_K (GGUF type 13): Q4_K with a fifth bit per weight, `x = d * sc_j * q - dmin * m_j` with 5-bit `q`
//! (5.5 bits per weight).

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
pub struct BlockQ5_K {
    pub d: f16,
    pub dmin: f16,
    /// As [`super::BlockQ4_K::scales`].
    pub scales: [u8; K_SCALE_BYTES],
    /// Bit `j` of `qh[l]` is the fifth bit of element `32j + l`.
    pub qh: [u8; QK_K / 8],
    /// The low four bits, packed as [`super::BlockQ4_K::qs`].
    pub qs: [u8; QK_K / 2],
}

pub const BLOCK_Q5_K_BYTES: usize = 176;
const _: () = assert!(std::mem::size_of::<BlockQ5_K>() == BLOCK_Q5_K_BYTES);

impl BlockCodec for BlockQ5_K {
    const TENSOR_TYPE: TensorType = TensorType::Q5_K;
    const ELEMENTS: usize = QK_K;

    /// ggml's `dequantize_row_q5_K`.
    fn dequantize(&self, out: &mut [f32]) {
        dequantize_scaled_minimum(self, out)
    }
}

impl BlockQuantizer for BlockQ5_K {
    /// `quantize_row_q5_K_ref` for one super-block.
    fn quantize(x: &[f32]) -> Self {
        let search = Qkx2Search {
            nmax: 31,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        let q = quantize_scaled_minimum(&x[..QK_K], &search);
        let (mut qs, mut qh) = ([0u8; QK_K / 2], [0u8; QK_K / 8]);
        for (i, byte) in qs.iter_mut().enumerate() {
            let (n, l) = (i / 32, i % 32);
            let (l1, l2) = (q.levels[64 * n + l], q.levels[64 * n + l + 32]);
            *byte = (l1 & 0x0f) | ((l2 & 0x0f) << 4);
            qh[l] |= ((l1 >> 4) << (2 * n)) | ((l2 >> 4) << (2 * n + 1));
        }
        BlockQ5_K {
            d: q.d,
            dmin: q.dmin,
            scales: q.scales,
            qh,
            qs,
        }
    }
}

impl ScaledMinimumBlock for BlockQ5_K {
    fn d(&self) -> f32 {
        self.d.to_f32()
    }
    fn dmin(&self) -> f32 {
        self.dmin.to_f32()
    }
    fn packed_scales(&self) -> &[u8; K_SCALE_BYTES] {
        &self.scales
    }
    /// Element `i` (0..256) of the super-block, 0..32.
    #[inline(always)]
    fn quant(&self, i: usize) -> u8 {
        let (j, l) = (i / 32, i % 32);
        let byte = self.qs[32 * (j / 2) + l];
        let low = if j.is_multiple_of(2) {
            byte & 0x0f
        } else {
            byte >> 4
        };
        low | (((self.qh[l] >> j) & 1) << 4)
    }
}
