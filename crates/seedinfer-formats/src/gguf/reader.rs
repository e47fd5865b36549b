//! Memory-mapped GGUF reader (versions 2 and 3).
//!
//! Layout: magic `GGUF`, u32 version, u64 tensor count, u64 metadata count,
//! metadata key/values, tensor infos, padding to `general.alignment`, tensor data.
//! Every count and length read from the file is checked against the bytes that
//! remain *before* anything is allocated, so a corrupt header cannot make us
//! allocate gigabytes or index past the end of the mapping.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::value::{GgufValue, GgufValueType};
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::error::{FormatError, Result};
use crate::tensor_type::{ggml_type_name, TensorType};
use crate::tensor_view::TensorView;

/// ggml's GGML_MAX_DIMS: tensors in GGUF never have more dimensions.
const MAX_TENSOR_DIMS: u32 = 4;
/// Nested arrays are legal but never used in practice; the limit only exists so a
/// corrupt file cannot recurse the reader into a stack overflow.
const MAX_ARRAY_NESTING: usize = 8;
/// Smallest possible metadata entry: empty key (u64 len) + type tag + one byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest possible tensor info: empty name + n_dims + type + offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// Description of one tensor in a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    pub tensor_type: TensorType,
    /// Outermost dimension first (the reverse of GGUF's `ne`).
    pub shape: Vec<usize>,
    /// Offset of the tensor data relative to the start of the data section.
    pub offset: u64,
    pub byte_len: usize,
}

impl GgufTensorInfo {
    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Everything parsed from a GGUF header; separate from the mapping so it can be
/// produced from any byte slice (used by tests and by [`GgufFile::open`]).
#[derive(Debug)]
pub(crate) struct GgufHeader {
    pub version: u32,
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: usize,
    pub data_offset: u64,
}

/// Where the file bytes live: normally a read-only mapping, or an owned buffer
/// for files built in memory (tests, synthetic models).
enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(mmap) => mmap,
            Storage::Owned(bytes) => bytes,
        }
    }
}

/// A GGUF file mapped into memory. Tensor data is borrowed straight from the mapping.
pub struct GgufFile {
    path: PathBuf,
    storage: Storage,
    header: GgufHeader,
    metadata_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.header.version)
            .field("metadata_count", &self.header.metadata.len())
            .field("tensor_count", &self.header.tensors.len())
            .field("alignment", &self.header.alignment)
            .field("data_offset", &self.header.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Maps and validates a GGUF file. Fails if any tensor has a type this crate
    /// cannot decode, or if any tensor's data lies outside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        let label = path.display().to_string();
        if file_len < GGUF_MAGIC.len() as u64 {
            return Err(FormatError::Truncated {
                file: label,
                what: "GGUF magic".into(),
                needed: GGUF_MAGIC.len() as u64,
                available: file_len,
            });
        }
        // SAFETY: the mapping is read-only. Like every mmap-based model loader we
        // assume the file is not truncated or rewritten while mapped; all offsets
        // are still bounds-checked against the mapping length.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        Self::from_storage(path.to_path_buf(), Storage::Mapped(mmap))
    }

    /// Parses a GGUF file held in memory (e.g. straight from [`super::GgufWriter::to_bytes`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_storage(PathBuf::from("<memory>"), Storage::Owned(bytes))
    }

    fn from_storage(path: PathBuf, storage: Storage) -> Result<Self> {
        let header = parse_header(storage.bytes(), &path.display().to_string())?;
        let metadata_index = header
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let file = GgufFile {
            path,
            storage,
            header,
            metadata_index,
            tensor_index,
        };
        crate::container::validate(&file)?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// All metadata key/values in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.header.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        let &i = self.metadata_index.get(key)?;
        self.header.metadata.get(i).map(|(_, v)| v)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// A string array; `None` if absent or if any element is not a string.
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(GgufValue::as_str)
            .collect()
    }

    /// A numeric array as f32; `None` if absent or if any element is not numeric.
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_f64().map(|x| x as f32))
            .collect()
    }

    /// An integer array as i32; `None` if absent or any element is not an integer in i32 range.
    pub fn get_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_i64().and_then(|x| i32::try_from(x).ok()))
            .collect()
    }

    /// Tensor descriptions in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.header.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        let &i = self.tensor_index.get(name)?;
        self.header.tensors.get(i)
    }

    /// Borrows a tensor's bytes from the mapping.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| FormatError::MissingTensor {
                name: name.to_string(),
            })?;
        // Ranges were validated in `open`; re-checking keeps this function
        // panic-free even if that validation ever changes.
        let data = usize::try_from(self.header.data_offset + info.offset)
            .ok()
            .and_then(|start| {
                self.storage
                    .bytes()
                    .get(start..start.checked_add(info.byte_len)?)
            })
            .ok_or_else(|| {
                FormatError::corrupt(
                    &self.path.display().to_string(),
                    format!("data of tensor '{name}' lies outside the file"),
                )
            })?;
        Ok(TensorView {
            name: &info.name,
            tensor_type: info.tensor_type,
            shape: info.shape.clone(),
            data,
        })
    }

    /// Lets the OS drop this process's mapped pages of tensor `name` (they stay in the page cache and are read
    /// again if touched). A loader that copies tensors out calls it after each one, so the file's pages and the
    /// copies are not resident at the same time: peak memory is the copies, not the copies plus the file.
    pub fn release_tensor(&self, name: &str) {
        let (Storage::Mapped(mmap), Some(info)) = (&self.storage, self.tensor_info(name)) else {
            return;
        };
        let Ok(start) = usize::try_from(self.header.data_offset + info.offset) else {
            return;
        };
        if start
            .checked_add(info.byte_len)
            .is_none_or(|end| end > mmap.len())
        {
            return;
        }
        // SAFETY: the mapping is read-only and private to this reader, so dropping its pages loses nothing: the
        // next access reads the same bytes from the file again. Failure only means the pages stay resident.
        let _ = unsafe {
            mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, info.byte_len)
        };
    }

    /// Alignment of tensor data (from `general.alignment`, default 32).
    pub fn alignment(&self) -> usize {
        self.header.alignment
    }

    /// Absolute file offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// Size of the file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.storage.bytes().len() as u64
    }
}

