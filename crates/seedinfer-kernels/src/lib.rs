//! seedinfer's compute kernels. Every SIMD path has a scalar reference beside it; the instruction set is chosen
//! at run time.

pub mod activation;
pub mod attention;
mod attention_avx2;
mod avx2_reduce;
pub mod dense_f32;
pub mod ggml_arithmetic;
pub mod half_weights;
pub mod isa;
pub mod limits;
pub mod q3_rtn_weights;
pub mod quantized;
mod quantized_avx2;
pub mod rms_norm;
mod row_blocks;
pub mod row_quads;
pub mod seedlm_weights;
/// Deterministic inputs for tests, examples and benchmarks (not part of the kernels' API).
#[doc(hidden)]
pub mod test_values;
mod widen;

pub use isa::{detected as detected_isa, kernel_isa, Isa, KernelFamily};
