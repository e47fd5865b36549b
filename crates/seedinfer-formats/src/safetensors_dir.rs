//! A Hugging Face checkpoint directory: either a single `model.safetensors` or
//! shards listed in `model.safetensors.index.json`, all memory-mapped.
//!
//! Headers are parsed once with the `safetensors` crate and copied into our own
//! index (name → shard, dtype, shape, absolute byte range), so no value borrows
//! from the mappings and the struct is not self-referential.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensorError};
use safetensors::SafeTensors;

use crate::error::{FormatError, Result};
use crate::tensor_type::TensorType;
use crate::tensor_view::TensorView;

pub const SINGLE_FILE_NAME: &str = "model.safetensors";
pub const SHARD_INDEX_NAME: &str = "model.safetensors.index.json";

struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

struct SafetensorsEntry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A memory-mapped safetensors checkpoint (single file or sharded).
pub struct SafetensorsDir {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// BTreeMap so that `tensor_names` is deterministic.
    tensors: BTreeMap<String, SafetensorsEntry>,
}

impl std::fmt::Debug for SafetensorsDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsDir")
            .field("dir", &self.dir)
            .field(
                "shards",
                &self.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field("tensor_count", &self.tensors.len())
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl SafetensorsDir {
    /// Opens `dir/model.safetensors.index.json` if present, else `dir/model.safetensors`.
    /// `dir` may also be a `.safetensors` file itself.
    pub fn open(dir: &Path) -> Result<Self> {
        if dir.is_file() {
            let parent = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
            return Self::from_shards(parent, vec![dir.to_path_buf()], None);
        }
        let index_path = dir.join(SHARD_INDEX_NAME);
        if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| FormatError::io(&index_path, e))?;
            let label = index_path.display().to_string();
            let index: ShardIndex = serde_json::from_str(&text).map_err(|e| {
                FormatError::corrupt(&label, format!("invalid shard index JSON: {e}"))
            })?;
            let mut shard_names: Vec<&String> = index.weight_map.values().collect();
            shard_names.sort();
            shard_names.dedup();
            let mut shard_paths = Vec::with_capacity(shard_names.len());
            for name in shard_names {
                // Shard names come from the file: never let them escape the directory.
                let relative = Path::new(name);
                if !relative
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
                {
                    return Err(FormatError::corrupt(
                        &label,
                        format!("shard name '{name}' is not a plain relative path"),
                    ));
                }
                let path = dir.join(relative);
                if !path.is_file() {
                    return Err(FormatError::corrupt(
                        &label,
                        format!("shard index refers to missing file {}", path.display()),
                    ));
                }
                shard_paths.push(path);
            }
            return Self::from_shards(dir.to_path_buf(), shard_paths, Some((label, index)));
        }
        let single = dir.join(SINGLE_FILE_NAME);
        if !single.exists() {
            return Err(FormatError::io(
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no {SINGLE_FILE_NAME} or {SHARD_INDEX_NAME} in {}",
                        dir.display()
                    ),
                ),
            ));
        }
        Self::from_shards(dir.to_path_buf(), vec![single], None)
    }

    fn from_shards(
        dir: PathBuf,
        shard_paths: Vec<PathBuf>,
        index: Option<(String, ShardIndex)>,
    ) -> Result<Self> {
        let mut shards = Vec::with_capacity(shard_paths.len());
        let mut tensors = BTreeMap::new();
        for (shard_number, path) in shard_paths.into_iter().enumerate() {
            let file = std::fs::File::open(&path).map_err(|e| FormatError::io(&path, e))?;
            // SAFETY: read-only mapping; as with any mmap loader we assume the file is
            // not modified while mapped. All ranges are validated against its length.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(&path, e))?;
            let label = path.display().to_string();
            let parsed =
                SafeTensors::deserialize(&mmap).map_err(|e| safetensors_error(&label, &mmap, e))?;
            // The data section starts after the u64 header length and the JSON header.
            let header_len = mmap
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| FormatError::corrupt(&label, "unreadable header length"))?;
            let data_start = 8 + header_len;
            for (name, view) in parsed.iter() {
                // `data()` is a subslice of the mapping; recover its absolute range.
                let start = (view.data().as_ptr() as usize).wrapping_sub(mmap.as_ptr() as usize);
                let end = start.wrapping_add(view.data().len());
                if start < data_start || end > mmap.len() || start > end {
                    return Err(FormatError::corrupt(
                        &label,
                        format!("tensor '{name}' data lies outside the file"),
                    ));
                }
                let entry = SafetensorsEntry {
                    shard: shard_number,
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    start,
                    end,
                };
                if tensors.insert(name.to_string(), entry).is_some() {
                    return Err(FormatError::corrupt(
                        &label,
                        format!("tensor '{name}' appears in more than one shard"),
                    ));
                }
            }
            drop(parsed);
            shards.push(Shard { path, mmap });
        }
        if let Some((label, index)) = index {
            for (name, shard_name) in &index.weight_map {
                let Some(entry) = tensors.get(name) else {
                    return Err(FormatError::corrupt(
                        &label,
                        format!("shard index lists tensor '{name}' in {shard_name}, but it is not there"),
                    ));
                };
                let in_expected_shard = shards
                    .get(entry.shard)
                    .is_some_and(|s| s.path.ends_with(shard_name));
                if !in_expected_shard {
                    return Err(FormatError::corrupt(
                        &label,
                        format!("shard index lists tensor '{name}' in {shard_name}, but it is in another shard"),
                    ));
                }
            }
        }
        Ok(SafetensorsDir {
            dir,
            shards,
            tensors,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// All tensor names, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// The tensor's dtype name as written in the file ("F32", "I64", ...).
    pub fn dtype_name(&self, name: &str) -> Option<String> {
        self.tensors.get(name).map(|e| e.dtype.to_string())
    }

    /// Borrows a tensor; only F32, F16 and BF16 are supported.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let (name, entry) =
            self.tensors
                .get_key_value(name)
                .ok_or_else(|| FormatError::MissingTensor {
                    name: name.to_string(),
                })?;
        let tensor_type = match entry.dtype {
            Dtype::F32 => TensorType::F32,
            Dtype::F16 => TensorType::F16,
            Dtype::BF16 => TensorType::BF16,
            other => {
                return Err(FormatError::UnsupportedTensorType {
                    tensor: name.clone(),
                    type_id: None,
                    type_name: other.to_string(),
                })
            }
        };
        let shard = self.shards.get(entry.shard);
        let data = shard
            .and_then(|s| s.mmap.get(entry.start..entry.end))
            .ok_or_else(|| {
                FormatError::corrupt(
                    &self.dir.display().to_string(),
                    format!("data of tensor '{name}' lies outside its shard"),
                )
            })?;
        Ok(TensorView {
            name,
            tensor_type,
            shape: entry.shape.clone(),
            data,
        })
    }

    /// Total size of all shard files.
    pub fn file_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.mmap.len() as u64).sum()
    }
}

