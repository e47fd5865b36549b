//! Quick speed check of one block-quantised product while developing kernels (the published numbers come from
//! `npm run bench:kernels`): `cargo run --release --example kernel_speed -- q4_1 576 1536 512 1`.
//! Formats: q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl, q2_k .. q6_k, iq4_xs (int8 activations) and seedlm4, seedlm3, q3_rtn (f32 activations; their bytes are
//! random fields, as the speed does not depend on how well the seeds fit). `SEEDLM_ONE_SEED=1` gives every seedlm4
//! block the same seed, so its cycle reads hit L1: the difference is what the table reads cost.
use seedinfer_formats::{quantize_row, TensorType};
use seedinfer_kernels::limits::thread_pool;
use seedinfer_kernels::q3_rtn_weights::Q3RtnMatrix;
use seedinfer_kernels::quantized::{QuantizedInput, QuantizedMatrix};
use seedinfer_kernels::seedlm_weights::SeedLmMatrix;
use seedinfer_kernels::test_values::values;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let format = match args.first().map(String::as_str).unwrap_or("q4_1") {
        "q4_0" => TensorType::Q4_0,
        "q8_0" => TensorType::Q8_0,
        "q5_0" => TensorType::Q5_0,
        "q5_1" => TensorType::Q5_1,
        "iq4_nl" => TensorType::IQ4_NL,
        "q2_k" => TensorType::Q2_K,
        "q3_k" => TensorType::Q3_K,
        "q4_k" => TensorType::Q4_K,
        "q5_k" => TensorType::Q5_K,
        "q6_k" => TensorType::Q6_K,
        "iq4_xs" => TensorType::IQ4_XS,
        "seedlm4" => TensorType::SeedLm4,
        "seedlm3" => TensorType::SeedLm3,
        "q3_rtn" => TensorType::Q3Rtn,
        _ => TensorType::Q4_1,
    };
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (rows, cols, tokens, threads) = (num(1, 576), num(2, 1536), num(3, 512), num(4, 1));
    if matches!(
        format,
        TensorType::SeedLm4 | TensorType::SeedLm3 | TensorType::Q3Rtn
    ) {
        return f32_activations(format, rows, cols, tokens, threads);
    }
    let w = values(rows * cols, 7);
    let mut bytes = Vec::new();
    quantize_row(format, &w, &mut bytes).expect("quantizes");
    let m = QuantizedMatrix::from_bytes(format, rows, cols, &bytes).expect("matrix");
    let x = values(tokens * cols, 9);
    let mut q = QuantizedInput::default();
    q.quantize(&x, [&m]);
    let q = q.as_input();
    let mut out = vec![0.0f32; rows * tokens];
    let pool = thread_pool(threads);
    pool.install(|| {
        m.matmul(q, tokens, &mut out);
        let mut best = f64::MAX;
        for _ in 0..7 {
            let reps = (2e8 / (rows * cols * tokens) as f64).ceil().max(1.0) as usize;
            let start = Instant::now();
            for _ in 0..reps {
                m.matmul(q, tokens, &mut out);
            }
            best = best.min(start.elapsed().as_secs_f64() / reps as f64);
        }
        let gb = bytes.len() as f64 / best / 1e9;
        let bandwidth = seedinfer_kernels::limits::read_bandwidth(512 << 20, threads, 0.3);
        let gops = 2.0 * (rows * cols * tokens) as f64 / best / 1e9;
        println!("{format:?} {rows}x{cols} tokens={tokens} threads={threads}: {:.1} us, {gb:.2} GB/s ({:.0}% of {bandwidth:.1}), {gops:.1} GOP/s", best * 1e6, 100.0 * gb / bandwidth);
    });
}

/// One product `out = W x` of the matrix under test.
type Product = dyn Fn(&[f32], &mut [f32]) + Sync;

/// Times a product whose weights take f32 activations (SeedLM, q3_rtn) against the same shape in f32 FLOPs.
fn f32_activations(format: TensorType, rows: usize, cols: usize, tokens: usize, threads: usize) {
    let row_bytes = format.row_bytes(cols).expect("cols fit the format");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes: Vec<u8> = (0..rows * row_bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    if std::env::var_os("SEEDLM_ONE_SEED").is_some() && format == TensorType::SeedLm4 {
        for block in bytes.chunks_mut(4) {
            block[0] = 1;
            block[1] = 0;
        }
    }
    let run: Box<Product> = if format == TensorType::Q3Rtn {
        // Keep the f16 scales finite: the high bytes of each group's scale are cleared.
        for group in bytes.chunks_mut(seedinfer_formats::q3_rtn::GROUP_BYTES) {
            group[1] &= 0x3b;
        }
        let m = Q3RtnMatrix::from_bytes(rows, cols, &bytes).expect("matrix");
        Box::new(move |x, out| m.matmul(x, tokens, out))
    } else {
        let m = SeedLmMatrix::from_bytes(format, rows, cols, &bytes, -12).expect("matrix");
        Box::new(move |x, out| m.matmul(x, tokens, out))
    };
    let x = values(tokens * cols, 9);
    let mut out = vec![0.0f32; rows * tokens];
    thread_pool(threads).install(|| {
        run(&x, &mut out);
        let mut best = f64::MAX;
        for _ in 0..7 {
            let reps = (2e8 / (rows * cols * tokens) as f64).ceil().max(1.0) as usize;
            let start = Instant::now();
            for _ in 0..reps {
                run(&x, &mut out);
            }
            best = best.min(start.elapsed().as_secs_f64() / reps as f64);
        }
        let weights = (rows * cols * tokens) as f64;
        println!(
            "{format:?} {rows}x{cols} tokens={tokens} threads={threads}: {:.1} us, {:.2} ns/weight/token, {:.1} GOP/s",
            best * 1e6,
            best * 1e9 / weights,
            2.0 * weights / best / 1e9
        );
    });
}
