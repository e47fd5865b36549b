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
        "unsupported architecture '{0}': seedinfer runs the Llama family (llama, LlamaForCausalLM)"
    )]
    UnsupportedArchitecture(String),
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
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
            EngineError::ContextOverflow { .. } => "CONTEXT_OVERFLOW",
            EngineError::InvalidOption(_) => "INVALID_OPTION",
            EngineError::InvalidTokenId { .. } => "INVALID_TOKEN_ID",
            EngineError::ModelNotFound(_) => "MODEL_NOT_FOUND",
            EngineError::Internal(_) => "INTERNAL",
        }
    }
}
