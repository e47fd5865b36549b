//! GGUF files for benchmarks and tests: synthetic random-weight copies of a model, and a file's tensor table.
//! Used by `bench/peers/side-by-side.ts`.

use crate::error::{catch_panics, coded, Coded, CodedTask, Result};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use seedinfer_formats::synthetic::write_synthetic_model as write_synthetic;
use seedinfer_formats::{FormatError, GgufFile, TensorType};
use std::path::PathBuf;

fn to_js(error: FormatError) -> crate::error::Failure {
    coded(error.code(), &error.to_string())
}

pub struct WriteSyntheticModelTask {
    source: PathBuf,
    out: PathBuf,
    matrix_type: TensorType,
    seed: u64,
}

impl CodedTask for WriteSyntheticModelTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<Self::Output> {
        catch_panics(|| {
            write_synthetic(&self.source, &self.out, self.matrix_type, self.seed).map_err(to_js)
        })
    }

    fn resolve(&mut self, _output: Self::Output) -> Result<Self::JsValue> {
        Ok(())
    }
}

/// Writes (on a worker thread) a copy of the GGUF file `sourceGguf` to `outPath` with all its metadata (the
/// tokenizer included) and every tensor replaced by random values of the same shape, drawn from `seed`: norm
/// vectors near 1.0 in F32, matrices normal with standard deviation 0.02 in `format` (`q4_0`, `q4_1`, `q8_0`,
/// `f16` or `f32`), or random blocks of about that spread for the types whose quantisers search their scales (`iq4_nl`, and the
/// 256-wide `q2_k`, `q3_k`, `q4_k`, `q5_k`, `q6_k`, `iq4_xs`, whose matrices with rows that are not whole
/// super-blocks take llama.cpp's fallback, Q4_0, Q5_0, Q5_1, Q8_0 or IQ4_NL). `general.file_type` names the
/// new format. The file appears whole or not at all.
#[napi(ts_return_type = "Promise<void>")]
pub fn write_synthetic_model(
    source_gguf: String,
    out_path: String,
    format: String,
    seed: f64,
) -> Result<AsyncTask<Coded<WriteSyntheticModelTask>>> {
    let matrix_type = match format.as_str() {
        "q4_0" => TensorType::Q4_0,
        "q4_1" => TensorType::Q4_1,
        "q8_0" => TensorType::Q8_0,
        "q2_k" => TensorType::Q2_K,
        "q3_k" => TensorType::Q3_K,
        "q4_k" => TensorType::Q4_K,
        "q5_k" => TensorType::Q5_K,
        "q6_k" => TensorType::Q6_K,
        "iq4_nl" => TensorType::IQ4_NL,
        "iq4_xs" => TensorType::IQ4_XS,
        "f16" => TensorType::F16,
        "f32" => TensorType::F32,
        _ => {
            return Err(coded(
                "INVALID_OPTION",
                &format!(
                    "format must be q4_0, q4_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs, f16 or f32, got {format:?}"
                ),
            ))
        }
    };
    if seed.fract() != 0.0 || !(0.0..=9_007_199_254_740_991.0).contains(&seed) {
        return Err(coded(
            "INVALID_OPTION",
            &format!("seed must be a whole number from 0 to 2^53 - 1, got {seed}"),
        ));
    }
    Ok(AsyncTask::new(Coded(WriteSyntheticModelTask {
        source: source_gguf.into(),
        out: out_path.into(),
        matrix_type,
        seed: seed as u64,
    })))
}

#[napi(object)]
pub struct NativeGgufTensor {
    pub name: String,
    /// Storage type as ggml names it, e.g. `Q4_0`.
    pub tensor_type: String,
    /// Outermost dimension first.
    pub shape: Vec<f64>,
    /// Bytes of the tensor's data in the file.
    pub bytes: f64,
    /// Where the tensor's data starts in the file.
    pub file_offset: f64,
}

/// The tensor table of a GGUF file, in file order (reads only the header).
#[napi]
pub fn gguf_tensors(path: String) -> Result<Vec<NativeGgufTensor>> {
    catch_panics(|| {
        let file = GgufFile::open(path.as_ref()).map_err(to_js)?;
        Ok(file
            .tensors()
            .iter()
            .map(|t| NativeGgufTensor {
                name: t.name.clone(),
                tensor_type: t.tensor_type.name().to_string(),
                shape: t.shape.iter().map(|&d| d as f64).collect(),
                bytes: t.byte_len as f64,
                file_offset: (file.data_offset() + t.offset) as f64,
            })
            .collect())
    })
}
