//! Q5_K weights (Q4_K with a fifth bit per weight) times Q8_K activations.

use super::q4_k::{minimum_sum, scaled_difference};
use super::row_quads::{RowQuad, QUAD};
use super::{Activations, Q8KBlock, QuadFormat, QuadKernel};
use crate::isa::Isa;
use bytemuck::{Pod, Zeroable};
use seedinfer_formats::blocks::scales_mins;
use seedinfer_formats::BlockQ5_K;

/// Super-block `i` of four consecutive Q5_K rows, each as stored.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct QuadQ5_K(pub [BlockQ5_K; QUAD]);

const _: () = assert!(std::mem::size_of::<QuadQ5_K>() == QUAD * std::mem::size_of::<BlockQ5_K>());

impl RowQuad for QuadQ5_K {
    type Block = BlockQ5_K;
    fn from_blocks(b: [&BlockQ5_K; QUAD]) -> Self {
        Self(b.map(|b| *b))
    }
    fn block(&self, lane: usize) -> BlockQ5_K {
        self.0[lane]
    }
}

impl QuadFormat for QuadQ5_K {
    const ACTIVATIONS: Activations = Activations::Q8K;
    type Input = Q8KBlock;

    fn dot_scalar(w: impl Iterator<Item = BlockQ5_K>, x: &[Q8KBlock]) -> f32 {
        let mut acc = 0.0f32;
        for (b, a) in w.zip(x) {
            let (sc, m) = scales_mins(&b.scales);
            let mut sums = 0i32;
            for (j, &sc) in sc.iter().enumerate() {
                let sub: i32 = (32 * j..32 * j + 32)
                    .map(|i| b.quant(i) as i32 * a.qs[i] as i32)
                    .sum();
                sums += sc as i32 * sub;
            }
            let mins = minimum_sum(&m, a);
            acc += scaled_difference(b.d.to_f32(), b.dmin.to_f32(), a, sums, mins);
        }
        acc
    }

    fn scales_are_finite(&self) -> bool {
        self.0.iter().all(|b| b.d.is_finite() && b.dmin.is_finite())
    }

    fn kernel(isa: Isa) -> Option<QuadKernel<Self>> {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => Some(crate::x86_avx2::k_quants::rows::<Self>),
            _ => None,
        }
    }
}
