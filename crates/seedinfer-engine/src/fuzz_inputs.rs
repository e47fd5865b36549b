//! What each fuzz target under `fuzz/` (cargo-fuzz, libFuzzer) does with its input bytes. The bodies live here so
//! the committed corpora and every input a fuzzer ever crashed on replay on stable in `cargo test`
//! (`tests/fuzz_corpus.rs`); the targets themselves are one line each. Whatever the bytes, a body must return
//! (typed errors are fine): a panic, a hang or an allocation beyond libFuzzer's limit is a bug.

use crate::config::LlamaConfig;
use crate::kv_pool::KvCacheOptions;
use crate::model::{LoadOptions, Model};
use crate::session::Session;
use crate::weights::{LlamaWeights, TensorSource};
use seedinfer_formats::{container, GgufFile, GgufValue, GgufWriter, SafetensorsDir, TensorType};
use seedinfer_tokenizer::Tokenizer;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// What a fuzz target does with its input.
pub type FuzzTarget = fn(&[u8]);

/// A tensor of the structure-aware target's model: name, type, shape.
type TensorEntry = (String, TensorType, Vec<usize>);

/// The fuzz targets, by the names of their files under `fuzz/fuzz_targets/` and their corpora under `fuzz/corpus/`.
pub const TARGETS: &[(&str, FuzzTarget)] = &[
    ("gguf", gguf),
    ("gguf_fields", gguf_fields),
    ("hf_dir", hf_dir),
    ("tokenizer_json", tokenizer_json),
    ("session_file", session_file),
];

/// Tensors larger than this are skipped by the targets that build or read them, so a fuzzer explores shapes
/// rather than memory bandwidth.
const LARGEST_TENSOR: usize = 1 << 22;

/// A GGUF file from raw bytes: the header, metadata and tensor table, every tensor's data bounds, the seedinfer
/// container's rules, the model configuration, the vocabulary and tokenizer, and the weights.
pub fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    load_gguf(&file, true);
}

/// Everything a model load reads of `file`; the tokenizer (whose construction compiles regular expressions, slow
/// under a fuzzer's instrumentation) only `with_tokenizer`.
fn load_gguf(file: &GgufFile, with_tokenizer: bool) {
    for info in file.tensors() {
        if info.byte_len <= LARGEST_TENSOR {
            let _ = file.tensor(&info.name);
        }
    }
    for (key, _) in file.metadata() {
        let _ = (
            file.get_str_array(key),
            file.get_f32_array(key),
            file.get_i32_array(key),
        );
    }
    let _ = container::validate(file);
    if with_tokenizer {
        if let Ok(tokenizer) = Tokenizer::from_gguf(file) {
            exercise_tokenizer(&tokenizer);
        }
    }
    if let Ok(mut config) = LlamaConfig::from_gguf(file) {
        let _ = LlamaWeights::load(TensorSource::Gguf(file), &mut config, None);
    }
}

fn exercise_tokenizer(tokenizer: &Tokenizer) {
    for text in ["Hello, world! 123", " \n\t<s></s>é中文🙂", ""] {
        if let Ok(ids) = tokenizer.encode(text, true, true) {
            let _ = tokenizer.decode(&ids, false);
        }
    }
    let vocab = tokenizer.vocab_size() as u32;
    let _ = tokenizer.decode(&[0, vocab.saturating_sub(1), vocab, u32::MAX], true);
}

/// A valid model (the llama3 test checkpoint converted by llama.cpp, shrunk) with fields changed as the input says,
/// written by our GGUF writer and loaded: the structure-aware target, reaching checks that random bytes rarely
/// reach. The input is a list of 11-byte edits: what (1 byte), which entry (2), a value (8). The tokenizer is left
/// to the `gguf` target: building one compiles its pre-tokenizer's regular expressions, which under a fuzzer's
/// instrumentation takes longer than all the rest.
pub fn gguf_fields(data: &[u8]) {
    let Some(base) = base_gguf() else {
        return;
    };
    let mut metadata: Vec<(String, GgufValue)> = base.metadata().to_vec();
    let mut tensors: Vec<TensorEntry> = base
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.tensor_type, t.shape.clone()))
        .collect();
    for edit in data.chunks_exact(11) {
        let (what, which) = (edit[0], u16::from_le_bytes([edit[1], edit[2]]) as usize);
        let mut value = [0u8; 8];
        value.copy_from_slice(&edit[3..11]);
        let value = u64::from_le_bytes(value);
        edit_field(&mut metadata, &mut tensors, what, which, value);
    }
    let mut writer = GgufWriter::new();
    for (key, value) in metadata {
        writer.add_metadata(&key, value);
    }
    for (name, tensor_type, shape) in tensors {
        let Ok(bytes) = tensor_type.tensor_bytes(&shape) else {
            continue;
        };
        if bytes > LARGEST_TENSOR {
            continue;
        }
        let data = match base.tensor(&name) {
            Ok(view) if view.data.len() == bytes => view.data.to_vec(),
            _ => vec![0x3c; bytes],
        };
        let _ = writer.add_tensor(&name, tensor_type, &shape, data);
    }
    if let Ok(bytes) = writer.to_bytes() {
        if let Ok(file) = GgufFile::from_bytes(bytes) {
            load_gguf(&file, false);
        }
    }
}

