//! Synthetic models: a copy of a GGUF file whose every tensor is replaced by seeded random values of the same
//! shape, in a chosen format. Benchmarks use them to time a real model's shape in any format: the time a
//! forward pass takes does not depend on the weights' values.
//!
//! All metadata is copied (the tokenizer included, so llama.cpp loads the copy like the original), except
//! `general.file_type`, which names the new format, and `general.name`, which says the weights are random.

use std::path::Path;

use crate::blocks::{block_scale_offsets, quantize_row, SEARCHED_TYPES};
use crate::error::{FormatError, Result};
use crate::gguf::{GgufFile, GgufValue, GgufWriter};
use crate::tensor_type::TensorType;

/// Standard deviation of the random matrix entries: the scale of trained Llama weights, small enough that
/// activations stay finite through every layer.
pub const WEIGHT_STD: f32 = 0.02;

/// llama.cpp's `enum llama_ftype` for a file whose matrices are all `matrix_type`.
pub fn llama_file_type(matrix_type: TensorType) -> u32 {
    match matrix_type {
        TensorType::F32 => 0,
        TensorType::F16 => 1,
        TensorType::Q4_0 => 2,
        TensorType::Q4_1 => 3,
        TensorType::Q8_0 => 7,
        TensorType::Q5_0 => 8,
        TensorType::Q5_1 => 9,
        TensorType::BF16 => 32,
        // LLAMA_FTYPE_MOSTLY_Q2_K, _Q3_K_S, _Q4_K_S, _Q5_K_S, _Q6_K.
        TensorType::Q2_K => 10,
        TensorType::Q3_K => 11,
        TensorType::Q4_K => 14,
        TensorType::Q5_K => 16,
        TensorType::Q6_K => 18,
        TensorType::IQ4_NL => 25,
        TensorType::IQ4_XS => 30,
        // llama.cpp has no file type for seedinfer's own formats: LLAMA_FTYPE_GUESSED.
        TensorType::SeedLm4 | TensorType::SeedLm3 | TensorType::Q3Rtn => 1024,
    }
}

/// SplitMix64: tiny, seedable, and good enough for weights nobody reads.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so its logarithm is finite.
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Fills `out` with normal values (Box-Muller) of the given mean and standard deviation.
    fn fill_normal(&mut self, out: &mut [f32], mean: f32, std: f32) {
        for pair in out.chunks_mut(2) {
            let radius = (-2.0 * self.unit().ln()).sqrt();
            let angle = std::f64::consts::TAU * self.unit();
            pair[0] = mean + std * (radius * angle.cos()) as f32;
            if let Some(second) = pair.get_mut(1) {
                *second = mean + std * (radius * angle.sin()) as f32;
            }
        }
    }
}

/// The format a tensor of `shape` gets: 1-D tensors (norms) stay F32, as llama.cpp keeps them; matrices take
/// `matrix_type` when their rows are whole blocks of it, else llama.cpp's fallback for a 256-wide type
/// ([`TensorType::llama_fallback`]) if the rows are whole blocks of that, else F32.
fn tensor_type_for(shape: &[usize], matrix_type: TensorType) -> TensorType {
    let cols = shape.last().copied().unwrap_or(1);
    [Some(matrix_type), matrix_type.llama_fallback()]
        .into_iter()
        .flatten()
        .find(|t| shape.len() >= 2 && cols.is_multiple_of(t.block_elements()))
        .unwrap_or(TensorType::F32)
}

/// [`random_super_blocks`] drawn from `seed`: rows of a type whose quantiser is slow (K-quants, IQ4) for
/// benchmarks and tests.
pub fn random_k_quant_blocks(tensor_type: TensorType, count: usize, seed: u64, out: &mut Vec<u8>) {
    random_super_blocks(tensor_type, count, &mut Rng(seed), out)
}

/// Appends `count` random blocks of a type in [`SEARCHED_TYPES`]: random weight bits and sub-block scales, and
/// block scales that give the weights a spread near [`WEIGHT_STD`] around zero. (Their quantisers search tens of
/// trial scales per block; the values of a synthetic model do not matter, only their shape and scale.)
fn random_super_blocks(tensor_type: TensorType, count: usize, rng: &mut Rng, out: &mut Vec<u8>) {
    let size = tensor_type.block_bytes();
    // Weights d * sc * q - dmin * m with sc, m uniform in 0..64 and q in 0..16 (Q4_K) or 0..32 (Q5_K), or sc, m in
    // 0..16 and q in 0..4 (Q2_K): dmin = d * E[q] * E[sc] / E[m] centres them; d scales their spread to about
    // WEIGHT_STD. The signed formats are centred already: Q6_K's d * sc * (q - 32), Q3_K's d * (sc - 32) * q,
    // IQ4_NL's d times table levels of spread ~70, IQ4_XS's times sub-block scales -32..32 too (spread ~18).
    let (d, dmin) = match tensor_type {
        TensorType::Q2_K => (1.5e-3f32, 2.2e-3f32),
        TensorType::Q3_K => (4.5e-4, 0.0),
        TensorType::Q4_K => (8.2e-5, 6.1e-4),
        TensorType::Q5_K => (3.9e-5, 6.0e-4),
        TensorType::IQ4_NL => (2.9e-4, 0.0),
        TensorType::IQ4_XS => (1.6e-5, 0.0),
        _ => (1.5e-5, 0.0),
    };
    let Some((d_at, dmin_at)) = block_scale_offsets(tensor_type) else {
        return;
    };
    for _ in 0..count {
        let start = out.len();
        out.extend((0..size).map(|_| rng.next_u64() as u8));
        let block = &mut out[start..];
        block[d_at..d_at + 2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        if let Some(at) = dmin_at {
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(dmin).to_le_bytes());
        }
    }
}

