//! Q5_1 weights (`x = q * d + m`, 5-bit, packed like Q5_0) times Q8_1 activations (whose scaled sums meet the
//! minimums).

use super::row_quads::{interleave_chunks, row_of_chunks, RowQuad, QUAD};
use super::{Activations, Q8Block, QuadFormat, QuadKernel, BLOCK};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use half::f16;
use seedinfer_formats::blocks::five_bits;
use seedinfer_formats::BlockQ5_1;

/// Block `i` of four consecutive Q5_1 rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadQ5_1 {
    pub d: [f16; QUAD],
    pub m: [f16; QUAD],
    /// Row `r`'s fifth bits: bit `j` is element `j`'s.
    pub qh: [u32; QUAD],
    /// `qs[4h + r]`: bytes `8h..8h + 8` of row `r`'s packed low nibbles.
    pub qs: [[u8; 8]; 2 * QUAD],
}

const _: () = assert!(std::mem::size_of::<QuadQ5_1>() == QUAD * std::mem::size_of::<BlockQ5_1>());

impl RowQuad for QuadQ5_1 {
    type Block = BlockQ5_1;
    fn from_blocks(b: [&BlockQ5_1; QUAD]) -> Self {
        Self {
            d: b.map(|b| b.d),
            m: b.map(|b| b.m),
            qh: b.map(|b| u32::from_le_bytes(b.qh)),
            qs: interleave_chunks(b.map(|b| &b.qs)),
        }
    }
    fn block(&self, lane: usize) -> BlockQ5_1 {
        BlockQ5_1 {
            d: self.d[lane],
            m: self.m[lane],
            qh: self.qh[lane].to_le_bytes(),
            qs: row_of_chunks(&self.qs, lane),
        }
    }
}

impl QuadFormat for QuadQ5_1 {
    const ACTIVATIONS: Activations = Activations::Q8_1;
    type Input = Q8Block;

    #[inline(always)]
    fn dot_scalar(w: impl Iterator<Item = BlockQ5_1>, x: &[Q8Block]) -> f32 {
        let (mut acc, mut mins) = (0.0f32, 0.0f32);
        for (b, a) in w.zip(x) {
            let qh = u32::from_le_bytes(b.qh);
            let sum: i32 = (0..BLOCK)
                .map(|j| five_bits(&b.qs, qh, j) as i32 * a.qs[j] as i32)
                .sum();
            acc += b.d.to_f32() * a.d * sum as f32;
            mins += b.m.to_f32() * a.s;
        }
        acc + mins
    }

    fn scales_are_finite(&self) -> bool {
        self.d.iter().chain(&self.m).all(|d| d.is_finite())
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
