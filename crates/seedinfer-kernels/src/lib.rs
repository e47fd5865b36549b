//! seedinfer's compute kernels. Every SIMD path has a scalar reference beside it; the instruction set is chosen
//! at run time (`isa`), and each instruction set's code lives in its own folder (`x86_avx2/`).
//!
//! - `q8_block`, `q8k_block`: int8 activation blocks of 32 and super-blocks of 256 (leaves: everything
//!   block-quantised builds on them).
//! - `quantized/`: block-quantised weights, one file per format, one shared product driver.
//! - `dense_f32`, `half_weights`, `seedlm_weights`, `q3_rtn_weights`: the other weight storages.
//! - `attention`, `rms_norm`, `activation`: the other operations of a layer step; `ggml_arithmetic`: llama.cpp's
//!   bit-exact versions of them.

pub mod activation;
pub mod attention;
pub mod dense_f32;
pub mod ggml_arithmetic;
pub mod half_weights;
pub mod isa;
pub mod limits;
pub mod q3_rtn_weights;
pub mod q8_block;
pub mod q8k_block;
pub mod quantized;
pub mod rms_norm;
pub mod row_blocks;
pub mod seedlm_weights;
/// Deterministic inputs for tests, examples and benchmarks (not part of the kernels' API).
#[doc(hidden)]
pub mod test_values;
pub mod weight_matrix;
mod widen;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

pub use isa::{detected as detected_isa, kernel_isa, Isa, KernelFamily};
pub use weight_matrix::WeightMatrix;
