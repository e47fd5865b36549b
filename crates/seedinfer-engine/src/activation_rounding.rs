//! Rounding of activations to the precision a weight format multiplies them at.
//!
//! llama.cpp multiplies block-quantised weights with activations quantised to int8 per 32-block (Q8_0/Q8_1:
//! d = max|x| / 127 stored as f16, q = round(x / d)) and f16 weights with f16 activations. Until the integer
//! kernels land, the f32 path reproduces those values exactly so that its results follow the reference
//! implementation rather than an unrounded ideal.

use half::{bf16, f16};
use seedinfer_formats::TensorType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationRounding {
    /// f32 weights: activations stay f32.
    None,
    /// Block-quantised weights: int8 per 32 values with an f16 scale.
    Int8Blocks,
    F16,
    BF16,
}

impl ActivationRounding {
    pub fn for_weights(tensor_type: TensorType) -> Self {
        match tensor_type {
            TensorType::F32 => Self::None,
            TensorType::F16 => Self::F16,
            TensorType::BF16 => Self::BF16,
            TensorType::Q4_0 | TensorType::Q4_1 | TensorType::Q8_0 => Self::Int8Blocks,
        }
    }
}

const BLOCK: usize = 32;

/// Writes `input` rounded per `rounding` into `out`; each row of `row_len` values is rounded on its own.
pub fn round_activations(rounding: ActivationRounding, input: &[f32], row_len: usize, out: &mut Vec<f32>) {
    out.clear();
    out.extend_from_slice(input);
    match rounding {
        ActivationRounding::None => {}
        ActivationRounding::F16 => out.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32()),
        ActivationRounding::BF16 => out.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32()),
        ActivationRounding::Int8Blocks => {
            for row in out.chunks_mut(row_len) {
                for block in row.chunks_mut(BLOCK) {
                    let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
                    let scale = f16::from_f32(d).to_f32();
                    block.iter_mut().for_each(|v| *v = (*v * inverse).round() * scale);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedinfer_formats::{dequantize_row, quantize_row};

    #[test]
    fn int8_rounding_equals_a_ggml_q8_0_round_trip() {
        let input: Vec<f32> = (0..96).map(|i| ((i * 7919) % 211) as f32 / 37.0 - 2.5).collect();
        let mut bytes = Vec::new();
        quantize_row(TensorType::Q8_0, &input, &mut bytes).expect("quantizes");
        let mut reference = vec![0.0; input.len()];
        dequantize_row(TensorType::Q8_0, &bytes, &mut reference).expect("dequantizes");
        let mut rounded = Vec::new();
        round_activations(ActivationRounding::Int8Blocks, &input, 96, &mut rounded);
        assert_eq!(rounded, reference);
    }
}
