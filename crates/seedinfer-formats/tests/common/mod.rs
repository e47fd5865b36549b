//! Helpers shared by the integration tests.
#![allow(dead_code)]

use seedinfer_formats::blocks::SEARCHED_TYPES;
use seedinfer_formats::synthetic::random_k_quant_blocks;
use seedinfer_formats::{quantize_row, GgufValue, GgufWriter, TensorType, ALL_TENSOR_TYPES};

/// Deterministic pseudo-random values in roughly [-2, 2].
pub fn sample_values(count: usize, seed: u32) -> Vec<f32> {
    (0..count)
        .map(|i| {
            let x = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40_503));
            (x % 4001) as f32 / 1000.0 - 2.0
        })
        .collect()
}

/// Small xorshift generator so tests need no extra dependency.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One metadata value of every GGUF type, including nested and empty arrays.
pub fn every_metadata_type() -> Vec<(String, GgufValue)> {
    vec![
        (
            "general.architecture".into(),
            GgufValue::String("llama".into()),
        ),
        ("t.u8".into(), GgufValue::U8(200)),
        ("t.i8".into(), GgufValue::I8(-100)),
        ("t.u16".into(), GgufValue::U16(60_000)),
        ("t.i16".into(), GgufValue::I16(-30_000)),
        ("t.u32".into(), GgufValue::U32(4_000_000_000)),
        ("t.i32".into(), GgufValue::I32(-2_000_000_000)),
        ("t.u64".into(), GgufValue::U64(u64::MAX - 1)),
        ("t.i64".into(), GgufValue::I64(i64::MIN + 1)),
        ("t.f32".into(), GgufValue::F32(1.25e-5)),
        ("t.f64".into(), GgufValue::F64(std::f64::consts::PI)),
        ("t.bool".into(), GgufValue::Bool(true)),
        (
            "t.string.utf8".into(),
            GgufValue::String("héllo ▁wörld".into()),
        ),
        ("t.string.empty".into(), GgufValue::String(String::new())),
        (
            "t.array.str".into(),
            GgufValue::Array(vec!["<s>".into(), "</s>".into(), "a b".into()]),
        ),
        (
            "t.array.f32".into(),
            GgufValue::Array(vec![GgufValue::F32(-1.5), GgufValue::F32(0.0)]),
        ),
        (
            "t.array.i32".into(),
            GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(-7)]),
        ),
        ("t.array.empty".into(), GgufValue::Array(vec![])),
        (
            "t.array.nested".into(),
            GgufValue::Array(vec![
                GgufValue::Array(vec![GgufValue::U8(1), GgufValue::U8(2)]),
                GgufValue::Array(vec![GgufValue::U8(3)]),
            ]),
        ),
    ]
}

/// (name, type, shape, original f32 values) for one tensor of every type but those with searched scales (the K-quants,
/// IQ4: see [`k_quant_tensors`]).
pub fn every_tensor_type() -> Vec<(String, TensorType, Vec<usize>, Vec<f32>)> {
    ALL_TENSOR_TYPES
        .iter()
        .filter(|t| !SEARCHED_TYPES.contains(t))
        .enumerate()
        .map(|(i, &t)| {
            let shape = vec![3, 64];
            let values = sample_values(3 * 64, i as u32);
            (format!("tensor.{}", t.name()), t, shape, values)
        })
        .collect()
}

/// (name, type, shape, bytes) for one tensor of each type with a searched scale (the K-quants, IQ4): two rows of 512 random weights (`synthetic::random_k_quant_blocks`).
pub fn k_quant_tensors() -> Vec<(String, TensorType, Vec<usize>, Vec<u8>)> {
    SEARCHED_TYPES
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let shape = vec![2, 512];
            let mut bytes = Vec::new();
            random_k_quant_blocks(t, 2 * 512 / t.block_elements(), i as u64 + 1, &mut bytes);
            (format!("tensor.{}", t.name()), t, shape, bytes)
        })
        .collect()
}

/// A small valid GGUF file with every metadata type and every tensor type.
pub fn sample_writer() -> GgufWriter {
    let mut writer = GgufWriter::new();
    for (k, v) in every_metadata_type() {
        writer.add_metadata(&k, v);
    }
    for (name, t, shape, values) in every_tensor_type() {
        let mut data = Vec::new();
        quantize_row(t, &values, &mut data).unwrap();
        writer.add_tensor(&name, t, &shape, data).unwrap();
    }
    for (name, t, shape, data) in k_quant_tensors() {
        writer.add_tensor(&name, t, &shape, data).unwrap();
    }
    writer
}

/// A tensor info written by hand, for files the writer refuses to produce.
pub struct RawTensorInfo {
    pub name: String,
    /// GGUF order: innermost dimension first.
    pub ne: Vec<u64>,
    pub type_id: u32,
    pub offset: u64,
}

/// Builds GGUF bytes by hand: arbitrary version, string metadata only, raw tensor infos.
pub fn raw_gguf(
    version: u32,
    metadata: &[(&str, &str)],
    tensors: &[RawTensorInfo],
    data: &[u8],
) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        string(&mut out, k);
        out.extend_from_slice(&8u32.to_le_bytes());
        string(&mut out, v);
    }
    for t in tensors {
        string(&mut out, &t.name);
        out.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.type_id.to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(32), 0);
    out.extend_from_slice(data);
    out
}

pub fn write_temp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
