//! Q4_K weights (super-blocks of 256: `x = d * sc_j * q - dmin * m_j`, 4-bit `q`, 6-bit `sc_j`, `m_j`) times Q8_K
//! activations.

use super::row_quads::{interleave_chunks, row_of_chunks, RowQuad, QUAD};
use super::{Activations, Q8KBlock, QuadFormat, QuadKernel};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use half::f16;
use seedinfer_formats::blocks::{scales_mins, ScaledMinimumBlock, K_SCALE_BYTES};
use seedinfer_formats::{BlockQ4_K, QK_K};

/// Super-block `i` of four consecutive Q4_K rows: their scales as stored, and their packed nibbles interleaved by
/// 8-byte chunk (`row_quads`), so one 32-byte load gives the same chunk of the four rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadQ4_K {
    pub d: [f16; QUAD],
    pub dmin: [f16; QUAD],
    pub scales: [[u8; K_SCALE_BYTES]; QUAD],
    /// `qs[4c + r]`: bytes `8c..8c + 8` of row `r`'s packed nibbles.
    pub qs: [[u8; 8]; QK_K / 16 * QUAD],
}

const _: () = assert!(std::mem::size_of::<QuadQ4_K>() == QUAD * std::mem::size_of::<BlockQ4_K>());

impl RowQuad for QuadQ4_K {
    type Block = BlockQ4_K;
    fn from_blocks(b: [&BlockQ4_K; QUAD]) -> Self {
        Self {
            d: b.map(|b| b.d),
            dmin: b.map(|b| b.dmin),
            scales: b.map(|b| b.scales),
            qs: interleave_chunks(b.map(|b| &b.qs)),
        }
    }
    fn block(&self, lane: usize) -> BlockQ4_K {
        BlockQ4_K {
            d: self.d[lane],
            dmin: self.dmin[lane],
            scales: self.scales[lane],
            qs: row_of_chunks(&self.qs, lane),
        }
    }
}

/// The scalar reference shared by Q4_K and Q5_K: per super-block `d_x * d * Σ sc_j (q · x)_j - d_x * dmin * Σ m_j
/// (Σ x)_j`, the integer sums exact (`m_j` meets the activations' two sums of 16 of its sub-block).
pub(super) fn dot_scaled_minimum<B: ScaledMinimumBlock>(
    w: impl Iterator<Item = B>,
    x: &[Q8KBlock],
) -> f32 {
    let mut acc = 0.0f32;
    for (b, a) in w.zip(x) {
        let (sc, m) = scales_mins(b.packed_scales());
        let (mut sums, mut mins) = (0i32, 0i32);
        for j in 0..8 {
            let sub: i32 = (32 * j..32 * j + 32)
                .map(|i| b.quant(i) as i32 * a.qs[i] as i32)
                .sum();
            sums += sc[j] as i32 * sub;
            mins += m[j] as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32);
        }
        acc += a.d * b.d() * sums as f32 - a.d * b.dmin() * mins as f32;
    }
    acc
}

impl QuadFormat for QuadQ4_K {
    const ACTIVATIONS: Activations = Activations::Q8K;
    type Input = Q8KBlock;

    fn dot_scalar(w: impl Iterator<Item = BlockQ4_K>, x: &[Q8KBlock]) -> f32 {
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
