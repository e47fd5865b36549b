//! GGUF: the llama.cpp model container (metadata + ggml tensors).

pub mod reader;
pub mod value;
pub mod writer;

pub use reader::{GgufFile, GgufTensorInfo};
pub use value::GgufValue;
pub use writer::GgufWriter;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Version written by [`GgufWriter`].
pub const GGUF_WRITE_VERSION: u32 = 3;
