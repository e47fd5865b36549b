//! Q5_K weights (Q4_K with a fifth bit per weight) times Q8_K activations.

use super::q4_k::dot_scaled_minimum;
use super::row_quads::{interleave_chunks, row_of_chunks, RowQuad, QUAD};
use super::{Activations, Q8KBlock, QuadFormat, QuadKernel};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use half::f16;
use seedinfer_formats::blocks::K_SCALE_BYTES;
use seedinfer_formats::{BlockQ5_K, QK_K};

/// Super-block `i` of four consecutive Q5_K rows: their scales as stored, their fifth bits and their packed
/// nibbles interleaved by 8-byte chunk (`row_quads`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadQ5_K {
    pub d: [f16; QUAD],
    pub dmin: [f16; QUAD],
    pub scales: [[u8; K_SCALE_BYTES]; QUAD],
    /// `qh[4c + r]`: bytes `8c..8c + 8` of row `r`'s fifth-bit bytes.
    pub qh: [[u8; 8]; QK_K / 64 * QUAD],
    /// `qs[4c + r]`: bytes `8c..8c + 8` of row `r`'s packed nibbles.
    pub qs: [[u8; 8]; QK_K / 16 * QUAD],
}

const _: () = assert!(std::mem::size_of::<QuadQ5_K>() == QUAD * std::mem::size_of::<BlockQ5_K>());

impl RowQuad for QuadQ5_K {
    type Block = BlockQ5_K;
    fn from_blocks(b: [&BlockQ5_K; QUAD]) -> Self {
        Self {
            d: b.map(|b| b.d),
            dmin: b.map(|b| b.dmin),
            scales: b.map(|b| b.scales),
            qh: interleave_chunks(b.map(|b| &b.qh)),
            qs: interleave_chunks(b.map(|b| &b.qs)),
        }
    }
    fn block(&self, lane: usize) -> BlockQ5_K {
        BlockQ5_K {
            d: self.d[lane],
            dmin: self.dmin[lane],
            scales: self.scales[lane],
            qh: row_of_chunks(&self.qh, lane),
            qs: row_of_chunks(&self.qs, lane),
        }
    }
}

impl QuadFormat for QuadQ5_K {
    const ACTIVATIONS: Activations = Activations::Q8K;
    type Input = Q8KBlock;

    fn dot_scalar(w: impl Iterator<Item = BlockQ5_K>, x: &[Q8KBlock]) -> f32 {
        dot_scaled_minimum(w, x)
    }

    fn scales_are_finite(&self) -> bool {
        self.d.iter().chain(&self.dmin).all(|d| d.is_finite())
    }

    fn kernel(isa: Isa) -> Option<(Isa, QuadKernel<Self>)> {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some((Isa::Avx512, crate::x86_avx512::k_quants::chunk_rows::<Self>)),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::AvxVnni => {
                Some((Isa::Avx2, crate::x86_avx2::k_quants::chunk_rows::<Self>))
            }
            _ => None,
        }
    }
}
