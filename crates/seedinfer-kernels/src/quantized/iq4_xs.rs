//! IQ4_XS weights (super-blocks of 256: `x = d * (ls_j - 32) * KVALUES_IQ4NL[q]`, 6-bit `ls_j` per 32, 4-bit
//! indices `q`) times Q8_K activations.

use super::row_quads::{interleave_chunks, row_of_chunks, RowQuad, QUAD};
use super::{signed_sub_blocks_term, Activations, Q8KBlock, QuadFormat, QuadKernel};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use half::f16;
use seedinfer_formats::{BlockIq4Xs, QK_K};

/// Super-block `i` of four consecutive IQ4_XS rows: their scales as stored, their packed indices interleaved by
/// 8-byte chunk (`row_quads`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadIq4Xs {
    pub d: [f16; QUAD],
    pub scales_h: [u16; QUAD],
    pub scales_l: [[u8; QK_K / 64]; QUAD],
    /// `qs[4c + r]`: bytes `8c..8c + 8` of row `r`'s packed indices.
    pub qs: [[u8; 8]; QK_K / 16 * QUAD],
}

const _: () = assert!(std::mem::size_of::<QuadIq4Xs>() == QUAD * std::mem::size_of::<BlockIq4Xs>());

impl RowQuad for QuadIq4Xs {
    type Block = BlockIq4Xs;
    fn from_blocks(b: [&BlockIq4Xs; QUAD]) -> Self {
        Self {
            d: b.map(|b| b.d),
            scales_h: b.map(|b| b.scales_h),
            scales_l: b.map(|b| b.scales_l),
            qs: interleave_chunks(b.map(|b| &b.qs)),
        }
    }
    fn block(&self, lane: usize) -> BlockIq4Xs {
        BlockIq4Xs {
            d: self.d[lane],
            scales_h: self.scales_h[lane],
            scales_l: self.scales_l[lane],
            qs: row_of_chunks(&self.qs, lane),
        }
    }
}

impl QuadFormat for QuadIq4Xs {
    const ACTIVATIONS: Activations = Activations::Q8K;
    type Input = Q8KBlock;

    fn dot_scalar(w: impl Iterator<Item = BlockIq4Xs>, x: &[Q8KBlock]) -> f32 {
        w.zip(x).fold(0.0, |acc, (b, a)| {
            acc + signed_sub_blocks_term::<32>(a, b.d.to_f32(), |j| b.sub_scale(j), |i| b.level(i))
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
