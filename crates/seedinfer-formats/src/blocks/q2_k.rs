//! Q2_K (GGUF type 10): 256 weights in sixteen sub-blocks of 16, `x = d * sc_j * q - dmin * m_j` with 2-bit `q`
//! and 4-bit sub-block scales `sc_j` and minimums `m_j` (2.625 bits per weight).

use super::scale_search::{make_qkx2_quants, nearest_int, requantize_with_minimum, Qkx2Search};
use super::{BlockCodec, BlockQuantizer, QK_K};
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

/// The 2-bit fields of `levels` (each 0..4) packed as Q2_K's `qs` ([`two_bit_field`] reads them back).
pub(super) fn pack_two_bit_fields(levels: &[u8; QK_K]) -> [u8; QK_K / 4] {
    let mut qs = [0u8; QK_K / 4];
    for (i, byte) in qs.iter_mut().enumerate() {
        let (j, l) = (128 * (i / 32), i % 32);
        *byte = levels[j + l]
            | (levels[j + l + 32] << 2)
            | (levels[j + l + 64] << 4)
            | (levels[j + l + 96] << 6);
    }
    qs
}

impl BlockQuantizer for BlockQ2_K {
    /// `quantize_row_q2_K_ref` for one super-block: per sub-block of 16 a `make_qkx2_quants` search (weights
    /// `|x|`, absolute error), the scales and minimums quantised to 4 bits against the largest of each, then every
    /// weight re-quantised with the scale and minimum it will be read with (a sub-block whose scale became 0 keeps
    /// its search's levels).
    fn quantize(x: &[f32]) -> Self {
        let x = &x[..QK_K];
        let search = Qkx2Search {
            nmax: 3,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        let mut levels = [0u8; QK_K];
        let (mut scales, mut mins) = ([0.0f32; 16], [0.0f32; 16]);
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for j in 0..16 {
            let group = &x[16 * j..16 * j + 16];
            let mut weights = [0.0f32; 16];
            for (w, &v) in weights.iter_mut().zip(group) {
                *w = v.abs();
            }
            (scales[j], mins[j]) =
                make_qkx2_quants(&search, group, &weights, &mut levels[16 * j..16 * j + 16]);
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let mut block = BlockQ2_K::zeroed();
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for (packed, &scale) in block.scales.iter_mut().zip(&scales) {
                *packed = nearest_int(iscale * scale) as u8;
            }
            block.d = f16::from_f32(max_scale / 15.0);
        }
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for (packed, &min) in block.scales.iter_mut().zip(&mins) {
                *packed |= (nearest_int(iscale * min) << 4) as u8;
            }
            block.dmin = f16::from_f32(max_min / 15.0);
        }
        for j in 0..16 {
            let d = block.d.to_f32() * (block.scales[j] & 0x0f) as f32;
            let dm = block.dmin.to_f32() * (block.scales[j] >> 4) as f32;
            let group = 16 * j..16 * j + 16;
            requantize_with_minimum(&x[group.clone()], d, dm, 3, &mut levels[group]);
        }
        block.qs = pack_two_bit_fields(&levels);
        block
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
