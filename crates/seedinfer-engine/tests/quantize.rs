//! `quantize_model` on stories260K: every format (ggml's q4_0 too) writes a container `Model::load` reads, whose matrices are the
//! originals within each format's error; stopping writes nothing; damaged or newer containers are refused.

use seedinfer_engine::{quantize_model, LoadOptions, Model, QuantFormat};
use seedinfer_formats::SafetensorsDir;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

mod common;
use common::{expected_greedy, greedy_from_bos, stories_dir};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seedinfer-quantize-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn quantize(format: QuantFormat, out: &Path) -> seedinfer_engine::QuantizeReport {
    quantize_model(
        &stories_dir(),
        format,
        out,
        &|_| {},
        &AtomicBool::new(false),
    )
    .expect("quantises")
}

/// The seedlm4 container, encoded once for every test of this binary (the encoding is the slow part).
fn seedlm4() -> &'static (PathBuf, seedinfer_engine::QuantizeReport) {
    static FILE: OnceLock<(PathBuf, seedinfer_engine::QuantizeReport)> = OnceLock::new();
    FILE.get_or_init(|| {
        let out = temp_path("stories-seedlm4-shared.gguf");
        let report = quantize(QuantFormat::SeedLm4, &out);
        (out, report)
    })
}

fn load(path: &Path) -> Result<Model, seedinfer_engine::EngineError> {
    Model::load(
        path,
        &LoadOptions {
            threads: Some(2),
            ..Default::default()
        },
    )
}

/// Relative Frobenius error of every layer matrix of `model` against the f32 checkpoint.
fn matrix_errors(model: &Model) -> Vec<f64> {
    let original = SafetensorsDir::open(&stories_dir()).expect("checkpoint");
    let mut errors = Vec::new();
    for (i, layer) in model.weights.layers.iter().enumerate() {
        for (name, m) in [
            ("self_attn.q_proj", &layer.wq),
            ("self_attn.k_proj", &layer.wk),
            ("self_attn.v_proj", &layer.wv),
            ("self_attn.o_proj", &layer.wo),
            ("mlp.gate_proj", &layer.w_gate),
            ("mlp.up_proj", &layer.w_up),
            ("mlp.down_proj", &layer.w_down),
        ] {
            let w = original
                .tensor(&format!("model.layers.{i}.{name}.weight"))
                .and_then(|v| v.to_f32())
                .expect("original tensor");
            let mut row = vec![0.0f32; m.cols];
            let (mut diff, mut norm) = (0.0f64, 0.0f64);
            for r in 0..m.rows {
                m.row_to_f32(r, &mut row);
                for (a, b) in row.iter().zip(&w[r * m.cols..(r + 1) * m.cols]) {
                    diff += ((a - b) as f64).powi(2);
                    norm += (*b as f64).powi(2);
                }
            }
            errors.push((diff / norm).sqrt());
        }
    }
    errors
}

#[test]
fn every_format_writes_a_container_that_loads_with_the_formats_error() {
    let f32_model = Arc::new(load(&stories_dir()).expect("f32 loads"));
    let reference = greedy_from_bos(&f32_model, 40);
    assert_eq!(reference, expected_greedy()[..40]);
    // (format, bits per weight of the 64-column matrices, largest relative error of any matrix)
    for (format, compute, max_error) in [
        (QuantFormat::SeedLm4, "SEEDLM4 x f32 ×35, f32 ×1", 0.2),
        (QuantFormat::SeedLm3, "SEEDLM3 x f32 ×35, f32 ×1", 0.35),
        (QuantFormat::Q3Rtn, "Q3_RTN x f32 ×30, f32 ×6", 0.3),
        (QuantFormat::Q4_0, "Q4_0 x int8 ×30, f32 ×6", 0.2),
    ] {
        let out = temp_path(&format!("stories-{}.gguf", format.name()));
        let report = if format == QuantFormat::SeedLm4 {
            std::fs::copy(&seedlm4().0, &out).expect("copies");
            seedlm4().1.clone()
        } else {
            quantize(format, &out)
        };
        let model = Arc::new(load(&out).expect("the container loads"));
        assert_eq!(model.info.compute_format, compute, "{format:?}");
        let errors = matrix_errors(&model);
        let worst = errors.iter().cloned().fold(0.0, f64::max);
        let mean = errors.iter().sum::<f64>() / errors.len() as f64;
        let tokens = greedy_from_bos(&model, 40);
        let same = tokens
            .iter()
            .zip(&reference)
            .take_while(|(a, b)| a == b)
            .count();
        println!(
            "{}: {:.3} bits/weight, relative error mean {mean:.3} worst {worst:.3}, greedy agrees for {same} of 40 tokens",
            format.name(),
            report.quantized_bytes as f64 * 8.0 / report.quantized_weights as f64
        );
        assert!(
            worst < max_error,
            "{format:?}: worst relative error {worst}"
        );
        assert!(
            mean > 0.01,
            "{format:?}: the matrices were not quantised ({mean})"
        );
        std::fs::remove_file(&out).ok();
    }
}

