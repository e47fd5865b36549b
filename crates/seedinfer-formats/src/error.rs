//! The single error type of this crate.
//!
//! Every failure carries enough context (file, tensor, sizes) to be reported to a
//! user without a backtrace, and maps to a stable machine-readable code via
//! [`FormatError::code`] so that bindings can branch on it.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, FormatError>;

/// Everything that can go wrong while reading or writing model files.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// An operating-system level I/O failure (open, stat, map, write).
    #[error("I/O error on {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error(
        "not a GGUF file: magic {found:02x?} in {file} (expected \"GGUF\" = [47, 47, 55, 46])"
    )]
    BadMagic { file: String, found: Vec<u8> },

    /// A GGUF version we do not read (only 2 and 3 are supported).
    #[error("unsupported GGUF version {version} in {file} (supported: 2, 3)")]
    UnsupportedVersion { file: String, version: u32 },

    /// The file ends before a structure that it declares.
    #[error("{file} is a seedinfer container of version {version}; this build reads versions 1 to {supported}")]
    UnsupportedContainerVersion {
        file: String,
        version: u64,
        supported: u32,
    },

    #[error("truncated file {file}: while reading {what} needed {needed} bytes but only {available} are available")]
    Truncated {
        file: String,
        what: String,
        needed: u64,
        available: u64,
    },

    /// The file is structurally invalid (absurd counts, bad UTF-8, out-of-range data, ...).
    #[error("corrupt file {file}: {reason}")]
    Corrupt { file: String, reason: String },

    /// A tensor uses an element type this crate cannot decode.
    #[error("tensor '{tensor}' has unsupported type {type_name}{}", type_id.map(|id| format!(" (ggml type id {id})")).unwrap_or_default())]
    UnsupportedTensorType {
        tensor: String,
        /// ggml type id when the tensor came from GGUF; `None` for safetensors dtypes.
        type_id: Option<u32>,
        /// Human-readable type name, e.g. `Q6_K` or `I64`; `unknown` if the id is not a known ggml type.
        type_name: String,
    },

    /// A tensor the caller asked for does not exist.
    #[error("missing tensor '{name}'")]
    MissingTensor { name: String },

    /// A tensor exists but its shape is not what the caller expects.
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A block-quantised tensor whose rows are not a whole number of its type's blocks (its bytes cannot match
    /// its shape).
    #[error("tensor '{name}' of type {type_name} has shape {shape:?}: rows of {cols} elements are not whole {block}-element blocks")]
    PartialBlocks {
        name: String,
        type_name: &'static str,
        shape: Vec<usize>,
        cols: usize,
        block: usize,
    },

    /// The caller passed inconsistent arguments (e.g. a row length that is not a
    /// multiple of the block size, or an output buffer of the wrong length).
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
}

impl FormatError {
    /// Stable SCREAMING_SNAKE code for this error, suitable for programmatic matching.
    pub fn code(&self) -> &'static str {
        match self {
            FormatError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "MODEL_NOT_FOUND"
            }
            FormatError::Io { .. } => "IO_ERROR",
            FormatError::BadMagic { .. } => "BAD_MAGIC",
            FormatError::UnsupportedVersion { .. } => "UNSUPPORTED_GGUF_VERSION",
            FormatError::UnsupportedContainerVersion { .. } => "UNSUPPORTED_CONTAINER_VERSION",
            FormatError::Truncated { .. } => "TRUNCATED_FILE",
            FormatError::Corrupt { .. } => "CORRUPT_FILE",
            FormatError::UnsupportedTensorType { .. } => "UNSUPPORTED_TENSOR_TYPE",
            FormatError::MissingTensor { .. } => "MISSING_TENSOR",
            FormatError::ShapeMismatch { .. } | FormatError::PartialBlocks { .. } => {
                "TENSOR_SHAPE_MISMATCH"
            }
            FormatError::InvalidArgument { .. } => "INVALID_ARGUMENT",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(file: &str, reason: impl Into<String>) -> Self {
        FormatError::Corrupt {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_argument(reason: impl Into<String>) -> Self {
        FormatError::InvalidArgument {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_maps_to_model_not_found() {
        let err = FormatError::io(
            "/nope",
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(err.code(), "MODEL_NOT_FOUND");
        let err = FormatError::io(
            "/nope",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no"),
        );
        assert_eq!(err.code(), "IO_ERROR");
    }

    #[test]
    fn unsupported_type_message_names_type() {
        let err = FormatError::UnsupportedTensorType {
            tensor: "blk.0.ffn_down.weight".into(),
            type_id: Some(14),
            type_name: "Q6_K".into(),
        };
        let msg = err.to_string();
        assert!(msg.contains("Q6_K") && msg.contains("14") && msg.contains("ffn_down"));
    }
}
