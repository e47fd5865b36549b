//! Quick speed check of one block-quantised product while developing kernels (the published numbers come from
//! `npm run bench:kernels`): `cargo run --release --example kernel_speed -- q4_1 576 1536 512 1`.
use seedinfer_formats::{quantize_row, TensorType};
use seedinfer_kernels::limits::thread_pool;
use seedinfer_kernels::quantized::{quantize_activations, QuantizedMatrix};
use seedinfer_kernels::test_values::values;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let format = match args.first().map(String::as_str).unwrap_or("q4_1") {
        "q4_0" => TensorType::Q4_0,
        "q8_0" => TensorType::Q8_0,
        _ => TensorType::Q4_1,
    };
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (rows, cols, tokens, threads) = (num(1, 576), num(2, 1536), num(3, 512), num(4, 1));
    let w = values(rows * cols, 7);
    let mut bytes = Vec::new();
    quantize_row(format, &w, &mut bytes).expect("quantizes");
    let m = QuantizedMatrix::from_bytes(format, rows, cols, &bytes).expect("matrix");
    let x = values(tokens * cols, 9);
    let mut q = Vec::new();
    quantize_activations(&x, &mut q);
    let mut out = vec![0.0f32; rows * tokens];
    let pool = thread_pool(threads);
    pool.install(|| {
        m.matmul(&q, tokens, &mut out);
        let mut best = f64::MAX;
        for _ in 0..7 {
            let reps = (2e8 / (rows * cols * tokens) as f64).ceil().max(1.0) as usize;
            let start = Instant::now();
            for _ in 0..reps {
                m.matmul(&q, tokens, &mut out);
            }
            best = best.min(start.elapsed().as_secs_f64() / reps as f64);
        }
        let gb = bytes.len() as f64 / best / 1e9;
        let bandwidth = seedinfer_kernels::limits::read_bandwidth(512 << 20, threads, 0.3);
        let gops = 2.0 * (rows * cols * tokens) as f64 / best / 1e9;
        println!("{format:?} {rows}x{cols} tokens={tokens} threads={threads}: {:.1} us, {gb:.2} GB/s ({:.0}% of {bandwidth:.1}), {gops:.1} GOP/s", best * 1e6, 100.0 * gb / bandwidth);
    });
}