fn edit_field(
    metadata: &mut Vec<(String, GgufValue)>,
    tensors: &mut Vec<TensorEntry>,
    what: u8,
    which: usize,
    value: u64,
) {
    let hostile = [
        0,
        1,
        2,
        7,
        255,
        256,
        65_535,
        1 << 31,
        u32::MAX as u64,
        1 << 40,
        1 << 60,
        u64::MAX,
    ];
    let number = if value & 0x100 != 0 {
        hostile[(value as usize >> 9) % hostile.len()]
    } else {
        value & 0xff
    };
    let t = which % tensors.len().max(1);
    let m = which % metadata.len().max(1);
    match what % 6 {
        // A metadata value: a number of the same type, a string, an array shortened or emptied.
        0 if !metadata.is_empty() => {
            let i = m;
            let edited = match &metadata[i].1 {
                GgufValue::U32(_) => GgufValue::U32(number as u32),
                GgufValue::U64(_) => GgufValue::U64(number),
                GgufValue::I32(_) => GgufValue::I32(number as i32),
                GgufValue::F32(_) => GgufValue::F32(f32::from_bits(value as u32)),
                GgufValue::Bool(_) => GgufValue::Bool(value & 1 == 1),
                GgufValue::String(s) => {
                    GgufValue::String(s.chars().take(number as usize % 64).collect())
                }
                GgufValue::Array(items) => {
                    GgufValue::Array(items[..(number as usize).min(items.len())].to_vec())
                }
                other => other.clone(),
            };
            metadata[i].1 = edited;
        }
        // A metadata entry removed, or given another type.
        1 if !metadata.is_empty() => {
            let i = m;
            if value & 1 == 0 {
                metadata.remove(i);
            } else {
                metadata[i].1 = GgufValue::String(format!("{number}"));
            }
        }
        // A tensor dimension.
        2 if !tensors.is_empty() => {
            let shape = &mut tensors[t].2;
            if !shape.is_empty() {
                let d = (value as usize >> 16) % shape.len();
                shape[d] = number as usize;
            }
        }
        // A tensor's type.
        3 if !tensors.is_empty() => {
            let types = seedinfer_formats::ALL_TENSOR_TYPES;
            tensors[t].1 = types[value as usize % types.len()];
        }
        // A tensor removed, or renamed.
        4 if !tensors.is_empty() => {
            if value & 1 == 0 {
                tensors.remove(t);
            } else {
                tensors[t].0 = format!("blk.{}.attn_q.weight", number % 4);
            }
        }
        // A tensor's rank changed.
        5 if !tensors.is_empty() => {
            let shape = &mut tensors[t].2;
            if value & 1 == 0 {
                shape.pop();
            } else if shape.len() < 5 {
                shape.push(number as usize);
            }
        }
        _ => {}
    }
}

fn architectures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/architectures")
}

/// The llama3 test checkpoint's metadata and tensor names, shrunk to hidden size 16 (two heads of 8, one KV head,
/// MLP of 32, two layers, embeddings for its 320 tokens) with patterned f32 weights, and without the vocabulary
/// arrays (the `gguf_fields` target builds no tokenizer): a complete model small enough to rebuild a thousand times
/// a second under a fuzzer's instrumentation.
fn base_gguf() -> Option<&'static GgufFile> {
    static BASE: OnceLock<Option<GgufFile>> = OnceLock::new();
    BASE.get_or_init(|| {
        let source = GgufFile::open(&architectures_dir().join("llama3/model.gguf")).ok()?;
        let shrunk = |key: &str| match key.rsplit_once("llama.").map(|(_, k)| k) {
            Some("embedding_length") => Some(16),
            Some("feed_forward_length") => Some(32),
            Some("attention.head_count") => Some(2),
            Some("attention.head_count_kv") => Some(1),
            Some("attention.key_length" | "attention.value_length" | "rope.dimension_count") => {
                Some(8)
            }
            _ => None,
        };
        let mut writer = GgufWriter::new();
        let vocabulary = [
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
        ];
        for (key, value) in source.metadata() {
            if vocabulary.contains(&key.as_str()) {
                continue;
            }
            let value = shrunk(key).map_or_else(|| value.clone(), GgufValue::U32);
            writer.add_metadata(key, value);
        }
        for info in source.tensors() {
            let shape: Vec<usize> = info
                .shape
                .iter()
                .map(|&d| match d {
                    64 => 16,
                    96 => 32,
                    32 => 8,
                    8 => 4,
                    d => d,
                })
                .collect();
            let count: usize = shape.iter().product();
            // RoPE frequency divisors must be positive; everything else takes a pattern around zero.
            let offset = if info.name.starts_with("rope_freqs") {
                1.0
            } else {
                -0.5
            };
            let data = (0..count)
                .flat_map(|i| (((i * 7) % 13) as f32 / 13.0 + offset).to_le_bytes())
                .collect();
            writer
                .add_tensor(&info.name, TensorType::F32, &shape, data)
                .ok()?;
        }
        GgufFile::from_bytes(writer.to_bytes().ok()?).ok()
    })
    .as_ref()
}