/// Maps a safetensors parse failure to our error, telling "file too short" apart
/// from "file malformed" so that truncated downloads get TRUNCATED_FILE.
fn safetensors_error(label: &str, bytes: &[u8], err: SafeTensorError) -> FormatError {
    let truncated = |what: &str, needed: u64| FormatError::Truncated {
        file: label.to_string(),
        what: what.to_string(),
        needed,
        available: bytes.len() as u64,
    };
    let header_len = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes);
    match err {
        SafeTensorError::HeaderTooSmall => truncated("safetensors header length", 8),
        SafeTensorError::InvalidHeaderLength => match header_len {
            Some(n) if n.saturating_add(8) > bytes.len() as u64 => {
                truncated("safetensors JSON header", n.saturating_add(8))
            }
            _ => FormatError::corrupt(label, format!("invalid safetensors header: {err}")),
        },
        SafeTensorError::MetadataIncompleteBuffer => {
            match header_len.and_then(|n| expected_file_len(bytes, n)) {
                Some(expected) if expected > bytes.len() as u64 => {
                    truncated("safetensors tensor data", expected)
                }
                _ => FormatError::corrupt(
                    label,
                    format!("safetensors data section size does not match its header: {err}"),
                ),
            }
        }
        other => FormatError::corrupt(label, format!("invalid safetensors header: {other}")),
    }
}

/// File length implied by a (syntactically valid) safetensors header.
fn expected_file_len(bytes: &[u8], header_len: u64) -> Option<u64> {
    let end = usize::try_from(header_len.checked_add(8)?).ok()?;
    let json: serde_json::Value = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    let data_len = json
        .as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    data_len.checked_add(end as u64)
}
