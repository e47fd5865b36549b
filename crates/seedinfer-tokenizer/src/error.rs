//! Typed tokenizer errors with stable machine-readable codes.

/// Errors produced by the tokenizer crate. Every variant maps to a stable code via
/// [`TokenizerError::code`], which the Node binding surfaces to JavaScript.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The tokenizer files or metadata could not be read or are malformed.
    #[error("failed to load tokenizer: {0}")]
    LoadFailed(String),
    /// The tokenizer type (e.g. GGUF `tokenizer.ggml.model` / `tokenizer.ggml.pre`) is not supported.
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    /// A token id outside the vocabulary was passed to a decoding function.
    #[error("invalid token id {id}: vocabulary has {vocab_size} tokens")]
    InvalidTokenId { id: u32, vocab_size: usize },
    /// The underlying tokenizer failed while encoding or decoding.
    #[error("tokenization failed: {0}")]
    TokenizeFailed(String),
}

impl TokenizerError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            TokenizerError::LoadFailed(_) => "TOKENIZER_LOAD_FAILED",
            TokenizerError::Unsupported(_) => "UNSUPPORTED_TOKENIZER",
            TokenizerError::InvalidTokenId { .. } => "INVALID_TOKEN_ID",
            TokenizerError::TokenizeFailed(_) => "TOKENIZE_FAILED",
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, TokenizerError>;

pub(crate) fn load_err(context: &str, err: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::LoadFailed(format!("{context}: {err}"))
}