/// A Hugging Face model directory's `config.json` and `model.safetensors` (or a shard with its index) from one
/// input, split at `0xff 0xfe`: config, safetensors bytes, and an index JSON if there is a third part. The tokenizer
/// is the `tokenizer_json` target's (building one takes longer than all the rest under a fuzzer).
pub fn hf_dir(data: &[u8]) {
    let mut parts = split(data).into_iter();
    let (config, weights) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let index = parts.next();
    let dir = scratch_dir("hf_dir");
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let shard = if index.is_some() {
        "model-00001-of-00001.safetensors"
    } else {
        "model.safetensors"
    };
    let written = [("config.json", config), (shard, weights)]
        .into_iter()
        .chain(index.map(|i| ("model.safetensors.index.json", i)))
        .all(|(name, bytes)| std::fs::write(dir.join(name), bytes).is_ok());
    if !written {
        return;
    }
    let config = LlamaConfig::from_hf_config(&dir.join("config.json"));
    if let Ok(tensors) = SafetensorsDir::open(&dir) {
        if let Ok(mut config) = config {
            let _ = LlamaWeights::load(TensorSource::Safetensors(&tensors), &mut config, None);
        }
    }
}

/// A Hugging Face `tokenizer.json` (with the llama3 checkpoint's `tokenizer_config.json` beside it), loaded, then
/// used to encode and decode.
pub fn tokenizer_json(data: &[u8]) {
    let dir = scratch_dir("tokenizer_json");
    let config = dir.join("tokenizer_config.json");
    let ready = std::fs::create_dir_all(&dir).is_ok()
        && (config.exists()
            || std::fs::copy(
                architectures_dir().join("llama3/tokenizer_config.json"),
                &config,
            )
            .is_ok())
        && std::fs::write(dir.join("tokenizer.json"), data).is_ok();
    if !ready {
        return;
    }
    if let Ok(tokenizer) = Tokenizer::from_hf_dir(&dir) {
        exercise_tokenizer(&tokenizer);
    }
}

/// A saved session for the llama3 test checkpoint: header, configuration, tokens, logits, block records and KV
/// bytes, followed by their SHA-256 (appended here, so mutations reach the fields behind the checksum). A session
/// that loads generates two tokens.
pub fn session_file(data: &[u8]) {
    let Some(model) = session_model() else {
        return;
    };
    let path = scratch_dir("session_file").with_extension("bin");
    let digest: [u8; 32] = sha2::Sha256::digest(data).into();
    if std::fs::write(&path, [data, &digest[..]].concat()).is_err() {
        return;
    }
    if let Ok(mut session) = Session::load(Arc::clone(model), &path) {
        let params = crate::session::GenerateParams {
            max_tokens: 2,
            ..Default::default()
        };
        let _ = session.generate(&[1], &params, &Default::default(), &mut |_| {});
    }
}

/// The llama3 test checkpoint with a small KV budget, loaded once per process.
pub fn session_model() -> Option<&'static Arc<Model>> {
    static MODEL: OnceLock<Option<Arc<Model>>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let options = LoadOptions {
                threads: Some(1),
                kv_cache: KvCacheOptions {
                    block_size: 8,
                    budget_bytes: Some(1 << 22),
                    ..Default::default()
                },
                ..Default::default()
            };
            Model::load(&architectures_dir().join("llama3"), &options)
                .ok()
                .map(Arc::new)
        })
        .as_ref()
}

/// A directory of this process for files a target writes.
fn scratch_dir(target: &str) -> PathBuf {
    std::env::temp_dir().join(format!("seedinfer-fuzz-{target}-{}", std::process::id()))
}

/// `data` split at each `0xff 0xfe` pair. (Byte by byte: comparing two-byte windows as slices would call `bcmp`,
/// which a fuzzer intercepts at a cost larger than the rest of the target.)
fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] == 0xff && data[i + 1] == 0xfe {
            parts.push(&data[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    parts.push(&data[start..]);
    parts
}
