//! Engine errors. Every variant maps to a stable code that reaches JavaScript unchanged.

use seedinfer_formats::FormatError;
use seedinfer_tokenizer::TokenizerError;

pub type Result<T> = std::result::Result<T, EngineError>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(
        "unsupported architecture '{0}': seedinfer runs llama (Llama 2/3.x, Mistral, TinyLlama, SmolLM), qwen2 (Qwen2/2.5) and qwen3"
    )]
    UnsupportedArchitecture(String),
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    /// A configuration key that changes the arithmetic and is not implemented: refused, never ignored.
    #[error("unsupported model configuration: {key} = {value} ({reason})")]
    UnsupportedConfig {
        key: String,
        value: String,
        reason: String,
    },
    #[error("prompt of {prompt} tokens does not fit: the session holds {used} of {context} context tokens")]
    ContextOverflow {
        prompt: usize,
        used: usize,
        context: usize,
    },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("token id {id} is out of range for a vocabulary of {vocab_size}")]
    InvalidTokenId { id: u32, vocab_size: usize },
    #[error("the model path {0} does not exist")]
    ModelNotFound(String),
    #[error("the KV cache needs {needed} more bytes but only {available} of its {budget}-byte budget are free or held by cached prefixes it may evict; dispose of sessions or raise kvCache.budgetBytes")]
    KvBudgetExceeded {
        needed: usize,
        available: usize,
        budget: usize,
    },
    #[error("saved session {path}: {reason}")]
    SessionFile { path: String, reason: String },
    #[error("saved session {path} belongs to another model or cache configuration: {reason}")]
    SessionMismatch { path: String, reason: String },
    #[error("{0} was aborted")]
    Aborted(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Format(e) => e.code(),
            EngineError::Tokenizer(e) => e.code(),
            EngineError::UnsupportedArchitecture(_) => "UNSUPPORTED_ARCHITECTURE",
            EngineError::InvalidConfig(_) => "INVALID_CONFIG",
            EngineError::UnsupportedConfig { .. } => "UNSUPPORTED_CONFIG",
            EngineError::ContextOverflow { .. } => "CONTEXT_OVERFLOW",
            EngineError::InvalidOption(_) => "INVALID_OPTION",
            EngineError::InvalidTokenId { .. } => "INVALID_TOKEN_ID",
            EngineError::ModelNotFound(_) => "MODEL_NOT_FOUND",
            EngineError::KvBudgetExceeded { .. } => "KV_BUDGET_EXCEEDED",
            EngineError::SessionFile { .. } => "SESSION_FILE_INVALID",
            EngineError::SessionMismatch { .. } => "SESSION_FILE_MISMATCH",
            EngineError::Aborted(_) => "ABORTED",
            EngineError::Internal(_) => "INTERNAL",
        }
    }
}
