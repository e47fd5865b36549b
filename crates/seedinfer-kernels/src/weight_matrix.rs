//! What a layer needs of one weight matrix `[rows, cols]`, whatever its storage: one trait object per matrix, so
//! the model holds no per-format `match`. Block-quantised matrices are multiplied with int8 activations the caller
//! quantises once and shares ([`WeightMatrix::quantized`]); the others take the f32 activations as they are.

use crate::dense_f32::DenseMatrix;
use crate::half_weights::HalfMatrix;
use crate::isa::{kernel_isa, KernelFamily};
use crate::q3_rtn_weights::Q3RtnMatrix;
use crate::q8_block::quantize_activations;
use crate::quantized::QuantizedMatrix;
use crate::seedlm_weights::SeedLmMatrix;
use seedinfer_formats::TensorType;

pub trait WeightMatrix: Send + Sync {
    /// How the weights are stored (their tensor type).
    fn storage(&self) -> TensorType;
    fn resident_bytes(&self) -> usize;
    /// Row `row` as f32 into `out` (an embedding lookup).
    fn row_to_f32(&self, row: usize, out: &mut [f32]);
    /// `out = input · selfᵀ` from f32 activations (`[tokens, cols]` in, `[tokens, rows]` out).
    fn matmul_f32(&self, input: &[f32], tokens: usize, out: &mut [f32]);
    /// The instruction set this matrix's products run with on this machine.
    fn kernel_isa(&self) -> &'static str;
    /// The block-quantised matrix, whose products read int8 activation blocks, if this is one.
    fn quantized(&self) -> Option<&QuantizedMatrix> {
        None
    }
    /// How the products are computed, e.g. `Q4_1 x int8`, `F16 x f32` or `f32`.
    fn compute_format(&self) -> String {
        match (self.quantized(), self.storage()) {
            (Some(_), t) => format!("{t} x int8"),
            (None, TensorType::F32) => "f32".to_string(),
            (None, t) => format!("{t} x f32"),
        }
    }
}

impl WeightMatrix for QuantizedMatrix {
    fn storage(&self) -> TensorType {
        self.tensor_type()
    }
    fn resident_bytes(&self) -> usize {
        QuantizedMatrix::resident_bytes(self)
    }
    fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        self.dequantize_row(row, out)
    }
    fn matmul_f32(&self, input: &[f32], tokens: usize, out: &mut [f32]) {
        let mut q8 = Vec::new();
        quantize_activations(input, &mut q8);
        self.matmul(&q8, tokens, out)
    }
    fn kernel_isa(&self) -> &'static str {
        QuantizedMatrix::kernel_isa(self).name()
    }
    fn quantized(&self) -> Option<&QuantizedMatrix> {
        Some(self)
    }
}

/// The storages whose products take f32 activations: the same four methods, forwarded.
macro_rules! f32_activation_matrix {
    ($matrix:ty, $family:expr) => {
        impl WeightMatrix for $matrix {
            fn storage(&self) -> TensorType {
                self.tensor_type()
            }
            fn resident_bytes(&self) -> usize {
                <$matrix>::resident_bytes(self)
            }
            fn row_to_f32(&self, row: usize, out: &mut [f32]) {
                <$matrix>::row_to_f32(self, row, out)
            }
            fn matmul_f32(&self, input: &[f32], tokens: usize, out: &mut [f32]) {
                self.matmul(input, tokens, out)
            }
            fn kernel_isa(&self) -> &'static str {
                kernel_isa($family)
            }
        }
    };
}

f32_activation_matrix!(DenseMatrix, KernelFamily::DenseF32);
f32_activation_matrix!(HalfMatrix, KernelFamily::Half);
f32_activation_matrix!(SeedLmMatrix, KernelFamily::SeedLm);
f32_activation_matrix!(Q3RtnMatrix, KernelFamily::SeedLm);
