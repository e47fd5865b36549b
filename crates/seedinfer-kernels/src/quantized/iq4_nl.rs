//! IQ4_NL weights (`x = KVALUES_IQ4NL[q] * d`, 4-bit indices into a 16-level table) times Q8_0 activations.

use super::row_quads::{interleave_chunks, row_of_chunks, RowQuad, QUAD};
use super::{Activations, Q8Block, QuadFormat, QuadKernel, BLOCK};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use half::f16;
use seedinfer_formats::blocks::{BlockIq4Nl, KVALUES_IQ4NL};

/// Block `i` of four consecutive IQ4_NL rows (bytes as Q4_0's quad).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadIq4Nl {
    pub d: [f16; QUAD],
    /// `qs[4h + r]`: bytes `8h..8h + 8` of row `r`'s packed nibbles.
    pub qs: [[u8; 8]; 2 * QUAD],
}

const _: () = assert!(std::mem::size_of::<QuadIq4Nl>() == QUAD * std::mem::size_of::<BlockIq4Nl>());

impl RowQuad for QuadIq4Nl {
    type Block = BlockIq4Nl;
    fn from_blocks(b: [&BlockIq4Nl; QUAD]) -> Self {
        Self {
            d: b.map(|b| b.d),
            qs: interleave_chunks(b.map(|b| &b.qs)),
        }
    }
    fn block(&self, lane: usize) -> BlockIq4Nl {
        BlockIq4Nl {
            d: self.d[lane],
            qs: row_of_chunks(&self.qs, lane),
        }
    }
}

impl QuadFormat for QuadIq4Nl {
    const ACTIVATIONS: Activations = Activations::Q8_0;
    type Input = Q8Block;

    #[inline(always)]
    fn dot_scalar(w: impl Iterator<Item = BlockIq4Nl>, x: &[Q8Block]) -> f32 {
        let mut acc = 0.0f32;
        for (b, a) in w.zip(x) {
            let mut sum = 0i32;
            for j in 0..BLOCK / 2 {
                let lo = KVALUES_IQ4NL[(b.qs[j] & 0x0f) as usize] as i32;
                let hi = KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as i32;
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
