//! Relative Frobenius error of each compressed matrix of a container against the model it was made from:
//! `cargo run --release -p seedinfer-formats --example matrix_error -- <source.gguf> <container.gguf>`.
//! Prints one line per tensor type (mean, worst and the worst tensor) and, with `--all`, every tensor.
use seedinfer_formats::container::exponent_base;
use seedinfer_formats::seedlm::{decode_row, LfsrCycle, SEEDLM3};
use seedinfer_formats::{q3_rtn, GgufFile, TensorType};
use std::collections::BTreeMap;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(source), Some(container)) = (args.first(), args.get(1)) else {
        eprintln!("usage: matrix_error <source.gguf> <container.gguf> [--all]");
        std::process::exit(2);
    };
    let all = args.iter().any(|a| a == "--all");
    let source = GgufFile::open(Path::new(source)).expect("source opens");
    let container = GgufFile::open(Path::new(container)).expect("container opens");
    let cycle = LfsrCycle::new(SEEDLM3.block * SEEDLM3.coefficients);
    let mut by_type: BTreeMap<String, Vec<(f64, String)>> = BTreeMap::new();
    for info in container.tensors() {
        let Some(original) = source.tensor_info(&info.name) else {
            continue;
        };
        if original.tensor_type == info.tensor_type || info.shape.len() != 2 {
            continue;
        }
        let reference = source
            .tensor(&info.name)
            .and_then(|t| t.to_f32())
            .expect("source tensor");
        let view = container.tensor(&info.name).expect("container tensor");
        let (cols, rows) = (view.row_len(), view.row_count());
        let row_bytes = info.tensor_type.row_bytes(cols).expect("row bytes");
        let mut decoded = vec![0.0f32; rows * cols];
        match info.tensor_type {
            TensorType::SeedLm4 | TensorType::SeedLm3 => {
                let config = info.tensor_type.seedlm_config().expect("config");
                let base = exponent_base(&container, &info.name).expect("base");
                for (bytes, out) in view.data.chunks(row_bytes).zip(decoded.chunks_mut(cols)) {
                    decode_row(config, &cycle, bytes, base, out);
                }
            }
            TensorType::Q3Rtn => q3_rtn::dequantize(view.data, &mut decoded),
            _ => decoded = view.to_f32().expect("decodes"),
        }
        let (mut err, mut norm) = (0.0f64, 0.0f64);
        for (a, b) in reference.iter().zip(&decoded) {
            err += ((a - b) as f64).powi(2);
            norm += (*a as f64).powi(2);
        }
        let relative = (err / norm.max(f64::MIN_POSITIVE)).sqrt();
        if all {
            println!(
                "{:<28} {:>8} {relative:.4}",
                info.name,
                info.tensor_type.to_string()
            );
        }
        by_type
            .entry(info.tensor_type.to_string())
            .or_default()
            .push((relative, info.name.clone()));
    }
    for (tensor_type, errors) in by_type {
        let mean = errors.iter().map(|e| e.0).sum::<f64>() / errors.len() as f64;
        let worst = errors.iter().fold(
            (0.0, String::new()),
            |w, e| if e.0 > w.0 { e.clone() } else { w },
        );
        println!(
            "{tensor_type}: {} matrices, relative Frobenius error mean {mean:.4}, worst {:.4} ({})",
            errors.len(),
            worst.0,
            worst.1
        );
    }
}
