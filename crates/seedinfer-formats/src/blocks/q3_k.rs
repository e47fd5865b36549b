//! Q3_K (GGUF type 11): 256 weights in sixteen sub-blocks of 16, `x = d * (sc_j - 32) * q` with 3-bit signed
//! `q` in -4..4 and 6-bit sub-block scales `sc_j` (3.4375 bits per weight).

use super::q2_k::{pack_two_bit_fields, two_bit_field};
use super::scale_search::{make_q3_quants, nearest_int, requantize_signed};
use super::{BlockCodec, BlockQuantizer, QK_K};
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

impl BlockQuantizer for BlockQ3_K {
    /// `quantize_row_q3_K_ref` for one super-block: per sub-block of 16 a `make_q3_quants` search, the signed
    /// scales quantised to 6 bits against the one of largest magnitude, then every weight re-quantised with the
    /// scale it will be read with (a sub-block whose scale became 0 keeps its search's levels).
    fn quantize(x: &[f32]) -> Self {
        let x = &x[..QK_K];
        let mut levels = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
        for j in 0..16 {
            scales[j] =
                make_q3_quants(4, &x[16 * j..16 * j + 16], &mut levels[16 * j..16 * j + 16]);
            if scales[j].abs() > amax {
                amax = scales[j].abs();
                max_scale = scales[j];
            }
        }
        let mut block = BlockQ3_K::zeroed();
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &scale) in scales.iter().enumerate() {
                let l = ((nearest_int(iscale * scale) as i8).clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    block.scales[j] = l & 0x0f;
                } else {
                    block.scales[j - 8] |= (l & 0x0f) << 4;
                }
                block.scales[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
            }
            block.d = f16::from_f32(1.0 / iscale);
        }
        for j in 0..16 {
            let group = 16 * j..16 * j + 16;
            let d = block.d.to_f32() * block.sub_scale(j) as f32;
            requantize_signed(&x[group.clone()], d, 4, &mut levels[group]);
        }
        // Levels 4..8 keep their high bit in `hmask` (element j: bit j / 32 of byte j % 32), the rest in `qs`.
        let mut low = [0u8; QK_K];
        for (j, (&l, low)) in levels.iter().zip(low.iter_mut()).enumerate() {
            let l = l as u8;
            if l > 3 {
                block.hmask[j % 32] |= 1 << (j / 32);
            }
            *low = if l > 3 { l - 4 } else { l };
        }
        block.qs = pack_two_bit_fields(&low);
        block
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