/// A bounds-checked reader over the header bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        self.bytes.len().saturating_sub(self.pos) as u64
    }

    fn truncated(&self, what: &str, needed: u64) -> FormatError {
        FormatError::Truncated {
            file: self.file.to_string(),
            what: what.to_string(),
            needed,
            available: self.remaining(),
        }
    }

    fn take(&mut self, len: u64, what: &str) -> Result<&'a [u8]> {
        let slice = usize::try_from(len)
            .ok()
            .and_then(|len| self.bytes.get(self.pos..self.pos.checked_add(len)?))
            .ok_or_else(|| self.truncated(what, len))?;
        self.pos += slice.len();
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let slice = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| FormatError::corrupt(self.file, format!("{what} is not valid UTF-8")))
    }

    /// Rejects `count` items of at least `min_item_bytes` each if they cannot fit.
    fn check_count(&self, count: u64, min_item_bytes: u64, what: &str) -> Result<usize> {
        let needed = count.saturating_mul(min_item_bytes);
        if needed > self.remaining() {
            return Err(self.truncated(what, needed));
        }
        usize::try_from(count).map_err(|_| {
            FormatError::corrupt(self.file, format!("{what}: count {count} too large"))
        })
    }

    fn value(&mut self, value_type: GgufValueType, what: &str, depth: usize) -> Result<GgufValue> {
        Ok(match value_type {
            GgufValueType::U8 => GgufValue::U8(u8::from_le_bytes(self.array(what)?)),
            GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            GgufValueType::U32 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            GgufValueType::U64 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            GgufValueType::Bool => match self.array::<1>(what)? {
                [0] => GgufValue::Bool(false),
                [1] => GgufValue::Bool(true),
                [other] => {
                    return Err(FormatError::corrupt(
                        self.file,
                        format!("{what}: bool byte {other} is neither 0 nor 1"),
                    ))
                }
            },
            GgufValueType::String => GgufValue::String(self.string(what)?),
            GgufValueType::Array => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(FormatError::corrupt(
                        self.file,
                        format!("{what}: arrays nested more than {MAX_ARRAY_NESTING} deep"),
                    ));
                }
                let tag = self.u32(what)?;
                let element_type = GgufValueType::from_u32(tag).ok_or_else(|| {
                    FormatError::corrupt(
                        self.file,
                        format!("{what}: unknown array element type {tag}"),
                    )
                })?;
                let count = self.u64(what)?;
                let count = self.check_count(count, element_type.min_encoded_bytes(), what)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(element_type, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
        })
    }
}

