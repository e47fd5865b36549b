//! Readers and writers for model files: GGUF (llama.cpp) and Hugging Face
//! safetensors checkpoints, plus the ggml block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 with bit-exact reference
//! quantizers; the K-quants Q2_K .. Q6_K, IQ4_NL and IQ4_XS read), and synthetic random-weight copies of GGUF models for benchmarks.
//!
//! Nothing read from a file is trusted: every length, count and offset is checked
//! and failures are reported as [`FormatError`] with a stable [`FormatError::code`].

pub mod blocks;
pub mod container;
pub mod error;
pub mod gguf;
pub mod q3_rtn;
pub mod safetensors_dir;
pub mod seedlm;
pub mod synthetic;
pub mod tensor_type;
pub mod tensor_view;
#[cfg(test)]
mod test_weights;

pub use blocks::{
    dequantize_row, quantize_row, BlockCodec, BlockIq4Nl, BlockIq4Xs, BlockQ2_K, BlockQ3_K,
    BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0,
    BlockQuantizer, QK_K,
};
pub use error::{FormatError, Result};
pub use gguf::{GgufFile, GgufTensorInfo, GgufValue, GgufWriter};
pub use safetensors_dir::SafetensorsDir;
pub use tensor_type::{ggml_type_name, TensorType, ALL_TENSOR_TYPES, SEEDINFER_TENSOR_TYPES};
pub use tensor_view::TensorView;
