//! Q2_K weights (super-blocks of 256: `x = d * sc_j * q - dmin * m_j`, 2-bit `q`, 4-bit `sc_j` and `m_j` per 16)
//! times Q8_K activations.

use super::row_quads::{interleave_chunks, row_of_chunks, RowQuad, QUAD};
use super::{Activations, Q8KBlock, QuadFormat, QuadKernel};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use half::f16;
use seedinfer_formats::{BlockQ2_K, QK_K};

/// Super-block `i` of four consecutive Q2_K rows: their 2-bit weights interleaved by 8-byte chunk (`row_quads`),
/// their scales as stored.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadQ2_K {
    pub scales: [[u8; QK_K / 16]; QUAD],
    /// `qs[4c + r]`: bytes `8c..8c + 8` of row `r`'s weights.
    pub qs: [[u8; 8]; QK_K / 32 * QUAD],
    pub d: [f16; QUAD],
    pub dmin: [f16; QUAD],
}

const _: () = assert!(std::mem::size_of::<QuadQ2_K>() == QUAD * std::mem::size_of::<BlockQ2_K>());

impl RowQuad for QuadQ2_K {
    type Block = BlockQ2_K;
    fn from_blocks(b: [&BlockQ2_K; QUAD]) -> Self {
        Self {
            scales: b.map(|b| b.scales),
            qs: interleave_chunks(b.map(|b| &b.qs)),
            d: b.map(|b| b.d),
            dmin: b.map(|b| b.dmin),
        }
    }
    fn block(&self, lane: usize) -> BlockQ2_K {
        BlockQ2_K {
            scales: self.scales[lane],
            qs: row_of_chunks(&self.qs, lane),
            d: self.d[lane],
            dmin: self.dmin[lane],
        }
    }
}

impl QuadFormat for QuadQ2_K {
    const ACTIVATIONS: Activations = Activations::Q8K;
    type Input = Q8KBlock;

    /// Per super-block `d_x * d * Σ sc_j (q · x)_j - d_x * dmin * Σ m_j (Σ x)_j`, the integer sums exact (a
    /// sub-block of 16 is one of the activations' sums of 16).
    fn dot_scalar(w: impl Iterator<Item = BlockQ2_K>, x: &[Q8KBlock]) -> f32 {
        let mut acc = 0.0f32;
        for (b, a) in w.zip(x) {
            let (mut sums, mut mins) = (0i32, 0i32);
            for (j, &packed) in b.scales.iter().enumerate() {
                let sub: i32 = (16 * j..16 * j + 16)
                    .map(|i| b.quant(i) as i32 * a.qs[i] as i32)
                    .sum();
                sums += (packed & 0x0f) as i32 * sub;
                mins += (packed >> 4) as i32 * a.bsums[j] as i32;
            }
            acc += a.d * b.d.to_f32() * sums as f32 - a.d * b.dmin.to_f32() * mins as f32;
        }
        acc
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
