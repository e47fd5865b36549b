//! Q4_0 weights (`x = (q - 8) * d`, 4-bit) times Q8_0 activations.

use super::row_quads::{interleave_chunks, row_of_chunks, RowQuad, QUAD};
use super::{Activations, Q8Block, QuadFormat, QuadKernel, BLOCK};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use half::f16;
use seedinfer_formats::BlockQ4_0;

/// Block `i` of four consecutive Q4_0 rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadQ4_0 {
    pub d: [f16; QUAD],
    /// `qs[4h + r]`: bytes `8h..8h + 8` of row `r`'s packed nibbles.
    pub qs: [[u8; 8]; 2 * QUAD],
}

const _: () = assert!(std::mem::size_of::<QuadQ4_0>() == QUAD * std::mem::size_of::<BlockQ4_0>());

impl RowQuad for QuadQ4_0 {
    type Block = BlockQ4_0;
    fn from_blocks(b: [&BlockQ4_0; QUAD]) -> Self {
        Self {
            d: b.map(|b| b.d),
            qs: interleave_chunks(b.map(|b| &b.qs)),
        }
    }
    fn block(&self, lane: usize) -> BlockQ4_0 {
        BlockQ4_0 {
            d: self.d[lane],
            qs: row_of_chunks(&self.qs, lane),
        }
    }
}

impl QuadFormat for QuadQ4_0 {
    const ACTIVATIONS: Activations = Activations::Q8_0;
    type Input = Q8Block;

    #[inline(always)]
    fn dot_scalar(w: impl Iterator<Item = BlockQ4_0>, x: &[Q8Block]) -> f32 {
        let mut acc = 0.0f32;
        for (b, a) in w.zip(x) {
            let mut sum = 0i32;
            for j in 0..BLOCK / 2 {
                let (lo, hi) = ((b.qs[j] & 0x0f) as i32 - 8, (b.qs[j] >> 4) as i32 - 8);
                sum += lo * a.qs[j] as i32 + hi * a.qs[j + BLOCK / 2] as i32;
            }
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
