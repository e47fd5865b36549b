//! Q5_0 weights (`x = (q - 16) * d`, 5-bit: four bits packed like Q4_0 plus one bit per weight in a 32-bit word)
//! times Q8_0 activations.

use super::row_quads::{interleave_chunks, row_of_chunks, RowQuad, QUAD};
use super::{Activations, Q8Block, QuadFormat, QuadKernel, BLOCK};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use half::f16;
use seedinfer_formats::blocks::five_bits;
use seedinfer_formats::BlockQ5_0;

/// Block `i` of four consecutive Q5_0 rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadQ5_0 {
    pub d: [f16; QUAD],
    /// Row `r`'s fifth bits: bit `j` is element `j`'s.
    pub qh: [u32; QUAD],
    /// `qs[4h + r]`: bytes `8h..8h + 8` of row `r`'s packed low nibbles.
    pub qs: [[u8; 8]; 2 * QUAD],
}

const _: () = assert!(std::mem::size_of::<QuadQ5_0>() == QUAD * std::mem::size_of::<BlockQ5_0>());

impl RowQuad for QuadQ5_0 {
    type Block = BlockQ5_0;
    fn from_blocks(b: [&BlockQ5_0; QUAD]) -> Self {
        Self {
            d: b.map(|b| b.d),
            qh: b.map(|b| u32::from_le_bytes(b.qh)),
            qs: interleave_chunks(b.map(|b| &b.qs)),
        }
    }
    fn block(&self, lane: usize) -> BlockQ5_0 {
        BlockQ5_0 {
            d: self.d[lane],
            qh: self.qh[lane].to_le_bytes(),
            qs: row_of_chunks(&self.qs, lane),
        }
    }
}

impl QuadFormat for QuadQ5_0 {
    const ACTIVATIONS: Activations = Activations::Q8_0;
    type Input = Q8Block;

    #[inline(always)]
    fn dot_scalar(w: impl Iterator<Item = BlockQ5_0>, x: &[Q8Block]) -> f32 {
        let mut acc = 0.0f32;
        for (b, a) in w.zip(x) {
            let qh = u32::from_le_bytes(b.qh);
            let sum: i32 = (0..BLOCK)
                .map(|j| (five_bits(&b.qs, qh, j) as i32 - 16) * a.qs[j] as i32)
                .sum();
            acc += b.d.to_f32() * a.d * sum as f32;
        }
        acc
    }

    fn scales_are_finite(&self) -> bool {
        self.d.iter().all(|d| d.is_finite())
    }

    fn kernel(isa: Isa) -> Option<(Isa, QuadKernel<Self>)> {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some((Isa::Avx512, crate::x86_avx512::quads::quads::<Self>)),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => Some((Isa::AvxVnni, crate::x86_avx2::quads::quads_vnni::<Self>)),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some((Isa::Avx2, crate::x86_avx2::quads::quads::<Self>)),
            _ => None,
        }
    }
}
