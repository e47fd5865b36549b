//! `cargo run --release -p seedinfer-engine --example quantize -- <source> <seedlm4|seedlm3|q3_rtn> <out>`: the
//! engine's quantiser without Node (the CLI's `seedinfer quantize` runs the same function).
use seedinfer_engine::{quantize_model, QuantFormat};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, format, out] = args.as_slice() else {
        eprintln!("usage: quantize <source> <seedlm4|seedlm3|q3_rtn> <out>");
        std::process::exit(2);
    };
    let Some(format) = QuantFormat::parse(format) else {
        eprintln!("unknown format {format}");
        std::process::exit(2);
    };
    let started = Instant::now();
    let last = Mutex::new(0u64);
    let progress = |p: &seedinfer_engine::QuantizeProgress| {
        let Ok(mut last) = last.lock() else { return };
        let percent = p.done_weights * 100 / p.total_weights.max(1);
        if percent > *last {
            *last = percent;
            eprintln!(
                "{percent}% {} {:.0}s",
                p.tensor,
                started.elapsed().as_secs_f64()
            );
        }
    };
    match quantize_model(source.as_ref(), format, out.as_ref(), &progress, &AtomicBool::new(false)) {
        Ok(r) => println!(
            "{}: {} matrices, {} weights, {:.3} bits/weight, {:.1} s ({:.2} s per million weights), kept {:?}",
            r.format.name(),
            r.quantized_tensors,
            r.quantized_weights,
            r.quantized_bytes as f64 * 8.0 / r.quantized_weights as f64,
            r.seconds,
            r.seconds / (r.quantized_weights as f64 / 1e6),
            r.kept
        ),
        Err(e) => {
            eprintln!("{}: {e}", e.code());
            std::process::exit(1);
        }
    }
}