/// Parses and validates a complete GGUF header against `bytes` (the whole file).
pub(crate) fn parse_header(bytes: &[u8], file: &str) -> Result<GgufHeader> {
    let mut cur = Cursor {
        bytes,
        pos: 0,
        file,
    };
    let magic = cur.take(4, "GGUF magic")?;
    if magic != GGUF_MAGIC {
        return Err(FormatError::BadMagic {
            file: file.to_string(),
            found: magic.to_vec(),
        });
    }
    let version = cur.u32("GGUF version")?;
    // v1 used u32 counts and is long obsolete; v2 and v3 share the same layout.
    if !(2..=3).contains(&version) {
        return Err(FormatError::UnsupportedVersion {
            file: file.to_string(),
            version,
        });
    }
    let tensor_count = cur.u64("tensor count")?;
    let kv_count = cur.u64("metadata count")?;
    let kv_count = cur.check_count(kv_count, MIN_KV_BYTES, "metadata entries")?;

    let mut metadata = Vec::with_capacity(kv_count);
    let mut seen_keys = HashMap::with_capacity(kv_count);
    for index in 0..kv_count {
        let key = cur.string(&format!("metadata key #{index}"))?;
        let what = format!("metadata value '{key}'");
        let tag = cur.u32(&what)?;
        let value_type = GgufValueType::from_u32(tag).ok_or_else(|| {
            FormatError::corrupt(file, format!("{what}: unknown value type {tag}"))
        })?;
        let value = cur.value(value_type, &what, 0)?;
        if seen_keys.insert(key.clone(), index).is_some() {
            return Err(FormatError::corrupt(
                file,
                format!("duplicate metadata key '{key}'"),
            ));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, GgufValue::U32(a))) if a.is_power_of_two() => *a as usize,
        Some((_, other)) => {
            return Err(FormatError::corrupt(
                file,
                format!("general.alignment must be a power-of-two u32, found {other:?}"),
            ))
        }
    };

    let tensor_count = cur.check_count(tensor_count, MIN_TENSOR_INFO_BYTES, "tensor infos")?;
    let mut raw_infos = Vec::with_capacity(tensor_count);
    for index in 0..tensor_count {
        let name = cur.string(&format!("name of tensor #{index}"))?;
        let what = format!("info of tensor '{name}'");
        let n_dims = cur.u32(&what)?;
        if n_dims > MAX_TENSOR_DIMS {
            return Err(FormatError::corrupt(
                file,
                format!(
                    "tensor '{name}' has {n_dims} dimensions (at most {MAX_TENSOR_DIMS} allowed)"
                ),
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let dim = cur.u64(&what)?;
            // ggml stores dims as int64_t; anything that does not fit usize cannot be mapped.
            let dim = usize::try_from(dim)
                .ok()
                .filter(|&d| d as u64 <= i64::MAX as u64);
            let dim = dim.ok_or_else(|| {
                FormatError::corrupt(file, format!("tensor '{name}' has an absurd dimension"))
            })?;
            ne.push(dim);
        }
        let type_id = cur.u32(&what)?;
        let offset = cur.u64(&what)?;
        let tensor_type = TensorType::from_ggml_type_id(type_id).ok_or_else(|| {
            FormatError::UnsupportedTensorType {
                tensor: name.clone(),
                type_id: Some(type_id),
                type_name: ggml_type_name(type_id).unwrap_or("unknown").to_string(),
            }
        })?;
        raw_infos.push((name, tensor_type, ne, offset));
    }

    let header_end = cur.pos as u64;
    let data_offset = header_end
        .checked_next_multiple_of(alignment as u64)
        .ok_or_else(|| FormatError::corrupt(file, "data section offset overflows"))?;
    let file_len = bytes.len() as u64;

    let mut tensors = Vec::with_capacity(raw_infos.len());
    let mut seen_names = HashMap::with_capacity(raw_infos.len());
    for (name, tensor_type, ne, offset) in raw_infos {
        if seen_names.insert(name.clone(), ()).is_some() {
            return Err(FormatError::corrupt(
                file,
                format!("duplicate tensor name '{name}'"),
            ));
        }
        if !offset.is_multiple_of(alignment as u64) {
            return Err(FormatError::corrupt(
                file,
                format!("tensor '{name}' data offset {offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        let shape: Vec<usize> = ne.iter().rev().copied().collect();
        let cols = shape.last().copied().unwrap_or(1);
        let block = tensor_type.block_elements();
        if tensor_type.seedlm_config().is_none() && !cols.is_multiple_of(block) {
            return Err(FormatError::PartialBlocks {
                name,
                type_name: tensor_type.name(),
                shape,
                cols,
                block,
            });
        }
        let byte_len = tensor_type.tensor_bytes(&shape).map_err(|_| {
            FormatError::corrupt(
                file,
                format!("tensor '{name}' of type {tensor_type} has shape {shape:?}, whose size overflows"),
            )
        })?;
        let start = data_offset.checked_add(offset);
        let end = start.and_then(|s| s.checked_add(byte_len as u64));
        if !matches!(end, Some(end) if end <= file_len) {
            return Err(FormatError::Truncated {
                file: file.to_string(),
                what: format!("data of tensor '{name}'"),
                needed: byte_len as u64,
                available: start.map_or(0, |s| file_len.saturating_sub(s)),
            });
        }
        tensors.push(GgufTensorInfo {
            name,
            tensor_type,
            shape,
            offset,
            byte_len,
        });
    }

    // GGUF stores no byte length per tensor: its shape and type give it. A tensor whose data runs into the next
    // one's holds fewer bytes than its shape needs (llama.cpp refuses such files too).
    let mut by_offset: Vec<&GgufTensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (this, next) = (pair[0], pair[1]);
        if this.offset + this.byte_len as u64 > next.offset {
            return Err(FormatError::corrupt(
                file,
                format!(
                    "tensor '{}' ({} {:?}) needs {} bytes, but only {} lie before the next tensor '{}': its data does not match its shape",
                    this.name,
                    this.tensor_type,
                    this.shape,
                    this.byte_len,
                    next.offset - this.offset,
                    next.name
                ),
            ));
        }
    }

    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}
