//! Q8_0 weights (`x = q * d`, 8-bit) times Q8_0 activations.

use super::row_quads::{interleave_chunks, row_of_chunks, RowQuad, QUAD};
use super::{Activations, GgmlDots, Q8Block, QuadFormat, QuadKernel, BLOCK};
use crate::ggml_arithmetic::{self, WeightRow};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use half::f16;
use seedinfer_formats::BlockQ8_0;

/// Block `i` of four consecutive Q8_0 rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadQ8_0 {
    pub d: [f16; QUAD],
    /// `qs[4c + r]`: weights `8c..8c + 8` of row `r`.
    pub qs: [[i8; 8]; 4 * QUAD],
}

const _: () = assert!(std::mem::size_of::<QuadQ8_0>() == QUAD * std::mem::size_of::<BlockQ8_0>());

impl RowQuad for QuadQ8_0 {
    type Block = BlockQ8_0;
    fn from_blocks(b: [&BlockQ8_0; QUAD]) -> Self {
        Self {
            d: b.map(|b| b.d),
            qs: interleave_chunks(b.map(|b| &b.qs)),
        }
    }
    fn block(&self, lane: usize) -> BlockQ8_0 {
        BlockQ8_0 {
            d: self.d[lane],
            qs: row_of_chunks(&self.qs, lane),
        }
    }
}

impl QuadFormat for QuadQ8_0 {
    const ACTIVATIONS: Activations = Activations::Q8_0;
    type Input = Q8Block;

    #[inline(always)]
    fn dot_scalar(w: impl Iterator<Item = BlockQ8_0>, x: &[Q8Block]) -> f32 {
        let mut acc = 0.0f32;
        for (b, a) in w.zip(x) {
            let mut sum = 0i32;
            for j in 0..BLOCK {
                sum += b.qs[j] as i32 * a.qs[j] as i32;
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

    fn ggml() -> Option<GgmlDots<Self>> {
        Some(GgmlDots {
            unpack: |row: &mut WeightRow, quads: &[Self], lane| {
                row.set_q8_0(quads.iter().map(|q| q.block(lane)))
            },
            dot: ggml_arithmetic::dot_q8_0,
            #[cfg(target_arch = "x86_64")]
            dot_avx2: ggml_arithmetic::dot_q8_0_avx2,
            #[cfg(target_arch = "x86_64")]
            dot_in_place_avx2: crate::x86_avx2::quads::ggml_dot_q8_0_in_place,
        })
    }
}
