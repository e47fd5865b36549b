//! Q3_K weights (super-blocks of 256: `x = d * (sc_j - 32) * q`, 3-bit signed `q`, 6-bit `sc_j` per 16) times Q8_K
//! activations.

use super::row_quads::{interleave_chunks, row_of_chunks, RowQuad, QUAD};
use super::{signed_sub_blocks_term, Activations, Q8KBlock, QuadFormat, QuadKernel};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use half::f16;
use seedinfer_formats::{BlockQ3_K, QK_K};

/// Super-block `i` of four consecutive Q3_K rows: their high and low bits interleaved by 8-byte chunk
/// (`row_quads`), their scales as stored.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadQ3_K {
    /// `hmask[4c + r]`: bytes `8c..8c + 8` of row `r`'s high bits.
    pub hmask: [[u8; 8]; QK_K / 64 * QUAD],
    /// `qs[4c + r]`: bytes `8c..8c + 8` of row `r`'s low two bits.
    pub qs: [[u8; 8]; QK_K / 32 * QUAD],
    pub scales: [[u8; 12]; QUAD],
    pub d: [f16; QUAD],
}

const _: () = assert!(std::mem::size_of::<QuadQ3_K>() == QUAD * std::mem::size_of::<BlockQ3_K>());

impl RowQuad for QuadQ3_K {
    type Block = BlockQ3_K;
    fn from_blocks(b: [&BlockQ3_K; QUAD]) -> Self {
        Self {
            hmask: interleave_chunks(b.map(|b| &b.hmask)),
            qs: interleave_chunks(b.map(|b| &b.qs)),
            scales: b.map(|b| b.scales),
            d: b.map(|b| b.d),
        }
    }
    fn block(&self, lane: usize) -> BlockQ3_K {
        BlockQ3_K {
            hmask: row_of_chunks(&self.hmask, lane),
            qs: row_of_chunks(&self.qs, lane),
            scales: self.scales[lane],
            d: self.d[lane],
        }
    }
}

impl QuadFormat for QuadQ3_K {
    const ACTIVATIONS: Activations = Activations::Q8K;
    type Input = Q8KBlock;

    fn dot_scalar(w: impl Iterator<Item = BlockQ3_K>, x: &[Q8KBlock]) -> f32 {
        w.zip(x).fold(0.0, |acc, (b, a)| {
            acc + signed_sub_blocks_term::<16>(a, b.d.to_f32(), |j| b.sub_scale(j), |i| b.quant(i))
        })
    }

    fn scales_are_finite(&self) -> bool {
        self.d.iter().all(|d| d.is_finite())
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
