//! GGUF v3 writer, used by tests and by tools that generate synthetic models.
//!
//! Everything is buffered in memory: the files this is meant for are small, and it
//! lets the writer compute every tensor offset before emitting the header.

use std::io::Write;
use std::path::Path;

use super::value::{GgufValue, GgufValueType};
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_WRITE_VERSION};
use crate::error::{FormatError, Result};
use crate::tensor_type::TensorType;

struct PendingTensor {
    name: String,
    tensor_type: TensorType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Builds a GGUF v3 file from metadata and already-encoded tensor data.
pub struct GgufWriter {
    alignment: usize,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets the tensor data alignment. A non-default value is recorded as
    /// `general.alignment` (u32) so readers find the data; it must be a power of two,
    /// which `write_to` checks.
    pub fn set_alignment(&mut self, alignment: usize) {
        self.alignment = alignment;
    }

    /// Adds (or replaces) a metadata entry; entries keep their first-insertion order.
    pub fn add_metadata(&mut self, key: &str, value: GgufValue) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, existing)) => *existing = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Adds a tensor. `shape` is outermost first; `data` must be exactly the
    /// encoded size of that shape in `tensor_type`.
    pub fn add_tensor(
        &mut self,
        name: &str,
        tensor_type: TensorType,
        shape: &[usize],
        data: Vec<u8>,
    ) -> Result<()> {
        if shape.len() > 4 {
            return Err(FormatError::invalid_argument(format!(
                "tensor '{name}' has {} dimensions; GGUF allows at most 4",
                shape.len()
            )));
        }
        let expected = tensor_type.tensor_bytes(shape)?;
        if data.len() != expected {
            return Err(FormatError::invalid_argument(format!(
                "tensor '{name}' ({tensor_type} {shape:?}) needs {expected} bytes of data, got {}",
                data.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(FormatError::invalid_argument(format!(
                "tensor '{name}' added twice"
            )));
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            tensor_type,
            shape: shape.to_vec(),
            data,
        });
        Ok(())
    }

    /// Serializes the whole file.
    pub fn write_to(&self, w: &mut impl Write) -> Result<()> {
        let bytes = self.to_bytes()?;
        w.write_all(&bytes)
            .map_err(|e| FormatError::io("<GGUF writer output>", e))
    }

    /// Writes the file to `path` (created or truncated).
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|e| FormatError::io(path, e))
    }

    /// Serializes the whole file into memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let alignment = self.alignment;
        let alignment_u32 = u32::try_from(alignment)
            .ok()
            .filter(|a| a.is_power_of_two())
            .ok_or_else(|| {
                FormatError::invalid_argument(format!(
                    "GGUF alignment {alignment} is not a power of two that fits in u32"
                ))
            })?;

        let mut metadata = self.metadata.clone();
        let has_alignment_key = metadata.iter().any(|(k, _)| k == "general.alignment");
        if alignment != DEFAULT_ALIGNMENT && !has_alignment_key {
            metadata.push(("general.alignment".into(), GgufValue::U32(alignment_u32)));
        }

        let mut out = Vec::new();
        out.extend_from_slice(GGUF_MAGIC);
        out.extend_from_slice(&GGUF_WRITE_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in &metadata {
            write_string(&mut out, key);
            out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            write_value(&mut out, value, key)?;
        }

        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            // GGUF stores ne0 (the innermost dimension) first.
            for &dim in t.shape.iter().rev() {
                out.extend_from_slice(&(dim as u64).to_le_bytes());
            }
            out.extend_from_slice(&t.tensor_type.ggml_type_id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.data.len() as u64).next_multiple_of(alignment as u64);
        }

        pad_to(&mut out, alignment);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            // Pad after every tensor, including the last, as ggml and gguf-py do.
            pad_to(&mut out, alignment);
        }
        Ok(out)
    }
}

fn pad_to(out: &mut Vec<u8>, alignment: usize) {
    out.resize(out.len().next_multiple_of(alignment), 0);
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &GgufValue, key: &str) -> Result<()> {
    match value {
        GgufValue::U8(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::Bool(v) => out.push(u8::from(*v)),
        GgufValue::String(s) => write_string(out, s),
        GgufValue::Array(items) => {
            // An empty array carries no element type; u8 is as good as any.
            let element_type = items
                .first()
                .map_or(GgufValueType::U8, GgufValue::value_type);
            if items.iter().any(|v| v.value_type() != element_type) {
                return Err(FormatError::invalid_argument(format!(
                    "metadata array '{key}' mixes element types; GGUF arrays are homogeneous"
                )));
            }
            out.extend_from_slice(&(element_type as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item, key)?;
            }
        }
    }
    Ok(())
}
