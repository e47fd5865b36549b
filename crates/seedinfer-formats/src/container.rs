//! seedinfer's container for models it quantises itself (`seedinfer quantize`): a GGUF v3 file whose matrices may
//! use seedinfer's tensor types (`SEEDLM4`, `SEEDLM3`, `Q3_RTN`, type ids from 1001), with `seedinfer.*` metadata
//! saying how to read them. The layout is documented in `docs/container.md`.
//!
//! A file that uses a seedinfer tensor type must carry [`VERSION_KEY`] with a version this build reads, and every
//! SeedLM tensor its exponent base; [`validate`] checks both when the file is opened, so a damaged or newer file
//! fails with a coded error instead of being misread.

use crate::error::{FormatError, Result};
use crate::gguf::GgufFile;
use crate::tensor_type::SEEDINFER_TENSOR_TYPES;

/// The container version this build writes and the newest it reads.
pub const CONTAINER_VERSION: u32 = 1;
/// `u32`: the container version.
pub const VERSION_KEY: &str = "seedinfer.container.version";
/// `string`: the format the matrices were quantised to (`seedlm4`, `seedlm3`, `q3_rtn`, ...).
pub const FORMAT_KEY: &str = "seedinfer.quantization.format";
/// `string`: the file or directory the weights came from.
pub const SOURCE_KEY: &str = "seedinfer.quantization.source";
/// `string`: `interleaved` (llama.cpp's q/k row order) or `half` (Hugging Face `rotate_half`); absent means
/// `interleaved`, as in every GGUF file.
pub const ROPE_STYLE_KEY: &str = "seedinfer.rope_style";
/// Prefix of `string` entries holding a Hugging Face source's tokenizer files verbatim, e.g.
/// `seedinfer.hf_file.tokenizer.json`.
pub const HF_FILE_PREFIX: &str = "seedinfer.hf_file.";

/// `i32`: the exponent base of SeedLM tensor `tensor` (its blocks' 4-bit exponent codes count up from it).
pub fn exponent_base_key(tensor: &str) -> String {
    format!("seedinfer.seedlm.exponent_base.{tensor}")
}

/// The exponent base of a SeedLM tensor (checked at open by [`validate`]).
pub fn exponent_base(gguf: &GgufFile, tensor: &str) -> Result<i32> {
    let key = exponent_base_key(tensor);
    let label = gguf.path().display().to_string();
    let base = gguf
        .get(&key)
        .and_then(|v| v.as_i64())
        .ok_or_else(|| FormatError::corrupt(&label, format!("{key} is missing")))?;
    // Exponents must stay where an f32 scale can hold `base + 15` and codes times it.
    if !(-126..=110).contains(&base) {
        return Err(FormatError::corrupt(
            &label,
            format!("{key} = {base} is out of range"),
        ));
    }
    Ok(base as i32)
}

/// Checks the seedinfer extensions of an opened GGUF file: a supported container version wherever seedinfer
/// tensor types are used, and an exponent base for every SeedLM tensor.
pub fn validate(gguf: &GgufFile) -> Result<()> {
    let label = gguf.path().display().to_string();
    let version = gguf.get(VERSION_KEY);
    let uses_own_types = gguf
        .tensors()
        .iter()
        .any(|t| SEEDINFER_TENSOR_TYPES.contains(&t.tensor_type));
    match version.map(|v| v.as_u64()) {
        None if uses_own_types => {
            return Err(FormatError::corrupt(
                &label,
                format!("it uses seedinfer tensor types but has no {VERSION_KEY}"),
            ))
        }
        None => return Ok(()),
        Some(None) => {
            return Err(FormatError::corrupt(
                &label,
                format!("{VERSION_KEY} is not an integer"),
            ))
        }
        Some(Some(v)) if v == 0 || v > CONTAINER_VERSION as u64 => {
            return Err(FormatError::UnsupportedContainerVersion {
                file: label,
                version: v,
                supported: CONTAINER_VERSION,
            })
        }
        Some(Some(_)) => {}
    }
    for t in gguf.tensors() {
        if t.tensor_type.seedlm_config().is_some() {
            exponent_base(gguf, &t.name)?;
        }
    }
    Ok(())
}
