//! IQ4_XS (GGUF type 23): super-blocks of 256 weights in 8 sub-blocks of 32, each with a 6-bit scale, the weights
//! 4-bit indices into IQ4_NL's table: `x = d * (ls_j - 32) * KVALUES_IQ4NL[q]`. Sub-block `j`'s scale `ls_j` is
//! the nibble `j % 2` of `scales_l[j / 2]` (low 4 bits) and bits `2j..2j + 2` of `scales_h` (high 2 bits); its
//! weights are bytes `16j..16j + 16` of `qs`, element i (0..16) in the low nibble of byte i, i+16 in the high one.

use super::iq4_nl::pack_nibbles;
use super::scale_search::{best_index_int8, iq4_group_scale, nearest_int};
use super::{BlockCodec, BlockQuantizer, KVALUES_IQ4NL, QK_K};
use crate::tensor_type::TensorType;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockIq4Xs {
    pub d: f16,
    pub scales_h: u16,
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}

pub const BLOCK_IQ4_XS_BYTES: usize = 136;
const _: () = assert!(std::mem::size_of::<BlockIq4Xs>() == BLOCK_IQ4_XS_BYTES);

/// Sub-block `j`'s signed scale `ls_j - 32` (in [-32, 31]) from a block's `scales_l` and `scales_h`.
#[inline(always)]
pub fn iq4_xs_sub_scale(scales_l: &[u8; QK_K / 64], scales_h: u16, j: usize) -> i32 {
    let low = (scales_l[j / 2] >> (4 * (j % 2))) & 0x0f;
    let high = ((scales_h >> (2 * j)) & 3) as u8;
    (low | (high << 4)) as i32 - 32
}

impl BlockIq4Xs {
    /// Sub-block `j`'s signed scale `ls_j - 32`, in [-32, 31].
    pub fn sub_scale(&self, j: usize) -> i32 {
        iq4_xs_sub_scale(&self.scales_l, self.scales_h, j)
    }

    /// The table level of weight `i` (0..256).
    pub fn level(&self, i: usize) -> i32 {
        let (j, k) = (i / 32, i % 32);
        let byte = self.qs[16 * j + k % 16];
        let nibble = if k < 16 { byte & 0x0f } else { byte >> 4 };
        KVALUES_IQ4NL[nibble as usize] as i32
    }
}

impl BlockQuantizer for BlockIq4Xs {
    /// What llama.cpp's file quantiser writes (`quantize_iq4_xs`, no importance weights): each sub-block's best
    /// scale ([`iq4_group_scale`]), quantised to 6 signed bits against the one of largest magnitude (`d =
    /// -max / 32`), then every weight's nearest level at the scale it will be read with.
    fn quantize(x: &[f32]) -> Self {
        let x = &x[..QK_K];
        let mut levels = [0u8; QK_K];
        let mut scales = [0.0f32; 8];
        let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
        for (ib, scale) in scales.iter_mut().enumerate() {
            let group = &x[32 * ib..32 * ib + 32];
            *scale = iq4_group_scale(&KVALUES_IQ4NL, group, &mut levels[32 * ib..32 * ib + 32])
                .unwrap_or(0.0);
            if scale.abs() > amax_scale {
                amax_scale = scale.abs();
                max_scale = *scale;
            }
        }
        let d = -max_scale / 32.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut block = BlockIq4Xs::zeroed();
        block.d = f16::from_f32(d);
        for (ib, &scale) in scales.iter().enumerate() {
            let l = nearest_int(id * scale).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for (level, &v) in levels[32 * ib..32 * ib + 32]
                .iter_mut()
                .zip(&x[32 * ib..32 * ib + 32])
            {
                *level = best_index_int8(&KVALUES_IQ4NL, idl * v);
            }
            let l = (l + 32) as u8;
            block.scales_l[ib / 2] |= (l & 0x0f) << (4 * (ib % 2));
            block.scales_h |= ((l >> 4) as u16) << (2 * ib);
        }
        for (i, chunk) in block.qs.chunks_exact_mut(16).enumerate() {
            chunk.copy_from_slice(&pack_nibbles(&levels[32 * i..32 * i + 32]));
        }
        block
    }
}

impl BlockCodec for BlockIq4Xs {
    const TENSOR_TYPE: TensorType = TensorType::IQ4_XS;
    const ELEMENTS: usize = QK_K;

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, sub) in out[..QK_K].chunks_exact_mut(32).enumerate() {
            let dl = d * self.sub_scale(j) as f32;
            for (k, v) in sub.iter_mut().enumerate() {
                *v = dl * self.level(32 * j + k) as f32;
            }
        }
    }
}