/// A writer holding `source`'s metadata and, for each of its tensors (same names, shapes and order), seeded
/// random values: `*norm.weight` vectors near 1.0, everything else normal with standard deviation
/// [`WEIGHT_STD`]. Matrices are encoded as `matrix_type` with the reference quantisers.
pub fn synthetic_copy(source: &GgufFile, matrix_type: TensorType, seed: u64) -> Result<GgufWriter> {
    let mut writer = GgufWriter::new();
    writer.set_alignment(source.alignment());
    for (key, value) in source.metadata() {
        writer.add_metadata(key, value.clone());
    }
    writer.add_metadata(
        "general.file_type",
        GgufValue::U32(llama_file_type(matrix_type)),
    );
    let name = source.get_str("general.name").unwrap_or("model");
    writer.add_metadata(
        "general.name",
        GgufValue::from(format!(
            "{name} (synthetic: random {} weights, seed {seed})",
            matrix_type.name()
        )),
    );

    for (index, info) in source.tensors().iter().enumerate() {
        let tensor_type = tensor_type_for(&info.shape, matrix_type);
        let cols = info.shape.last().copied().unwrap_or(1);
        let rows = info.element_count() / cols.max(1);
        // One stream per tensor, so a tensor's values do not depend on the tensors before it.
        let mut rng = Rng(seed ^ (index as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
        let (mean, std) = if info.shape.len() == 1 && info.name.ends_with("norm.weight") {
            (1.0, WEIGHT_STD)
        } else {
            (0.0, WEIGHT_STD)
        };
        let mut data = Vec::with_capacity(tensor_type.tensor_bytes(&info.shape)?);
        if SEARCHED_TYPES.contains(&tensor_type) {
            let blocks = rows * cols / tensor_type.block_elements();
            random_super_blocks(tensor_type, blocks, &mut rng, &mut data);
        } else {
            let mut row = vec![0.0f32; cols];
            for _ in 0..rows {
                rng.fill_normal(&mut row, mean, std);
                quantize_row(tensor_type, &row, &mut data)?;
            }
        }
        writer.add_tensor(&info.name, tensor_type, &info.shape, data)?;
    }
    Ok(writer)
}

/// Writes [`synthetic_copy`] of the GGUF file `source` to `out`. The file appears whole or not at all: it is
/// written next to `out` under a temporary name and then renamed.
pub fn write_synthetic_model(
    source: &Path,
    out: &Path,
    matrix_type: TensorType,
    seed: u64,
) -> Result<()> {
    let source = GgufFile::open(source)?;
    let writer = synthetic_copy(&source, matrix_type, seed)?;
    let file_name = out.file_name().ok_or_else(|| {
        FormatError::invalid_argument(format!("{} is not a file path", out.display()))
    })?;
    let mut temporary_name = file_name.to_os_string();
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = out.with_file_name(temporary_name);
    writer.write_file(&temporary)?;
    std::fs::rename(&temporary, out).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        FormatError::io(out, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::dequantize_row;

    /// A small Llama-like GGUF: tokenizer metadata, norms, block-aligned matrices and one 48-column matrix.
    fn source_file(dir: &Path) -> std::path::PathBuf {
        let mut writer = GgufWriter::new();
        writer.add_metadata("general.architecture", "llama".into());
        writer.add_metadata("general.name", "tiny".into());
        writer.add_metadata("general.file_type", GgufValue::U32(3));
        writer.add_metadata(
            "tokenizer.ggml.tokens",
            GgufValue::Array(vec!["<s>".into(), "</s>".into(), "a".into()]),
        );
        writer.add_metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(1));
        let tensors: [(&str, TensorType, &[usize]); 5] = [
            ("token_embd.weight", TensorType::Q8_0, &[96, 64]),
            ("blk.0.attn_norm.weight", TensorType::F32, &[64]),
            ("blk.0.attn_q.weight", TensorType::Q4_1, &[64, 64]),
            ("blk.0.ffn_down.weight", TensorType::F32, &[64, 48]),
            ("output_norm.weight", TensorType::F32, &[64]),
        ];
        for (name, tensor_type, shape) in tensors {
            let bytes = tensor_type.tensor_bytes(shape).unwrap();
            writer
                .add_tensor(name, tensor_type, shape, vec![0; bytes])
                .unwrap();
        }
        let path = dir.join("source.gguf");
        writer.write_file(&path).unwrap();
        path
    }

    fn values(file: &GgufFile, name: &str) -> Vec<f32> {
        let view = file.tensor(name).unwrap();
        let mut out = vec![0.0; view.element_count()];
        dequantize_row(view.tensor_type, view.data, &mut out).unwrap();
        out
    }

    fn mean_and_std(values: &[f32]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    #[test]
    fn a_released_tensor_reads_the_same_bytes_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = GgufFile::open(&source_file(dir.path())).unwrap();
        let before: Vec<Vec<u8>> = file
            .tensors()
            .iter()
            .map(|t| file.tensor(&t.name).unwrap().data.to_vec())
            .collect();
        for t in file.tensors() {
            file.release_tensor(&t.name);
        }
        file.release_tensor("no such tensor");
        for (t, bytes) in file.tensors().iter().zip(&before) {
            assert_eq!(file.tensor(&t.name).unwrap().data, &bytes[..], "{}", t.name);
        }
    }

    #[test]
    fn copy_keeps_names_shapes_and_metadata_and_takes_the_requested_formats() {
        let dir = tempfile::tempdir().unwrap();
        let source_path = source_file(dir.path());
        let source = GgufFile::open(&source_path).unwrap();
        for (matrix_type, file_type) in [
            (TensorType::Q4_0, 2),
            (TensorType::Q8_0, 7),
            (TensorType::Q6_K, 18),
        ] {
            let out = dir.path().join(format!("synthetic-{matrix_type}.gguf"));
            write_synthetic_model(&source_path, &out, matrix_type, 7).unwrap();
            let copy = GgufFile::open(&out).unwrap();

            let shapes = |f: &GgufFile| -> Vec<(String, Vec<usize>)> {
                f.tensors()
                    .iter()
                    .map(|t| (t.name.clone(), t.shape.clone()))
                    .collect()
            };
            assert_eq!(shapes(&copy), shapes(&source));
            let types: Vec<TensorType> = copy.tensors().iter().map(|t| t.tensor_type).collect();
            // token_embd and attn_q in the requested format (64 columns: Q6_K's fallback Q8_0); norms F32; 48
            // columns are not whole blocks: F32.
            use TensorType::F32;
            let matrices = if matrix_type == TensorType::Q6_K {
                TensorType::Q8_0
            } else {
                matrix_type
            };
            assert_eq!(types, [matrices, F32, matrices, F32, F32]);

            assert_eq!(copy.get_u64("general.file_type"), Some(file_type));
            assert_eq!(copy.get_str("general.architecture"), Some("llama"));
            assert_eq!(
                copy.get_str_array("tokenizer.ggml.tokens"),
                Some(vec!["<s>", "</s>", "a"])
            );
            assert_eq!(copy.get_u64("tokenizer.ggml.eos_token_id"), Some(1));
            assert!(copy.get_str("general.name").unwrap().contains("synthetic"));
            assert!(!dir.path().read_dir().unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp-")));

            let (mean, std) = mean_and_std(&values(&copy, "token_embd.weight"));
            assert!(mean.abs() < 0.003, "mean {mean}");
            assert!((0.015..0.025).contains(&std), "std {std}");
            let (mean, std) = mean_and_std(&values(&copy, "blk.0.attn_norm.weight"));
            assert!(
                (mean - 1.0).abs() < 0.01 && std < 0.03,
                "norm {mean} ± {std}"
            );
        }
    }

    #[test]
    fn random_read_only_weights_spread_like_the_others() {
        for t in SEARCHED_TYPES {
            let mut bytes = Vec::new();
            random_super_blocks(t, 64, &mut Rng(3), &mut bytes);
            let mut values = vec![0.0; 64 * t.block_elements()];
            dequantize_row(t, &bytes, &mut values).unwrap();
            let (mean, std) = mean_and_std(&values);
            assert!(mean.abs() < 0.004, "{t}: mean {mean}");
            assert!((0.012..0.03).contains(&std), "{t}: std {std}");
        }
    }

    #[test]
    fn the_seed_decides_the_values() {
        let dir = tempfile::tempdir().unwrap();
        let source = GgufFile::open(&source_file(dir.path())).unwrap();
        let bytes = |seed| {
            synthetic_copy(&source, TensorType::Q8_0, seed)
                .unwrap()
                .to_bytes()
                .unwrap()
        };
        let (a, b, c) = (bytes(1), bytes(1), bytes(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), c.len());
    }
}
