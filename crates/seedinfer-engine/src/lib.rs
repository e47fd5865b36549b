//! seedinfer's inference engine for Llama-family models. Knows nothing of Node: the napi binding wraps it.

mod attention;
pub mod attention_bench;
pub mod batcher;
pub mod bounded_cache;
pub mod config;
pub mod constraint;
pub mod error;
pub mod forward;
#[doc(hidden)]
pub mod fuzz_inputs;
pub mod kv_cache;
pub mod kv_pool;
pub mod model;
pub mod ops_llamacpp;
pub mod ops_seedinfer;
pub mod perplexity;
pub mod quantize;
pub mod quantize_mix;
pub mod sampler;
pub mod session;
mod session_file;
pub mod speculative;
pub mod superposition;
pub mod think;
pub mod token_pruning;
pub mod weights;
pub mod xattention;

pub use bounded_cache::{BoundedCache, SirLlm};
pub use config::{Architecture, LlamaConfig, RopeScaling, RopeStyle};
pub use constraint::ResponseFormat;
pub use error::{EngineError, Result};
pub use kv_pool::{CacheStats, KvCacheOptions, KvDtype, KvPool};
pub use model::{LoadOptions, Model, ModelInfo, Numerics};
pub use perplexity::{Perplexity, WindowScore};
pub use quantize::{quantize_model, QuantFormat, QuantizeProgress, QuantizeReport};
pub use quantize_mix::Mix;
pub use sampler::{Distribution, SamplingParams, TokenLogprobs};
pub use session::{
    Chunk, GenerateParams, GenerationOutput, Session, SpeculativeReport, StopReason, Timings,
    MAX_TOP_LOGPROBS,
};
pub use speculative::{DraftSource, SpeculativeParams};
pub use superposition::SuperposeReport;
pub use think::{Think, ThinkReport};
pub use token_pruning::{PassReport, PrefillStrategy, Stage};
pub use weights::WeightFormat;
pub use xattention::XAttention;