#[test]
fn seedlm4_rows_of_whole_blocks_take_exactly_four_bits_and_padded_rows_one_block_more() {
    let report = &seedlm4().1;
    // 35 matrices: 30 with 64 columns (8 whole blocks), 5 down projections with 172 (22 blocks, the last padded).
    let whole = 5 * (64 * 64 * 2 + 32 * 64 * 2 + 172 * 64 * 2) / 2;
    let padded = 5 * 64 * 22 * 4;
    assert_eq!(report.quantized_bytes as usize, whole + padded);
}

#[test]
fn a_stopped_quantisation_writes_nothing_and_a_container_is_not_quantised_twice() {
    let out = temp_path("stories-stopped.gguf");
    let stop = AtomicBool::new(true);
    let error = quantize_model(&stories_dir(), QuantFormat::SeedLm4, &out, &|_| {}, &stop)
        .expect_err("stopped");
    assert_eq!(error.code(), "ABORTED");
    assert!(!out.exists());
    let q = temp_path("stories-q3.gguf");
    quantize(QuantFormat::Q3Rtn, &q);
    let error = quantize_model(
        &q,
        QuantFormat::SeedLm4,
        &out,
        &|_| {},
        &AtomicBool::new(false),
    )
    .expect_err("refused");
    assert_eq!(error.code(), "INVALID_OPTION");
    std::fs::remove_file(&q).ok();
}

/// Replaces the first occurrence of `from` in the file by `to` (same length).
fn patch(path: &Path, from: &[u8], to: &[u8]) -> PathBuf {
    let mut bytes = std::fs::read(path).expect("reads");
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    bytes[at..at + to.len()].copy_from_slice(to);
    let out = path.with_extension("patched.gguf");
    std::fs::write(&out, bytes).expect("writes");
    out
}

#[test]
fn newer_or_damaged_containers_are_refused_with_codes() {
    let out = temp_path("stories-damaged.gguf");
    std::fs::copy(&seedlm4().0, &out).expect("copies");
    // The version: key, type tag U32 (4), value 1 -> 2.
    let key = b"seedinfer.container.version";
    let mut from = key.to_vec();
    from.extend_from_slice(&4u32.to_le_bytes());
    from.extend_from_slice(&1u32.to_le_bytes());
    let mut to = from.clone();
    let n = to.len();
    to[n - 4..].copy_from_slice(&2u32.to_le_bytes());
    let newer = patch(&out, &from, &to);
    let error = load(&newer).err().expect("refused");
    assert_eq!(error.code(), "UNSUPPORTED_CONTAINER_VERSION");
    // A SeedLM tensor without its exponent base.
    let missing = patch(
        &out,
        b"exponent_base.blk.0.attn_q.weight",
        b"exponent_base.blk.0.attn_q.weighX",
    );
    let error = load(&missing).err().expect("refused");
    assert_eq!(error.code(), "CORRUPT_FILE");
    assert!(error.to_string().contains("blk.0.attn_q.weight"), "{error}");
    for p in [out, newer, missing] {
        std::fs::remove_file(p).ok();
    }
}
