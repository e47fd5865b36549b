//! Node.js binding for the seedinfer engine: one small file per domain. Heavy work runs off the JS thread;
//! errors reach JavaScript as `Error`s whose `code` property is the stable code, which the TypeScript layer wraps
//! in typed errors.

mod attention_bench;
mod error;
mod gguf_tools;
mod kernel_bench;
mod model;
mod perplexity;
mod quantize;
mod session;

pub use attention_bench::{create_attention_bench, NativeAttentionBench, NativeAttentionShape};
pub use gguf_tools::{gguf_tensors, write_synthetic_model, NativeGgufTensor};
pub use kernel_bench::{create_kernel_bench, probe_limits, NativeKernelBench};
pub use model::{load_model, weight_formats, NativeModel};
pub use perplexity::{NativePerplexity, NativePerplexityOptions, NativePerplexityWindow};
pub use quantize::{quantize_formats, quantize_model, NativeQuantizeEvent, NativeQuantizeReport};
pub use session::{NativeAbortFlag, NativeSession};
