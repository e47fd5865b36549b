//! Q6_K weights (super-blocks of 256: `x = d * sc_j * (q - 32)`, 6-bit `q`, signed 8-bit `sc_j` per 16) times Q8_K
//! activations.

use super::row_quads::{interleave_chunks, row_of_chunks, RowQuad, QUAD};
use super::{signed_sub_blocks_term, Activations, Q8KBlock, QuadFormat, QuadKernel};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use half::f16;
use seedinfer_formats::{BlockQ6_K, QK_K};

/// Super-block `i` of four consecutive Q6_K rows: their low and high bits interleaved by 8-byte chunk
/// (`row_quads`), their scales as stored.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadQ6_K {
    /// `ql[4c + r]`: bytes `8c..8c + 8` of row `r`'s low four bits.
    pub ql: [[u8; 8]; QK_K / 16 * QUAD],
    /// `qh[4c + r]`: bytes `8c..8c + 8` of row `r`'s high two bits.
    pub qh: [[u8; 8]; QK_K / 32 * QUAD],
    pub scales: [[i8; QK_K / 16]; QUAD],
    pub d: [f16; QUAD],
}

const _: () = assert!(std::mem::size_of::<QuadQ6_K>() == QUAD * std::mem::size_of::<BlockQ6_K>());

impl RowQuad for QuadQ6_K {
    type Block = BlockQ6_K;
    fn from_blocks(b: [&BlockQ6_K; QUAD]) -> Self {
        Self {
            ql: interleave_chunks(b.map(|b| &b.ql)),
            qh: interleave_chunks(b.map(|b| &b.qh)),
            scales: b.map(|b| b.scales),
            d: b.map(|b| b.d),
        }
    }
    fn block(&self, lane: usize) -> BlockQ6_K {
        BlockQ6_K {
            ql: row_of_chunks(&self.ql, lane),
            qh: row_of_chunks(&self.qh, lane),
            scales: self.scales[lane],
            d: self.d[lane],
        }
    }
}

impl QuadFormat for QuadQ6_K {
    const ACTIVATIONS: Activations = Activations::Q8K;
    type Input = Q8KBlock;

    fn dot_scalar(w: impl Iterator<Item = BlockQ6_K>, x: &[Q8KBlock]) -> f32 {
        w.zip(x).fold(0.0, |acc, (b, a)| {
            let weight = |i| b.quant(i) as i32 - 32;
            acc + signed_sub_blocks_term::<16>(a, b.d.to_f32(), |j| b.scales[j] as i32, weight)
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
