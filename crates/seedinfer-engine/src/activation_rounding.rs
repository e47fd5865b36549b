//! Rounding of activations for half-precision weights held as f32.
//!
//! llama.cpp multiplies f16 (bf16) weights with activations converted to f16 (bf16); the f32 path rounds the
//! activations the same way so its results follow the reference implementation. Block-quantised weights are
//! multiplied by the int8 kernels of `seedinfer-kernels` instead.

use half::{bf16, f16};
use seedinfer_formats::TensorType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationRounding {
    /// f32 weights (and block-quantised ones, which quantise their activations themselves).
    None,
    F16,
    BF16,
}

impl ActivationRounding {
    pub fn for_weights(tensor_type: TensorType) -> Self {
        match tensor_type {
            TensorType::F16 => Self::F16,
            TensorType::BF16 => Self::BF16,
            TensorType::F32 | TensorType::Q4_0 | TensorType::Q4_1 | TensorType::Q8_0 => Self::None,
        }
    }
}

/// Writes `input` rounded per `rounding` into `out`.
pub fn round_activations(rounding: ActivationRounding, input: &[f32], out: &mut Vec<f32>) {
    out.clear();
    match rounding {
        ActivationRounding::None => out.extend_from_slice(input),
        ActivationRounding::F16 => out.extend(input.iter().map(|v| f16::from_f32(*v).to_f32())),
        ActivationRounding::BF16 => out.extend(input.iter().map(|v| bf16::from_f32(*v).to_f32())),
    }
}
